//! `cellfs-cachemanager mount`: wires the link, the core and the FUSE session
//! together, and unmounts cleanly on SIGINT/SIGTERM.

use crate::core::Core;
use crate::fuse::{CellFs, NotifierCache};
use crate::links::Links;
use anyhow::Context;
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::transport::Connector;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often the cache index is saved (also at unmount).
const INDEX_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// What `mount` needs.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The cell config (`cell.toml`).
    pub config: PathBuf,
    /// The cache folder.
    pub cache_dir: PathBuf,
    /// Cache size limit in bytes.
    pub cache_size: u64,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// FUSE worker threads.
    pub threads: usize,
    /// Bound on one request to the fileserver; past it the cell is disconnected.
    pub request_timeout: std::time::Duration,
    /// Let the kernel read and write cached files directly (FUSE passthrough).
    pub passthrough: bool,
    /// Paths (from the mount root) to pin once mounted.
    pub pins: Vec<String>,
    /// Where to serve Prometheus metrics, or "off".
    pub metrics: String,
}

/// Mounts the cell and serves it until the mount ends or a signal arrives.
pub fn run(opts: MountOptions) -> anyhow::Result<()> {
    let cfg = CellConfig::load(&opts.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("cellfs-rt")
        .build()
        .context("starting the async runtime")?;
    let connector = {
        let _guard = rt.enter();
        Connector::from_config(&cfg).context("preparing the connection to the fileserver")?
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let link = Links::new(connector, tx, opts.request_timeout);
    std::fs::create_dir_all(&opts.cache_dir)
        .with_context(|| format!("creating cache folder {}", opts.cache_dir.display()))?;
    let _cache_lock = lock_cache_folder(&opts.cache_dir)?;
    let core = Core::start(link, rt.handle().clone(), &opts.cache_dir, opts.cache_size, &cfg.cell)
        .with_context(|| format!("connecting to cell {} at {}", cfg.cell, cfg.servers.join(",")))?;
    rt.spawn(core.clone().run_events(rx));
    let serving_metrics = {
        let _guard = rt.enter();
        cellfs_protocol::metrics_endpoint::serve(&opts.metrics)?
    };
    if serving_metrics {
        rt.spawn(crate::prometheus::sample(core.clone()));
    }
    let control = core.clone();
    let listener = {
        let _guard = rt.enter();
        crate::control::bind(&opts.cache_dir)
    };
    match listener {
        Ok(listener) => {
            rt.spawn(async move {
                if let Err(e) = crate::control::serve(control, listener).await {
                    tracing::warn!(error = %e, "control socket failed: status commands no longer reach this mount");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "control socket unavailable: status commands will not reach this mount"),
    }
    let saver = core.clone();
    rt.spawn(async move {
        loop {
            tokio::time::sleep(INDEX_SAVE_INTERVAL).await;
            let core = saver.clone();
            let _ = tokio::task::spawn_blocking(move || core.save_index()).await;
        }
    });

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("cellfs:{}", cfg.cell)),
        fuser::MountOption::Subtype("cellfs".into()),
        fuser::MountOption::DefaultPermissions,
        // Device nodes may be made and listed, never opened as devices.
        fuser::MountOption::NoDev,
    ];
    config.acl = fuser::SessionACL::All;
    let threads = opts.threads.max(1);
    config.n_threads = Some(threads);
    // Resolved before mounting: afterwards the path leads into the mount.
    let mountpoint_abs = opts
        .mountpoint
        .canonicalize()
        .unwrap_or_else(|_| opts.mountpoint.clone());
    let fs = CellFs::new(core.clone(), opts.passthrough, threads);
    let readers = fs.readers();
    let mut session = fuser::Session::new(fs, &opts.mountpoint, &config)
        .with_context(|| format!("mounting on {}", opts.mountpoint.display()))?;
    match std::os::fd::AsFd::as_fd(&session).try_clone_to_owned() {
        Ok(device) => readers.watch_device(device),
        Err(e) => tracing::warn!(error = %e, "cannot watch the FUSE device; an unmount may take a second longer"),
    }
    core.set_kernel_cache(Box::new(NotifierCache(session.notifier())));
    core.set_mountpoint(mountpoint_abs);
    let mut unmounter = session.unmount_callable();
    let mountpoint = opts.mountpoint.clone();
    rt.spawn(async move {
        wait_for_signal().await;
        tracing::info!(mountpoint = %mountpoint.display(), "signal received; unmounting");
        if let Err(e) = unmounter.unmount() {
            tracing::warn!(error = %e, "unmount failed; trying lazy unmount");
            lazy_unmount(&mountpoint);
        }
    });
    tracing::info!(mountpoint = %opts.mountpoint.display(), cell = %cfg.cell, "mounted");
    if !opts.pins.is_empty() {
        let (core, pins) = (core.clone(), opts.pins.clone());
        std::thread::spawn(move || {
            for path in pins {
                match core.pin(&path, &mut |_, _, _| {}) {
                    Ok(s) => tracing::info!(path, files = s.files, bytes = s.bytes, "pinned"),
                    Err(e) => tracing::warn!(path, error = %e.message, "cannot pin"),
                }
            }
        });
    }
    // The kernel holds the mount and `run` answers its first message (INIT)
    // at once: tell systemd (Type=notify) the mount serves.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot tell the service manager we are ready");
    }
    let result = session.run();
    core.shutdown();
    // A fetch still under way for a reader ends with the connection; do not
    // wait long for it.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    tracing::info!("unmounted");
    result.context("FUSE session")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Longest a new cache manager waits for the one before it on the same cache
/// folder to exit (it unmounts first, then finishes within a few seconds).
const CACHE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// Takes the cache folder's lock, held until the returned file is dropped
/// (at exit). A second cache manager on one folder would share its copies,
/// index and control socket with the first and break both, so it is refused.
fn lock_cache_folder(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < CACHE_LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "cache folder {} is in use by another cache manager: unmount it (or give this one another --cache)",
                dir.display()
            ),
            Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn lazy_unmount(mountpoint: &Path) {
    let _ = std::process::Command::new("umount").arg("-l").arg(mountpoint).status();
}
