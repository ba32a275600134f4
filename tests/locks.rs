//! File locks through real mounts: `flock` and `fcntl` locks exclude other
//! processes on the node and on other nodes (the fileserver holds each
//! node's whole-file lock), end with their holder, and a process waiting
//! for one can still be killed.

mod common;

use cellfs::{COMMAND_TIMEOUT, Cell, Mount, output_with_timeout, wait_for, wait_timeout};
use common::Background;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// `flock -n`'s exit status when the lock is taken by someone else.
const BUSY: i32 = 75;

/// Tries a lock with util-linux `flock` (`-x` or `-s`) without waiting:
/// true when it was free.
fn try_flock(path: &Path, mode: &str) -> bool {
    let out = output_with_timeout(
        Command::new("flock")
            .args([mode, "-n", "-E", &BUSY.to_string()])
            .arg(path)
            .arg("true"),
        COMMAND_TIMEOUT,
    );
    match out.status.code() {
        Some(0) => true,
        Some(BUSY) => false,
        _ => panic!(
            "flock {mode} {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A process holding a `flock` of `path` in `mode` until dropped; returns
/// once it holds it.
fn hold(path: &Path, mode: &str) -> Background {
    // The shell opens the file, locks it and becomes `sleep` holding it,
    // so killing that one process ends the lock.
    let script = format!("exec 9<'{}' && flock {mode} 9 && exec sleep 120", path.display());
    let holder = Background::start(&["sh", "-c", &script]);
    let conflicting = if mode == "-s" { "-x" } else { "-s" };
    wait_for("the holder to take the lock", Duration::from_secs(10), || {
        !try_flock(path, conflicting)
    });
    holder
}

fn cell_with_file() -> (Cell, Mount, Mount) {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    std::fs::write(a.path().join("session"), b"data").unwrap();
    wait_for("the file to reach node B", Duration::from_secs(5), || {
        b.path().join("session").exists()
    });
    (cell, a, b)
}

#[test]
fn flock_excludes_processes_on_the_node_and_on_other_nodes() {
    let (_cell, a, b) = cell_with_file();
    let (fa, fb) = (a.path().join("session"), b.path().join("session"));

    let holder = hold(&fa, "-x");
    assert!(!try_flock(&fa, "-x"), "another process on node A took a held lock");
    assert!(!try_flock(&fb, "-x"), "node B took a lock node A holds");
    assert!(
        !try_flock(&fb, "-s"),
        "node B took a shared lock under an exclusive one"
    );

    // A process on B waits for the lock and gets it once A's holder exits.
    let mut waiter = Background::start(&["flock", "-x", "-w", "60", fb.to_str().unwrap(), "true"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiter.0.try_wait().unwrap().is_none(), "the waiter did not wait");
    drop(holder);
    let status = wait_timeout(&mut waiter.0, Duration::from_secs(20)).expect("the waiter never got the lock");
    assert!(status.success(), "the waiter failed: {status}");
    assert!(
        try_flock(&fa, "-x") && try_flock(&fb, "-x"),
        "the lock outlived its holders"
    );

    // Shared locks share across nodes and keep writers out.
    let _reader = hold(&fa, "-s");
    assert!(try_flock(&fb, "-s"), "node B was refused a shared lock beside A's");
    assert!(
        !try_flock(&fb, "-x"),
        "node B took an exclusive lock beside A's shared one"
    );
}

#[test]
fn a_process_waiting_for_a_lock_can_be_killed() {
    let (_cell, a, b) = cell_with_file();
    let _holder = hold(&a.path().join("session"), "-x");
    let fb = b.path().join("session");
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let mut waiter = Background::start(&["flock", "-x", fb.to_str().unwrap(), "true"]);
        std::thread::sleep(Duration::from_millis(300));
        assert!(waiter.0.try_wait().unwrap().is_none(), "the waiter did not wait");
        waiter.signal(signal);
        let status = wait_timeout(&mut waiter.0, Duration::from_secs(10));
        assert!(status.is_some(), "a waiter stayed blocked after signal {signal}");
        assert!(!status.unwrap().success());
    }
    // The node keeps serving, and its lock table is not left wedged.
    assert_eq!(std::fs::read(&fb).unwrap(), b"data");
    assert!(!try_flock(&fb, "-x"));
}

fn fcntl_lock(f: &File, cmd: i32, typ: i32, start: i64, len: i64) -> std::io::Result<libc::flock> {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // SAFETY: a valid open descriptor and a valid, writable flock.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) };
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

#[test]
fn fcntl_locks_exclude_across_nodes_and_end_with_close() {
    let (_cell, a, b) = cell_with_file();
    let open = |m: &Mount| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.path().join("session"))
            .unwrap()
    };
    let (fa, fb) = (open(&a), open(&b));
    fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 10).expect("first write lock");
    // Byte ranges are exact on a node; across nodes a lock holds the file.
    common::assert_errno(
        fcntl_lock(&fb, libc::F_SETLK, libc::F_WRLCK, 100, 10),
        libc::EAGAIN,
        "a write lock on node B while A holds one",
    );
    let seen = fcntl_lock(&fb, libc::F_GETLK, libc::F_RDLCK, 100, 10).unwrap();
    assert_eq!(
        i32::from(seen.l_type),
        libc::F_WRLCK,
        "F_GETLK on B did not report A's lock"
    );
    // Unlocking on A lets B in; B's lock then keeps A out.
    fcntl_lock(&fa, libc::F_SETLK, libc::F_UNLCK, 0, 0).unwrap();
    fcntl_lock(&fb, libc::F_SETLK, libc::F_RDLCK, 100, 10).expect("B's read lock after A unlocked");
    common::assert_errno(
        fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0),
        libc::EAGAIN,
        "a write lock on A under B's read lock",
    );
    fcntl_lock(&fa, libc::F_SETLK, libc::F_RDLCK, 0, 0).expect("read locks share");
    // Closing a file drops the process's locks on it (POSIX).
    drop(fb);
    let seen = fcntl_lock(&fa, libc::F_GETLK, libc::F_WRLCK, 0, 0).unwrap();
    assert_eq!(i32::from(seen.l_type), libc::F_UNLCK, "B's lock outlived its close");
    fcntl_lock(&fa, libc::F_SETLK, libc::F_WRLCK, 0, 0).expect("A's write lock after B closed");
}
