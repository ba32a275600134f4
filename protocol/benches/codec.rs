//! Codec micro-benchmarks: encoding and decoding the frames that dominate
//! traffic (a lookup, a 1,000-entry directory listing, a batch of small
//! files). `cargo bench -p cellfs-protocol --bench codec`.

use cellfs_protocol::codec::{decode, encode};
use cellfs_protocol::message::InlineFile;
use cellfs_protocol::{DirEntry, Fid, FileKind, Reply, Request, Status, Timestamp};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn status(vnode: u64, size: u64) -> Status {
    let t = Timestamp {
        secs: 1_790_000_000,
        nanos: 5,
    };
    Status {
        fid: Fid {
            volume: 1,
            vnode,
            unique: vnode,
        },
        kind: FileKind::File,
        mode: 0o644,
        nlink: 1,
        uid: 33,
        gid: 33,
        size,
        data_version: 3,
        mtime: t,
        ctime: t,
        atime: t,
        acl_dir: 1,
    }
}

fn bench(c: &mut Criterion) {
    let lookup = Request::Lookup {
        dir: status(1, 0).fid,
        name: "wp-config.php".into(),
    };
    let listing = Ok::<Reply, cellfs_protocol::RpcError>(Reply::Dir {
        dir: status(1, 0),
        rights: cellfs_protocol::acl::Rights::ALL,
        entries: (0..1000)
            .map(|i| DirEntry {
                name: format!("class-wp-{i:04}.php"),
                status: status(i + 2, 15_000),
            })
            .collect(),
    });
    let files = Ok::<Reply, cellfs_protocol::RpcError>(Reply::Files(
        (0..100)
            .map(|i| {
                Ok(InlineFile {
                    status: status(i + 2, 15_000),
                    data: Some(vec![b'x'; 15_000]),
                })
            })
            .collect(),
    ));
    let mut g = c.benchmark_group("codec");
    for (name, bytes) in [
        ("lookup request", encode(&lookup).expect("encode")),
        ("1000-entry listing", encode(&listing).expect("encode")),
        ("100 inline files", encode(&files).expect("encode")),
    ] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("decode {name}"), |b| {
            b.iter(|| match name {
                "lookup request" => drop(black_box(decode::<Request>(black_box(&bytes)))),
                _ => drop(black_box(decode::<Result<Reply, cellfs_protocol::RpcError>>(
                    black_box(&bytes),
                ))),
            })
        });
    }
    for (name, msg) in [("1000-entry listing", &listing), ("100 inline files", &files)] {
        g.throughput(Throughput::Bytes(encode(msg).expect("encode").len() as u64));
        g.bench_function(format!("encode {name}"), |b| b.iter(|| encode(black_box(msg))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
