//! `cellfs-cachemanager`: mounts a cellfs cell on a web node.

use anyhow::Context;
use cellfs_cachemanager::mount::{MountOptions, run};
use clap::{CommandFactory, Parser, Subcommand};

mod docs;
mod fscli;
use std::path::PathBuf;

/// FUSE worker threads when neither flag nor settings file says. Each
/// request that waits on the fileserver holds one, so this is how many
/// writers of a node can have their creates and closes in the server's
/// commit groups at once; an idle thread costs a blocked read.
const DEFAULT_THREADS: usize = 16;

/// The cellfs cache manager: a FUSE mount of a cell with a local whole-file cache.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fetch the subtree at PATH completely and keep it from eviction, so the
    /// node can serve it while the fileserver is unreachable.
    Pin {
        /// The cache folder the mount was started with.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Let a pinned subtree be evicted again.
    Unpin {
        /// The cache folder the mount was started with.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Show the state of the running cache manager that uses a cache folder:
    /// server up/down and since when, cache used/limit, files cached,
    /// promises held, files and folders known, last revalidation.
    Status {
        /// The cache folder the mount was started with.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Change the ACL of a directory (like AFS `fs setacl`): each NAME RIGHTS
    /// pair sets one entry; NAME is a user or group of the cell,
    /// `system:anyuser`, `system:authuser`, `uid:N` or `gid:N`; RIGHTS are
    /// letters of `rlidwka` or `read`, `write`, `all`, `none` (removes it).
    #[command(name = "setacl")]
    SetAcl {
        /// The cache folder the mount was started with.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// Set negative entries (rights taken away whatever else grants them).
        #[arg(long)]
        negative: bool,
        /// Start from an empty ACL instead of the current one.
        #[arg(long)]
        clear: bool,
        /// A directory inside the mount.
        path: PathBuf,
        /// NAME RIGHTS pairs.
        #[arg(required = true, num_args = 2.., value_name = "NAME RIGHTS")]
        entries: Vec<String>,
    },
    /// Show the ACL of a directory (like AFS `fs listacl`).
    #[command(name = "listacl")]
    ListAcl {
        /// The cache folder the mount was started with.
        #[arg(long, value_name = "DIR")]
        cache: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// A directory inside the mount.
        path: PathBuf,
    },
    #[command(flatten)]
    Fs(fscli::FsCommand),
    /// Print this program's manual page or shell completions (used to make
    /// the checked-in man/ and completions/).
    #[command(hide = true)]
    Generate {
        /// What to print.
        #[arg(value_enum)]
        what: cellfs_cli_docs::Generate,
    },
    /// Mount the cell and serve it in the foreground until SIGINT/SIGTERM.
    /// Every flag may come from a settings file instead (--settings); a
    /// flag given here wins over the file.
    Mount {
        /// A settings file (TOML) with any of these flags as keys (config,
        /// cache, cache_size, threads, request_timeout, passthrough,
        /// mountpoint, metrics, pin); see cellfs.toml(5).
        #[arg(long, value_name = "FILE")]
        settings: Option<PathBuf>,
        /// The cell config (the client bundle's cell.toml).
        #[arg(long, value_name = "CELL.TOML")]
        config: Option<PathBuf>,
        /// Folder for the disk cache.
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Cache size limit, e.g. 2GiB (1GiB when neither flag nor file says).
        #[arg(long, value_name = "SIZE")]
        cache_size: Option<bytesize::ByteSize>,
        /// FUSE worker threads: how many requests that wait on the fileserver
        /// (creates, closes that store) run at once (16 when neither flag nor
        /// file says).
        #[arg(long)]
        threads: Option<usize>,
        /// Seconds a request may take before the fileserver counts as down and
        /// the node serves its cache read-only (2 when neither flag nor file says).
        #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
        request_timeout: Option<f64>,
        /// Serve every read through the cache manager instead of letting the
        /// kernel read cached files directly (FUSE passthrough).
        #[arg(long)]
        no_passthrough: bool,
        /// Pin this path (from the mount root) once mounted, as `pin` does;
        /// may be given more than once (added to the file's).
        #[arg(long, value_name = "PATH")]
        pin: Vec<String>,
        /// Where to serve Prometheus metrics (http://ADDR/metrics), or `off`
        /// (127.0.0.1:9471 when neither flag nor file says).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Where to mount.
        mountpoint: Option<PathBuf>,
    },
}

/// How `whereis` and `examine` name a volume's type.
pub(crate) fn volume_type(kind: cellfs_protocol::VolumeKind) -> &'static str {
    match kind {
        cellfs_protocol::VolumeKind::ReadWrite => "RW",
        cellfs_protocol::VolumeKind::ReadOnly => "RO",
        cellfs_protocol::VolumeKind::Backup => "backup",
    }
}

/// `path` relative to the root of the mount that uses `cache`.
pub(crate) fn in_mount(cache: &std::path::Path, path: &std::path::Path) -> anyhow::Result<String> {
    use cellfs_cachemanager::control::{ControlReply, ControlRequest, query};
    let mountpoint = match query(cache, &ControlRequest::Status, &mut |_, _, _| {})? {
        ControlReply::Status(s) => s.mountpoint,
        other => anyhow::bail!("unexpected answer from the cache manager: {other:?}"),
    };
    let abs = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let rel = abs
        .strip_prefix(&mountpoint)
        .map_err(|_| anyhow::anyhow!("{} is not inside the mount at {}", path.display(), mountpoint.display()))?;
    Ok(rel
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not valid UTF-8", path.display()))?
        .to_owned())
}

/// `setacl` / `listacl`: sends `req` made from the path inside the mount.
fn acl(
    cache: &std::path::Path,
    path: &std::path::Path,
    format: Format,
    req: impl FnOnce(String) -> cellfs_cachemanager::control::ControlRequest,
) -> anyhow::Result<()> {
    use cellfs_cachemanager::control::{ControlReply, query};
    let rel = in_mount(cache, path)?;
    let lines = match query(cache, &req(rel), &mut |_, _, _| {})? {
        ControlReply::Acl(lines) => lines,
        ControlReply::Error(e) => anyhow::bail!("{}: {e}", path.display()),
        other => anyhow::bail!("unexpected answer from the cache manager: {other:?}"),
    };
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    println!("Access list for {} is", path.display());
    for (title, negative) in [("Normal rights:", false), ("Negative rights:", true)] {
        let mut group = lines.iter().filter(|l| l.negative == negative).peekable();
        if group.peek().is_some() {
            println!("{title}");
        }
        for l in group {
            println!("  {} {}", l.name, l.rights);
        }
    }
    Ok(())
}

/// `pin` / `unpin`: hoard or release the subtree at `path` of the mount that uses `cache`.
fn pin(cache: &std::path::Path, path: &std::path::Path, hoard: bool) -> anyhow::Result<()> {
    use cellfs_cachemanager::control::{ControlReply, ControlRequest, query};
    use std::io::{IsTerminal, Write};
    let rel = in_mount(cache, path)?;
    let tty = std::io::stderr().is_terminal();
    let mut progress = |done: u64, total: u64, bytes: u64| {
        if tty {
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
            eprint!(
                "\r[{}{}] {done}/{total} files, {}",
                "#".repeat(filled),
                " ".repeat(width as usize - filled),
                bytesize::ByteSize(bytes)
            );
            let _ = std::io::stderr().flush();
        }
    };
    let req = if hoard {
        ControlRequest::Pin(rel)
    } else {
        ControlRequest::Unpin(rel)
    };
    let reply = query(cache, &req, &mut progress)?;
    if tty {
        eprintln!();
    }
    match reply {
        ControlReply::Pinned(s) if hoard => println!(
            "pinned {}: {} files in {} directories, {} ({} fetched now)",
            path.display(),
            s.files,
            s.dirs,
            bytesize::ByteSize(s.bytes),
            s.fetched
        ),
        ControlReply::Pinned(s) => println!(
            "unpinned {}: {} files, {} may be evicted again",
            path.display(),
            s.files,
            bytesize::ByteSize(s.bytes)
        ),
        ControlReply::Error(e) => anyhow::bail!("{e}"),
        other => anyhow::bail!("unexpected answer from the cache manager: {other:?}"),
    }
    Ok(())
}

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

fn status(cache: &std::path::Path, format: Format) -> anyhow::Result<()> {
    use cellfs_cachemanager::control::{ControlReply, ControlRequest, query};
    let s = match query(cache, &ControlRequest::Status, &mut |_, _, _| {})? {
        ControlReply::Status(s) => s,
        ControlReply::Error(e) => anyhow::bail!("the cache manager refused: {e}"),
        other => anyhow::bail!("unexpected answer from the cache manager: {other:?}"),
    };
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let state = |up: bool, down_since: Option<u64>| match down_since {
        None if up => "up".to_owned(),
        Some(t) => format!("DOWN since {t} (unix seconds)"),
        None => "down".to_owned(),
    };
    println!("server {}: {}", s.server, state(s.up, s.down_since));
    for o in &s.other_servers {
        println!("server {}: {}", o.server, state(o.up, o.down_since));
    }
    if s.refused {
        println!("certificates refused: a fileserver and this node do not trust each other (see the log)");
    }
    println!(
        "cache: {} of {} used, {} files",
        bytesize::ByteSize(s.cache_used),
        bytesize::ByteSize(s.cache_limit),
        s.files_cached
    );
    println!("pinned: {}", bytesize::ByteSize(s.pinned_bytes));
    println!("promises held: {}", s.promises_held);
    println!("files and folders known: {}", s.nodes_known);
    println!("writes kept until the server answers: {}", s.unstored_writes);
    println!(
        "creates answered before the server: {} ({} made again)",
        s.early_creates, s.early_creates_made_again
    );
    match s.last_revalidation {
        Some(r) => println!(
            "last revalidation: at {} (unix seconds), {} by journal, {} in bulk, {} changed, {} ms",
            r.at, r.journal, r.bulk, r.changed, r.took_ms
        ),
        None => println!("last revalidation: none since start"),
    }
    Ok(())
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0 and 3600")),
    }
}

fn main() -> anyhow::Result<()> {
    cellfs_protocol::allocator::tune(cellfs_protocol::allocator::CACHE_MANAGER);
    cellfs_protocol::logging::init("info,fuser=warn");
    let mut args = std::env::args_os();
    if let Some(argv0) = args.next()
        && cellfs_cachemanager::fstab::called_as_helper(&argv0)
    {
        // mount(8) runs us as mount.fuse.cellfs for `-t fuse.cellfs`.
        let rest: Vec<std::ffi::OsString> = args.collect();
        let req = cellfs_cachemanager::fstab::parse(&rest).map_err(|e| anyhow::anyhow!("mount.fuse.cellfs: {e}"))?;
        return cellfs_cachemanager::fstab::run(&req).context("mount.fuse.cellfs");
    }
    match Cli::parse().command {
        Command::Generate { what } => {
            print!("{}", cellfs_cli_docs::generate(Cli::command(), &docs::PAGE, what));
            Ok(())
        }
        Command::Status { cache, format } => status(&cache, format),
        Command::Fs(cmd) => fscli::run(cmd),
        Command::Pin { cache, path } => pin(&cache, &path, true),
        Command::Unpin { cache, path } => pin(&cache, &path, false),
        Command::SetAcl {
            cache,
            negative,
            clear,
            path,
            entries,
        } => {
            if entries.len() % 2 != 0 {
                anyhow::bail!("entries come in NAME RIGHTS pairs; {:?} has no rights", entries.last());
            }
            let changes = entries
                .chunks(2)
                .map(|p| cellfs_protocol::acl::AclChange {
                    name: p[0].clone(),
                    rights: p[1].clone(),
                    negative,
                })
                .collect();
            acl(&cache, &path, Format::Text, |path| {
                cellfs_cachemanager::control::ControlRequest::SetAcl { path, changes, clear }
            })
        }
        Command::ListAcl { cache, format, path } => acl(&cache, &path, format, |path| {
            cellfs_cachemanager::control::ControlRequest::ListAcl(path)
        }),
        Command::Mount {
            settings,
            config,
            cache,
            cache_size,
            threads,
            request_timeout,
            no_passthrough,
            pin,
            metrics,
            mountpoint,
        } => {
            let file = match &settings {
                Some(path) => cellfs_cachemanager::settings::Settings::load(path)?,
                None => Default::default(),
            };
            let missing = |what: &str, flag: &str| {
                anyhow::anyhow!("no {what}: pass {flag} or set it in a settings file (--settings)")
            };
            let request_timeout = match request_timeout.or(file.request_timeout) {
                Some(t) => parse_timeout(&t.to_string()).map_err(|e| anyhow::anyhow!("request_timeout: {e}"))?,
                None => 2.0,
            };
            run(MountOptions {
                config: config
                    .or(file.config)
                    .ok_or_else(|| missing("cell config", "--config"))?,
                cache_dir: cache.or(file.cache).ok_or_else(|| missing("cache folder", "--cache"))?,
                cache_size: cache_size.or(file.cache_size).map_or(1 << 30, |s| s.as_u64()),
                mountpoint: mountpoint
                    .or(file.mountpoint)
                    .ok_or_else(|| missing("mount point", "MOUNTPOINT"))?,
                threads: threads.or(file.threads).unwrap_or(DEFAULT_THREADS).max(1),
                request_timeout: std::time::Duration::from_secs_f64(request_timeout),
                passthrough: !no_passthrough && file.passthrough.unwrap_or(true),
                pins: file.pin.into_iter().chain(pin).collect(),
                metrics: metrics
                    .or(file.metrics)
                    .unwrap_or_else(|| cellfs_cachemanager::settings::DEFAULT_METRICS.into()),
            })
        }
        .context("cellfs-cachemanager mount"),
    }
}
