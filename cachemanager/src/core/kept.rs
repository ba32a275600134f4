//! Writes the fileserver did not get because it could not be reached:
//! kept when their store fails (`crate::unstored`), stored when it answers
//! again, on condition that the file is still at the version they were
//! written on.

use super::{Core, forget_deleted};
use crate::error::FsError;
use crate::link::LinkError;
use crate::unstored::{Kept, KeptFile, Place};
use cellfs_protocol::{ErrorCode, Fid, Reply, Request, Status, Timestamp};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A write whose store failed.
pub(super) struct Written {
    /// The file.
    pub fid: Fid,
    /// The data version its copy was at.
    pub base: u64,
    /// Its modification time.
    pub mtime: Timestamp,
    /// Created here and not yet durable on the server.
    pub created: bool,
}

/// Room a kept write's header takes besides its bytes (the caller and the
/// place it was made at), with slack for the file system's blocks.
const KEEP_HEADER_ROOM: u64 = 64 << 10;

impl Core {
    /// The store of `ino`'s write found the server unreachable: its copy
    /// is kept whole, to be stored when the server answers, the copy
    /// leaves the cache, and the close is answered `EIO`, since the bytes
    /// are not on the server.
    pub(super) fn keep_unstored(&self, ino: u64, w: Written, e: LinkError) -> FsError {
        let (copy, place) = {
            let st = self.lock();
            let place = st.nodes.get(ino).filter(|_| w.created).and_then(|n| {
                let (dir, name) = n.kernel_name()?;
                Some(Place {
                    dir: st.nodes.get(dir)?.fid,
                    name: name.to_string(),
                    mode: n.status.mode,
                    uid: n.status.uid,
                    gid: n.status.gid,
                })
            });
            (st.cache.path(w.fid), place)
        };
        let kept = Kept {
            fid: w.fid,
            base: w.base,
            mtime: w.mtime,
            caller: crate::caller::current().map(|c| (*c).clone()),
            place,
        };
        let mut saved = self.unstored.keep(&kept, &copy);
        if let Err(e) = &saved
            && matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        {
            // The cache disk filled before the cache reached its limit:
            // clean copies, which the server has, make room for this
            // write, which is nowhere else.
            let need = std::fs::metadata(&copy).map_or(0, |m| m.len()) + KEEP_HEADER_ROOM;
            let freed = self.lock().cache.make_room(need, w.fid);
            tracing::warn!(fid = %w.fid, freed, "the cache disk is full: evicted cached copies to keep a write");
            if freed > 0 {
                saved = self.unstored.keep(&kept, &copy);
            }
        }
        let fid = w.fid;
        let mut st = self.lock();
        st.cache.remove(fid);
        if let Some(n) = st.nodes.get_mut(ino) {
            n.promise = None;
        }
        drop(st);
        match saved {
            Ok(path) => tracing::error!(
                %fid,
                path = %path.display(),
                "the fileserver is unreachable: this write was not stored; it is kept and stored when the server answers again, unless the file changes there first"
            ),
            Err(le) => tracing::error!(
                %fid,
                error = %le,
                "the fileserver is unreachable and this write could not be kept either; its bytes are lost"
            ),
        }
        FsError::new(libc::EIO, format!("store of {fid} failed: {e}"))
    }

    /// Stores the kept writes on a blocking thread, so breaks go on being
    /// applied while a restarted server's grace holds the stores back. One
    /// run at a time; a call during a run makes it go round once more
    /// (what the server refused to a run cut short by an outage is tried
    /// again after the reconnect that called).
    pub(super) fn spawn_store_kept(&self) {
        self.kept_again.store(true, Ordering::Release);
        if self.storing_kept.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(core) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            self.storing_kept.store(false, Ordering::Release);
            return;
        };
        self.rt.spawn_blocking(move || {
            loop {
                core.kept_again.store(false, Ordering::Release);
                core.store_kept();
                core.storing_kept.store(false, Ordering::Release);
                // A call during the run left it to this one, unless another
                // run started since.
                if !core.kept_again.load(Ordering::Acquire) || core.storing_kept.swap(true, Ordering::AcqRel) {
                    break;
                }
            }
        });
    }

    /// Stores the writes kept while the server was unreachable, each as
    /// its writer, and only if its file is still at the version it was
    /// written on. One the server refuses goes to `lost+found/`; one whose
    /// server does not answer stays for the next reconnection (or start).
    fn store_kept(&self) {
        for f in self.unstored.list() {
            let _as = crate::caller::enter(f.kept.caller.clone().map(Arc::new));
            let fid = f.kept.fid;
            match self.store_one(&f) {
                Ok(status) => {
                    self.unstored.stored(&f);
                    tracing::info!(%fid, stored_as = %status.fid, bytes = f.len, "a write kept while the fileserver was unreachable is stored");
                    self.stored_elsewhere(fid, status);
                }
                Err(e) if e.is_unreachable() => {
                    tracing::info!(%fid, error = %e, "the fileserver is unreachable; this kept write waits");
                }
                Err(e) if e.is_changed() && self.landed(&f) => {
                    // The store that failed had committed before the
                    // server went away; only its answer was lost.
                    self.unstored.stored(&f);
                    tracing::info!(%fid, "a kept write had reached the fileserver before it went away");
                }
                Err(e) => match self.unstored.give_up(&f) {
                    Ok(path) => tracing::error!(
                        %fid,
                        error = %e,
                        path = %path.display(),
                        "a write kept while the fileserver was unreachable cannot be stored (the file changed or was removed there, or the server refused it); its bytes are in lost+found"
                    ),
                    Err(le) => {
                        tracing::error!(%fid, error = %e, lost = %le, "a kept write cannot be stored nor moved to lost+found")
                    }
                },
            }
        }
    }

    /// Stores `f` over the version it was written on; a file created here
    /// whose create the server lost is made again first.
    fn store_one(&self, f: &KeptFile) -> Result<Status, LinkError> {
        match self.store_kept_as(f, f.kept.fid, f.kept.base) {
            Err(e) if e.code() == Some(ErrorCode::Stale) => {
                let Some(p) = &f.kept.place else { return Err(e) };
                let req = Request::Create {
                    dir: p.dir,
                    name: p.name.clone(),
                    mode: p.mode,
                    uid: p.uid,
                    gid: p.gid,
                    exclusive: true,
                };
                let Reply::Created { status, .. } = self.wait(self.link.call(&req))? else {
                    return Err(e);
                };
                tracing::info!(old = %f.kept.fid, new = %status.fid, name = %p.name, "the fileserver lost this file's create; made it again");
                // The folder's listing here still names the lost file.
                let (inodes, entries) = self.drop_stale(&[p.dir]);
                self.notify_kernel(&inodes, &entries, &[]);
                self.store_kept_as(f, status.fid, status.data_version)
            }
            other => other,
        }
    }

    /// Sends `f`'s bytes as the whole content of `fid`, taken only while
    /// `fid` is at data version `base`.
    fn store_kept_as(&self, f: &KeptFile, fid: Fid, base: u64) -> Result<Status, LinkError> {
        let req = Request::StoreData {
            fid,
            offset: 0,
            len: f.len,
            truncate: Some(f.len),
            mtime: Some(f.kept.mtime),
            expect: Some(base),
        };
        self.wait(self.link.store_from(&req, &f.path, f.start))
    }

    /// Whether the server's version of `f`'s file is `f` itself: one
    /// version past its base, with its length and modification time.
    fn landed(&self, f: &KeptFile) -> bool {
        match self.call(Request::FetchStatus { fid: f.kept.fid }) {
            Ok((Reply::Status(s), _)) => {
                s.data_version == f.kept.base + 1 && s.size == f.len && s.mtime == f.kept.mtime
            }
            _ => false,
        }
    }

    /// This node stored `status` outside any open handle, for the file
    /// that was `was` (another FID when it was made again): the node's
    /// copy and what the kernel holds of it go.
    pub(super) fn stored_elsewhere(&self, was: Fid, status: Status) {
        let mut inodes = Vec::new();
        let mut entries = Vec::new();
        {
            let mut st = self.lock();
            if was != status.fid {
                if let Some(ino) = st.nodes.ino_of(was) {
                    inodes.push(ino);
                    if let Some((dir, name)) = st.nodes.get(ino).and_then(|n| n.kernel_name()) {
                        entries.push((dir, name.to_owned()));
                    }
                }
                forget_deleted(&mut st, was);
            }
            st.cache.remove(status.fid);
            let ino = st.nodes.upsert(status, None);
            inodes.push(ino);
        }
        self.notify_kernel(&inodes, &entries, &[]);
    }
}
