//! `cellfs-cachemanager`: mounts a cellfs cell on a web node.

use anyhow::Context;
use cellfs_cachemanager::mount::{MountOptions, run};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The cellfs cache manager: a FUSE mount of a cell with a local whole-file cache.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount the cell and serve it in the foreground until SIGINT/SIGTERM.
    Mount {
        /// The cell config (the client bundle's cell.toml).
        #[arg(long, value_name = "CELL.TOML")]
        config: PathBuf,
        /// Folder for the disk cache.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// Cache size limit, e.g. 2GiB.
        #[arg(long, value_name = "SIZE", default_value = "1GiB")]
        cache_size: bytesize::ByteSize,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Where to mount.
        mountpoint: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,fuser=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Mount {
            config,
            cache,
            cache_size,
            threads,
            mountpoint,
        } => run(MountOptions {
            config,
            cache_dir: cache,
            cache_size: cache_size.as_u64(),
            mountpoint,
            threads,
        })
        .context("cellfs-cachemanager mount"),
    }
}
