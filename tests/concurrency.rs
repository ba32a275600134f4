//! Two nodes changing the same directory at once: every change lands and both
//! nodes list the same result.

mod common;

use cellfs::{Cell, Mount};
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn concurrent_creates_in_one_directory_from_two_nodes_all_land() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    fs::create_dir(a.path().join("uploads")).unwrap();
    // Both nodes hold the directory's listing, so each create breaks the other.
    assert!(names(&a.path().join("uploads")).is_empty());
    assert!(names(&b.path().join("uploads")).is_empty());
    std::thread::scope(|s| {
        for (node, mount) in [("a", &a), ("b", &b)] {
            s.spawn(move || {
                for i in 0..40 {
                    let path = mount.path().join("uploads").join(format!("{node}{i}"));
                    fs::write(&path, format!("{node} {i}")).unwrap();
                }
            });
        }
    });
    let expected: BTreeSet<String> = ["a", "b"]
        .iter()
        .flat_map(|n| (0..40).map(move |i| format!("{n}{i}")))
        .collect();
    assert_eq!(names(&a.path().join("uploads")), expected);
    assert_eq!(names(&b.path().join("uploads")), expected);
    assert_eq!(fs::read_to_string(b.path().join("uploads/a7")).unwrap(), "a 7");
    assert_eq!(fs::read_to_string(a.path().join("uploads/b39")).unwrap(), "b 39");
}

/// Every close that returned is durable on the server, also when writers
/// on two nodes at once share the server's commit groups: the fileserver
/// is killed right after the writers finish, started again, and a fresh
/// node reads every file back as last written.
#[test]
fn files_closed_by_concurrent_writers_survive_a_fileserver_kill() {
    let mut cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    fs::create_dir(a.path().join("up")).unwrap();
    let body = |node: &str, t: u32, i: u32| format!("{node} {t} {i}\n").repeat(100);
    std::thread::scope(|s| {
        for (node, mount) in [("a", &a), ("b", &b)] {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..15 {
                        let path = mount.path().join("up").join(format!("{node}{t}-{i}"));
                        fs::write(&path, body(node, t, i)).unwrap();
                    }
                    // A file replaced by a new version: the old one must not come back.
                    let first = mount.path().join("up").join(format!("{node}{t}-0"));
                    fs::write(first, format!("rewritten by {node} {t}")).unwrap();
                });
            }
        }
    });
    cell.kill();
    cell.start();
    let c = Mount::new(&cell);
    let up = c.path().join("up");
    assert_eq!(names(&up).len(), 2 * 4 * 15);
    for node in ["a", "b"] {
        for t in 0..4 {
            let first = fs::read_to_string(up.join(format!("{node}{t}-0"))).unwrap();
            assert_eq!(first, format!("rewritten by {node} {t}"));
            for i in 1..15 {
                let got = fs::read_to_string(up.join(format!("{node}{t}-{i}"))).unwrap();
                assert_eq!(got, body(node, t, i), "{node}{t}-{i}");
            }
        }
    }
}
