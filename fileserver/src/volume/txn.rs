//! Typed access to a volume's tables inside one read or write transaction.

use super::redo::Op;
use crate::error::{FsResult, rpc_err};
use crate::schema::{
    self, ENTRIES, JOURNAL, JOURNAL_KEY, JournalEntry, JournalState, STATE, STATE_KEY, UNSETTLED, VNODES, VnodeRecord,
    VolumeState,
};
use cellfs_protocol::{ErrorCode, Fid, FileKind, Status, Timestamp, VolumeId};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};
use std::collections::BTreeSet;

/// Reading vnode records, the same in a read and a write transaction.
pub trait VnodeAccess {
    /// The volume the transaction is in.
    fn volume_id(&self) -> VolumeId;

    /// The record of a vnode number, if any.
    fn vnode_by_number_opt(&self, vnode: u64) -> FsResult<Option<VnodeRecord>>;

    /// The record of a vnode number named by a directory entry.
    fn vnode_by_number(&self, vnode: u64) -> FsResult<VnodeRecord> {
        self.vnode_by_number_opt(vnode)?
            .ok_or_else(|| rpc_err(ErrorCode::Io, format!("dangling entry to vnode {vnode}")))
    }

    /// The record of `fid` (`Stale` if gone or reused).
    fn vnode(&self, fid: Fid) -> FsResult<VnodeRecord> {
        check_fid(self.volume_id(), fid, self.vnode_by_number_opt(fid.vnode)?)
    }

    /// The record of `fid`, which must be a directory.
    fn dir(&self, fid: Fid) -> FsResult<VnodeRecord> {
        require_dir(fid, self.vnode(fid)?)
    }
}

/// The record of `vnode` in an open vnodes table, if any.
pub(super) fn decode_vnode(
    table: &impl ReadableTable<u64, &'static [u8]>,
    vnode: u64,
) -> FsResult<Option<VnodeRecord>> {
    match table.get(vnode)? {
        Some(v) => Ok(Some(schema::decode(v.value())?)),
        None => Ok(None),
    }
}

impl VnodeAccess for Reader {
    fn volume_id(&self) -> VolumeId {
        self.volume
    }

    fn vnode_by_number_opt(&self, vnode: u64) -> FsResult<Option<VnodeRecord>> {
        decode_vnode(&self.vnodes, vnode)
    }
}

impl VnodeAccess for VolTxn<'_> {
    fn volume_id(&self) -> VolumeId {
        self.volume
    }

    fn vnode_by_number_opt(&self, vnode: u64) -> FsResult<Option<VnodeRecord>> {
        decode_vnode(&self.vnodes, vnode)
    }
}

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
        acl_dir: if rec.kind == cellfs_protocol::FileKind::Dir {
            vnode
        } else {
            rec.parent
        },
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

fn read_journal_state(table: &impl ReadableTable<&'static str, &'static [u8]>) -> FsResult<JournalState> {
    let v = table
        .get(JOURNAL_KEY)?
        .ok_or_else(|| rpc_err(ErrorCode::Io, "volume journal state missing"))?;
    schema::decode(v.value())
}

/// A read transaction on a volume.
pub struct Reader {
    volume: VolumeId,
    vnodes: ReadOnlyTable<u64, &'static [u8]>,
    entries: ReadOnlyTable<(u64, &'static str), (u64, u64)>,
    state: ReadOnlyTable<&'static str, &'static [u8]>,
    journal: ReadOnlyTable<u64, &'static [u8]>,
}

impl Reader {
    /// Opens the tables.
    pub fn new(volume: VolumeId, txn: ReadTransaction) -> FsResult<Self> {
        Ok(Reader {
            volume,
            vnodes: txn.open_table(VNODES)?,
            entries: txn.open_table(ENTRIES)?,
            state: txn.open_table(STATE)?,
            journal: txn.open_table(JOURNAL)?,
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

    /// The change numbering and journal reach.
    pub fn journal_state(&self) -> FsResult<JournalState> {
        read_journal_state(&self.state)
    }

    /// Every FID changed by a change numbered in `from..=to`, deduplicated.
    /// Stops with `None` once more than `limit` distinct FIDs are collected.
    pub fn changed_between(&self, from: u64, to: u64, limit: usize) -> FsResult<Option<BTreeSet<Fid>>> {
        let mut out = BTreeSet::new();
        if from > to {
            return Ok(Some(out));
        }
        for item in self.journal.range(from..=to)? {
            let (_, v) = item?;
            let entry: JournalEntry = schema::decode(v.value())?;
            out.extend(entry.into_iter().map(|(vnode, unique)| Fid {
                volume: self.volume,
                vnode,
                unique,
            }));
            if out.len() > limit {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    /// Every vnode number and record, in vnode order.
    pub fn all_vnodes(&self) -> FsResult<Vec<(u64, VnodeRecord)>> {
        let mut out = Vec::new();
        for item in self.vnodes.iter()? {
            let (k, v) = item?;
            out.push((k.value(), schema::decode(v.value())?));
        }
        Ok(out)
    }

    /// Every directory entry as (directory vnode, name, vnode, uniquifier).
    pub fn all_entries(&self) -> FsResult<Vec<(u64, String, u64, u64)>> {
        let mut out = Vec::new();
        for item in self.entries.iter()? {
            let (k, v) = item?;
            let (dir, name) = k.value();
            let (vnode, unique) = v.value();
            out.push((dir, name.to_owned(), vnode, unique));
        }
        Ok(out)
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

/// A write transaction on a volume; the state records are written by [`VolTxn::finish`].
pub struct VolTxn<'t> {
    volume: VolumeId,
    txn: &'t WriteTransaction,
    vnodes: Table<'t, u64, &'static [u8]>,
    entries: Table<'t, (u64, &'static str), (u64, u64)>,
    state_table: Table<'t, &'static str, &'static [u8]>,
    journal: Table<'t, u64, &'static [u8]>,
    /// The volume counters, written back on finish.
    pub state: VolumeState,
    /// The change numbering, written back on finish.
    pub journal_state: JournalState,
    /// The time of this change.
    pub now: Timestamp,
    /// Every key this transaction put or removed, in order (for the redo log).
    ops: Vec<Op>,
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
        let journal_state = read_journal_state(&state_table)?;
        Ok(VolTxn {
            volume,
            txn,
            vnodes: txn.open_table(VNODES)?,
            entries: txn.open_table(ENTRIES)?,
            state_table,
            journal: txn.open_table(JOURNAL)?,
            state,
            journal_state,
            now: Timestamp::now(),
            ops: Vec::new(),
        })
    }

    /// Every key put or removed so far, in order; leaves none recorded.
    pub(super) fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }

    /// Logs `bytes` as the content of data file `data_file` of `vnode`,
    /// durable with this transaction (see `volume/settle.rs`).
    pub fn log_data(&mut self, vnode: u64, data_file: u64, bytes: &[u8]) -> FsResult<()> {
        self.txn.open_table(UNSETTLED)?.insert((vnode, data_file), bytes)?;
        self.ops.push(Op::Unsettled(vnode, data_file, Some(bytes.to_vec())));
        Ok(())
    }

    /// Writes the state records back (with `updated` set to now).
    pub fn finish(&mut self) -> FsResult<()> {
        self.state.updated = self.now;
        let bytes = schema::encode(&self.state)?;
        self.state_table.insert(STATE_KEY, bytes.as_slice())?;
        self.ops.push(Op::State(STATE_KEY.to_owned(), Some(bytes)));
        let bytes = schema::encode(&self.journal_state)?;
        self.state_table.insert(JOURNAL_KEY, bytes.as_slice())?;
        self.ops.push(Op::State(JOURNAL_KEY.to_owned(), Some(bytes)));
        Ok(())
    }

    /// Numbers this change: bumps the change number, records which FIDs it
    /// touched, and trims the journal to its newest `keep` entries. Returns
    /// the new change number.
    pub fn log_change(&mut self, fids: impl IntoIterator<Item = Fid>, keep: u64) -> FsResult<u64> {
        let mut touched: Vec<(u64, u64)> = fids.into_iter().map(|f| (f.vnode, f.unique)).collect();
        touched.sort_unstable();
        touched.dedup();
        let js = &mut self.journal_state;
        js.seq += 1;
        let seq = js.seq;
        let bytes = schema::encode(&touched)?;
        self.journal.insert(seq, bytes.as_slice())?;
        self.ops.push(Op::Journal(seq, Some(bytes)));
        let oldest = self.journal_state.oldest;
        trim(&mut self.journal, &mut self.journal_state, keep)?;
        self.ops
            .extend((oldest..self.journal_state.oldest).map(|seq| Op::Journal(seq, None)));
        Ok(seq)
    }

    /// Deletes a vnode record without touching the counters (salvage
    /// recomputes them).
    pub fn remove_record(&mut self, vnode: u64) -> FsResult<()> {
        self.vnodes.remove(vnode)?;
        self.ops.push(Op::Vnode(vnode, None));
        Ok(())
    }

    /// Stores a record.
    pub fn put(&mut self, vnode: u64, rec: &VnodeRecord) -> FsResult<()> {
        let bytes = schema::encode(rec)?;
        self.vnodes.insert(vnode, bytes.as_slice())?;
        self.ops.push(Op::Vnode(vnode, Some(bytes)));
        Ok(())
    }

    /// Deletes a record and counts it out of the volume.
    pub fn delete(&mut self, vnode: u64, rec: &VnodeRecord) -> FsResult<()> {
        self.vnodes.remove(vnode)?;
        self.ops.push(Op::Vnode(vnode, None));
        self.state.files = self.state.files.saturating_sub(1);
        if rec.kind == FileKind::File {
            self.state.used = self.state.used.saturating_sub(rec.size);
        }
        Ok(())
    }

    /// Moves the counters past `count` new (vnode, uniquifier) pairs, set
    /// aside for creates to come ([`VolTxn::claim`]); no file is counted yet.
    pub fn set_aside(&mut self, count: u64) -> Vec<(u64, u64)> {
        let pairs = (0..count)
            .map(|i| (self.state.next_vnode + i, self.state.next_unique + i))
            .collect();
        self.state.next_vnode += count;
        self.state.next_unique += count;
        pairs
    }

    /// Takes a pair [`VolTxn::set_aside`] handed out, for a new file:
    /// refused (`Stale`) when it was never handed out or names a record.
    pub fn claim(&mut self, vnode: u64, unique: u64) -> FsResult<()> {
        if vnode >= self.state.next_vnode || unique >= self.state.next_unique || self.vnodes.get(vnode)?.is_some() {
            return Err(rpc_err(ErrorCode::Stale, format!("vnode {vnode} was not set aside")));
        }
        self.state.files += 1;
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
        self.ops.push(Op::Entry(dir, name.to_owned(), Some((vnode, unique))));
        Ok(())
    }

    /// Removes an entry.
    pub fn unlink(&mut self, dir: u64, name: &str) -> FsResult<()> {
        self.entries.remove((dir, name))?;
        self.ops.push(Op::Entry(dir, name.to_owned(), None));
        Ok(())
    }

    /// The wire status of a record.
    pub fn status(&self, vnode: u64, rec: &VnodeRecord) -> Status {
        to_status(self.volume, vnode, rec)
    }
}

/// Drops the oldest journal entries until at most `keep` remain.
pub fn trim(journal: &mut Table<'_, u64, &'static [u8]>, js: &mut JournalState, keep: u64) -> FsResult<()> {
    while js.seq.saturating_add(1).saturating_sub(js.oldest) > keep {
        journal.remove(js.oldest)?;
        js.oldest += 1;
    }
    Ok(())
}
