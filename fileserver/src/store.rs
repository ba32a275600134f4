//! The server's storage: the VLDB (`vldb.redb`: volume names, ids and
//! headers) and every open [`Volume`] under `volumes/<id>/`.

use crate::config::DEFAULT_JOURNAL_LEN;
use crate::error::{FsResult, rpc_err};
use crate::schema::{self, NEXT_VOLUME_ID, VLDB_COUNTERS, VOLUME_HEADERS, VOLUME_IDS, VolumeHeader};
use crate::volume::Volume;
use cellfs_protocol::{ErrorCode, Timestamp, VolumeId, VolumeInfo};
use redb::{Database, ReadableDatabase, ReadableTable};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// File name of the VLDB inside the data folder.
pub const VLDB_FILE: &str = "vldb.redb";
/// Folder of the volumes inside the data folder.
pub const VOLUMES_DIR: &str = "volumes";

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
    /// volumes keep the default journal length.
    pub fn create(root: &Path) -> FsResult<Self> {
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
            let mut c = txn.open_table(VLDB_COUNTERS)?;
            c.insert(NEXT_VOLUME_ID, 1)?;
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
        let headers = Self::read_headers(&vldb)?;
        let vols_dir = root.join(VOLUMES_DIR);
        std::fs::create_dir_all(&vols_dir)?;
        let mut volumes = HashMap::new();
        for (id, header) in headers {
            let vol = Volume::open(&vols_dir.join(id.to_string()), id, header.quota, journal_len)?;
            volumes.insert(id, Arc::new(vol));
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

    /// The open volume `id` (`Stale` if there is none).
    pub fn volume(&self, id: VolumeId) -> FsResult<Arc<Volume>> {
        self.map()
            .get(&id)
            .cloned()
            .ok_or_else(|| rpc_err(ErrorCode::Stale, format!("no volume {id}")))
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
        let txn = self.vldb.begin_write()?;
        let (id, vol) = {
            let mut ids = txn.open_table(VOLUME_IDS)?;
            if ids.get(name)?.is_some() {
                return Err(rpc_err(ErrorCode::Exists, format!("volume {name:?} exists")));
            }
            let mut counters = txn.open_table(VLDB_COUNTERS)?;
            let id = counters.get(NEXT_VOLUME_ID)?.map_or(1, |v| v.value());
            counters.insert(NEXT_VOLUME_ID, id + 1)?;
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

    /// Deletes a volume and its folder; returns the removed volume (already
    /// marked removed) so the caller can tell clients.
    pub fn remove_volume(&self, name: &str) -> FsResult<Arc<Volume>> {
        let txn = self.vldb.begin_write()?;
        let id = {
            let mut ids = txn.open_table(VOLUME_IDS)?;
            let id = ids
                .remove(name)?
                .map(|v| v.value())
                .ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no volume {name:?}")))?;
            txn.open_table(VOLUME_HEADERS)?.remove(id)?;
            id
        };
        txn.commit()?;
        let vol = self.volumes.write().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let vol = vol.ok_or_else(|| rpc_err(ErrorCode::Io, format!("volume {id} was not open")))?;
        vol.mark_removed();
        std::fs::remove_dir_all(self.volume_dir(id))?;
        Ok(vol)
    }

    /// Changes a volume's quota.
    pub fn set_quota(&self, name: &str, quota: u64) -> FsResult<()> {
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
        let vol = self.volume(id)?;
        let state = vol.state()?;
        Ok(VolumeInfo {
            id,
            name: header.name,
            quota: header.quota,
            used: state.used,
            files: state.files,
            server: server.to_owned(),
            created: header.created,
            updated: state.updated,
        })
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
}
