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

/// Kept writes of a file a handle still has open for writing (see
/// [`Core::rewrite_store`]).
pub(super) struct Rewrite {
    /// The kept write.
    kept: Kept,
    /// Whether the kept file holds the copy as it is: no write since.
    current: bool,
}

impl Rewrite {
    /// A write to the copy since it was kept.
    pub(super) fn written(&mut self) {
        self.current = false;
    }
}

/// Room a kept write's header takes besides its bytes (the caller and the
/// place it was made at), with slack for the file system's blocks.
const KEEP_HEADER_ROOM: u64 = 64 << 10;

impl Core {
    /// The store of `ino`'s write found the server unreachable: its copy
    /// is kept whole, to be stored when the server answers, and the close
    /// or fsync is answered `EIO`, since the bytes are not on the server.
    /// The copy leaves the cache, unless a handle still has the file open
    /// for writing: then it stays that handle's copy, and the handle's
    /// later writes join the kept ones (see [`Core::rewrite_store`]).
    pub(super) fn keep_unstored(&self, ino: u64, w: Written, e: LinkError) -> FsError {
        let (copy, kept, current) = {
            let st = self.lock();
            // Kept already, and not written since (a writer's close after
            // its failed fsync): nothing to copy again.
            let current = st.rewrites.get(&w.fid).is_some_and(|r| r.current);
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
            // A later keep of a file still open keeps where it was made.
            let place = place.or_else(|| st.rewrites.get(&w.fid).and_then(|r| r.kept.place.clone()));
            let kept = Kept {
                fid: w.fid,
                base: w.base,
                mtime: w.mtime,
                caller: crate::caller::current().map(|c| (*c).clone()),
                place,
            };
            (st.cache.path(w.fid), kept, current)
        };
        let saved = if current {
            Ok(self.unstored.path_of(w.fid))
        } else {
            self.save_kept(&kept, &copy)
        };
        let fid = w.fid;
        let mut st = self.lock();
        let writing = st.files.values().any(|h| h.ino == ino && h.write);
        if let Some(n) = st.nodes.get_mut(ino) {
            n.promise = None;
            if writing {
                n.dirty = Some((0, n.status.size));
            }
        }
        if writing {
            let current = saved.is_ok();
            st.rewrites.insert(fid, Rewrite { kept, current });
        } else {
            st.rewrites.remove(&fid);
            st.cache.remove(fid);
        }
        drop(st);
        match saved {
            // Logged when it was kept.
            Ok(_) if current => tracing::debug!(%fid, "the fileserver is still unreachable; the write stays kept"),
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

    /// Writes `copy` as the kept write `kept` (over any earlier one of the
    /// file). On a full cache disk clean copies, which the server has, are
    /// evicted to make room for it, since this write is nowhere else.
    fn save_kept(&self, kept: &Kept, copy: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
        let mut saved = self.unstored.keep(kept, copy);
        if let Err(e) = &saved
            && matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        {
            let need = std::fs::metadata(copy).map_or(0, |m| m.len()) + KEEP_HEADER_ROOM;
            let freed = self.lock().cache.make_room(need, kept.fid);
            tracing::warn!(fid = %kept.fid, freed, "the cache disk is full: evicted cached copies to keep a write");
            if freed > 0 {
                saved = self.unstored.keep(kept, copy);
            }
        }
        saved
    }

    /// The version a handle's next store must be made on, when a store of
    /// its file failed while it stayed open for writing: the handle's
    /// writes since then join the kept ones, so the store sends the whole
    /// copy, taken only while the file is still at the kept writes'
    /// version (`None`: an ordinary store).
    pub(super) fn rewrite_store(&self, fid: Fid) -> Option<u64> {
        self.lock().rewrites.get(&fid).map(|r| r.kept.base)
    }

    /// A whole-copy store (see [`Core::rewrite_store`]) reached the server:
    /// the kept write it holds is done with.
    pub(super) fn rewrite_stored(&self, fid: Fid) {
        // The kept file goes before the mark, so a run of the kept stores
        // never finds it unmarked and stores the older bytes.
        self.unstored.superseded(fid);
        self.lock().rewrites.remove(&fid);
    }

    /// Ends the kept writes a handle joined (see [`Core::rewrite_store`])
    /// when they cannot be stored by it: the server refused its whole-copy
    /// store (the file changed or went there meanwhile), or the last
    /// writer closed without storing it. The whole copy is kept over the
    /// earlier kept write (unless that holds it already), to be stored as
    /// kept writes are, or moved to `lost+found/`; the node's copy leaves
    /// the cache.
    pub(super) fn end_rewrite(&self, ino: u64, fid: Fid) -> Option<std::io::Result<std::path::PathBuf>> {
        let (rewrite, copy, mtime) = {
            let mut st = self.lock();
            let rewrite = st.rewrites.remove(&fid)?;
            let mtime = st.nodes.get(ino).map(|n| n.status.mtime);
            (rewrite, st.cache.path(fid), mtime)
        };
        let saved = if rewrite.current {
            Ok(self.unstored.path_of(fid))
        } else {
            let mut kept = rewrite.kept;
            kept.mtime = mtime.unwrap_or(kept.mtime);
            self.save_kept(&kept, &copy)
        };
        {
            let mut st = self.lock();
            if let Some(n) = st.nodes.get_mut(ino) {
                n.dirty = None;
                n.promise = None;
            }
            st.cache.remove(fid);
        }
        self.spawn_store_kept();
        Some(saved)
    }

    /// The server refused the whole-copy store of `fid`'s kept writes
    /// (`e`): they go the kept way (see [`Core::end_rewrite`]) and the
    /// close or fsync says `EIO`.
    pub(super) fn rewrite_refused(&self, ino: u64, fid: Fid, e: LinkError) -> FsError {
        match self.end_rewrite(ino, fid) {
            Some(Ok(path)) => tracing::error!(
                %fid,
                error = %e,
                path = %path.display(),
                "writes made after a store failed cannot be stored: the file changed or went on the server since; they are kept whole, and go to lost+found if they cannot be stored"
            ),
            Some(Err(le)) => {
                tracing::error!(%fid, error = %e, lost = %le, "writes made after a store failed can be neither stored nor kept")
            }
            None => {}
        }
        FsError::new(libc::EIO, format!("store of {fid} refused: {e}"))
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
            if self.rewrite_store(fid).is_some() {
                // A handle still open for writing joined it: its next store
                // sends it with the later writes.
                continue;
            }
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
