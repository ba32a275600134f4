//! The volume dump stream (format version 2; `docs/DUMP-FORMAT.md`).
//!
//! `CELLDUMP`, a little-endian `u32` version, then records, each a
//! little-endian `u32` length and a bincode [`Record`]; a file's bytes follow
//! its `Vnode` record raw. After the `End` record come the 32 bytes of the
//! SHA-256 of everything before them. A reader checks every length against a
//! bound, and the digest and the end of the stream before a restore is used.

use crate::schema::{VnodeRecord, VolumeState};
use bincode::Options;
use cellfs_protocol::{Timestamp, VolumeId};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// First bytes of every dump.
pub const MAGIC: &[u8; 8] = b"CELLDUMP";
/// The format version this code writes and reads.
pub const DUMP_VERSION: u32 = 2;
/// Largest record frame (a record holds one vnode or entry, never data).
pub const MAX_RECORD: u32 = 64 * 1024;
/// Length of the trailing digest.
pub const DIGEST_LEN: usize = 32;

/// What a dump says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpHeader {
    /// Name of the dumped volume.
    pub volume: String,
    /// Its id on the server it was dumped from.
    pub source_id: VolumeId,
    /// When the dump was made.
    pub made: Timestamp,
    /// `Some`: an incremental dump holding the bytes only of files changed at
    /// or after this time (every vnode and entry is still listed).
    pub since: Option<Timestamp>,
    /// The volume's quota.
    pub quota: u64,
    /// The volume's counters.
    pub state: VolumeState,
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// First record.
    Header(DumpHeader),
    /// A vnode; when `data`, exactly `rec.size` raw bytes follow.
    Vnode {
        /// Vnode number.
        vnode: u64,
        /// Its record as stored.
        rec: VnodeRecord,
        /// Whether its bytes follow.
        data: bool,
    },
    /// A directory entry.
    Entry {
        /// Directory vnode.
        dir: u64,
        /// Entry name.
        name: String,
        /// Named vnode.
        vnode: u64,
        /// Its uniquifier.
        unique: u64,
    },
    /// Last record: how many of each came before (the digest follows).
    End {
        /// Vnode records.
        vnodes: u64,
        /// Entry records.
        entries: u64,
    },
}

/// Why a dump cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Not a cellfs dump.
    #[error("not a cellfs volume dump (bad magic bytes)")]
    BadMagic,
    /// A format this version does not read.
    #[error("dump format version {0} is not supported (this cellfs reads version {DUMP_VERSION})")]
    Version(u32),
    /// The stream ended early.
    #[error("the dump is cut short (ends after {0} bytes)")]
    Truncated(u64),
    /// The stream is damaged.
    #[error("the dump is damaged: {0}")]
    Corrupt(String),
    /// Reading or writing failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(u64::from(MAX_RECORD))
        .reject_trailing_bytes()
}

/// A writer that hashes and counts what passes through it.
struct Hashing<T> {
    inner: T,
    digest: ring::digest::Context,
    count: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            count: 0,
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Writes a dump.
pub struct DumpWriter<W: Write> {
    out: Hashing<W>,
    vnodes: u64,
    entries: u64,
}

impl<W: Write> DumpWriter<W> {
    /// Starts a dump: magic, version and header.
    pub fn new(out: W, header: DumpHeader) -> Result<Self, DumpError> {
        let mut w = DumpWriter {
            out: Hashing::new(out),
            vnodes: 0,
            entries: 0,
        };
        w.out.write_all(MAGIC)?;
        w.out.write_all(&DUMP_VERSION.to_le_bytes())?;
        w.record(&Record::Header(header))?;
        Ok(w)
    }

    fn record(&mut self, r: &Record) -> Result<(), DumpError> {
        let bytes = options()
            .serialize(r)
            .map_err(|e| DumpError::Corrupt(format!("record too large to dump: {e}")))?;
        let len = u32::try_from(bytes.len()).map_err(|_| DumpError::Corrupt("record too large".into()))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&bytes)?;
        Ok(())
    }

    /// A vnode, followed by its bytes from `data` when given (exactly
    /// `rec.size` of them; fewer is an error).
    pub fn vnode(&mut self, vnode: u64, rec: &VnodeRecord, data: Option<&mut dyn Read>) -> Result<(), DumpError> {
        self.record(&Record::Vnode {
            vnode,
            rec: rec.clone(),
            data: data.is_some(),
        })?;
        if let Some(src) = data {
            let copied = std::io::copy(&mut src.take(rec.size), &mut self.out)?;
            if copied != rec.size {
                return Err(DumpError::Corrupt(format!(
                    "data file of vnode {vnode} holds {copied} of {} bytes",
                    rec.size
                )));
            }
        }
        self.vnodes += 1;
        Ok(())
    }

    /// A directory entry.
    pub fn entry(&mut self, dir: u64, name: &str, vnode: u64, unique: u64) -> Result<(), DumpError> {
        self.record(&Record::Entry {
            dir,
            name: name.to_owned(),
            vnode,
            unique,
        })?;
        self.entries += 1;
        Ok(())
    }

    /// Ends the dump: the `End` record and the digest; returns the writer.
    pub fn finish(mut self) -> Result<W, DumpError> {
        self.record(&Record::End {
            vnodes: self.vnodes,
            entries: self.entries,
        })?;
        let digest = self.out.digest.clone().finish();
        self.out.inner.write_all(digest.as_ref())?;
        self.out.inner.flush()?;
        Ok(self.out.inner)
    }
}

/// Reads a dump record by record. Nothing it returns may be trusted until
/// [`DumpReader::next_record`] has returned `Ok(None)`: only then were the counts,
/// the digest and the end of the stream checked.
pub struct DumpReader<R: Read> {
    input: Hashing<R>,
    vnodes: u64,
    entries: u64,
    pending_data: u64,
    done: bool,
}

impl<R: Read> DumpReader<R> {
    /// Checks the magic and version and reads the header.
    pub fn new(input: R) -> Result<(Self, DumpHeader), DumpError> {
        let mut r = DumpReader {
            input: Hashing::new(input),
            vnodes: 0,
            entries: 0,
            pending_data: 0,
            done: false,
        };
        let mut magic = [0u8; 8];
        r.exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(DumpError::BadMagic);
        }
        let mut version = [0u8; 4];
        r.exact(&mut version)?;
        let version = u32::from_le_bytes(version);
        if version != DUMP_VERSION {
            return Err(DumpError::Version(version));
        }
        match r.record()? {
            Record::Header(h) => Ok((r, h)),
            other => Err(DumpError::Corrupt(format!("expected the header, found {other:?}"))),
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), DumpError> {
        self.input.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => DumpError::Truncated(self.input.count),
            _ => e.into(),
        })
    }

    fn record(&mut self) -> Result<Record, DumpError> {
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_RECORD {
            return Err(DumpError::Corrupt(format!(
                "record of {len} bytes at offset {} (at most {MAX_RECORD})",
                self.input.count - 4
            )));
        }
        let mut bytes = vec![0u8; len as usize];
        self.exact(&mut bytes)?;
        options()
            .deserialize(&bytes)
            .map_err(|e| DumpError::Corrupt(format!("undecodable record at offset {}: {e}", self.input.count)))
    }

    /// The next vnode or entry record; `Ok(None)` after a verified end. After
    /// a `Vnode` record with `data`, the caller must take its bytes with
    /// [`DumpReader::copy_data`] before asking for the next record.
    pub fn next_record(&mut self) -> Result<Option<Record>, DumpError> {
        if self.done {
            return Ok(None);
        }
        if self.pending_data > 0 {
            return Err(DumpError::Corrupt("file data left unread".into()));
        }
        match self.record()? {
            Record::Header(_) => Err(DumpError::Corrupt("a second header".into())),
            r @ Record::Vnode { .. } => {
                if let Record::Vnode { rec, data: true, .. } = &r {
                    self.pending_data = rec.size;
                }
                self.vnodes += 1;
                Ok(Some(r))
            }
            r @ Record::Entry { .. } => {
                self.entries += 1;
                Ok(Some(r))
            }
            Record::End { vnodes, entries } => {
                if (vnodes, entries) != (self.vnodes, self.entries) {
                    return Err(DumpError::Corrupt(format!(
                        "the end record counts {vnodes} vnodes and {entries} entries; the dump held {} and {}",
                        self.vnodes, self.entries
                    )));
                }
                let computed = self.input.digest.clone().finish();
                let mut stored = [0u8; DIGEST_LEN];
                self.input.inner.read_exact(&mut stored).map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => DumpError::Truncated(self.input.count),
                    _ => e.into(),
                })?;
                if stored != computed.as_ref() {
                    return Err(DumpError::Corrupt("checksum mismatch".into()));
                }
                let mut extra = [0u8; 1];
                if self.input.inner.read(&mut extra)? != 0 {
                    return Err(DumpError::Corrupt("bytes after the end of the dump".into()));
                }
                self.done = true;
                Ok(None)
            }
        }
    }

    /// Copies the bytes of the vnode just returned into `out`.
    pub fn copy_data(&mut self, out: &mut dyn Write) -> Result<(), DumpError> {
        let want = self.pending_data;
        self.pending_data = 0;
        let copied = std::io::copy(&mut (&mut self.input).take(want), out)?;
        if copied != want {
            return Err(DumpError::Truncated(self.input.count));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellfs_protocol::FileKind;
    use proptest::prelude::*;

    fn header(since: Option<Timestamp>) -> DumpHeader {
        DumpHeader {
            volume: "site.www".into(),
            source_id: 7,
            made: Timestamp { secs: 100, nanos: 0 },
            since,
            quota: 1 << 20,
            state: VolumeState {
                next_vnode: 4,
                next_unique: 4,
                used: 5,
                files: 3,
                updated: Timestamp { secs: 99, nanos: 1 },
            },
        }
    }

    fn file(size: u64, unique: u64) -> VnodeRecord {
        let mut r = VnodeRecord::new(
            FileKind::File,
            0o644,
            (33, 33),
            unique,
            1,
            Timestamp { secs: 5, nanos: 0 },
        );
        r.size = size;
        r.data_file = 2;
        r
    }

    /// A dump of a root dir and files with these contents.
    fn sample(files: &[Vec<u8>]) -> Vec<u8> {
        let mut w = DumpWriter::new(Vec::new(), header(None)).unwrap();
        let root = VnodeRecord::new(FileKind::Dir, 0o755, (0, 0), 1, 1, Timestamp::default());
        w.vnode(1, &root, None).unwrap();
        for (i, bytes) in files.iter().enumerate() {
            let vnode = i as u64 + 2;
            w.vnode(vnode, &file(bytes.len() as u64, vnode), Some(&mut bytes.as_slice()))
                .unwrap();
            w.entry(1, &format!("f{i}"), vnode, vnode).unwrap();
        }
        w.finish().unwrap()
    }

    /// Reads a whole dump; returns the file contents in order.
    fn read_all(bytes: &[u8]) -> Result<(DumpHeader, Vec<Vec<u8>>, usize), DumpError> {
        let (mut r, h) = DumpReader::new(bytes)?;
        let mut files = Vec::new();
        let mut entries = 0;
        while let Some(rec) = r.next_record()? {
            match rec {
                Record::Vnode { data: true, .. } => {
                    let mut out = Vec::new();
                    r.copy_data(&mut out)?;
                    files.push(out);
                }
                Record::Entry { .. } => entries += 1,
                _ => {}
            }
        }
        Ok((h, files, entries))
    }

    #[test]
    fn round_trip() {
        let files = vec![b"hello".to_vec(), Vec::new(), vec![7u8; 100_000]];
        let bytes = sample(&files);
        let (h, back, entries) = read_all(&bytes).unwrap();
        assert_eq!(h, header(None));
        assert_eq!(back, files);
        assert_eq!(entries, 3);
    }

    #[test]
    fn every_cut_is_refused() {
        let bytes = sample(&[b"some bytes".to_vec(), b"more".to_vec()]);
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "a dump cut at {cut} was accepted");
        }
    }

    #[test]
    fn trailing_bytes_and_other_versions_are_refused() {
        let mut bytes = sample(&[b"x".to_vec()]);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(read_all(&longer), Err(DumpError::Corrupt(_))));
        bytes[8] = 1;
        assert!(matches!(read_all(&bytes), Err(DumpError::Version(1))));
        assert!(matches!(read_all(b"NOTADUMP...."), Err(DumpError::BadMagic)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_flipped_byte_is_refused(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = sample(&[b"content of a file".to_vec(), vec![1u8; 3000]]);
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert!(read_all(&bytes).is_err(), "flipping bit {} of byte {} went unnoticed", bit, i);
        }

        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend(DUMP_VERSION.to_le_bytes());
            with_magic.extend(&bytes);
            let _ = read_all(&bytes);
            let _ = read_all(&with_magic);
        }
    }
}
