//! The cell-wide part of the VLDB, kept by the cell's first fileserver: the
//! registry of fileservers, and where volumes held by other servers live.

use crate::error::{FsResult, rpc_err};
use crate::schema::{self, LOCATIONS, Location, OLD_SITES, SERVERS};
use crate::store::Store;
use cellfs_protocol::{ErrorCode, VolumeId};
use redb::{ReadableDatabase, ReadableTable};

impl Store {
    /// Registers fileserver `address` and returns its index (the same index
    /// again for an address already registered).
    pub fn register_server(&self, address: &str) -> FsResult<u32> {
        let txn = self.vldb().begin_write()?;
        let index = {
            let mut servers = txn.open_table(SERVERS)?;
            let mut next = 0;
            let mut found = None;
            for item in servers.iter()? {
                let (k, v) = item?;
                if same_server(v.value(), address) {
                    found = Some(k.value());
                }
                next = next.max(k.value() + 1);
            }
            match found {
                Some(i) => i,
                None => {
                    if next > u32::from(u16::MAX) {
                        return Err(rpc_err(ErrorCode::TooLarge, "a cell has at most 65,536 fileservers"));
                    }
                    servers.insert(next, address)?;
                    next
                }
            }
        };
        txn.commit()?;
        Ok(index)
    }

    /// Every registered fileserver, by index.
    pub fn servers(&self) -> FsResult<Vec<(u32, String)>> {
        let txn = self.vldb().begin_read()?;
        let table = txn.open_table(SERVERS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value(), v.value().to_owned()));
        }
        Ok(out)
    }

    /// Refuses an address that is not a registered fileserver of the cell.
    pub fn check_server(&self, address: &str) -> FsResult<()> {
        let servers = self.servers()?;
        if servers.iter().any(|(_, a)| same_server(a, address)) {
            return Ok(());
        }
        let known: Vec<&str> = servers.iter().map(|(_, a)| a.as_str()).collect();
        Err(rpc_err(
            ErrorCode::NotFound,
            format!(
                "{address} is not a fileserver of this cell (its fileservers: {}); add one with `cellfs-fileserver init --join`",
                known.join(", ")
            ),
        ))
    }

    /// Where volume `id` lives when another server holds it.
    pub fn location(&self, id: VolumeId) -> FsResult<Option<Location>> {
        let txn = self.vldb().begin_read()?;
        let table = txn.open_table(LOCATIONS)?;
        let loc = table.get(id)?.map(|v| schema::decode(v.value())).transpose()?;
        Ok(loc)
    }

    /// Every volume held by another server, by id.
    pub fn locations(&self) -> FsResult<Vec<(VolumeId, Location)>> {
        let txn = self.vldb().begin_read()?;
        let table = txn.open_table(LOCATIONS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (k, v) = item?;
            out.push((k.value(), schema::decode(v.value())?));
        }
        Ok(out)
    }

    /// The volume called `name` held by another server, if there is one.
    pub fn location_by_name(&self, name: &str) -> FsResult<Option<(VolumeId, Location)>> {
        Ok(self.locations()?.into_iter().find(|(_, l)| l.name == name))
    }

    /// Records (or with `None` forgets) that another server holds volume `id`.
    pub fn set_location(&self, id: VolumeId, loc: Option<&Location>) -> FsResult<()> {
        let txn = self.vldb().begin_write()?;
        {
            let mut table = txn.open_table(LOCATIONS)?;
            match loc {
                Some(l) => {
                    table.insert(id, schema::encode(l)?.as_slice())?;
                }
                None => {
                    table.remove(id)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The read-only sites of read-write volume `id` that missed its latest release.
    pub fn old_sites(&self, id: VolumeId) -> FsResult<Vec<String>> {
        let txn = self.vldb().begin_read()?;
        let table = match txn.open_table(OLD_SITES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let sites = table.get(id)?.map(|v| schema::decode(v.value())).transpose()?;
        Ok(sites.unwrap_or_default())
    }

    /// Records which read-only sites of volume `id` missed its latest release.
    pub fn set_old_sites(&self, id: VolumeId, sites: &[String]) -> FsResult<()> {
        let txn = self.vldb().begin_write()?;
        {
            let mut table = txn.open_table(OLD_SITES)?;
            if sites.is_empty() {
                table.remove(id)?;
            } else {
                table.insert(id, schema::encode(&sites.to_vec())?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Refuses `name` when a volume of that name exists here or elsewhere.
    pub fn check_name_free(&self, name: &str) -> FsResult<()> {
        if self.volume_id(name).is_ok() || self.location_by_name(name)?.is_some() {
            return Err(rpc_err(ErrorCode::Exists, format!("volume {name:?} exists")));
        }
        Ok(())
    }
}

pub use cellfs_protocol::transport::same_server;
