//! `mount.fuse.cellfs`: what mount(8) runs for `mount -t fuse.cellfs
//! CELL.TOML DIR -o OPTIONS` and for `/etc/fstab` lines of that type. It
//! starts `cellfs-cachemanager mount` in the background (its own session,
//! output to a log file) and returns once the kernel shows the mount, or
//! fails with the cache manager's last words. `umount DIR` ends the cache
//! manager as any unmount does.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The names this program answers to as a mount helper.
pub const HELPER_NAMES: [&str; 2] = ["mount.fuse.cellfs", "mount.cellfs"];

/// Where caches go when `cache=` is not given.
pub const DEFAULT_CACHE_ROOT: &str = "/var/cache/cellfs";

/// How long the helper waits for the mount to appear.
const MOUNT_WAIT: Duration = Duration::from_secs(60);

/// Options every filesystem's fstab line may carry, which mount(8) and
/// systemd act on themselves.
const GENERIC: [&str; 22] = [
    "defaults",
    "rw",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "async",
    "nodiratime",
];

/// A mount request as mount(8) hands it to the helper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    /// The cell config (the fstab "device").
    pub config: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// `-f`: do everything but mount.
    pub fake: bool,
    /// The cache folder (`cache=`).
    pub cache: PathBuf,
    /// `cache_size=` (e.g. `4GiB`).
    pub cache_size: Option<String>,
    /// `threads=`.
    pub threads: Option<String>,
    /// `request_timeout=` in seconds.
    pub request_timeout: Option<String>,
    /// `no_passthrough`.
    pub no_passthrough: bool,
    /// `log=`: where the cache manager writes (default: `cachemanager.log`
    /// in the cache folder).
    pub log: PathBuf,
}

/// The default cache folder of a mount point: systemd-style escaping of
/// its path under [`DEFAULT_CACHE_ROOT`] (`/srv/www` → `srv-www`).
pub fn default_cache(mountpoint: &Path) -> PathBuf {
    let text = mountpoint.to_string_lossy();
    let trimmed = text.trim_matches('/');
    let name = if trimmed.is_empty() {
        "-".to_owned()
    } else {
        trimmed.replace('/', "-")
    };
    Path::new(DEFAULT_CACHE_ROOT).join(name)
}

/// Parses the helper's arguments: `SPEC DIR [-sfnv] [-o OPTIONS] [-N NS]`.
pub fn parse(args: &[OsString]) -> Result<MountRequest, String> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let o = it.next().ok_or("-o needs a value")?;
                options.push(o.to_str().ok_or("mount options must be UTF-8")?.to_owned());
            }
            Some(s) if s.starts_with("-o") && s.len() > 2 => options.push(s[2..].to_owned()),
            Some("-N" | "-t") => {
                it.next();
            }
            Some(flags) if flags.starts_with('-') && flags.len() > 1 => {
                for f in flags[1..].chars() {
                    match f {
                        'f' => fake = true,
                        'n' | 's' | 'v' | 'r' | 'w' => {}
                        other => return Err(format!("unknown flag -{other}")),
                    }
                }
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [config, mountpoint] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|p| format!("expected CELL.TOML and a mount point, got {} arguments", p.len()))?;
    let mut req = MountRequest {
        cache: default_cache(&mountpoint),
        log: PathBuf::new(),
        config,
        mountpoint,
        fake,
        cache_size: None,
        threads: None,
        request_timeout: None,
        no_passthrough: false,
    };
    let mut log = None;
    for opt in options.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = || {
            value
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(format!("{key}= needs a value"))
        };
        match key {
            "cache" => req.cache = PathBuf::from(need()?),
            "cache_size" => req.cache_size = Some(need()?),
            "threads" => req.threads = Some(need()?),
            "request_timeout" => req.request_timeout = Some(need()?),
            "log" => log = Some(PathBuf::from(need()?)),
            "no_passthrough" => req.no_passthrough = true,
            "ro" => return Err("cellfs mounts are read-write (a read-only volume refuses changes by itself)".into()),
            k if GENERIC.contains(&k) || k.starts_with("x-") || k == "comment" => {}
            k => {
                return Err(format!(
                    "unknown mount option {k:?} (cellfs takes cache=DIR, cache_size=SIZE, threads=N, \
                     request_timeout=SECONDS, log=FILE, no_passthrough)"
                ));
            }
        }
    }
    req.log = log.unwrap_or_else(|| req.cache.join("cachemanager.log"));
    Ok(req)
}

/// The `cellfs-cachemanager mount` arguments for `req`.
pub fn mount_args(req: &MountRequest) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["mount".into(), "--config".into(), req.config.clone().into()];
    args.extend(["--cache".into(), req.cache.clone().into()]);
    for (flag, value) in [
        ("--cache-size", &req.cache_size),
        ("--threads", &req.threads),
        ("--request-timeout", &req.request_timeout),
    ] {
        if let Some(v) = value {
            args.extend([OsString::from(flag), OsString::from(v)]);
        }
    }
    if req.no_passthrough {
        args.push("--no-passthrough".into());
    }
    args.push(req.mountpoint.clone().into());
    args
}

/// The filesystem type of what is mounted on `dir` (an absolute path),
/// according to `/proc/self/mountinfo`; `None` when nothing is. Works even
/// when a FUSE daemon is gone (where `stat` would fail).
pub fn mount_type(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let point = unescape(line.split(' ').nth(4)?);
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        (point.as_os_str() == dir.as_os_str()).then(|| fstype.to_owned())
    })
}

/// Whether the kernel shows a FUSE mount on `dir` (an absolute path).
pub fn is_fuse_mount(dir: &Path) -> bool {
    mount_type(dir).is_some_and(|t| t.starts_with("fuse"))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// Runs the helper: starts the cache manager for `req` in its own session
/// and waits until the mount shows.
pub fn run(req: &MountRequest) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::os::unix::process::CommandExt;
    let mountpoint = req
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", req.mountpoint.display()))?;
    std::fs::create_dir_all(&req.cache).with_context(|| format!("creating cache folder {}", req.cache.display()))?;
    if req.fake {
        return Ok(());
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&req.log)
        .with_context(|| format!("opening log {}", req.log.display()))?;
    let exe = std::env::current_exe().context("finding cellfs-cachemanager")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(mount_args(req))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its last words should be the error, not an error backtrace.
        .env("RUST_LIB_BACKTRACE", "0");
    // SAFETY: setsid is async-signal-safe and touches no memory of ours;
    // the cache manager must outlive mount(8) and its session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting cellfs-cachemanager")?;
    let deadline = Instant::now() + MOUNT_WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(&req.log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(8).collect();
            anyhow::bail!(
                "cellfs-cachemanager exited ({status}) before mounting {}; its log {} ends:\n{}",
                mountpoint.display(),
                req.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if is_fuse_mount(&mountpoint) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("{} was not mounted within {MOUNT_WAIT:?}", mountpoint.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when this program was started under a mount helper's name.
pub fn called_as_helper(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| HELPER_NAMES.contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn fstab_options_become_mount_flags() {
        let req = parse(&args(&[
            "/etc/cellfs/cell.toml",
            "/srv/www",
            "-n",
            "-o",
            "rw,_netdev,nofail,x-systemd.requires=network-online.target,cache=/var/cache/www,cache_size=4GiB,no_passthrough",
        ]))
        .unwrap();
        assert_eq!(req.cache, PathBuf::from("/var/cache/www"));
        assert_eq!(req.log, PathBuf::from("/var/cache/www/cachemanager.log"));
        let flags: Vec<String> = mount_args(&req)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            flags,
            [
                "mount",
                "--config",
                "/etc/cellfs/cell.toml",
                "--cache",
                "/var/cache/www",
                "--cache-size",
                "4GiB",
                "--no-passthrough",
                "/srv/www"
            ]
        );
    }

    #[test]
    fn bad_helper_arguments_are_named() {
        let err = parse(&args(&["c.toml", "/mnt", "-o", "cache_sise=1G"])).unwrap_err();
        assert!(err.contains("cache_sise"), "{err}");
        assert!(parse(&args(&["c.toml"])).unwrap_err().contains("mount point"));
        assert!(
            parse(&args(&["c.toml", "/mnt", "-o", "cache="]))
                .unwrap_err()
                .contains("cache=")
        );
        assert!(parse(&args(&["c.toml", "/mnt", "-o", "ro"])).is_err());
    }

    #[test]
    fn default_caches_are_named_after_the_mount_point() {
        assert_eq!(
            default_cache(Path::new("/srv/www/")),
            PathBuf::from("/var/cache/cellfs/srv-www")
        );
        assert_eq!(default_cache(Path::new("/")), PathBuf::from("/var/cache/cellfs/-"));
        let req = parse(&args(&["c.toml", "/srv/www"])).unwrap();
        assert_eq!(req.cache, PathBuf::from("/var/cache/cellfs/srv-www"));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/mnt/a\\040b"), OsString::from("/mnt/a b"));
        assert_eq!(unescape("/plain"), OsString::from("/plain"));
        assert_eq!(unescape("\\134x"), OsString::from("\\x"));
        assert_eq!(unescape("/x\\"), OsString::from("/x\\"));
        assert!(mount_type(Path::new("/")).is_some());
        assert!(mount_type(Path::new("/definitely/not/a/mount")).is_none());
    }
}
