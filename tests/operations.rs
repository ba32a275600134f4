//! Running cellfs as a well-kept daemon: mounting through mount(8) and
//! `/etc/fstab` (`mount.fuse.cellfs`), the systemd units in `dist/systemd/`,
//! the readiness both daemons tell systemd, the fs-style commands, settings
//! files, metrics and logs, and the Debian packages.

mod common;

use cellfs::{COMMAND_TIMEOUT, Cell, bin, free_udp_port, is_mounted, output_with_timeout, wait_for, wait_timeout};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const HELPER: &str = "/sbin/mount.fuse.cellfs";

/// `/sbin/mount.fuse.cellfs` pointing at the built cache manager while the
/// test runs (where mount(8) looks for helpers); what was there comes back.
struct Helper {
    before: Option<PathBuf>,
}

impl Helper {
    fn install() -> Self {
        let path = Path::new(HELPER);
        let before = std::fs::read_link(path).ok();
        assert!(
            before.is_some() || !path.exists(),
            "{HELPER} is a real file here; not replacing it"
        );
        let _ = std::fs::remove_file(path);
        std::os::unix::fs::symlink(bin("cellfs-cachemanager"), path).expect("installing the mount helper");
        Helper { before }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(HELPER);
        if let Some(target) = &self.before {
            let _ = std::os::unix::fs::symlink(target, HELPER);
        }
    }
}

/// Unmounts `dir` and stops every process using `cache` when dropped.
struct Cleanup {
    dir: PathBuf,
    cache: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = Command::new("pkill").arg("-KILL").arg("-f").arg(&self.cache).status();
    }
}

/// Whether a cache manager with `cache` in its command line runs.
fn cache_manager_running(cache: &Path) -> bool {
    Command::new("pgrep")
        .arg("-f")
        .arg(cache)
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn mount(config: &Path, dir: &Path, options: &str) -> Output {
    output_with_timeout(
        Command::new("mount")
            .args(["-t", "fuse.cellfs"])
            .arg(config)
            .arg(dir)
            .args(["-o", options]),
        COMMAND_TIMEOUT,
    )
}

#[test]
fn mount_t_fuse_cellfs_mounts_and_umount_unmounts() {
    let cell = Cell::new();
    let _helper = Helper::install();
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("www"), tmp.path().join("cache"));
    std::fs::create_dir(&dir).unwrap();
    let _cleanup = Cleanup {
        dir: dir.clone(),
        cache: cache.clone(),
    };
    let options = format!("cache={},cache_size=64MiB,_netdev,nofail", cache.display());
    let out = mount(&cell.config_path(), &dir, &options);
    assert!(out.status.success(), "mount failed: {}", text(&out.stderr));
    // mount(8) returns once the mount serves.
    assert_eq!(
        cellfs_cachemanager::fstab::mount_type(&dir).as_deref(),
        Some("fuse"),
        "not mounted when mount returned"
    );
    std::fs::write(dir.join("hello"), b"from fstab").unwrap();
    assert_eq!(std::fs::read(dir.join("hello")).unwrap(), b"from fstab");
    assert!(cache.join("cachemanager.log").exists(), "no log in the cache folder");
    assert!(cache_manager_running(&cache));

    let out = output_with_timeout(Command::new("umount").arg(&dir), COMMAND_TIMEOUT);
    assert!(out.status.success(), "umount failed: {}", text(&out.stderr));
    assert!(!is_mounted(&dir));
    wait_for(
        "the cache manager to exit after umount",
        Duration::from_secs(10),
        || !cache_manager_running(&cache),
    );

    // A misspelt option is refused by name and nothing is mounted.
    let out = mount(
        &cell.config_path(),
        &dir,
        &format!("cache={},cache_sise=1GiB", cache.display()),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cache_sise"), "{}", text(&out.stderr));
    assert!(!is_mounted(&dir));
    // A cell config that does not exist: the cache manager's own words.
    let out = mount(
        &tmp.path().join("missing.toml"),
        &dir,
        &format!("cache={}", cache.display()),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("missing.toml"), "{}", text(&out.stderr));
    assert!(!is_mounted(&dir));
}

#[test]
fn systemd_accepts_the_units() {
    let tmp = tempfile::tempdir().unwrap();
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd");
    let mut files = Vec::new();
    for (unit, installed) in [
        ("cellfs-fileserver.service", "cellfs-fileserver.service"),
        ("cellfs-cachemanager@.service", "cellfs-cachemanager@srv-www.service"),
    ] {
        // The binaries as built here stand in for /usr/bin.
        let mut text = std::fs::read_to_string(units.join(unit)).unwrap();
        for name in ["cellfs-fileserver", "cellfs-cachemanager"] {
            text = text.replace(&format!("/usr/bin/{name}"), bin(name).to_str().unwrap());
        }
        let path = tmp.path().join(installed);
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    // The units name their manual pages; verify checks they open.
    let manpath = tmp.path().join("man");
    std::fs::create_dir_all(manpath.join("man8")).unwrap();
    for page in ["cellfs-fileserver.8", "cellfs-cachemanager.8"] {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(page);
        std::fs::copy(from, manpath.join("man8").join(page)).unwrap();
    }
    let out = output_with_timeout(
        Command::new("systemd-analyze")
            .arg("verify")
            .args(&files)
            .env("MANPATH", &manpath),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "systemd-analyze verify: {}", text(&out.stderr));
    // Warnings (unknown keys, bad values) do not fail verify: none allowed.
    assert!(out.stderr.is_empty(), "systemd-analyze warned: {}", text(&out.stderr));
}

/// A daemon under test: SIGTERM, then SIGKILL, when dropped.
struct Daemon(Child);

impl Daemon {
    /// Starts `cmd` as systemd would start a `Type=notify` service.
    fn start(cmd: &mut Command, notify_socket: &Path) -> Self {
        Self::spawn(cmd.stderr(Stdio::null()), notify_socket)
    }

    /// [`Daemon::start`] with the daemon's log written to `log`.
    fn start_logging(cmd: &mut Command, notify_socket: &Path, log: &Path) -> Self {
        let file = std::fs::File::create(log).unwrap();
        Self::spawn(cmd.stderr(file), notify_socket)
    }

    fn spawn(cmd: &mut Command, notify_socket: &Path) -> Self {
        let child = cmd
            .env("NOTIFY_SOCKET", notify_socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child we have not reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        if wait_timeout(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A notification socket like systemd's, and the first message on it.
fn ready_message(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("no readiness message within 30 s");
    text(&buf[..n])
}

#[test]
fn daemons_tell_systemd_when_they_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let socket_path = tmp.path().join("notify");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    // The fileserver: ready once it listens.
    let data = tmp.path().join("data");
    let port = free_udp_port();
    let out = output_with_timeout(
        Command::new(bin("cellfs-fileserver"))
            .args(["init", "--cell", "notify.test", "--data"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")]),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "init: {}", text(&out.stderr));
    let server = Daemon::start(
        Command::new(bin("cellfs-fileserver"))
            .args(["serve", "--data"])
            .arg(&data),
        &socket_path,
    );
    assert_eq!(ready_message(&sock).trim(), "READY=1");
    let taken = std::net::UdpSocket::bind(("127.0.0.1", port));
    assert!(taken.is_err(), "READY=1 came before the fileserver listened");

    // The cache manager: ready once the mount serves.
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cache = tmp.path().join("cache");
    let _cleanup = Cleanup {
        dir: mnt.clone(),
        cache: cache.clone(),
    };
    let client = Daemon::start(
        Command::new(bin("cellfs-cachemanager"))
            .args(["mount", "--config"])
            .arg(data.join("client/cell.toml"))
            .arg("--cache")
            .arg(&cache)
            .arg(&mnt),
        &socket_path,
    );
    assert_eq!(ready_message(&sock).trim(), "READY=1");
    assert!(is_mounted(&mnt), "READY=1 came before the mount");
    std::fs::write(mnt.join("ready"), b"yes").unwrap();
    assert_eq!(std::fs::read(mnt.join("ready")).unwrap(), b"yes");
    drop(client);
    drop(server);
}

/// `cellfs-cachemanager VERB --cache … --format json [PATH]`, parsed.
fn fs_json(m: &cellfs::Mount, verb: &str, path: Option<&Path>) -> serde_json::Value {
    let out = m.command(&[verb, "--format", "json"], path);
    assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{verb} printed no JSON ({e})"))
}

#[test]
fn fs_commands_do_what_they_say_on_a_real_mount() {
    let mut cell = Cell::new();
    let m = cellfs::Mount::new(&cell);
    let dir = m.path().join("site");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..4 {
        std::fs::write(dir.join(format!("f{i}")), vec![b'x'; 100 << 10]).unwrap();
    }
    let file = dir.join("f0");

    // whereis / examine / listquota: the facts, from the node and the server.
    let info = fs_json(&m, "whereis", Some(&file));
    assert_eq!(info["volume"]["name"], "root.cell", "{info}");
    assert_eq!(info["volume"]["kind"], "ReadWrite", "{info}");
    let out = m.command(&["whereis"], Some(&file));
    assert!(
        text(&out.stdout).contains("volume root.cell (RW"),
        "{}",
        text(&out.stdout)
    );
    let info = fs_json(&m, "examine", Some(&file));
    assert_eq!(info["status"]["size"], 100 << 10, "{info}");
    assert_eq!(info["cached"], true, "{info}");
    cell.vos_ok(["setquota", "root.cell", "10MiB"]);
    let quota = fs_json(&m, "listquota", Some(&file));
    assert_eq!(quota["quota"], 10 << 20, "{quota}");
    assert!(quota["used"].as_u64().unwrap() >= 400 << 10, "{quota}");

    // flush: the copy is gone from the cache, and the file reads right again.
    let before = m.status()["files_cached"].as_u64().unwrap();
    let flushed = fs_json(&m, "flush", Some(&file));
    assert_eq!(flushed["files"], 1, "{flushed}");
    assert_eq!(m.status()["files_cached"].as_u64().unwrap(), before - 1);
    assert_eq!(fs_json(&m, "examine", Some(&file))["cached"], false);
    assert_eq!(std::fs::read(&file).unwrap(), vec![b'x'; 100 << 10]);
    // flushvolume: every copy of the volume goes.
    let flushed = fs_json(&m, "flushvolume", Some(&dir));
    assert!(flushed["files"].as_u64().unwrap() >= 4, "{flushed}");
    assert_eq!(m.status()["files_cached"], 0);

    // setcachesize: takes effect at once, evicting down to the new limit.
    for i in 0..4 {
        std::fs::read(dir.join(format!("f{i}"))).unwrap();
    }
    let set = fs_json(&m, "setcachesize", Some(Path::new("150KiB")));
    assert_eq!(set["limit"], 150 << 10, "{set}");
    let parms = fs_json(&m, "getcacheparms", None);
    assert_eq!(parms["limit"], 150 << 10, "{parms}");
    assert!(parms["used"].as_u64().unwrap() <= 150 << 10, "{parms}");
    let status = m.status();
    assert_eq!(status["cache_limit"], 150 << 10);

    // checkservers: probes now, so a dead server shows at once.
    let servers = fs_json(&m, "checkservers", None);
    assert_eq!(servers[0]["up"], true, "{servers}");
    cell.kill();
    let servers = fs_json(&m, "checkservers", None);
    assert_eq!(servers[0]["up"], false, "{servers}");
    let out = m.command(&["checkservers"], None);
    assert!(text(&out.stdout).contains("DOWN"), "{}", text(&out.stdout));
}

#[test]
fn settings_files_are_checked_and_flags_win() {
    let mut cell = Cell::new();
    let tmp = tempfile::tempdir().unwrap();
    let cm = |args: &[&str]| {
        output_with_timeout(
            Command::new(bin("cellfs-cachemanager"))
                .arg("mount")
                .args(args)
                .env("RUST_LIB_BACKTRACE", "0"),
            COMMAND_TIMEOUT,
        )
    };
    // The cache manager: an unknown key and a bad value, each named with its line.
    let settings = tmp.path().join("cachemanager.toml");
    let s = settings.to_str().unwrap();
    std::fs::write(&settings, "cache = \"/tmp/x\"\ncache_sise = \"1GiB\"\n").unwrap();
    let err = text(&cm(&["--settings", s]).stderr);
    assert!(
        err.contains(s) && err.contains("line 2") && err.contains("cache_sise"),
        "{err}"
    );
    std::fs::write(&settings, "threads = \"many\"\n").unwrap();
    let err = text(&cm(&["--settings", s]).stderr);
    assert!(err.contains("line 1") && err.contains("threads"), "{err}");

    // A good file: the flag's cache size wins over the file's, the file's
    // pinned path is pinned once mounted.
    let a = cellfs::Mount::new(&cell);
    std::fs::create_dir(a.path().join("site")).unwrap();
    std::fs::write(a.path().join("site/index.php"), vec![b'p'; 20_000]).unwrap();
    let (mnt, cache) = (tmp.path().join("mnt"), tmp.path().join("cache"));
    std::fs::create_dir(&mnt).unwrap();
    let _cleanup = Cleanup {
        dir: mnt.clone(),
        cache: cache.clone(),
    };
    std::fs::write(
        &settings,
        format!(
            "config = {:?}\ncache = {:?}\ncache_size = \"1MiB\"\nmountpoint = {:?}\npin = [\"/site\"]\n",
            cell.config_path(),
            cache,
            mnt
        ),
    )
    .unwrap();
    let notify = tmp.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _node = Daemon::start(
        Command::new(bin("cellfs-cachemanager")).args(["mount", "--settings", s, "--cache-size", "3MiB"]),
        &notify,
    );
    assert_eq!(ready_message(&sock).trim(), "READY=1");
    let status = |key: &str| {
        let out = output_with_timeout(
            Command::new(bin("cellfs-cachemanager"))
                .args(["status", "--format", "json", "--cache"])
                .arg(&cache),
            COMMAND_TIMEOUT,
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[key].clone()
    };
    assert_eq!(status("cache_limit"), 3 << 20, "the flag did not win over the file");
    wait_for("the file's pinned path to be pinned", Duration::from_secs(20), || {
        status("pinned_bytes").as_u64().unwrap_or(0) >= 20_000
    });
    assert_eq!(std::fs::read(mnt.join("site/index.php")).unwrap().len(), 20_000);

    // The fileserver's server.toml: the same checks; --listen wins over it.
    cell.kill();
    let data = cell.data_dir().to_path_buf();
    let toml = data.join("server.toml");
    let good = std::fs::read_to_string(&toml).unwrap();
    let serve = |extra: &[&str]| {
        output_with_timeout(
            Command::new(bin("cellfs-fileserver"))
                .args(["serve", "--data"])
                .arg(&data)
                .args(extra)
                .env("RUST_LIB_BACKTRACE", "0"),
            COMMAND_TIMEOUT,
        )
    };
    std::fs::write(&toml, format!("{good}bogus_key = 3\n")).unwrap();
    let line = good.lines().count() + 1;
    let err = text(&serve(&[]).stderr);
    assert!(
        err.contains("server.toml") && err.contains(&format!("line {line}")) && err.contains("bogus_key"),
        "{err}"
    );
    std::fs::write(&toml, good.replace("max_requests = 4096", "max_requests = \"lots\"")).unwrap();
    let err = text(&serve(&[]).stderr);
    assert!(err.contains("line") && err.contains("max_requests = \"lots\""), "{err}");
    // A metrics address from the file (no --metrics flag).
    let metrics_port = free_tcp_port();
    std::fs::write(&toml, format!("{good}metrics = \"127.0.0.1:{metrics_port}\"\n")).unwrap();
    let port = free_udp_port();
    let server = Daemon::start(
        Command::new(bin("cellfs-fileserver"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data),
        &notify,
    );
    assert_eq!(ready_message(&sock).trim(), "READY=1");
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
        "--listen did not win over server.toml"
    );
    wait_for("metrics where server.toml put them", Duration::from_secs(10), || {
        scrape(metrics_port)
            .iter()
            .any(|(s, _)| s.starts_with("cellfs_fileserver_journal_limit"))
    });
    drop(server);
}

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET /metrics` from `port`: every sample line as (series, value).
fn scrape(port: u16) -> Vec<(String, f64)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let (head, body) = body.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            // Prometheus text format: a name with optional {labels}, a value.
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {l:?}"));
            let name_end = series.find('{').unwrap_or(series.len());
            assert!(
                series[..name_end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {l:?}"
            );
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}"));
            (series.to_owned(), value)
        })
        .collect()
}

/// The sum of every sample of a metric (all its labels).
fn total(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_endpoints_carry_the_series_and_move() {
    let tmp = tempfile::tempdir().unwrap();
    let notify = tmp.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let data = tmp.path().join("data");
    let out = output_with_timeout(
        Command::new(bin("cellfs-fileserver"))
            .args(["init", "--cell", "metrics.test", "--data"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{}", free_udp_port())]),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "init: {}", text(&out.stderr));
    let (server_port, node_port) = (free_tcp_port(), free_tcp_port());
    // Each daemon logs one span per RPC stream and per FUSE request.
    let (server_log, node_log) = (tmp.path().join("server.log"), tmp.path().join("node.log"));
    let _server = Daemon::start_logging(
        Command::new(bin("cellfs-fileserver"))
            .args(["serve", "--metrics", &format!("127.0.0.1:{server_port}"), "--data"])
            .arg(&data)
            .env("RUST_LOG", "info,cellfs_fileserver::server=debug"),
        &notify,
        &server_log,
    );
    assert_eq!(ready_message(&sock).trim(), "READY=1");
    let (mnt, cache) = (tmp.path().join("mnt"), tmp.path().join("cache"));
    std::fs::create_dir(&mnt).unwrap();
    let _cleanup = Cleanup {
        dir: mnt.clone(),
        cache: cache.clone(),
    };
    let _node = Daemon::start_logging(
        Command::new(bin("cellfs-cachemanager"))
            .args(["mount", "--metrics", &format!("127.0.0.1:{node_port}"), "--config"])
            .arg(data.join("client/cell.toml"))
            .arg("--cache")
            .arg(&cache)
            .arg(&mnt)
            .env("RUST_LOG", "info,fuser=warn,cellfs_cachemanager::fuse=debug"),
        &notify,
        &node_log,
    );
    assert_eq!(ready_message(&sock).trim(), "READY=1");

    let work = |round: usize| {
        for i in 0..5 {
            std::fs::write(mnt.join(format!("f{round}-{i}")), vec![b'm'; 30_000]).unwrap();
        }
        let flush = output_with_timeout(
            Command::new(bin("cellfs-cachemanager"))
                .args(["flushvolume", "--cache"])
                .arg(&cache)
                .arg(&mnt),
            COMMAND_TIMEOUT,
        );
        assert!(flush.status.success(), "{}", text(&flush.stderr));
        for i in 0..5 {
            assert_eq!(std::fs::read(mnt.join(format!("f{round}-{i}"))).unwrap().len(), 30_000);
        }
        // The gauges are sampled every second.
        std::thread::sleep(Duration::from_millis(1500));
    };
    work(0);
    let (server1, node1) = (scrape(server_port), scrape(node_port));
    for name in [
        "cellfs_fileserver_rpc_seconds_count",
        "cellfs_fileserver_rpcs_total",
        "cellfs_fileserver_breaks_sent_total",
        "cellfs_fileserver_promises",
        "cellfs_fileserver_connections",
        "cellfs_fileserver_journal_limit",
    ] {
        assert!(
            server1.iter().any(|(s, _)| s.starts_with(name)),
            "fileserver lacks {name}"
        );
    }
    assert!(
        server1.iter().any(|(s, _)| s.contains("op=\"store_data\"")),
        "no store latency by operation"
    );
    for name in [
        "cellfs_cachemanager_rpc_seconds_count",
        "cellfs_cachemanager_cache_hits_total",
        "cellfs_cachemanager_cache_misses_total",
        "cellfs_cachemanager_fetched_bytes_total",
        "cellfs_cachemanager_cache_used_bytes",
        "cellfs_cachemanager_cache_limit_bytes",
        "cellfs_cachemanager_promises",
        "cellfs_cachemanager_server_up",
    ] {
        assert!(
            node1.iter().any(|(s, _)| s.starts_with(name)),
            "cache manager lacks {name}"
        );
    }
    assert_eq!(total(&node1, "cellfs_cachemanager_server_up"), 1.0);
    assert!(total(&node1, "cellfs_cachemanager_fetched_bytes_total") >= 150_000.0);

    // More reads and writes move the counters.
    work(1);
    let (server2, node2) = (scrape(server_port), scrape(node_port));
    for (samples1, samples2, name) in [
        (&server1, &server2, "cellfs_fileserver_rpcs_total"),
        (&server1, &server2, "cellfs_fileserver_rpc_seconds_count"),
        (&node1, &node2, "cellfs_cachemanager_rpc_seconds_count"),
        (&node1, &node2, "cellfs_cachemanager_cache_misses_total"),
        (&node1, &node2, "cellfs_cachemanager_fetched_bytes_total"),
    ] {
        assert!(
            total(samples2, name) > total(samples1, name),
            "{name} did not move: {} then {}",
            total(samples1, name),
            total(samples2, name)
        );
    }

    // Journal lengths are sampled every 10 s; the ten stores are in it.
    let journal =
        |samples: &[(String, f64)]| total(samples, r#"cellfs_fileserver_journal_entries{volume="root.cell"}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal(&scrape(server_port)) < 10.0 {
        assert!(
            Instant::now() < deadline,
            "the journal gauge did not reach the 10 stores"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // One span per FUSE request and per RPC stream, logged when it closes.
    let closed = |log: &Path, span: &str| {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(span) && l.contains("close time.busy="))
            .count()
    };
    assert!(
        closed(&node_log, r#"fuse{op="create""#) >= 10,
        "no span per FUSE create"
    );
    assert!(
        closed(&node_log, r#"fuse{op="release""#) >= 10,
        "no span per FUSE release"
    );
    assert!(closed(&server_log, "rpc{stream=") >= 10, "no span per RPC stream");
}

/// The packages `scripts/package` builds, in the order dpkg may take them.
const PACKAGES: [&str; 4] = [
    "cellfs-common",
    "cellfs-fileserver",
    "cellfs-cachemanager",
    "cellfs-vos",
];

/// Whether Debian package `name` is installed.
fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .is_ok_and(|o| o.stdout == b"installed")
}

/// Purges the cellfs packages when dropped.
struct Packages;

impl Drop for Packages {
    fn drop(&mut self) {
        let _ = output_with_timeout(Command::new("dpkg").arg("--purge").args(PACKAGES), COMMAND_TIMEOUT);
    }
}

#[test]
fn debian_packages_install_and_serve() {
    for p in PACKAGES {
        assert!(
            !package_installed(p),
            "{p} is installed on this machine: this test installs and purges the cellfs packages, \
             so it leaves an existing installation alone (dpkg --purge it to run the test)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let debs_dir = tmp.path().join("debs");
    // Package the binaries the other tests run.
    let built = bin("cellfs-fileserver");
    let profile = match built.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("cannot tell the build profile of {}", built.display()),
    };
    let out = output_with_timeout(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package"))
            .args(["--no-build", "--profile", profile])
            .arg(&debs_dir),
        Duration::from_secs(600),
    );
    assert!(out.status.success(), "scripts/package: {}", text(&out.stderr));
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&debs_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    assert_eq!(debs.len(), PACKAGES.len(), "{debs:?}");

    let _purge = Packages;
    let out = output_with_timeout(Command::new("dpkg").arg("-i").args(&debs), COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for p in PACKAGES {
        assert!(package_installed(p), "{p} not installed after dpkg -i");
    }
    for name in ["cellfs-fileserver", "cellfs-cachemanager", "cellfs-vos"] {
        let out = output_with_timeout(
            Command::new(format!("/usr/bin/{name}")).arg("--version"),
            COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "{name} --version: {}", text(&out.stderr));
        assert_eq!(
            text(&out.stdout).trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
    for page in ["cellfs-fileserver", "cellfs-cachemanager", "cellfs-vos", "cellfs.toml"] {
        let out = output_with_timeout(Command::new("man").args(["-w", page]), COMMAND_TIMEOUT);
        assert!(
            text(&out.stdout).starts_with("/usr/share/man/"),
            "man cannot find {page}: {}",
            text(&out.stderr)
        );
    }
    for completion in [
        "/usr/share/bash-completion/completions/cellfs-vos",
        "/usr/share/zsh/vendor-completions/_cellfs-cachemanager",
        "/usr/share/fish/vendor_completions.d/cellfs-fileserver.fish",
    ] {
        assert!(Path::new(completion).is_file(), "{completion} not installed");
    }
    // The installed units, as systemd would load them (the template under
    // an instance name).
    let instance = tmp.path().join("cellfs-cachemanager@srv-www.service");
    std::fs::copy("/usr/lib/systemd/system/cellfs-cachemanager@.service", &instance).unwrap();
    let out = output_with_timeout(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg("/usr/lib/systemd/system/cellfs-fileserver.service")
            .arg(&instance),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "systemd-analyze verify: {}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "systemd-analyze warned: {}", text(&out.stderr));

    // The packaged mount helper mounts a cell.
    assert_eq!(
        std::fs::canonicalize(HELPER).unwrap(),
        Path::new("/usr/bin/cellfs-cachemanager"),
        "{HELPER} is not the packaged cache manager"
    );
    let cell = Cell::new();
    let (dir, cache) = (tmp.path().join("www"), tmp.path().join("cache"));
    std::fs::create_dir(&dir).unwrap();
    let _cleanup = Cleanup {
        dir: dir.clone(),
        cache: cache.clone(),
    };
    let out = mount(&cell.config_path(), &dir, &format!("cache={}", cache.display()));
    assert!(out.status.success(), "mount failed: {}", text(&out.stderr));
    std::fs::write(dir.join("index.php"), b"<?php echo 1;").unwrap();
    assert_eq!(std::fs::read(dir.join("index.php")).unwrap(), b"<?php echo 1;");
    let out = output_with_timeout(Command::new("umount").arg(&dir), COMMAND_TIMEOUT);
    assert!(out.status.success(), "umount failed: {}", text(&out.stderr));
}
