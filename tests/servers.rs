//! A cell of two fileservers on loopback: a server joins the cell, holds
//! volumes, serves read-only sites (with failover when one server dies) and
//! takes a volume moved to it while a node reads it.

mod common;

use cellfs::{Cell, Mount};
use common::{WholeReads, pattern, sha256, sha256_file};
use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `vos examine NAME --format json`.
fn examine(cell: &Cell, name: &str) -> serde_json::Value {
    serde_json::from_str(&cell.vos_ok(["examine", name, "--format", "json"])).unwrap()
}

#[test]
fn a_joined_server_holds_volumes_and_read_only_sites_fail_over() {
    let mut first = Cell::new();
    let mut second = first.join();
    let (s1, s2) = (first.addr().to_string(), second.addr().to_string());

    // A volume created on the second server, reached through the first.
    cell_create_on(&first, "site.blog", &s2);
    first.vos_ok(["mkmount", "/blog", "site.blog"]);
    let a = Mount::new(&first);
    let b = Mount::new(&first);
    fs::write(a.path().join("blog/index.php"), b"<?php echo 1;").unwrap();
    assert_eq!(fs::read(b.path().join("blog/index.php")).unwrap(), b"<?php echo 1;");
    let info = examine(&first, "site.blog");
    assert_eq!(info["server"], s2.as_str(), "the volume lives on the second server");
    assert_eq!(info["files"], 2, "its root and index.php");
    assert!(
        first.vos_ok(["list", "--server", &s2]).contains("site.blog")
            && !first.vos_ok(["list", "--server", &s1]).contains("site.blog")
    );
    // Names are unique across the cell.
    assert!(!first.vos(["create", "site.blog"]).status.success());

    // Read-only sites on both servers, the read-write path beside them.
    first.vos_ok(["create", "site.code"]);
    first.vos_ok(["mkmount", "/code", "site.code"]);
    first.vos_ok(["mkmount", "/.code", "site.code", "--rw"]);
    let rw = a.path().join(".code");
    fs::write(rw.join("index.php"), b"v1").unwrap();
    fs::create_dir(rw.join("late")).unwrap();
    for i in 0..5u64 {
        fs::write(rw.join("late").join(format!("f{i}")), pattern(100_000, i)).unwrap();
    }
    assert!(
        String::from_utf8_lossy(&first.vos(["addsite", "site.code", "192.0.2.1:7000"]).stderr)
            .contains("not a fileserver of this cell")
    );
    first.vos_ok(["addsite", "site.code", &s1]);
    first.vos_ok(["addsite", "site.code", &s2]);
    first.vos_ok(["release", "site.code"]);
    let ro = examine(&first, "site.code.readonly");
    assert_eq!(ro["kind"], "ReadOnly");
    for m in [&a, &b] {
        assert_eq!(fs::read(m.path().join("code/index.php")).unwrap(), b"v1");
    }
    // A release is seen by both nodes as soon as it returns.
    fs::write(rw.join("index.php"), b"v2").unwrap();
    first.vos_ok(["release", "site.code"]);
    for m in [&a, &b] {
        assert_eq!(fs::read(m.path().join("code/index.php")).unwrap(), b"v2");
    }

    // A volume held by the second server is released the same way, to
    // sites on both servers.
    first.vos_ok(["mkmount", "/.blog", "site.blog", "--rw"]);
    first.vos_ok(["addsite", "site.blog", &s2]);
    first.vos_ok(["addsite", "site.blog", &s1]);
    first.vos_ok(["release", "site.blog"]);
    for m in [&a, &b] {
        assert_eq!(fs::read(m.path().join("blog/index.php")).unwrap(), b"<?php echo 1;");
        common::assert_errno(
            fs::write(m.path().join("blog/x.php"), b"x"),
            libc::EROFS,
            "the released copy of a volume on the second server",
        );
    }
    fs::write(a.path().join(".blog/index.php"), b"<?php echo 2;").unwrap();
    first.vos_ok(["release", "site.blog"]);
    for m in [&a, &b] {
        assert_eq!(fs::read(m.path().join("blog/index.php")).unwrap(), b"<?php echo 2;");
    }
    let blog_ro = examine(&first, "site.blog.readonly");
    assert!(
        first
            .data_dir()
            .join("volumes")
            .join(blog_ro["id"].to_string())
            .is_dir(),
        "the first server holds a copy"
    );

    // Releases while B reads: each read is one whole release, whichever
    // site served it.
    let versions: Vec<Vec<u8>> = (0..4).map(|k| pattern(1 << 20, 70 + k)).collect();
    let hashes: HashSet<String> = versions.iter().map(|v| sha256(v)).collect();
    fs::write(rw.join("big"), &versions[0]).unwrap();
    first.vos_ok(["release", "site.code"]);
    let reader = WholeReads::start(b.path().join("code/big"), hashes);
    for v in &versions[1..] {
        fs::write(rw.join("big"), v).unwrap();
        first.vos_ok(["release", "site.code"]);
    }
    assert!(reader.stop() > 0);
    assert_eq!(sha256_file(&b.path().join("code/big")), sha256(&versions[3]));

    // The first server dies: B reads what it never read before from the
    // second site (the cell root comes from B's cache).
    first.kill();
    for i in 0..5u64 {
        let got = fs::read(b.path().join("code/late").join(format!("f{i}"))).unwrap();
        assert_eq!(
            sha256(&got),
            sha256(&pattern(100_000, i)),
            "late/f{i} from the second site"
        );
    }
    assert_eq!(fs::read(b.path().join("code/index.php")).unwrap(), b"v2");
    assert!(
        b.log().contains("trying the next one"),
        "B read from the second site after the first did not answer:\n{}",
        b.log()
    );
    // The volume held by the second server is still served.
    assert_eq!(fs::read(b.path().join("blog/index.php")).unwrap(), b"<?php echo 2;");
    drop((a, b));

    // A release that cannot reach a site reports it and marks it old.
    first.start();
    second.kill();
    let out = first.vos(["release", "site.code"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("marked old") && err.contains(&s2),
        "{err}"
    );
    // Back, it gets the next release; `remsite` deletes its copy.
    second.start();
    first.vos_ok(["release", "site.code"]);
    let copy = second.data_dir().join("volumes").join(ro["id"].to_string());
    assert!(copy.is_dir());
    first.vos_ok(["remsite", "site.code", &s2]);
    assert!(!copy.exists(), "remsite deleted the copy on the second server");
}

fn cell_create_on(cell: &Cell, name: &str, server: &str) {
    let out = cell.vos_ok(["create", name, "--server", server]);
    assert!(out.contains(name), "{out}");
}

#[test]
fn a_volume_moves_to_another_server_while_a_node_reads_it() {
    let first = Cell::new();
    let second = first.join();
    let s2 = second.addr().to_string();
    first.vos_ok(["create", "site.shop"]);
    first.vos_ok(["mkmount", "/shop", "site.shop"]);
    let a = Mount::new(&first);
    let b = Mount::new(&first);
    let dir = a.path().join("shop");
    let files: Vec<(String, Vec<u8>)> = (0..20u64)
        .map(|i| (format!("f{i}.php"), pattern(20_000 + i as usize * 1000, i)))
        .collect();
    for (name, data) in &files {
        fs::write(dir.join(name), data).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        // f0 changes below; the reader checks the others.
        let (root, stop, files) = (b.path().join("shop"), stop.clone(), files[1..].to_vec());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) || rounds == 0 {
                for (name, data) in &files {
                    let got = fs::read(root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(sha256(&got), sha256(data), "{name}");
                }
                rounds += 1;
            }
            rounds
        })
    };
    fs::write(dir.join("f0.php"), b"changed before the move").unwrap();
    let out = first.vos_ok(["move", "site.shop", "--to", &s2]);
    assert!(out.contains("moved volume site.shop"), "{out}");
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "B read throughout the move");

    let info = examine(&first, "site.shop");
    assert_eq!(info["server"], s2.as_str());
    assert!(
        !first.data_dir().join("volumes").join(info["id"].to_string()).exists(),
        "the first server gave its copy up"
    );
    // Reads go on through both nodes without a remount, and writes land on
    // the second server.
    for m in [&a, &b] {
        assert_eq!(
            fs::read(m.path().join("shop/f0.php")).unwrap(),
            b"changed before the move"
        );
        for (name, data) in &files[1..] {
            assert_eq!(sha256_file(&m.path().join("shop").join(name)), sha256(data), "{name}");
        }
    }
    fs::write(dir.join("after.php"), b"written after the move").unwrap();
    assert_eq!(
        fs::read(b.path().join("shop/after.php")).unwrap(),
        b"written after the move"
    );
    let moved = examine(&first, "site.shop");
    assert_eq!(moved["files"], info["files"].as_u64().unwrap() + 1);
    let folder = |cell: &Cell| cell.data_dir().join("volumes").join(info["id"].to_string());
    assert!(folder(&second).is_dir());
    assert!(first.vos_ok(["syncvldb"]).contains("agree"));

    // A volume on the second server dumps through the first, and restores
    // onto the second server as a new volume.
    let dump = first.root().join("shop.dump");
    let dump = dump.to_str().unwrap();
    first.vos_ok(["dump", "site.shop", "--file", dump]);
    first.vos_ok(["restore", "site.copy", "--file", dump, "--server", &s2]);
    assert_eq!(examine(&first, "site.copy")["server"], s2.as_str());
    first.vos_ok(["mkmount", "/copy", "site.copy"]);
    assert_eq!(
        fs::read(b.path().join("copy/after.php")).unwrap(),
        b"written after the move"
    );

    // And back again: the nodes follow once more.
    let s1 = first.addr().to_string();
    first.vos_ok(["move", "site.shop", "--to", &s1]);
    assert_eq!(examine(&first, "site.shop")["server"], s1.as_str());
    assert!(folder(&first).is_dir() && !folder(&second).exists());
    assert_eq!(
        fs::read(b.path().join("shop/after.php")).unwrap(),
        b"written after the move"
    );
    fs::write(dir.join("back.php"), b"back home").unwrap();
    assert_eq!(fs::read(b.path().join("shop/back.php")).unwrap(), b"back home");
    assert!(
        String::from_utf8_lossy(&first.vos(["move", "site.shop", "--to", "192.0.2.1:7000"]).stderr)
            .contains("not a fileserver of this cell")
    );
}
