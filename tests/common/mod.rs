//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cellfs::{Cell, ClientError};
use cellfs_protocol::{Fid, Reply, Request, Status};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// SHA-256 of a byte slice, hex.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file's contents read through the filesystem, hex.
pub fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// Names of the files in a cache manager's data folder (`cache_dir`/data,
/// one level of shard folders): its copies and any partial fetch.
pub fn cache_files(cache_dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(shards) = std::fs::read_dir(cache_dir.join("data")) else {
        return names;
    };
    for shard in shards.flatten() {
        for entry in std::fs::read_dir(shard.path()).into_iter().flatten().flatten() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `result` failed with `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(result: std::io::Result<T>, errno: i32, what: &str) {
    match result {
        Ok(v) => panic!("{what}: expected errno {errno}, got success {v:?}"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(errno), "{what}: expected errno {errno}, got {e}"),
    }
}

/// The root volume's root directory, asked of the server directly.
pub fn server_root(cell: &Cell) -> Status {
    let root_volume = match cell.call(&Request::Hello).expect("Hello") {
        Reply::Hello { root_volume, .. } => root_volume,
        other => panic!("unexpected reply to Hello: {other:?}"),
    };
    match cell.call(&Request::GetRoot { volume: root_volume }).expect("GetRoot") {
        Reply::Status(s) => s,
        other => panic!("unexpected reply to GetRoot: {other:?}"),
    }
}

/// Looks `name` up in `dir` on the server.
pub fn server_lookup(cell: &Cell, dir: Fid, name: &str) -> Status {
    match cell.call(&Request::Lookup {
        dir,
        name: name.to_owned(),
    }) {
        Ok(Reply::Status(s)) => s,
        other => panic!("Lookup {name:?} in {dir}: {other:?}"),
    }
}

/// Asks the server to make a directory in `dir`, returning its answer.
pub fn try_server_mkdir(cell: &Cell, dir: Fid, name: &str) -> Result<Reply, ClientError> {
    cell.call(&Request::MakeDir {
        dir,
        name: name.to_owned(),
        mode: 0o755,
        uid: 0,
        gid: 0,
    })
}

/// Makes a directory in `dir` on the server.
pub fn server_mkdir(cell: &Cell, dir: Fid, name: &str) -> Status {
    match try_server_mkdir(cell, dir, name) {
        Ok(Reply::Created { status, .. }) => status,
        other => panic!("MakeDir {name:?} in {dir}: {other:?}"),
    }
}

/// `statvfs(3)` of `path` (what `df` shows).
pub fn statvfs(path: &Path) -> libc::statvfs {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut out: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `out` a valid, writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut out) };
    assert_eq!(rc, 0, "statvfs {}: {}", path.display(), std::io::Error::last_os_error());
    out
}

/// A thread reading one file over and over, checking that every read is
/// one whole version of it (its SHA-256 is one of `hashes`): what a node
/// must see while releases replace the file.
pub struct WholeReads {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl WholeReads {
    /// Starts reading `path`.
    pub fn start(path: std::path::PathBuf, hashes: std::collections::HashSet<String>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut reads = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let h = sha256(&std::fs::read(&path).unwrap());
                assert!(hashes.contains(&h), "a read saw bytes of no single version");
                reads += 1;
            }
            reads
        });
        WholeReads { stop, handle }
    }

    /// Stops reading; returns how many reads were made (a failed check
    /// panics here).
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// A background process killed (and reaped) when dropped, so a failing test
/// leaves nothing running.
pub struct Background(pub std::process::Child);

impl Background {
    /// Starts `argv` with its output discarded.
    pub fn start(argv: &[&str]) -> Self {
        let child = std::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
        Background(child)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child we have not reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, signal) };
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Closes `file` with close(2) and returns what it reported (std's `File`
/// drop ignores close errors, and close is where a failed store shows).
pub fn close_checked(file: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd` and is closed once here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
