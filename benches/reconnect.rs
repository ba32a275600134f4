//! Reconnect cost (issue 3): a node B with N cached files is cut off by the
//! fault-injection proxy, 100 files change on node A, the network heals, and
//! B revalidates — through the change journal, then again with the journal
//! trimmed (bulk path). Reports B's revalidation time, how many FIDs each path
//! covered, and how many RPCs the fileserver handled for it.
//!
//! `cargo bench --bench reconnect` (build the workspace in release first);
//! `CELLFS_BENCH_FILES` sets N (default 20000).

use cellfs::{Cell, Mount, Proxy, wait_for};
use std::fs;
use std::time::{Duration, Instant};

const DIRS: usize = 100;
const CHANGED: usize = 100;

fn path(root: &std::path::Path, i: usize) -> std::path::PathBuf {
    root.join(format!("d{:03}/f{i:06}", i % DIRS))
}

fn main() {
    let n: usize = std::env::var("CELLFS_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let t = Instant::now();
    for d in 0..DIRS {
        fs::create_dir(a.path().join(format!("d{d:03}"))).unwrap();
    }
    for i in 0..n {
        fs::write(path(a.path(), i), format!("v0 {i}")).unwrap();
    }
    println!("created {n} files on A in {:?}", t.elapsed());

    let proxy = Proxy::new(cell.addr());
    let b = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "4GiB");
    let t = Instant::now();
    for i in 0..n {
        fs::read(path(b.path(), i)).unwrap();
    }
    println!("cached {n} files on B in {:?}", t.elapsed());

    for (round, label) in ["journal", "bulk"].into_iter().enumerate() {
        if label == "bulk" {
            // A journal shorter than the changes to come: B must fall back.
            cell.restart_with_args(&["--journal-len", "10"]);
            wait_for("B reconnecting after the restart", Duration::from_secs(30), || {
                b.status()["up"] == true
            });
            wait_for("B's revalidation after the restart", Duration::from_secs(60), || {
                !b.status()["last_revalidation"].is_null()
            });
        }
        let before_rev = b.status()["last_revalidation"]["at"].clone();
        proxy.drop_all();
        let cut = Instant::now();
        wait_for("B noticing the cut", Duration::from_secs(60), || {
            b.status()["up"] == false
        });
        let noticed = cut.elapsed();
        for i in 0..CHANGED {
            fs::write(path(a.path(), i * (n / CHANGED)), format!("v{} {i}", round + 1)).unwrap();
        }
        let rpcs_before = cell.stats().rpcs;
        let healed = Instant::now();
        proxy.pass();
        wait_for("B revalidating", Duration::from_secs(300), || {
            let s = b.status();
            s["up"] == true && s["last_revalidation"]["at"] != before_rev && !s["last_revalidation"].is_null()
        });
        let back = healed.elapsed();
        let rev = b.status()["last_revalidation"].clone();
        let rpcs = cell.stats().rpcs - rpcs_before;
        println!(
            "{label}: cut noticed after {noticed:?}; after the heal B revalidated in {back:?} (status polling included): \
             took {} ms inside the cache manager, {} FIDs by journal, {} in bulk, {} changed; fileserver RPCs: {rpcs}",
            rev["took_ms"], rev["journal"], rev["bulk"], rev["changed"]
        );
        for i in 0..CHANGED {
            let got = fs::read_to_string(path(b.path(), i * (n / CHANGED))).unwrap();
            assert!(
                got.starts_with(&format!("v{}", round + 1)),
                "B reads the new bytes after reconnect"
            );
        }
    }
}
