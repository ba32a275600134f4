//! The whole-file cache: bounded by --cache-size with LRU eviction, and store
//! errors reported by fsync and close.

mod common;

use cellfs::{Cell, Mount, wait_for};
use common::{cache_files, pattern, sha256, sha256_file};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes held in the cache folder's data files.
fn cached_bytes(cache: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let md = e.metadata().unwrap();
                        if md.is_dir() { walk(&e.path()) } else { md.len() }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(cache)
}

#[test]
fn the_cache_stays_within_its_size_and_evicted_files_are_fetched_again() {
    let cell = Cell::new();
    let writer = Mount::new(&cell);
    let mut files = Vec::new();
    for i in 0..12u64 {
        let data = pattern(256 << 10, i);
        fs::write(writer.path().join(format!("f{i}")), &data).unwrap();
        files.push((format!("f{i}"), sha256(&data)));
    }
    // 12 × 256 KiB = 3 MiB through a 1 MiB cache.
    let reader = Mount::with_cache_size(&cell, "1MiB");
    for _ in 0..2 {
        for (name, hash) in &files {
            assert_eq!(sha256_file(&reader.path().join(name)), *hash, "{name}");
            let used = cached_bytes(reader.cache_dir());
            assert!(used <= 1 << 20, "cache holds {used} bytes, over its 1 MiB limit");
        }
    }
}

#[test]
fn an_open_file_is_not_evicted_even_when_it_alone_exceeds_the_cache() {
    let cell = Cell::new();
    let writer = Mount::new(&cell);
    let big = pattern(3 << 20, 7);
    fs::write(writer.path().join("big"), &big).unwrap();
    fs::write(writer.path().join("small"), pattern(4096, 8)).unwrap();
    let reader = Mount::with_cache_size(&cell, "1MiB");
    let mut open = File::open(reader.path().join("big")).unwrap();
    // Another fetch forces eviction while `big` is open.
    fs::read(reader.path().join("small")).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut open, &mut back).unwrap();
    assert_eq!(sha256(&back), sha256(&big));
}

#[test]
fn quota_exceeded_is_reported_by_fsync_and_close_and_changes_nothing() {
    let cell = Cell::new();
    cell.vos_ok(["create", "small.vol", "--quota", "1MiB"]);
    cell.vos_ok(["mkmount", "/small", "small.vol"]);
    let mount = Mount::new(&cell);
    let dir = mount.path().join("small");
    fs::write(dir.join("keep"), b"kept").unwrap();

    let mut f = File::create(dir.join("big")).unwrap();
    f.write_all(&pattern(2 << 20, 1)).unwrap();
    let err = f.sync_all().expect_err("fsync past the quota must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    // close(2) reports it as well.
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is closed once here.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EDQUOT));

    // Nothing reached the server: a fresh node sees an empty file and the old one intact.
    let other = Mount::new(&cell);
    assert_eq!(fs::metadata(other.path().join("small/big")).unwrap().len(), 0);
    assert_eq!(fs::read(other.path().join("small/keep")).unwrap(), b"kept");

    // Within the quota, the same node stores fine.
    fs::write(dir.join("fits"), pattern(512 << 10, 2)).unwrap();
    assert_eq!(fs::metadata(other.path().join("small/fits")).unwrap().len(), 512 << 10);
}

#[test]
fn bad_names_are_refused() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let long = "x".repeat(256);
    let err = File::create(mount.path().join(&long)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    let ok = "y".repeat(255);
    File::create(mount.path().join(&ok)).unwrap();
    assert!(mount.path().join(&ok).exists());
}

/// A tmpfs of a few MiB mounted for one test, unmounted on drop.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "cannot mount a tmpfs for the cache");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_cache_disk_gives_enospc_to_the_writer_and_corrupts_nothing() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let kept = pattern(256 << 10, 3);
    fs::write(a.path().join("kept"), &kept).unwrap();
    let disk = SmallDisk::new("4m");
    let b = Mount::with_cache_folder(&cell, &cell.config_path(), Some(disk.0.path()), "1GiB");
    assert_eq!(sha256_file(&b.path().join("kept")), sha256(&kept));
    let err = fs::write(b.path().join("huge"), pattern(16 << 20, 4)).expect_err("16 MiB cannot fit a 4 MiB cache disk");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    // What was there is intact on both nodes, and B keeps working.
    assert_eq!(sha256_file(&b.path().join("kept")), sha256(&kept));
    assert_eq!(sha256_file(&a.path().join("kept")), sha256(&kept));
    let small = pattern(4096, 5);
    fs::remove_file(b.path().join("huge")).unwrap();
    fs::write(b.path().join("small"), &small).unwrap();
    assert_eq!(sha256_file(&a.path().join("small")), sha256(&small));
    drop(b);
}

/// A write whose close finds the fileserver gone is kept on the cache disk.
/// When that disk is full of clean copies (it filled before the cache
/// reached its limit), they are evicted to make room: the write is
/// nowhere else. It reaches the server once it is back.
#[test]
fn a_write_kept_on_a_full_cache_disk_evicts_clean_copies_for_it() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    fs::create_dir(a.path().join("site")).unwrap();
    let cached: Vec<Vec<u8>> = (0..10).map(|i| pattern(256 << 10, 40 + i)).collect();
    for (i, data) in cached.iter().enumerate() {
        fs::write(a.path().join(format!("site/asset{i}")), data).unwrap();
    }
    let disk = SmallDisk::new("4m");
    let b = Mount::with_cache_folder(&cell, &cell.config_path(), Some(disk.0.path()), "1GiB");
    for (i, data) in cached.iter().enumerate() {
        assert_eq!(sha256_file(&b.path().join(format!("site/asset{i}"))), sha256(data));
    }
    // 2.5 MiB of clean copies and this 1 MiB leave no room for a second
    // copy of it on the 4 MiB disk.
    let upload = pattern(1 << 20, 50);
    let mut f = File::create(b.path().join("site/upload")).unwrap();
    f.write_all(&upload).unwrap();
    cell.kill();
    let closed = std::thread::spawn(move || drop(f));
    let _ = closed.join();
    let unstored = b.unstored_dir();
    let kept: Vec<u64> = fs::read_dir(&unstored)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        kept.len() == 1 && kept[0] > upload.len() as u64,
        "the write was not kept: {kept:?} in {}",
        unstored.display()
    );
    cell.start();
    let on_a = a.path().join("site/upload");
    wait_for("A to read the write B kept", Duration::from_secs(30), || {
        fs::read(&on_a).is_ok_and(|got| got == upload)
    });
    // The evicted copies come back from the server.
    for (i, data) in cached.iter().enumerate() {
        assert_eq!(sha256_file(&b.path().join(format!("site/asset{i}"))), sha256(data));
    }
}

/// Writes a new folder `site` on `mount` holding `incNNN.php` files of
/// `sizes`, the i-th with pattern `seed + i`; returns the folder and the bytes.
fn write_site(mount: &Mount, sizes: impl Iterator<Item = usize>, seed: u64) -> (PathBuf, Vec<Vec<u8>>) {
    let site = mount.path().join("site");
    fs::create_dir(&site).unwrap();
    let files: Vec<Vec<u8>> = sizes.enumerate().map(|(i, n)| pattern(n, seed + i as u64)).collect();
    for (i, data) in files.iter().enumerate() {
        fs::write(site.join(format!("inc{i:03}.php")), data).unwrap();
    }
    (site, files)
}

#[test]
fn a_cold_folder_of_small_files_arrives_in_a_few_round_trips() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let (site, small) = write_site(&a, (0..120).map(|i| 1_000 + i * 100), 0);
    // Too large to travel with the others, and an empty file.
    let large = pattern(300_000, 999);
    fs::write(site.join("video.mp4"), &large).unwrap();
    fs::write(site.join("empty.txt"), b"").unwrap();

    let b = Mount::new(&cell);
    let before = cell.stats().rpcs;
    for (i, data) in small.iter().enumerate() {
        assert_eq!(
            sha256_file(&b.path().join(format!("site/inc{i:03}.php"))),
            sha256(data),
            "inc{i:03}.php"
        );
    }
    let rpcs = cell.stats().rpcs - before;
    // Root and folder listings, then the 120 files in one batch (bounded at
    // 256 files / 4 MiB) sent as four FetchFiles at once, not one fetch per
    // file.
    assert!(rpcs <= 6, "{rpcs} RPCs to read 120 small files on a cold node");
    assert_eq!(sha256_file(&b.path().join("site/video.mp4")), sha256(&large));
    assert_eq!(fs::read(b.path().join("site/empty.txt")).unwrap(), b"");

    // A file changed on A after B fetched the batch: B reads the new bytes.
    fs::write(site.join("inc005.php"), b"changed").unwrap();
    assert_eq!(fs::read(b.path().join("site/inc005.php")).unwrap(), b"changed");
}

/// The small files a cold open brings with it go into the kernel's page
/// cache: reading them sends the cache manager no READ, and a change made on
/// another node afterwards still reaches the reader.
#[test]
fn a_cold_folders_small_files_are_read_without_read_requests() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let (site, files) = write_site(&a, (0..40).map(|i| 2_000 + i * 300), 500);
    let b = Mount::with_log_filter(
        &cell,
        "info,fuser=warn,cellfs_cachemanager::fuse=debug,cellfs_cachemanager::core=debug",
    );
    let on_b = b.path().join("site");
    // The listing gives the kernel every file's inode.
    assert_eq!(fs::read_dir(&on_b).unwrap().count(), files.len());
    assert_eq!(fs::read(on_b.join("inc000.php")).unwrap(), files[0]);
    let pushed = || -> usize {
        b.log()
            .lines()
            .filter_map(|l| {
                l.split("pushed=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    wait_for("the batch's pages in B's kernel", Duration::from_secs(30), || {
        pushed() >= files.len() - 1
    });
    // Changed on A after its pages went into B's kernel.
    fs::write(site.join("inc007.php"), b"changed on A").unwrap();
    let mut inos = Vec::new();
    for (i, data) in files.iter().enumerate().skip(1) {
        let path = on_b.join(format!("inc{i:03}.php"));
        let want: &[u8] = if i == 7 { b"changed on A" } else { data };
        assert_eq!(fs::read(&path).unwrap(), want, "inc{i:03}.php");
        if i != 7 {
            inos.push(fs::metadata(&path).unwrap().ino());
        }
    }
    let log = b.log();
    let reads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("op=\"read\"") && inos.iter().any(|ino| l.contains(&format!(" ino={ino} "))))
        .collect();
    assert!(
        reads.is_empty(),
        "READs for files whose pages were pushed:\n{}",
        reads.join("\n")
    );
}

/// A tree read folder by folder is read one folder ahead: the small files
/// of the folder after the one being read are on the node before anything
/// opens them (here: still readable once the fileserver is gone), and the
/// folder after that is not read until the reader reaches the next.
#[test]
fn the_folder_after_the_one_being_read_is_read_ahead() {
    const FILES: usize = 20;
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let tree = a.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let folders: Vec<Vec<Vec<u8>>> = (0..3u64)
        .map(|d| {
            fs::create_dir(tree.join(format!("d{d}"))).unwrap();
            (0..FILES as u64)
                .map(|i| {
                    let data = pattern(1_000 + i as usize * 50, d * 100 + i);
                    fs::write(tree.join(format!("d{d}/f{i:02}.php")), &data).unwrap();
                    data
                })
                .collect()
        })
        .collect();
    let b = Mount::new(&cell);
    let on_b = b.path().join("tree");
    for (i, data) in folders[0].iter().enumerate() {
        assert_eq!(fs::read(on_b.join(format!("d0/f{i:02}.php"))).unwrap(), *data);
    }
    let copies = || cache_files(b.cache_dir()).len();
    wait_for("d1's files in B's cache", Duration::from_secs(30), || {
        copies() >= 2 * FILES
    });
    assert_eq!(copies(), 2 * FILES, "read ahead past the next folder");
    cell.kill();
    for (i, data) in folders[1].iter().enumerate() {
        let path = on_b.join(format!("d1/f{i:02}.php"));
        assert_eq!(
            fs::read(&path).unwrap(),
            *data,
            "{} with the fileserver gone",
            path.display()
        );
    }
    assert!(
        fs::read(on_b.join("d2/f00.php")).is_err(),
        "d2 was read ahead before d1 was reached"
    );
}

#[test]
fn fetch_files_is_bounded_and_answers_per_file() {
    use cellfs::ClientError;
    use cellfs_protocol::message::{InlineFile, MAX_FETCH_FILES};
    use cellfs_protocol::transport::CallError;
    use cellfs_protocol::{ErrorCode, Reply, Request};
    use common::{server_lookup, server_root};

    let cell = Cell::new();
    let a = Mount::new(&cell);
    fs::write(a.path().join("small"), b"0123456789").unwrap();
    fs::create_dir(a.path().join("dir")).unwrap();
    let root = server_root(&cell);
    let small = server_lookup(&cell, root.fid, "small");
    let dir = server_lookup(&cell, root.fid, "dir");
    let bad = |req: Request, what: &str| match cell.call(&req) {
        Err(ClientError::Call(CallError::Rpc(e))) => assert_eq!(e.code, ErrorCode::BadRequest, "{what}: {e}"),
        other => panic!("{what}: expected BadRequest, got {other:?}"),
    };
    bad(
        Request::FetchFiles {
            fids: vec![small.fid; MAX_FETCH_FILES + 1],
            max_file: 1 << 20,
            max_total: 1 << 20,
        },
        "too many FIDs",
    );
    let mut other_volume = small.fid;
    other_volume.volume += 1;
    bad(
        Request::FetchFiles {
            fids: vec![small.fid, other_volume],
            max_file: 1 << 20,
            max_total: 1 << 20,
        },
        "FIDs of two volumes",
    );
    let ask = |max_file: u64| {
        let Reply::Files(files) = cell
            .call(&Request::FetchFiles {
                fids: vec![small.fid, dir.fid],
                max_file,
                max_total: u64::MAX,
            })
            .expect("FetchFiles")
        else {
            panic!("FetchFiles answered with another reply");
        };
        files
    };
    let files = ask(1 << 20);
    assert_eq!(files.len(), 2);
    assert!(matches!(&files[0], Ok(InlineFile { data: Some(d), .. }) if d == b"0123456789"));
    assert!(
        matches!(&files[1], Err(e) if e.code == ErrorCode::IsDir),
        "{:?}",
        files[1]
    );
    // Too large for the asked limit: the status without the bytes.
    let files = ask(5);
    assert!(matches!(&files[0], Ok(InlineFile { data: None, status }) if status.size == 10));
}

/// A large file fetched for a reader is read as it arrives: over a slow
/// link, the first block is served while the rest is still coming, a second
/// reader joins the same fetch, and the whole file then reads right.
#[test]
fn a_reader_of_the_first_block_does_not_wait_for_the_last() {
    use std::io::Read;
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let proxy = cellfs::Proxy::new(cell.addr());
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "2GiB");
    let data = pattern(96 << 20, 21);
    fs::write(a.path().join("video"), &data).unwrap();
    let on_b = b.path().join("video");
    cellfs::wait_for("B to see the file whole", std::time::Duration::from_secs(10), || {
        fs::metadata(&on_b).is_ok_and(|m| m.len() == data.len() as u64)
    });
    // 100 ms each way: the transfer takes seconds, the first block one trip.
    proxy.delay(std::time::Duration::from_millis(100));
    let mut reader = File::open(&on_b).unwrap();
    let mut first = vec![0u8; 64 << 10];
    reader.read_exact(&mut first).unwrap();
    assert!(first == data[..first.len()], "the first block read wrong");
    let status = b.status();
    let arriving: Vec<u64> = status["fetching"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["arrived"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        arriving.len() == 1 && arriving[0] < data.len() as u64,
        "the first block waited for the whole file: {status}"
    );
    // A second reader joins the fetch under way rather than starting one.
    let second = sha256_file(&on_b);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert_eq!(sha256(&first), sha256(&data), "the file read through the stream");
    assert_eq!(second, sha256(&data), "the second reader");
    proxy.pass();
    // Once whole, the copy is an ordinary cached one.
    assert!(b.status()["fetching"].as_array().is_some_and(|a| a.is_empty()));
    assert_eq!(sha256_file(&on_b), sha256(&data));
}

/// A second cache manager started on a cache folder in use is refused with
/// a clear error (after waiting a few seconds for the first to exit), and
/// the running one keeps its mount and its control socket.
#[test]
fn a_second_cache_manager_on_a_cache_folder_in_use_is_refused() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let cell = Cell::new();
    let cache = tempfile::tempdir().unwrap();
    let a = Mount::with_cache_folder(&cell, &cell.config_path(), Some(cache.path()), "1GiB");
    fs::write(a.path().join("f"), b"x").unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut second = Command::new(cellfs::bin("cellfs-cachemanager"))
        .arg("mount")
        .arg("--config")
        .arg(cell.config_path())
        .arg("--cache")
        .arg(cache.path())
        .arg(other.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = cellfs::wait_timeout(&mut second, Duration::from_secs(30)) else {
        let _ = second.kill();
        let _ = second.wait();
        let _ = Command::new("umount").arg("-l").arg(other.path()).status();
        panic!("a second cache manager ran on a cache folder in use");
    };
    let mut err = String::new();
    second.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("in use by another cache manager"), "{err}");
    assert!(!cellfs::is_mounted(other.path()));
    assert!(
        a.status()["nodes_known"].as_u64().is_some(),
        "the first mount's control socket"
    );
    assert_eq!(fs::read(a.path().join("f")).unwrap(), b"x");
}
