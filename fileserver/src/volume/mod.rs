//! One volume: its redb metadata (`meta.redb`), its folder of data files, and
//! every operation on its vnodes. All methods here are blocking; callers run
//! them on a blocking thread while holding [`Volume::lock`] (shared for reads,
//! exclusive for changes).

mod access;
mod clone;
mod data;
mod dumping;
mod group;
mod namespace;
mod redo;
mod settle;
mod txn;
mod unclean;

use txn::VnodeAccess;

pub use access::Governed;
pub use data::{CHUNK, MAX_FILE_SIZE, PendingStore, StorePlan, WrittenAhead};
pub use dumping::{Built, build_from_dump};
pub use group::{Finish, Job};
pub use namespace::{Created, Removed, Renamed};
pub use settle::LOGGED_MAX;
pub use unclean::LAZY_MAX;

use crate::error::{FsResult, rpc_err};
use crate::schema::{
    self, ENTRIES, JOURNAL, JOURNAL_KEY, JournalState, OPEN_KEY, STATE, STATE_KEY, VNODES, VnodeRecord, VolumeState,
};
use cellfs_protocol::message::Break;
use cellfs_protocol::spares::Spares;
use cellfs_protocol::{DirEntry, ErrorCode, Fid, FileKind, Status, Timestamp, VolumeId};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
pub use txn::{Reader, VolTxn};

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

/// Answer of [`Volume::reconnect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnection {
    /// The volume's incarnation.
    pub incarnation: u64,
    /// The volume's change number now.
    pub current: u64,
    /// FIDs changed after the client's change number (plus listed FIDs that
    /// no longer exist), sorted; `None` when the journal cannot tell.
    pub changed: Option<Vec<Fid>>,
    /// Listed FIDs that did not change and exist: the caller grants promises on them.
    pub unchanged: Vec<Fid>,
}

/// An open volume.
#[derive(Debug)]
pub struct Volume {
    id: VolumeId,
    dir: PathBuf,
    db: Database,
    quota: AtomicU64,
    journal_len: u64,
    removed: AtomicBool,
    /// Set when the volume moved to another server.
    moved: AtomicBool,
    /// For a backup clone: the data folder of the volume it copies.
    origin: OnceLock<PathBuf>,
    /// For a clone: whether its own folder may hold data files (handed over
    /// or adopted); until then every file is read from the origin.
    holds_own_files: AtomicBool,
    /// For a read-write volume: its clones (backup, read-only copy).
    clones: RwLock<Vec<Arc<Volume>>>,
    /// Serializes changes (write) against reads that grant promises (read).
    pub lock: tokio::sync::RwLock<()>,
    /// Changes waiting for the next commit group.
    group: Mutex<group::Queue>,
    /// Data files committed with their bytes logged, not settled yet.
    unsettled: Mutex<settle::Unsettled>,
    /// Held while settling (see `volume/settle.rs`).
    settling: Mutex<()>,
    /// Changes committed without a flush (see `volume/unclean.rs`).
    lazy: Mutex<unclean::Lazy>,
    /// The log that makes a commit group durable (see `volume/redo.rs`).
    redo: Mutex<redo::Redo>,
    /// Empty files new data files are made from, once the volume is written.
    spares: OnceLock<Spares>,
    /// Held while `spares` is set up.
    spares_setup: Mutex<()>,
}

/// Spare files a written volume keeps ready (`cellfs_protocol::spares`).
const SPARES: usize = 32;

impl Drop for Volume {
    /// Closes the volume: clears its open mark, durably, which also flushes
    /// every change still waiting for a flush.
    fn drop(&mut self) {
        if self.removed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.mark_closed() {
            tracing::warn!(volume = self.id, error = %e, "cannot mark the volume closed; its next open recovers it as after a crash");
        }
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// A random nonzero volume incarnation.
pub fn new_incarnation() -> FsResult<u64> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    loop {
        let mut bytes = [0u8; 8];
        rng.fill(&mut bytes)
            .map_err(|_| rpc_err(ErrorCode::Io, "the system random source failed"))?;
        let v = u64::from_le_bytes(bytes);
        if v != 0 {
            return Ok(v);
        }
    }
}

impl Volume {
    /// Creates a new volume in `dir` (which must not exist) with an empty root
    /// directory, a new incarnation and an empty journal keeping at most
    /// `journal_len` entries.
    pub fn create_new(dir: &Path, id: VolumeId, quota: u64, journal_len: u64) -> FsResult<Self> {
        std::fs::create_dir_all(dir.join("data"))?;
        let db = Database::create(dir.join("meta.redb"))?;
        let t = now();
        let mut root = VnodeRecord::new(FileKind::Dir, 0o755, (0, 0), 1, Fid::ROOT_VNODE, t);
        root.acl = Some(cellfs_protocol::acl::Acl::open());
        let state = VolumeState {
            next_vnode: Fid::ROOT_VNODE + 1,
            next_unique: 2,
            used: 0,
            files: 1,
            updated: t,
        };
        let journal = JournalState {
            incarnation: new_incarnation()?,
            seq: 0,
            oldest: 1,
        };
        let txn = db.begin_write()?;
        {
            let mut vnodes = txn.open_table(VNODES)?;
            vnodes.insert(Fid::ROOT_VNODE, schema::encode(&root)?.as_slice())?;
            txn.open_table(ENTRIES)?;
            txn.open_table(JOURNAL)?;
            let mut st = txn.open_table(STATE)?;
            st.insert(STATE_KEY, schema::encode(&state)?.as_slice())?;
            st.insert(JOURNAL_KEY, schema::encode(&journal)?.as_slice())?;
            st.insert(OPEN_KEY, &[][..])?;
        }
        txn.commit()?;
        sync_dir(dir)?;
        Self::from_db(dir, id, quota, journal_len, db)
    }

    /// Opens an existing volume, gives it a journal if it has none (a new
    /// incarnation, change number 0), trims the journal to `journal_len`
    /// entries, and deletes data files a crash left behind.
    pub fn open(dir: &Path, id: VolumeId, quota: u64, journal_len: u64) -> FsResult<Self> {
        let vol = Self::open_no_cleanup(dir, id, quota, journal_len)?;
        vol.remove_orphans()?;
        Ok(vol)
    }

    /// Like [`Volume::open`] but leaves the data folder alone (the salvager
    /// reports orphan data files instead of silently deleting them).
    pub fn open_no_cleanup(dir: &Path, id: VolumeId, quota: u64, journal_len: u64) -> FsResult<Self> {
        let db = Database::open(dir.join("meta.redb"))?;
        let vol = Self::from_db(dir, id, quota, journal_len, db)?;
        vol.init_journal()?;
        vol.mark_open()?;
        vol.replay_logged()?;
        Ok(vol)
    }

    fn from_db(dir: &Path, id: VolumeId, quota: u64, journal_len: u64, db: Database) -> FsResult<Self> {
        let redo = redo::open(dir, &db)?;
        Ok(Volume {
            id,
            dir: dir.to_owned(),
            db,
            quota: AtomicU64::new(quota),
            journal_len,
            removed: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            origin: OnceLock::new(),
            holds_own_files: AtomicBool::new(true),
            clones: RwLock::new(Vec::new()),
            lock: tokio::sync::RwLock::new(()),
            group: Mutex::new(group::Queue::default()),
            unsettled: Mutex::new(settle::Unsettled::default()),
            settling: Mutex::new(()),
            lazy: Mutex::new(unclean::Lazy::default()),
            redo: Mutex::new(redo),
            spares: OnceLock::new(),
            spares_setup: Mutex::new(()),
        })
    }

    /// Creates the journal of a volume written before journals existed, and
    /// trims one that is longer than `journal_len` (the setting shrank).
    fn init_journal(&self) -> FsResult<()> {
        let txn = self.db.begin_write()?;
        let changed = {
            let mut st = txn.open_table(STATE)?;
            let mut journal = txn.open_table(JOURNAL)?;
            let existing = match st.get(JOURNAL_KEY)? {
                Some(v) => Some(schema::decode::<JournalState>(v.value())?),
                None => None,
            };
            let (mut js, mut changed) = match existing {
                Some(js) => (js, false),
                None => {
                    // Entries of an older journal (if any) mean nothing under a new incarnation.
                    journal.retain(|_, _| false)?;
                    let js = JournalState {
                        incarnation: new_incarnation()?,
                        seq: 0,
                        oldest: 1,
                    };
                    tracing::info!(
                        volume = self.id,
                        incarnation = js.incarnation,
                        "volume gets a change journal"
                    );
                    (js, true)
                }
            };
            let before = js.oldest;
            txn::trim(&mut journal, &mut js, self.journal_len)?;
            changed |= js.oldest != before;
            if changed {
                st.insert(JOURNAL_KEY, schema::encode(&js)?.as_slice())?;
            }
            changed
        };
        if changed {
            self.commit_durable(txn)?;
        } else {
            txn.abort()?;
        }
        Ok(())
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
        // Its folder is about to go: no spare file may appear in it.
        if let Some(spares) = self.spares.get() {
            spares.stop();
        }
    }

    /// Marks the volume moved to another server: requests still holding it
    /// are answered `Moved`, so clients ask the VLDB where it went.
    pub fn mark_moved(&self) {
        self.moved.store(true, Ordering::Relaxed);
        self.mark_removed();
    }

    fn check_live(&self) -> FsResult<()> {
        if self.moved.load(Ordering::Relaxed) {
            return Err(rpc_err(
                ErrorCode::Moved,
                format!("volume {} moved to another server", self.id),
            ));
        }
        if self.removed.load(Ordering::Relaxed) {
            return Err(rpc_err(ErrorCode::Stale, format!("volume {} was removed", self.id)));
        }
        Ok(())
    }

    /// The spare files new data files are made from (set up on first use).
    /// Set up once under a lock: setting up clears the folder, and a second
    /// set-up racing the first removed spares the first was handing out (the
    /// first burst of stores after a restart failed with `ENOENT`).
    fn spares(&self) -> FsResult<&Spares> {
        if let Some(s) = self.spares.get() {
            return Ok(s);
        }
        let _once = self.spares_setup.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = self.spares.get() {
            return Ok(s);
        }
        let made = Spares::new(&self.dir.join("spare"), SPARES)?;
        Ok(self.spares.get_or_init(|| made))
    }

    fn data_path(&self, vnode: u64, version: u64) -> PathBuf {
        self.dir.join("data").join(data_name(vnode, version))
    }

    fn reader(&self) -> FsResult<Reader> {
        self.check_live()?;
        Reader::new(self.id, self.db.begin_read()?)
    }

    /// Runs `f` in one write transaction and commits it if `f` succeeds. `f`
    /// returns its value and the breaks the change causes; unless there are
    /// none, the change is numbered and journaled in the same transaction and
    /// every break carries the new change number.
    fn write<T>(&self, f: impl FnOnce(&mut VolTxn<'_>) -> FsResult<(T, Vec<Break>)>) -> FsResult<Change<T>> {
        self.check_live()?;
        self.check_writable()?;
        let mut txn = self.db.begin_write()?;
        let in_group = group::in_group();
        if in_group {
            // Made durable with the rest of its group (its ops logged).
            txn.set_durability(redb::Durability::None)?;
        }
        let (change, ops) = {
            let mut vt = VolTxn::new(self.id, &txn)?;
            let (value, mut breaks) = f(&mut vt)?;
            if !breaks.is_empty() {
                let seq = vt.log_change(breaks.iter().map(|b| b.fid), self.journal_len)?;
                for b in &mut breaks {
                    b.seq = seq;
                }
            }
            vt.finish()?;
            (Change { value, breaks }, vt.take_ops())
        };
        if in_group {
            txn.commit()?;
            group::note_commit(ops);
        } else {
            self.commit_durable(txn)?;
        }
        Ok(change)
    }

    /// Runs `f` in one write transaction with full access to the tables (for
    /// the salvager: the caller numbers its change with [`VolTxn::log_change`]).
    pub fn write_raw<T>(&self, f: impl FnOnce(&mut VolTxn<'_>) -> FsResult<T>) -> FsResult<T> {
        self.check_live()?;
        let txn = self.db.begin_write()?;
        let value = {
            let mut vt = VolTxn::new(self.id, &txn)?;
            let value = f(&mut vt)?;
            vt.finish()?;
            value
        };
        self.commit_durable(txn)?;
        Ok(value)
    }

    /// A consistent read-only view of the whole volume.
    pub fn read_view(&self) -> FsResult<Reader> {
        self.reader()
    }

    /// Most journal entries kept.
    pub fn journal_len(&self) -> u64 {
        self.journal_len
    }

    /// The volume's counters.
    pub fn state(&self) -> FsResult<VolumeState> {
        self.reader()?.state()
    }

    /// The volume's incarnation, change number and journal reach.
    pub fn journal_state(&self) -> FsResult<JournalState> {
        self.reader()?.journal_state()
    }

    /// What changed since change `since` of incarnation `incarnation`, for a
    /// reconnecting client holding copies of `fids` (see `Request::Reconnect`).
    ///
    /// The journal covers `since` iff the incarnation matches and
    /// `oldest - 1 <= since <= current`: every change numbered `since + 1 ..=
    /// current` is then still listed. `changed` is those changes' FIDs plus
    /// every listed FID that no longer exists (so the client drops it), and
    /// `unchanged` the rest of `fids`. Otherwise (or when more than
    /// `max_changed` FIDs changed, too many to be worth listing) `changed`
    /// is `None` and nothing is unchanged. Read-only: callers hold the
    /// volume lock's shared side so no change slips in before their grants.
    pub fn reconnect(&self, incarnation: u64, since: u64, fids: &[Fid], max_changed: usize) -> FsResult<Reconnection> {
        let r = self.reader()?;
        let js = r.journal_state()?;
        let mut answer = Reconnection {
            incarnation: js.incarnation,
            current: js.seq,
            changed: None,
            unchanged: Vec::new(),
        };
        let covered = incarnation == js.incarnation && since <= js.seq && since.saturating_add(1) >= js.oldest;
        if !covered {
            return Ok(answer);
        }
        let Some(mut changed) = r.changed_between(since.saturating_add(1), js.seq, max_changed)? else {
            return Ok(answer);
        };
        for &fid in fids {
            if changed.contains(&fid) {
                continue;
            }
            let exists = fid.volume == self.id
                && r.vnode_by_number_opt(fid.vnode)?
                    .is_some_and(|rec| rec.unique == fid.unique);
            if exists {
                answer.unchanged.push(fid);
            } else {
                changed.insert(fid);
            }
        }
        if changed.len() > max_changed {
            answer.unchanged.clear();
            return Ok(answer);
        }
        answer.unchanged.sort_unstable();
        answer.unchanged.dedup();
        answer.changed = Some(changed.into_iter().collect());
        Ok(answer)
    }

    /// Statuses of many FIDs of this volume from one consistent read, each
    /// answered separately.
    pub fn statuses(&self, fids: &[Fid]) -> FsResult<Vec<FsResult<Status>>> {
        let r = self.reader()?;
        Ok(fids
            .iter()
            .map(|&fid| r.vnode(fid).map(|rec| r.status(fid.vnode, &rec)))
            .collect())
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

    /// Deletes data files that are not the committed version of a live vnode
    /// (those a clone still names are handed to it instead). Run once at
    /// start, after the clones are linked.
    pub fn remove_orphans(&self) -> FsResult<()> {
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
            if !keep && !self.hand_to_clones(&entry.path()) {
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

/// The name of data file `version` of `vnode`: `<vnode>.<version>`.
pub fn data_name(vnode: u64, version: u64) -> String {
    format!("{vnode}.{version}")
}

/// Splits a data file name `<vnode>.<version>`.
pub fn parse_data_name(name: &str) -> Option<(u64, u64)> {
    let (vnode, version) = name.split_once('.')?;
    Some((vnode.parse().ok()?, version.parse().ok()?))
}

/// fsyncs a directory so a file created or removed in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Builds a `Break` for `fid`; its change number is filled in when the
/// change commits.
pub fn brk(fid: Fid, names: Vec<String>, deleted: bool) -> Break {
    Break {
        fid,
        names,
        deleted,
        seq: 0,
    }
}

#[cfg(test)]
mod tests;
