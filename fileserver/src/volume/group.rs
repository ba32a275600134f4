//! Group commit: concurrent changes to one volume share one flush.
//!
//! A change waits in its volume's queue ([`Volume::join_group`]). One task
//! at a time leads: it takes the volume's write lock, runs every queued
//! change one after another on one blocking thread, each in its own redb
//! transaction committed without an fsync, and then makes them durable
//! together ([`Volume::run_group`]): the new data files not yet durable
//! are fsynced (a whole small file's store writes and fsyncs its file
//! before it joins, see [`Volume::write_ahead`]), the data folder once, then
//! one record of everything the changes wrote is appended to the volume's
//! redo log and flushed (`volume/redo.rs`: one sequential write, where a
//! durable redb commit writes its pages all over the file). Only
//! then are old data files deleted, the changes' promises
//! granted and their writers answered, still under the lock: no reader sees
//! a change before it is durable, and a change whose group fails to flush
//! is answered with the error. A lone writer pays what it paid before; `n`
//! writers at once pay about one flush instead of `n`.
//!
//! The exception is a group of lazy changes only ([`Volume::join_group_lazy`],
//! the creates of empty files): it is answered once committed, and the next
//! durable group (or a flush soon after) makes it durable with its own
//! changes. `volume/unclean.rs` bounds them and says what a crash does.

use super::redo::Op;
use super::{Volume, sync_dir};
use crate::error::FsResult;
use std::cell::RefCell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

/// What runs once the change's group is durable (or failed to become so),
/// under the volume's write lock; it answers the change's writer.
pub type Finish = Box<dyn FnOnce(&FsResult<()>) + Send>;

/// One change waiting for its group: run on the group's blocking thread.
pub type Job = Box<dyn FnOnce(&Volume) -> Finish + Send>;

/// A volume's changes waiting for the next group.
#[derive(Default)]
pub struct Queue {
    jobs: Vec<Job>,
    /// Whether some queued change must be durable before it is answered
    /// (all others may be answered once committed, `volume/unclean.rs`).
    eager: bool,
    /// Whether a task is leading groups for this volume.
    leading: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("jobs", &self.jobs.len())
            .field("eager", &self.eager)
            .field("leading", &self.leading)
            .finish()
    }
}

/// Durability work the changes of a group leave for its end.
#[derive(Default)]
struct Deferred {
    /// Changes committed (without an fsync).
    commits: usize,
    /// What they wrote, for the redo log.
    ops: Vec<Op>,
    /// New data files to fsync, with the data folder, before the durable commit.
    files: Vec<Arc<File>>,
    /// Data files to delete once the group is durable.
    garbage: Vec<PathBuf>,
}

thread_local! {
    static GROUP: RefCell<Option<Deferred>> = const { RefCell::new(None) };
}

/// Whether this thread is running a group's changes (commits skip the fsync).
pub(super) fn in_group() -> bool {
    GROUP.with(|g| g.borrow().is_some())
}

/// Records that a change of this thread's group committed (without an
/// fsync), writing `ops`; nothing outside a group.
pub(super) fn note_commit(ops: Vec<Op>) {
    GROUP.with(|g| {
        if let Some(d) = g.borrow_mut().as_mut() {
            d.commits += 1;
            d.ops.extend(ops);
        }
    });
}

/// Leaves the fsync of a new data file and of the data folder to the
/// group's end; false (the caller fsyncs them now) outside a group.
pub(super) fn defer_sync(file: &Arc<File>) -> bool {
    GROUP.with(|g| match g.borrow_mut().as_mut() {
        Some(d) => {
            d.files.push(file.clone());
            true
        }
        None => false,
    })
}

/// Leaves the deletion of `path` to the group's end; gives it back outside
/// a group.
pub(super) fn defer_garbage(path: PathBuf) -> Option<PathBuf> {
    GROUP.with(|g| match g.borrow_mut().as_mut() {
        Some(d) => {
            d.garbage.push(path);
            None
        }
        None => Some(path),
    })
}

/// Marks this thread as running a group until dropped (also on a panic, so
/// a pooled thread never carries the mark into other work).
struct Running;

impl Running {
    fn enter() -> Self {
        GROUP.with(|g| *g.borrow_mut() = Some(Deferred::default()));
        Running
    }

    fn finish(self) -> Deferred {
        GROUP.with(|g| g.borrow_mut().take()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        GROUP.with(|g| *g.borrow_mut() = None);
    }
}

impl Volume {
    /// Runs `changes` as one group (blocking): their commits skip the fsync,
    /// then one flush makes them all durable and the data files they
    /// replaced are deleted. Returns what `changes` returned and whether the
    /// flush succeeded.
    pub fn run_group<R>(&self, changes: impl FnOnce() -> R) -> (R, FsResult<()>) {
        self.run_group_as(false, changes)
    }

    /// [`Volume::run_group`], whose flush is skipped when `lazy` and the
    /// changes left no data files to flush or delete: they wait for a later
    /// flush (see `volume/unclean.rs`).
    fn run_group_as<R>(&self, lazy: bool, changes: impl FnOnce() -> R) -> (R, FsResult<()>) {
        let running = Running::enter();
        let out = changes();
        let mut deferred = running.finish();
        self.note_ops(std::mem::take(&mut deferred.ops), deferred.commits);
        if lazy && deferred.files.is_empty() && deferred.garbage.is_empty() {
            return (out, Ok(()));
        }
        let flushed = self.make_durable(&deferred);
        match &flushed {
            Ok(()) => deferred
                .garbage
                .into_iter()
                .for_each(|path| self.collect_garbage(Some(path))),
            // Kept: a record that may still name them could become durable later.
            Err(e) => tracing::error!(volume = self.id, error = %e, "a group of changes failed to become durable"),
        }
        (out, flushed)
    }

    fn make_durable(&self, d: &Deferred) -> FsResult<()> {
        for file in &d.files {
            file.sync_all()?;
        }
        if !d.files.is_empty() {
            sync_dir(&self.dir.join("data"))?;
        }
        // This group's changes and any lazy ones before them.
        self.flush()
    }

    /// Queues `job` for the volume's next group, leading groups from a new
    /// task when none does; it is answered once its group is durable.
    pub fn join_group(self: &Arc<Self>, job: Job) {
        self.queue(job, true);
    }

    /// [`Volume::join_group`] for a change that may be answered once it is
    /// committed, before it is durable (see `volume/unclean.rs`).
    pub fn join_group_lazy(self: &Arc<Self>, job: Job) {
        self.queue(job, false);
    }

    fn queue(self: &Arc<Self>, job: Job, eager: bool) {
        let lead = {
            let mut q = self.group.lock().unwrap_or_else(PoisonError::into_inner);
            q.jobs.push(job);
            q.eager |= eager;
            !std::mem::replace(&mut q.leading, true)
        };
        if lead {
            tokio::spawn(lead_groups(self.clone()));
        }
    }
}

/// Runs groups for `vol` until its queue is empty.
async fn lead_groups(vol: Arc<Volume>) {
    let mut leader = Leader {
        vol: vol.clone(),
        done: false,
    };
    loop {
        let guard = vol.lock.write().await;
        let (jobs, eager) = {
            let mut q = vol.group.lock().unwrap_or_else(PoisonError::into_inner);
            if q.jobs.is_empty() {
                q.leading = false;
                leader.done = true;
                return;
            }
            (std::mem::take(&mut q.jobs), std::mem::take(&mut q.eager))
        };
        let v = vol.clone();
        let changes = jobs.len();
        let lazy = !eager && vol.lazy_room(changes);
        let started = std::time::Instant::now();
        let ran = tokio::task::spawn_blocking(move || {
            v.run_group_as(lazy, || jobs.into_iter().map(|job| job(&v)).collect::<Vec<Finish>>())
        })
        .await;
        tracing::debug!(volume = vol.id, changes, lazy, took = ?started.elapsed(), "committed a group");
        match ran {
            Ok((finishes, flushed)) => {
                finishes.into_iter().for_each(|finish| finish(&flushed));
                vol.schedule_settle();
                vol.schedule_flush();
            }
            // The group's writers see their answers dropped and fail.
            Err(e) => tracing::error!(volume = vol.id, error = %e, "a group of changes panicked"),
        }
        drop(guard);
    }
}

/// Hands the lead back if its task ends early (a panic, the runtime shutting
/// down): the queued writers' answers are dropped, so they fail rather than
/// wait for a leader that will not come.
struct Leader {
    vol: Arc<Volume>,
    done: bool,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self.vol.group.lock().unwrap_or_else(PoisonError::into_inner);
            q.jobs.clear();
            q.leading = false;
        }
    }
}
