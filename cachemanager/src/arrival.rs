//! How far a fetch in progress has written its copy, so readers of a large
//! file are served from the part that arrived instead of waiting for the
//! whole file.

use crate::error::{FsError, FsResult};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Progress {
    /// Bytes known written to the copy (not merely queued).
    written: u64,
    /// Set once the fetch ended: `Ok` when the copy is whole.
    ended: Option<Result<(), FsError>>,
}

/// One fetch's progress, shared by the fetch and the handles reading it.
#[derive(Debug, Default)]
pub struct Arrival {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Arrival {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first `written` bytes of the copy are in place (a fetch that
    /// starts over reports 0 again).
    pub fn written(&self, written: u64) {
        self.progress().written = written;
        self.changed.notify_all();
    }

    /// The fetch ended, with the whole copy or with `Err`.
    pub fn end(&self, outcome: Result<(), FsError>) {
        self.progress().ended = Some(outcome);
        self.changed.notify_all();
    }

    /// Waits until the bytes before `end` were written or the fetch ended;
    /// the fetch's error if it failed.
    pub fn wait_for(&self, end: u64) -> FsResult<()> {
        let mut p = self.progress();
        loop {
            match &p.ended {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(e.clone()),
                None if p.written >= end => return Ok(()),
                None => {
                    crate::readers::before_wait();
                    p = self.changed.wait(p).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Bytes written so far, and whether the fetch ended.
    pub fn snapshot(&self) -> (u64, bool) {
        let p = self.progress();
        (p.written, p.ended.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn readers_wait_for_their_bytes_or_the_end() {
        let a = Arc::new(Arrival::default());
        a.written(10);
        assert!(a.wait_for(10).is_ok());
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.wait_for(100))
        };
        a.written(50);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a reader woke before its bytes arrived");
        a.written(100);
        assert!(waiter.join().unwrap().is_ok());
        // After the end every read proceeds (a short file ends below `end`).
        a.end(Ok(()));
        assert!(a.wait_for(u64::MAX).is_ok());
        assert_eq!(a.snapshot(), (100, true));
    }

    #[test]
    fn a_failed_fetch_fails_its_readers() {
        let a = Arc::new(Arrival::default());
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.wait_for(1))
        };
        a.end(Err(FsError::new(libc::EIO, "lost")));
        assert_eq!(waiter.join().unwrap().unwrap_err().errno, libc::EIO);
    }
}
