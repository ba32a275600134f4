//! FUSE passthrough (issue 6): the kernel reads and writes large cached
//! files and new files directly in the cache folder. These tests check what
//! a user sees stays right: writes made through passthrough are stored on
//! close, explicit times survive, and the kernel's one-backing-per-inode and
//! no-mixing rules never turn an open into an error.

mod common;

use cellfs::{Cell, Mount};
use common::{pattern, sha256, sha256_file};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, UNIX_EPOCH};

/// Larger than the passthrough threshold (1 MiB).
const BIG: usize = 3 << 20;

fn read_all(f: &mut fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn passthrough_writes_are_stored_on_close() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    assert!(
        a.log().contains("FUSE passthrough on"),
        "this kernel offers passthrough; the cache manager must use it:\n{}",
        a.log()
    );
    // A new file: created with passthrough, written by the kernel directly.
    let v1 = pattern(BIG, 1);
    fs::write(a.path().join("media.bin"), &v1).unwrap();
    assert_eq!(sha256_file(&b.path().join("media.bin")), sha256(&v1));

    // An in-place overwrite of a large cached file on A, then close.
    let f = fs::File::options()
        .write(true)
        .open(a.path().join("media.bin"))
        .unwrap();
    f.write_all_at(b"PATCHED", 1_000_000).unwrap();
    drop(f);
    let mut v2 = v1.clone();
    v2[1_000_000..1_000_007].copy_from_slice(b"PATCHED");
    assert_eq!(sha256_file(&b.path().join("media.bin")), sha256(&v2));
    assert_eq!(sha256_file(&a.path().join("media.bin")), sha256(&v2));

    // fsync stores too, before close.
    let mut f = fs::File::options()
        .append(true)
        .open(a.path().join("media.bin"))
        .unwrap();
    f.write_all(b"tail").unwrap();
    f.sync_all().unwrap();
    v2.extend_from_slice(b"tail");
    assert_eq!(sha256_file(&b.path().join("media.bin")), sha256(&v2));
    drop(f);
}

#[test]
fn times_set_after_writing_survive_the_store() {
    // tar x and cp -p write, then set the times, then close.
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let past = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for (name, len) in [("small.php", 15_000), ("large.bin", BIG)] {
        let data = pattern(len, 7);
        let mut f = fs::File::create(a.path().join(name)).unwrap();
        f.write_all(&data).unwrap();
        f.set_modified(past).unwrap();
        drop(f);
        for m in [&a, &b] {
            let meta = fs::metadata(m.path().join(name)).unwrap();
            assert_eq!(meta.mtime(), 1_000_000_000, "{name}: the explicit mtime was lost");
            assert_eq!(meta.len(), len as u64);
        }
        assert_eq!(sha256_file(&b.path().join(name)), sha256(&data));
    }
}

#[test]
fn a_new_version_reaches_a_node_holding_the_old_one_open() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    let v1 = pattern(BIG, 1);
    let v2 = pattern(BIG, 2);
    fs::write(a.path().join("f"), &v1).unwrap();
    // B holds version 1 open (through passthrough).
    let mut old = fs::File::open(b.path().join("f")).unwrap();
    assert_eq!(sha256(&read_all(&mut old)), sha256(&v1));
    fs::write(a.path().join("f"), &v2).unwrap();
    // A new open on B sees version 2 while version 1's copy is the kernel's
    // backing file: the copy is updated in place, so the old handle reads
    // the new bytes too, as on a local disk where a file is rewritten.
    let mut new = fs::File::open(b.path().join("f")).unwrap();
    assert_eq!(sha256(&read_all(&mut new)), sha256(&v2));
    assert_eq!(sha256(&read_all(&mut old)), sha256(&v2));
    // Writing beside both works too, and reaches A.
    let w = fs::File::options().write(true).open(b.path().join("f")).unwrap();
    w.write_all_at(b"from B", 0).unwrap();
    drop(w);
    drop(old);
    drop(new);
    let mut v3 = v2.clone();
    v3[..6].copy_from_slice(b"from B");
    assert_eq!(sha256_file(&a.path().join("f")), sha256(&v3));
}

#[test]
fn a_file_growing_past_the_threshold_while_open_stays_usable() {
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let b = Mount::new(&cell);
    fs::write(a.path().join("grows"), b"small").unwrap();
    // B has it open in cached mode.
    let mut small = fs::File::open(b.path().join("grows")).unwrap();
    assert_eq!(read_all(&mut small), b"small");
    let big = pattern(BIG, 3);
    fs::write(a.path().join("grows"), &big).unwrap();
    // Now large: passthrough would pay, but B's cached open rules it out.
    let mut again = fs::File::open(b.path().join("grows")).unwrap();
    assert_eq!(sha256(&read_all(&mut again)), sha256(&big));
    // Readers and a writer on one node, all at once.
    let w = fs::File::options().write(true).open(b.path().join("grows")).unwrap();
    w.write_all_at(b"X", 10).unwrap();
    drop(w);
    drop(small);
    drop(again);
    let mut want = big;
    want[10] = b'X';
    assert_eq!(sha256_file(&a.path().join("grows")), sha256(&want));
    assert_eq!(sha256_file(&b.path().join("grows")), sha256(&want));
}

#[test]
fn stat_of_a_file_being_written_through_passthrough_is_current() {
    // SQLite, tar and log writers fstat while they write.
    let cell = Cell::new();
    let a = Mount::new(&cell);
    let path = a.path().join("growing.log");
    let mut f = fs::File::create(&path).unwrap();
    let before = f.metadata().unwrap().mtime_nsec() + f.metadata().unwrap().mtime() * 1_000_000_000;
    std::thread::sleep(Duration::from_millis(20));
    f.write_all(&pattern(BIG, 4)).unwrap();
    let meta = f.metadata().unwrap();
    assert_eq!(meta.len(), BIG as u64, "fstat during writing shows the written size");
    assert!(
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec() > before,
        "fstat during writing shows a newer mtime"
    );
    assert_eq!(fs::metadata(&path).unwrap().len(), BIG as u64, "stat by path too");
    f.write_all(b"more").unwrap();
    assert_eq!(f.metadata().unwrap().len(), BIG as u64 + 4);
    drop(f);
    let b = Mount::new(&cell);
    assert_eq!(
        fs::metadata(b.path().join("growing.log")).unwrap().len(),
        BIG as u64 + 4
    );
}
