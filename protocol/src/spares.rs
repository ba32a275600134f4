//! Spare files: empty files made ahead of need, so that making a new file
//! on a hot path is a rename rather than an inode allocation.
//!
//! Allocating the inode is most of what creating a file costs, and on ext4
//! without a journal (as on the machine cellfs is measured on) it scans
//! past every inode freed in the last minutes: 0.03 ms at a quiet time,
//! 0.6–1.5 ms after many files were deleted. The fileserver makes a data
//! file for every store and a cache manager a copy for every file created
//! or fetched, each on the path a writer or reader waits on. A [`Spares`]
//! keeps up to `target` empty files ready in its folder, made by a thread
//! of its own when fewer than half are left, and [`Spares::create_new`]
//! moves one to the new name (`renameat2` with `RENAME_NOREPLACE`, so a
//! taken name fails as `O_EXCL` would). The folder must be on the same
//! filesystem as the files made from it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};

/// Empty files kept ready in a folder (see the module's doc). Cloning
/// gives another handle to the same files.
#[derive(Debug, Clone)]
pub struct Spares(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    target: usize,
    state: Mutex<State>,
    /// Signalled when a filling thread ends.
    idle: Condvar,
}

#[derive(Debug, Default)]
struct State {
    ready: Vec<PathBuf>,
    /// Whether a thread is making spares.
    filling: bool,
    /// Set by [`Spares::stop`]: no spare is made any more.
    stopped: bool,
    /// Number in the next spare's name.
    next: u64,
}

/// `renameat2(2)` of `from` to `to` with `flags` (`RENAME_NOREPLACE`,
/// `RENAME_EXCHANGE`), both relative to the working folder.
pub fn rename_with(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn new_file(path: &Path) -> io::Result<File> {
    File::options().read(true).write(true).create_new(true).open(path)
}

impl Spares {
    /// Spare files in `dir` (made if missing), up to `target` kept ready.
    /// Files an earlier run left there are removed: a crash may have come
    /// between a spare's rename and the flush of its folder.
    pub fn new(dir: &Path, target: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            match std::fs::remove_file(entry?.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(Spares(Arc::new(Inner {
            dir: dir.to_owned(),
            target,
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `dest` as a new empty file, open for reading and writing: a
    /// spare renamed there when one is ready, a file made there otherwise.
    /// Fails with `AlreadyExists` when `dest` exists.
    pub fn create_new(&self, dest: &Path) -> io::Result<File> {
        if let Some(spare) = self.take() {
            // Opened before the rename: the handle is the spare's inode
            // even if `dest` is replaced right after (as O_EXCL's is).
            let file = File::options().read(true).write(true).open(&spare);
            match file.and_then(|f| rename_with(&spare, dest, libc::RENAME_NOREPLACE).map(|()| f)) {
                Ok(f) => return Ok(f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.state().ready.push(spare);
                    return Err(e);
                }
                // Kept unless gone (the folder of `dest` may be what is
                // missing); made directly.
                Err(_) => {
                    if spare.is_file() {
                        self.state().ready.push(spare);
                    }
                }
            }
        }
        new_file(dest)
    }

    /// A ready spare, if any; starts making more when fewer than half are left.
    fn take(&self) -> Option<PathBuf> {
        let mut st = self.state();
        let spare = st.ready.pop();
        if !st.stopped && !st.filling && st.ready.len() * 2 < self.0.target {
            st.filling = true;
            let inner = Arc::downgrade(&self.0);
            let started = std::thread::Builder::new()
                .name("spare-files".into())
                .spawn(move || fill(inner));
            if started.is_err() {
                st.filling = false;
            }
        }
        spare
    }

    /// How many spares are ready.
    pub fn ready(&self) -> usize {
        self.state().ready.len()
    }

    /// Makes no more spares, waiting for a thread making them to end (so
    /// the folder can be removed).
    pub fn stop(&self) {
        let mut st = self.state();
        st.stopped = true;
        while st.filling {
            st = self.0.idle.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Makes spares until `target` are ready, the handles are gone, they are
/// stopped, or one cannot be made (a full disk: later takes make files
/// directly, and report the error).
fn fill(inner: Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let name = {
            let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            if st.stopped || st.ready.len() >= inner.target {
                st.filling = false;
                inner.idle.notify_all();
                return;
            }
            st.next += 1;
            inner.dir.join(format!("spare-{}", st.next))
        };
        let made = new_file(&name);
        let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match made {
            Ok(_) if !st.stopped => st.ready.push(name),
            Ok(_) => {
                let _ = std::fs::remove_file(&name);
            }
            Err(_) => {
                st.filling = false;
                inner.idle.notify_all();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn wait_ready(s: &Spares, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.ready() < n {
            assert!(Instant::now() < deadline, "spares never reached {n}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn spare_files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn new_files_come_from_spares_that_are_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let spares = Spares::new(&tmp.path().join("spare"), 8).unwrap();
        // The first take finds none and starts the filling.
        let mut f = spares.create_new(&tmp.path().join("a")).unwrap();
        f.write_all(b"first").unwrap();
        wait_ready(&spares, 8);
        assert_eq!(spare_files(&tmp.path().join("spare")), 8);
        // Four takes leave half: no filling starts, so the count is exact.
        for i in 0..5 {
            let mut f = spares.create_new(&tmp.path().join(format!("f{i}"))).unwrap();
            assert_eq!(f.metadata().unwrap().len(), 0);
            f.write_all(b"x").unwrap();
            if i == 3 {
                assert_eq!(spare_files(&tmp.path().join("spare")), 4, "the files were not spares");
            }
        }
        // The fifth leaves fewer than half: the filling makes them again.
        wait_ready(&spares, 8);
        assert_eq!(std::fs::read(tmp.path().join("a")).unwrap(), b"first");
    }

    #[test]
    fn a_taken_name_fails_and_keeps_its_file_and_the_spare() {
        let tmp = tempfile::tempdir().unwrap();
        let spares = Spares::new(&tmp.path().join("spare"), 4).unwrap();
        let dest = tmp.path().join("taken");
        std::fs::write(&dest, b"kept").unwrap();
        spares.create_new(&tmp.path().join("warm-up")).unwrap();
        wait_ready(&spares, 4);
        let e = spares.create_new(&dest).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        let mut got = Vec::new();
        File::open(&dest).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"kept");
        assert_eq!(spares.ready(), 4, "the spare was lost");
    }

    #[test]
    fn files_are_made_directly_without_spares_and_leftovers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spare");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("spare-1"), b"left by a crash").unwrap();
        let spares = Spares::new(&dir, 0).unwrap();
        assert_eq!(spare_files(&dir), 0);
        spares.create_new(&tmp.path().join("a")).unwrap();
        assert!(tmp.path().join("a").is_file());
        assert_eq!(
            spares.create_new(&tmp.path().join("a")).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(spare_files(&dir), 0);
    }

    #[test]
    fn stopped_spares_make_no_more_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spare");
        let spares = Spares::new(&dir, 64).unwrap();
        spares.create_new(&tmp.path().join("a")).unwrap();
        spares.stop();
        let n = spare_files(&dir);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(spare_files(&dir), n, "a spare was made after stop");
        std::fs::remove_dir_all(&dir).unwrap();
        spares.create_new(&tmp.path().join("b")).unwrap();
    }
}
