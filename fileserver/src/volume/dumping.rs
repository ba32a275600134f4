//! Writing a volume as a dump stream and building a volume folder from one.

use super::{Volume, new_incarnation, sync_dir};
use crate::dump::{DumpError, DumpHeader, DumpReader, DumpWriter, Record};
use crate::error::{FsError, FsResult, rpc_err};
use crate::schema::{self, ENTRIES, JOURNAL, JOURNAL_KEY, JournalState, STATE, STATE_KEY, VNODES, VnodeRecord};
use cellfs_protocol::{ErrorCode, Fid, FileKind, Timestamp};
use redb::Database;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

impl From<DumpError> for FsError {
    fn from(e: DumpError) -> Self {
        match e {
            DumpError::Io(e) => FsError::Io(e),
            other => rpc_err(ErrorCode::Corrupt, other.to_string()),
        }
    }
}

impl Volume {
    /// Writes this volume as a dump of volume `source_id` called `name` to
    /// `out`: every vnode and entry, with the bytes of every file (or, with
    /// `since`, of files whose status changed at or after it). Called on a
    /// snapshot (a clone nothing changes), so data files stay put while they
    /// are read.
    pub fn write_dump<W: Write>(&self, out: W, name: &str, source_id: u64, since: Option<Timestamp>) -> FsResult<W> {
        let r = self.reader()?;
        let header = DumpHeader {
            volume: name.to_owned(),
            source_id,
            made: Timestamp::now(),
            since,
            quota: self.quota(),
            state: r.state()?,
        };
        let mut w = DumpWriter::new(out, header)?;
        for (vnode, rec) in r.all_vnodes()? {
            let with_data = rec.kind == FileKind::File && rec.size > 0 && since.is_none_or(|t| rec.ctime >= t);
            if with_data {
                let mut file = std::io::BufReader::with_capacity(1 << 20, self.open_data_file(vnode, rec.data_file)?);
                w.vnode(vnode, &rec, Some(&mut file))?;
            } else {
                w.vnode(vnode, &rec, None)?;
            }
        }
        for (dir, name, vnode, unique) in r.all_entries()? {
            w.entry(dir, &name, vnode, unique)?;
        }
        Ok(w.finish()?)
    }
}

/// What [`build_from_dump`] made.
#[derive(Debug)]
pub struct Built {
    /// The dump's header.
    pub header: DumpHeader,
    /// Vnodes restored.
    pub vnodes: u64,
}

/// Builds a complete volume folder in `dir` (new) from the dump `input`.
///
/// Files an incremental dump lists without bytes are hard-linked from `base`
/// (the volume the dump applies to), whose record must name the same vnode
/// incarnation and data file. Every data version is raised by `dv_offset`,
/// so nodes holding copies of an older volume of the same id never take them
/// for current. The folder is complete and durable when this returns; on an
/// error the caller deletes it.
pub fn build_from_dump<R: Read>(input: R, dir: &Path, base: Option<&Volume>, dv_offset: u64) -> FsResult<Built> {
    let (mut reader, header) = DumpReader::new(input)?;
    if header.since.is_some() && base.is_none() {
        return Err(rpc_err(
            ErrorCode::Invalid,
            "an incremental dump applies to an existing volume; restore the full dump first",
        ));
    }
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let db = Database::create(dir.join("meta.redb"))?;
    let base_reader = base.map(|b| b.reader()).transpose()?;
    let txn = db.begin_write()?;
    let mut kinds: HashMap<u64, (u64, FileKind)> = HashMap::new();
    let mut entries_seen: Vec<(u64, u64, u64)> = Vec::new();
    {
        let mut vnodes = txn.open_table(VNODES)?;
        let mut entries = txn.open_table(ENTRIES)?;
        while let Some(record) = reader.next_record()? {
            match record {
                Record::Vnode { vnode, mut rec, data } => {
                    if kinds.insert(vnode, (rec.unique, rec.kind)).is_some() {
                        return Err(rpc_err(ErrorCode::Corrupt, format!("vnode {vnode} listed twice")));
                    }
                    if rec.kind == FileKind::File && rec.size > 0 {
                        let path = data_dir.join(super::data_name(vnode, rec.data_file));
                        if data {
                            let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
                            reader.copy_data(&mut file)?;
                            file.flush()?;
                        } else {
                            link_from_base(base, base_reader.as_ref(), vnode, &rec, &path)?;
                        }
                    } else if data {
                        return Err(rpc_err(
                            ErrorCode::Corrupt,
                            format!("bytes for vnode {vnode}, which has none"),
                        ));
                    }
                    rec.data_version = rec.data_version.saturating_add(dv_offset);
                    vnodes.insert(vnode, schema::encode(&rec)?.as_slice())?;
                }
                Record::Entry {
                    dir,
                    name,
                    vnode,
                    unique,
                } => {
                    cellfs_protocol::names::validate_name(&name)
                        .map_err(|e| rpc_err(ErrorCode::Corrupt, format!("entry {name:?}: {e}")))?;
                    entries.insert((dir, name.as_str()), (vnode, unique))?;
                    entries_seen.push((dir, vnode, unique));
                }
                Record::Header(_) | Record::End { .. } => {
                    return Err(rpc_err(ErrorCode::Corrupt, "unexpected record"));
                }
            }
        }
        // The stream is verified; now its structure.
        match kinds.get(&Fid::ROOT_VNODE) {
            Some((_, FileKind::Dir)) => {}
            _ => return Err(rpc_err(ErrorCode::Corrupt, "the dump has no root directory")),
        }
        for (d, vnode, unique) in entries_seen {
            if !matches!(kinds.get(&d), Some((_, FileKind::Dir))) {
                return Err(rpc_err(
                    ErrorCode::Corrupt,
                    format!("an entry in vnode {d}, not a directory"),
                ));
            }
            if kinds.get(&vnode).map(|(u, _)| *u) != Some(unique) {
                return Err(rpc_err(
                    ErrorCode::Corrupt,
                    format!("an entry names missing vnode {vnode}.{unique}"),
                ));
            }
        }
        txn.open_table(JOURNAL)?;
        let mut st = txn.open_table(STATE)?;
        let mut state = header.state.clone();
        state.files = kinds.len() as u64;
        st.insert(STATE_KEY, schema::encode(&state)?.as_slice())?;
        let journal = JournalState {
            incarnation: new_incarnation()?,
            seq: 0,
            oldest: 1,
        };
        st.insert(JOURNAL_KEY, schema::encode(&journal)?.as_slice())?;
    }
    txn.commit()?;
    drop(db);
    sync_tree(dir)?;
    Ok(Built {
        vnodes: kinds.len() as u64,
        header,
    })
}

/// An incremental dump's unchanged file: hard-linked from the base volume,
/// whose record must be the same incarnation with the same data file.
fn link_from_base(
    base: Option<&Volume>,
    base_reader: Option<&super::Reader>,
    vnode: u64,
    rec: &VnodeRecord,
    path: &Path,
) -> FsResult<()> {
    use super::VnodeAccess;
    let (Some(base), Some(r)) = (base, base_reader) else {
        return Err(rpc_err(
            ErrorCode::Corrupt,
            format!("vnode {vnode} comes without its bytes in a full dump"),
        ));
    };
    let same = r
        .vnode_by_number_opt(vnode)?
        .is_some_and(|b| b.unique == rec.unique && b.data_file == rec.data_file && b.size == rec.size);
    let source = same.then(|| base.locate_data_file(vnode, rec.data_file)).flatten();
    let Some(source) = source else {
        return Err(rpc_err(
            ErrorCode::Invalid,
            format!(
                "the incremental dump does not apply to this volume: it has no matching copy of vnode {vnode}; restore the full dump it follows first"
            ),
        ));
    };
    std::fs::hard_link(source, path)?;
    Ok(())
}

/// Makes everything written under `dir` durable with one `syncfs`, then the folders.
fn sync_tree(dir: &Path) -> FsResult<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)?;
    // SAFETY: `f` is an open descriptor for the whole call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    sync_dir(&dir.join("data"))?;
    sync_dir(dir)?;
    Ok(())
}
