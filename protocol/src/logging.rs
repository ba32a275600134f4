//! Logging for the daemons: `tracing` to standard error, filtered by
//! `RUST_LOG` (default: the daemon's own filter), colour only on a terminal
//! (journald and log files get plain text), and a line when a span closes, so
//! `RUST_LOG=cellfs_cachemanager::fuse=debug` prints every FUSE request and
//! `RUST_LOG=cellfs_fileserver::server=debug` every RPC stream, each with the
//! time it took.

use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the process's subscriber; `default_filter` applies when
/// `RUST_LOG` is unset or does not parse.
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
}
