//! Volume administration through `cellfs-vos` against real fileservers and
//! mounts: quotas, rename and locks, backup clones, dump and restore.

mod common;

use cellfs::{Cell, Mount};
use common::{WholeReads, assert_errno, pattern, sha256, sha256_file, statvfs};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` and returns what close(2) said.
fn write_and_close(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is closed once here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// After a crash the server holds file changes back for a moment (its
/// grace, `fileserver/src/grace.rs`): `vos mkmount` waits it out.
#[test]
fn mkmount_right_after_a_server_crash_waits_out_the_grace() {
    let mut cell = Cell::new();
    cell.vos_ok(["create", "site.late"]);
    cell.restart();
    let out = cell.vos(["mkmount", "/late", "site.late"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vos mkmount failed: {stderr}");
    assert!(
        stderr.contains("just restarted"),
        "the server held nothing back (no grace), so this proves nothing: {stderr}"
    );
    let a = Mount::new(&cell);
    assert!(a.path().join("late").is_dir(), "the mount point is not there");
}

/// A backup made right after a server crash is held until the nodes
/// noticed the restart: a node that read the old clone before the crash
/// reads the new one right after `vos backup` returns. Made at once, the
/// backup's break would go to no one (the restarted server knows no
/// promises) while the node still trusted the old clone.
#[test]
fn a_backup_right_after_a_server_crash_reaches_a_node_holding_the_old_clone() {
    let mut cell = Cell::new();
    cell.vos_ok(["create", "site.www"]);
    cell.vos_ok(["mkmount", "/www", "site.www"]);
    let a = Mount::new(&cell);
    fs::write(a.path().join("www/index.php"), b"v1").unwrap();
    cell.vos_ok(["backup", "site.www"]);
    cell.vos_ok(["mkmount", "/www.bk", "site.www.backup"]);
    let in_clone = a.path().join("www.bk/index.php");
    assert_eq!(fs::read(&in_clone).unwrap(), b"v1");
    fs::write(a.path().join("www/index.php"), b"v2").unwrap();
    cell.restart();
    cell.vos_ok(["backup", "site.www"]);
    assert_eq!(
        fs::read(&in_clone).unwrap(),
        b"v2",
        "the node read the clone of before the crash after a new backup"
    );
    assert!(
        cell.log().contains("holding a volume operation"),
        "the server held nothing back (no grace), so this proves nothing"
    );
}

/// A store larger than the server drains when it refuses one (64 MiB)
/// made right after a crash: the refusal (the grace) reaches the node
/// although the server stops reading the bytes, and the node repeats it.
#[test]
fn a_large_store_right_after_a_server_crash_waits_out_the_grace() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    // Made before, so that the store at close is the only change after.
    fs::write(a.path().join("big"), b"small").unwrap();
    let data = pattern(80 << 20, 7);
    cell.restart();
    fs::write(a.path().join("big"), &data).expect("a large store right after the restart");
    let b = Mount::new(&cell);
    assert_eq!(sha256_file(&b.path().join("big")), sha256(&data));
}

#[test]
fn a_write_past_the_quota_fails_with_edquot_and_raising_the_quota_lets_it_through() {
    let cell = Cell::new();
    cell.vos_ok(["create", "site.quota", "--quota", "10MiB"]);
    cell.vos_ok(["mkmount", "/site", "site.quota"]);
    let a = Mount::new(&cell);
    let dir = a.path().join("site");
    let mut kept = Vec::new();
    for i in 0..9u64 {
        let data = pattern(1 << 20, i);
        fs::write(dir.join(format!("f{i}")), &data).unwrap();
        kept.push((format!("f{i}"), sha256(&data)));
    }
    let df = statvfs(&dir);
    assert_eq!(df.f_blocks * df.f_frsize, 10 << 20, "df shows the quota");
    let used = (df.f_blocks - df.f_bfree) * df.f_frsize;
    assert!(
        (9 << 20..=(9 << 20) + 65536).contains(&used),
        "df shows 9 MiB used, got {used}"
    );

    let big = pattern(2 << 20, 99);
    assert_errno(
        write_and_close(&dir.join("big"), &big),
        libc::EDQUOT,
        "the write crossing the quota",
    );
    // Past what the server drains of a store it refuses (64 MiB), its
    // answer still reaches the node.
    assert_errno(
        write_and_close(&dir.join("huge"), &pattern(80 << 20, 98)),
        libc::EDQUOT,
        "a write far past the quota",
    );

    // Nothing else changed: another node sees the kept files and an empty `big`.
    let b = Mount::new(&cell);
    for (name, hash) in &kept {
        assert_eq!(&sha256_file(&b.path().join("site").join(name)), hash, "{name}");
    }
    assert_eq!(fs::metadata(b.path().join("site/big")).unwrap().len(), 0);

    cell.vos_ok(["setquota", "site.quota", "20MiB"]);
    write_and_close(&dir.join("big"), &big).expect("the same write within the raised quota");
    assert_eq!(sha256_file(&b.path().join("site/big")), sha256(&big));
    let df = statvfs(&b.path().join("site"));
    assert_eq!(df.f_blocks * df.f_frsize, 20 << 20);
}

#[test]
fn rename_lock_and_unlock() {
    let cell = Cell::new();
    cell.vos_ok(["create", "site.old"]);
    cell.vos_ok(["lock", "site.old"]);
    let examined = cell.vos_ok(["examine", "site.old"]);
    assert!(examined.contains("locked:       by "), "{examined}");

    // A locked volume refuses admin operations and names the holder.
    for args in [
        vec!["setquota", "site.old", "1GiB"],
        vec!["rename", "site.old", "site.new"],
        vec!["backup", "site.old"],
        vec!["remove", "site.old"],
    ] {
        let out = cell.vos(&args);
        assert!(!out.status.success(), "{args:?} succeeded on a locked volume");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is locked by ") && err.contains("unlock"),
            "{args:?}: {err}"
        );
    }
    let out = cell.vos(["lock", "site.old"]);
    assert!(!out.status.success(), "a second lock succeeded");

    cell.vos_ok(["unlock", "site.old"]);
    let out = cell.vos(["unlock", "site.old"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not locked"));

    cell.vos_ok(["backup", "site.old"]);
    cell.vos_ok(["rename", "site.old", "site.new"]);
    let list = cell.vos_ok(["list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: HashSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains("site.new") && names.contains("site.new.backup"),
        "{names:?}"
    );
    assert!(
        !names.contains("site.old") && !names.contains("site.old.backup"),
        "{names:?}"
    );
    let bk = cell.vos_ok(["examine", "site.new.backup", "--format", "json"]);
    let bk: serde_json::Value = serde_json::from_str(&bk).unwrap();
    assert_eq!(bk["kind"], "Backup");
    assert_eq!(bk["parent"], "site.new");

    // Names kept for clones, the root volume and clashes are refused.
    for args in [
        vec!["create", "x.backup"],
        vec!["rename", "root.cell", "other"],
        vec!["rename", "site.new.backup", "other"],
        vec!["rename", "nosuch", "other"],
    ] {
        assert!(!cell.vos(&args).status.success(), "{args:?} succeeded");
    }
}

/// Bytes of disk the regular files under `dir` take, each inode once.
fn disk_usage(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let mut total = 0;
        for e in fs::read_dir(dir).unwrap().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                total += walk(&e.path(), seen);
            } else if seen.insert((md.dev(), md.ino())) {
                total += md.blocks() * 512;
            }
        }
        total
    }
    walk(dir, &mut HashSet::new())
}

#[test]
fn a_backup_clone_keeps_the_old_bytes_and_shares_unchanged_data() {
    let cell = Cell::new();
    cell.vos_ok(["create", "site.www"]);
    cell.vos_ok(["mkmount", "/www", "site.www"]);
    let a = Mount::new(&cell);
    let www = a.path().join("www");
    let mut old = HashMap::new();
    for i in 0..16u64 {
        let data = pattern(1 << 20, i);
        fs::write(www.join(format!("f{i}")), &data).unwrap();
        old.insert(format!("f{i}"), sha256(&data));
    }
    let volumes = cell.data_dir().join("volumes");
    let before = disk_usage(&volumes);
    cell.vos_ok(["backup", "site.www"]);
    let after_clone = disk_usage(&volumes);
    assert!(
        after_clone < before + (4 << 20),
        "a clone of 16 MiB copied data: {before} -> {after_clone} bytes"
    );
    cell.vos_ok(["mkmount", "/www.bk", "site.www.backup"]);

    // Change one file, delete another, add one in the read-write volume.
    fs::write(www.join("f0"), pattern(1 << 20, 100)).unwrap();
    fs::remove_file(www.join("f1")).unwrap();
    fs::write(www.join("new"), b"new").unwrap();
    let after_changes = disk_usage(&volumes);
    assert!(
        after_changes < after_clone + (1 << 20) + (3 << 20),
        "changing 1 MiB grew the disk by more than that: {after_clone} -> {after_changes}"
    );

    // The clone still shows the old state, on this node and a fresh one.
    let b = Mount::new(&cell);
    for m in [&a, &b] {
        let bk = m.path().join("www.bk");
        for (name, hash) in &old {
            assert_eq!(&sha256_file(&bk.join(name)), hash, "{name} in the clone");
        }
        assert!(!bk.join("new").exists());
        assert_errno(fs::write(bk.join("x"), b"x"), libc::EROFS, "create in a backup clone");
        assert_errno(
            fs::OpenOptions::new().write(true).open(bk.join("f2")),
            libc::EROFS,
            "open for writing in a clone",
        );
    }

    // Backup again: the clone now shows the new state, and follows on the node that read it.
    cell.vos_ok(["backup", "site.www"]);
    let bk = a.path().join("www.bk");
    assert_eq!(sha256_file(&bk.join("f0")), sha256(&pattern(1 << 20, 100)));
    assert!(!bk.join("f1").exists());
    assert_eq!(fs::read(bk.join("new")).unwrap(), b"new");
    // The server restarts with the clone linked: it still serves after.
    drop(b);
    let mut cell = cell;
    cell.restart();
    let c = Mount::new(&cell);
    assert_eq!(fs::read(c.path().join("www.bk/new")).unwrap(), b"new");
    assert_eq!(sha256_file(&c.path().join("www.bk/f2")), old["f2"]);
}

/// What a walk of a tree sees: per path, its type, mode, owner, size, mtime,
/// link target or content hash, and which earlier path it is a hard link of.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>, inodes: &mut HashMap<u64, String>) {
        let mut names: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        for path in names {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&path).unwrap();
            let what = if md.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if md.is_dir() {
                "dir".to_owned()
            } else {
                let same = inodes.entry(md.ino()).or_insert_with(|| rel.clone()).clone();
                format!("file {} nlink {} same-as {same}", sha256_file(&path), md.nlink())
            };
            let mtime = if md.file_type().is_symlink() { 0 } else { md.mtime() };
            out.insert(
                rel,
                format!(
                    "{what} mode {:o} owner {}:{} size {} mtime {mtime}",
                    md.permissions().mode() & 0o7777,
                    md.uid(),
                    md.gid(),
                    if md.is_dir() { 0 } else { md.size() }
                ),
            );
            if md.is_dir() {
                walk(root, &path, out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out, &mut HashMap::new());
    out
}

fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    File::options().write(true).open(path).unwrap().set_modified(t).unwrap();
}

#[test]
fn dump_and_restore_round_trip_full_and_incremental_and_refuse_damage() {
    let cell = Cell::new();
    cell.vos_ok(["create", "site.src", "--quota", "1GiB"]);
    cell.vos_ok(["mkmount", "/src", "site.src"]);
    let a = Mount::new(&cell);
    let src = a.path().join("src");
    fs::create_dir_all(src.join("wp-content/uploads")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::write(src.join("index.php"), b"<?php require 'wp-blog-header.php';").unwrap();
    fs::write(src.join("wp-content/big.bin"), pattern(3 << 20, 1)).unwrap();
    fs::write(src.join("wp-content/uploads/a.jpg"), pattern(70_000, 2)).unwrap();
    fs::write(src.join("zero"), b"").unwrap();
    fs::hard_link(src.join("index.php"), src.join("wp-content/index-link.php")).unwrap();
    std::os::unix::fs::symlink("wp-content/uploads", src.join("uploads")).unwrap();
    fs::set_permissions(src.join("index.php"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(src.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(src.join("wp-content/uploads/a.jpg"), Some(33), Some(33)).unwrap();
    set_mtime(&src.join("wp-content/big.bin"), 1_600_000_000);
    let tree = snapshot(&src);

    let work = tempfile::tempdir().unwrap();
    let full = work.path().join("full.dump");
    let out = cell.vos_ok(["dump", "site.src", "--file", full.to_str().unwrap()]);
    assert!(out.contains("written to"), "{out}");
    assert!(!work.path().join("full.dump.partial").exists());

    // Damaged dumps are refused and restore nothing.
    let bytes = fs::read(&full).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let bad = work.path().join("flipped.dump");
    fs::write(&bad, &flipped).unwrap();
    let short = work.path().join("short.dump");
    fs::write(&short, &bytes[..bytes.len() - 100]).unwrap();
    let list_before = cell.vos_ok(["list"]);
    for (dump, why) in [(&bad, "damaged"), (&short, "cut short")] {
        let out = cell.vos(["restore", "site.copy", "--file", dump.to_str().unwrap()]);
        assert!(!out.status.success(), "a {why} dump was restored");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why}: {err}");
    }
    assert_eq!(
        cell.vos_ok(["list"]),
        list_before,
        "a refused restore changed the volume list"
    );
    let leftovers: Vec<_> = fs::read_dir(cell.data_dir().join("volumes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.iter().all(|n| n.to_string_lossy().parse::<u64>().is_ok()),
        "a refused restore left {leftovers:?}"
    );

    // Full round trip into a new volume.
    cell.vos_ok(["restore", "site.copy", "--file", full.to_str().unwrap()]);
    cell.vos_ok(["mkmount", "/copy", "site.copy"]);
    assert_eq!(snapshot(&a.path().join("copy")), tree);
    let out = cell.vos(["restore", "site.copy", "--file", full.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--overwrite"),
        "restoring over an existing volume needs --overwrite"
    );

    // Changes, then an incremental dump since before them brings the copy up to date.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::write(src.join("index.php"), b"<?php // changed").unwrap();
    fs::remove_file(src.join("wp-content/uploads/a.jpg")).unwrap();
    fs::write(src.join("wp-content/uploads/b.png"), pattern(5000, 3)).unwrap();
    fs::rename(src.join("zero"), src.join("empty/zero")).unwrap();
    let tree2 = snapshot(&src);
    assert_ne!(tree2, tree);
    let inc = work.path().join("inc.dump");
    cell.vos_ok([
        "dump",
        "site.src",
        "--file",
        inc.to_str().unwrap(),
        "--since",
        &format!("@{since}"),
    ]);
    assert!(
        fs::metadata(&inc).unwrap().len() < 1 << 20,
        "the incremental dump carried unchanged data"
    );
    // An incremental dump does not apply to a volume that lacks its base.
    let out = cell.vos(["restore", "site.other", "--file", inc.to_str().unwrap()]);
    assert!(!out.status.success());
    cell.vos_ok(["restore", "site.copy", "--file", inc.to_str().unwrap()]);
    assert_eq!(
        snapshot(&a.path().join("copy")),
        tree2,
        "on the node that read the old state"
    );
    let b = Mount::new(&cell);
    assert_eq!(snapshot(&b.path().join("copy")), tree2, "on a fresh node");

    // A full restore over an existing volume replaces it.
    cell.vos_ok(["restore", "site.copy", "--file", full.to_str().unwrap(), "--overwrite"]);
    assert_eq!(snapshot(&a.path().join("copy")), tree);
}

#[test]
fn release_publishes_a_read_only_copy_to_every_node_at_once() {
    let mut cell = Cell::new();
    cell.vos_ok(["create", "site.www"]);
    cell.vos_ok(["mkmount", "/www", "site.www"]);
    cell.vos_ok(["mkmount", "/.www", "site.www", "--rw"]);
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let rw = a.path().join(".www");
    fs::write(rw.join("index.php"), b"v1").unwrap();
    // Before any release both paths show the read-write volume.
    assert_eq!(fs::read(b.path().join("www/index.php")).unwrap(), b"v1");

    let out = cell.vos(["release", "site.www"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("addsite"),
        "a release without a site"
    );
    let out = cell.vos(["addsite", "site.www", "192.0.2.1:7000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a fileserver of this cell"));
    let server = cell.addr().to_string();
    cell.vos_ok(["addsite", "site.www", &server]);
    assert!(
        !cell.vos(["addsite", "site.www", &server]).status.success(),
        "a second site on one server"
    );
    cell.vos_ok(["release", "site.www"]);
    let rwinfo: serde_json::Value =
        serde_json::from_str(&cell.vos_ok(["examine", "site.www", "--format", "json"])).unwrap();
    assert!(!rwinfo["last_release"].is_null());
    assert_eq!(rwinfo["sites"].as_array().unwrap().len(), 2);
    let roinfo: serde_json::Value =
        serde_json::from_str(&cell.vos_ok(["examine", "site.www.readonly", "--format", "json"])).unwrap();
    assert_eq!(roinfo["kind"], "ReadOnly");

    // Regular mount points now lead to the read-only copy on every node.
    for m in [&a, &b] {
        let www = m.path().join("www");
        assert_eq!(fs::read(www.join("index.php")).unwrap(), b"v1");
        assert_errno(
            fs::write(www.join("x.php"), b"x"),
            libc::EROFS,
            "create in a read-only copy",
        );
        assert_errno(
            fs::OpenOptions::new().write(true).open(www.join("index.php")),
            libc::EROFS,
            "open for writing in a read-only copy",
        );
    }
    // Changes through the read-write path stay unseen there until the next release...
    fs::write(rw.join("index.php"), b"v2").unwrap();
    fs::write(rw.join("new.php"), b"new").unwrap();
    for m in [&a, &b] {
        assert_eq!(fs::read(m.path().join("www/index.php")).unwrap(), b"v1");
        assert!(!m.path().join("www/new.php").exists());
        assert_eq!(fs::read(m.path().join(".www/index.php")).unwrap(), b"v2");
    }
    // ...which every node sees as soon as it returns.
    cell.vos_ok(["release", "site.www"]);
    for m in [&a, &b] {
        assert_eq!(fs::read(m.path().join("www/index.php")).unwrap(), b"v2");
        assert_eq!(fs::read(m.path().join("www/new.php")).unwrap(), b"new");
    }

    // Releases while B reads: every read is one whole release of the file.
    let versions: Vec<Vec<u8>> = (0..6).map(|k| pattern(2 << 20, 50 + k)).collect();
    let hashes: HashSet<String> = versions.iter().map(|v| sha256(v)).collect();
    fs::write(rw.join("big"), &versions[0]).unwrap();
    cell.vos_ok(["release", "site.www"]);
    let reader = WholeReads::start(b.path().join("www/big"), hashes);
    for v in &versions[1..] {
        fs::write(rw.join("big"), v).unwrap();
        cell.vos_ok(["release", "site.www"]);
    }
    assert!(reader.stop() > 0);
    assert_eq!(sha256_file(&b.path().join("www/big")), sha256(&versions[5]));

    // The copy survives a restart; removing the last site leads back to the volume.
    drop((a, b));
    cell.restart();
    let c = Mount::new(&cell);
    assert_eq!(fs::read(c.path().join("www/index.php")).unwrap(), b"v2");
    fs::write(c.path().join(".www/index.php"), b"v3").unwrap();
    assert_eq!(fs::read(c.path().join("www/index.php")).unwrap(), b"v2");
    cell.vos_ok(["remsite", "site.www", &server]);
    assert_eq!(fs::read(c.path().join("www/index.php")).unwrap(), b"v3");
    assert!(!cell.vos(["examine", "site.www.readonly"]).status.success());
}

#[test]
fn listvldb_syncvldb_and_server_options() {
    let cell = Cell::new();
    let server = cell.addr().to_string();
    cell.vos_ok(["create", "site.a", "--server", &server]);
    let out = cell.vos(["create", "site.b", "--server", "192.0.2.1:7000"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a fileserver of this cell"),
        "{out:?}"
    );
    assert!(
        !cell.vos_ok(["list"]).contains("site.b"),
        "a refused create made the volume"
    );
    assert!(cell.vos_ok(["list", "--server", &server]).contains("site.a"));
    cell.vos_ok(["backup", "site.a"]);
    cell.vos_ok(["addsite", "site.a", &server]);
    cell.vos_ok(["release", "site.a"]);

    let vldb: serde_json::Value = serde_json::from_str(&cell.vos_ok(["listvldb", "--format", "json"])).unwrap();
    let entry = vldb
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "site.a")
        .unwrap()
        .clone();
    let id_of = |name: &str| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&cell.vos_ok(["examine", name, "--format", "json"])).unwrap();
        v["id"].as_u64().unwrap()
    };
    assert_eq!(entry["rw_id"].as_u64(), Some(id_of("site.a")));
    assert_eq!(entry["ro_id"].as_u64(), Some(id_of("site.a.readonly")));
    assert_eq!(entry["backup_id"].as_u64(), Some(id_of("site.a.backup")));
    assert_eq!(entry["sites"].as_array().unwrap().len(), 2);
    let text = cell.vos_ok(["listvldb"]);
    assert!(
        text.contains("number of sites -> 2") && text.contains("RO site"),
        "{text}"
    );
    assert!(
        !vldb.as_array().unwrap().iter().any(|e| e["name"] == "site.a.backup"),
        "clones are listed under their volume"
    );

    assert!(cell.vos_ok(["syncvldb"]).contains("agree"));
    std::fs::create_dir_all(cell.data_dir().join("volumes/99999")).unwrap();
    let report = cell.vos_ok(["syncvldb"]);
    assert!(report.contains("99999") && report.contains("does not know"), "{report}");
}
