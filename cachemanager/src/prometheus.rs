//! The cache manager's Prometheus endpoint: RPCs by operation with their
//! latency (`cellfs_cachemanager_rpc_seconds`), breaks received, cache hits,
//! misses, evictions and bytes fetched (counted where they happen), and
//! gauges sampled from the node's status (cache use, promises held, each
//! server up or down).

use crate::core::Core;
use std::sync::Arc;
use std::time::Duration;

/// How often the gauges are sampled: `Core::status` counts the promises
/// held by walking every node under the state lock, which at 100,000
/// cached files would stall requests every second.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples the node's gauges forever.
pub async fn sample(core: Arc<Core>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let core = core.clone();
        let Ok(s) = tokio::task::spawn_blocking(move || core.status()).await else {
            continue;
        };
        metrics::gauge!("cellfs_cachemanager_cache_used_bytes").set(s.cache_used as f64);
        metrics::gauge!("cellfs_cachemanager_cache_limit_bytes").set(s.cache_limit as f64);
        metrics::gauge!("cellfs_cachemanager_cached_files").set(s.files_cached as f64);
        metrics::gauge!("cellfs_cachemanager_pinned_bytes").set(s.pinned_bytes as f64);
        metrics::gauge!("cellfs_cachemanager_promises").set(s.promises_held as f64);
        metrics::gauge!("cellfs_cachemanager_nodes").set(s.nodes_known as f64);
        metrics::gauge!("cellfs_cachemanager_unstored_writes").set(s.unstored_writes as f64);
        metrics::gauge!("cellfs_cachemanager_early_creates").set(s.early_creates as f64);
        metrics::gauge!("cellfs_cachemanager_early_creates_made_again").set(s.early_creates_made_again as f64);
        metrics::gauge!("cellfs_cachemanager_server_up", "server" => s.server.clone()).set(f64::from(u8::from(s.up)));
        for o in &s.other_servers {
            metrics::gauge!("cellfs_cachemanager_server_up", "server" => o.server.clone())
                .set(f64::from(u8::from(o.up)));
        }
    }
}
