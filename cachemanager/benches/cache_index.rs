//! Cache index micro-benchmarks: the LRU of cached copies and the node
//! table at 100,000 files, and saving/loading the persisted index.
//! `cargo bench -p cellfs-cachemanager --bench cache_index`.

use cellfs_cachemanager::cache::{CacheEntry, DiskCache};
use cellfs_cachemanager::nodes::NodeTable;
use cellfs_cachemanager::persist::{self, SnapshotRef};
use cellfs_protocol::{Fid, FileKind, Status, Timestamp};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;

const FILES: u64 = 100_000;

fn fid(vnode: u64) -> Fid {
    Fid {
        volume: 1,
        vnode,
        unique: vnode,
    }
}

fn status(vnode: u64) -> Status {
    let t = Timestamp {
        secs: 1_790_000_000,
        nanos: 0,
    };
    Status {
        fid: fid(vnode),
        kind: if vnode == 1 { FileKind::Dir } else { FileKind::File },
        mode: 0o644,
        nlink: 1,
        uid: 33,
        gid: 33,
        size: 15_000,
        data_version: 1,
        mtime: t,
        ctime: t,
        atime: t,
        acl_dir: 1,
    }
}

fn entry() -> CacheEntry {
    CacheEntry {
        data_version: 1,
        size: 15_000,
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut cache = DiskCache::open(dir.path(), u64::MAX, Vec::new()).expect("cache");
    for v in 2..FILES + 2 {
        cache.insert(fid(v), entry());
    }
    let mut g = c.benchmark_group("cache index, 100k files");
    let mut v = 2;
    g.bench_function("LRU hit", |b| {
        b.iter(|| {
            v = if v > FILES { 2 } else { v + 7 };
            black_box(cache.get(fid(v)))
        })
    });
    let mut table = NodeTable::new(status(1), None);
    for v in 2..FILES + 2 {
        table.upsert(status(v), None);
    }
    g.bench_function("node upsert (existing)", |b| {
        b.iter(|| {
            v = if v > FILES { 2 } else { v + 7 };
            black_box(table.upsert(status(v), None))
        })
    });
    // A folder's break finds the names the kernel holds in it: 100 a
    // folder over 1,000 folders, by the index and (as before it) by a walk.
    for v in 2..FILES + 2 {
        let ino = table.ino_of(fid(v)).expect("upserted");
        table.set_kernel_name(ino, 1_000_000 + v % 1_000, &format!("f{v}"));
    }
    g.bench_function("names held in one folder (index)", |b| {
        b.iter(|| black_box(table.kernel_named_in(1_000_500).count()))
    });
    g.bench_function("names held in one folder (walk of the table)", |b| {
        b.iter(|| {
            black_box(
                table
                    .iter()
                    .filter(|(_, n)| n.kernel_name().is_some_and(|(d, _)| d == 1_000_500))
                    .count(),
            )
        })
    });
    let (nodes, mounts) = table.export(0, Instant::now());
    let snap = SnapshotRef {
        cell: "bench.cellfs",
        root: fid(1),
        nodes,
        mounts,
        baselines: Vec::new(),
        copies: (2..FILES + 2).map(|v| (fid(v), entry())).collect(),
        hoarded: Vec::new(),
    };
    g.sample_size(10);
    g.bench_function("export the node table", |b| {
        b.iter(|| black_box(table.export(0, Instant::now())))
    });
    g.bench_function("encode index", |b| b.iter(|| persist::encode(&snap).expect("encode")));
    let bytes = persist::encode(&snap).expect("encode");
    g.bench_function("write index", |b| {
        b.iter(|| persist::write(dir.path(), &bytes).expect("write"))
    });
    g.bench_function("load index", |b| {
        b.iter_batched(
            || (),
            |()| persist::load(dir.path()).expect("load"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
