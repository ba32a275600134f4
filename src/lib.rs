//! Test and benchmark harness for cellfs: starts real fileservers and cache managers.
//!
//! [`Cell`] runs `cellfs-fileserver init` in a fresh temporary folder and then
//! `cellfs-fileserver serve` as a child process; [`Mount`] runs
//! `cellfs-cachemanager mount` on a fresh mount point. Both are RAII guards:
//! dropping them (also while a test panics) stops the processes, removes any
//! mount and deletes the folders. Every wait is bounded, and a failure to start
//! panics with the tail of the process's log.
//!
//! [`Proxy`] is a fault-injection UDP proxy to put between mounts and the
//! fileserver ([`Cell::client_config_via`], [`Mount::with_config`]) to cut,
//! half-cut or delay the network without killing anything.
//!
//! The binaries are found next to the test executable (`target/<profile>/`);
//! build the workspace first (`cargo build --workspace`, or `scripts/test`).
#![deny(clippy::undocumented_unsafe_blocks)]

mod proxy;

pub use proxy::{Proxy, ProxyMode, ProxyStats};

use cellfs_protocol::acl::Caller;
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::transport::{CallError, ConnectError, Connector};
use cellfs_protocol::{Reply, Request, Stats};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a fileserver may take to answer its first Ping.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a cache manager may take until its mount appears.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a cache manager may take to exit after SIGTERM.
pub const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one RPC made by the harness may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a one-shot command (`init`, `cellfs-vos`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Cell name used by [`Cell::new`].
pub const CELL_NAME: &str = "test.cellfs";

/// Creates the empty file `name` in the root folder of the cell's root
/// volume over `client`, and returns its status.
///
/// # Panics
/// When a call fails or is answered unexpectedly.
pub async fn create_in_root(client: &cellfs_protocol::transport::RpcClient, name: &str) -> cellfs_protocol::Status {
    let Ok(Reply::Hello { root_volume, .. }) = client.call(&Request::Hello).await else {
        panic!("hello failed")
    };
    let Ok(Reply::Status(root)) = client.call(&Request::GetRoot { volume: root_volume }).await else {
        panic!("the root volume's root is unreadable")
    };
    let create = Request::Create {
        dir: root.fid,
        name: name.into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        exclusive: true,
    };
    match client.call(&create).await {
        Ok(Reply::Created { status, .. }) => status,
        other => panic!("creating {name}: {other:?}"),
    }
}

/// Stores `data` as the whole content of the file `fid` over `client`.
///
/// # Panics
/// When the store fails.
pub async fn store_whole(
    client: &cellfs_protocol::transport::RpcClient,
    fid: cellfs_protocol::Fid,
    data: &[u8],
) -> cellfs_protocol::Status {
    let store = Request::StoreData {
        fid,
        offset: 0,
        len: data.len() as u64,
        truncate: Some(0),
        mtime: None,
        expect: None,
    };
    client.store_data(&store, &mut &data[..]).await.expect("store")
}

/// Path of the workspace binary `name` (e.g. `cellfs-fileserver`), found in the
/// same `target/<profile>/` folder as the running test.
///
/// # Panics
/// When the binary is missing: the workspace has not been built.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("cannot find the running test executable");
    let mut dir = exe.parent().expect("test executable has no folder").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build the workspace first with the same profile as the tests \
         (`cargo build --workspace` for debug tests, `cargo build --release --workspace` for --release; \
         scripts/test does both)",
        path.display()
    );
    path
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("cannot bind a UDP socket on 127.0.0.1");
    sock.local_addr().expect("bound socket has an address").port()
}

/// Runs `cmd` to completion, capturing its output, killing it after `timeout`.
///
/// # Panics
/// When the command cannot start or does not finish in time.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = match wait_timeout(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// The last `max` bytes of a log file, for failure messages.
pub fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    format!(
        "---- last {} bytes of {} ----\n{}\n---- end of log ----",
        buf.len(),
        path.display(),
        String::from_utf8_lossy(&buf)
    )
}

/// What was appended to the log at `path` after offset `from`.
fn log_since(path: &Path, from: u64) -> String {
    let mut out = Vec::new();
    if let Ok(mut f) = File::open(path)
        && f.seek(SeekFrom::Start(from)).is_ok()
    {
        let _ = f.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn open_log(path: &Path) -> (Stdio, Stdio) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open log {}: {e}", path.display()));
    let err = file.try_clone().expect("cannot duplicate log file handle");
    (Stdio::from(file), Stdio::from(err))
}

fn signal(child: &Child, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own
    // child, not yet reaped, so the id cannot have been reused.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends `child` SIGTERM and waits up to `within` for it to exit; past
/// that it is killed (and reaped) and `None` returned.
fn terminate(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    signal(child, libc::SIGTERM);
    let status = wait_timeout(child, within);
    if status.is_none() {
        let _ = child.kill();
        let _ = wait_timeout(child, Duration::from_secs(10));
    }
    status
}

/// Why a harness RPC failed.
#[derive(Debug)]
pub enum ClientError {
    /// The connection could not be set up or the handshake failed.
    Connect(ConnectError),
    /// The RPC itself failed (server error or broken connection).
    Call(CallError),
    /// No answer in time.
    Timeout,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Call(e) => write!(f, "call: {e}"),
            ClientError::Timeout => write!(f, "no answer within {RPC_TIMEOUT:?}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A runtime for the harness's own RPCs.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("cannot start a tokio runtime")
}

/// Makes one RPC on a fresh connection described by `cfg`, then closes it.
async fn call_once(cfg: &CellConfig, caller: Option<Caller>, req: &Request) -> Result<Reply, ClientError> {
    let connector = Connector::from_config(cfg).map_err(ClientError::Connect)?;
    let work = async {
        let client = connector.connect().await.map_err(ClientError::Connect)?;
        let client = client.acting_for(caller.map(std::sync::Arc::new));
        let reply = client.call(req).await.map_err(ClientError::Call);
        client.close();
        reply
    };
    tokio::time::timeout(RPC_TIMEOUT, work)
        .await
        .unwrap_or(Err(ClientError::Timeout))
}

/// A running cell: one fileserver process on 127.0.0.1 with its data in a
/// temporary folder. Dropping it kills the fileserver and deletes the folder.
pub struct Cell {
    tmp: TempDir,
    data: PathBuf,
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    /// The client config that reaches this server (a host credential).
    client_config: PathBuf,
    /// The admin config that reaches this server (`cellfs-vos`, raw calls).
    admin_config: PathBuf,
}

impl Cell {
    /// Inits a new cell and starts serving it; waits until it answers Ping.
    pub fn new() -> Self {
        Self::with_init_args(&[])
    }

    /// Like [`Cell::new`] with promises lasting `secs` seconds.
    pub fn with_promise_secs(secs: u64) -> Self {
        Self::with_init_args(&["--promise-secs".to_owned(), secs.to_string()])
    }

    /// Like [`Cell::new`], passing `extra` to `cellfs-fileserver init`.
    pub fn with_init_args(extra: &[String]) -> Self {
        let mut args = vec!["--cell".to_owned(), CELL_NAME.to_owned()];
        args.extend_from_slice(extra);
        Self::init_and_start("cellfs-cell-", &args, |data, _| {
            (
                data.join("client").join("cell.toml"),
                data.join("admin").join("cell.toml"),
            )
        })
    }

    /// Adds a second fileserver to this cell (`cellfs-fileserver init
    /// --join`) and starts it. The value returned runs that server; its
    /// [`Cell::config_path`] reaches it with this cell's client credential.
    /// Volumes and mounts still go through this (the first) server.
    pub fn join(&self) -> Cell {
        let args = ["--join".to_owned(), self.data.display().to_string()];
        Self::init_and_start("cellfs-server-", &args, |_, addr| {
            (self.client_config_via(addr), self.admin_config_via(addr))
        })
    }

    /// Runs `cellfs-fileserver init --data D --listen A ARGS` in a new
    /// temporary folder, then serves it; `client_config` names the config
    /// that reaches the new server.
    fn init_and_start(
        prefix: &str,
        args: &[String],
        configs: impl FnOnce(&Path, SocketAddr) -> (PathBuf, PathBuf),
    ) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("cannot create a temporary folder");
        let data = tmp.path().join("data");
        let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let out = output_with_timeout(
            Command::new(bin("cellfs-fileserver"))
                .arg("init")
                .arg("--data")
                .arg(&data)
                .args(["--listen", &addr.to_string()])
                .args(args),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "cellfs-fileserver init {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let (client_config, admin_config) = configs(&data, addr);
        assert!(
            client_config.is_file() && admin_config.is_file(),
            "cellfs-fileserver init succeeded but there is no client config at {} or admin config at {}\nstdout: {}\nstderr: {}",
            client_config.display(),
            admin_config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = tmp.path().join("fileserver.log");
        let mut cell = Cell {
            tmp,
            data,
            addr,
            log,
            child: None,
            rt: runtime(),
            client_config,
            admin_config,
        };
        cell.start();
        cell
    }

    /// The temporary folder holding the cell's data and logs.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The fileserver's data folder (`--data`).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The client config a cache manager or `cellfs-vos` uses.
    pub fn config_path(&self) -> PathBuf {
        self.client_config.clone()
    }

    /// The loaded client config.
    pub fn config(&self) -> CellConfig {
        CellConfig::load(&self.config_path()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The admin config `cellfs-vos` and [`Cell::call`] use.
    pub fn admin_config_path(&self) -> PathBuf {
        self.admin_config.clone()
    }

    /// The loaded admin config.
    pub fn admin_config(&self) -> CellConfig {
        CellConfig::load(&self.admin_config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes a copy of the client config that sends to `addr` instead of the
    /// fileserver (e.g. a [`Proxy::addr`]), with the same credential (absolute
    /// paths), and returns its path (in the cell's folder, named after `addr`).
    /// Mount with it through [`Mount::with_config`].
    pub fn client_config_via(&self, addr: SocketAddr) -> PathBuf {
        self.write_config_via(self.config(), "cell", addr)
    }

    /// Like [`Cell::client_config_via`] for the admin config.
    pub fn admin_config_via(&self, addr: SocketAddr) -> PathBuf {
        self.write_config_via(self.admin_config(), "admin", addr)
    }

    fn write_config_via(&self, mut cfg: CellConfig, tag: &str, addr: SocketAddr) -> PathBuf {
        cfg.servers = vec![addr.to_string()];
        let path = self
            .tmp
            .path()
            .join(format!("{tag}-via-{}-{}.toml", addr.ip(), addr.port()));
        std::fs::write(&path, cfg.to_toml()).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Process id of the running fileserver (for `/proc` measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The fileserver's UDP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fileserver's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the fileserver (after [`Cell::kill`]) and waits until it answers Ping.
    ///
    /// # Panics
    /// When it is already running, exits, or does not answer within [`SERVER_START_TIMEOUT`].
    pub fn start(&mut self) {
        self.start_with_args(&[]);
    }

    /// Kills the fileserver (SIGKILL) and starts it again on the same data
    /// folder and address with extra `serve` arguments (e.g. `--journal-len 10`).
    pub fn restart_with_args(&mut self, extra: &[&str]) {
        self.kill();
        self.start_with_args(extra);
    }

    fn start_with_args(&mut self, extra: &[&str]) {
        assert!(self.child.is_none(), "fileserver already running");
        let log_from = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let (out, err) = open_log(&self.log);
        let child = Command::new(bin("cellfs-fileserver"))
            .arg("serve")
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(self.addr.to_string())
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start cellfs-fileserver serve: {e}"));
        self.child = Some(child);
        self.wait_ready(log_from);
    }

    /// Waits for the server started at log offset `log_from` to say it
    /// serves (a Ping sent before it is bound would wait out QUIC's
    /// first retransmission, a second), then for it to answer a Ping.
    fn wait_ready(&mut self, log_from: u64) {
        let cfg = self.config();
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        // Past this, Ping anyway (a log filter may hide the line).
        let said_by = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "cellfs-fileserver serve exited with {status}\n{}",
                    log_tail(&self.log, 8192)
                );
            }
            if !log_since(&self.log, log_from).contains("serving cell") && Instant::now() < said_by {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let attempt = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), call_once(&cfg, None, &Request::Ping))
                    .await
                    .unwrap_or(Err(ClientError::Timeout))
            });
            let last = match attempt {
                Ok(Reply::Ok) => return,
                Ok(other) => format!("unexpected reply to Ping: {other:?}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "cellfs-fileserver on {} did not answer Ping within {SERVER_START_TIMEOUT:?} (last: {last})\n{}",
                    self.addr,
                    log_tail(&self.log, 8192)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the fileserver with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_timeout(&mut child, Duration::from_secs(10));
        }
    }

    /// Stops the fileserver cleanly (SIGTERM), waiting for it to exit; it is
    /// killed if it has not within [`SERVER_START_TIMEOUT`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take()
            && terminate(&mut child, SERVER_START_TIMEOUT).is_none()
        {
            panic!("cellfs-fileserver did not exit within {SERVER_START_TIMEOUT:?} of SIGTERM");
        }
    }

    /// Kills the fileserver with SIGKILL and starts it again on the same data and port.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// Runs `req` on a fresh connection with this cell's admin credential.
    pub fn call(&self, req: &Request) -> Result<Reply, ClientError> {
        self.call_with(&self.admin_config(), req)
    }

    /// Runs `req` on a fresh connection described by `cfg` (e.g. a config with
    /// another credential, or none).
    pub fn call_with(&self, cfg: &CellConfig, req: &Request) -> Result<Reply, ClientError> {
        self.rt.block_on(call_once(cfg, None, req))
    }

    /// Runs `req` for `caller` (a process on a web node) on a fresh
    /// connection with the cell's host credential, as a cache manager would
    /// send it, but without the cache manager's own checks.
    pub fn call_as(&self, caller: Caller, req: &Request) -> Result<Reply, ClientError> {
        self.rt.block_on(call_once(&self.config(), Some(caller), req))
    }

    /// Runs `f` on this cell's async runtime (for tests that hold
    /// connections open).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// The fileserver's counters.
    ///
    /// # Panics
    /// When the Stats RPC fails.
    pub fn stats(&self) -> Stats {
        match self.call(&Request::Stats) {
            Ok(Reply::Stats(s)) => s,
            other => panic!("Stats RPC failed: {other:?}"),
        }
    }

    /// Runs `cellfs-vos --config <admin cell.toml> ARGS...` and returns its output.
    pub fn vos<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.vos_with(&self.admin_config, args)
    }

    /// Runs `cellfs-vos --config CONFIG ARGS...` and returns its output.
    pub fn vos_with<I, S>(&self, config: &Path, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        output_with_timeout(
            Command::new(bin("cellfs-vos"))
                .arg("--config")
                .arg(config)
                .args(args)
                .env_remove("CELLFS_CONFIG"),
            COMMAND_TIMEOUT,
        )
    }

    /// Runs `cellfs-vos` like [`Cell::vos`] and returns its stdout.
    ///
    /// # Panics
    /// When it exits with failure.
    pub fn vos_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.vos(&args);
        assert!(
            out.status.success(),
            "cellfs-vos {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Default for Cell {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cell {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("fileserver {}:\n{}", self.addr, log_tail(&self.log, 8192));
        }
    }
}

/// Whether `path` is a mount point, according to `/proc/self/mountinfo`.
/// Works even when the FUSE daemon is gone (where `stat` would fail).
pub fn is_mounted(path: &Path) -> bool {
    cellfs_cachemanager::fstab::mount_type(path).is_some()
}

/// Polls `ok` every 50 ms until it holds, panicking after `limit`. Only for
/// what is asynchronous by design (reconnection), never for coherence.
pub fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `cellfs-cachemanager mount`, its output appended to `log`, with
/// `RUST_LOG` set to `filter` when given.
fn spawn_cachemanager(
    config: &Path,
    cache: &Path,
    cache_size: &str,
    mnt: &Path,
    log: &Path,
    filter: Option<&str>,
) -> Child {
    let (out, err) = open_log(log);
    let mut cmd = Command::new(bin("cellfs-cachemanager"));
    if let Some(filter) = filter {
        cmd.env("RUST_LOG", filter);
    }
    cmd.arg("mount")
        .arg("--config")
        .arg(config)
        .arg("--cache")
        .arg(cache)
        .args(["--cache-size", cache_size])
        .arg(mnt)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start cellfs-cachemanager mount: {e}"))
}

/// A running cache manager: `cellfs-cachemanager mount` on a fresh mount point
/// with its own cache folder. Dropping it unmounts (SIGTERM, then SIGKILL and
/// `umount -l` as a fallback) and deletes the folders.
pub struct Mount {
    tmp: TempDir,
    mnt: PathBuf,
    cache: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// `RUST_LOG` the cache manager runs with, when not inherited.
    filter: Option<String>,
}

impl Mount {
    /// Mounts `cell` with an empty 2 GiB cache and waits until the mount appears.
    pub fn new(cell: &Cell) -> Self {
        Self::with_cache_size(cell, "2GiB")
    }

    /// Mounts `cell` with an empty cache limited to `cache_size` (e.g. `"1MiB"`).
    pub fn with_cache_size(cell: &Cell, cache_size: &str) -> Self {
        Self::with_config(cell, &cell.config_path(), cache_size)
    }

    /// Mounts `cell` using the client config at `config` (e.g. from
    /// [`Cell::client_config_via`], to go through a [`Proxy`]) with an empty
    /// cache limited to `cache_size`. `cell` must outlive the mount.
    pub fn with_config(cell: &Cell, config: &Path, cache_size: &str) -> Self {
        Self::with_cache_folder(cell, config, None, cache_size)
    }

    /// Mounts with the cache in `cache` (an existing folder the caller owns,
    /// e.g. on a small tmpfs) instead of a fresh one, when given.
    pub fn with_cache_folder(cell: &Cell, config: &Path, cache: Option<&Path>, cache_size: &str) -> Self {
        Self::start(cell, config, cache, cache_size, None)
    }

    /// Mounts `cell` with an empty 2 GiB cache and the cache manager's
    /// `RUST_LOG` set to `filter` (e.g. `"info,cellfs_cachemanager::fuse=debug"`
    /// to log a span per kernel request; read it with [`Mount::log`]).
    pub fn with_log_filter(cell: &Cell, filter: &str) -> Self {
        Self::start(cell, &cell.config_path(), None, "2GiB", Some(filter))
    }

    fn start(_cell: &Cell, config: &Path, cache: Option<&Path>, cache_size: &str, filter: Option<&str>) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("cellfs-mount-")
            .tempdir()
            .expect("cannot create a temporary folder");
        let root = tmp.path().canonicalize().expect("cannot resolve the temporary folder");
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt).expect("cannot create the mount point");
        let cache = match cache {
            Some(c) => c.to_owned(),
            None => {
                let c = root.join("cache");
                std::fs::create_dir(&c).expect("cannot create the cache folder");
                c
            }
        };
        let log = root.join("cachemanager.log");
        let child = spawn_cachemanager(config, &cache, cache_size, &mnt, &log, filter);
        let mut mount = Mount {
            tmp,
            mnt,
            cache,
            log,
            child: Some(child),
            filter: filter.map(str::to_owned),
        };
        mount.wait_mounted();
        mount
    }

    fn wait_mounted(&mut self) {
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !is_mounted(&self.mnt) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "cellfs-cachemanager exited with {status} before mounting {}\n{}",
                    self.mnt.display(),
                    log_tail(&self.log, 8192)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} not mounted within {MOUNT_TIMEOUT:?}\n{}",
                    self.mnt.display(),
                    log_tail(&self.log, 8192)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the cache manager with SIGKILL (a node crash) and detaches its
    /// dead mount, leaving the cache folder as the crash left it.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_timeout(&mut child, Duration::from_secs(10));
        }
        let deadline = Instant::now() + UNMOUNT_TIMEOUT;
        while is_mounted(&self.mnt) && Instant::now() < deadline {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mnt)
                .stdin(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !is_mounted(&self.mnt),
            "the dead mount {} could not be detached",
            self.mnt.display()
        );
    }

    /// `cellfs-cachemanager status --format json` of this mount, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self.command(&["status", "--format", "json"], None);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --format json prints JSON")
    }

    /// Runs `cellfs-cachemanager VERB --cache <this mount's cache> [PATH]`
    /// (status, pin, unpin) with a time limit.
    pub fn command(&self, verb: &[&str], path: Option<&Path>) -> Output {
        let mut cmd = Command::new(bin("cellfs-cachemanager"));
        cmd.args(verb).arg("--cache").arg(&self.cache);
        if let Some(p) = path {
            cmd.arg(p);
        }
        output_with_timeout(&mut cmd, Duration::from_secs(120))
    }

    /// Starts the cache manager again on the same mount point and cache
    /// folder (after [`Mount::unmount`]), as a node restarting would, and
    /// waits until it mounts. With the fileserver down this is an offline start.
    pub fn mount_again(&mut self, config: &Path, cache_size: &str) {
        assert!(
            self.child.is_none(),
            "mount_again needs the previous cache manager stopped"
        );
        self.child = Some(spawn_cachemanager(
            config,
            &self.cache,
            cache_size,
            &self.mnt,
            &self.log,
            self.filter.as_deref(),
        ));
        self.wait_mounted();
    }

    /// The mount point: the cell's root directory.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Process id of the running cache manager (for `/proc` measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The cache manager's cache folder.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Where the cache manager puts the bytes of writes it gave up storing
    /// (the file changed on the server while they waited): `lost+found/`
    /// in the cache folder.
    pub fn lost_found_dir(&self) -> PathBuf {
        self.cache.join("lost+found")
    }

    /// Where the cache manager keeps writes whose store found the server
    /// unreachable, until it answers: `unstored/` in the cache folder.
    pub fn unstored_dir(&self) -> PathBuf {
        self.cache.join("unstored")
    }

    /// The temporary folder holding the mount point, cache and log.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// The cache manager's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts: SIGTERM and a bounded wait, then SIGKILL, and `umount -l` if a
    /// mount is still there. Returns whether the cache manager exited cleanly
    /// after SIGTERM.
    pub fn unmount(&mut self) -> bool {
        let mut clean = true;
        if let Some(mut child) = self.child.take() {
            match terminate(&mut child, UNMOUNT_TIMEOUT) {
                Some(status) => clean = status.success(),
                None => {
                    clean = false;
                    eprintln!("cellfs-cachemanager did not exit within {UNMOUNT_TIMEOUT:?} of SIGTERM; killed it");
                }
            }
        }
        if is_mounted(&self.mnt) {
            clean = false;
            for cmd in [
                &["umount", "-l"][..],
                &["fusermount3", "-u", "-z"],
                &["fusermount", "-u", "-z"],
            ] {
                let ok = Command::new(cmd[0])
                    .args(&cmd[1..])
                    .arg(&self.mnt)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok || !is_mounted(&self.mnt) {
                    break;
                }
            }
        }
        clean
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount();
        if std::thread::panicking() {
            eprintln!("cache manager {}:\n{}", self.mnt.display(), log_tail(&self.log, 8192));
        }
        if is_mounted(&self.mnt) {
            // Never delete through a live mount: leave the folder behind instead.
            eprintln!(
                "{} is still mounted; leaving {}",
                self.mnt.display(),
                self.tmp.path().display()
            );
            let tmp = std::mem::replace(&mut self.tmp, TempDir::new().expect("temporary folder"));
            let _ = tmp.keep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_mounted() {
        assert!(is_mounted(Path::new("/")));
        assert!(!is_mounted(Path::new("/definitely/not/a/mount")));
    }

    #[test]
    fn commands_time_out() {
        let out = output_with_timeout(Command::new("sh").args(["-c", "echo hi"]), Duration::from_secs(10));
        assert_eq!(out.stdout, b"hi\n");
        let slow = std::panic::catch_unwind(|| {
            output_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200));
        });
        assert!(slow.is_err());
    }
}
