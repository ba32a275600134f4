//! Reconnection revalidates through the fileserver's change journal (no
//! per-file checks), falls back to bulk checks when the journal is trimmed,
//! and a cache manager killed with SIGKILL restarts on a cache that is checked
//! and serves only complete, current copies.

mod common;

use cellfs::{Cell, Mount, Proxy, wait_for};
use common::{cache_files, pattern, sha256, sha256_file};
use std::fs;
use std::path::Path;
use std::time::Duration;

fn name(i: usize) -> String {
    format!("d{}/f{i}", i % 4)
}

fn write_tree(root: &Path, n: usize, version: u64) {
    for d in 0..4 {
        fs::create_dir_all(root.join(format!("d{d}"))).unwrap();
    }
    for i in 0..n {
        fs::write(root.join(name(i)), pattern(2048, version * 1000 + i as u64)).unwrap();
    }
}

/// Cuts B off, changes `changed` files on A, heals, and waits for B's
/// revalidation; returns it and the fileserver RPCs it cost.
fn cut_change_heal(cell: &Cell, proxy: &Proxy, a: &Mount, b: &Mount, changed: &[usize]) -> (serde_json::Value, u64) {
    let before = b.status()["last_revalidation"]["at"].clone();
    proxy.drop_all();
    // A read that needs the server makes B notice at once (EHOSTDOWN).
    let err = fs::read(b.path().join("not-cached-anywhere")).err();
    assert!(err.is_some());
    wait_for("B marking the server down", Duration::from_secs(30), || {
        b.status()["up"] == false
    });
    for &i in changed {
        fs::write(a.path().join(name(i)), pattern(2048, 999_000 + i as u64)).unwrap();
    }
    let rpcs = cell.stats().rpcs;
    proxy.pass();
    wait_for("B revalidating", Duration::from_secs(30), || {
        let s = b.status();
        s["up"] == true && !s["last_revalidation"].is_null() && s["last_revalidation"]["at"] != before
    });
    (b.status()["last_revalidation"].clone(), cell.stats().rpcs - rpcs)
}

fn check_contents(b: &Mount, n: usize, changed: &[usize], old_version: u64) {
    for i in 0..n {
        let want = if changed.contains(&i) {
            999_000 + i as u64
        } else {
            old_version * 1000 + i as u64
        };
        assert_eq!(
            sha256_file(&b.path().join(name(i))),
            sha256(&pattern(2048, want)),
            "{}",
            name(i)
        );
    }
}

#[test]
fn reconnect_uses_the_journal_and_falls_back_to_bulk_when_it_is_trimmed() {
    const N: usize = 200;
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    write_tree(a.path(), N, 1);
    let proxy = Proxy::new(cell.addr());
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "1GiB");
    check_contents(&b, N, &[], 1);

    // Journal path: every held FID comes back in one Reconnect per volume.
    let (rev, rpcs) = cut_change_heal(&cell, &proxy, &a, &b, &[3, 50, 101]);
    assert!(rev["journal"].as_u64().unwrap() >= N as u64, "{rev}");
    assert_eq!(rev["bulk"], 0, "{rev}");
    assert!(rpcs < 20, "revalidating {N} files by journal cost {rpcs} RPCs");
    check_contents(&b, N, &[3, 50, 101], 1);

    // Journal trimmed below the gap: bulk status checks, same result.
    cell.restart_with_args(&["--journal-len", "2"]);
    wait_for("B reconnecting after the restart", Duration::from_secs(30), || {
        b.status()["up"] == true
    });
    check_contents(&b, N, &[3, 50, 101], 1);
    let (rev, _) = cut_change_heal(&cell, &proxy, &a, &b, &[7, 8, 9, 10]);
    assert_eq!(rev["journal"], 0, "{rev}");
    assert!(rev["bulk"].as_u64().unwrap() >= N as u64, "{rev}");
    check_contents(&b, N, &[3, 50, 101, 7, 8, 9, 10], 1);
}

#[test]
fn a_cache_manager_killed_mid_work_restarts_on_a_checked_cache() {
    const N: usize = 120;
    let cell = Cell::new();
    let a = Mount::new(&cell);
    write_tree(a.path(), N, 1);
    fs::write(a.path().join("big"), pattern(20 << 20, 5)).unwrap();
    let mut b = Mount::new(&cell);
    // Reads and writes in flight when the node dies.
    std::thread::scope(|s| {
        let root = b.path().to_owned();
        s.spawn(move || {
            for i in 0..N {
                let _ = fs::read(root.join(name(i)));
            }
            let _ = fs::read(root.join("big"));
        });
        let root = b.path().to_owned();
        s.spawn(move || {
            for i in 0..20 {
                let _ = fs::write(root.join(format!("new{i}")), pattern(100 << 10, i));
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        b.crash();
    });
    // Files changed on A while B was dead must be seen new.
    fs::write(a.path().join(name(1)), pattern(2048, 999_001)).unwrap();
    b.mount_again(&cell.config_path(), "1GiB");
    check_contents(&b, N, &[1], 1);
    assert_eq!(sha256_file(&b.path().join("big")), sha256(&pattern(20 << 20, 5)));
    // Every data file the cache keeps is a complete copy of some file.
    let copies = cache_files(b.cache_dir());
    for name in &copies {
        assert!(!name.starts_with("tmp."), "a partial fetch {name} survived the restart");
    }
    assert!(!copies.is_empty(), "no copies found under {}", b.cache_dir().display());
}
