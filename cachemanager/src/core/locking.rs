//! File locks (`fcntl`, `flock`) for the node's processes. Byte ranges are
//! kept here among them ([`RangeLocks`]); the whole-file mode they need is
//! held on the fileserver, which checks the `k` right and keeps other nodes
//! out. A process waiting for a lock waits on a thread of its own, never on
//! a FUSE thread, and stops waiting when it has a signal to take.

use super::Core;
use crate::error::{FsError, FsResult};
use crate::link::LinkError;
use crate::range_locks::{Held, Kind, RangeLocks};
use crate::readers;
use cellfs_protocol::acl::{Caller, Rights};
use cellfs_protocol::message::{LockMode, LockOp};
use cellfs_protocol::{Fid, Reply, Request};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

/// How long a waiter sleeps before it looks again at its process's signals.
const WAIT_SLICE: Duration = Duration::from_millis(25);
/// First and longest pause between asks while another node holds the lock
/// (the server does not call back when a lock is freed; AFS polls too).
const SERVER_POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(200));

/// A lock request from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct LockRequest {
    /// The file.
    pub ino: u64,
    /// The open file the request came through.
    pub fh: u64,
    /// The kernel's lock owner (a process, or an open file for `flock`).
    pub owner: u64,
    /// The locking process (reported by `F_GETLK`).
    pub pid: u32,
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
    /// The lock wanted; `None` unlocks.
    pub kind: Option<Kind>,
    /// The thread that asked, watched for signals while it waits (0: none).
    pub waiter: u32,
}

impl LockRequest {
    fn held(&self) -> Held {
        Held {
            owner: self.owner,
            pid: self.pid,
            fh: self.fh,
            start: self.start,
            end: self.end,
            kind: self.kind.unwrap_or(Kind::Read),
        }
    }
}

/// A lock in the way, as `F_GETLK` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocker {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
    /// Its kind.
    pub kind: Kind,
    /// Its process on this node; 0 for a lock another node holds.
    pub pid: u32,
}

/// One file's locks on this node.
#[derive(Debug)]
struct FileState {
    fid: Fid,
    ranges: RangeLocks,
    /// The mode the server holds for us, and the connection generation it
    /// was granted on (a new connection holds nothing until reasserted).
    held: Option<(LockMode, u64)>,
    /// Who last took a lock: changes on the server are made for them (the
    /// server checks their `k` right).
    caller: Option<Arc<Caller>>,
}

impl FileState {
    fn new(fid: Fid) -> Self {
        FileState {
            fid,
            ranges: RangeLocks::default(),
            held: None,
            caller: None,
        }
    }

    fn held_mode(&self, epoch: u64) -> Option<LockMode> {
        self.held.filter(|(_, e)| *e == epoch).map(|(m, _)| m)
    }
}

/// The node's lock table.
#[derive(Debug, Default)]
pub(super) struct NodeLocks {
    files: HashMap<u64, FileState>,
    /// Files whose server lock is being changed: everyone else waits.
    busy: HashSet<u64>,
}

fn would_block() -> FsError {
    FsError::new(libc::EAGAIN, "the file is locked")
}

fn interrupted() -> FsError {
    FsError::new(libc::EINTR, "interrupted while waiting for a lock")
}

impl Core {
    fn node_locks(&self) -> MutexGuard<'_, NodeLocks> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fid_of(&self, ino: u64) -> FsResult<Fid> {
        Ok(self.lock().node(ino)?.fid)
    }

    /// Asks the server of `fid` to change this node's whole-file lock.
    fn server_lock(&self, fid: Fid, op: LockOp) -> Result<Option<LockMode>, LinkError> {
        if self.link.is_down_for(fid.volume) {
            return Err(LinkError::Down);
        }
        match self.wait(self.link.call(&Request::Lock { fid, op }))? {
            Reply::Lock { conflict } => Ok(conflict),
            _ => Err(LinkError::Call(cellfs_protocol::transport::CallError::Rpc(
                cellfs_protocol::RpcError::new(cellfs_protocol::ErrorCode::BadRequest, "unexpected reply to lock"),
            ))),
        }
    }

    /// `F_GETLK`: the lock that would keep `r` from being taken, if any.
    pub fn getlk(&self, r: &LockRequest) -> FsResult<Option<Blocker>> {
        let kind = r
            .kind
            .ok_or_else(|| FsError::new(libc::EINVAL, "F_GETLK of an unlock"))?;
        self.check_rights(r.ino, Rights::LOCK)?;
        let fid = self.fid_of(r.ino)?;
        {
            let t = self.node_locks();
            if let Some(f) = t.files.get(&r.ino) {
                if let Some(h) = f.ranges.conflict(r.owner, r.start, r.end, kind) {
                    return Ok(Some(Blocker {
                        start: h.start,
                        end: h.end,
                        kind: h.kind,
                        pid: h.pid,
                    }));
                }
                if f.held_mode(self.link.epoch()) >= Some(kind.mode()) {
                    return Ok(None);
                }
            }
        }
        match self.server_lock(fid, LockOp::Test(kind.mode())) {
            Ok(None) => Ok(None),
            Ok(Some(mode)) => Ok(Some(Blocker {
                start: 0,
                end: i64::MAX as u64,
                kind: if mode == LockMode::Exclusive {
                    Kind::Write
                } else {
                    Kind::Read
                },
                pid: 0,
            })),
            Err(e) if e.is_unreachable() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `F_SETLK`, `F_SETLKW` and `flock`: takes, changes or drops a lock,
    /// then calls `done` with the outcome. A lock in the way fails with
    /// `EAGAIN` unless `wait`; then the wait happens on a thread of its own
    /// and ends with `EINTR` when the process has a signal to take.
    pub fn setlk(self: &Arc<Self>, r: LockRequest, wait: bool, done: impl FnOnce(FsResult<()>) + Send + 'static) {
        match self.try_setlk(&r, false) {
            Err(e) if wait && e.errno == libc::EAGAIN => {
                let core = self.clone();
                let caller = crate::caller::current();
                self.rt.spawn_blocking(move || {
                    let _as = crate::caller::enter(caller);
                    done(core.try_setlk(&r, true));
                });
            }
            result => done(result),
        }
    }

    fn try_setlk(&self, r: &LockRequest, wait: bool) -> FsResult<()> {
        let Some(kind) = r.kind else {
            self.unlock(r.ino, |f| {
                f.set(r.held(), None);
            });
            return Ok(());
        };
        self.check_rights(r.ino, Rights::LOCK)?;
        let fid = self.fid_of(r.ino)?;
        let mut local_only = false;
        let mut pause = SERVER_POLL.0;
        let mut t = self.node_locks();
        loop {
            if t.busy.contains(&r.ino) {
                t = self.wait_turn(t, r.waiter)?;
                continue;
            }
            let epoch = self.link.epoch();
            let empty = RangeLocks::default();
            let (ranges, have) = match t.files.get(&r.ino) {
                Some(f) => (&f.ranges, f.held_mode(epoch)),
                None => (&empty, None),
            };
            if ranges.conflict(r.owner, r.start, r.end, kind).is_some() {
                if !wait {
                    return Err(would_block());
                }
                t = self.wait_turn(t, r.waiter)?;
                continue;
            }
            let need = ranges.mode_after(r.held(), Some(kind));
            if need > have && !local_only {
                let Some(mode) = need else { break };
                t.busy.insert(r.ino);
                drop(t);
                let answer = self.server_lock(fid, LockOp::Acquire(mode));
                t = self.node_locks();
                t.busy.remove(&r.ino);
                self.locks_changed.notify_all();
                match answer {
                    Ok(None) => {
                        let f = t.files.entry(r.ino).or_insert_with(|| FileState::new(fid));
                        f.held = Some((mode, epoch));
                        f.caller = crate::caller::current();
                    }
                    Ok(Some(_)) if wait => {
                        drop(t);
                        self.pause(pause, r.waiter)?;
                        pause = (pause * 2).min(SERVER_POLL.1);
                        t = self.node_locks();
                    }
                    Ok(Some(_)) => return Err(would_block()),
                    Err(e) if e.is_unreachable() => {
                        tracing::warn!(%fid, "the fileserver is unreachable: this lock holds on this node only");
                        local_only = true;
                    }
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            break;
        }
        let f = t.files.entry(r.ino).or_insert_with(|| FileState::new(fid));
        f.ranges.set(r.held(), Some(kind));
        // A write lock turned into a read lock may let other nodes in.
        self.settle(t, r.ino);
        Ok(())
    }

    /// Waits for a change of the lock table; `EINTR` when `waiter` has a
    /// signal to take.
    fn wait_turn<'a>(&self, t: MutexGuard<'a, NodeLocks>, waiter: u32) -> FsResult<MutexGuard<'a, NodeLocks>> {
        readers::before_wait();
        let (t, _) = self
            .locks_changed
            .wait_timeout(t, WAIT_SLICE)
            .unwrap_or_else(|p| p.into_inner());
        if signalled(waiter) {
            return Err(interrupted());
        }
        Ok(t)
    }

    /// Sleeps `how_long`, or less when `waiter` gets a signal (`EINTR`).
    fn pause(&self, how_long: Duration, waiter: u32) -> FsResult<()> {
        readers::before_wait();
        let until = std::time::Instant::now() + how_long;
        loop {
            if signalled(waiter) {
                return Err(interrupted());
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(WAIT_SLICE));
        }
    }

    /// Changes the locks of `ino` with `change` (an unlock, a close) and
    /// lets go on the server of what they no longer need.
    fn unlock(&self, ino: u64, change: impl FnOnce(&mut RangeLocks)) {
        let mut t = self.node_locks();
        while t.files.contains_key(&ino) && t.busy.contains(&ino) {
            readers::before_wait();
            t = self
                .locks_changed
                .wait_timeout(t, WAIT_SLICE)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let Some(f) = t.files.get_mut(&ino) else {
            return;
        };
        change(&mut f.ranges);
        self.settle(t, ino);
    }

    /// The kernel closed a file for lock owner `owner` (`flush`): POSIX
    /// drops every lock the process holds on it.
    pub fn unlock_owner(&self, ino: u64, owner: u64) {
        self.unlock(ino, |f| {
            f.retain(|h| h.owner != owner);
        });
    }

    /// The last reference to open file `fh` is gone (`release`): its
    /// `flock` locks, and every lock taken through it, end.
    pub fn unlock_handle(&self, ino: u64, fh: u64, flock_owner: Option<u64>) {
        self.unlock(ino, |f| {
            f.retain(|h| h.fh != fh && Some(h.owner) != flock_owner);
        });
    }

    /// Brings the server lock of `ino` down to what its ranges need, drops
    /// an unused entry and wakes the waiters.
    fn settle<'a>(&'a self, mut t: MutexGuard<'a, NodeLocks>, ino: u64) {
        let epoch = self.link.epoch();
        if let Some(f) = t.files.get(&ino) {
            let need = f.ranges.mode();
            if need < f.held_mode(epoch) {
                let (fid, caller) = (f.fid, f.caller.clone());
                let op = match need {
                    Some(mode) => LockOp::Acquire(mode),
                    None => LockOp::Release,
                };
                t.busy.insert(ino);
                drop(t);
                let answer = {
                    let _as = crate::caller::enter(caller);
                    self.server_lock(fid, op)
                };
                if let Err(e) = answer {
                    // A lost connection frees its locks on the server.
                    tracing::debug!(%fid, error = %e, "could not lower the server lock");
                }
                t = self.node_locks();
                t.busy.remove(&ino);
                if let Some(f) = t.files.get_mut(&ino) {
                    f.held = need.map(|m| (m, epoch));
                }
            }
        }
        if t.files
            .get(&ino)
            .is_some_and(|f| f.ranges.is_empty() && f.held.is_none())
        {
            t.files.remove(&ino);
        }
        drop(t);
        self.locks_changed.notify_all();
    }

    /// After a new connection the server holds none of this node's locks:
    /// takes them again. One another node took meanwhile stays local and is
    /// logged (as AFS, a lock does not survive a partition intact).
    pub(super) fn reassert_locks(&self) {
        let epoch = self.link.epoch();
        let wanted: Vec<(u64, Fid, LockMode, Option<Arc<Caller>>)> = {
            let t = self.node_locks();
            t.files
                .iter()
                .filter_map(|(ino, f)| Some((*ino, f.fid, f.ranges.mode()?, f.caller.clone())))
                .collect()
        };
        for (ino, fid, mode, caller) in wanted {
            let answer = {
                let _as = crate::caller::enter(caller);
                self.server_lock(fid, LockOp::Acquire(mode))
            };
            match answer {
                Ok(None) => {
                    if let Some(f) = self.node_locks().files.get_mut(&ino) {
                        f.held = Some((mode, epoch));
                    }
                }
                Ok(Some(other)) => {
                    tracing::warn!(%fid, ?other, "another node took a lock this node held before reconnecting")
                }
                Err(e) => tracing::warn!(%fid, error = %e, "could not take a lock again after reconnecting"),
            }
        }
    }
}

/// True when thread `tid` has a signal it will take (or is gone), so a
/// lock wait for it must end. 0 is never signalled.
fn signalled(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return true;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = mask("SigPnd:") | mask("ShdPnd:");
    let kill = 1u64 << (libc::SIGKILL - 1);
    pending & kill != 0 || pending & !(mask("SigBlk:") | mask("SigIgn:")) != 0
}

#[cfg(test)]
mod tests {
    use super::signalled;

    #[test]
    fn a_thread_without_pending_signals_is_not_signalled() {
        assert!(!signalled(std::process::id()));
        assert!(!signalled(0));
        assert!(signalled(u32::MAX - 1), "a thread that is gone ends its wait");
    }
}
