//! Creates answered before the fileserver answers them.
//!
//! A new file used to cost two round trips: `Create` at open (the kernel
//! needs the inode) and the store at close. The node now keeps a few FIDs
//! the server set aside for it per volume (`ReserveFids`). A create of a
//! name its folder's promised listing does not hold is answered at once
//! under one of them, and `CreateReserved` goes out without being waited
//! for. The server holds back later requests naming the FID until the
//! create is answered (a small store only until it is queued in its
//! commit group, behind the create), so the close pays one round trip.
//! The file reaches the server, and other nodes through its break, about
//! one round trip after the open returned.
//!
//! Name changes in a folder, a fresh listing of one and its attributes
//! wait for the creates in flight there, so they find the file on the
//! server. A create the server refuses (another node made the name
//! meanwhile, or the server restarted and forgot the FID) is made or
//! opened at its name the ordinary way at once; that file stands for it,
//! and the close stores the whole copy into it (`Core::create_again`).

use super::{Core, State};
use crate::arrival::Arrival;
use crate::error::{FsError, FsResult};
use crate::nodes::Promise;
use cellfs_protocol::acl::Rights;
use cellfs_protocol::{Fid, FileKind, Reply, Request, Status, Timestamp, VolumeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// FIDs asked for at a time.
const BATCH: u32 = 64;

/// A pool this small is filled up again.
const LOW: usize = 16;

/// After a refused `ReserveFids` (a read-only volume, a server that does
/// not know it), the volume's creates go the ordinary way this long.
const REFUSED_FOR: Duration = Duration::from_secs(30);

/// FIDs set aside for this node, per volume, with the link epoch they were
/// set aside in (a restarted server forgets them).
#[derive(Debug, Default)]
pub(super) struct FidPool {
    per_volume: HashMap<VolumeId, (u64, Vec<Fid>)>,
    /// Volumes with a `ReserveFids` in flight, or refused until then.
    asking: HashMap<VolumeId, Option<Instant>>,
    /// Creates answered early since start.
    pub answered: u64,
    /// Of those, the ones made again after the server refused them.
    pub made_again: u64,
}

impl FidPool {
    /// A FID of `volume` set aside in `epoch`.
    fn take(&mut self, volume: VolumeId, epoch: u64) -> Option<Fid> {
        let (at, fids) = self.per_volume.get_mut(&volume)?;
        if *at != epoch {
            self.per_volume.remove(&volume);
            return None;
        }
        fids.pop()
    }

    /// Whether `volume`'s pool should be filled now; marks it asked if so.
    fn begin_asking(&mut self, volume: VolumeId, epoch: u64, now: Instant) -> bool {
        let short = match self.per_volume.get(&volume) {
            Some((at, fids)) => *at != epoch || fids.len() < LOW,
            None => true,
        };
        let free = match self.asking.get(&volume) {
            None => true,
            Some(None) => false,
            Some(Some(until)) => now >= *until,
        };
        if short && free {
            self.asking.insert(volume, None);
        }
        short && free
    }

    /// The answer to a `ReserveFids` sent in `epoch`.
    fn answered(&mut self, volume: VolumeId, epoch: u64, got: Option<Vec<Fid>>, now: Instant) {
        match got {
            Some(fids) => {
                self.asking.remove(&volume);
                let (at, pool) = self.per_volume.entry(volume).or_insert((epoch, Vec::new()));
                if *at != epoch {
                    *at = epoch;
                    pool.clear();
                }
                pool.extend(fids.into_iter().filter(|f| f.volume == volume));
            }
            None => {
                self.asking.insert(volume, Some(now + REFUSED_FOR));
            }
        }
    }
}

/// What a create answered early needs to be made again the ordinary way.
struct Early {
    dir: Fid,
    dir_ino: u64,
    name: String,
    /// The status the kernel was given.
    answered: Status,
}

impl Core {
    /// Answers a non-exclusive create of `name` in `parent` without the
    /// server, when the folder's listing is promised, lacks the name and a
    /// FID is set aside; `None` to create the ordinary way.
    pub(super) fn create_early(
        &self,
        parent: u64,
        name: &str,
        (mode, uid, gid): (u32, u32, u32),
    ) -> FsResult<Option<super::Entry>> {
        let epoch = self.link.epoch();
        let Some((dir, _)) = promised_absence(&self.lock(), parent, name, epoch) else {
            return Ok(None);
        };
        if self.link.is_down_for(dir.volume) {
            return Ok(None);
        }
        // Refused here as the server would refuse it.
        self.check_rights(parent, Rights::INSERT)?;
        let mut st = self.lock();
        if st.volume_read_only.get(&dir.volume) == Some(&true) {
            return Ok(None);
        }
        // Asked again: the rights may have taken a round trip.
        let Some((_, promise)) = promised_absence(&st, parent, name, epoch) else {
            return Ok(None);
        };
        let fid = st.fid_pool.take(dir.volume, epoch);
        let refill = st.fid_pool.begin_asking(dir.volume, epoch, Instant::now());
        let Some(fid) = fid else {
            drop(st);
            if refill {
                self.reserve_fids(dir.volume, epoch);
            }
            return Ok(None);
        };
        let now = Timestamp::now();
        let status = Status {
            fid,
            kind: FileKind::File,
            mode: mode & 0o7777,
            nlink: 1,
            uid,
            gid,
            size: 0,
            data_version: 1,
            mtime: now,
            ctime: now,
            atime: now,
            acl_dir: dir.vnode,
        };
        let ino = st.nodes.upsert(status.clone(), promise);
        let entry = self.entry(&st, ino)?;
        name_early(&mut st, parent, ino, name, fid);
        let latch = Arc::new(Arrival::default());
        st.creating.insert(ino, (parent, latch.clone()));
        st.fid_pool.answered += 1;
        drop(st);
        let early = Early {
            dir,
            dir_ino: parent,
            name: name.to_owned(),
            answered: status,
        };
        self.send_create(ino, fid, early, (mode, uid, gid), latch);
        if refill {
            self.reserve_fids(dir.volume, epoch);
        }
        Ok(Some(entry))
    }

    /// Sends the create of `ino` under `fid` on a blocking thread, for the
    /// caller of the request being served.
    fn send_create(&self, ino: u64, fid: Fid, early: Early, (mode, uid, gid): (u32, u32, u32), latch: Arc<Arrival>) {
        // Ends the latch however the create ends (a panic included), so
        // nothing waiting for it hangs.
        let ends = Ends(latch);
        let Some(core) = self.shared() else { return };
        let caller = crate::caller::current();
        self.rt.spawn_blocking(move || {
            let _ends = ends;
            let _as = crate::caller::enter(caller);
            let req = Request::CreateReserved {
                dir: early.dir,
                name: early.name.clone(),
                fid,
                mode,
                uid,
                gid,
            };
            let sent = core.sent();
            let answer = core.wait(core.link.call(&req));
            let promise = core.promise_from(sent);
            core.create_answered(ino, &early, answer, promise);
            core.lock().creating.remove(&ino);
        });
    }

    /// Records the server's answer to an early create.
    fn create_answered(
        &self,
        ino: u64,
        early: &Early,
        answer: Result<Reply, crate::link::LinkError>,
        promise: Option<Promise>,
    ) {
        let mut st = self.lock();
        match answer {
            Ok(Reply::Created { dir, status }) => {
                // A later request's answer (a store, a `utimensat`) may
                // have been applied first: it is newer.
                if st.nodes.get(ino).is_some_and(|n| n.status == early.answered) {
                    st.nodes.upsert(status.clone(), promise);
                }
                let fid = status.fid;
                st.nodes.apply_dir_change(dir, promise, |l| {
                    l.entries.insert(early.name.clone(), fid);
                });
                st.dir_items.remove(&early.dir_ino);
            }
            other => {
                drop(st);
                let (error, reachable) = match other {
                    Err(e) => (e.to_string(), !e.is_unreachable()),
                    Ok(_) => ("an unexpected reply".to_owned(), true),
                };
                // The file the name leads to on the server now stands for
                // this one: renames and removes here act on it, and the
                // close stores into it. Found before the latch ends, so
                // those wait for it. Unreachable: the close sees to it.
                let stands_for = reachable.then(|| self.make_at_name(early)).flatten();
                tracing::info!(ino, name = %early.name, %error, made = ?stands_for, "a create answered early was refused; the close stores into the file made at its name");
                self.lock().failed_creates.insert(ino, stands_for);
            }
        }
    }

    /// Makes (or opens, when another node made it) the file `early` names
    /// the ordinary way; `None` when that fails too.
    fn make_at_name(&self, early: &Early) -> Option<Fid> {
        self.make_at(early.dir, &early.name, &early.answered)
            .map_err(|e| {
                tracing::info!(name = %early.name, error = %e, "the file a refused early create stands for cannot be made yet");
            })
            .ok()
    }

    /// Makes (or opens) file `name` in folder `dir` the ordinary way, with
    /// the mode and owner of `like`; its FID.
    fn make_at(&self, dir: Fid, name: &str, like: &Status) -> FsResult<Fid> {
        let req = Request::Create {
            dir,
            name: name.to_owned(),
            mode: like.mode,
            uid: like.uid,
            gid: like.gid,
            exclusive: false,
        };
        let (reply, promise) = self.change(req)?;
        Ok(self.created(reply, promise, name)?.status.fid)
    }

    /// Fills `volume`'s pool of set-aside FIDs on a blocking thread.
    fn reserve_fids(&self, volume: VolumeId, epoch: u64) {
        let Some(core) = self.shared() else { return };
        self.rt.spawn_blocking(move || {
            let got = match core.call(Request::ReserveFids { volume, count: BATCH }) {
                Ok((Reply::Fids(fids), _)) => Some(fids),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(volume, error = %e, "no FIDs set aside; creates in this volume go the ordinary way");
                    None
                }
            };
            core.lock().fid_pool.answered(volume, epoch, got, Instant::now());
        });
    }

    /// Waits until every create answered early has its server's answer.
    pub(super) fn wait_creates(&self) {
        self.wait_creates_where(|_| true);
    }

    /// Waits until the creates answered early in folder `dir` have their
    /// server's answer (which brings the folder's new status).
    pub(super) fn wait_creates_in(&self, dir: u64) {
        self.wait_creates_where(|d| d == dir);
    }

    fn wait_creates_where(&self, in_dir: impl Fn(u64) -> bool) {
        let latches: Vec<Arc<Arrival>> = {
            let st = self.lock();
            if st.creating.is_empty() {
                return;
            }
            st.creating
                .values()
                .filter(|(d, _)| in_dir(*d))
                .map(|(_, l)| l.clone())
                .collect()
        };
        for l in latches {
            let _ = l.wait_for(u64::MAX);
        }
    }

    /// Whether `ino` was answered early and the server refused its create
    /// (waiting for that answer first).
    pub(super) fn create_failed(&self, ino: u64) -> bool {
        let latch = self.lock().creating.get(&ino).map(|(_, l)| l.clone());
        if let Some(l) = latch {
            let _ = l.wait_for(u64::MAX);
        }
        self.lock().failed_creates.contains_key(&ino)
    }

    /// Makes `ino` again the ordinary way (its early create was refused)
    /// and stores its whole copy into the file made, which takes its place
    /// here: the kernel is told to look the name up again.
    pub(super) fn create_again(&self, ino: u64) -> FsResult<()> {
        let made = self.make_and_store_again(ino);
        if let Err(e) = &made
            && matches!(e.errno, libc::EISDIR | libc::EEXIST | libc::ENOTDIR)
        {
            return Err(self.not_a_file_now(ino, e));
        }
        let mut st = self.lock();
        match &made {
            Err(e) if e.errno == libc::ESTALE => {
                // The file it stood for was removed (here or elsewhere).
                let fid = st.node(ino)?.fid;
                end_refused(&mut st, ino, fid);
            }
            Err(_) => {
                if let Some(n) = st.nodes.get_mut(ino) {
                    // The next flush or close tries again.
                    n.dirty = Some((0, n.status.size));
                    n.unsynced = true;
                }
            }
            Ok(()) => {}
        }
        made
    }

    /// The name `ino` was created at leads to something other than a file
    /// now (another node made a folder or a link there before the server
    /// got this create): its bytes go to the cache's `lost+found/`, and
    /// the file ends here as a removed one does.
    fn not_a_file_now(&self, ino: u64, why: &FsError) -> FsError {
        let (fid, copy) = {
            let st = self.lock();
            match st.node(ino) {
                Ok(n) => (n.fid, st.cache.path(n.fid)),
                Err(e) => return e,
            }
        };
        let saved = self.unstored.save_refused(&copy, fid);
        end_refused(&mut self.lock(), ino, fid);
        match saved {
            Ok(path) => {
                tracing::error!(%fid, path = %path.display(), error = %why, "a file created here was refused by the fileserver (its name is now a folder or a link); its bytes are in lost+found");
                FsError::new(libc::EIO, format!("{why}; the file's bytes are in {}", path.display()))
            }
            Err(e) => {
                tracing::error!(%fid, error = %why, lost = %e, "a file created here was refused by the fileserver and its bytes cannot be moved to lost+found");
                FsError::new(libc::EIO, format!("{why}; its bytes could not be saved: {e}"))
            }
        }
    }

    fn make_and_store_again(&self, ino: u64) -> FsResult<()> {
        let (fid, dir, name, status, path, stands_for) = {
            let st = self.lock();
            let n = st.node(ino)?;
            let (dir_ino, name) = n
                .kernel_name()
                .ok_or_else(|| FsError::new(libc::EIO, "a refused create lost its name"))?;
            let dir = st.node(dir_ino)?.fid;
            let stands_for = st.failed_creates.get(&ino).copied().flatten();
            (
                n.fid,
                dir,
                name.to_owned(),
                n.status.clone(),
                st.cache.path(n.fid),
                stands_for,
            )
        };
        let into = match stands_for {
            Some(fid) => fid,
            None => self.make_at(dir, &name, &status)?,
        };
        let len = std::fs::metadata(&path)
            .map_err(|e| FsError::local("stat copy", e))?
            .len();
        let store = Request::StoreData {
            fid: into,
            offset: 0,
            len,
            truncate: Some(len),
            mtime: Some(status.mtime),
            expect: None,
        };
        let stored = self.wait(self.link.store_from(&store, &path, 0))?;
        tracing::info!(was = %fid, now = %stored.fid, %name, "a file whose early create was refused is made again and stored");
        {
            let mut st = self.lock();
            st.failed_creates.remove(&ino);
            st.fid_pool.made_again += 1;
        }
        self.stored_elsewhere(fid, stored);
        Ok(())
    }
}

/// Ends a create's latch when dropped.
struct Ends(Arc<Arrival>);

impl Drop for Ends {
    fn drop(&mut self) {
        self.0.end(Ok(()));
    }
}

/// Folder `parent`'s FID and promise when its promised listing lacks `name`.
fn promised_absence(st: &State, parent: u64, name: &str, epoch: u64) -> Option<(Fid, Option<Promise>)> {
    let n = st.nodes.get(parent)?;
    let lacks = !n.listing.as_ref()?.entries.contains_key(name);
    (n.status.kind == FileKind::Dir && lacks && n.valid_for(epoch, Instant::now()).is_some())
        .then_some((n.fid, n.promise))
}

/// Puts a file answered early in its folder's listing here (its version
/// unchanged: the server's answer brings the folder's next one).
fn name_early(st: &mut State, parent: u64, ino: u64, name: &str, fid: Fid) {
    if let Some(l) = st.nodes.get_mut(parent).and_then(|n| n.listing.as_mut()) {
        Arc::make_mut(l).entries.insert(name.to_owned(), fid);
    }
    st.dir_items.remove(&parent);
    st.parents.insert(ino, parent);
}

/// A file answered early (`ino`, `fid`) whose create was refused and
/// cannot be made again ends here: its writes end with it, as an unlinked
/// file's do.
fn end_refused(st: &mut State, ino: u64, fid: Fid) {
    st.failed_creates.remove(&ino);
    super::forget_deleted(st, fid);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fids(volume: VolumeId, n: u64) -> Vec<Fid> {
        (1..=n)
            .map(|vnode| Fid {
                volume,
                vnode,
                unique: vnode,
            })
            .collect()
    }

    #[test]
    fn a_pool_serves_its_epoch_and_asks_once_at_a_time() {
        let mut p = FidPool::default();
        let now = Instant::now();
        assert_eq!(p.take(1, 5), None);
        assert!(p.begin_asking(1, 5, now), "an empty pool asks");
        assert!(!p.begin_asking(1, 5, now), "one ask at a time");
        p.answered(1, 5, Some(fids(1, 20)), now);
        assert!(p.take(1, 5).is_some());
        assert!(!p.begin_asking(1, 5, now), "a full pool does not ask");
        assert_eq!(p.take(1, 6), None, "a new epoch drops the old FIDs");
        assert!(p.begin_asking(1, 6, now));
        p.answered(1, 6, None, now);
        assert!(!p.begin_asking(1, 6, now), "a refused volume waits");
        assert!(p.begin_asking(1, 6, now + REFUSED_FOR), "and asks again later");
        p.answered(1, 6, Some(fids(2, 3)), now);
        assert_eq!(p.take(1, 6), None, "FIDs of another volume are not taken");
    }
}
