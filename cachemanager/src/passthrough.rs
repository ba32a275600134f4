//! FUSE passthrough bookkeeping: which kernel backing file each inode uses.
//!
//! With passthrough the kernel reads and writes the local copy in the cache
//! folder itself: large files are served at local-disk speed without a
//! second copy in the page cache, and new files are written without a
//! round trip per write. The kernel allows one backing file per inode at a
//! time, wants every open of an inode that has one to use it (EINVAL), and
//! refuses to mix passthrough and cached opens (ETXTBSY). So every
//! passthrough open of an inode shares one `BackingId`; a new version that
//! arrives while the copy is a backing file is written into that same file
//! (see `Core::fetch`); and an inode with cached opens live gets no
//! passthrough until they close.

use fuser::BackingId;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// How an open is answered.
pub enum Mode {
    /// Through the kernel's backing file.
    Passthrough(Arc<BackingId>),
    /// Refused: another copy of this inode is still the backing file of
    /// open handles, and the kernel wants every open of an inode on one
    /// backing file. (The core updates an open copy in place, so this only
    /// guards against a copy replaced some other way.)
    Stale,
    /// Ordinary cached I/O (passthrough unavailable).
    Cached,
}

/// Files at least this large are opened with passthrough. For smaller ones
/// the kernel's own page cache already serves warm reads, and a passthrough
/// open costs one more round trip (the kernel asks for attributes again).
pub const PASSTHROUGH_MIN_SIZE: u64 = 1 << 20;

/// Backing files by inode, the references open handles hold, and the
/// cached-mode opens that rule passthrough out for an inode.
#[derive(Default)]
pub struct Backings {
    enabled: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Inode → (identity of the local copy, its backing while any handle holds it).
    by_ino: HashMap<u64, (u64, Weak<BackingId>)>,
    /// File handle → its inode and the backing it keeps alive until release.
    by_fh: HashMap<u64, (u64, Arc<BackingId>)>,
    /// Inode → cached-mode opens still live.
    cached: HashMap<u64, u32>,
    /// File handle → inode, for cached-mode opens.
    cached_fh: HashMap<u64, u64>,
}

impl Backings {
    /// Turns passthrough on (the kernel granted it at init).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Chooses how to answer the open `fh` of inode `ino`; `file` gives its
    /// local copy (opened only when it is needed: to compare with a live
    /// backing, or to register one); `want` says passthrough would pay for
    /// this open (a new or a large file); `register` makes a new backing
    /// (`open_backing`).
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        file: impl FnOnce() -> Option<Arc<File>>,
        want: bool,
        register: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Mode {
        let mut inner = self.lock();
        let live = inner.by_ino.get(&ino).and_then(|(id, w)| Some((*id, w.upgrade()?)));
        let new = want && self.enabled.load(Ordering::Relaxed) && !inner.cached.contains_key(&ino);
        if live.is_none() && !new {
            return inner.cached_open(ino, fh);
        }
        let ident = file().and_then(|f| Some((f.metadata().ok()?.ino(), f)));
        let backing = match (live, ident) {
            (Some((id, b)), Some((i, _))) if i == id => b,
            (Some(_), _) => return Mode::Stale,
            (None, None) => return inner.cached_open(ino, fh),
            (None, Some((ident, file))) => match register(&file) {
                Ok(b) => {
                    let b = Arc::new(b);
                    inner.by_ino.insert(ino, (ident, Arc::downgrade(&b)));
                    b
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the kernel refused a passthrough file; serving reads through the cache manager from now on");
                    self.enabled.store(false, Ordering::Relaxed);
                    return inner.cached_open(ino, fh);
                }
            },
        };
        inner.by_fh.insert(fh, (ino, backing.clone()));
        Mode::Passthrough(backing)
    }

    /// Forgets handle `fh` (release): the kernel closes a backing when the
    /// last handle of its inode is gone.
    pub fn release(&self, fh: u64) {
        let mut inner = self.lock();
        if let Some((ino, backing)) = inner.by_fh.remove(&fh) {
            drop(backing);
            if inner.by_ino.get(&ino).is_some_and(|(_, w)| w.strong_count() == 0) {
                inner.by_ino.remove(&ino);
            }
        }
        if let Some(ino) = inner.cached_fh.remove(&fh)
            && let Some(n) = inner.cached.get_mut(&ino)
        {
            *n -= 1;
            if *n == 0 {
                inner.cached.remove(&ino);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn cached_open(&mut self, ino: u64, fh: u64) -> Mode {
        *self.cached.entry(ino).or_default() += 1;
        self.cached_fh.insert(fh, ino);
        Mode::Cached
    }
}
