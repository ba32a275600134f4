//! Typed access to a volume's tables inside one read or write transaction.

use crate::error::{FsResult, rpc_err};
use crate::schema::{self, ENTRIES, STATE, STATE_KEY, VNODES, VnodeRecord, VolumeState};
use cellfs_protocol::{ErrorCode, Fid, FileKind, Status, Timestamp, VolumeId};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};

/// The status the wire carries for a vnode record.
pub fn to_status(volume: VolumeId, vnode: u64, rec: &VnodeRecord) -> Status {
    Status {
        fid: Fid {
            volume,
            vnode,
            unique: rec.unique,
        },
        kind: rec.kind,
        mode: rec.mode,
        nlink: rec.nlink,
        uid: rec.uid,
        gid: rec.gid,
        size: rec.size,
        data_version: rec.data_version,
        mtime: rec.mtime,
        ctime: rec.ctime,
        atime: rec.atime,
    }
}

fn stale(fid: Fid) -> crate::error::FsError {
    rpc_err(ErrorCode::Stale, format!("no vnode {fid}"))
}

fn check_fid(volume: VolumeId, fid: Fid, rec: Option<VnodeRecord>) -> FsResult<VnodeRecord> {
    match rec {
        Some(rec) if fid.volume == volume && rec.unique == fid.unique => Ok(rec),
        _ => Err(stale(fid)),
    }
}

fn require_dir(fid: Fid, rec: VnodeRecord) -> FsResult<VnodeRecord> {
    if rec.kind == FileKind::Dir {
        Ok(rec)
    } else {
        Err(rpc_err(ErrorCode::NotDir, format!("{fid} is not a directory")))
    }
}

/// A read transaction on a volume.
pub struct Reader {
    volume: VolumeId,
    vnodes: ReadOnlyTable<u64, &'static [u8]>,
    entries: ReadOnlyTable<(u64, &'static str), (u64, u64)>,
    state: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Reader {
    /// Opens the tables.
    pub fn new(volume: VolumeId, txn: ReadTransaction) -> FsResult<Self> {
        Ok(Reader {
            volume,
            vnodes: txn.open_table(VNODES)?,
            entries: txn.open_table(ENTRIES)?,
            state: txn.open_table(STATE)?,
        })
    }

    /// The volume counters.
    pub fn state(&self) -> FsResult<VolumeState> {
        let v = self
            .state
            .get(STATE_KEY)?
            .ok_or_else(|| rpc_err(ErrorCode::Io, "volume state missing"))?;
        schema::decode(v.value())
    }

    /// The record of a vnode number, if any.
    pub fn vnode_by_number_opt(&self, vnode: u64) -> FsResult<Option<VnodeRecord>> {
        match self.vnodes.get(vnode)? {
            Some(v) => Ok(Some(schema::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The record of a vnode number named by a directory entry.
    pub fn vnode_by_number(&self, vnode: u64) -> FsResult<VnodeRecord> {
        self.vnode_by_number_opt(vnode)?
            .ok_or_else(|| rpc_err(ErrorCode::Io, format!("dangling entry to vnode {vnode}")))
    }

    /// The record of `fid` (`Stale` if gone or reused).
    pub fn vnode(&self, fid: Fid) -> FsResult<VnodeRecord> {
        check_fid(self.volume, fid, self.vnode_by_number_opt(fid.vnode)?)
    }

    /// The record of `fid`, which must be a directory.
    pub fn dir(&self, fid: Fid) -> FsResult<VnodeRecord> {
        require_dir(fid, self.vnode(fid)?)
    }

    /// One directory entry.
    pub fn entry(&self, dir: u64, name: &str) -> FsResult<Option<(u64, u64)>> {
        Ok(self.entries.get((dir, name))?.map(|v| v.value()))
    }

    /// All entries of a directory, by name.
    pub fn entries(&self, dir: u64) -> FsResult<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for item in self.entries.range((dir, "")..(dir.saturating_add(1), ""))? {
            let (k, v) = item?;
            out.push((k.value().1.to_owned(), v.value().0));
        }
        Ok(out)
    }

    /// The wire status of a record.
    pub fn status(&self, vnode: u64, rec: &VnodeRecord) -> Status {
        to_status(self.volume, vnode, rec)
    }
}

/// A write transaction on a volume; the state record is written by [`VolTxn::finish`].
pub struct VolTxn<'t> {
    volume: VolumeId,
    vnodes: Table<'t, u64, &'static [u8]>,
    entries: Table<'t, (u64, &'static str), (u64, u64)>,
    state_table: Table<'t, &'static str, &'static [u8]>,
    /// The volume counters, written back on finish.
    pub state: VolumeState,
    /// The time of this change.
    pub now: Timestamp,
}

impl<'t> VolTxn<'t> {
    /// Opens the tables inside `txn`.
    pub fn new(volume: VolumeId, txn: &'t WriteTransaction) -> FsResult<Self> {
        let state_table = txn.open_table(STATE)?;
        let state = {
            let v = state_table
                .get(STATE_KEY)?
                .ok_or_else(|| rpc_err(ErrorCode::Io, "volume state missing"))?;
            schema::decode(v.value())?
        };
        Ok(VolTxn {
            volume,
            vnodes: txn.open_table(VNODES)?,
            entries: txn.open_table(ENTRIES)?,
            state_table,
            state,
            now: Timestamp::now(),
        })
    }

    /// Writes the state back (with `updated` set to now).
    pub fn finish(&mut self) -> FsResult<()> {
        self.state.updated = self.now;
        let bytes = schema::encode(&self.state)?;
        self.state_table.insert(STATE_KEY, bytes.as_slice())?;
        Ok(())
    }

    /// The record of a vnode number, if any.
    pub fn vnode_by_number_opt(&self, vnode: u64) -> FsResult<Option<VnodeRecord>> {
        match self.vnodes.get(vnode)? {
            Some(v) => Ok(Some(schema::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// The record of a vnode number named by a directory entry.
    pub fn vnode_by_number(&self, vnode: u64) -> FsResult<VnodeRecord> {
        self.vnode_by_number_opt(vnode)?
            .ok_or_else(|| rpc_err(ErrorCode::Io, format!("dangling entry to vnode {vnode}")))
    }

    /// The record of `fid` (`Stale` if gone or reused).
    pub fn vnode(&self, fid: Fid) -> FsResult<VnodeRecord> {
        check_fid(self.volume, fid, self.vnode_by_number_opt(fid.vnode)?)
    }

    /// The record of `fid`, which must be a directory.
    pub fn dir(&self, fid: Fid) -> FsResult<VnodeRecord> {
        require_dir(fid, self.vnode(fid)?)
    }

    /// Stores a record.
    pub fn put(&mut self, vnode: u64, rec: &VnodeRecord) -> FsResult<()> {
        let bytes = schema::encode(rec)?;
        self.vnodes.insert(vnode, bytes.as_slice())?;
        Ok(())
    }

    /// Deletes a record and counts it out of the volume.
    pub fn delete(&mut self, vnode: u64, rec: &VnodeRecord) -> FsResult<()> {
        self.vnodes.remove(vnode)?;
        self.state.files = self.state.files.saturating_sub(1);
        if rec.kind == FileKind::File {
            self.state.used = self.state.used.saturating_sub(rec.size);
        }
        Ok(())
    }

    /// A new (vnode, uniquifier) pair; vnode numbers are never reused.
    pub fn alloc(&mut self) -> (u64, u64) {
        let v = self.state.next_vnode;
        let u = self.state.next_unique;
        self.state.next_vnode += 1;
        self.state.next_unique += 1;
        self.state.files += 1;
        (v, u)
    }

    /// One directory entry.
    pub fn entry(&self, dir: u64, name: &str) -> FsResult<Option<(u64, u64)>> {
        Ok(self.entries.get((dir, name))?.map(|v| v.value()))
    }

    /// True when the directory has no entries.
    pub fn is_empty_dir(&self, dir: u64) -> FsResult<bool> {
        Ok(self
            .entries
            .range((dir, "")..(dir.saturating_add(1), ""))?
            .next()
            .is_none())
    }

    /// Adds or replaces an entry.
    pub fn link(&mut self, dir: u64, name: &str, vnode: u64, unique: u64) -> FsResult<()> {
        self.entries.insert((dir, name), (vnode, unique))?;
        Ok(())
    }

    /// Removes an entry.
    pub fn unlink(&mut self, dir: u64, name: &str) -> FsResult<()> {
        self.entries.remove((dir, name))?;
        Ok(())
    }

    /// The wire status of a record.
    pub fn status(&self, vnode: u64, rec: &VnodeRecord) -> Status {
        to_status(self.volume, vnode, rec)
    }
}
