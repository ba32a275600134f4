//! `cellfs-fileserver`: create a cell (`init`) and serve it (`serve`).

use anyhow::Context as _;
use cellfs_fileserver::ServeOptions;
use cellfs_fileserver::config::{DEFAULT_PROMISE_SECS, InitOptions, JoinOptions};
use clap::{CommandFactory, Parser, Subcommand};

mod docs;
use std::net::SocketAddr;
use std::path::PathBuf;

/// cellfs fileserver.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new cell: CA, credentials, client config, VLDB and root
    /// volume. With --join, add this machine's fileserver to an existing
    /// cell instead.
    Init {
        /// Data folder to create.
        #[arg(long)]
        data: PathBuf,
        /// Cell name (not with --join: the cell's own name is used).
        #[arg(long, required_unless_present = "join")]
        cell: Option<String>,
        /// Join the cell whose first server's data folder (or a copy of its
        /// ca.pem, ca.key and client/) is at this path; the first server
        /// must be running.
        #[arg(long, value_name = "CELL_DIR", conflicts_with = "cell")]
        join: Option<PathBuf>,
        /// Address to listen on, also given to clients (host:port).
        #[arg(long)]
        listen: String,
        /// Lifetime of callback promises in seconds.
        #[arg(long, default_value_t = DEFAULT_PROMISE_SECS)]
        promise_secs: u64,
    },
    /// Serve a cell until SIGINT or SIGTERM.
    Serve {
        /// Data folder made by `init`.
        #[arg(long)]
        data: PathBuf,
        /// Listen address overriding server.toml.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Changes each volume's journal remembers for reconnecting clients,
        /// overriding server.toml's `journal_len` (default 100000).
        #[arg(long, value_name = "N")]
        journal_len: Option<u64>,
        /// Where to serve Prometheus metrics (http://ADDR/metrics), or `off`,
        /// overriding server.toml's `metrics` (default 127.0.0.1:9470).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Print this program's manual page or shell completions (used to make
    /// the checked-in man/ and completions/).
    #[command(hide = true)]
    Generate {
        /// What to print.
        #[arg(value_enum)]
        what: cellfs_cli_docs::Generate,
    },
    /// Check every volume's metadata against its data files, like the AFS
    /// salvager, and with --repair fix what is found. Refuses to run while a
    /// server serves the same folder. Exit status: 0 when clean (or clean after
    /// repair), 1 when problems remain.
    Salvage {
        /// Data folder made by `init`.
        #[arg(long)]
        data: PathBuf,
        /// Fix what is found (otherwise only report).
        #[arg(long)]
        repair: bool,
    },
}

fn main() -> anyhow::Result<()> {
    cellfs_protocol::allocator::tune(cellfs_protocol::allocator::FILESERVER);
    let cli = Cli::parse();
    cellfs_protocol::logging::init("info");
    match cli.command {
        Command::Init {
            data,
            join: Some(cell_dir),
            listen,
            ..
        } => {
            let opts = JoinOptions {
                data: data.clone(),
                listen: listen.clone(),
                cell_dir,
            };
            let report = cellfs_fileserver::config::join(&opts)
                .with_context(|| format!("cannot join the cell from {}", data.display()))?;
            println!("joined the cell as fileserver {listen}; data in {}:", data.display());
            for f in &report.files {
                println!("  {}", f.display());
            }
            println!("next:");
            println!("  cellfs-fileserver serve --data {}", data.display());
            println!("  cellfs-vos create NAME --server {listen}   (or addsite, move --to {listen})");
            Ok(())
        }
        Command::Init {
            data,
            cell,
            listen,
            promise_secs,
            ..
        } => {
            let cell = cell.unwrap_or_default();
            let opts = InitOptions {
                data: data.clone(),
                cell: cell.clone(),
                listen,
                promise_secs,
            };
            let report = cellfs_fileserver::init(&opts).with_context(|| format!("cannot init {}", data.display()))?;
            println!("created cell {cell} in {}:", data.display());
            for f in &report.files {
                println!("  {}", f.display());
            }
            println!("next:");
            println!("  cellfs-fileserver serve --data {}", data.display());
            println!(
                "  copy {} to each web node and point cellfs-cachemanager at {} (a host credential;",
                data.join("client").display(),
                report.client_config.display()
            );
            println!("  `cellfs-vos host add NAME` issues one per node)");
            if let Some(admin) = &report.admin_config {
                println!(
                    "  point cellfs-vos at {} (the admin credential; keep it off web nodes)",
                    admin.display()
                );
            }
            Ok(())
        }
        Command::Generate { what } => {
            print!("{}", cellfs_cli_docs::generate(Cli::command(), &docs::PAGE, what));
            Ok(())
        }
        Command::Salvage { data, repair } => {
            let opts = cellfs_fileserver::salvage::SalvageOptions { repair };
            let report = cellfs_fileserver::salvage::salvage(&data, &opts)
                .with_context(|| format!("cannot salvage {}", data.display()))?;
            print!("{report}");
            if !report.clean_now() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Serve {
            data,
            listen,
            journal_len,
            metrics,
        } => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            let opts = ServeOptions { listen, journal_len };
            rt.block_on(async {
                let server = cellfs_fileserver::server::Server::open_with(&data, &opts)
                    .await
                    .with_context(|| format!("cannot serve {}", data.display()))?;
                let metrics = metrics
                    .or_else(|| server.context().config.metrics.clone())
                    .unwrap_or_else(|| cellfs_fileserver::config::DEFAULT_METRICS.to_owned());
                if cellfs_protocol::metrics_endpoint::serve(&metrics)? {
                    tokio::spawn(cellfs_fileserver::prometheus::sample(server.context().clone()));
                }
                // Listening now: tell systemd (Type=notify) we serve.
                if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
                    tracing::warn!(error = %e, "cannot tell the service manager we are ready");
                }
                server
                    .run(shutdown_signal())
                    .await
                    .with_context(|| format!("cannot serve {}", data.display()))
            })
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
