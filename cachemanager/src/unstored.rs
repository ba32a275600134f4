//! Writes whose store failed because the fileserver could not be reached
//! (a network cut, a server killed or restarting): kept in the cache
//! folder's `unstored/`, each with the data version it was written on, and
//! stored once the server answers again (`Core::store_kept`) on condition
//! that the file did not change there meanwhile. A file created here whose
//! create the server lost in a crash (a create is durable with the first
//! store or sync of its file: the one that failed) is made again under its
//! name, if that name is still free. One that
//! cannot be stored (the file changed or was removed, the quota is full,
//! the caller lost its rights) goes to `lost+found/` with its bytes, where
//! an admin finds it. The close that failed still reports `EIO`: the bytes are not on the
//! server yet, and may never be.
//!
//! Each kept write is one file, made whole before it gets its name
//! (temporary file, fsync, rename, fsync of the folder): `MAGIC`, the
//! length of the encoded [`Kept`] (4 bytes, little-endian), the [`Kept`],
//! then the file's bytes. A file that does not parse goes to `lost+found/`
//! whole.

use bincode::Options;
use cellfs_protocol::acl::Caller;
use cellfs_protocol::{Fid, Timestamp};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Leading bytes of a kept write.
const MAGIC: &[u8; 8] = b"CELLFSKW";
/// Largest encoded [`Kept`] accepted when reading one back.
const MAX_KEPT: u32 = 64 << 10;

/// What a kept write needs to be stored later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    /// The file written.
    pub fid: Fid,
    /// The data version the writes were made on: the store is taken only
    /// while the file is still at it.
    pub base: u64,
    /// The modification time the store sets.
    pub mtime: Timestamp,
    /// Who wrote it (the server checks their rights again).
    pub caller: Option<Caller>,
    /// For a file created here and not yet durable: where it was, to make
    /// it again if the server lost its create in a crash.
    pub place: Option<Place>,
}

/// A file's folder, name and creation attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Place {
    /// The folder.
    pub dir: Fid,
    /// The name in it.
    pub name: String,
    /// Mode bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// A kept write found in `unstored/`.
#[derive(Debug, Clone)]
pub struct KeptFile {
    /// What it is.
    pub kept: Kept,
    /// Its file.
    pub path: PathBuf,
    /// Where the file's bytes start in it.
    pub start: u64,
    /// How many bytes the file has.
    pub len: u64,
    /// Its inode number when listed: a write of the same file kept since
    /// replaces it, and must not be removed with it.
    ino: u64,
}

/// The folders of kept writes and of the ones given up.
#[derive(Debug, Clone)]
pub struct Unstored {
    dir: PathBuf,
    lost: PathBuf,
}

fn codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(u64::from(MAX_KEPT))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Unstored {
    /// The kept writes of the cache folder `cache_root`.
    pub fn new(cache_root: &Path) -> Self {
        Unstored {
            dir: cache_root.join("unstored"),
            lost: cache_root.join("lost+found"),
        }
    }

    /// Keeps the bytes of `copy` as the unstored write `kept`, replacing
    /// any earlier kept write of the same file (this one holds all of it);
    /// returns where.
    pub fn keep(&self, kept: &Kept, copy: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let meta = codec().serialize(kept).map_err(io::Error::other)?;
        let meta_len = u32::try_from(meta.len()).map_err(io::Error::other)?;
        let path = self.path_of(kept.fid);
        let tmp = self.dir.join(format!("{}.tmp", kept.fid));
        let written = (|| {
            let mut out = File::create(&tmp)?;
            out.write_all(MAGIC)?;
            out.write_all(&meta_len.to_le_bytes())?;
            out.write_all(&meta)?;
            io::copy(&mut File::open(copy)?, &mut out)?;
            out.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            // A full disk leaves no partial copy taking its space.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir)?;
        Ok(path)
    }

    /// Removes what a crash left half-written (temporary files); only at
    /// start, before anything is kept.
    pub fn discard_partial(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// The kept writes, in name order. A file that is not one (damaged)
    /// goes to `lost+found/` whole.
    pub fn list(&self) -> Vec<KeptFile> {
        let mut found = Vec::new();
        for path in self.kept_paths() {
            match read_kept(&path) {
                Ok(k) => found.push(k),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "not a kept write; moving it to lost+found");
                    let _ = self.lose(&path, 0, &format!("unreadable-{}", stamp()));
                }
            }
        }
        found
    }

    /// How many writes are kept.
    pub fn count(&self) -> usize {
        self.kept_paths().len()
    }

    /// The kept writes' files, in name order: not the temporary ones,
    /// which a failing store may be writing now.
    fn kept_paths(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_none_or(|e| e != "tmp"))
            .collect();
        paths.sort();
        paths
    }

    /// The kept write `f` reached the server: it goes (unless a later
    /// write of the file was kept over it meanwhile).
    pub fn stored(&self, f: &KeptFile) {
        if !f.still_there() {
            return;
        }
        if let Err(e) = std::fs::remove_file(&f.path) {
            tracing::warn!(path = %f.path.display(), error = %e, "cannot remove a stored kept write");
        }
    }

    /// Where the kept write of `fid` is (or would be).
    pub fn path_of(&self, fid: Fid) -> PathBuf {
        self.dir.join(fid.to_string())
    }

    /// The kept write of `fid`, if any, is no longer needed: a store of the
    /// whole file that holds its bytes and later ones reached the server.
    pub fn superseded(&self, fid: Fid) {
        let path = self.path_of(fid);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Err(e) = sync_dir(&self.dir) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot sync the kept writes' folder");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove a superseded kept write"),
        }
    }

    /// The kept write `f` cannot be stored: its bytes go to `lost+found/`;
    /// returns where (nothing moves if a later write of the file was kept
    /// over it meanwhile: that one is tried next time).
    pub fn give_up(&self, f: &KeptFile) -> io::Result<PathBuf> {
        if !f.still_there() {
            return Err(io::Error::other("a later write of the file was kept over it"));
        }
        self.lose(&f.path, f.start, &format!("{}-{}", f.kept.fid, stamp()))
    }

    /// A file made here that the server refused (`copy`, the cached copy of
    /// `fid`, which stays where it is): its bytes go to `lost+found/`;
    /// returns where.
    pub fn save_refused(&self, copy: &Path, fid: Fid) -> io::Result<PathBuf> {
        self.save(copy, 0, &format!("{fid}-{}", stamp()))
    }

    /// Copies `path` from `start` to `lost+found/name`, then removes it.
    fn lose(&self, path: &Path, start: u64, name: &str) -> io::Result<PathBuf> {
        let dest = self.save(path, start, name)?;
        std::fs::remove_file(path)?;
        Ok(dest)
    }

    /// Copies `path` from `start` to `lost+found/name`, durably.
    fn save(&self, path: &Path, start: u64, name: &str) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.lost)?;
        let dest = self.lost.join(name);
        let mut src = File::open(path)?;
        src.seek(SeekFrom::Start(start))?;
        let mut out = File::create(&dest)?;
        io::copy(&mut src, &mut out)?;
        out.sync_all()?;
        sync_dir(&self.lost)?;
        Ok(dest)
    }
}

/// Microseconds since the epoch, to tell apart what lands in `lost+found/`.
fn stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

impl KeptFile {
    /// Whether its file is still the one listed.
    fn still_there(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino)
    }
}

fn read_kept(path: &Path) -> io::Result<KeptFile> {
    use std::os::unix::fs::MetadataExt;
    let mut f = File::open(path)?;
    let stat = f.metadata()?;
    let total = stat.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no kept-write header"));
    }
    let meta_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if meta_len > MAX_KEPT {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "kept-write header too long"));
    }
    let mut meta = vec![0u8; meta_len as usize];
    f.read_exact(&mut meta)?;
    let kept: Kept = codec()
        .deserialize(&meta)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let start = 12 + u64::from(meta_len);
    Ok(KeptFile {
        kept,
        path: path.to_owned(),
        start,
        len: total.saturating_sub(start),
        ino: stat.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(vnode: u64, base: u64) -> Kept {
        Kept {
            fid: Fid {
                volume: 7,
                vnode,
                unique: 1,
            },
            base,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            },
            caller: Some(Caller {
                uid: 33,
                gids: vec![33, 4],
            }),
            place: Some(Place {
                dir: Fid {
                    volume: 7,
                    vnode: 1,
                    unique: 1,
                },
                name: "upload.jpg".into(),
                mode: 0o644,
                uid: 33,
                gid: 33,
            }),
        }
    }

    #[test]
    fn a_kept_write_reads_back_and_replaces_the_older_one() {
        let root = tempfile::tempdir().unwrap();
        let copy = root.path().join("copy");
        let u = Unstored::new(root.path());
        assert!(u.list().is_empty());
        std::fs::write(&copy, b"first").unwrap();
        u.keep(&kept(3, 1), &copy).unwrap();
        std::fs::write(&copy, b"second, longer").unwrap();
        u.keep(&kept(3, 1), &copy).unwrap();
        std::fs::write(&copy, b"").unwrap();
        u.keep(&kept(4, 9), &copy).unwrap();
        let found = u.list();
        assert_eq!(found.len(), 2);
        assert_eq!(u.count(), 2);
        assert_eq!(found[0].kept, kept(3, 1));
        assert_eq!(found[0].len, 14);
        let bytes = std::fs::read(&found[0].path).unwrap();
        assert_eq!(&bytes[found[0].start as usize..], b"second, longer");
        assert_eq!((found[1].kept.base, found[1].len), (9, 0));
        u.stored(&found[1]);
        let lost = u.give_up(&found[0]).unwrap();
        assert_eq!(std::fs::read(lost).unwrap(), b"second, longer");
        assert!(u.list().is_empty());
        assert_eq!(u.count(), 0);
        // A copy that cannot be read leaves nothing behind.
        assert!(u.keep(&kept(5, 1), &root.path().join("gone")).is_err());
        assert_eq!(std::fs::read_dir(root.path().join("unstored")).unwrap().count(), 0);
    }

    #[test]
    fn a_write_kept_again_is_not_removed_with_the_one_listed_before() {
        let root = tempfile::tempdir().unwrap();
        let copy = root.path().join("copy");
        let u = Unstored::new(root.path());
        std::fs::write(&copy, b"older").unwrap();
        u.keep(&kept(3, 1), &copy).unwrap();
        let listed = u.list();
        std::fs::write(&copy, b"newer").unwrap();
        u.keep(&kept(3, 1), &copy).unwrap();
        u.stored(&listed[0]);
        assert!(u.give_up(&listed[0]).is_err());
        let now = u.list();
        assert_eq!(now.len(), 1);
        assert_eq!(&std::fs::read(&now[0].path).unwrap()[now[0].start as usize..], b"newer");
    }

    #[test]
    fn damaged_files_go_to_lost_found_whole_and_temporaries_go() {
        let root = tempfile::tempdir().unwrap();
        let u = Unstored::new(root.path());
        std::fs::create_dir_all(root.path().join("unstored")).unwrap();
        std::fs::write(root.path().join("unstored/7.1.1"), b"CELLFSKW\xff\xff\xff\xffjunk").unwrap();
        std::fs::write(root.path().join("unstored/7.2.1"), b"not ours").unwrap();
        std::fs::write(root.path().join("unstored/7.3.1.tmp"), b"CELLFSKW").unwrap();
        assert!(u.list().is_empty());
        assert!(
            root.path().join("unstored/7.3.1.tmp").exists(),
            "a write being kept now"
        );
        u.discard_partial();
        let lost: Vec<Vec<u8>> = std::fs::read_dir(root.path().join("lost+found"))
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert_eq!(lost.len(), 2);
        assert!(lost.contains(&b"not ours".to_vec()));
        assert_eq!(u.count(), 0);
    }
}
