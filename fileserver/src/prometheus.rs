//! The fileserver's Prometheus endpoint: RPCs by operation with their
//! latency (`cellfs_fileserver_rpc_seconds`, recorded per request stream;
//! `op="store_data"` is the store durability latency, fsync included), and
//! counters and gauges sampled from the server's state.

use crate::rpc::Context;
use std::sync::Arc;
use std::time::Duration;

/// How often the gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples the server's counters and gauges forever.
pub async fn sample(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let s = ctx.stats();
        metrics::counter!("cellfs_fileserver_rpcs_total").absolute(s.rpcs);
        metrics::counter!("cellfs_fileserver_breaks_sent_total").absolute(s.breaks_sent);
        metrics::gauge!("cellfs_fileserver_promises").set(s.promises as f64);
        metrics::gauge!("cellfs_fileserver_connections").set(s.connections as f64);
    }
}
