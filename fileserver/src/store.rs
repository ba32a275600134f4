//! The server's storage: the VLDB (`vldb.redb`: volume names, ids and
//! headers) and every open [`Volume`] under `volumes/<id>/`.

use crate::config::DEFAULT_JOURNAL_LEN;
use crate::error::{FsResult, rpc_err};
use crate::schema::{
    self, LOCATIONS, NEXT_VOLUME_ID, SERVERS, VLDB_COUNTERS, VOLUME_ADMIN, VOLUME_HEADERS, VOLUME_IDS, VolumeAdmin,
    VolumeHeader,
};
use crate::volume::{Volume, sync_dir};
use cellfs_protocol::{ErrorCode, Timestamp, VolumeId, VolumeInfo, VolumeKind, VolumeLock};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// File name of the VLDB inside the data folder.
pub const VLDB_FILE: &str = "vldb.redb";
/// Folder of the volumes inside the data folder.
pub const VOLUMES_DIR: &str = "volumes";
/// Folder of temporary files (dumps being sent or received) inside the data
/// folder; emptied at every start.
pub const TMP_DIR: &str = "tmp";

/// The VLDB and all volumes.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    vldb: Database,
    journal_len: u64,
    volumes: RwLock<HashMap<VolumeId, Arc<Volume>>>,
}

impl Store {
    /// Creates an empty store in `root` (the VLDB must not exist yet) whose
    /// volumes keep the default journal length: the first server of a cell.
    pub fn create(root: &Path) -> FsResult<Self> {
        Self::create_with_index(root, 0)
    }

    /// Creates an empty store for the cell's server number `index`, whose
    /// volume ids start at `index << 32` (so the servers of a cell never
    /// hand out the same id).
    pub fn create_with_index(root: &Path, index: u32) -> FsResult<Self> {
        std::fs::create_dir_all(root.join(VOLUMES_DIR))?;
        let path = root.join(VLDB_FILE);
        if path.exists() {
            return Err(rpc_err(ErrorCode::Exists, format!("{} exists", path.display())));
        }
        let vldb = Database::create(&path)?;
        let txn = vldb.begin_write()?;
        {
            txn.open_table(VOLUME_IDS)?;
            txn.open_table(VOLUME_HEADERS)?;
            txn.open_table(VOLUME_ADMIN)?;
            txn.open_table(SERVERS)?;
            txn.open_table(LOCATIONS)?;
            let mut c = txn.open_table(VLDB_COUNTERS)?;
            c.insert(NEXT_VOLUME_ID, (u64::from(index) << 32) + 1)?;
        }
        txn.commit()?;
        Ok(Store {
            root: root.to_owned(),
            vldb,
            journal_len: DEFAULT_JOURNAL_LEN,
            volumes: RwLock::new(HashMap::new()),
        })
    }

    /// [`Store::open_with`] with the default journal length.
    pub fn open(root: &Path) -> FsResult<Self> {
        Self::open_with(root, DEFAULT_JOURNAL_LEN)
    }

    /// Opens the store in `root`: every volume in the VLDB is opened (and
    /// cleaned of crash orphans) with journals of at most `journal_len`
    /// entries; volume folders the VLDB does not know are deleted.
    pub fn open_with(root: &Path, journal_len: u64) -> FsResult<Self> {
        let vldb = Database::open(root.join(VLDB_FILE))?;
        {
            // VLDBs made before volume administration or several servers
            // existed lack these tables.
            let txn = vldb.begin_write()?;
            txn.open_table(VOLUME_ADMIN)?;
            txn.open_table(SERVERS)?;
            txn.open_table(LOCATIONS)?;
            txn.commit()?;
        }
        let headers = Self::read_headers(&vldb)?;
        let vols_dir = root.join(VOLUMES_DIR);
        std::fs::create_dir_all(&vols_dir)?;
        let mut volumes = HashMap::new();
        let mut lost_clones = Vec::new();
        for (id, header) in headers {
            let dir = vols_dir.join(id.to_string());
            finish_swap(&dir)?;
            let admin = read_admin(&vldb, id)?;
            if admin.kind != VolumeKind::ReadWrite && !dir.exists() {
                // A crash between the VLDB entry and the clone's folder: the
                // clone is made again by `backup` or `release`.
                tracing::warn!(volume = %header.name, "clone has no folder; dropping it");
                lost_clones.push((id, header.name, admin.kind, admin.parent));
                continue;
            }
            let vol = Volume::open_no_cleanup(&dir, id, header.quota, journal_len)?;
            volumes.insert(id, (Arc::new(vol), admin));
        }
        if !lost_clones.is_empty() {
            let txn = vldb.begin_write()?;
            for (id, name, kind, parent) in lost_clones {
                forget(&txn, id, &name)?;
                if let Some(p) = parent {
                    let mut admin = admin_in(&txn, p)?;
                    admin.set_clone_id(kind, None);
                    put_admin(&txn, p, &admin)?;
                }
            }
            txn.commit()?;
        }
        // Clones are linked to their volumes before any orphan is removed:
        // a volume's orphan may be a file its clone still names.
        for (vol, admin) in volumes.values() {
            if let Some((parent, _)) = admin.parent.and_then(|p| volumes.get(&p)) {
                vol.set_clone_of(parent);
                parent.add_clone(vol.clone());
            } else if admin.kind != VolumeKind::ReadWrite {
                // A read-only copy received from another server.
                vol.set_read_only();
            }
        }
        for (vol, _) in volumes.values() {
            vol.remove_orphans()?;
        }
        let volumes: HashMap<VolumeId, Arc<Volume>> = volumes.into_iter().map(|(id, (v, _))| (id, v)).collect();
        match std::fs::remove_dir_all(root.join(TMP_DIR)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        for entry in std::fs::read_dir(&vols_dir)? {
            let entry = entry?;
            let known = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<VolumeId>().ok())
                .is_some_and(|id| volumes.contains_key(&id));
            if !known {
                tracing::info!(path = %entry.path().display(), "removing volume folder unknown to the VLDB");
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(Store {
            root: root.to_owned(),
            vldb,
            journal_len,
            volumes: RwLock::new(volumes),
        })
    }

    /// Every volume the VLDB of `root` lists, by id, without opening any.
    pub fn list_headers(root: &Path) -> FsResult<Vec<(VolumeId, VolumeHeader)>> {
        let vldb = Database::open(root.join(VLDB_FILE))?;
        Self::read_headers(&vldb)
    }

    /// The administrative state of every volume the VLDB of `root` lists.
    pub fn list_admin(root: &Path) -> FsResult<HashMap<VolumeId, VolumeAdmin>> {
        let vldb = Database::open(root.join(VLDB_FILE))?;
        let txn = vldb.begin_read()?;
        let mut out = HashMap::new();
        let table = match txn.open_table(VOLUME_ADMIN) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for item in table.iter()? {
            let (k, v) = item?;
            out.insert(k.value(), schema::decode::<VolumeAdmin>(v.value())?);
        }
        Ok(out)
    }

    fn read_headers(vldb: &Database) -> FsResult<Vec<(VolumeId, VolumeHeader)>> {
        let txn = vldb.begin_read()?;
        let table = txn.open_table(VOLUME_HEADERS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value(), schema::decode::<VolumeHeader>(v.value())?));
        }
        Ok(out)
    }

    fn volume_dir(&self, id: VolumeId) -> PathBuf {
        self.root.join(VOLUMES_DIR).join(id.to_string())
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<VolumeId, Arc<Volume>>> {
        self.volumes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The open volume `id`: `Moved` when another server of the cell holds
    /// it, `Stale` if there is none.
    pub fn volume(&self, id: VolumeId) -> FsResult<Arc<Volume>> {
        if let Some(v) = self.map().get(&id) {
            return Ok(v.clone());
        }
        match self.location(id)? {
            Some(loc) => Err(rpc_err(
                ErrorCode::Moved,
                format!("volume {} ({id}) is on {}", loc.name, loc.server),
            )),
            None => Err(rpc_err(ErrorCode::Stale, format!("no volume {id}"))),
        }
    }

    /// The VLDB database (for the tables of [`crate::vldb`]).
    /// The data folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn vldb(&self) -> &Database {
        &self.vldb
    }

    /// The id of the volume called `name` (`NotFound` if there is none).
    pub fn volume_id(&self, name: &str) -> FsResult<VolumeId> {
        let txn = self.vldb.begin_read()?;
        let table = txn.open_table(VOLUME_IDS)?;
        let id = table.get(name)?.map(|v| v.value());
        id.ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no volume {name:?}")))
    }

    /// The open volume called `name` (`NotFound` if there is none).
    pub fn volume_by_name(&self, name: &str) -> FsResult<Arc<Volume>> {
        let id = self.volume_id(name)?;
        self.volume(id)
            .map_err(|_| rpc_err(ErrorCode::NotFound, format!("no volume {name:?}")))
    }

    fn header(&self, id: VolumeId) -> FsResult<VolumeHeader> {
        let txn = self.vldb.begin_read()?;
        let table = txn.open_table(VOLUME_HEADERS)?;
        let v = table
            .get(id)?
            .ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no volume {id}")))?;
        schema::decode(v.value())
    }

    /// Creates a volume with an empty root directory (mode 0755, owner 0:0).
    pub fn create_volume(&self, name: &str, quota: u64) -> FsResult<VolumeId> {
        check_not_reserved(name)?;
        let txn = self.vldb.begin_write()?;
        let (id, vol) = {
            let mut ids = txn.open_table(VOLUME_IDS)?;
            if ids.get(name)?.is_some() {
                return Err(rpc_err(ErrorCode::Exists, format!("volume {name:?} exists")));
            }
            let id = next_volume_id(&txn)?;
            ids.insert(name, id)?;
            let header = VolumeHeader {
                name: name.to_owned(),
                quota,
                created: Timestamp::now(),
            };
            let mut headers = txn.open_table(VOLUME_HEADERS)?;
            headers.insert(id, schema::encode(&header)?.as_slice())?;
            let dir = self.volume_dir(id);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            (id, Volume::create_new(&dir, id, quota, self.journal_len)?)
        };
        if let Err(e) = txn.commit() {
            let _ = std::fs::remove_dir_all(self.volume_dir(id));
            return Err(e.into());
        }
        self.volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(vol));
        Ok(id)
    }

    /// Deletes a volume and its folder, and its clones with it; returns the
    /// ids removed (each volume already marked removed) so the caller can
    /// tell clients. The caller holds the write lock of the read-write
    /// volume concerned.
    pub fn remove_volume(&self, name: &str) -> FsResult<Vec<VolumeId>> {
        let id = self.volume_id(name)?;
        let admin = self.admin(id)?;
        self.check_unlocked(name, &admin)?;
        let txn = self.vldb.begin_write()?;
        let mut gone = vec![id];
        forget(&txn, id, name)?;
        for (_, clone) in admin.clones() {
            let clone_name = self.header(clone)?.name;
            forget(&txn, clone, &clone_name)?;
            gone.insert(0, clone);
        }
        if let Some(parent) = admin.parent {
            let mut padmin = admin_in(&txn, parent)?;
            padmin.set_clone_id(admin.kind, None);
            put_admin(&txn, parent, &padmin)?;
        }
        txn.commit()?;
        if let Some(parent) = admin.parent.and_then(|p| self.volume(p).ok()) {
            parent.remove_clone(id);
        }
        for &v in &gone {
            let vol = self.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(&v);
            if let Some(vol) = vol {
                vol.mark_removed();
            }
            std::fs::remove_dir_all(self.volume_dir(v))?;
        }
        Ok(gone)
    }

    /// Takes a private snapshot of `vol` for a dump: a clone in `tmp/`,
    /// linked to the volume (so data files it retires meanwhile are kept for
    /// the snapshot) but not in the VLDB. The caller holds the volume's write
    /// lock only while this runs (well under a second at 100,000 files), so a
    /// long dump does not hold up writers. Drop it with [`Store::drop_snapshot`].
    pub fn dump_snapshot(&self, vol: &Arc<Volume>) -> FsResult<Arc<Volume>> {
        use std::sync::atomic::{AtomicU64, Ordering};
        // Ids from the top down never meet the VLDB's, which count up.
        static NEXT: AtomicU64 = AtomicU64::new(u64::MAX);
        let id = NEXT.fetch_sub(1, Ordering::Relaxed);
        let dir = self.temp_path("snapshot")?;
        if let Err(e) = vol.write_clone(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let snap = Arc::new(Volume::open(&dir, id, vol.quota(), self.journal_len)?);
        snap.set_clone_of(vol);
        vol.add_clone(snap.clone());
        Ok(snap)
    }

    /// Unlinks and deletes a snapshot from [`Store::dump_snapshot`].
    pub fn drop_snapshot(&self, vol: &Volume, snap: &Volume) {
        vol.remove_clone(snap.id());
        snap.mark_removed();
        if let Err(e) = std::fs::remove_dir_all(snap.dir()) {
            tracing::warn!(path = %snap.dir().display(), error = %e, "cannot remove a dump snapshot");
        }
    }

    /// Writes a dump of `snap`, a snapshot of volume `vol` called `name`
    /// (whole, or incremental from `since`), to a temporary file and returns
    /// it open for reading, already unlinked, with its length.
    pub fn dump_volume(
        &self,
        vol: &Volume,
        snap: &Volume,
        name: &str,
        since: Option<Timestamp>,
    ) -> FsResult<(std::fs::File, u64)> {
        let path = self.temp_path("dump")?;
        let result = (|| {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
            let out = snap.write_dump(out, name, vol.id(), since)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            let len = file.metadata()?.len();
            Ok((std::fs::File::open(&path)?, len))
        })();
        let _ = std::fs::remove_file(&path);
        result
    }

    /// A fresh path in the store's `tmp/` folder (emptied at every start).
    pub fn temp_path(&self, what: &str) -> FsResult<PathBuf> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = self.root.join(TMP_DIR);
        std::fs::create_dir_all(&dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Ok(dir.join(format!("{what}-{}-{n}", std::process::id())))
    }

    /// Restores the dump in file `dump` as volume `name`; returns its id.
    /// A full dump makes a new volume, or replaces an existing one when
    /// `overwrite`; an incremental dump applies to the existing volume. The
    /// new state is built beside the old one and put in place only once the
    /// whole dump has been read and verified, so a damaged dump changes
    /// nothing. The caller holds the existing volume's write lock.
    pub fn restore_volume(&self, name: &str, dump: &Path, overwrite: bool) -> FsResult<VolumeId> {
        let (_, header) = crate::dump::DumpReader::new(std::io::BufReader::new(std::fs::File::open(dump)?))?;
        let input = || -> FsResult<_> { Ok(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(dump)?)) };
        let Ok(id) = self.volume_id(name) else {
            check_not_reserved(name)?;
            return self.restore_new(name, header.quota, input()?);
        };
        self.admin_target(name, "restore")?;
        if header.since.is_none() && !overwrite {
            return Err(rpc_err(
                ErrorCode::Exists,
                format!("volume {name} exists; restore with --overwrite to replace it"),
            ));
        }
        let vol = self.volume(id)?;
        let dv_offset = vol
            .read_view()?
            .all_vnodes()?
            .iter()
            .map(|(_, r)| r.data_version)
            .max()
            .unwrap_or(0)
            + 1;
        let dir = self.volume_dir(id);
        let staging = swap_path(&dir, "new");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        if let Err(e) = crate::volume::build_from_dump(input()?, &staging, Some(&vol), dv_offset) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        // Clones keep their own links to the files they share with the old state.
        let clones = vol.clones();
        for c in &clones {
            c.adopt_shared_files()?;
        }
        vol.mark_removed();
        install_folder(&dir, &staging)?;
        let new = Arc::new(Volume::open(&dir, id, self.header(id)?.quota, self.journal_len)?);
        for c in clones {
            new.add_clone(c);
        }
        self.volumes.write().unwrap_or_else(|e| e.into_inner()).insert(id, new);
        Ok(id)
    }

    fn restore_new(&self, name: &str, quota: u64, input: impl std::io::Read) -> FsResult<VolumeId> {
        // The id is taken first (a crash only wastes it); the VLDB names the
        // volume once its folder is complete.
        let txn = self.vldb.begin_write()?;
        let id = next_volume_id(&txn)?;
        txn.commit()?;
        let dir = self.volume_dir(id);
        let staging = swap_path(&dir, "new");
        if let Err(e) = crate::volume::build_from_dump(input, &staging, None, 0) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let txn = self.vldb.begin_write()?;
        {
            let mut ids = txn.open_table(VOLUME_IDS)?;
            if ids.get(name)?.is_some() {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(rpc_err(ErrorCode::Exists, format!("volume {name:?} exists")));
            }
            ids.insert(name, id)?;
            let header = VolumeHeader {
                name: name.to_owned(),
                quota,
                created: Timestamp::now(),
            };
            txn.open_table(VOLUME_HEADERS)?
                .insert(id, schema::encode(&header)?.as_slice())?;
        }
        txn.commit()?;
        install_folder(&dir, &staging)?;
        let vol = Volume::open(&dir, id, quota, self.journal_len)?;
        self.volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(vol));
        Ok(id)
    }

    /// Installs the dump in file `dump` as volume `id` called `name` of
    /// `kind`, as sent by another server of the cell: a read-only copy at
    /// release, or a volume moving here. The FIDs and data versions of the
    /// dump are kept, so nodes' cached copies stay valid. A full dump
    /// replaces any earlier copy whole; an incremental one applies to it.
    /// Built beside the old state and swapped in only when complete. The
    /// caller holds the existing copy's write lock, if there is one.
    pub fn install_volume(&self, name: &str, id: VolumeId, kind: VolumeKind, dump: &Path) -> FsResult<()> {
        let (_, header) = crate::dump::DumpReader::new(std::io::BufReader::new(std::fs::File::open(dump)?))?;
        if let Ok(other) = self.volume_id(name)
            && other != id
        {
            return Err(rpc_err(
                ErrorCode::Exists,
                format!("this server holds another volume called {name:?} ({other}, not {id})"),
            ));
        }
        if let Ok(h) = self.header(id)
            && h.name != name
        {
            return Err(rpc_err(
                ErrorCode::Exists,
                format!("volume {id} here is {:?}, not {name:?}", h.name),
            ));
        }
        let existing = self.map().get(&id).cloned();
        if existing.as_ref().is_some_and(|v| !v.clones().is_empty()) {
            return Err(rpc_err(
                ErrorCode::Busy,
                format!("volume {name} has clones on this server; it cannot be replaced"),
            ));
        }
        let base = if header.since.is_some() {
            existing.as_deref()
        } else {
            None
        };
        let dir = self.volume_dir(id);
        let staging = swap_path(&dir, "new");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        let input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(dump)?);
        if let Err(e) = crate::volume::build_from_dump(input, &staging, base, 0) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        // The VLDB names the volume before its folder is swapped in; a crash
        // in between leaves the new or the old folder, both complete.
        let txn = self.vldb.begin_write()?;
        {
            txn.open_table(VOLUME_IDS)?.insert(name, id)?;
            let vheader = VolumeHeader {
                name: name.to_owned(),
                quota: header.quota,
                created: header.made,
            };
            txn.open_table(VOLUME_HEADERS)?
                .insert(id, schema::encode(&vheader)?.as_slice())?;
            let mut admin = admin_in(&txn, id)?;
            admin.kind = kind;
            if kind == VolumeKind::ReadOnly {
                admin.last_release = Some(header.made);
            }
            put_admin(&txn, id, &admin)?;
            if kind == VolumeKind::ReadWrite {
                // A volume moving here is no longer elsewhere.
                txn.open_table(LOCATIONS)?.remove(id)?;
            }
        }
        txn.commit()?;
        if let Some(old) = &existing {
            old.mark_removed();
        }
        install_folder(&dir, &staging)?;
        let vol = Arc::new(Volume::open(&dir, id, header.quota, self.journal_len)?);
        if kind != VolumeKind::ReadWrite {
            vol.set_read_only();
        }
        self.volumes.write().unwrap_or_else(|e| e.into_inner()).insert(id, vol);
        Ok(())
    }

    /// Refuses to move `name` unless it is an unlocked read-write volume
    /// without clones or read-only sites (those stay with their server);
    /// returns its id.
    pub fn check_movable(&self, name: &str) -> FsResult<VolumeId> {
        let (id, admin) = self.admin_target(name, "move")?;
        if admin.clones().next().is_some() || !admin.ro_sites.is_empty() {
            return Err(rpc_err(
                ErrorCode::Busy,
                format!(
                    "volume {name} has a backup clone or read-only sites; remove them (vos remove {name}.backup, vos remsite) before moving it"
                ),
            ));
        }
        Ok(id)
    }

    /// Gives up read-write volume `name` after a move to `server`: the VLDB
    /// records where it went (requests for it are answered `Moved`) and its
    /// folder goes to `tmp/`, whose path is returned for the caller to
    /// delete once it released the volume's write lock (a start empties
    /// `tmp/` anyway).
    pub fn hand_over(&self, name: &str, server: &str) -> FsResult<PathBuf> {
        let id = self.check_movable(name)?;
        let vol = self.volume(id)?;
        let txn = self.vldb.begin_write()?;
        forget(&txn, id, name)?;
        let loc = schema::Location {
            name: name.to_owned(),
            server: server.to_owned(),
        };
        txn.open_table(LOCATIONS)?
            .insert(id, schema::encode(&loc)?.as_slice())?;
        txn.commit()?;
        vol.mark_moved();
        self.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let trash = self.temp_path("moved")?;
        std::fs::rename(self.volume_dir(id), &trash)?;
        Ok(trash)
    }

    /// The administrative state of volume `id`.
    pub fn admin(&self, id: VolumeId) -> FsResult<VolumeAdmin> {
        read_admin(&self.vldb, id)
    }

    /// The id and administrative state of read-write volume `name`, about to
    /// undergo admin operation `op`: refused when the volume is locked or is
    /// a backup clone.
    fn admin_target(&self, name: &str, op: &str) -> FsResult<(VolumeId, VolumeAdmin)> {
        let id = self.volume_id(name)?;
        let admin = self.admin(id)?;
        self.check_unlocked(name, &admin)?;
        if admin.kind == VolumeKind::Backup {
            return Err(rpc_err(
                ErrorCode::ReadOnly,
                format!("{name} is a read-only backup clone; {op} its read-write volume instead"),
            ));
        }
        Ok((id, admin))
    }

    /// Refuses an admin operation on a volume whose lock is held.
    pub fn check_unlocked(&self, name: &str, admin: &VolumeAdmin) -> FsResult<()> {
        match &admin.lock {
            None => Ok(()),
            Some(l) => Err(rpc_err(
                ErrorCode::Busy,
                format!(
                    "volume {name} is locked by {} since {} (unix time); `cellfs-vos unlock {name}` releases it",
                    l.holder, l.since.secs
                ),
            )),
        }
    }

    /// Takes (`Some`) or releases (`None`) the administrative lock of a volume.
    pub fn set_lock(&self, name: &str, lock: Option<VolumeLock>) -> FsResult<()> {
        let id = self.volume_id(name)?;
        let txn = self.vldb.begin_write()?;
        let mut admin = admin_in(&txn, id)?;
        match (&admin.lock, &lock) {
            (Some(_), Some(_)) => {
                return Err(self
                    .check_unlocked(name, &admin)
                    .err()
                    .unwrap_or_else(|| rpc_err(ErrorCode::Busy, "locked")));
            }
            (None, None) => return Err(rpc_err(ErrorCode::Invalid, format!("volume {name} is not locked"))),
            _ => {}
        }
        admin.lock = lock;
        put_admin(&txn, id, &admin)?;
        txn.commit()?;
        Ok(())
    }

    /// Renames a read-write volume, and its clones to `NEW.backup` and `NEW.readonly`.
    /// Mount points name volumes, so those naming the old name must be made
    /// again (as in AFS).
    pub fn rename_volume(&self, name: &str, new_name: &str) -> FsResult<()> {
        check_not_reserved(new_name)?;
        let (id, admin) = self.admin_target(name, "rename")?;
        let mut renames = vec![(id, name.to_owned(), new_name.to_owned())];
        for (kind, clone) in admin.clones() {
            renames.push((clone, self.header(clone)?.name, clone_name(new_name, kind)));
        }
        let txn = self.vldb.begin_write()?;
        {
            let mut ids = txn.open_table(VOLUME_IDS)?;
            let mut headers = txn.open_table(VOLUME_HEADERS)?;
            for (_, _, new) in &renames {
                if ids.get(new.as_str())?.is_some() {
                    return Err(rpc_err(ErrorCode::Exists, format!("volume {new:?} exists")));
                }
            }
            for (vid, old, new) in &renames {
                ids.remove(old.as_str())?;
                ids.insert(new.as_str(), *vid)?;
                let mut header: VolumeHeader = {
                    let v = headers
                        .get(*vid)?
                        .ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no volume {vid}")))?;
                    schema::decode(v.value())?
                };
                header.name = new.clone();
                headers.insert(*vid, schema::encode(&header)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes (or remakes) the backup clone `NAME.backup` of read-write volume
    /// `name` and returns its id. The caller holds the volume's write lock.
    pub fn backup_volume(&self, name: &str) -> FsResult<VolumeId> {
        self.make_clone(name, VolumeKind::Backup)
    }

    /// Releases read-write volume `name` to its read-only sites: its
    /// read-only copy `NAME.readonly` is made again from the current state
    /// and swapped in whole. Returns the copy's id. The caller holds the
    /// volume's write lock.
    pub fn release(&self, name: &str) -> FsResult<VolumeId> {
        let (_, admin) = self.admin_target(name, "release")?;
        if admin.ro_sites.is_empty() {
            return Err(rpc_err(
                ErrorCode::Invalid,
                format!("volume {name} has no read-only site; add one with `cellfs-vos addsite {name} SERVER`"),
            ));
        }
        self.make_clone(name, VolumeKind::ReadOnly)
    }

    /// Adds read-only site `server` to read-write volume `name`; the next
    /// release fills it. (The caller checked that `server` is a fileserver
    /// of the cell: only the VLDB server knows them.)
    pub fn add_site(&self, name: &str, server: &str) -> FsResult<()> {
        let (id, _) = self.admin_target(name, "add a site to")?;
        let txn = self.vldb.begin_write()?;
        let mut admin = admin_in(&txn, id)?;
        if admin.ro_sites.iter().any(|s| same_server(s, server)) {
            return Err(rpc_err(
                ErrorCode::Exists,
                format!("volume {name} already has a read-only site on {server}"),
            ));
        }
        admin.ro_sites.push(server.to_owned());
        put_admin(&txn, id, &admin)?;
        txn.commit()?;
        Ok(())
    }

    /// Removes read-only site `server` of volume `name`; when it was the
    /// last, the read-only copy is deleted and its id returned (nodes then
    /// read the read-write volume through regular mount points again).
    pub fn remove_site(&self, name: &str, server: &str) -> FsResult<Option<VolumeId>> {
        let (id, admin) = self.admin_target(name, "remove a site from")?;
        let Some(pos) = admin.ro_sites.iter().position(|s| same_server(s, server)) else {
            return Err(rpc_err(
                ErrorCode::NotFound,
                format!("volume {name} has no read-only site on {server}"),
            ));
        };
        if admin.ro_sites.len() > 1 {
            let txn = self.vldb.begin_write()?;
            let mut a = admin_in(&txn, id)?;
            a.ro_sites.remove(pos);
            put_admin(&txn, id, &a)?;
            txn.commit()?;
            return Ok(None);
        }
        let removed = match admin.readonly {
            Some(ro) => {
                let ro_name = self.header(ro)?.name;
                self.remove_volume(&ro_name)?;
                Some(ro)
            }
            None => None,
        };
        let txn = self.vldb.begin_write()?;
        let mut a = admin_in(&txn, id)?;
        a.ro_sites.clear();
        a.last_release = None;
        put_admin(&txn, id, &a)?;
        txn.commit()?;
        Ok(removed)
    }

    /// Makes (or remakes) the clone of `kind` of read-write volume `name`
    /// and returns its id. The caller holds the volume's write lock, so the
    /// clone is one consistent state; a previous clone is replaced whole.
    fn make_clone(&self, name: &str, kind: VolumeKind) -> FsResult<VolumeId> {
        let op = if kind == VolumeKind::Backup {
            "back up"
        } else {
            "release"
        };
        let (id, admin) = self.admin_target(name, op)?;
        let vol = self.volume(id)?;
        let clone_name = clone_name(name, kind);
        let now = Timestamp::now();
        // The VLDB entry comes first: a crash before the folder is complete
        // leaves an entry without a folder, which the next start drops.
        let clone_id = match admin.clone_id(kind) {
            Some(c) => c,
            None => {
                let txn = self.vldb.begin_write()?;
                let c = {
                    let mut ids = txn.open_table(VOLUME_IDS)?;
                    if ids.get(clone_name.as_str())?.is_some() {
                        return Err(rpc_err(ErrorCode::Exists, format!("volume {clone_name:?} exists")));
                    }
                    let c = next_volume_id(&txn)?;
                    ids.insert(clone_name.as_str(), c)?;
                    let header = VolumeHeader {
                        name: clone_name.clone(),
                        quota: 0,
                        created: now,
                    };
                    txn.open_table(VOLUME_HEADERS)?
                        .insert(c, schema::encode(&header)?.as_slice())?;
                    c
                };
                let cadmin = VolumeAdmin {
                    kind,
                    parent: Some(id),
                    ..VolumeAdmin::default()
                };
                put_admin(&txn, c, &cadmin)?;
                let mut radmin = admin_in(&txn, id)?;
                radmin.set_clone_id(kind, Some(c));
                put_admin(&txn, id, &radmin)?;
                txn.commit()?;
                c
            }
        };
        let dir = self.volume_dir(clone_id);
        let staging = swap_path(&dir, "new");
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        vol.write_clone(&staging)?;
        let old = self
            .volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&clone_id);
        if let Some(old) = &old {
            old.mark_removed();
        }
        install_folder(&dir, &staging)?;
        let clone = Arc::new(Volume::open(&dir, clone_id, 0, self.journal_len)?);
        clone.set_clone_of(&vol);
        vol.add_clone(clone.clone());
        self.volumes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(clone_id, clone);
        let txn = self.vldb.begin_write()?;
        for v in [id, clone_id] {
            let mut a = admin_in(&txn, v)?;
            match kind {
                VolumeKind::ReadOnly => a.last_release = Some(now),
                _ => a.backup_time = Some(now),
            }
            put_admin(&txn, v, &a)?;
        }
        txn.commit()?;
        Ok(clone_id)
    }

    /// Changes a volume's quota.
    pub fn set_quota(&self, name: &str, quota: u64) -> FsResult<()> {
        self.admin_target(name, "set the quota of")?;
        let vol = self.volume_by_name(name)?;
        let txn = self.vldb.begin_write()?;
        {
            let mut headers = txn.open_table(VOLUME_HEADERS)?;
            let mut header: VolumeHeader = {
                let v = headers
                    .get(vol.id())?
                    .ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no volume {name:?}")))?;
                schema::decode(v.value())?
            };
            header.quota = quota;
            headers.insert(vol.id(), schema::encode(&header)?.as_slice())?;
        }
        txn.commit()?;
        vol.set_quota(quota);
        Ok(())
    }

    /// Describes volume `id`; `server` is the address to report.
    pub fn info(&self, id: VolumeId, server: &str) -> FsResult<VolumeInfo> {
        let header = self.header(id)?;
        let admin = self.admin(id)?;
        let vol = self.volume(id)?;
        let state = vol.state()?;
        let parent_admin = admin.parent.map(|p| self.admin(p)).transpose()?;
        let parent = match admin.parent {
            Some(p) => Some(self.header(p)?.name),
            None => None,
        };
        let sites = match admin.kind {
            VolumeKind::ReadWrite => std::iter::once(server.to_owned())
                .chain(admin.ro_sites.iter().cloned())
                .collect(),
            VolumeKind::ReadOnly => parent_admin.map(|a| a.ro_sites).unwrap_or_default(),
            VolumeKind::Backup => vec![server.to_owned()],
        };
        Ok(VolumeInfo {
            id,
            name: header.name,
            quota: header.quota,
            used: state.used,
            files: state.files,
            server: server.to_owned(),
            created: header.created,
            updated: state.updated,
            kind: admin.kind,
            parent,
            backup_time: admin.backup_time,
            lock: admin.lock,
            sites,
            last_release: admin.last_release,
            disk: cellfs_protocol::DiskSpace::of(&self.volume_dir(id)),
        })
    }

    /// Compares the VLDB with the volumes this server holds: reports VLDB
    /// entries without a volume, folders without an entry, and clone
    /// references to volumes that do not exist (those are removed). Returns
    /// one line per finding.
    pub fn sync_vldb(&self) -> FsResult<Vec<String>> {
        let headers = Self::read_headers(&self.vldb)?;
        let known: HashSet<VolumeId> = headers.iter().map(|(id, _)| *id).collect();
        let mut report = Vec::new();
        let txn = self.vldb.begin_write()?;
        for (id, header) in &headers {
            let name = &header.name;
            if self.volume(*id).is_err() || !self.volume_dir(*id).join("meta.redb").exists() {
                report.push(format!(
                    "{name} (id {id}) is in the VLDB but this server does not hold it"
                ));
            }
            let mut admin = admin_in(&txn, *id)?;
            let dangling: Vec<(VolumeKind, VolumeId)> = admin.clones().filter(|(_, c)| !known.contains(c)).collect();
            for (kind, clone) in &dangling {
                admin.set_clone_id(*kind, None);
                report.push(format!(
                    "{name} (id {id}) named {} clone {clone}, which does not exist; reference removed",
                    kind.short()
                ));
            }
            if !dangling.is_empty() {
                put_admin(&txn, *id, &admin)?;
            }
            if let Some(parent) = admin.parent.filter(|p| !known.contains(p)) {
                report.push(format!(
                    "{name} (id {id}) is a clone of volume {parent}, which does not exist"
                ));
            }
        }
        txn.commit()?;
        for entry in std::fs::read_dir(self.root.join(VOLUMES_DIR))? {
            let entry = entry?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            // `<id>.new`/`<id>.old` are swaps in progress.
            if let Ok(id) = file_name.parse::<VolumeId>()
                && !known.contains(&id)
            {
                report.push(format!(
                    "{} holds volume {id}, which the VLDB does not know (removed at the next start)",
                    entry.path().display()
                ));
            }
        }
        if report.is_empty() {
            report.push(format!("the VLDB and this server agree on {} volume(s)", headers.len()));
        }
        Ok(report)
    }

    /// The volume a mount point naming `name` leads to: its released
    /// read-only copy unless the mount point is `read_write` or there is none.
    pub fn mount_volume(&self, name: &str, read_write: bool) -> FsResult<Arc<Volume>> {
        let id = self.volume_id(name)?;
        if !read_write && let Some(ro) = self.admin(id)?.readonly {
            return self.volume(ro);
        }
        self.volume(id)
    }

    /// Describes every volume, by id.
    pub fn list(&self, server: &str) -> FsResult<Vec<VolumeInfo>> {
        let mut ids: Vec<VolumeId> = self.map().keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| self.info(id, server)).collect()
    }

    /// Every open volume.
    pub fn volumes(&self) -> Vec<Arc<Volume>> {
        self.map().values().cloned().collect()
    }

    /// Each open volume's name and the number of changes its journal holds
    /// (one read transaction per volume; a volume that cannot be read is
    /// left out).
    pub fn journal_lengths(&self) -> Vec<(String, u64)> {
        let one = |vol: &Volume| -> FsResult<(String, u64)> {
            let js = vol.journal_state()?;
            Ok((self.header(vol.id())?.name, (js.seq + 1).saturating_sub(js.oldest)))
        };
        self.volumes()
            .iter()
            .filter_map(|vol| {
                one(vol)
                    .map_err(|e| tracing::debug!(volume = vol.id(), "journal: {e}"))
                    .ok()
            })
            .collect()
    }
}

/// The name of volume `name`'s clone of `kind` (`NAME.backup`, `NAME.readonly`).
pub fn clone_name(name: &str, kind: VolumeKind) -> String {
    match kind {
        VolumeKind::Backup => format!("{name}.backup"),
        VolumeKind::ReadOnly => format!("{name}.readonly"),
        VolumeKind::ReadWrite => name.to_owned(),
    }
}

use crate::vldb::same_server;

/// Suffixes kept for clones and replicas.
const RESERVED_SUFFIXES: [&str; 2] = [".backup", ".readonly"];

fn check_not_reserved(name: &str) -> FsResult<()> {
    match RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
        Some(suffix) => Err(rpc_err(
            ErrorCode::InvalidName,
            format!("volume names ending in {suffix} are kept for clones and replicas"),
        )),
        None => Ok(()),
    }
}

/// Takes the next volume id from the VLDB's counter.
fn next_volume_id(txn: &redb::WriteTransaction) -> FsResult<VolumeId> {
    let mut counters = txn.open_table(VLDB_COUNTERS)?;
    let id = counters.get(NEXT_VOLUME_ID)?.map_or(1, |v| v.value());
    counters.insert(NEXT_VOLUME_ID, id + 1)?;
    Ok(id)
}

fn read_admin(vldb: &Database, id: VolumeId) -> FsResult<VolumeAdmin> {
    let txn = vldb.begin_read()?;
    let table = txn.open_table(VOLUME_ADMIN)?;
    match table.get(id)? {
        Some(v) => schema::decode(v.value()),
        None => Ok(VolumeAdmin::default()),
    }
}

fn admin_in(txn: &redb::WriteTransaction, id: VolumeId) -> FsResult<VolumeAdmin> {
    let table = txn.open_table(VOLUME_ADMIN)?;
    let v = table.get(id)?;
    match v {
        Some(v) => schema::decode(v.value()),
        None => Ok(VolumeAdmin::default()),
    }
}

fn put_admin(txn: &redb::WriteTransaction, id: VolumeId, admin: &VolumeAdmin) -> FsResult<()> {
    txn.open_table(VOLUME_ADMIN)?
        .insert(id, schema::encode(admin)?.as_slice())?;
    Ok(())
}

/// Removes volume `id` called `name` from the VLDB.
fn forget(txn: &redb::WriteTransaction, id: VolumeId, name: &str) -> FsResult<()> {
    txn.open_table(VOLUME_IDS)?.remove(name)?;
    txn.open_table(VOLUME_HEADERS)?.remove(id)?;
    txn.open_table(VOLUME_ADMIN)?.remove(id)?;
    Ok(())
}

/// `volumes/<id>.<what>`: a folder being built to replace `volumes/<id>`.
fn swap_path(dir: &Path, what: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(what);
    dir.with_file_name(name)
}

/// Puts the complete folder `staging` in place of `dir`: `dir` becomes
/// `<dir>.old`, `staging` becomes `dir`, then the old one is deleted. A crash
/// in between is finished by [`finish_swap`] at the next start.
fn install_folder(dir: &Path, staging: &Path) -> FsResult<()> {
    let old = swap_path(dir, "old");
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old)?;
    }
    std::fs::rename(staging, dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Completes a folder swap a crash interrupted: when `dir` is missing, the
/// complete replacement (`.new`) or else the previous folder (`.old`) takes
/// its place. Leftovers are removed later as folders the VLDB does not know.
fn finish_swap(dir: &Path) -> FsResult<()> {
    if dir.exists() {
        return Ok(());
    }
    for what in ["new", "old"] {
        let candidate = swap_path(dir, what);
        if candidate.join("meta.redb").exists() {
            tracing::warn!(from = %candidate.display(), to = %dir.display(), "finishing an interrupted volume swap");
            std::fs::rename(&candidate, dir)?;
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::StorePlan;
    use cellfs_protocol::Fid;

    /// Writes `bytes` as the whole content of a new file `name` in `vol`'s root.
    fn put_file(vol: &Volume, name: &str, bytes: &[u8]) -> Fid {
        let fid = vol
            .create(Fid::root(vol.id()), name, 0o644, 0, 0, false)
            .unwrap()
            .value
            .status
            .fid;
        store_whole(vol, fid, bytes);
        fid
    }

    /// Replaces the content of file `fid` with `bytes`.
    fn store_whole(vol: &Volume, fid: Fid, bytes: &[u8]) {
        let plan = StorePlan {
            fid,
            offset: 0,
            len: bytes.len() as u64,
            truncate: Some(0),
            expect: None,
        };
        let pending = vol.prepare_store(plan).unwrap();
        pending.write_at(bytes, 0).unwrap();
        vol.commit_store(pending, None, None).unwrap();
    }

    fn read_file(vol: &Volume, fid: Fid) -> Vec<u8> {
        let (_, file) = vol.open_data(fid).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut file.unwrap(), &mut out).unwrap();
        out
    }

    #[test]
    fn a_clone_keeps_old_versions_across_changes_and_restarts() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path()).unwrap();
        let id = store.create_volume("v", 0).unwrap();
        let vol = store.volume(id).unwrap();
        let a = put_file(&vol, "a", b"old a");
        let b = put_file(&vol, "b", b"old b");
        let clone_id = store.backup_volume("v").unwrap();
        let clone = store.volume(clone_id).unwrap();
        assert!(clone.is_clone());
        // Nothing is copied: the clone's folder holds no data file yet.
        assert_eq!(std::fs::read_dir(clone.dir().join("data")).unwrap().count(), 0);
        store_whole(&vol, a, b"new a");
        vol.remove(Fid::root(id), "b").unwrap();
        assert_eq!(read_file(&vol, a), b"new a");
        assert_eq!(read_file(&clone, Fid { volume: clone_id, ..a }), b"old a");
        assert_eq!(read_file(&clone, Fid { volume: clone_id, ..b }), b"old b");
        assert_eq!(
            code(clone.create(Fid::root(clone_id), "x", 0o644, 0, 0, false)),
            ErrorCode::ReadOnly
        );
        drop((vol, clone, store));

        // After a restart (orphan sweep included) the clone still reads both.
        let store = Store::open(tmp.path()).unwrap();
        let clone = store.volume(clone_id).unwrap();
        assert_eq!(read_file(&clone, Fid { volume: clone_id, ..a }), b"old a");
        assert_eq!(read_file(&clone, Fid { volume: clone_id, ..b }), b"old b");
        assert_eq!(store.admin(id).unwrap().backup, Some(clone_id));
    }

    #[test]
    fn servers_get_indexes_and_disjoint_volume_ids_and_installs_keep_fids() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Store::create(&tmp.path().join("a")).unwrap();
        assert_eq!(first.register_server("127.0.0.1:7000").unwrap(), 0);
        assert_eq!(first.register_server("127.0.0.1:7001").unwrap(), 1);
        assert_eq!(
            first.register_server("127.0.0.1:7001").unwrap(),
            1,
            "again: the same index"
        );
        let second = Store::create_with_index(&tmp.path().join("b"), 1).unwrap();
        let (a, b) = (
            first.create_volume("a", 0).unwrap(),
            second.create_volume("b", 0).unwrap(),
        );
        assert_eq!(b, (1 << 32) + 1);
        assert!(a < 1 << 32);

        // A volume installed from a dump keeps its id, FIDs and data versions.
        let vol = first.volume(a).unwrap();
        let fid = put_file(&vol, "f", b"bytes");
        let version = vol.status(fid).unwrap().data_version;
        let snap = first.dump_snapshot(&vol).unwrap();
        let (mut file, _) = first.dump_volume(&vol, &snap, "a", None).unwrap();
        first.drop_snapshot(&vol, &snap);
        let path = tmp.path().join("dump");
        std::io::copy(&mut file, &mut std::fs::File::create(&path).unwrap()).unwrap();
        second.install_volume("a", a, VolumeKind::ReadOnly, &path).unwrap();
        let copy = second.volume(a).unwrap();
        assert_eq!(read_file(&copy, fid), b"bytes");
        assert_eq!(copy.status(fid).unwrap().data_version, version);
        assert_eq!(code(copy.check_writable()), ErrorCode::ReadOnly);
        assert_eq!(
            code(second.install_volume("other", a, VolumeKind::ReadOnly, &path)),
            ErrorCode::Exists,
            "an id held under another name"
        );
        drop((copy, second));
        let second = Store::open(&tmp.path().join("b")).unwrap();
        assert_eq!(
            code(second.volume(a).unwrap().check_writable()),
            ErrorCode::ReadOnly,
            "after a restart"
        );

        // A volume handed over is answered `Moved`.
        first.hand_over("a", "127.0.0.1:7001").unwrap();
        assert_eq!(code(first.volume(a)), ErrorCode::Moved);
        assert_eq!(first.location(a).unwrap().unwrap().server, "127.0.0.1:7001");
    }

    #[test]
    fn a_backup_and_a_release_share_retired_files_and_sites_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path()).unwrap();
        let id = store.create_volume("v", 0).unwrap();
        let vol = store.volume(id).unwrap();
        let a = put_file(&vol, "a", b"first");
        assert_eq!(code(store.release("v")), ErrorCode::Invalid, "a release without a site");
        store.register_server("127.0.0.1:7000").unwrap();
        assert_eq!(
            code(store.check_server("10.0.0.9:7000")),
            ErrorCode::NotFound,
            "a server that is not registered"
        );
        store.add_site("v", "127.0.0.1:7000").unwrap();
        assert_eq!(code(store.add_site("v", "127.0.0.1:7000")), ErrorCode::Exists);
        let bk = store.backup_volume("v").unwrap();
        let ro = store.release("v").unwrap();
        assert_eq!(store.mount_volume("v", false).unwrap().id(), ro);
        assert_eq!(store.mount_volume("v", true).unwrap().id(), id);
        store_whole(&vol, a, b"second");
        for clone in [bk, ro] {
            assert_eq!(
                read_file(&store.volume(clone).unwrap(), Fid { volume: clone, ..a }),
                b"first"
            );
        }
        drop((vol, store));
        let store = Store::open(tmp.path()).unwrap();
        for clone in [bk, ro] {
            assert_eq!(
                read_file(&store.volume(clone).unwrap(), Fid { volume: clone, ..a }),
                b"first"
            );
        }
        assert_eq!(store.remove_site("v", "127.0.0.1:7000").unwrap(), Some(ro));
        assert_eq!(store.mount_volume("v", false).unwrap().id(), id);
        assert_eq!(read_file(&store.volume(bk).unwrap(), Fid { volume: bk, ..a }), b"first");
    }

    #[test]
    fn a_dump_is_of_the_state_at_its_snapshot_while_writers_go_on() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path()).unwrap();
        let id = store.create_volume("v", 0).unwrap();
        let vol = store.volume(id).unwrap();
        let a = put_file(&vol, "a", b"old a");
        put_file(&vol, "b", b"old b");
        let snap = store.dump_snapshot(&vol).unwrap();
        // Changes after the snapshot (no lock is held while the dump runs).
        store_whole(&vol, a, b"new a");
        vol.remove(Fid::root(id), "b").unwrap();
        let (file, _) = store.dump_volume(&vol, &snap, "v", None).unwrap();
        store.drop_snapshot(&vol, &snap);
        assert!(!snap.dir().exists());
        assert!(vol.clones().is_empty());
        let (mut r, header) = crate::dump::DumpReader::new(std::io::BufReader::new(file)).unwrap();
        assert_eq!(header.source_id, id);
        let mut contents = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            if let crate::dump::Record::Vnode { data: true, .. } = rec {
                let mut out = Vec::new();
                r.copy_data(&mut out).unwrap();
                contents.push(out);
            }
        }
        contents.sort();
        assert_eq!(contents, vec![b"old a".to_vec(), b"old b".to_vec()]);
        assert_eq!(read_file(&vol, a), b"new a");
    }

    fn code<T: std::fmt::Debug>(r: FsResult<T>) -> ErrorCode {
        r.unwrap_err().to_rpc().code
    }

    #[test]
    fn an_interrupted_swap_is_finished_at_start_and_a_clone_without_folder_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::create(tmp.path()).unwrap();
        let id = store.create_volume("v", 0).unwrap();
        let vol = store.volume(id).unwrap();
        let a = put_file(&vol, "a", b"content");
        let clone_id = store.backup_volume("v").unwrap();
        drop((vol, store));

        // Crash between the two renames of a swap: only `<id>.new` is there.
        let dir = tmp.path().join(VOLUMES_DIR).join(id.to_string());
        std::fs::rename(&dir, swap_path(&dir, "new")).unwrap();
        // And a clone whose folder was never made.
        std::fs::remove_dir_all(tmp.path().join(VOLUMES_DIR).join(clone_id.to_string())).unwrap();

        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(read_file(&store.volume(id).unwrap(), a), b"content");
        assert!(
            store.volume_id("v.backup").is_err(),
            "the clone without a folder is forgotten"
        );
        assert_eq!(store.admin(id).unwrap().backup, None);
        // And can be made again.
        store.backup_volume("v").unwrap();
    }
}
