//! Offline start from the saved cache index, hoarding with pin/unpin, and the
//! status command, against real processes.

mod common;

use cellfs::{Cell, Mount, Proxy};
use common::{pattern, sha256, sha256_file};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

/// Generous bound for one file operation while the server is down (a hang check).
const OP_BOUND: Duration = Duration::from_secs(5);

/// Writes `n` files of 15 KiB under `dir` and returns (relative path, hash).
fn tree(dir: &Path, n: usize) -> Vec<(String, String)> {
    fs::create_dir_all(dir.join("www/inc")).unwrap();
    (0..n)
        .map(|i| {
            let rel = if i % 2 == 0 {
                format!("www/p{i}.php")
            } else {
                format!("www/inc/i{i}.php")
            };
            let data = pattern(15 << 10, i as u64);
            fs::write(dir.join(&rel), &data).unwrap();
            (rel, sha256(&data))
        })
        .collect()
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < OP_BOUND, "{what} took {:?}", start.elapsed());
    out
}

#[test]
fn a_node_restarted_while_the_server_is_down_serves_its_cache() {
    let mut cell = Cell::new();
    let writer = Mount::new(&cell);
    let files = tree(writer.path(), 40);
    let mut node = Mount::new(&cell);
    for (rel, hash) in &files {
        assert_eq!(sha256_file(&node.path().join(rel)), *hash);
    }
    assert!(
        node.unmount(),
        "the cache manager must exit cleanly (it saves its index)"
    );
    cell.kill();
    node.mount_again(&cell.config_path(), "2GiB");
    for (rel, hash) in &files {
        let got = timed(rel, || sha256_file(&node.path().join(rel)));
        assert_eq!(got, *hash, "{rel} served offline");
    }
    let listed = timed("readdir", || fs::read_dir(node.path().join("www")).unwrap().count());
    assert_eq!(listed, 21, "www holds 20 files and inc/");
    let err = timed("create", || fs::write(node.path().join("www/new.php"), b"x")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    assert_eq!(node.status()["up"], false);
}

#[test]
fn pinned_files_survive_eviction_and_serve_while_the_network_is_cut() {
    let cell = Cell::new();
    let writer = Mount::new(&cell);
    let files = tree(writer.path(), 30); // 450 KiB
    fs::write(writer.path().join("other"), pattern(600 << 10, 99)).unwrap();
    let proxy = Proxy::new(cell.addr());
    let node = Mount::with_config(&cell, &cell.client_config_via(proxy.addr()), "1MiB");
    let out = node.command(&["pin"], None);
    assert!(!out.status.success(), "pin without a path is refused");
    let out = node.command(&["pin"], Some(&node.path().join("www")));
    assert!(
        out.status.success(),
        "pin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("30 files"), "{summary}");
    let status = node.status();
    assert_eq!(status["pinned_bytes"], 30 * (15 << 10));

    // Reading a 600 KiB file through the 1 MiB cache must evict unpinned data only.
    fs::read(node.path().join("other")).unwrap();
    // Pinning more than fits is refused with a clear message.
    let out = node.command(&["pin"], Some(&node.path().join("other")));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pinned already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    proxy.drop_all();
    for (rel, hash) in &files {
        let got = timed(rel, || sha256_file(&node.path().join(rel)));
        assert_eq!(got, *hash, "pinned {rel} served while the network is cut");
    }
    assert!(proxy.stats().to_server > 0, "the node really went through the proxy");

    let out = node.command(&["unpin"], Some(&node.path().join("www")));
    assert!(
        out.status.success(),
        "unpin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node.status()["pinned_bytes"], 0);
}
