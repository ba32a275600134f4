//! POSIX behaviour of one cache manager mount over a real fileserver.

mod common;

use cellfs::{Cell, Mount};
use common::{
    assert_errno, cache_files, close_checked, pattern, server_lookup, server_root, sha256, sha256_file, statvfs,
};
use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

#[test]
fn files_of_many_sizes_read_back_also_after_remount_with_an_empty_cache() {
    let cell = Cell::new();
    let sizes = [0usize, 1, 15 * 1024, 100 << 20];
    let mut expected = Vec::new();
    {
        let mount = Mount::new(&cell);
        for (i, size) in sizes.into_iter().enumerate() {
            let data = pattern(size, i as u64);
            let path = mount.path().join(format!("f{size}"));
            fs::write(&path, &data).unwrap();
            expected.push((format!("f{size}"), size as u64, sha256(&data)));
        }
        for (name, size, hash) in &expected {
            let path = mount.path().join(name);
            assert_eq!(fs::metadata(&path).unwrap().len(), *size, "{name}");
            assert_eq!(sha256_file(&path), *hash, "{name} read back");
        }
    }
    let mount = Mount::new(&cell);
    for (name, size, hash) in &expected {
        let path = mount.path().join(name);
        assert_eq!(fs::metadata(&path).unwrap().len(), *size, "{name} after remount");
        assert_eq!(sha256_file(&path), *hash, "{name} after remount");
    }
}

#[test]
fn append_and_truncate() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let path = mount.path().join("log.txt");
    fs::write(&path, b"hello").unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), b"hello world");

    let data = pattern(1000, 7);
    fs::write(&path, &data).unwrap();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(10).unwrap();
    drop(f);
    assert_eq!(fs::read(&path).unwrap(), &data[..10]);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(100).unwrap();
    drop(f);
    let back = fs::read(&path).unwrap();
    assert_eq!(back.len(), 100);
    assert_eq!(&back[..10], &data[..10]);
    assert!(back[10..].iter().all(|b| *b == 0), "extension is not zeros");
    drop(OpenOptions::new().write(true).truncate(true).open(&path).unwrap());
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);

    // The server holds the final state, not just this client's cache.
    let fresh = Mount::new(&cell);
    assert_eq!(fs::metadata(fresh.path().join("log.txt")).unwrap().len(), 0);
}

#[test]
fn rename_within_a_volume() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let m = mount.path();
    fs::write(m.join("a"), b"A").unwrap();
    fs::write(m.join("b"), b"B").unwrap();
    fs::create_dir(m.join("d")).unwrap();
    fs::rename(m.join("a"), m.join("d/a2")).unwrap();
    assert_errno(fs::metadata(m.join("a")), libc::ENOENT, "old name after rename");
    assert_eq!(fs::read(m.join("d/a2")).unwrap(), b"A");
    fs::rename(m.join("d/a2"), m.join("b")).unwrap();
    assert_eq!(
        fs::read(m.join("b")).unwrap(),
        b"A",
        "rename did not replace the target"
    );
    fs::rename(m.join("d"), m.join("e")).unwrap();
    assert!(fs::metadata(m.join("e")).unwrap().is_dir());
    let names: BTreeSet<String> = fs::read_dir(m)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["b".to_owned(), "e".to_owned()]));
}

#[test]
fn rename_across_volumes_fails_with_exdev() {
    let cell = Cell::new();
    cell.vos_ok(["create", "other"]);
    cell.vos_ok(["mkmount", "/other", "other"]);
    let mount = Mount::new(&cell);
    let m = mount.path();
    assert!(fs::metadata(m.join("other")).unwrap().is_dir());
    fs::write(m.join("a"), b"A").unwrap();
    assert_errno(
        fs::rename(m.join("a"), m.join("other/a")),
        libc::EXDEV,
        "rename across volumes",
    );
    fs::write(m.join("other/b"), b"B").unwrap();
    assert_errno(
        fs::rename(m.join("other/b"), m.join("b")),
        libc::EXDEV,
        "rename back across volumes",
    );
    assert_eq!(fs::read(m.join("a")).unwrap(), b"A");
    assert_eq!(fs::read(m.join("other/b")).unwrap(), b"B");
}

#[test]
fn unlink() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let p = mount.path().join("gone");
    fs::write(&p, b"x").unwrap();
    fs::remove_file(&p).unwrap();
    assert_errno(File::open(&p), libc::ENOENT, "open after unlink");
    assert_errno(fs::remove_file(&p), libc::ENOENT, "second unlink");
    assert_eq!(fs::read_dir(mount.path()).unwrap().count(), 0);
}

#[test]
fn mkdir_and_rmdir() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let d = mount.path().join("d");
    fs::create_dir(&d).unwrap();
    fs::create_dir_all(d.join("x/y/z")).unwrap();
    fs::write(d.join("f"), b"1").unwrap();
    assert_errno(fs::remove_dir(&d), libc::ENOTEMPTY, "rmdir of a non-empty directory");
    assert_errno(
        fs::remove_dir(d.join("x")),
        libc::ENOTEMPTY,
        "rmdir of a directory holding a directory",
    );
    fs::remove_file(d.join("f")).unwrap();
    fs::remove_dir(d.join("x/y/z")).unwrap();
    fs::remove_dir(d.join("x/y")).unwrap();
    fs::remove_dir(d.join("x")).unwrap();
    assert_eq!(fs::metadata(&d).unwrap().nlink(), 2);
    fs::remove_dir(&d).unwrap();
    assert_errno(fs::metadata(&d), libc::ENOENT, "stat after rmdir");
}

#[test]
fn readdir_lists_ten_thousand_entries() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let d = mount.path().join("big");
    fs::create_dir(&d).unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..10_000 {
        let name = format!("entry-{i:05}");
        File::create(d.join(&name)).unwrap();
        expected.insert(name);
    }
    let listed: Vec<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed.len(), 10_000, "entries listed more than once or missing");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);
    let fresh = Mount::new(&cell);
    assert_eq!(fs::read_dir(fresh.path().join("big")).unwrap().count(), 10_000);
}

#[test]
fn symlinks() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let m = mount.path();
    fs::write(m.join("target"), b"through the link").unwrap();
    std::os::unix::fs::symlink("target", m.join("link")).unwrap();
    std::os::unix::fs::symlink("/no/such/place", m.join("dangling")).unwrap();
    assert!(fs::symlink_metadata(m.join("link")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(m.join("link")).unwrap().to_str(), Some("target"));
    assert_eq!(
        fs::read_link(m.join("dangling")).unwrap().to_str(),
        Some("/no/such/place")
    );
    assert_eq!(fs::read(m.join("link")).unwrap(), b"through the link");
    assert_errno(fs::read_link(m.join("target")), libc::EINVAL, "readlink of a file");
}

#[test]
fn hard_links() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let m = mount.path();
    fs::write(m.join("a"), b"first").unwrap();
    fs::hard_link(m.join("a"), m.join("b")).unwrap();
    let (ma, mb) = (fs::metadata(m.join("a")).unwrap(), fs::metadata(m.join("b")).unwrap());
    assert_eq!(ma.nlink(), 2);
    assert_eq!(mb.nlink(), 2);
    assert_eq!(ma.ino(), mb.ino());
    fs::write(m.join("b"), b"second, longer").unwrap();
    assert_eq!(fs::read(m.join("a")).unwrap(), b"second, longer");
    fs::remove_file(m.join("a")).unwrap();
    assert_eq!(fs::metadata(m.join("b")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.join("b")).unwrap(), b"second, longer");
    fs::create_dir(m.join("d")).unwrap();
    assert_errno(
        fs::hard_link(m.join("d"), m.join("d2")),
        libc::EPERM,
        "hard link to a directory",
    );
}

#[test]
fn chmod_chown_utimes_show_in_stat() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let p = mount.path().join("f");
    fs::write(&p, b"x").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let meta = fs::metadata(&p).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    let mtime = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    let atime = UNIX_EPOCH + Duration::from_secs(1_100_000_000);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_times(FileTimes::new().set_modified(mtime).set_accessed(atime))
        .unwrap();
    drop(f);
    let meta = fs::metadata(&p).unwrap();
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!(meta.atime(), 1_100_000_000);
    // Another client sees what the server stored.
    let fresh = Mount::new(&cell);
    let meta = fs::metadata(fresh.path().join("f")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.mtime(), 1_000_000_000);
}

#[test]
fn statfs_answers_and_reports_a_volume_quota() {
    let cell = Cell::new();
    cell.vos_ok(["create", "quota.vol", "--quota", "1GiB"]);
    cell.vos_ok(["mkmount", "/q", "quota.vol"]);
    let mount = Mount::new(&cell);
    let root = statvfs(mount.path());
    assert!(root.f_bsize > 0 && root.f_frsize > 0);
    assert!(root.f_bfree <= root.f_blocks && root.f_bavail <= root.f_blocks);
    assert_eq!(root.f_namemax, 255);
    // Without a quota, the server disk that holds the volume (a monitor's
    // `df` on a web node sees that disk fill up).
    let disk = statvfs(cell.data_dir());
    let (shown, real) = (root.f_blocks * root.f_frsize, disk.f_blocks * disk.f_frsize);
    assert!(
        shown.abs_diff(real) < 4096,
        "statfs of a volume without a quota shows {shown} bytes; the server's disk has {real}"
    );
    let q = statvfs(&mount.path().join("q"));
    assert_eq!(
        q.f_blocks * q.f_frsize,
        1 << 30,
        "statfs inside a volume shows its quota"
    );
}

#[test]
fn fsync_stores_on_the_server_before_close() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let mut f = File::create(mount.path().join("synced")).unwrap();
    f.write_all(&pattern(5000, 3)).unwrap();
    f.sync_all().unwrap();
    let root = server_root(&cell);
    let st = server_lookup(&cell, root.fid, "synced");
    assert_eq!(st.size, 5000, "fsync did not store the data on the server");
    f.write_all(b"more").unwrap();
    f.sync_data().unwrap();
    assert_eq!(server_lookup(&cell, root.fid, "synced").size, 5004);
    drop(f);
}

#[test]
fn errors_have_the_right_errno() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let m = mount.path();
    fs::write(m.join("file"), b"x").unwrap();
    fs::create_dir(m.join("dir")).unwrap();
    fs::write(m.join("dir/inner"), b"y").unwrap();

    assert_errno(File::open(m.join("missing")), libc::ENOENT, "open missing");
    assert_errno(fs::metadata(m.join("missing/x")), libc::ENOENT, "stat under missing");
    assert_errno(
        OpenOptions::new().write(true).create_new(true).open(m.join("file")),
        libc::EEXIST,
        "O_EXCL create",
    );
    assert_errno(fs::create_dir(m.join("dir")), libc::EEXIST, "mkdir existing");
    assert_errno(fs::create_dir(m.join("file")), libc::EEXIST, "mkdir over a file");
    assert_errno(fs::remove_dir(m.join("dir")), libc::ENOTEMPTY, "rmdir non-empty");
    assert_errno(
        OpenOptions::new().write(true).open(m.join("dir")),
        libc::EISDIR,
        "open dir for writing",
    );
    assert_errno(fs::remove_file(m.join("dir")), libc::EISDIR, "unlink a directory");
    assert_errno(File::open(m.join("file/x")), libc::ENOTDIR, "open under a file");
    assert_errno(fs::create_dir(m.join("file/x")), libc::ENOTDIR, "mkdir under a file");
    assert_errno(fs::remove_dir(m.join("file")), libc::ENOTDIR, "rmdir a file");
    assert_errno(fs::read_dir(m.join("file")), libc::ENOTDIR, "readdir a file");
    let long = "n".repeat(256);
    assert_errno(File::create(m.join(&long)), libc::ENAMETOOLONG, "256-byte name");
    assert_errno(
        fs::create_dir(m.join(&long)),
        libc::ENAMETOOLONG,
        "256-byte directory name",
    );
    let longest = "n".repeat(255);
    File::create(m.join(&longest)).unwrap();
    assert!(fs::metadata(m.join(&longest)).unwrap().is_file());
    let mut buf = Vec::new();
    File::open(m.join("file")).unwrap().read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"x");
}

#[test]
fn sigterm_unmounts_cleanly_and_keeps_the_data() {
    let cell = Cell::new();
    let mut mount = Mount::new(&cell);
    let data = pattern(70_000, 11);
    fs::write(mount.path().join("kept"), &data).unwrap();
    let mnt = mount.path().to_path_buf();
    assert!(
        mount.unmount(),
        "the cache manager did not exit cleanly on SIGTERM\n{}",
        mount.log()
    );
    assert!(!cellfs::is_mounted(&mnt), "SIGTERM left the mount behind");
    drop(mount);
    let fresh = Mount::new(&cell);
    assert_eq!(sha256_file(&fresh.path().join("kept")), sha256(&data));
}

/// `mknod` through `libc` (std has no wrapper).
fn mknod(path: &std::path::Path, mode: libc::mode_t, dev: libc::dev_t) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    match unsafe { libc::mknod(c.as_ptr(), mode, dev) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[test]
fn fifos_sockets_and_device_nodes_are_made_and_seen_by_another_node() {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let m = a.path();
    mknod(&m.join("pipe"), libc::S_IFIFO | 0o640, 0).unwrap();
    mknod(&m.join("chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3)).unwrap();
    mknod(&m.join("blk"), libc::S_IFBLK | 0o600, libc::makedev(8, 1)).unwrap();
    mknod(&m.join("plain"), libc::S_IFREG | 0o604, 0).unwrap();
    assert_errno(
        mknod(&m.join("pipe"), libc::S_IFIFO | 0o640, 0),
        libc::EEXIST,
        "mknod over a name",
    );

    // The pipe and the socket work between processes of one node.
    let writer = {
        let p = m.join("pipe");
        std::thread::spawn(move || fs::write(p, b"through the pipe").unwrap())
    };
    assert_eq!(fs::read(m.join("pipe")).unwrap(), b"through the pipe");
    writer.join().unwrap();
    let listener = UnixListener::bind(m.join("sock")).unwrap();
    let mut client = UnixStream::connect(m.join("sock")).unwrap();
    client.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    listener.accept().unwrap().0.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    // Device nodes are never opened as devices: cellfs mounts are nodev.
    assert_errno(File::open(m.join("chr")), libc::EACCES, "open a device node");

    for (node, root) in [("A", a.path()), ("B", b.path())] {
        let t = |name: &str| fs::symlink_metadata(root.join(name)).unwrap();
        assert!(t("pipe").file_type().is_fifo(), "{node}: pipe");
        assert_eq!(t("pipe").mode() & 0o7777, 0o640, "{node}: pipe mode");
        assert!(t("sock").file_type().is_socket(), "{node}: socket");
        assert!(t("chr").file_type().is_char_device(), "{node}: chr");
        assert_eq!(t("chr").rdev(), libc::makedev(1, 3), "{node}: chr rdev");
        assert!(t("blk").file_type().is_block_device(), "{node}: blk");
        assert_eq!(t("blk").rdev(), libc::makedev(8, 1), "{node}: blk rdev");
        assert!(t("plain").is_file(), "{node}: plain");
        assert_eq!(
            (t("plain").mode() & 0o7777, t("plain").len()),
            (0o604, 0),
            "{node}: plain"
        );
    }
    // They rename, link, chmod and go like any other name.
    fs::rename(b.path().join("pipe"), b.path().join("pipe2")).unwrap();
    fs::set_permissions(b.path().join("chr"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(b.path().join("blk")).unwrap();
    let names: BTreeSet<String> = fs::read_dir(m)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["chr", "pipe2", "plain", "sock"].map(String::from).into());
    assert_eq!(fs::metadata(m.join("chr")).unwrap().mode() & 0o7777, 0o644);
}

#[test]
fn a_file_removed_while_open_stays_usable_until_closed() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let m = a.path();

    // Removed here: fstat, reads, fchmod and ftruncate still work, nlink 0.
    fs::write(m.join("read"), b"kept while open").unwrap();
    let mut f = File::open(m.join("read")).unwrap();
    fs::remove_file(m.join("read")).unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    let mut got = String::new();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "kept while open");
    drop(f);

    let mut w = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(m.join("tmp"))
        .unwrap();
    w.write_all(b"scratch").unwrap();
    fs::remove_file(m.join("tmp")).unwrap();
    w.set_permissions(fs::Permissions::from_mode(0o600)).unwrap();
    w.set_len(3).unwrap();
    let st = w.metadata().unwrap();
    assert_eq!((st.mode() & 0o7777, st.len(), st.nlink()), (0o600, 3, 0));
    // Its close has nothing to store and says so without an error.
    drop(w);
    assert_errno(fs::metadata(m.join("tmp")), libc::ENOENT, "the removed name");

    // Removed by another node: this node's open file stays readable.
    fs::write(m.join("shared"), b"still here").unwrap();
    let mut f = File::open(m.join("shared")).unwrap();
    fs::remove_file(b.path().join("shared")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fs::metadata(m.join("shared")).is_ok() {
        assert!(std::time::Instant::now() < deadline, "A never saw B's removal");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    let mut got = String::new();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "still here");

    // Removed by another node while written here: the close says the
    // writes went nowhere, and the node keeps nothing of the file after it.
    let copies = || cache_files(a.cache_dir()).len();
    let before = copies();
    let mut w = File::create(m.join("written")).unwrap();
    w.write_all(b"unstored").unwrap();
    // The create reaches the server about one round trip after the open
    // returns (it may be answered on the node, `core/early.rs`).
    cellfs::wait_for("B to see the new file", Duration::from_secs(5), || {
        b.path().join("written").exists()
    });
    fs::remove_file(b.path().join("written")).unwrap();
    assert_errno(close_checked(w), libc::ESTALE, "close of a file another node removed");
    // The kernel sends the handle's RELEASE after close returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while copies() != before {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed file's copy outlived its close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(m.join("after"), b"y").unwrap();
    assert_eq!(fs::read(b.path().join("after")).unwrap(), b"y");
    assert_errno(
        fs::metadata(b.path().join("written")),
        libc::ENOENT,
        "B: the removed name",
    );
}

#[test]
fn a_size_the_server_disk_cannot_hold_is_efbig_not_eio() {
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let f = File::create(mount.path().join("huge")).unwrap();
    // ext4 (what CI runs on) caps a file at 16 TiB; a file system that
    // holds this size sparsely may take it.
    match f.set_len(999_999_999_999_999) {
        Ok(()) => {}
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "{e}"),
    }
}

/// A set-group-ID folder (a site's shared uploads folder, group-writable)
/// gives its group to the files, links and folders made in it, and its
/// set-group-ID bit to the folders, as a local disk does: the kernel leaves
/// this to FUSE filesystems.
#[test]
fn a_set_group_id_folder_gives_its_group_and_bit_to_what_is_made_in_it() {
    let cell = Cell::new();
    let m = Mount::new(&cell);
    let d = m.path().join("shared");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, None, Some(3000)).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o2775)).unwrap();
    fs::write(d.join("f"), b"x").unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink("f", d.join("l")).unwrap();
    let (f, sub, l) = (
        fs::metadata(d.join("f")).unwrap(),
        fs::metadata(d.join("sub")).unwrap(),
        fs::symlink_metadata(d.join("l")).unwrap(),
    );
    assert_eq!((f.gid(), sub.gid(), l.gid()), (3000, 3000, 3000));
    assert_ne!(sub.mode() & 0o2000, 0, "the new folder is set-group-ID");
    assert_eq!(f.mode() & 0o2000, 0, "the new file is not");
    // Outside such a folder the creator's group stays.
    fs::write(m.path().join("g"), b"y").unwrap();
    assert_eq!(fs::metadata(m.path().join("g")).unwrap().gid(), 0);
}

/// Extended attributes are not kept: setting, reading, listing and removing
/// one answer `EOPNOTSUPP` (what `cp -a` and `rsync -X` take quietly), and
/// the cache manager logs no warning for them.
#[test]
fn extended_attributes_are_refused_quietly() {
    use std::os::unix::ffi::OsStrExt;
    let cell = Cell::new();
    let mount = Mount::new(&cell);
    let path = mount.path().join("page.html");
    fs::write(&path, b"<html>").unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = c"user.origin";
    let errno = || std::io::Error::last_os_error().raw_os_error();
    for _ in 0..2 {
        // SAFETY: `c` and `name` are NUL-terminated and outlive the calls;
        // the value and buffer are valid for the lengths given.
        unsafe {
            assert_eq!(
                libc::setxattr(c.as_ptr(), name.as_ptr(), b"x".as_ptr().cast(), 1, 0),
                -1
            );
            assert_eq!(errno(), Some(libc::EOPNOTSUPP), "setxattr");
            assert_eq!(libc::removexattr(c.as_ptr(), name.as_ptr()), -1);
            assert_eq!(errno(), Some(libc::EOPNOTSUPP), "removexattr");
            let mut buf = [0u8; 64];
            assert_eq!(
                libc::getxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64),
                -1
            );
            assert_eq!(errno(), Some(libc::EOPNOTSUPP), "getxattr");
            assert!(
                libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), 64) <= 0,
                "listxattr"
            );
        }
    }
    assert_eq!(fs::read(&path).unwrap(), b"<html>");
    let log = mount.log();
    assert!(!log.contains("Not Implemented"), "warnings in the log:\n{log}");
}
