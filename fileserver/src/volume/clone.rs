//! Clones: read-only copy-on-write snapshots of a read-write volume (backup
//! clones and released read-only copies).
//!
//! A clone has its own metadata database (a copy of the volume's vnodes,
//! entries and counters at the moment of the clone) and its own `data/`
//! folder, which starts empty: the clone reads every data file from the
//! read-write volume's folder, where the committed versions live under the
//! same names (`<vnode>.<version>`; vnode numbers are never reused). When the
//! read-write volume retires a data file (a new version, a removal) that a
//! clone still names, it links the file into that clone's folder instead of
//! deleting it. Backup clones and released read-only copies work the same way. Making a clone therefore copies metadata only, and the disk
//! grows only by what changes afterwards.

use super::{VnodeAccess, Volume, data_name, parse_data_name, sync_dir};
use crate::error::{FsResult, rpc_err};
use crate::schema::{self, ENTRIES, JOURNAL, JOURNAL_KEY, JournalState, STATE, STATE_KEY, VNODES};
use cellfs_protocol::{ErrorCode, FileKind};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Volume {
    /// Marks this volume a read-only clone reading data files it does not
    /// hold itself from `origin`'s folder.
    pub fn set_clone_of(&self, origin: &Volume) {
        let _ = self.origin.set(origin.dir.join("data"));
        let holds = std::fs::read_dir(self.dir.join("data")).map_or(true, |mut d| d.next().is_some());
        self.holds_own_files.store(holds, Ordering::Release);
    }

    /// Makes a volume read-only that is no clone of a volume here: a
    /// read-only copy received from another server. It reads only its own
    /// files (it is its own origin).
    pub fn set_read_only(&self) {
        let _ = self.origin.set(self.dir.join("data"));
        self.holds_own_files.store(true, Ordering::Release);
    }

    /// True for a clone: every change is refused with `ReadOnly`.
    pub fn is_clone(&self) -> bool {
        self.origin.get().is_some()
    }

    /// Links a clone (backup or read-only copy) of this read-write volume,
    /// replacing an earlier clone with the same id. A linked clone receives
    /// the data files it names when this volume retires them.
    pub fn add_clone(&self, clone: Arc<Volume>) {
        let mut clones = self.clones.write().unwrap_or_else(|e| e.into_inner());
        clones.retain(|c| c.id != clone.id);
        clones.push(clone);
    }

    /// Unlinks clone `id`.
    pub fn remove_clone(&self, id: cellfs_protocol::VolumeId) {
        self.clones
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| c.id != id);
    }

    /// This volume's clones.
    pub fn clones(&self) -> Vec<Arc<Volume>> {
        self.clones.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn check_writable(&self) -> FsResult<()> {
        if self.is_clone() {
            return Err(rpc_err(
                ErrorCode::ReadOnly,
                format!("volume {} is a read-only clone or copy", self.id),
            ));
        }
        Ok(())
    }

    /// True when this clone's committed record of `vnode` names data file `version`.
    pub(crate) fn names_data_file(&self, vnode: u64, version: u64) -> bool {
        let Ok(r) = self.reader() else { return false };
        matches!(
            r.vnode_by_number_opt(vnode),
            Ok(Some(rec)) if rec.kind == FileKind::File && rec.size > 0 && rec.data_file == version
        )
    }

    /// True when a clone of this volume names data file `version` of `vnode`.
    pub(super) fn clones_name(&self, vnode: u64, version: u64) -> bool {
        self.clones().iter().any(|c| c.names_data_file(vnode, version))
    }

    /// Hands a data file this volume no longer needs to the clones that
    /// still name it (a hard link in each, then the original goes); returns
    /// false when none does and the caller should delete it.
    pub(super) fn hand_to_clones(&self, path: &Path) -> bool {
        let Some((vnode, version)) = path.file_name().and_then(|n| parse_data_name(&n.to_string_lossy())) else {
            return false;
        };
        let takers: Vec<Arc<Volume>> = self
            .clones()
            .into_iter()
            .filter(|c| c.names_data_file(vnode, version))
            .collect();
        if takers.is_empty() {
            return false;
        }
        for clone in &takers {
            clone.holds_own_files.store(true, Ordering::Release);
            let to = clone.data_path(vnode, version);
            match std::fs::hard_link(path, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    // Left in place: the clone still finds it here, and the
                    // next start hands it over again.
                    tracing::warn!(from = %path.display(), to = %to.display(), error = %e, "cannot hand a data file to a clone");
                    return true;
                }
            }
        }
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a data file handed to clones");
        }
        true
    }

    /// Opens data file `version` of `vnode`: a clone looks in its own folder,
    /// then in its origin's, then in its own again (the origin may have
    /// handed the file over in between). A clone that holds no file of its
    /// own yet skips the first look (a fresh clone or dump snapshot reads
    /// everything from its origin).
    pub(super) fn open_data_file(&self, vnode: u64, version: u64) -> std::io::Result<File> {
        let own = self.data_path(vnode, version);
        let Some(origin) = self.origin.get() else {
            return File::open(own);
        };
        let own_first = self.holds_own_files.load(Ordering::Acquire);
        match if own_first {
            File::open(&own)
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        } {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        match File::open(origin.join(data_name(vnode, version))) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::open(own),
            other => other,
        }
    }

    /// Where data file `version` of `vnode` of a clone lives now (own folder
    /// or the origin's), if anywhere.
    pub fn locate_data_file(&self, vnode: u64, version: u64) -> Option<PathBuf> {
        let own = self.data_path(vnode, version);
        if own.exists() {
            return Some(own);
        }
        let origin = self.origin.get()?.join(data_name(vnode, version));
        origin.exists().then_some(origin)
    }

    /// Gives a clone its own hard link of every data file it still reads from
    /// its origin, so the origin's folder can be replaced or deleted.
    pub fn adopt_shared_files(&self) -> FsResult<usize> {
        let Some(origin) = self.origin.get() else { return Ok(0) };
        self.holds_own_files.store(true, Ordering::Release);
        let r = self.reader()?;
        let mut adopted = 0;
        for (vnode, rec) in r.all_vnodes()? {
            if rec.kind != FileKind::File || rec.size == 0 {
                continue;
            }
            let own = self.data_path(vnode, rec.data_file);
            if own.exists() {
                continue;
            }
            std::fs::hard_link(origin.join(data_name(vnode, rec.data_file)), &own)?;
            adopted += 1;
        }
        if adopted > 0 {
            sync_dir(&self.dir.join("data"))?;
        }
        Ok(adopted)
    }

    /// Writes a clone of this volume's metadata into the new folder `dir`
    /// (created here, with an empty `data/`): vnodes, entries and counters
    /// copied as stored, a new journal incarnation, after settling this
    /// volume's logged data files. The caller holds this volume's write
    /// lock, so the copy is one consistent state.
    pub fn write_clone(&self, dir: &Path) -> FsResult<()> {
        self.check_live()?;
        // The clone may name data files only this volume's log holds.
        self.settle()?;
        // Nor may it hold a create this volume could still lose in a crash.
        self.flush()?;
        std::fs::create_dir_all(dir.join("data"))?;
        let db = Database::create(dir.join("meta.redb"))?;
        let src = self.db.begin_read()?;
        let txn = db.begin_write()?;
        {
            let mut vnodes = txn.open_table(VNODES)?;
            for item in src.open_table(VNODES)?.iter()? {
                let (k, v) = item?;
                vnodes.insert(k.value(), v.value())?;
            }
            let mut entries = txn.open_table(ENTRIES)?;
            for item in src.open_table(ENTRIES)?.iter()? {
                let (k, v) = item?;
                entries.insert(k.value(), v.value())?;
            }
            txn.open_table(JOURNAL)?;
            let mut st = txn.open_table(STATE)?;
            let state = src
                .open_table(STATE)?
                .get(STATE_KEY)?
                .ok_or_else(|| rpc_err(ErrorCode::Io, format!("volume {} has no state record", self.id)))?
                .value()
                .to_vec();
            st.insert(STATE_KEY, state.as_slice())?;
            let journal = JournalState {
                incarnation: super::new_incarnation()?,
                seq: 0,
                oldest: 1,
            };
            st.insert(JOURNAL_KEY, schema::encode(&journal)?.as_slice())?;
        }
        txn.commit()?;
        sync_dir(dir)?;
        Ok(())
    }
}
