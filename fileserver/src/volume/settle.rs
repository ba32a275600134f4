//! Logged stores: a small file's new bytes made durable by the metadata
//! commit instead of by fsyncs of their own.
//!
//! A whole store of at most [`LOGGED_MAX`] bytes writes its new data file
//! without an fsync and puts the same bytes in the `unsettled` table in the
//! transaction that commits the record naming the file, so the store is
//! durable once that commit is (one flush of the metadata instead of the
//! data file's fsync, the folder's fsync and the commit's). Settling later
//! makes the data files themselves durable (those still named: a few one
//! by one, many with one `syncfs`), and then drops their bytes from the
//! table. After a crash,
//! [`Volume::replay_logged`] writes every logged file still named by its
//! record back from the table before the volume serves anything.
//!
//! A clone names data files of its origin, so the origin settles before
//! every clone ([`Volume::write_clone`]): a clone never names a data file
//! whose bytes only the origin's table holds.

use super::txn::{VnodeAccess, decode_vnode};
use super::{Volume, sync_dir};
use crate::error::FsResult;
use crate::schema::{UNSETTLED, VNODES};
use cellfs_protocol::FileKind;
use redb::{ReadableTable, ReadableTableMetadata};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// Largest whole store whose bytes are logged in the metadata commit.
pub const LOGGED_MAX: usize = 256 * 1024;

/// How long after a group of logged stores their data files are settled.
const SETTLE_AFTER: Duration = Duration::from_secs(1);

/// Most data files a settle flushes one by one; past it one `syncfs`
/// flushes them all (and whatever else the file system holds unwritten).
const SETTLE_ONE_BY_ONE: usize = 16;

/// How a settle made its data files durable.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// This many still named, each flushed on its own.
    OneByOne(usize),
    /// Too many for that: the whole file system at once.
    FileSystem,
}

/// Data files whose bytes are logged and not settled yet.
#[derive(Debug, Default)]
pub struct Unsettled {
    /// (vnode, data file) of each, as keyed in the table.
    keys: Vec<(u64, u64)>,
    /// Whether a settle is already scheduled.
    scheduled: bool,
}

impl Volume {
    /// Notes that data file `data_file` of `vnode` was committed with its
    /// bytes logged; settled by the next [`Volume::schedule_settle`].
    pub(super) fn note_logged(&self, vnode: u64, data_file: u64) {
        self.unsettled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys
            .push((vnode, data_file));
    }

    /// Settles the logged data files [`SETTLE_AFTER`] from now, on a task
    /// of the current runtime, unless a settle is already due.
    pub(super) fn schedule_settle(self: &Arc<Self>) {
        {
            let mut u = self.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
            if u.keys.is_empty() || u.scheduled {
                return;
            }
            u.scheduled = true;
        }
        let vol = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SETTLE_AFTER).await;
            let v = vol.clone();
            match tokio::task::spawn_blocking(move || v.settle()).await {
                Ok(Ok(n)) => tracing::debug!(volume = vol.id, settled = n, "settled logged data files"),
                Ok(Err(e)) => tracing::warn!(volume = vol.id, error = %e, "cannot settle logged data files yet"),
                Err(e) => tracing::error!(volume = vol.id, error = %e, "settling logged data files panicked"),
            }
        });
    }

    /// Makes every logged data file still named durable
    /// (`Volume::flush_named`) and drops the bytes of all from the table;
    /// returns how many rows were dropped.
    /// Blocking. On an error the files stay logged and are settled with
    /// the next group's (or replayed at the next start).
    pub fn settle(&self) -> FsResult<usize> {
        // One settle at a time: a clone's settle waits for a background one
        // still flushing the files it took.
        let _one = self.settling.lock().unwrap_or_else(PoisonError::into_inner);
        let keys = {
            let mut u = self.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
            u.scheduled = false;
            std::mem::take(&mut u.keys)
        };
        if keys.is_empty() {
            return Ok(0);
        }
        let settled = self.check_live().and_then(|()| {
            self.flush_named(&keys)?;
            let mut txn = self.db.begin_write()?;
            // Losing this commit only makes the next start write the same
            // bytes again.
            txn.set_durability(redb::Durability::None)?;
            {
                let mut table = txn.open_table(UNSETTLED)?;
                for key in &keys {
                    table.remove(key)?;
                }
            }
            txn.commit()?;
            Ok(keys.len())
        });
        if settled.is_err() && !self.removed.load(std::sync::atomic::Ordering::Relaxed) {
            let mut u = self.unsettled.lock().unwrap_or_else(PoisonError::into_inner);
            u.keys.extend(keys);
        }
        settled
    }

    /// Makes durable those of `keys` whose record still names them: one by
    /// one when at most [`SETTLE_ONE_BY_ONE`], else with one `syncfs`. A
    /// data file replaced or removed since needs nothing: no record names
    /// it, and a crash's replay skips it too. A file overwritten again and
    /// again (a cache file, a counter) thus costs one small flush a second,
    /// not a flush of everything the file system holds unwritten.
    pub(super) fn flush_named(&self, keys: &[(u64, u64)]) -> FsResult<Flushed> {
        let named: Vec<(u64, u64)> = {
            let r = self.reader()?;
            let mut named = Vec::new();
            for &(vnode, data_file) in keys {
                if r.vnode_by_number_opt(vnode)?
                    .is_some_and(|rec| rec.data_file == data_file)
                {
                    named.push((vnode, data_file));
                }
            }
            named
        };
        let data = self.dir.join("data");
        if named.len() > SETTLE_ONE_BY_ONE {
            let dir = File::open(&data)?;
            // SAFETY: the descriptor is open for the call; it reads no memory.
            if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            return Ok(Flushed::FileSystem);
        }
        for &(vnode, data_file) in &named {
            match File::open(self.data_path(vnode, data_file)) {
                Ok(f) => f.sync_data()?,
                // Replaced and collected since the check.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !named.is_empty() {
            // The new files' names.
            sync_dir(&data)?;
        }
        Ok(Flushed::OneByOne(named.len()))
    }

    /// Writes back every logged data file its record still names (a crash
    /// came before they settled), makes them durable and empties the table;
    /// returns how many were written. Run when the volume opens.
    pub(super) fn replay_logged(&self) -> FsResult<usize> {
        let txn = self.db.begin_write()?;
        let data = self.dir.join("data");
        let mut written = 0;
        {
            let mut table = txn.open_table(UNSETTLED)?;
            if table.is_empty()? {
                drop(table);
                txn.abort()?;
                return Ok(0);
            }
            let vnodes = txn.open_table(VNODES)?;
            for item in table.iter()? {
                let (key, bytes) = item?;
                let (vnode, data_file) = key.value();
                let bytes = bytes.value();
                let named = decode_vnode(&vnodes, vnode)?.is_some_and(|rec| {
                    rec.kind == FileKind::File && rec.data_file == data_file && rec.size == bytes.len() as u64
                });
                if !named {
                    // Replaced or removed since: nothing names these bytes.
                    continue;
                }
                let file = File::create(self.data_path(vnode, data_file))?;
                file.write_all_at(bytes, 0)?;
                file.sync_all()?;
                written += 1;
            }
            table.retain(|_, _| false)?;
        }
        if written > 0 {
            sync_dir(&data)?;
            tracing::info!(
                volume = self.id,
                written,
                "wrote back logged data files a crash left unsettled"
            );
        }
        self.commit_durable(txn)?;
        Ok(written)
    }
}
