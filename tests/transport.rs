//! The QUIC transport between a node and a real fileserver on loopback:
//! large transfers grow past Ethernet-sized datagrams without losing any
//! to oversized send batches.

use cellfs::Cell;
use cellfs_protocol::transport::Connector;
use std::time::{Duration, Instant};

/// Ethernet's largest UDP payload, where quinn starts (and, left at its
/// defaults, stays).
const ETHERNET_PAYLOAD: u16 = 1472;

#[test]
fn large_transfers_use_datagrams_larger_than_ethernet_frames_and_lose_none() {
    let cell = Cell::new();
    let cfg = cell.admin_config();
    cell.block_on(async {
        let client = Connector::from_config(&cfg).unwrap().connect().await.unwrap();
        let status = cellfs::create_in_root(&client, "big").await;
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        cellfs::store_whole(&client, status.fid, &data).await;
        // MTU discovery probes as packets flow: fetch until it has grown,
        // within a bound (each round trip on loopback is well under 1 ms).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut back = Vec::new();
            client.fetch_data(status.fid, &mut back).await.unwrap();
            assert!(back == data, "the fetched bytes are the stored ones");
            let path = client.connection().stats().path;
            assert_eq!(
                path.black_holes_detected, 0,
                "no datagram size was lost outright: {path:?}"
            );
            if path.current_mtu > ETHERNET_PAYLOAD {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "datagrams stayed at {} bytes: {path:?}",
                path.current_mtu
            );
        }
    });
}
