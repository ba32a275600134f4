//! Whole-file locks the cell's nodes hold for their processes (`flock`,
//! `fcntl` locks). Each node keeps byte ranges among its own processes and
//! holds here the strongest mode it needs; a lock ends with the release or
//! with the connection that took it, so a node that dies frees its locks.

use crate::callbacks::ClientId;
use crate::error::{FsResult, rpc_err};
use cellfs_protocol::message::{LockMode, LockOp, Reply};
use cellfs_protocol::{ErrorCode, Fid};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// At most this many files locked by one connection: a node's lock table
/// must not grow the server without bound.
pub const MAX_LOCKS_PER_CLIENT: usize = 65_536;

/// Who holds one file.
#[derive(Debug, Default)]
struct Holders {
    shared: HashSet<ClientId>,
    exclusive: Option<ClientId>,
}

impl Holders {
    /// The strongest mode a client other than `client` holds.
    fn other(&self, client: ClientId) -> Option<LockMode> {
        if self.exclusive.is_some_and(|c| c != client) {
            Some(LockMode::Exclusive)
        } else if self.shared.iter().any(|c| *c != client) {
            Some(LockMode::Shared)
        } else {
            None
        }
    }

    fn remove(&mut self, client: ClientId) {
        self.shared.remove(&client);
        if self.exclusive == Some(client) {
            self.exclusive = None;
        }
    }

    fn is_empty(&self) -> bool {
        self.shared.is_empty() && self.exclusive.is_none()
    }
}

/// Why a lock was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The connection holds [`MAX_LOCKS_PER_CLIENT`] locks already.
    #[error("this connection holds {MAX_LOCKS_PER_CLIENT} file locks already")]
    TooMany,
}

#[derive(Debug, Default)]
struct Table {
    files: HashMap<Fid, Holders>,
    by_client: HashMap<ClientId, HashSet<Fid>>,
}

/// The server's lock table.
#[derive(Debug, Default)]
pub struct FileLocks {
    table: Mutex<Table>,
}

/// The mode in the way of `want` when others hold `other`.
fn conflict(want: LockMode, other: Option<LockMode>) -> Option<LockMode> {
    match (want, other) {
        (_, Some(LockMode::Exclusive)) => Some(LockMode::Exclusive),
        (LockMode::Exclusive, Some(LockMode::Shared)) => Some(LockMode::Shared),
        _ => None,
    }
}

impl FileLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mode another client holds that keeps `client` from `want`.
    pub fn test(&self, client: ClientId, fid: Fid, want: LockMode) -> Option<LockMode> {
        let t = self.table();
        conflict(want, t.files.get(&fid).and_then(|h| h.other(client)))
    }

    /// Makes `client` hold `fid` in mode `want` (replacing what it held)
    /// unless another client is in the way: then returns that client's mode
    /// and changes nothing.
    pub fn acquire(&self, client: ClientId, fid: Fid, want: LockMode) -> Result<Option<LockMode>, LockError> {
        let mut t = self.table();
        if let Some(c) = conflict(want, t.files.get(&fid).and_then(|h| h.other(client))) {
            return Ok(Some(c));
        }
        let held = t.by_client.get(&client);
        if !held.is_some_and(|h| h.contains(&fid)) && held.is_some_and(|h| h.len() >= MAX_LOCKS_PER_CLIENT) {
            return Err(LockError::TooMany);
        }
        t.by_client.entry(client).or_default().insert(fid);
        let h = t.files.entry(fid).or_default();
        h.remove(client);
        match want {
            LockMode::Shared => {
                h.shared.insert(client);
            }
            LockMode::Exclusive => h.exclusive = Some(client),
        }
        Ok(None)
    }

    /// `client` holds nothing on `fid` any more.
    pub fn release(&self, client: ClientId, fid: Fid) {
        let mut t = self.table();
        if let Some(h) = t.files.get_mut(&fid) {
            h.remove(client);
            if h.is_empty() {
                t.files.remove(&fid);
            }
        }
        if let Some(fids) = t.by_client.get_mut(&client) {
            fids.remove(&fid);
            if fids.is_empty() {
                t.by_client.remove(&client);
            }
        }
    }

    /// Frees every lock of a client whose connection ended.
    pub fn drop_client(&self, client: ClientId) {
        let mut t = self.table();
        let Some(fids) = t.by_client.remove(&client) else {
            return;
        };
        for fid in fids {
            if let Some(h) = t.files.get_mut(&fid) {
                h.remove(client);
                if h.is_empty() {
                    t.files.remove(&fid);
                }
            }
        }
    }

    /// How many files are locked (for tests and stats).
    pub fn len(&self) -> usize {
        self.table().files.len()
    }

    /// True when no file is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl crate::rpc::Context {
    /// `Lock`: acquire, test or release `client`'s whole-file lock on `fid`
    /// (the `k` right was checked before).
    pub(crate) fn lock_file(&self, client: ClientId, fid: Fid, op: LockOp) -> FsResult<Reply> {
        let locks = &self.file_locks;
        let conflict = match op {
            LockOp::Acquire(mode) => locks
                .acquire(client, fid, mode)
                .map_err(|e| rpc_err(ErrorCode::TooLarge, e.to_string()))?,
            LockOp::Test(mode) => locks.test(client, fid, mode),
            LockOp::Release => {
                locks.release(client, fid);
                None
            }
        };
        Ok(Reply::Lock { conflict })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::{Exclusive, Shared};

    const F: Fid = Fid {
        volume: 1,
        vnode: 2,
        unique: 3,
    };

    #[test]
    fn shared_locks_share_and_exclusive_ones_exclude() {
        let l = FileLocks::default();
        assert_eq!(l.acquire(1, F, Shared), Ok(None));
        assert_eq!(l.acquire(2, F, Shared), Ok(None));
        assert_eq!(l.acquire(2, F, Exclusive), Ok(Some(Shared)));
        assert_eq!(l.test(3, F, Exclusive), Some(Shared));
        assert_eq!(l.test(3, F, Shared), None);
        l.release(1, F);
        // The only holder may upgrade, and then excludes everyone.
        assert_eq!(l.acquire(2, F, Exclusive), Ok(None));
        assert_eq!(l.acquire(1, F, Shared), Ok(Some(Exclusive)));
        assert_eq!(l.test(2, F, Exclusive), None);
        // Downgrading lets readers in.
        assert_eq!(l.acquire(2, F, Shared), Ok(None));
        assert_eq!(l.acquire(1, F, Shared), Ok(None));
    }

    #[test]
    fn a_lost_connection_frees_its_locks() {
        let l = FileLocks::default();
        let g = Fid { vnode: 9, ..F };
        assert_eq!(l.acquire(1, F, Exclusive), Ok(None));
        assert_eq!(l.acquire(1, g, Shared), Ok(None));
        assert_eq!(l.acquire(2, g, Shared), Ok(None));
        l.drop_client(1);
        assert_eq!(l.acquire(3, F, Exclusive), Ok(None));
        assert_eq!(l.test(3, g, Exclusive), Some(Shared));
        l.drop_client(2);
        l.drop_client(3);
        assert!(l.is_empty());
    }

    #[test]
    fn one_connection_cannot_lock_without_bound() {
        let l = FileLocks::default();
        for vnode in 0..MAX_LOCKS_PER_CLIENT as u64 {
            assert_eq!(l.acquire(1, Fid { vnode, ..F }, Shared), Ok(None));
        }
        let next = Fid {
            vnode: MAX_LOCKS_PER_CLIENT as u64,
            ..F
        };
        assert_eq!(l.acquire(1, next, Shared), Err(LockError::TooMany));
        // Changing the mode of a held one is still fine.
        assert_eq!(l.acquire(1, F, Exclusive), Ok(None));
        assert_eq!(l.acquire(2, next, Shared), Ok(None));
    }
}
