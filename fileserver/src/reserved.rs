//! FIDs set aside for nodes that answer a create before the server does
//! (`ReserveFids`, `CreateReserved`).
//!
//! A node takes a FID from its set-aside, answers the kernel's create at
//! once and sends `CreateReserved` without waiting; the close's store
//! follows on another stream and may arrive first. So a request naming a
//! FID still set aside (or being created) waits here until its create is
//! answered, for at most [`SETTLE_WAIT`]. A small store waits only until
//! the create's change is queued in its volume's commit group: changes run
//! in the order they were queued, so the store commits after the create
//! (in the same group when it joins in time), and its bytes are received
//! and written meanwhile. It is authorized by the folder the file is being
//! made in. The set-aside lives in memory:
//! after a restart the FIDs are refused (`Stale`) and the node makes the
//! file the ordinary way. The volume's counters were moved past them
//! durably, so they are never handed out again.

use cellfs_protocol::{Fid, Request, VolumeId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Most FIDs set aside in one volume at once; past it `ReserveFids` is
/// refused and nodes create the ordinary way.
pub const MAX_PER_VOLUME: usize = 65_536;

/// Most FIDs set aside in all volumes at once (about 16 MiB of memory):
/// a peer asking in every volume is bounded too.
pub const MAX_TOTAL: usize = 1 << 18;

/// Longest a request naming a FID waits for the FID's create.
pub const SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The FIDs of existing files `req` names (those a create the node sent
/// first may not have made yet).
pub fn named(req: &Request) -> &[Fid] {
    match req {
        Request::FetchStatus { fid }
        | Request::FetchData { fid }
        | Request::StoreData { fid, .. }
        | Request::SetAttr { fid, .. }
        | Request::Sync { fid }
        | Request::Lock { fid, .. }
        | Request::GetRights { fid }
        | Request::Link { fid, .. } => std::slice::from_ref(fid),
        Request::BulkStatus { fids } | Request::FetchFiles { fids, .. } => fids,
        _ => &[],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Set aside, not asked for yet.
    Free,
    /// Its `CreateReserved` is being committed: in folder `dir`, for
    /// owner `uid`; `queued` once its change is in the volume's queue.
    Creating { dir: Fid, uid: u32, queued: bool },
}

/// How far a FID's create must have gone for a request naming it to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Its change is queued (a store, whose change queues behind it).
    Queued,
    /// It is answered (every other request, which reads the file's record).
    Answered,
}

/// How far `req` waits for the creates of the FIDs it names: a store
/// that reads the file's record only in its commit group
/// (`crate::rpc::stored_in_group`) until the create is queued; every
/// other request until it is answered.
pub fn until(req: &Request) -> Until {
    match req {
        Request::StoreData { len, .. } if crate::rpc::stored_in_group(*len) => Until::Queued,
        _ => Until::Answered,
    }
}

/// Per volume: vnode → (uniquifier, state).
type Held = HashMap<VolumeId, HashMap<u64, (u64, Slot)>>;

/// The FIDs set aside, per volume.
#[derive(Debug, Default)]
pub struct Reserved {
    inner: Mutex<Held>,
    /// How many FIDs are set aside or being created, in all volumes
    /// (kept with the map, under its lock; read without it to skip the
    /// lock when none are).
    held: AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Reserved {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets `fids` (all of one volume) aside; false, setting none aside,
    /// when the volume would then hold more than [`MAX_PER_VOLUME`].
    pub fn add(&self, volume: VolumeId, fids: &[Fid]) -> bool {
        let mut all = self.lock();
        if !self.room(&all, volume, fids.len()) {
            return false;
        }
        let held = all.entry(volume).or_default();
        let before = held.len();
        for f in fids {
            held.insert(f.vnode, (f.unique, Slot::Free));
        }
        self.held.fetch_add(held.len() - before, Ordering::AcqRel);
        true
    }

    /// Whether there is room for `count` more in `volume`.
    pub fn has_room(&self, volume: VolumeId, count: usize) -> bool {
        self.room(&self.lock(), volume, count)
    }

    /// Whether `all` has room for `count` more in `volume`.
    fn room(&self, all: &Held, volume: VolumeId, count: usize) -> bool {
        all.get(&volume).map_or(0, HashMap::len) + count <= MAX_PER_VOLUME
            && self.held.load(Ordering::Acquire) + count <= MAX_TOTAL
    }

    /// Marks `fid` as being created in folder `dir` for owner `uid`;
    /// false when it is not set aside (or already being created).
    pub fn begin(&self, fid: Fid, dir: Fid, uid: u32) -> bool {
        let mut all = self.lock();
        match all.get_mut(&fid.volume).and_then(|m| m.get_mut(&fid.vnode)) {
            Some((unique, slot)) if *unique == fid.unique && *slot == Slot::Free => {
                *slot = Slot::Creating {
                    dir,
                    uid,
                    queued: false,
                };
                true
            }
            _ => false,
        }
    }

    /// `fid`'s create is in its volume's queue: its store may queue too.
    pub fn queued(&self, fid: Fid) {
        let mut all = self.lock();
        if let Some((_, Slot::Creating { queued, .. })) = all.get_mut(&fid.volume).and_then(|m| m.get_mut(&fid.vnode)) {
            *queued = true;
        }
        drop(all);
        self.changed.notify_waiters();
    }

    /// The folder and owner of `fid` while it is being created.
    pub fn creating(&self, fid: Fid) -> Option<(Fid, u32)> {
        match self.lock().get(&fid.volume)?.get(&fid.vnode)? {
            (u, Slot::Creating { dir, uid, .. }) if *u == fid.unique => Some((*dir, *uid)),
            _ => None,
        }
    }

    /// `fid`'s create was answered (made or refused): it is set aside no
    /// more, and requests waiting on it go on.
    pub fn end(&self, fid: Fid) {
        let mut all = self.lock();
        if let Some(m) = all.get_mut(&fid.volume) {
            if m.remove(&fid.vnode).is_some() {
                self.held.fetch_sub(1, Ordering::AcqRel);
            }
            if m.is_empty() {
                all.remove(&fid.volume);
            }
        }
        drop(all);
        self.changed.notify_waiters();
    }

    fn holds_any(&self, fids: &[Fid], until: Until) -> bool {
        let all = self.lock();
        fids.iter().any(|f| {
            all.get(&f.volume)
                .and_then(|m| m.get(&f.vnode))
                .is_some_and(|(u, slot)| {
                    *u == f.unique && !(until == Until::Queued && matches!(slot, Slot::Creating { queued: true, .. }))
                })
        })
    }

    /// Whether any FID is set aside at all (cheap: no lock).
    pub fn any(&self) -> bool {
        self.held.load(Ordering::Acquire) > 0
    }

    /// Waits until the creates of `fids` went as far as `until` (or were
    /// never asked for), or [`SETTLE_WAIT`] passed.
    pub async fn settled(&self, fids: &[Fid], until: Until) {
        let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.holds_any(fids, until) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(vnode: u64) -> Fid {
        Fid {
            volume: 7,
            vnode,
            unique: vnode + 100,
        }
    }

    #[test]
    fn a_fid_is_created_once_and_only_with_its_uniquifier() {
        let r = Reserved::default();
        assert!(r.add(7, &[fid(1), fid(2)]));
        assert!(r.any());
        let forged = Fid { unique: 5, ..fid(1) };
        let dir = fid(50);
        assert!(!r.begin(forged, dir, 33), "a wrong uniquifier is refused");
        assert_eq!(r.creating(fid(1)), None);
        assert!(r.begin(fid(1), dir, 33));
        assert_eq!(r.creating(fid(1)), Some((dir, 33)));
        assert!(!r.begin(fid(1), dir, 33), "a second create of one FID is refused");
        r.end(fid(1));
        assert!(!r.begin(fid(1), dir, 33), "an ended FID is set aside no more");
        assert_eq!(r.creating(fid(1)), None);
        assert!(!r.begin(fid(9), dir, 33), "a FID never set aside is refused");
        r.end(fid(2));
        assert!(!r.any());
    }

    #[test]
    fn a_volume_holds_a_bounded_number() {
        let r = Reserved::default();
        let many: Vec<Fid> = (0..MAX_PER_VOLUME as u64).map(fid).collect();
        assert!(r.add(7, &many));
        assert!(!r.has_room(7, 1));
        assert!(!r.add(7, &[fid(u64::MAX - 200)]));
        assert!(r.has_room(8, 1), "other volumes are not counted");
        for v in 8..(8 + (MAX_TOTAL / MAX_PER_VOLUME) as u64 - 1) {
            assert!(r.add(v, &many), "volume {v}");
        }
        assert!(!r.has_room(100, 1), "nor past the total");
        assert!(!r.add(100, &[fid(1)]));
    }

    #[tokio::test]
    async fn a_request_naming_a_fid_waits_for_its_create() {
        let r = std::sync::Arc::new(Reserved::default());
        assert!(r.add(7, &[fid(3)]));
        let wait = |until| {
            let r = r.clone();
            tokio::spawn(async move { r.settled(&[fid(3)], until).await })
        };
        let (store, status) = (wait(Until::Queued), wait(Until::Answered));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!store.is_finished(), "a store waits while the FID is set aside");
        assert!(r.begin(fid(3), fid(50), 33));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!store.is_finished(), "and until the create is queued");
        r.queued(fid(3));
        tokio::time::timeout(Duration::from_secs(2), store)
            .await
            .expect("a store goes on once the create is queued")
            .expect("no panic");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!status.is_finished(), "other requests wait for the answer");
        r.end(fid(3));
        tokio::time::timeout(Duration::from_secs(2), status)
            .await
            .expect("released when the create is answered")
            .expect("no panic");
        // A FID not set aside does not wait.
        tokio::time::timeout(Duration::from_millis(100), r.settled(&[fid(4)], Until::Answered))
            .await
            .expect("no wait");
    }
}
