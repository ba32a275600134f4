//! One volume: its redb metadata (`meta.redb`), its folder of data files, and
//! every operation on its vnodes. All methods here are blocking; callers run
//! them on a blocking thread while holding [`Volume::lock`] (shared for reads,
//! exclusive for changes).

mod data;
mod namespace;
mod txn;

pub use data::{CHUNK, MAX_FILE_SIZE, PendingStore, StorePlan};
pub use namespace::{Created, Removed, Renamed};

use crate::error::{FsResult, rpc_err};
use crate::schema::{self, ENTRIES, STATE, STATE_KEY, VNODES, VnodeRecord, VolumeState};
use cellfs_protocol::message::Break;
use cellfs_protocol::{DirEntry, ErrorCode, Fid, FileKind, Status, Timestamp, VolumeId};
use redb::{Database, ReadableDatabase};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use txn::{Reader, VolTxn};

/// Bytes a directory's size grows per entry.
pub const DIR_ENTRY_SIZE: u64 = 32;
/// Longest symlink target.
pub const MAX_TARGET_LEN: usize = 4095;
/// Highest link count.
pub const MAX_LINKS: u32 = 65_000;

/// The result of a change: what to answer, and which promises it breaks.
#[derive(Debug)]
pub struct Change<T> {
    /// The value to reply with.
    pub value: T,
    /// Callback breaks for the FIDs the change affected.
    pub breaks: Vec<Break>,
}

/// An open volume.
#[derive(Debug)]
pub struct Volume {
    id: VolumeId,
    dir: PathBuf,
    db: Database,
    quota: AtomicU64,
    removed: AtomicBool,
    /// Serializes changes (write) against reads that grant promises (read).
    pub lock: tokio::sync::RwLock<()>,
}

fn now() -> Timestamp {
    Timestamp::now()
}

impl Volume {
    /// Creates a new volume in `dir` (which must not exist) with an empty root directory.
    pub fn create_new(dir: &Path, id: VolumeId, quota: u64) -> FsResult<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let db = Database::create(dir.join("meta.redb"))?;
        let t = now();
        let root = VnodeRecord {
            kind: FileKind::Dir,
            mode: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            data_version: 1,
            data_file: 0,
            mtime: t,
            ctime: t,
            atime: t,
            unique: 1,
            target: None,
            parent: Fid::ROOT_VNODE,
        };
        let state = VolumeState {
            next_vnode: Fid::ROOT_VNODE + 1,
            next_unique: 2,
            used: 0,
            files: 1,
            updated: t,
        };
        let txn = db.begin_write()?;
        {
            let mut vnodes = txn.open_table(VNODES)?;
            vnodes.insert(Fid::ROOT_VNODE, schema::encode(&root)?.as_slice())?;
            txn.open_table(ENTRIES)?;
            let mut st = txn.open_table(STATE)?;
            st.insert(STATE_KEY, schema::encode(&state)?.as_slice())?;
        }
        txn.commit()?;
        sync_dir(dir)?;
        Self::from_db(dir, id, quota, db)
    }

    /// Opens an existing volume and deletes data files a crash left behind.
    pub fn open(dir: &Path, id: VolumeId, quota: u64) -> FsResult<Self> {
        let db = Database::open(dir.join("meta.redb"))?;
        let vol = Self::from_db(dir, id, quota, db)?;
        vol.remove_orphans()?;
        Ok(vol)
    }

    fn from_db(dir: &Path, id: VolumeId, quota: u64, db: Database) -> FsResult<Self> {
        Ok(Volume {
            id,
            dir: dir.to_owned(),
            db,
            quota: AtomicU64::new(quota),
            removed: AtomicBool::new(false),
            lock: tokio::sync::RwLock::new(()),
        })
    }

    /// The volume id.
    pub fn id(&self) -> VolumeId {
        self.id
    }

    /// The volume's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The quota in bytes (0 = unlimited).
    pub fn quota(&self) -> u64 {
        self.quota.load(Ordering::Relaxed)
    }

    /// Sets the in-memory quota (the VLDB holds the durable copy).
    pub fn set_quota(&self, quota: u64) {
        self.quota.store(quota, Ordering::Relaxed);
    }

    /// Marks the volume deleted: every later call fails with `Stale`.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
    }

    fn check_live(&self) -> FsResult<()> {
        if self.removed.load(Ordering::Relaxed) {
            return Err(rpc_err(ErrorCode::Stale, format!("volume {} was removed", self.id)));
        }
        Ok(())
    }

    fn data_path(&self, vnode: u64, version: u64) -> PathBuf {
        self.dir.join("data").join(format!("{vnode}.{version}"))
    }

    fn reader(&self) -> FsResult<Reader> {
        self.check_live()?;
        Reader::new(self.id, self.db.begin_read()?)
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds.
    fn write<T>(&self, f: impl FnOnce(&mut VolTxn<'_>) -> FsResult<T>) -> FsResult<T> {
        self.check_live()?;
        let txn = self.db.begin_write()?;
        let value = {
            let mut vt = VolTxn::new(self.id, &txn)?;
            let value = f(&mut vt)?;
            vt.finish()?;
            value
        };
        txn.commit()?;
        Ok(value)
    }

    /// The volume's counters.
    pub fn state(&self) -> FsResult<VolumeState> {
        self.reader()?.state()
    }

    /// Status of `fid`.
    pub fn status(&self, fid: Fid) -> FsResult<Status> {
        let r = self.reader()?;
        Ok(r.status(fid.vnode, &r.vnode(fid)?))
    }

    /// Looks `name` up in `dir`.
    pub fn lookup(&self, dir: Fid, name: &str) -> FsResult<Status> {
        let r = self.reader()?;
        r.dir(dir)?;
        let (vnode, _) = r
            .entry(dir.vnode, name)?
            .ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("{name:?} not found")))?;
        Ok(r.status(vnode, &r.vnode_by_number(vnode)?))
    }

    /// The directory's status and every entry with its status.
    pub fn read_dir(&self, dir: Fid) -> FsResult<(Status, Vec<DirEntry>)> {
        let r = self.reader()?;
        let rec = r.dir(dir)?;
        let mut entries = Vec::new();
        for (name, vnode) in r.entries(dir.vnode)? {
            let status = r.status(vnode, &r.vnode_by_number(vnode)?);
            entries.push(DirEntry { name, status });
        }
        Ok((r.status(dir.vnode, &rec), entries))
    }

    /// The target of a symlink or mount point.
    pub fn read_link(&self, fid: Fid) -> FsResult<String> {
        let r = self.reader()?;
        let rec = r.vnode(fid)?;
        match (rec.kind, rec.target) {
            (FileKind::Symlink | FileKind::MountPoint, Some(t)) => Ok(t),
            _ => Err(rpc_err(ErrorCode::Invalid, format!("{fid} is not a link"))),
        }
    }

    /// Deletes data files that are not the committed version of a live vnode.
    fn remove_orphans(&self) -> FsResult<()> {
        let r = self.reader()?;
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data)?;
        let mut removed = 0usize;
        for entry in std::fs::read_dir(&data)? {
            let entry = entry?;
            let name = entry.file_name();
            let keep = match parse_data_name(&name.to_string_lossy()) {
                Some((vnode, version)) => match r.vnode_by_number_opt(vnode)? {
                    Some(rec) => rec.kind == FileKind::File && rec.data_file == version,
                    None => false,
                },
                None => false,
            };
            if !keep {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&data)?;
            tracing::info!(volume = self.id, removed, "removed orphan data files");
        }
        Ok(())
    }
}

fn parse_data_name(name: &str) -> Option<(u64, u64)> {
    let (vnode, version) = name.split_once('.')?;
    Some((vnode.parse().ok()?, version.parse().ok()?))
}

/// fsyncs a directory so a file created or removed in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Builds a `Break` for `fid`.
pub fn brk(fid: Fid, names: Vec<String>, deleted: bool) -> Break {
    Break { fid, names, deleted }
}

#[cfg(test)]
mod tests;
