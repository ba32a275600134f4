//! Lazy creates, and what a volume that was not closed does before it serves.
//!
//! A create of an empty file is answered once it is committed, without a
//! flush of its own ([`Volume::join_group_lazy`]): the flush that makes it
//! durable is the next durable change of the volume (the store a close of
//! the file sends, or the `Sync` a close of an unwritten one sends, so every
//! close is still durable) or a flush at most [`FLUSH_AFTER`] later. At most [`LAZY_MAX`] changes wait
//! for a flush at any time; a group that would pass that is made durable.
//!
//! A crash can take those changes back after nodes saw them, with the FIDs,
//! directory data versions and change numbers they were given. None of
//! those may ever name something else. So a volume marks itself open (a
//! key of its state table, durable before it serves) and clears the mark
//! when it is dropped; one that opens still marked was not closed, and
//! before it serves it:
//! - takes a new journal incarnation, so every node revalidates every FID
//!   it holds instead of asking for the changes after a number it may have
//!   been given by a lost change;
//! - moves its vnode and uniquifier counters past any a lost change took;
//! - raises every directory's data version by more than lost changes can
//!   have raised it, so no version a node saw names other contents.

use super::Volume;
use crate::error::{FsError, FsResult, rpc_err};
use crate::schema::{self, JOURNAL, JOURNAL_KEY, JournalState, OPEN_KEY, STATE, STATE_KEY, VNODES, VolumeState};
use cellfs_protocol::{ErrorCode, FileKind};
use redb::{ReadableTable, WriteTransaction};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

/// Most changes committed without a flush at any time.
pub const LAZY_MAX: u64 = 1024;

/// How long after a lazy change its flush comes at the latest.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// The lazy changes' flush timer (the changes themselves wait in the redo
/// log's pending ops, `volume/redo.rs`).
#[derive(Debug, Default)]
pub struct Lazy {
    /// Whether a flush is scheduled.
    scheduled: bool,
}

impl Volume {
    /// Whether a group of `n` lazy changes may skip its flush.
    pub(super) fn lazy_room(&self, n: usize) -> bool {
        self.lazy_changes() + n as u64 <= LAZY_MAX
    }

    /// Whether some change waits for a flush.
    pub(super) fn lazy_pending(&self) -> bool {
        self.lazy_changes() > 0
    }

    fn lazy(&self) -> std::sync::MutexGuard<'_, Lazy> {
        self.lazy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flushes lazy changes [`FLUSH_AFTER`] from now (as an empty change
    /// of the volume's group), unless a flush is due already.
    pub(super) fn schedule_flush(self: &Arc<Self>) {
        if !self.lazy_pending() {
            return;
        }
        {
            let mut l = self.lazy();
            if l.scheduled {
                return;
            }
            l.scheduled = true;
        }
        // A volume dropped meanwhile was flushed by its close.
        let vol = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(FLUSH_AFTER).await;
            if let Some(vol) = vol.upgrade() {
                vol.lazy().scheduled = false;
                if let Err(e) = vol.flush_in_group().await {
                    tracing::warn!(volume = vol.id, error = %e, "cannot flush lazy changes yet");
                }
            }
        });
    }

    /// Makes every committed change durable with the volume's next commit
    /// group (an empty change that must be durable), and waits for it.
    pub async fn flush_in_group(self: &Arc<Self>) -> FsResult<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.join_group(Box::new(move |_: &Volume| -> super::Finish {
            Box::new(move |flushed: &FsResult<()>| {
                let _ = tx.send(flushed.as_ref().err().map(FsError::to_rpc));
            })
        }));
        match rx.await {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(FsError::Rpc(e)),
            Err(_) => Err(rpc_err(ErrorCode::Io, "the server failed while making changes durable")),
        }
    }

    /// Marks the volume open, durably; first, if the mark is there already
    /// (it was not closed), makes sure nothing a lost change handed out is
    /// handed out again (see the module's doc).
    pub(super) fn mark_open(&self) -> FsResult<()> {
        let txn = self.db.begin_write()?;
        let unclean = txn.open_table(STATE)?.get(OPEN_KEY)?.is_some();
        if unclean {
            recover(&txn)?;
        }
        txn.open_table(STATE)?.insert(OPEN_KEY, &[][..])?;
        self.commit_durable(txn)?;
        if unclean {
            tracing::warn!(
                volume = self.id,
                "the volume was not closed: changes not yet flushed may be lost; nodes revalidate what they hold"
            );
        }
        Ok(())
    }

    /// Clears the open mark, durably (which also flushes every lazy change).
    pub(super) fn mark_closed(&self) -> FsResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(STATE)?.remove(OPEN_KEY)?;
        self.commit_durable(txn)?;
        Ok(())
    }
}

/// The recovery of a volume that was not closed, in `txn`.
fn recover(txn: &WriteTransaction) -> FsResult<()> {
    let gap = LAZY_MAX + 1;
    let mut st = txn.open_table(STATE)?;
    let mut state: VolumeState = match st.get(STATE_KEY)? {
        Some(v) => schema::decode(v.value())?,
        None => return Ok(()),
    };
    state.next_vnode = state.next_vnode.saturating_add(gap);
    state.next_unique = state.next_unique.saturating_add(gap);
    st.insert(STATE_KEY, schema::encode(&state)?.as_slice())?;
    let seq = match st.get(JOURNAL_KEY)? {
        Some(v) => schema::decode::<JournalState>(v.value())?.seq,
        None => 0,
    };
    // A new incarnation voids every change number handed out before.
    txn.open_table(JOURNAL)?.retain(|_, _| false)?;
    let js = JournalState {
        incarnation: super::new_incarnation()?,
        seq,
        oldest: seq + 1,
    };
    st.insert(JOURNAL_KEY, schema::encode(&js)?.as_slice())?;
    let mut vnodes = txn.open_table(VNODES)?;
    let mut dirs = Vec::new();
    for item in vnodes.iter()? {
        let (k, v) = item?;
        let mut rec: schema::VnodeRecord = schema::decode(v.value())?;
        if rec.kind == FileKind::Dir {
            rec.data_version = rec.data_version.saturating_add(gap);
            dirs.push((k.value(), schema::encode(&rec)?));
        }
    }
    for (vnode, bytes) in dirs {
        vnodes.insert(vnode, bytes.as_slice())?;
    }
    Ok(())
}
