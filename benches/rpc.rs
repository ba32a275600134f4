//! The transport alone, without FUSE or the cache: the round-trip time of
//! one small RPC (`Ping`) to a fileserver on loopback, driven three ways
//! (from a task of the async runtime, by `block_on` from a plain thread as
//! the cache manager's FUSE threads call, and on a current-thread runtime),
//! and the throughput of storing and fetching one large file from memory.
//!
//! `cargo bench --bench rpc [-- MIB]` (build the workspace in release first).

use cellfs::Cell;
use cellfs_protocol::transport::Connector;
use cellfs_protocol::transport::RpcClient;
use cellfs_protocol::{Reply, Request};
use std::time::Instant;

const N: usize = 3000;

fn report(what: &str, mut lat: Vec<f64>) {
    lat.sort_by(f64::total_cmp);
    let p = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)];
    println!(
        "{what:<48} p50 {:>7.1} µs  p90 {:>7.1} µs  p99 {:>7.1} µs",
        p(50),
        p(90),
        p(99)
    );
}

async fn pings(client: &cellfs_protocol::transport::RpcClient, n: usize) -> Vec<f64> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.call(&Request::Ping).await.expect("ping");
        assert!(matches!(r, Reply::Ok), "{r:?}");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat
}

fn main() {
    let cell = Cell::new();
    let cfg = cell.config();
    for workers in [1, 2] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(async {
            let c = Connector::from_config(&cfg).expect("connector");
            c.connect().await.expect("connect")
        });
        let c2 = client.clone();
        let lat = rt.block_on(async move { tokio::spawn(async move { pings(&c2, N).await }).await.expect("task") });
        report(&format!("{workers} workers: from a runtime task"), lat);
        let h = rt.handle().clone();
        let c2 = client.clone();
        let lat = std::thread::spawn(move || h.block_on(pings(&c2, N)))
            .join()
            .expect("thread");
        report(&format!("{workers} workers: Handle::block_on from a thread"), lat);
        let lat = rt.block_on(pings(&client, N));
        report(&format!("{workers} workers: Runtime::block_on"), lat);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let lat = rt.block_on(async {
        let c = Connector::from_config(&cfg).expect("connector");
        let client = c.connect().await.expect("connect");
        pings(&client, N).await
    });
    report("current-thread runtime", lat);
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = Connector::from_config(&cell.admin_config()).expect("connector");
        throughput(&c.connect().await.expect("connect"), mib).await;
    });
}

/// Stores then fetches a `mib` MiB file between memory and the server.
async fn throughput(client: &RpcClient, mib: usize) {
    let status = cellfs::create_in_root(client, "big").await;
    let data = vec![7u8; mib << 20];
    let t = Instant::now();
    cellfs::store_whole(client, status.fid, &data).await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "store {mib} MiB from memory: {:.0} MB/s (with the server's fsync)",
        data.len() as f64 / secs / 1e6
    );
    let t = Instant::now();
    client
        .fetch_data(status.fid, &mut tokio::io::sink())
        .await
        .expect("fetch");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "fetch {mib} MiB into memory: {:.0} MB/s",
        data.len() as f64 / secs / 1e6
    );
    let s = client.connection().stats();
    println!(
        "connection: datagrams of {} B, {} lost of {} sent, {} black holes detected",
        s.path.current_mtu, s.path.lost_packets, s.path.sent_packets, s.path.black_holes_detected
    );
}
