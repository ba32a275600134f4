//! How far a fetch in progress has written its copy, so readers of a large
//! file are served from the part that arrived instead of waiting for the
//! whole file. The last bytes received are also kept in memory (a window of
//! the stream's own buffers, no copy): a reader following the fetch is
//! served from there, not from the copy, which a large fetch drops from the
//! page cache as it writes it ([`cellfs_protocol::writeback`]).

use crate::error::{FsError, FsResult};
use cellfs_protocol::transport::Bytes;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Bytes of the stream kept in memory for readers following the fetch.
/// A reader of 1 MiB blocks on a busy two-core node lagged up to a few
/// MiB behind a 1 GiB/s fetch: with 8 MiB one run in three fell out of the
/// window and read most of the file from the disk (twice the time); with
/// 16 and 32 MiB none did in three counted runs each.
pub const WINDOW: u64 = 16 << 20;

#[derive(Debug, Default)]
struct Progress {
    /// Bytes known written to the copy (not merely queued).
    written: u64,
    /// The last bytes received, in order, each with its offset; they end
    /// at `received`.
    window: VecDeque<(u64, Bytes)>,
    /// Bytes received so far (written or about to be).
    received: u64,
    /// Set once the fetch ended: `Ok` when the copy is whole.
    ended: Option<Result<(), FsError>>,
}

impl Progress {
    /// Copies `buf.len()` bytes at `offset` out of the window, if it holds
    /// them all.
    fn copy_out(&self, offset: u64, buf: &mut [u8]) -> bool {
        let end = offset.saturating_add(buf.len() as u64);
        match self.window.front() {
            Some(&(start, _)) if start <= offset && end <= self.received => {}
            _ => return false,
        }
        // The part holding `offset`: the last one starting at or before it.
        let first = self.window.partition_point(|(at, _)| *at <= offset) - 1;
        let mut done = 0;
        for (at, part) in self.window.range(first..) {
            if done == buf.len() {
                break;
            }
            let from = (offset + done as u64 - at) as usize;
            let n = (part.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&part[from..from + n]);
            done += n;
        }
        done == buf.len()
    }
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

    /// The fetch starts (again, after a failed attempt): nothing of the
    /// copy is in place.
    pub fn restart(&self) {
        let mut p = self.progress();
        p.written = 0;
        p.received = 0;
        p.window.clear();
        drop(p);
        self.changed.notify_all();
    }

    /// The next bytes of the stream came in as `parts`; readers may take
    /// them from memory before they are written.
    pub fn received(&self, parts: &[Bytes]) {
        let mut p = self.progress();
        for part in parts.iter().filter(|b| !b.is_empty()) {
            let at = p.received;
            p.window.push_back((at, part.clone()));
            p.received += part.len() as u64;
        }
        // Drop what the window no longer needs, whole parts at a time.
        while let Some((at, part)) = p.window.front() {
            if p.received - (at + part.len() as u64) < WINDOW {
                break;
            }
            p.window.pop_front();
        }
        drop(p);
        self.changed.notify_all();
    }

    /// The first `written` bytes of the copy are in place.
    pub fn written(&self, written: u64) {
        self.progress().written = written;
        self.changed.notify_all();
    }

    /// The fetch ended, with the whole copy or with `Err`.
    pub fn end(&self, outcome: Result<(), FsError>) {
        let mut p = self.progress();
        p.ended = Some(outcome);
        let window = std::mem::take(&mut p.window);
        drop(p);
        self.changed.notify_all();
        if !window.is_empty() {
            drop(window);
            // The window's buffers, freed here and across the transfer,
            // would otherwise stay in the allocator's heaps (about 15 MiB).
            cellfs_protocol::allocator::trim();
        }
    }

    /// Waits until the bytes before `end` were written or the fetch ended;
    /// the fetch's error if it failed.
    pub fn wait_for(&self, end: u64) -> FsResult<()> {
        self.read_or_wait(end, |_| false).map(|_| ())
    }

    /// Fills `buf` with the bytes at `offset` from memory when they are in
    /// the window (`Ok(true)`), waiting for them to arrive; otherwise waits
    /// until they are written to the copy or the fetch ended (`Ok(false)`:
    /// read them from the copy).
    pub fn read_recent(&self, offset: u64, buf: &mut [u8]) -> FsResult<bool> {
        let end = offset.saturating_add(buf.len() as u64);
        self.read_or_wait(end, |p| p.copy_out(offset, buf))
    }

    /// Waits until `from_window` takes the bytes before `end` (`Ok(true)`),
    /// they are written, or the fetch ended (`Ok(false)`).
    fn read_or_wait(&self, end: u64, mut from_window: impl FnMut(&Progress) -> bool) -> FsResult<bool> {
        let mut p = self.progress();
        loop {
            match &p.ended {
                Some(Ok(())) => return Ok(false),
                Some(Err(e)) => return Err(e.clone()),
                None if p.received >= end && from_window(&p) => return Ok(true),
                None if p.written >= end => return Ok(false),
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

    /// The stream's byte at `offset`.
    fn byte_at(offset: u64) -> u8 {
        (offset ^ (offset >> 8) ^ (offset >> 16)) as u8
    }

    /// Hands `lens` parts of the stream to `a` as one piece.
    fn receive(a: &Arrival, lens: &[usize]) {
        let mut at = a.progress().received;
        let parts: Vec<Bytes> = lens
            .iter()
            .map(|&len| {
                let part: Vec<u8> = (at..at + len as u64).map(byte_at).collect();
                at += len as u64;
                Bytes::from(part)
            })
            .collect();
        a.received(&parts);
    }

    #[test]
    fn a_reader_following_the_fetch_is_served_from_memory_before_the_write() {
        let a = Arc::new(Arrival::default());
        receive(&a, &[100, 0, 3000, 7]);
        let mut buf = vec![0u8; 3000];
        // Nothing is written yet: the bytes come from the window.
        assert!(a.read_recent(50, &mut buf).unwrap());
        assert!(buf.iter().zip(50..).all(|(b, at)| *b == byte_at(at)));
        // A read past what arrived waits for it.
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 100];
                a.read_recent(3050, &mut buf).map(|hit| (hit, buf))
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "a reader woke before its bytes arrived");
        receive(&a, &[500]);
        let (hit, buf) = waiter.join().unwrap().unwrap();
        assert!(hit);
        assert!(buf.iter().zip(3050..).all(|(b, at)| *b == byte_at(at)));
    }

    #[test]
    fn bytes_that_left_the_window_are_read_from_the_copy_once_written() {
        let a = Arc::new(Arrival::default());
        let part = 1 << 20;
        let parts = (WINDOW as usize / part) + 2;
        for _ in 0..parts {
            receive(&a, &[part]);
        }
        let mut buf = vec![0u8; 10];
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.read_recent(0, &mut [0u8; 10]))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "the start left the window but is not written yet"
        );
        a.written(part as u64);
        assert!(!waiter.join().unwrap().unwrap(), "the start is read from the copy");
        // The newest bytes are still in memory.
        let newest = (parts * part) as u64 - 10;
        assert!(a.read_recent(newest, &mut buf).unwrap());
        assert!(buf.iter().zip(newest..).all(|(b, at)| *b == byte_at(at)));
        // A fetch starting over holds nothing in memory; its end frees the rest.
        a.restart();
        assert_eq!(a.progress().window.len(), 0);
        receive(&a, &[10]);
        a.end(Ok(()));
        assert!(!a.read_recent(0, &mut buf).unwrap(), "after the end the copy is whole");
        assert_eq!(a.progress().window.len(), 0);
    }

    proptest::proptest! {
        #[test]
        fn the_window_gives_exactly_the_stream_s_bytes(
            pieces in proptest::collection::vec(proptest::collection::vec(0usize..5000, 1..6), 1..12),
            reads in proptest::collection::vec((0u64..60_000, 1usize..9000), 1..20),
        ) {
            let a = Arrival::default();
            for lens in &pieces {
                receive(&a, lens);
            }
            let received = a.progress().received;
            for (offset, len) in reads {
                if offset + len as u64 > received {
                    continue;
                }
                let mut buf = vec![0u8; len];
                // Everything received is inside the window here (< WINDOW).
                proptest::prop_assert!(a.read_recent(offset, &mut buf).unwrap());
                proptest::prop_assert!(buf.iter().zip(offset..).all(|(b, at)| *b == byte_at(at)));
            }
        }
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
