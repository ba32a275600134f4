//! The Prometheus endpoint both daemons serve (`--metrics ADDR`, loopback
//! by default): the exporter records what the `metrics` macros count
//! anywhere in the process and answers `GET /metrics`.

/// Why a metrics address was not used.
#[derive(Debug, thiserror::Error)]
#[error("--metrics {addr:?}: not an address or `off` ({source})")]
pub struct BadMetricsAddr {
    addr: String,
    source: std::net::AddrParseError,
}

/// Serves metrics on `addr` (`off`: not at all); true when serving. An
/// address that cannot be bound is logged, not fatal: metrics must never
/// keep a daemon from serving. Must run inside a tokio runtime.
pub fn serve(addr: &str) -> Result<bool, BadMetricsAddr> {
    if addr == "off" {
        return Ok(false);
    }
    let parsed: std::net::SocketAddr = addr.parse().map_err(|source| BadMetricsAddr {
        addr: addr.to_owned(),
        source,
    })?;
    match metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(parsed)
        .install()
    {
        Ok(()) => {
            tracing::info!(addr = %parsed, "serving Prometheus metrics");
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(addr = %parsed, error = %e, "cannot serve metrics");
            Ok(false)
        }
    }
}
