//! FUSE passthrough bookkeeping: which kernel backing file each inode uses.
//!
//! With passthrough the kernel reads and writes the local copy in the cache
//! folder itself, so a warm read costs what a local-disk read costs. The
//! kernel allows one backing file per inode at a time, and refuses a cached
//! (non-passthrough) open while passthrough opens are live. So every open of
//! an inode shares one `BackingId` while that copy is the current one; when
//! a new version has arrived while the old copy is still open, new opens use
//! direct I/O through the cache manager (allowed next to passthrough) until
//! the old handles close.

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
    /// Direct I/O through the cache manager: another copy of this inode is
    /// the backing file of still-open handles.
    Direct,
    /// Ordinary cached I/O (passthrough unavailable).
    Cached,
}

/// Backing files by inode, and the references open handles hold.
#[derive(Default)]
pub struct Backings {
    enabled: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Inode → (identity of the local copy, its backing while any handle holds it).
    by_ino: HashMap<u64, (u64, Weak<BackingId>)>,
    /// File handle → the backing it keeps alive until release.
    by_fh: HashMap<u64, Arc<BackingId>>,
}

impl Backings {
    /// Turns passthrough on (the kernel granted it at init).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Chooses how to answer the open `fh` of inode `ino` whose local copy
    /// is `file`; `register` makes a new backing for it (`open_backing`).
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        file: &File,
        register: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Mode {
        if !self.enabled.load(Ordering::Relaxed) {
            return self.fallback(ino);
        }
        let Ok(ident) = file.metadata().map(|m| m.ino()) else {
            return self.fallback(ino);
        };
        let mut inner = self.lock();
        let live = inner.by_ino.get(&ino).and_then(|(id, w)| Some((*id, w.upgrade()?)));
        let backing = match live {
            Some((id, b)) if id == ident => b,
            Some(_) => return Mode::Direct,
            None => match register(file) {
                Ok(b) => {
                    let b = Arc::new(b);
                    inner.by_ino.insert(ino, (ident, Arc::downgrade(&b)));
                    b
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the kernel refused a passthrough file; serving reads through the cache manager from now on");
                    self.enabled.store(false, Ordering::Relaxed);
                    return Mode::Cached;
                }
            },
        };
        inner.by_fh.insert(fh, backing.clone());
        Mode::Passthrough(backing)
    }

    /// Drops the reference of handle `fh` (release): the kernel closes the
    /// backing when the last handle of its inode is gone.
    pub fn release(&self, fh: u64) {
        let mut inner = self.lock();
        if inner.by_fh.remove(&fh).is_some() {
            inner.by_ino.retain(|_, (_, w)| w.strong_count() > 0);
        }
    }

    /// Without passthrough for this open: direct I/O when the inode still
    /// has passthrough handles (a cached open would be refused), else cached.
    fn fallback(&self, ino: u64) -> Mode {
        let inner = self.lock();
        match inner.by_ino.get(&ino) {
            Some((_, w)) if w.strong_count() > 0 => Mode::Direct,
            _ => Mode::Cached,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
