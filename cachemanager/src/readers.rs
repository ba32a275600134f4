//! Which FUSE threads wait for the kernel's next request.
//!
//! The kernel hands each request to the thread that has waited longest in
//! `read(2)` on the device. With sixteen threads waiting, every request of a
//! warm `open`/`close` loop woke another thread, cold in its CPU's caches
//! and often on the other CPU: 34–50 µs an open and release, against
//! 27–28 µs with a single thread. A single thread would stop every other
//! request while one waits on the fileserver, though.
//!
//! So one thread reads at a time. A thread that ends a request while another
//! already reads parks here instead of going back to `read(2)`, and the
//! reader that answered from the node reads next: the kernel wakes the same
//! warm thread. Before a request waits on anything (the fileserver, a
//! fetch, a store, a lock: [`before_wait`]), a parked thread is called up to
//! read in its place, so a slow request holds only its own thread, as with
//! sixteen threads reading. A watchdog calls one up when no request has
//! started for [`STALL`] while every thread is busy, for a wait that does not
//! say so (the local disk, a lock held long). The watchdog also watches the
//! kernel device: once the mount is gone it calls every parked thread up
//! to read the end, so an unmount is not held up. A parked thread returns
//! to reading on its own after [`PARK_AT_MOST`] in any case (the watchdog
//! dozes on an idle mount, whose threads have all returned by then).

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

/// How long every thread may be busy, with none reading, before the
/// watchdog calls a parked one up.
pub const STALL: Duration = Duration::from_millis(10);

/// Longest a thread stays parked before it reads again on its own.
pub const PARK_AT_MOST: Duration = Duration::from_secs(1);

/// Checks without a new request after which the watchdog dozes until one
/// starts (one second of an idle mount), instead of waking every [`STALL`].
const DOZE_AFTER: u32 = 100;

/// Longest the watchdog dozes before it looks whether the mount is gone.
const DOZE_AT_MOST: Duration = Duration::from_secs(5);

/// The FUSE threads of one session, and which of them read.
#[derive(Debug)]
pub struct Readers {
    /// The session's FUSE threads.
    threads: usize,
    state: Mutex<State>,
    called: Condvar,
    /// Wakes the dozing watchdog.
    wake_watchdog: Condvar,
    /// Longest a thread stays parked ([`PARK_AT_MOST`] but in tests).
    park_at_most: Duration,
    /// The session's kernel device, which the watchdog watches for the
    /// unmount.
    device: OnceLock<OwnedFd>,
}

#[derive(Debug)]
struct State {
    /// Threads in (or on their way back to) `read(2)`.
    reading: usize,
    /// Threads parked in [`Turn`]'s drop.
    parked: usize,
    /// Parked threads called up and not yet gone.
    called_up: usize,
    /// Requests started so far (the watchdog's sign of progress).
    started: u64,
    /// The watchdog dozes until the next request starts.
    dozing: bool,
    /// The watchdog's checks so far (for tests).
    checks: u64,
    /// The mount is gone: no thread parks any more.
    closing: bool,
}

thread_local! {
    /// The readers of the request this thread is serving, if it serves one.
    static SERVING: RefCell<Option<Arc<Readers>>> = const { RefCell::new(None) };
}

/// Called before the current thread waits on something slow: when it serves
/// a FUSE request and no other thread reads, a parked one is called up to
/// read meanwhile. Does nothing on other threads.
pub fn before_wait() {
    SERVING.with(|s| {
        if let Some(readers) = s.borrow().as_ref() {
            readers.call_up_if_none_reads();
        }
    });
}

impl Readers {
    /// The readers of a session of `threads` threads, all reading at first,
    /// with a watchdog thread that ends when the last handle is dropped.
    pub fn new(threads: usize) -> Arc<Self> {
        Self::with_park(threads, PARK_AT_MOST)
    }

    fn with_park(threads: usize, park_at_most: Duration) -> Arc<Self> {
        let readers = Arc::new(Readers {
            threads: threads.max(1),
            state: Mutex::new(State {
                reading: threads.max(1),
                parked: 0,
                called_up: 0,
                started: 0,
                dozing: false,
                checks: 0,
                closing: false,
            }),
            called: Condvar::new(),
            wake_watchdog: Condvar::new(),
            park_at_most,
            device: OnceLock::new(),
        });
        let weak = Arc::downgrade(&readers);
        let spawned = std::thread::Builder::new()
            .name("fuse-watchdog".into())
            .spawn(move || watch(weak));
        if let Err(e) = spawned {
            // Without it a wait that does not say so holds the mount until
            // the parked threads' own timeout.
            tracing::warn!(error = %e, "cannot start the FUSE reader watchdog");
        }
        readers
    }

    /// Gives the watchdog the session's device: once the kernel ends the
    /// connection (unmount), parked threads are called up at once to read
    /// its end, instead of after [`PARK_AT_MOST`].
    pub fn watch_device(&self, device: OwnedFd) {
        let _ = self.device.set(device);
    }

    /// Whether the kernel ended the session's connection (the device
    /// polls as an error, or hung up).
    fn device_gone(&self) -> bool {
        let Some(fd) = self.device.get() else { return false };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, on a descriptor we own; no waiting.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    }

    /// Calls every parked thread up, and parks none from now on.
    fn close(&self) {
        let mut s = self.lock();
        s.closing = true;
        self.called.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts serving a request on this thread; the turn ends when the
    /// returned guard is dropped, after the reply.
    pub fn turn(self: &Arc<Self>) -> Turn {
        {
            let mut s = self.lock();
            s.reading = s.reading.saturating_sub(1);
            s.started += 1;
            if s.dozing {
                s.dozing = false;
                self.wake_watchdog.notify_one();
            }
        }
        SERVING.with(|c| *c.borrow_mut() = Some(self.clone()));
        Turn { readers: self.clone() }
    }

    /// Calls a parked thread up to read when none reads.
    fn call_up_if_none_reads(&self) {
        let mut s = self.lock();
        if s.reading == 0 {
            self.call_up(&mut s);
        }
    }

    fn call_up(&self, s: &mut State) {
        if s.parked > s.called_up {
            s.called_up += 1;
            s.reading += 1;
            self.called.notify_one();
        }
    }

    /// Ends a turn: parks while another thread reads, else reads.
    fn end_turn(&self) {
        let mut s = self.lock();
        if s.reading == 0 || s.closing {
            s.reading += 1;
            return;
        }
        s.parked += 1;
        loop {
            let (next, wait) = self
                .called
                .wait_timeout(s, self.park_at_most)
                .unwrap_or_else(PoisonError::into_inner);
            s = next;
            if s.called_up > 0 {
                // Counted as reading by the caller.
                s.called_up -= 1;
                break;
            }
            if wait.timed_out() || s.closing {
                s.reading += 1;
                break;
            }
        }
        s.parked -= 1;
    }

    /// Whether so many of the session's threads are serving requests that a
    /// request about to wait on the fileserver should leave its thread (see
    /// [`crate::fuse`]'s deferral): a quarter of them, and at least one, are
    /// kept for what the node answers alone (cached opens and reads).
    pub fn few_free(&self) -> bool {
        let s = self.lock();
        let serving = self.threads.saturating_sub(s.reading + s.parked);
        serving + kept_free(self.threads) > self.threads
    }

    /// (reading, parked) threads now, for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.reading, s.parked)
    }
}

/// Threads kept for requests answered from the node, out of `threads`.
fn kept_free(threads: usize) -> usize {
    (threads / 4).max(1)
}

/// One request being served on this thread; see [`Readers::turn`].
#[must_use]
pub struct Turn {
    readers: Arc<Readers>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        SERVING.with(|c| *c.borrow_mut() = None);
        self.readers.end_turn();
    }
}

/// Calls a parked thread up whenever no request started for [`STALL`]
/// while none read. Dozes while the mount is idle, so an idle node is not
/// woken a hundred times a second.
fn watch(readers: Weak<Readers>) {
    let mut seen = u64::MAX;
    let mut quiet = 0u32;
    loop {
        std::thread::sleep(STALL);
        let Some(readers) = readers.upgrade() else { return };
        if readers.device_gone() {
            readers.close();
            return;
        }
        let mut s = readers.lock();
        s.checks += 1;
        if s.reading == 0 && s.started == seen {
            readers.call_up(&mut s);
        }
        quiet = if s.started == seen { quiet.saturating_add(1) } else { 0 };
        seen = s.started;
        if quiet >= DOZE_AFTER && s.reading > 0 {
            s.dozing = true;
            let (mut s, _) = readers
                .wake_watchdog
                .wait_timeout_while(s, DOZE_AT_MOST, |s| s.dozing)
                .unwrap_or_else(PoisonError::into_inner);
            if !s.dozing {
                // Woken by a request: watch it from now on.
                quiet = 0;
            }
            s.dozing = false;
            seen = s.started;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    /// Waits until `f` holds, for at most five seconds.
    fn until(mut f: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// A thread that serves one request and ends its turn.
    fn serve_one(r: &Arc<Readers>) -> std::thread::JoinHandle<()> {
        let r = r.clone();
        std::thread::spawn(move || drop(r.turn()))
    }

    /// Two threads, one reading and one parked after a request (joined
    /// once called up).
    fn one_parked() -> (Arc<Readers>, std::thread::JoinHandle<()>) {
        let r = Readers::with_park(2, Duration::from_secs(30));
        let parked = serve_one(&r);
        assert!(until(|| r.counts() == (1, 1)), "{:?}", r.counts());
        (r, parked)
    }

    /// A turn that blocks without saying so, until the flag is set.
    fn blocking_turn(r: &Arc<Readers>) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, stop2) = (r.clone(), stop.clone());
        let busy = std::thread::spawn(move || {
            let turn = r2.turn();
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::mem::forget(turn);
        });
        (stop, busy)
    }

    #[test]
    fn a_quarter_of_the_threads_is_kept_for_requests_the_node_answers() {
        let r = Readers::with_park(8, Duration::from_secs(30));
        for serving in 1..=8 {
            // Turns that never end (their threads stay busy).
            std::mem::forget(r.turn());
            assert_eq!(r.few_free(), serving > 6, "{serving} of 8 serving");
        }
        let one = Readers::with_park(1, Duration::from_secs(30));
        std::mem::forget(one.turn());
        assert!(one.few_free(), "a single thread is never held by a wait");
    }

    #[test]
    fn a_thread_that_ends_a_turn_while_another_reads_parks() {
        let (r, parked) = one_parked();
        // The reader starts a request that waits: the parked thread reads.
        let r2 = r.clone();
        let waiting = std::thread::spawn(move || {
            let turn = r2.turn();
            before_wait();
            let after = r2.counts().0;
            // Ends it without parking behind the thread it called up.
            std::mem::forget(turn);
            SERVING.with(|c| *c.borrow_mut() = None);
            after
        });
        assert_eq!(waiting.join().unwrap(), 1, "a parked thread called up to read");
        parked.join().unwrap();
        assert_eq!(r.counts(), (1, 0));
    }

    #[test]
    fn the_only_reader_reads_again_without_parking() {
        let r = Readers::with_park(1, Duration::from_secs(30));
        serve_one(&r).join().unwrap();
        assert_eq!(r.counts(), (1, 0));
    }

    #[test]
    fn before_wait_outside_a_turn_calls_nobody() {
        let (r, parked) = one_parked();
        before_wait();
        assert_eq!(r.counts(), (1, 1));
        r.call_up_if_none_reads();
        assert_eq!(r.counts(), (1, 1), "one reads: nobody called up");
        r.lock().reading = 0;
        r.call_up_if_none_reads();
        parked.join().unwrap();
        assert_eq!(r.counts(), (1, 0));
    }

    #[test]
    fn a_stalled_turn_is_relieved_by_the_watchdog() {
        let (r, parked) = one_parked();
        let (stop, busy) = blocking_turn(&r);
        parked.join().unwrap();
        assert_eq!(r.counts(), (1, 0), "the watchdog called the parked thread up");
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
    }

    #[test]
    fn an_idle_watchdog_dozes_and_still_relieves_the_next_stall() {
        let r = Readers::with_park(2, Duration::from_secs(30));
        assert!(until(|| r.lock().dozing), "the watchdog of an idle mount dozes");
        let checks = r.lock().checks;
        std::thread::sleep(STALL * 10);
        assert_eq!(r.lock().checks, checks, "a dozing watchdog does not check");
        // A request wakes it: a turn that blocks without saying so is
        // relieved as before.
        let parked = serve_one(&r);
        assert!(until(|| r.counts() == (1, 1)), "{:?}", r.counts());
        let (stop, busy) = blocking_turn(&r);
        parked.join().unwrap();
        assert!(r.lock().checks > checks);
        stop.store(true, Ordering::Relaxed);
        busy.join().unwrap();
    }

    #[test]
    fn parked_threads_read_at_once_when_the_device_hangs_up() {
        let (r, parked) = one_parked();
        let (read_end, write_end) = std::io::pipe().unwrap();
        r.watch_device(OwnedFd::from(read_end));
        let t = Instant::now();
        drop(write_end);
        parked.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5), "called up, not timed out (30 s)");
        assert_eq!(r.counts(), (2, 0));
        // And no thread parks any more.
        serve_one(&r).join().unwrap();
        assert_eq!(r.counts(), (2, 0));
    }

    #[test]
    fn a_parked_thread_returns_on_its_own() {
        let r = Readers::with_park(2, Duration::from_millis(50));
        let t = Instant::now();
        serve_one(&r).join().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(r.counts(), (2, 0));
    }
}
