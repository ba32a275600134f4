//! Disconnected operation and crash safety (issue 3).
//!
//! Contract under test: when the fileserver does not answer within the
//! request timeout (2 s by default) the node is "down". Cached files and
//! directories then keep serving reads (open, read, stat, readdir, readlink)
//! with their last known content, even with expired promises; reads of
//! anything uncached fail with `EHOSTDOWN`; changes (create, mkdir, unlink,
//! rename, chmod, open for write) fail with `EROFS`; a write that was open when
//! the server went away fails fsync/close with `EIO`, its bytes are kept in
//! the cache folder's `unstored/` and stored once the server is back, unless
//! the file changed there meanwhile (then they go to `lost+found/`). No
//! operation hangs: each is asserted to return within [`OP_BOUND`] (a hang
//! check, not a speed test).
//!
//! The network is cut with the harness [`Proxy`] between node B and the
//! fileserver; node A is mounted directly and keeps talking to the server.

mod common;

use cellfs::{Cell, Mount, Proxy, wait_for};
use common::{assert_errno, pattern};
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every filesystem operation on a disconnected node must return within this.
const OP_BOUND: Duration = Duration::from_secs(5);
/// How long a node may take to notice that the fileserver is back.
const RECONNECT_BOUND: Duration = Duration::from_secs(10);
/// Promise lifetime for the tests that need expired promises.
const SHORT_PROMISE_SECS: u64 = 1;
/// Size of the small cached files.
const SMALL: usize = 15 * 1024;

/// Runs `op` on a helper thread and returns its result, failing the test if
/// it takes [`OP_BOUND`] or longer. A hung FUSE request cannot be cancelled:
/// the helper thread stays blocked until the test's `Mount` guards kill the
/// cache manager during unwinding, which fails the request with `ENOTCONN`.
#[track_caller]
fn bounded<T: Send + 'static>(what: &str, op: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(op());
    });
    match rx.recv_timeout(OP_BOUND) {
        Ok(v) => {
            let took = start.elapsed();
            assert!(took < OP_BOUND, "{what} took {took:?} (bound {OP_BOUND:?})");
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not return within {OP_BOUND:?}: hung"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let path = path.to_owned();
    bounded(&format!("read {}", path.display()), move || fs::read(path))
}

fn stat(path: &Path) -> std::io::Result<fs::Metadata> {
    let path = path.to_owned();
    bounded(&format!("stat {}", path.display()), move || fs::metadata(path))
}

fn list(dir: &Path) -> std::io::Result<BTreeSet<String>> {
    let dir = dir.to_owned();
    bounded(&format!("readdir {}", dir.display()), move || {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    })
}

/// Closes `file` with close(2) and returns what close reported.
fn close(file: File, what: &str) -> std::io::Result<()> {
    bounded(what, move || {
        let fd = file.into_raw_fd();
        // SAFETY: `fd` was just released by `into_raw_fd` and is closed exactly once here.
        let rc = unsafe { libc::close(fd) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
}

/// `fs::write` that also reports what close(2) says: std's `File` ignores
/// close errors on drop, and close is where a store failure shows.
fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is closed exactly once here.
    let rc = unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bytes of every file under `dir`, recursively (empty when `dir` is missing).
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

/// A tree of small files written through a mount: `d{i}/f{j}`.
struct Tree {
    files: Vec<(String, Vec<u8>)>,
    dirs: Vec<String>,
}

impl Tree {
    fn write(mount: &Path, dirs: usize, per_dir: usize, seed: u64) -> Self {
        let mut tree = Tree {
            files: Vec::new(),
            dirs: Vec::new(),
        };
        for d in 0..dirs {
            let dir = format!("d{d}");
            fs::create_dir(mount.join(&dir)).unwrap();
            for f in 0..per_dir {
                let name = format!("{dir}/f{f}");
                let data = pattern(SMALL, seed * 1_000_000 + (d * per_dir + f) as u64);
                write_file(&mount.join(&name), &data).unwrap_or_else(|e| panic!("write {name}: {e}"));
                tree.files.push((name, data));
            }
            tree.dirs.push(dir);
        }
        tree
    }

    fn names_in(&self, dir: &str) -> BTreeSet<String> {
        self.files
            .iter()
            .filter_map(|(name, _)| name.strip_prefix(&format!("{dir}/")).map(str::to_owned))
            .collect()
    }

    /// Reads every file (and lists every directory) through `mount`, each
    /// operation bounded, and asserts the bytes.
    fn check(&self, mount: &Path, when: &str) {
        for dir in &self.dirs {
            let names = list(&mount.join(dir)).unwrap_or_else(|e| panic!("{when}: readdir {dir}: {e}"));
            let expected = self.names_in(dir);
            assert!(
                expected.is_subset(&names),
                "{when}: {dir} lists {} names, missing {:?}",
                names.len(),
                expected.difference(&names).take(5).collect::<Vec<_>>()
            );
        }
        for (name, data) in &self.files {
            let path = mount.join(name);
            let md = stat(&path).unwrap_or_else(|e| panic!("{when}: stat {name}: {e}"));
            assert_eq!(md.len(), data.len() as u64, "{when}: size of {name}");
            let got = read(&path).unwrap_or_else(|e| panic!("{when}: read {name}: {e}"));
            assert!(got == *data, "{when}: {name} read {} wrong bytes", got.len());
        }
    }
}

/// A change to attempt on a disconnected node.
type Change = Box<dyn FnOnce() -> std::io::Result<()> + Send>;

/// How the node loses the fileserver.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The proxy drops every datagram; both processes live on.
    Network,
    /// `kill -9` of the fileserver, not restarted.
    KillServer,
}

fn cached_tree_serves_reads_and_refuses_changes_while_disconnected(cut: Cut) {
    let mut cell = Cell::with_promise_secs(SHORT_PROMISE_SECS);
    let proxy = Proxy::new(cell.addr());
    let a = Mount::new(&cell);
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");

    // 1,000 small files in 10 directories, plus what B will not cache.
    let tree = Tree::write(a.path(), 10, 100, 1);
    // Past the size up to which B fetches a folder's small files together.
    write_file(&a.path().join("d0/unread"), &[b'u'; 100_000]).unwrap();
    fs::create_dir(a.path().join("cold")).unwrap();
    write_file(&a.path().join("cold/page"), b"B never lists this folder").unwrap();
    std::os::unix::fs::symlink("d0/f0", a.path().join("link")).unwrap();
    fs::create_dir(a.path().join("w")).unwrap();

    // B caches every file, every listing and the symlink.
    tree.check(b.path(), "B while connected");
    let root_names = list(b.path()).unwrap();
    assert!(
        root_names.contains("cold") && root_names.contains("link"),
        "{root_names:?}"
    );
    assert_eq!(fs::read_link(b.path().join("link")).unwrap(), Path::new("d0/f0"));
    assert!(proxy.stats().to_server > 0, "B does not go through the proxy");

    // Two writes in progress on B: created on the server, bytes only local.
    let pending = [("w/fsynced", pattern(40_000, 77)), ("w/closed", pattern(50_000, 78))];
    let mut open_files: Vec<File> = pending
        .iter()
        .map(|(name, data)| {
            let mut f = File::create(b.path().join(name)).unwrap();
            f.write_all(data).unwrap();
            f
        })
        .collect();
    // In a network cut A still reaches the server and replaces this file
    // while B's write of it waits: B's write must not overwrite A's.
    let contested = (pattern(30_000, 79), pattern(20_000, 80));
    let contested_on_b = matches!(cut, Cut::Network).then(|| {
        let mut f = File::create(b.path().join("w/contested")).unwrap();
        f.write_all(&contested.0).unwrap();
        f
    });

    // Every promise B holds expires: disconnected mode must serve the cache anyway.
    std::thread::sleep(Duration::from_millis(SHORT_PROMISE_SECS * 1000 + 1500));
    match cut {
        Cut::Network => proxy.drop_all(),
        Cut::KillServer => cell.kill(),
    }
    let cut_at = Instant::now();

    // Reads of everything cached, with the last known content.
    tree.check(b.path(), &format!("B disconnected ({cut:?})"));
    assert_eq!(list(b.path()).unwrap(), root_names, "root listing while disconnected");
    let target = bounded("readlink", {
        let p = b.path().join("link");
        move || fs::read_link(p)
    });
    assert_eq!(target.unwrap(), Path::new("d0/f0"), "readlink while disconnected");
    assert!(stat(&b.path().join("d3")).unwrap().is_dir());
    // The cached listing of d0 says this name does not exist.
    assert_errno(
        stat(&b.path().join("d0/missing")),
        libc::ENOENT,
        "lookup of a missing name",
    );
    eprintln!("all cached reads served {:?} after the cut", cut_at.elapsed());

    // Reads of what is not cached: EHOSTDOWN.
    assert_errno(
        read(&b.path().join("d0/unread")),
        libc::EHOSTDOWN,
        "read of an uncached file",
    );
    assert_errno(
        read(&b.path().join("cold/page")),
        libc::EHOSTDOWN,
        "read in an uncached folder",
    );
    assert_errno(
        list(&b.path().join("cold")),
        libc::EHOSTDOWN,
        "readdir of an uncached folder",
    );

    // Changes: EROFS, and nothing changes locally either.
    let d0 = b.path().join("d0");
    let changes: Vec<(&str, Change)> = vec![
        ("create", {
            let p = d0.join("new");
            Box::new(move || File::create(p).map(drop))
        }),
        ("open for write", {
            let p = d0.join("f0");
            Box::new(move || OpenOptions::new().write(true).open(p).map(drop))
        }),
        ("open for append", {
            let p = d0.join("f0");
            Box::new(move || OpenOptions::new().append(true).open(p).map(drop))
        }),
        ("mkdir", {
            let p = d0.join("newdir");
            Box::new(move || fs::create_dir(p))
        }),
        ("unlink", {
            let p = d0.join("f1");
            Box::new(move || fs::remove_file(p))
        }),
        ("rename", {
            let (from, to) = (d0.join("f2"), d0.join("f2.moved"));
            Box::new(move || fs::rename(from, to))
        }),
        ("chmod", {
            let p = d0.join("f3");
            Box::new(move || fs::set_permissions(p, fs::Permissions::from_mode(0o600)))
        }),
    ];
    for (what, op) in changes {
        assert_errno(bounded(what, op), libc::EROFS, &format!("{what} while disconnected"));
    }
    assert_errno(stat(&d0.join("new")), libc::ENOENT, "a refused create left a name");
    assert_errno(stat(&d0.join("f2.moved")), libc::ENOENT, "a refused rename left a name");
    assert_eq!(
        read(&d0.join("f1")).unwrap(),
        tree.files[1].1,
        "d0/f1 after a refused unlink"
    );
    assert_eq!(
        read(&d0.join("f0")).unwrap(),
        tree.files[0].1,
        "d0/f0 after refused writes"
    );
    assert_ne!(
        stat(&d0.join("f3")).unwrap().mode() & 0o777,
        0o600,
        "a refused chmod changed the mode"
    );

    // The writes in progress: EIO from fsync (then close may report it again)
    // and from close alone; their bytes are kept to be stored later.
    let closed = open_files.pop().unwrap();
    let fsynced = open_files.pop().unwrap();
    let synced = bounded("fsync of an unstored write", move || {
        let r = fsynced.sync_all();
        (r, fsynced)
    });
    assert_errno(synced.0, libc::EIO, "fsync of a write the server never got");
    if let Err(e) = close(synced.1, "close after a failed fsync") {
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "close after a failed fsync: {e}");
    }
    assert_errno(
        close(closed, "close of an unstored write"),
        libc::EIO,
        "close of a write the server never got",
    );
    if let Some(f) = contested_on_b {
        write_file(&a.path().join("w/contested"), &contested.1).unwrap();
        assert_errno(
            close(f, "close of a contested write"),
            libc::EIO,
            "close of a write the server never got",
        );
    }
    let kept = files_under(&b.unstored_dir());
    for (name, data) in &pending {
        assert!(
            kept.iter().any(|(_, bytes)| bytes.ends_with(data)),
            "the bytes written to {name} are not kept in {} (it holds {:?})",
            b.unstored_dir().display(),
            kept.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
        );
    }
    assert_eq!(b.status()["unstored_writes"].as_u64(), Some(kept.len() as u64));
    eprintln!("whole disconnected check took {:?} after the cut", cut_at.elapsed());

    // The server is back: B stores what it kept, and A reads it.
    match cut {
        Cut::Network => proxy.pass(),
        Cut::KillServer => cell.start(),
    }
    for (name, data) in &pending {
        poll_reconnect(&format!("A reads B's kept write of {name}"), || {
            let got = read(&a.path().join(name)).ok()?;
            assert!(
                got.is_empty() || got == *data,
                "{name} on A: {} bytes, neither empty nor B's write",
                got.len()
            );
            (got == *data).then_some(())
        });
        assert_eq!(read(&b.path().join(name)).unwrap(), *data, "{name} on B");
    }
    if matches!(cut, Cut::Network) {
        // B's write of the file A replaced is given up, not stored over A's.
        let lost = poll_reconnect("B gives up its contested write", || {
            let lost = files_under(&b.lost_found_dir());
            (!lost.is_empty()).then_some(lost)
        });
        assert!(
            lost.iter().any(|(_, bytes)| *bytes == contested.0),
            "lost+found holds {:?}",
            lost.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
        );
        assert_eq!(
            read(&a.path().join("w/contested")).unwrap(),
            contested.1,
            "A's version on A"
        );
        assert_eq!(
            read(&b.path().join("w/contested")).unwrap(),
            contested.1,
            "A's version on B"
        );
    }
    poll_reconnect("B's unstored folder empties", || {
        files_under(&b.unstored_dir()).is_empty().then_some(())
    });
    assert_eq!(b.status()["unstored_writes"].as_u64(), Some(0));
}

#[test]
fn network_cut_cached_files_serve_uncached_fail_ehostdown_changes_fail_erofs() {
    cached_tree_serves_reads_and_refuses_changes_while_disconnected(Cut::Network);
}

#[test]
fn fileserver_killed_cached_files_serve_uncached_fail_ehostdown_changes_fail_erofs() {
    cached_tree_serves_reads_and_refuses_changes_while_disconnected(Cut::KillServer);
}

/// Polls `attempt` until it returns `Some`, for at most [`RECONNECT_BOUND`].
/// Only for waiting out an asynchronous reconnection; `attempt` must panic
/// on any state that is wrong even while reconnecting.
#[track_caller]
fn poll_reconnect<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + RECONNECT_BOUND;
    loop {
        if let Some(v) = attempt() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within {RECONNECT_BOUND:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// B is cut off while A changes a file and creates one; after the network
/// heals, B sees both. With `b_notices`, promises are short and B finds out
/// it is disconnected before A's changes; without, B holds long promises and
/// stays idle, so the server's breaks are lost in the cut and B must still
/// not keep serving the old bytes under its old promise.
fn changes_made_while_cut_off_are_seen_after_heal(b_notices: bool) {
    let cell = if b_notices {
        Cell::with_promise_secs(SHORT_PROMISE_SECS)
    } else {
        Cell::new()
    };
    let proxy = Proxy::new(cell.addr());
    let a = Mount::new(&cell);
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");
    let tree = Tree::write(a.path(), 10, 10, 2);
    let v1 = pattern(SMALL, 901);
    let v2 = pattern(SMALL + 100, 902);
    fs::create_dir(a.path().join("site")).unwrap();
    write_file(&a.path().join("site/page.html"), &v1).unwrap();
    tree.check(b.path(), "B before the cut");
    assert_eq!(read(&b.path().join("site/page.html")).unwrap(), v1);
    assert!(!list(&b.path().join("site")).unwrap().contains("new.html"));

    if b_notices {
        std::thread::sleep(Duration::from_millis(SHORT_PROMISE_SECS * 1000 + 1500));
    }
    proxy.drop_all();
    if b_notices {
        // Expired promise, no server: B goes down and serves its cache.
        assert_eq!(read(&b.path().join("site/page.html")).unwrap(), v1, "B while cut off");
        let p = b.path().join("site/x");
        assert_errno(
            bounded("create while cut off", move || File::create(p).map(drop)),
            libc::EROFS,
            "B is not disconnected",
        );
    }

    // A is connected: its changes commit (the server gives up on B's
    // acknowledgements after its break timeout), and A must not take the
    // server's wait for an unreachable B as the server being down.
    bounded("A writes while B is cut off", {
        let (p, v2) = (a.path().join("site/page.html"), v2.clone());
        move || write_file(&p, &v2)
    })
    .unwrap_or_else(|e| panic!("A (connected) could not write while only B was cut off: {e}"));
    bounded("A creates while B is cut off", {
        let p = a.path().join("site/new.html");
        move || write_file(&p, b"new page")
    })
    .unwrap_or_else(|e| panic!("A (connected) could not create while only B was cut off: {e}"));
    proxy.pass();

    // Polling is justified here only because reconnection is asynchronous
    // (a background probe with backoff): until B is back it may serve its last
    // known page or refuse; any other content fails at once.
    let page = b.path().join("site/page.html");
    poll_reconnect("B reads the page changed during the cut", || match read(&page) {
        Ok(bytes) if bytes == v2 => Some(()),
        Ok(bytes) if bytes == v1 => None,
        Ok(bytes) => panic!("B read {} bytes that are neither version", bytes.len()),
        Err(e) => {
            eprintln!("B not back yet: {e}");
            None
        }
    });
    let new = b.path().join("site/new.html");
    poll_reconnect("B sees the page created during the cut", || match read(&new) {
        Ok(bytes) => {
            assert_eq!(bytes, b"new page");
            Some(())
        }
        Err(e) => {
            eprintln!("B does not see new.html yet: {e}");
            None
        }
    });
    assert!(list(&b.path().join("site")).unwrap().contains("new.html"));
    tree.check(b.path(), "B after the heal (unchanged files)");

    // B holds working promises again: A's next change reaches it at once.
    write_file(&a.path().join("site/page.html"), b"v3").unwrap();
    assert_eq!(read(&page).unwrap(), b"v3", "B missed a change after reconnecting");
}

#[test]
fn reconnect_a_node_that_noticed_the_cut_sees_what_changed_after_heal() {
    changes_made_while_cut_off_are_seen_after_heal(true);
}

#[test]
fn reconnect_breaks_lost_in_a_short_cut_are_not_missed_after_heal() {
    changes_made_while_cut_off_are_seen_after_heal(false);
}

/// A write whose close found the fileserver gone is kept on disk: a node
/// restarted before the server comes back stores it when it starts, and
/// keeps nothing after.
#[test]
fn a_write_kept_through_an_outage_is_stored_by_the_restarted_node() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let mut b = Mount::new(&cell);
    fs::create_dir(a.path().join("up")).unwrap();
    let data = pattern(70_000, 81);
    let path = b.path().join("up/upload");
    let mut f = File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    cell.kill();
    assert_errno(
        close(f, "close with the server gone"),
        libc::EIO,
        "close of an unstored write",
    );
    assert!(b.unmount(), "the cache manager did not stop cleanly");
    let kept = files_under(&b.unstored_dir());
    assert!(
        kept.len() == 1 && kept[0].1.ends_with(&data),
        "kept: {:?}",
        kept.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>()
    );
    cell.start();
    b.mount_again(&cell.config_path(), "2GiB");
    let got = poll_reconnect("A reads the write B kept", || {
        let got = read(&a.path().join("up/upload")).ok()?;
        assert!(got.is_empty() || got == data, "{} bytes on A", got.len());
        (got == data).then_some(got)
    });
    assert_eq!(got.len(), data.len());
    assert!(files_under(&b.unstored_dir()).is_empty(), "B still keeps the write");
    assert!(files_under(&b.lost_found_dir()).is_empty(), "B gave the write up");
}

/// The server answers a create before it is durable; the close of the new
/// file stores it, even with nothing written, and that makes the create
/// durable too: files closed empty just before a `kill -9` of the
/// fileserver are all there after it, on a node that never saw them.
#[test]
fn files_closed_empty_just_before_a_fileserver_crash_are_there_after_it() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let names: Vec<String> = (0..30).map(|i| format!("empty{i}")).collect();
    for name in &names {
        File::create(a.path().join(name)).unwrap();
    }
    cell.restart(); // kill -9, then the same data and port
    let b = Mount::new(&cell);
    for name in &names {
        let meta = poll_reconnect("B sees a file closed before the crash", || {
            fs::metadata(b.path().join(name)).ok()
        });
        assert_eq!(meta.len(), 0, "{name}");
    }
}

#[test]
fn fileserver_restart_keeps_a_warm_cache_valid_and_changes_after_it_are_seen() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let tree = Tree::write(a.path(), 10, 100, 3);
    tree.check(b.path(), "B before the restart");

    cell.restart(); // kill -9, then the same data and port
    // Nothing changed: every cached file reads right at once, whether B has
    // noticed the restart yet or not.
    tree.check(b.path(), "B after the restart");

    // A new file proves both nodes talk to the new server process (bounded
    // retries while they reconnect; reconnection is asynchronous).
    let probe = a.path().join("probe");
    poll_reconnect("A writes after the restart", || {
        match bounded("A writes", {
            let p = probe.clone();
            move || write_file(&p, b"p")
        }) {
            Ok(()) => Some(()),
            Err(e) => {
                eprintln!("A not reconnected yet: {e}");
                None
            }
        }
    });
    poll_reconnect("B reads a file created after the restart", || {
        match read(&b.path().join("probe")) {
            Ok(bytes) => {
                assert_eq!(bytes, b"p");
                Some(())
            }
            Err(e) => {
                eprintln!("B not reconnected yet: {e}");
                None
            }
        }
    });
    let (name, old) = &tree.files[357];
    let new = pattern(SMALL, 4242);
    assert_ne!(*old, new);
    write_file(&a.path().join(name), &new).unwrap();
    assert!(
        read(&b.path().join(name)).unwrap() == new,
        "B read stale bytes of {name}"
    );
}

/// An unclean restart moves every folder's version, so a node's
/// revalidation drops every listing it held. Should the server go down
/// again before the node lists them anew, the folders' cached files must
/// still be found (by the listings last known), not fail with `EHOSTDOWN`.
#[test]
fn a_second_crash_before_a_node_relists_its_folders_leaves_them_readable() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let tree = Tree::write(a.path(), 3, 20, 5);
    tree.check(b.path(), "B before the crashes");
    let before = b.status()["last_revalidation"].clone();

    cell.restart(); // kill -9, then the same data and port
    wait_for("B revalidating after the restart", Duration::from_secs(30), || {
        let s = b.status();
        s["up"] == true && !s["last_revalidation"].is_null() && s["last_revalidation"] != before
    });
    let changed = b.status()["last_revalidation"]["changed"].as_u64().unwrap_or(0);
    assert!(
        changed >= tree.dirs.len() as u64,
        "the unclean restart should leave every folder's listing out of date, {changed} changed"
    );

    cell.kill();
    tree.check(b.path(), "B after the second crash");
}

/// A node whose fileserver address now leads to a cell that does not
/// trust it (the cell initialised again, here another cell) keeps serving
/// its cache, says so in its status and once in its log, and tries again
/// at the slow pace, not every probe interval: the other server sees one
/// handshake from it in the seconds after.
#[test]
fn a_node_facing_a_cell_initialised_again_serves_its_cache_and_says_why() {
    let cell = Cell::new();
    let other = Cell::new();
    let proxy = Proxy::new(cell.addr());
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");
    write_file(&b.path().join("page.html"), b"cached").unwrap();
    assert_eq!(read(&b.path().join("page.html")).unwrap(), b"cached");
    proxy.redirect(other.addr());
    // A request finds the server gone; the probes then meet the other cell.
    let p = b.path().join("uncached");
    let _ = bounded("stat after the redirect", move || fs::metadata(p));
    let status = poll_reconnect("B reports the refused certificates", || {
        let s = b.status();
        s["refused"].as_bool().unwrap_or(false).then_some(s)
    });
    assert_eq!(status["up"].as_bool(), Some(false), "{status}");
    assert_eq!(read(&b.path().join("page.html")).unwrap(), b"cached", "cached read");
    let refused_at = other.log().matches("handshake failed").count();
    std::thread::sleep(Duration::from_secs(3));
    let tries = other.log().matches("handshake failed").count() - refused_at;
    assert!(tries <= 1, "{tries} more handshakes in 3 s");
    let said = b.log().matches("do not trust each other's certificates").count();
    assert_eq!(said, 1, "the refusal is logged {said} times");
}

#[test]
fn a_slow_network_is_not_down_and_lost_replies_are() {
    let cell = Cell::new();
    let proxy = Proxy::new(cell.addr());
    let a = Mount::new(&cell);
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");
    let tree = Tree::write(a.path(), 2, 10, 5);
    // In folders of their own (B fetches a folder's small files together),
    // listed before the tree's (B reads the folder after one it reads).
    fs::create_dir(a.path().join("0slow")).unwrap();
    fs::create_dir(a.path().join("0late")).unwrap();
    write_file(&a.path().join("0slow/fetched-slowly"), b"slow").unwrap();
    write_file(&a.path().join("0late/never-answered"), b"late").unwrap();
    tree.check(b.path(), "B connected");

    // 200 ms each way: slower than loopback, far inside the request timeout.
    proxy.delay(Duration::from_millis(200));
    assert_eq!(
        read(&b.path().join("0slow/fetched-slowly")).unwrap(),
        b"slow",
        "fetch over a slow network"
    );
    bounded("B writes over a slow network", {
        let p = b.path().join("from-b");
        move || write_file(&p, b"written slowly")
    })
    .unwrap_or_else(|e| panic!("B refused a write on a slow but working network: {e}"));
    assert_eq!(fs::read(a.path().join("from-b")).unwrap(), b"written slowly");

    // B's requests reach the server but no answer comes back: B is down.
    proxy.drop_to_client();
    assert_errno(
        read(&b.path().join("0late/never-answered")),
        libc::EHOSTDOWN,
        "fetch whose reply is lost",
    );
    tree.check(b.path(), "B with its replies lost");

    proxy.pass();
    // Reconnection is asynchronous: poll, bounded.
    poll_reconnect("B fetches again after the heal", || {
        match read(&b.path().join("0late/never-answered")) {
            Ok(bytes) => {
                assert_eq!(bytes, b"late");
                Some(())
            }
            Err(e) => {
                eprintln!("B not back yet: {e}");
                None
            }
        }
    });
}

#[test]
fn a_reader_of_a_file_still_arriving_fails_soon_when_the_network_is_cut() {
    let cell = Cell::new();
    let proxy = Proxy::new(cell.addr());
    let a = Mount::new(&cell);
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");
    let len = 64 << 20;
    let data = pattern(len, 31);
    write_file(&a.path().join("big"), &data).unwrap();
    // 150 ms each way: the fetch's windows take it several seconds, so the
    // cut comes while the file is still arriving.
    proxy.delay(Duration::from_millis(150));
    let mut file = File::open(b.path().join("big")).unwrap();
    let mut first = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut file, &mut first).unwrap();
    assert_eq!(first[..], data[..first.len()], "the first MiB");
    proxy.drop_all();

    // The rest of the file cannot come: the reader must learn so within the
    // bound (about the request timeout), not after the connection's idle
    // timeout and a reconnection attempt.
    let (read, err) = bounded("reading on after the cut", move || {
        let mut rest = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match std::io::Read::read(&mut file, &mut buf) {
                Ok(0) => return (rest, None),
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(e) => return (rest, Some(e)),
            }
        }
    });
    let got = first.len() + read.len();
    assert!(
        got < len,
        "the whole file arrived before the cut: make the fetch slower"
    );
    assert_eq!(read[..], data[first.len()..got], "bytes read before the error");
    assert_errno(
        Err::<(), _>(err.expect("an error")),
        libc::EHOSTDOWN,
        "reading past what arrived",
    );
}

/// B opens `f` (A's `v1`) for writing, writes `X` at 0, and its fsync fails
/// in an outage, `cut` (the bytes kept; a killed server is started again);
/// `change_on_a` writes `v2` on A during a network cut. After the heal B
/// writes `Y` at 20,000 on the same descriptor and closes it. Returns the cell, its proxy and mounts (alive for the
/// caller's checks), the close's outcome and the contents (v1, v2 and what
/// B wrote over v1).
type AfterFsync = ((Cell, Proxy, Mount, Mount), std::io::Result<()>, [Vec<u8>; 3]);
fn write_after_a_failed_fsync(cut: Cut, change_on_a: bool) -> AfterFsync {
    use std::os::unix::fs::FileExt;
    let mut cell = Cell::new();
    let proxy = Proxy::new(cell.addr());
    let a = Mount::new(&cell);
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");
    let (v1, v2) = (pattern(40_000, 41), pattern(30_000, 42));
    write_file(&a.path().join("f"), &v1).unwrap();
    assert_eq!(read(&b.path().join("f")).unwrap(), v1);
    let mut ours = v1.clone();
    ours[..1000].fill(b'X');
    ours[20_000..21_000].fill(b'Y');

    let f = OpenOptions::new().write(true).open(b.path().join("f")).unwrap();
    f.write_all_at(&[b'X'; 1000], 0).unwrap();
    match cut {
        Cut::Network => proxy.drop_all(),
        Cut::KillServer => cell.kill(),
    }
    let (synced, f) = bounded("fsync in an outage", move || (f.sync_all(), f));
    assert_errno(synced, libc::EIO, "fsync the server never got");
    if change_on_a {
        write_file(&a.path().join("f"), &v2).unwrap();
    }
    match cut {
        Cut::Network => proxy.pass(),
        Cut::KillServer => cell.start(),
    }
    poll_reconnect("B writes again after the heal", || {
        write_file(&b.path().join("probe"), b"p").ok()
    });
    f.write_all_at(&[b'Y'; 1000], 20_000).unwrap();
    let closed = close(f, "close after a failed fsync");
    ((cell, proxy, a, b), closed, [v1, v2, ours])
}

#[test]
fn writes_after_a_failed_fsync_in_a_cut_are_stored_with_the_kept_ones_after_it() {
    writes_after_a_failed_fsync_are_stored_with_the_kept_ones(Cut::Network);
}

#[test]
fn writes_after_a_failed_fsync_are_stored_with_the_kept_ones_by_a_restarted_server() {
    writes_after_a_failed_fsync_are_stored_with_the_kept_ones(Cut::KillServer);
}

fn writes_after_a_failed_fsync_are_stored_with_the_kept_ones(cut: Cut) {
    let ((_cell, _proxy, a, b), closed, [_, _, ours]) = write_after_a_failed_fsync(cut, false);
    closed.unwrap_or_else(|e| panic!("the close after the heal failed: {e}"));
    assert_eq!(
        read(&a.path().join("f")).unwrap(),
        ours,
        "A reads both the fsynced write and the one after it"
    );
    assert_eq!(read(&b.path().join("f")).unwrap(), ours, "B reads the same");
    assert!(files_under(&b.lost_found_dir()).is_empty(), "B's own writes conflicted");
    // The kept write went with the close's store (or is dropped soon after).
    poll_reconnect("the kept write is done with", || {
        files_under(&b.unstored_dir()).is_empty().then_some(())
    });
    assert!(
        files_under(&b.lost_found_dir()).is_empty(),
        "B's own writes conflicted later"
    );
    assert_eq!(
        read(&a.path().join("f")).unwrap(),
        ours,
        "A after the kept writes settled"
    );
}

#[test]
fn writes_after_a_failed_fsync_over_a_file_changed_elsewhere_go_to_lost_found_whole() {
    let ((_cell, _proxy, a, b), closed, [_, v2, ours]) = write_after_a_failed_fsync(Cut::Network, true);
    assert_errno(closed, libc::EIO, "close of writes made on a version changed elsewhere");
    let lost = poll_reconnect("B's writes reach lost+found", || {
        let lost = files_under(&b.lost_found_dir());
        (!lost.is_empty() && files_under(&b.unstored_dir()).is_empty()).then_some(lost)
    });
    assert_eq!(
        lost.iter().map(|(_, bytes)| bytes.clone()).collect::<Vec<_>>(),
        vec![ours],
        "lost+found holds B's whole file, once"
    );
    assert_eq!(
        read(&a.path().join("f")).unwrap(),
        v2,
        "A's version is not mixed with B's writes"
    );
    assert_eq!(read(&b.path().join("f")).unwrap(), v2, "B reads A's version");
}

/// What `got` is, in terms of the versions written (for failure messages).
fn describe(got: &[u8], versions: &[Vec<u8>]) -> String {
    if let Some(v) = versions.iter().position(|v| v == got) {
        return format!("v{}", v + 1);
    }
    let matches: Vec<String> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let same = got.iter().zip(v).take_while(|(a, b)| a == b).count();
            let zeros = got.iter().filter(|b| **b == 0).count();
            format!("v{}: first {same} bytes equal ({zeros} zero bytes in all)", i + 1)
        })
        .collect();
    format!("{} bytes, neither version (a mix?): {}", got.len(), matches.join("; "))
}

/// Content of version `v` of file `i` written by node `node`.
fn version(node: usize, i: usize, v: usize) -> Vec<u8> {
    pattern(64 * 1024, 7_000_000 + (node * 1000 + i) as u64 * 10 + v as u64)
}

#[test]
fn kill_9_of_the_fileserver_during_concurrent_stores_leaves_every_file_whole() {
    const FILES: usize = 250; // × 2 nodes × 2 versions = 1,000 stores
    const VERSIONS: usize = 2;
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    fs::create_dir(a.path().join("from0")).unwrap();
    fs::create_dir(a.path().join("from1")).unwrap();

    // Two writers, one per node, each file written as v1 then v2. Errors
    // while the server is down are expected; each outcome is recorded. The
    // threads get paths, not the guards, so a failing test still unmounts
    // (which also frees a writer stuck in a hung request).
    let progress = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for (node, root) in [a.path().to_owned(), b.path().to_owned()].into_iter().enumerate() {
        let (progress, tx) = (progress.clone(), tx.clone());
        std::thread::spawn(move || {
            let mut ok = vec![[false; VERSIONS]; FILES];
            for (i, ok) in ok.iter_mut().enumerate() {
                let path = root.join(format!("from{node}/f{i}"));
                for (v, ok) in ok.iter_mut().enumerate() {
                    *ok = write_file(&path, &version(node, i, v)).is_ok();
                    if !*ok {
                        // Pace the failures so writing resumes after the restart.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            let _ = tx.send((node, ok));
        });
    }
    drop(tx);
    let total = 2 * FILES * VERSIONS;
    // Two kills: a short one that clients ride out by retrying, and one
    // longer than the request timeout, so the nodes go disconnected and
    // writes in progress fail (EIO, EROFS).
    let mut kills = Vec::new();
    for (at, down) in [
        (total / 4, Duration::from_millis(300)),
        (total / 2, Duration::from_secs(3)),
    ] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress.load(Ordering::Relaxed) < at {
            assert!(Instant::now() < deadline, "writers made no progress in 60 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        cell.kill();
        kills.push(progress.load(Ordering::Relaxed));
        std::thread::sleep(down);
        cell.start();
    }
    assert!(
        kills.iter().all(|at| *at < total),
        "the writers finished before a kill ({kills:?} of {total}); nothing was tested"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outcomes = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (node, ok) = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "the writers did not finish within 120 s of the last restart ({} of {total} writes done)",
                progress.load(Ordering::Relaxed)
            )
        });
        outcomes[node] = ok;
    }
    let failed: usize = outcomes.iter().flatten().flatten().filter(|ok| !**ok).count();
    eprintln!("killed after {kills:?} of {total} writes; {failed} writes failed");

    // A fresh node (cold cache) checks what the server holds.
    let c = Mount::new(&cell);
    for (node, files) in outcomes.iter().enumerate() {
        for (i, ok) in files.iter().enumerate() {
            let name = format!("from{node}/f{i}");
            let versions: Vec<Vec<u8>> = (0..VERSIONS).map(|v| version(node, i, v)).collect();
            let got = match fs::read(c.path().join(&name)) {
                Ok(bytes) => bytes,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    assert!(
                        !ok.iter().any(|ok| *ok),
                        "{name}: a write succeeded but the file is gone"
                    );
                    continue;
                }
                Err(e) => panic!("{name}: {e}"),
            };
            let len = fs::metadata(c.path().join(&name)).unwrap().len();
            assert_eq!(len, got.len() as u64, "{name}: size in metadata differs from the data");
            let which = versions.iter().position(|v| *v == got);
            match (which, ok) {
                // The last successful write must be what is there.
                (Some(1), _) => {}
                (_, [_, true]) => panic!(
                    "{name}: v2 was stored (close returned success) but the file holds {}",
                    describe(&got, &versions)
                ),
                (Some(0), _) => {}
                // A truncate may have committed without the bytes after it.
                (None, _) if got.is_empty() => {}
                (None, _) => panic!("{name}: {}; writes ok: {ok:?}", describe(&got, &versions)),
                (Some(v), _) => unreachable!("version index {v}"),
            }
        }
    }
    // The salvager finds metadata and data files consistent.
    cell.kill();
    let mut salvage = std::process::Command::new(cellfs::bin("cellfs-fileserver"));
    salvage.arg("salvage").arg("--data").arg(cell.data_dir());
    let out = cellfs::output_with_timeout(&mut salvage, Duration::from_secs(60));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("all clean"),
        "salvage after the crashes:\n{report}"
    );
}
