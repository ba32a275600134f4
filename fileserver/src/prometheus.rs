//! The fileserver's Prometheus endpoint: RPCs by operation with their
//! latency (`cellfs_fileserver_rpc_seconds`, recorded per request stream;
//! `op="store_data"` is the store durability latency, fsync included), and
//! counters and gauges sampled from the server's state, among them each
//! volume's journal length (`cellfs_fileserver_journal_entries`) against
//! the most it keeps (`cellfs_fileserver_journal_limit`).

use crate::rpc::Context;
use std::sync::Arc;
use std::time::Duration;

/// How often the gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Every how many samples the per-volume gauges are read: each costs a
/// read transaction per volume, and a web host may have thousands.
const VOLUMES_EVERY: u64 = 10;

/// Samples the server's counters and gauges forever.
pub async fn sample(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    metrics::gauge!("cellfs_fileserver_journal_limit").set(ctx.config.journal_len as f64);
    for n in 0u64.. {
        tick.tick().await;
        if n % VOLUMES_EVERY == 0 {
            let store = ctx.store.clone();
            if let Ok(journals) = tokio::task::spawn_blocking(move || store.journal_lengths()).await {
                for (volume, entries) in journals {
                    metrics::gauge!("cellfs_fileserver_journal_entries", "volume" => volume).set(entries as f64);
                }
            }
        }
        let s = ctx.stats();
        metrics::counter!("cellfs_fileserver_rpcs_total").absolute(s.rpcs);
        metrics::counter!("cellfs_fileserver_breaks_sent_total").absolute(s.breaks_sent);
        metrics::gauge!("cellfs_fileserver_promises").set(s.promises as f64);
        metrics::gauge!("cellfs_fileserver_connections").set(s.connections as f64);
    }
}
