use super::*;
use crate::volume::StorePlan;
use cellfs_protocol::SetAttr;
use std::io::Read;

fn new_volume(quota: u64) -> (tempfile::TempDir, Volume) {
    let tmp = tempfile::tempdir().unwrap();
    let vol = Volume::create_new(&tmp.path().join("7"), 7, quota, JLEN).unwrap();
    (tmp, vol)
}

/// Journal length of test volumes.
const JLEN: u64 = 1000;

/// The breaks of one change without their change number, which must be
/// set and the same on all of them.
fn plain(breaks: &[Break]) -> Vec<Break> {
    let seq = breaks.first().map_or(0, |b| b.seq);
    assert!(seq > 0, "change not numbered: {breaks:?}");
    breaks
        .iter()
        .map(|b| {
            assert_eq!(b.seq, seq);
            Break { seq: 0, ..b.clone() }
        })
        .collect()
}

fn root() -> Fid {
    Fid::root(7)
}

async fn store(vol: &Volume, fid: Fid, offset: u64, bytes: &[u8], truncate: Option<u64>) -> FsResult<Status> {
    let plan = StorePlan {
        fid,
        offset,
        len: bytes.len() as u64,
        truncate,
        expect: None,
    };
    let mut pending = vol.prepare_store(plan)?;
    let mut src = bytes;
    pending.receive(&mut src, offset, plan.len).await?;
    Ok(vol.commit_store(pending, None, None)?.value)
}

fn content(vol: &Volume, fid: Fid) -> Vec<u8> {
    let (status, file) = vol.open_data(fid).unwrap();
    let mut out = Vec::new();
    if let Some(mut f) = file {
        f.read_to_end(&mut out).unwrap();
    }
    assert_eq!(out.len() as u64, status.size);
    out
}

fn data_files(vol: &Volume) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(vol.dir().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn code<T: std::fmt::Debug>(r: FsResult<T>) -> ErrorCode {
    r.unwrap_err().to_rpc().code
}

#[tokio::test]
async fn store_fetch_round_trip_and_reopen() {
    let (tmp, vol) = new_volume(0);
    let f = vol.create(root(), "a", 0o644, 1, 2, true).unwrap();
    assert_eq!(plain(&f.breaks), vec![brk(root(), vec!["a".into()], false)]);
    let fid = f.value.status.fid;
    assert_eq!(content(&vol, fid), b"");
    let s = store(&vol, fid, 0, b"hello world", None).await.unwrap();
    assert_eq!(s.size, 11);
    assert_eq!(content(&vol, fid), b"hello world");
    let s2 = store(&vol, fid, 6, b"there!", Some(6)).await.unwrap();
    assert!(s2.data_version > s.data_version);
    assert_eq!(content(&vol, fid), b"hello there!");
    assert_eq!(data_files(&vol), vec![format!("{}.{}", fid.vnode, s2.data_version)]);
    assert_eq!(vol.state().unwrap().used, 12);
    let (dir, entries) = vol.read_dir(root()).unwrap();
    assert_eq!(dir.size, DIR_ENTRY_SIZE);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].status, vol.lookup(root(), "a").unwrap());
    drop(vol);
    let vol = Volume::open(&tmp.path().join("7"), 7, 0, JLEN).unwrap();
    assert_eq!(content(&vol, fid), b"hello there!");
    // Truncate to zero through SetAttr: no data file remains.
    let attr = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    let s3 = vol.set_attr_full(fid, &attr).unwrap().value;
    assert_eq!(s3.size, 0);
    assert!(data_files(&vol).is_empty());
    assert_eq!(vol.state().unwrap().used, 0);
}

/// Large stores arrive as the stream's pieces and are written a chunk at a
/// time: one ending inside a page, a rewrite of the whole file, a store of
/// a range running past the old end and one inside the old bytes all read
/// back exactly.
#[tokio::test]
async fn large_stores_read_back_exactly() {
    let (_tmp, vol) = new_volume(0);
    let fid = vol.create(root(), "big", 0o644, 1, 2, true).unwrap().value.status.fid;
    let pattern =
        |len: usize, seed: u64| -> Vec<u8> { (0..len as u64).map(|i| ((i * 7 + seed) % 253) as u8).collect() };
    let first = pattern((9 << 20) + 4097 + 13, 1);
    store(&vol, fid, 0, &first, None).await.unwrap();
    assert_eq!(content(&vol, fid), first);
    let second = pattern(8 << 20, 2);
    let s = store(&vol, fid, 0, &second, Some(0)).await.unwrap();
    assert_eq!(s.size, second.len() as u64);
    assert_eq!(content(&vol, fid), second);
    // A range from inside the old bytes to past their end keeps what is before it.
    let patch = pattern(10 << 20, 3);
    store(&vol, fid, 4096 * 3 + 5, &patch, None).await.unwrap();
    let mut want = second.clone();
    want.resize(4096 * 3 + 5, 0);
    want.extend_from_slice(&patch);
    assert_eq!(content(&vol, fid), want);
    // A large range inside the old bytes keeps those before and after it.
    let inside = pattern((8 << 20) + 100, 4);
    store(&vol, fid, 8192, &inside, None).await.unwrap();
    want[8192..8192 + inside.len()].copy_from_slice(&inside);
    assert_eq!(content(&vol, fid), want);
}

#[tokio::test]
async fn crash_orphan_is_removed_and_old_version_served() {
    let (tmp, vol) = new_volume(0);
    let fid = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let s = store(&vol, fid, 0, b"old", None).await.unwrap();
    // A crash after the new file was written but before the commit.
    let orphan = vol.data_path(fid.vnode, s.data_version + 1);
    std::fs::write(&orphan, b"new, never committed").unwrap();
    std::fs::write(vol.dir().join("data").join("junk"), b"x").unwrap();
    drop(vol);
    let vol = Volume::open(&tmp.path().join("7"), 7, 0, JLEN).unwrap();
    assert!(!orphan.exists());
    assert_eq!(content(&vol, fid), b"old");
    assert_eq!(data_files(&vol), vec![format!("{}.{}", fid.vnode, s.data_version)]);
    // A prepared store that is dropped (client vanished) leaves nothing either.
    let pending = vol
        .prepare_store(StorePlan {
            fid,
            offset: 0,
            len: 5,
            truncate: None,
            expect: None,
        })
        .unwrap();
    drop(pending);
    assert_eq!(data_files(&vol).len(), 1);
    assert_eq!(content(&vol, fid), b"old");
}

/// A small store made the way a commit group makes it (no fsync at commit).
fn store_in_group(vol: &Volume, fid: Fid, bytes: &[u8]) -> FsResult<Status> {
    let len = bytes.len() as u64;
    let pending = vol.prepare_store(StorePlan {
        fid,
        offset: 0,
        len,
        truncate: Some(len),
        expect: None,
    })?;
    pending.write_at(bytes, 0)?;
    Ok(vol.commit_store(pending, None, None)?.value)
}

/// In a commit group each change commits on its own (a refused one changes
/// nothing), the data file a store replaces stays until the group is
/// durable, and a reopened volume holds every change of the group.
#[test]
fn a_commit_group_keeps_replaced_files_until_it_is_durable() {
    let (tmp, vol) = new_volume(0);
    let fid = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let old = store_in_group(&vol, fid, b"old").unwrap();
    let old_path = vol.data_path(fid.vnode, old.data_version);
    let (new, flushed) = vol.run_group(|| {
        let new = store_in_group(&vol, fid, b"new").unwrap();
        assert!(
            old_path.exists(),
            "a replaced data file went before its group was durable"
        );
        assert_eq!(code(vol.create(root(), "a", 0o644, 0, 0, true)), ErrorCode::Exists);
        vol.create(root(), "b", 0o644, 0, 0, true).unwrap();
        new
    });
    flushed.unwrap();
    assert!(!old_path.exists());
    assert_eq!(data_files(&vol), vec![format!("{}.{}", fid.vnode, new.data_version)]);
    drop(vol);
    let vol = Volume::open(&tmp.path().join("7"), 7, 0, JLEN).unwrap();
    assert_eq!(content(&vol, fid), b"new");
    assert_eq!(vol.state().unwrap().files, 3);
    vol.lookup(root(), "b").unwrap();
}

/// A whole file written ahead of its store (outside the lock) commits like
/// any store, under a name no data version takes, and survives a reopen;
/// one refused at adoption (a folder, or over the quota) or dropped leaves
/// no file behind.
#[test]
fn a_file_written_ahead_is_adopted_or_leaves_nothing() {
    let (tmp, vol) = new_volume(8);
    let fid = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let old = store_in_group(&vol, fid, b"old").unwrap();
    let ahead = vol.write_ahead(fid, b"newer").unwrap();
    let new = vol
        .commit_store(vol.adopt(ahead, None).unwrap(), None, None)
        .unwrap()
        .value;
    assert_eq!((new.size, new.data_version), (5, old.data_version + 1));
    assert_eq!(content(&vol, fid), b"newer");
    let files = data_files(&vol);
    assert_eq!(files.len(), 1, "{files:?}");
    let (vnode, number) = parse_data_name(&files[0]).unwrap();
    assert_eq!(vnode, fid.vnode);
    assert!(number >= 1 << 63, "{number}");
    // Over the quota, or a folder: refused, and the file written ahead goes.
    let big = vol.write_ahead(fid, b"123456789").unwrap();
    assert_eq!(code(vol.adopt(big, None)), ErrorCode::QuotaExceeded);
    let dir = vol.make_dir(root(), "d", 0o755, 0, 0).unwrap().value.status.fid;
    let into_dir = vol.write_ahead(dir, b"x").unwrap();
    assert_eq!(code(vol.adopt(into_dir, None)), ErrorCode::IsDir);
    drop(vol.write_ahead(fid, b"dropped").unwrap());
    assert_eq!(data_files(&vol), files);
    drop(vol);
    let vol = Volume::open(&tmp.path().join("7"), 7, 8, JLEN).unwrap();
    assert_eq!(content(&vol, fid), b"newer");
    assert_eq!(data_files(&vol), files);
}

/// A store made on condition (a write kept through an outage) is taken
/// only while the file is at the version it names, whichever way it is
/// written; refused, it changes nothing.
#[test]
fn a_conditional_store_is_taken_only_at_its_version() {
    let (_tmp, vol) = new_volume(0);
    let fid = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let v1 = store_in_group(&vol, fid, b"one").unwrap();
    let plan = |expect| StorePlan {
        fid,
        offset: 0,
        len: 3,
        truncate: Some(3),
        expect: Some(expect),
    };
    assert_eq!(code(vol.prepare_store(plan(v1.data_version - 1))), ErrorCode::Changed);
    let stale = vol.write_ahead(fid, b"old").unwrap();
    assert_eq!(code(vol.adopt(stale, Some(v1.data_version + 1))), ErrorCode::Changed);
    assert_eq!(content(&vol, fid), b"one");
    let pending = vol.prepare_store(plan(v1.data_version)).unwrap();
    pending.write_at(b"two", 0).unwrap();
    let v2 = vol.commit_store(pending, None, None).unwrap().value;
    assert_eq!(v2.data_version, v1.data_version + 1);
    let ahead = vol.write_ahead(fid, b"three").unwrap();
    let v3 = vol
        .commit_store(vol.adopt(ahead, Some(v2.data_version)).unwrap(), None, None)
        .unwrap()
        .value;
    assert_eq!((v3.size, content(&vol, fid)), (5, b"three".to_vec()));
}

/// Changes queued from many tasks at once are all run and answered once,
/// each after its group is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_queued_change_is_answered_once() {
    let (_tmp, vol) = new_volume(0);
    let vol = Arc::new(vol);
    let mut answers = Vec::new();
    for i in 0..40 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        vol.join_group(Box::new(move |v: &Volume| -> Finish {
            let made = v
                .create(root(), &format!("f{i}"), 0o644, 0, 0, true)
                .map(|c| c.value.status.fid);
            Box::new(move |flushed: &FsResult<()>| {
                let _ = tx.send(made.map(|fid| (fid, flushed.is_ok())));
            })
        }));
        answers.push(rx);
    }
    for rx in answers {
        let (fid, flushed) = rx.await.unwrap().unwrap();
        assert!(flushed);
        vol.status(fid).unwrap();
    }
    assert_eq!(vol.read_dir(root()).unwrap().1.len(), 40);
}

#[tokio::test]
async fn quota_refusal_changes_nothing() {
    let (_tmp, vol) = new_volume(10);
    let fid = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let s = store(&vol, fid, 0, b"12345678", None).await.unwrap();
    let files = data_files(&vol);
    let plan = StorePlan {
        fid,
        offset: 8,
        len: 3,
        truncate: None,
        expect: None,
    };
    assert_eq!(code(vol.prepare_store(plan)), ErrorCode::QuotaExceeded);
    let attr = SetAttr {
        size: Some(11),
        ..SetAttr::default()
    };
    assert_eq!(code(vol.set_attr_full(fid, &attr)), ErrorCode::QuotaExceeded);
    assert_eq!(vol.status(fid).unwrap(), s);
    assert_eq!(data_files(&vol), files);
    assert_eq!(vol.state().unwrap().used, 8);
    // Overwriting in place and shrinking are fine at the limit.
    store(&vol, fid, 0, b"ab", None).await.unwrap();
    store(&vol, fid, 8, b"cd", None).await.unwrap();
    assert_eq!(content(&vol, fid), b"ab345678cd");
    vol.set_quota(0);
    store(&vol, fid, 10, b"unlimited", None).await.unwrap();
}

#[test]
fn namespace_error_mapping() {
    let (_tmp, vol) = new_volume(0);
    let d = vol.make_dir(root(), "d", 0o755, 0, 0).unwrap().value.status.fid;
    let f = vol.create(root(), "f", 0o644, 0, 0, true).unwrap().value.status.fid;
    vol.create(d, "inner", 0o644, 0, 0, true).unwrap();
    vol.make_dir(root(), "e", 0o755, 0, 0).unwrap();
    let sub = vol.make_dir(d, "sub", 0o755, 0, 0).unwrap().value.status.fid;
    let gone = Fid {
        volume: 7,
        vnode: 999,
        unique: 1,
    };
    let wrong_unique = Fid { unique: 42, ..f };
    let cases: Vec<(&str, ErrorCode)> = vec![
        ("lookup missing", code(vol.lookup(root(), "nope"))),
        ("lookup in file", code(vol.lookup(f, "x"))),
        (
            "create exclusive existing",
            code(vol.create(root(), "f", 0o644, 0, 0, true)),
        ),
        ("create over dir", code(vol.create(root(), "d", 0o644, 0, 0, false))),
        ("create in file", code(vol.create(f, "x", 0o644, 0, 0, true))),
        ("mkdir existing", code(vol.make_dir(root(), "f", 0o755, 0, 0))),
        ("remove dir", code(vol.remove(root(), "d"))),
        ("remove missing", code(vol.remove(root(), "nope"))),
        ("rmdir file", code(vol.remove_dir(root(), "f"))),
        ("rmdir non-empty", code(vol.remove_dir(root(), "d"))),
        ("rename missing", code(vol.rename(root(), "nope", root(), "x"))),
        (
            "rename dir over non-empty dir",
            code(vol.rename(root(), "e", root(), "d")),
        ),
        ("rename dir over file", code(vol.rename(root(), "d", root(), "f"))),
        ("rename file over dir", code(vol.rename(root(), "f", root(), "d"))),
        ("rename dir into itself", code(vol.rename(root(), "d", d, "x"))),
        ("rename dir into its subtree", code(vol.rename(root(), "d", sub, "x"))),
        (
            "rename across volumes",
            code(vol.rename(root(), "f", Fid::root(8), "x")),
        ),
        ("link dir", code(vol.link(root(), "l", d))),
        ("link existing name", code(vol.link(root(), "d", f))),
        ("status of unknown vnode", code(vol.status(gone))),
        ("status with wrong uniquifier", code(vol.status(wrong_unique))),
        ("fetch dir", code(vol.open_data(d))),
        ("readlink file", code(vol.read_link(f))),
    ];
    let expected = [
        ErrorCode::NotFound,
        ErrorCode::NotDir,
        ErrorCode::Exists,
        ErrorCode::IsDir,
        ErrorCode::NotDir,
        ErrorCode::Exists,
        ErrorCode::IsDir,
        ErrorCode::NotFound,
        ErrorCode::NotDir,
        ErrorCode::NotEmpty,
        ErrorCode::NotFound,
        ErrorCode::NotEmpty,
        ErrorCode::NotDir,
        ErrorCode::IsDir,
        ErrorCode::Loop,
        ErrorCode::Loop,
        ErrorCode::CrossVolume,
        ErrorCode::NotPermitted,
        ErrorCode::Exists,
        ErrorCode::Stale,
        ErrorCode::Stale,
        ErrorCode::IsDir,
        ErrorCode::Invalid,
    ];
    assert_eq!(cases.len(), expected.len());
    for ((what, got), want) in cases.iter().zip(expected) {
        assert_eq!(*got, want, "{what}");
    }
}

#[test]
fn nlink_parent_and_dv_follow_renames_and_removes() {
    let (_tmp, vol) = new_volume(0);
    let root_dv = vol.status(root()).unwrap().data_version;
    let a = vol.make_dir(root(), "a", 0o755, 0, 0).unwrap().value.status.fid;
    let b = vol.make_dir(root(), "b", 0o755, 0, 0).unwrap().value.status.fid;
    assert_eq!(vol.status(root()).unwrap().nlink, 4);
    assert!(vol.status(root()).unwrap().data_version > root_dv);
    // Move a into b: root loses a subdirectory, b gains one.
    let r = vol.rename(root(), "a", b, "a2").unwrap();
    assert_eq!(r.value.from_dir.nlink, 3);
    assert_eq!(r.value.to_dir.nlink, 3);
    assert_eq!(
        plain(&r.breaks),
        vec![
            brk(root(), vec!["a".into()], false),
            brk(b, vec!["a2".into()], false),
            brk(a, vec![], false),
        ]
    );
    // Moving b into a (its own child) is a loop.
    assert_eq!(code(vol.rename(root(), "b", a, "b")), ErrorCode::Loop);
    // Rename onto itself changes nothing and breaks nothing.
    let before = vol.status(b).unwrap();
    let same = vol.rename(root(), "b", root(), "b").unwrap();
    assert!(same.breaks.is_empty());
    assert_eq!(vol.status(b).unwrap(), before);
    // Hard links: removing one keeps the file, removing the last deletes it.
    let f = vol.create(root(), "f", 0o644, 0, 0, true).unwrap().value.status.fid;
    assert_eq!(vol.link(root(), "g", f).unwrap().value.status.nlink, 2);
    let r = vol.remove(root(), "f").unwrap();
    assert_eq!(r.value.victim.as_ref().map(|s| s.nlink), Some(1));
    assert_eq!(plain(&r.breaks)[1], brk(f, vec![], false));
    // Replacing rename in one directory: one break with both names, replaced deleted.
    let h = vol.create(root(), "h", 0o644, 0, 0, true).unwrap().value.status.fid;
    let r = vol.rename(root(), "g", root(), "h").unwrap();
    assert_eq!(plain(&r.breaks)[0], brk(root(), vec!["g".into(), "h".into()], false));
    assert_eq!(plain(&r.breaks)[2], brk(h, vec![], true));
    assert_eq!(code(vol.status(h)), ErrorCode::Stale);
    let r = vol.remove(root(), "h").unwrap();
    assert!(r.value.victim.is_none());
    assert_eq!(plain(&r.breaks)[1], brk(f, vec![], true));
    // rmdir of the now-empty a (inside b) drops b's link count.
    vol.remove_dir(b, "a2").unwrap();
    assert_eq!(vol.status(b).unwrap().nlink, 2);
    assert_eq!(vol.state().unwrap().files, 2);
}

#[test]
fn symlinks_and_mount_points_keep_their_target() {
    let (_tmp, vol) = new_volume(0);
    let s = vol.symlink(root(), "l", "../x", 1, 1).unwrap().value.status;
    assert_eq!((s.kind, s.size), (FileKind::Symlink, 4));
    assert_eq!(vol.read_link(s.fid).unwrap(), "../x");
    let m = vol.make_mount(root(), "m", "site.www").unwrap().value.status;
    assert_eq!(m.kind, FileKind::MountPoint);
    assert_eq!(vol.read_link(m.fid).unwrap(), "site.www");
    assert_eq!(code(vol.symlink(root(), "e", "", 0, 0)), ErrorCode::Invalid);
}

#[test]
fn chmod_updates_ctime_but_not_mtime_or_dv() {
    let (_tmp, vol) = new_volume(0);
    let f = vol.create(root(), "f", 0o644, 0, 0, true).unwrap().value.status;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let attr = SetAttr {
        mode: Some(0o100600),
        ..SetAttr::default()
    };
    let s = vol.set_attr_full(f.fid, &attr).unwrap().value;
    assert_eq!(s.mode, 0o600);
    assert_eq!(s.mtime, f.mtime);
    assert!(s.ctime > f.ctime);
    // The data version tracks content only: a cached copy stays valid.
    assert_eq!(s.data_version, f.data_version);
}

fn journal_entries(vol: &Volume) -> Vec<(u64, Vec<(u64, u64)>)> {
    let txn = vol.db.begin_read().unwrap();
    let t = txn.open_table(JOURNAL).unwrap();
    t.iter()
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            (k.value(), schema::decode(v.value()).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn every_change_is_numbered_and_journaled_with_its_break_fids() {
    let (_tmp, vol) = new_volume(0);
    let js = vol.journal_state().unwrap();
    assert_ne!(js.incarnation, 0);
    assert_eq!((js.seq, js.oldest), (0, 1));
    let c = vol.create(root(), "a", 0o644, 0, 0, true).unwrap();
    let a = c.value.status.fid;
    assert_eq!(c.breaks[0].seq, 1);
    let s = store(&vol, a, 0, b"x", None).await.unwrap();
    assert_eq!(s.size, 1);
    let l = vol.link(root(), "b", a).unwrap();
    assert!(l.breaks.iter().all(|b| b.seq == 3));
    // A non-exclusive create of an existing file and a no-op rename change nothing.
    assert!(vol.create(root(), "a", 0o644, 0, 0, false).unwrap().breaks.is_empty());
    assert!(vol.rename(root(), "a", root(), "b").unwrap().breaks.is_empty());
    let r = vol.remove(root(), "b").unwrap();
    assert_eq!(r.breaks[0].seq, 4);
    let js = vol.journal_state().unwrap();
    assert_eq!((js.seq, js.oldest), (4, 1));
    let (rv, ru) = (root().vnode, root().unique);
    assert_eq!(
        journal_entries(&vol),
        vec![
            (1, vec![(rv, ru)]),
            (2, vec![(a.vnode, a.unique)]),
            (3, vec![(rv, ru), (a.vnode, a.unique)]),
            (4, vec![(rv, ru), (a.vnode, a.unique)]),
        ]
    );
    // A refused change is not numbered.
    assert!(vol.make_dir(root(), "a", 0o755, 0, 0).is_err());
    assert_eq!(vol.journal_state().unwrap().seq, 4);
}

#[test]
fn journal_is_trimmed_in_the_change_and_persists_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("7");
    let vol = Volume::create_new(&dir, 7, 0, 3).unwrap();
    for i in 0..5 {
        vol.make_dir(root(), &format!("d{i}"), 0o755, 0, 0).unwrap();
    }
    let js = vol.journal_state().unwrap();
    assert_eq!((js.seq, js.oldest), (5, 3));
    let keys: Vec<u64> = journal_entries(&vol).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![3, 4, 5]);
    drop(vol);
    // Same incarnation and numbering after a restart.
    let vol = Volume::open(&dir, 7, 0, 3).unwrap();
    assert_eq!(vol.journal_state().unwrap(), js);
    vol.make_dir(root(), "e", 0o755, 0, 0).unwrap();
    assert_eq!(vol.journal_state().unwrap().oldest, 4);
    drop(vol);
    // A shorter setting trims at open; a longer one keeps what there is.
    let vol = Volume::open(&dir, 7, 0, 1).unwrap();
    let js = vol.journal_state().unwrap();
    assert_eq!((js.seq, js.oldest), (6, 6));
    assert_eq!(journal_entries(&vol).len(), 1);
    drop(vol);
    let vol = Volume::open(&dir, 7, 0, 0).unwrap();
    assert_eq!(vol.journal_state().unwrap().oldest, 7);
    assert!(journal_entries(&vol).is_empty());
    vol.make_dir(root(), "f", 0o755, 0, 0).unwrap();
    let js = vol.journal_state().unwrap();
    assert_eq!((js.seq, js.oldest), (7, 8));
    assert!(journal_entries(&vol).is_empty());
}

#[test]
fn a_volume_without_a_journal_gets_one_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("7");
    let vol = Volume::create_new(&dir, 7, 0, JLEN).unwrap();
    vol.make_dir(root(), "d", 0o755, 0, 0).unwrap();
    let before = vol.journal_state().unwrap();
    // What a volume written before the journal existed looks like.
    {
        let txn = vol.db.begin_write().unwrap();
        txn.open_table(STATE).unwrap().remove(JOURNAL_KEY).unwrap();
        txn.delete_table(JOURNAL).unwrap();
        txn.commit().unwrap();
    }
    drop(vol);
    let vol = Volume::open(&dir, 7, 0, JLEN).unwrap();
    let js = vol.journal_state().unwrap();
    assert_ne!(js.incarnation, before.incarnation);
    assert_ne!(js.incarnation, 0);
    assert_eq!((js.seq, js.oldest), (0, 1));
    assert_eq!(vol.lookup(root(), "d").unwrap().kind, FileKind::Dir);
    // The old client's numbering means nothing now.
    let r = vol.reconnect(before.incarnation, before.seq, &[], 100).unwrap();
    assert_eq!(r.changed, None);
    assert_eq!(r.incarnation, js.incarnation);
}

#[tokio::test]
async fn reconnect_lists_exactly_what_changed_and_its_boundaries() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = Volume::create_new(&tmp.path().join("7"), 7, 0, 3).unwrap();
    let inc = vol.journal_state().unwrap().incarnation;
    let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid; // 1
    let b = vol.create(root(), "b", 0o644, 0, 0, true).unwrap().value.status.fid; // 2
    let gone = vol.create(root(), "c", 0o644, 0, 0, true).unwrap().value.status.fid; // 3
    let since = vol.journal_state().unwrap().seq;
    assert_eq!(since, 3);
    store(&vol, a, 0, b"new", None).await.unwrap(); // 4: a
    vol.remove(root(), "c").unwrap(); // 5: root, c
    let js = vol.journal_state().unwrap();
    assert_eq!((js.seq, js.oldest), (5, 3));
    let never = Fid {
        volume: 7,
        vnode: 999,
        unique: 1,
    };
    let other_volume = Fid { volume: 8, ..b };
    let listed = [a, b, gone, root(), never, other_volume, b];
    let r = vol.reconnect(inc, since, &listed, 100).unwrap();
    assert_eq!((r.incarnation, r.current), (inc, 5));
    let mut want = vec![root(), a, gone, never, other_volume];
    want.sort();
    assert_eq!(r.changed, Some(want));
    assert_eq!(r.unchanged, vec![b]);
    // Up to date: nothing changed, everything listed that exists is granted.
    let r = vol.reconnect(inc, 5, &[a, b], 100).unwrap();
    assert_eq!(r.changed, Some(vec![]));
    assert_eq!(r.unchanged, vec![a, b]);
    // The oldest entry is 3, so since = 2 (changes 3..=5 needed) is covered...
    let r = vol.reconnect(inc, 2, &[a, b], 100).unwrap();
    let mut want = vec![root(), a, gone];
    want.sort();
    assert_eq!(r.changed, Some(want));
    assert_eq!(r.unchanged, vec![b]);
    // ...and since = 1 (change 2 trimmed) is not.
    let r = vol.reconnect(inc, 1, &[a, b], 100).unwrap();
    assert_eq!((r.changed, r.unchanged.len(), r.current), (None, 0, 5));
    // A change number from the future or another incarnation: no answer.
    assert_eq!(vol.reconnect(inc, 6, &[b], 100).unwrap().changed, None);
    assert_eq!(vol.reconnect(inc ^ 1, 5, &[b], 100).unwrap().changed, None);
    assert_eq!(vol.reconnect(0, 0, &[b], 100).unwrap().changed, None);
    // Too many changes to list: fall back to bulk.
    let r = vol.reconnect(inc, 2, &[a, b], 2).unwrap();
    assert_eq!((r.changed, r.unchanged.len()), (None, 0));
}

#[test]
fn statuses_answer_each_fid_separately() {
    let (_tmp, vol) = new_volume(0);
    let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let stale = Fid { unique: 99, ..a };
    let out = vol.statuses(&[a, stale, root()]).unwrap();
    assert_eq!(out[0].as_ref().unwrap().fid, a);
    assert_eq!(out[1].as_ref().unwrap_err().to_rpc().code, ErrorCode::Stale);
    assert_eq!(out[2].as_ref().unwrap().kind, FileKind::Dir);
}

/// Keys of the logged (unsettled) data files in the volume's table.
fn logged(vol: &Volume) -> Vec<(u64, u64)> {
    let r = vol.db.begin_read().unwrap();
    match r.open_table(crate::schema::UNSETTLED) {
        Ok(t) => t.iter().unwrap().map(|i| i.unwrap().0.value()).collect(),
        Err(redb::TableError::TableDoesNotExist(_)) => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

/// A whole small store as `StoreData` makes it: written ahead, adopted,
/// committed.
fn store_ahead(vol: &Volume, fid: Fid, bytes: &[u8]) -> Status {
    let ahead = vol.write_ahead(fid, bytes).unwrap();
    let pending = vol.adopt(ahead, None).unwrap();
    vol.commit_store(pending, None, None).unwrap().value
}

#[tokio::test]
async fn logged_stores_lost_by_a_crash_are_written_back_at_open() {
    let (tmp, vol) = new_volume(0);
    let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    let b = vol.create(root(), "b", 0o644, 0, 0, true).unwrap().value.status.fid;
    let c = vol.create(root(), "c", 0o644, 0, 0, true).unwrap().value.status.fid;
    store_ahead(&vol, a, b"first of a");
    let a2 = store_ahead(&vol, a, b"second of a");
    let bs = store_ahead(&vol, b, &[7u8; 20_000]);
    store_ahead(&vol, c, b"c, removed later");
    vol.remove(root(), "c").unwrap();
    assert_eq!(logged(&vol).len(), 4, "every small whole store is logged");
    let a_file = vol.dir().join("data").join(data_name(a.vnode, {
        let r = vol.reader().unwrap();
        r.vnode(a).unwrap().data_file
    }));
    let b_file = vol.dir().join("data").join(data_name(b.vnode, {
        let r = vol.reader().unwrap();
        r.vnode(b).unwrap().data_file
    }));
    // The crash: the unsynced data files never reached the disk (one gone,
    // one torn).
    std::fs::remove_file(&a_file).unwrap();
    std::fs::write(&b_file, b"torn").unwrap();
    drop(vol);
    let vol = Volume::open(&tmp.path().join("7"), 7, 0, JLEN).unwrap();
    assert_eq!(content(&vol, a), b"second of a");
    assert_eq!(vol.open_data(a).unwrap().0, a2);
    assert_eq!(content(&vol, b), vec![7u8; 20_000]);
    assert_eq!(vol.open_data(b).unwrap().0, bs);
    assert!(logged(&vol).is_empty(), "the log is emptied once written back");
    assert_eq!(
        data_files(&vol).len(),
        2,
        "nothing written back for old or removed files"
    );
}

#[tokio::test]
async fn a_settle_flushes_only_the_data_files_still_named() {
    use super::settle::Flushed;
    let (_tmp, vol) = new_volume(0);
    let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    for i in 0..3 {
        store_ahead(&vol, a, format!("version {i}").as_bytes());
    }
    let keys = logged(&vol);
    assert_eq!(keys.len(), 3);
    assert_eq!(
        vol.flush_named(&keys).unwrap(),
        Flushed::OneByOne(1),
        "two of the three were replaced"
    );
    // Past the bound, one flush of the file system.
    for i in 0..17 {
        let f = vol
            .create(root(), &format!("f{i}"), 0o644, 0, 0, true)
            .unwrap()
            .value
            .status
            .fid;
        store_ahead(&vol, f, b"small");
    }
    assert_eq!(vol.flush_named(&logged(&vol)).unwrap(), Flushed::FileSystem);
    assert_eq!(vol.settle().unwrap(), 20);
    assert!(logged(&vol).is_empty(), "every row dropped, named or not");
    assert_eq!(content(&vol, a), b"version 2");
}

#[tokio::test]
async fn settling_empties_the_log_and_a_clone_settles_its_origin_first() {
    let (tmp, vol) = new_volume(0);
    let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    store_ahead(&vol, a, b"small");
    assert_eq!(logged(&vol).len(), 1);
    assert_eq!(vol.settle().unwrap(), 1);
    assert!(logged(&vol).is_empty());
    assert_eq!(vol.settle().unwrap(), 0, "nothing left to settle");
    assert_eq!(content(&vol, a), b"small");
    // Too large to log: fsynced as before, nothing logged.
    let big = vec![1u8; LOGGED_MAX + 1];
    store_ahead(&vol, a, &big);
    assert!(logged(&vol).is_empty());
    assert_eq!(content(&vol, a), big);
    store_ahead(&vol, a, b"logged again");
    assert_eq!(logged(&vol).len(), 1);
    vol.write_clone(&tmp.path().join("clone")).unwrap();
    assert!(
        logged(&vol).is_empty(),
        "a clone never names a data file only the log holds"
    );
}

/// Creates `name` in the root as a lazy change of the volume's group;
/// returns its FID and the root's data version after it.
async fn create_lazily(vol: &Arc<Volume>, name: &str) -> (Fid, u64) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = name.to_owned();
    vol.join_group_lazy(Box::new(move |v: &Volume| -> Finish {
        let made = v.create(root(), &name, 0o644, 0, 0, true).map(|c| c.value);
        Box::new(move |flushed: &FsResult<()>| {
            assert!(flushed.is_ok());
            let _ = tx.send(made);
        })
    }));
    let made = rx.await.unwrap().unwrap();
    (made.status.fid, made.dir.data_version)
}

/// Copies the volume's folder as a crash would leave it (the volume still
/// open, nothing closed) and opens the copy.
fn crash_copy(vol: &Volume, to: &Path) -> Volume {
    std::fs::create_dir_all(to.join("data")).unwrap();
    std::fs::copy(vol.dir().join("meta.redb"), to.join("meta.redb")).unwrap();
    Volume::open(to, 7, 0, JLEN).unwrap()
}

/// Lazy creates are answered before they are durable; a volume opened after
/// a crash hands out none of the FIDs, directory versions or change numbers
/// a lost create may have given, whether the crash kept the creates or not.
#[tokio::test]
async fn a_volume_not_closed_hands_out_nothing_a_crash_may_have_taken_back() {
    let (tmp, vol) = new_volume(0);
    let vol = Arc::new(vol);
    let before = vol.journal_state().unwrap();
    let mut seen = Vec::new();
    for i in 0..20 {
        seen.push(create_lazily(&vol, &format!("f{i}")).await);
    }
    assert!(vol.lazy_pending(), "the creates were flushed at once");
    let copy = crash_copy(&vol, &tmp.path().join("crashed"));
    let after = copy.journal_state().unwrap();
    assert_ne!(
        after.incarnation, before.incarnation,
        "change numbers of before the crash stay valid"
    );
    let (root_status, _) = copy.read_dir(root()).unwrap();
    let max_dv = seen.iter().map(|s| s.1).max().unwrap();
    assert!(
        root_status.data_version > max_dv,
        "{} <= {max_dv}",
        root_status.data_version
    );
    let new = copy.create(root(), "new", 0o644, 0, 0, true).unwrap().value;
    for (fid, _) in &seen {
        assert!(
            new.status.fid.unique > fid.unique && new.status.fid.vnode > fid.vnode,
            "{new:?} after {fid}"
        );
    }
    assert!(new.dir.data_version > max_dv);
}

/// A volume closed and opened again keeps its lazy creates, its
/// incarnation and its versions: nothing is recovered.
#[tokio::test]
async fn a_closed_volume_keeps_its_lazy_creates_and_opens_as_it_was() {
    let (tmp, vol) = new_volume(0);
    let vol = Arc::new(vol);
    let (fid, dv) = create_lazily(&vol, "kept").await;
    let before = vol.journal_state().unwrap();
    drop(vol);
    let vol = Volume::open(&tmp.path().join("7"), 7, 0, JLEN).unwrap();
    assert_eq!(vol.journal_state().unwrap(), before);
    assert_eq!(vol.lookup(root(), "kept").unwrap().fid, fid);
    assert_eq!(vol.read_dir(root()).unwrap().0.data_version, dv);
}

/// At most `LAZY_MAX` changes wait for a flush; an eager change, or the
/// flush a moment later, makes them durable.
#[tokio::test]
async fn lazy_creates_are_bounded_and_flushed_by_the_next_eager_change_or_soon() {
    let (_tmp, vol) = new_volume(0);
    let vol = Arc::new(vol);
    for i in 0..LAZY_MAX + 5 {
        create_lazily(&vol, &format!("f{i}")).await;
        assert!(vol.lazy_changes() <= LAZY_MAX);
    }
    assert!(vol.lazy_pending());
    let (tx, rx) = tokio::sync::oneshot::channel();
    vol.join_group(Box::new(move |v: &Volume| -> Finish {
        let made = v.make_dir(root(), "d", 0o755, 0, 0).map(|_| ());
        Box::new(move |flushed: &FsResult<()>| {
            let _ = tx.send((made, flushed.is_ok()));
        })
    }));
    let (made, flushed) = rx.await.unwrap();
    made.unwrap();
    assert!(flushed);
    assert!(!vol.lazy_pending(), "an eager change left lazy ones unflushed");
    create_lazily(&vol, "late").await;
    assert!(vol.lazy_pending());
    let flushed = async {
        while vol.lazy_pending() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), flushed)
        .await
        .expect("a lazy create was never flushed");
}

/// Copies the volume's metadata and redo log as a crash would leave them
/// and opens the copy. No data file is copied: those of logged stores were
/// never flushed, and come back from the log.
fn crash_copy_with_log(vol: &Volume, to: &Path) -> Volume {
    std::fs::create_dir_all(to.join("data")).unwrap();
    for name in ["meta.redb", "redo.log"] {
        std::fs::copy(vol.dir().join(name), to.join(name)).unwrap();
    }
    Volume::open(to, 7, 0, JLEN).unwrap()
}

/// A commit group is durable once its record is in the redo log: a crash
/// right after keeps every change of the group, small stores' bytes too,
/// though none of it reached `meta.redb` durably.
#[test]
fn a_durable_group_survives_a_crash_through_the_redo_log() {
    let (tmp, vol) = new_volume(0);
    vol.create(root(), "gone", 0o644, 0, 0, true).unwrap();
    let ((a, d), flushed) = vol.run_group(|| {
        let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
        store_ahead(&vol, a, b"the bytes of a");
        let d = vol.make_dir(root(), "d", 0o755, 0, 0).unwrap().value.status.fid;
        vol.rename(root(), "a", d, "a2").unwrap();
        vol.remove(root(), "gone").unwrap();
        (a, d)
    });
    flushed.unwrap();
    let seq = vol.journal_state().unwrap().seq;
    let copy = crash_copy_with_log(&vol, &tmp.path().join("crashed"));
    assert_eq!(copy.lookup(d, "a2").unwrap().fid, a);
    assert_eq!(content(&copy, a), b"the bytes of a");
    assert_eq!(code(copy.lookup(root(), "a")), ErrorCode::NotFound);
    assert_eq!(code(copy.lookup(root(), "gone")), ErrorCode::NotFound);
    assert_eq!(copy.journal_state().unwrap().seq, seq, "a change number went back");
    assert_eq!(copy.state().unwrap().files, 3);
}

/// A durable commit outside a group covers the records before it: they are
/// never replayed over what changed after them.
#[test]
fn records_a_durable_commit_covers_are_never_replayed_over_later_changes() {
    let (tmp, vol) = new_volume(0);
    let (_, flushed) = vol.run_group(|| vol.create(root(), "a", 0o644, 0, 0, true).unwrap());
    flushed.unwrap();
    vol.rename(root(), "a", root(), "b").unwrap();
    let copy = crash_copy_with_log(&vol, &tmp.path().join("crashed"));
    copy.lookup(root(), "b").unwrap();
    assert_eq!(code(copy.lookup(root(), "a")), ErrorCode::NotFound);
}

/// Past `REDO_RECORDS` records the log checkpoints and starts over; a crash
/// after keeps every group, before and after the checkpoint.
#[test]
fn every_group_survives_a_crash_across_log_checkpoints() {
    let (tmp, vol) = new_volume(0);
    let n = super::redo::REDO_RECORDS + 10;
    for i in 0..n {
        let (_, flushed) = vol.run_group(|| vol.make_dir(root(), &format!("d{i}"), 0o755, 0, 0).unwrap());
        flushed.unwrap();
    }
    let copy = crash_copy_with_log(&vol, &tmp.path().join("crashed"));
    for i in 0..n {
        copy.lookup(root(), &format!("d{i}")).unwrap();
    }
    assert_eq!(copy.state().unwrap().files, u64::from(n) + 1);
}

/// A store's new data file is a spare file renamed (no inode allocated on
/// the store's path), and a removed volume makes no more spares.
#[test]
fn data_files_are_made_from_spare_files() {
    use std::os::unix::fs::MetadataExt;
    let (_tmp, vol) = new_volume(0);
    let a = vol.create(root(), "a", 0o644, 0, 0, true).unwrap().value.status.fid;
    store_ahead(&vol, a, b"first");
    let spare_dir = vol.dir().join("spare");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while vol.spares().unwrap().ready() < SPARES {
        assert!(std::time::Instant::now() < deadline, "the spares were never made");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let spare_inodes: std::collections::BTreeSet<u64> = std::fs::read_dir(&spare_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().ino())
        .collect();
    store_ahead(&vol, a, b"second");
    let data_file = vol.reader().unwrap().vnode(a).unwrap().data_file;
    let ino = std::fs::metadata(vol.data_path(a.vnode, data_file)).unwrap().ino();
    assert!(spare_inodes.contains(&ino), "the data file was not a spare");
    assert_eq!(content(&vol, a), b"second");
    vol.mark_removed();
    std::fs::remove_dir_all(vol.dir()).unwrap();
}

/// The first stores of a freshly opened volume, all at once (writers let go
/// together at the end of a restart's grace), all get their data files:
/// setting up the spare files once, not once per racing store.
#[test]
fn the_first_stores_of_a_volume_at_once_all_get_data_files() {
    for _ in 0..40 {
        let (_tmp, vol) = new_volume(0);
        let fids: Vec<Fid> = (0..32)
            .map(|i| {
                vol.create(root(), &format!("f{i}"), 0o644, 0, 0, true)
                    .unwrap()
                    .value
                    .status
                    .fid
            })
            .collect();
        std::thread::scope(|s| {
            let vol = &vol;
            let stores: Vec<_> = fids
                .iter()
                .enumerate()
                .map(|(i, &fid)| {
                    s.spawn(move || {
                        // Staggered as stores arriving over the network are.
                        std::thread::sleep(std::time::Duration::from_micros(30 * i as u64));
                        vol.start_ahead(fid, 5).map(drop)
                    })
                })
                .collect();
            for (i, t) in stores.into_iter().enumerate() {
                t.join().unwrap().unwrap_or_else(|e| panic!("store {i}: {e}"));
            }
        });
    }
}
