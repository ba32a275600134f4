//! The control socket of a running cache manager (`CACHE/control.sock`),
//! through which `cellfs-cachemanager status` and later fs-style commands
//! talk to it: one JSON request line, one JSON reply line.

use crate::core::{Core, Flushed, NodeStatus, PathInfo, PinSummary, ServerState};
use cellfs_protocol::acl::{AclChange, AclLine};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Longest request line accepted.
const MAX_LINE: u64 = 64 << 10;

/// What a client may ask.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The node's state.
    Status,
    /// Hoard the subtree at a path relative to the mount root.
    Pin(String),
    /// Stop hoarding the subtree at a path relative to the mount root.
    Unpin(String),
    /// Change the ACL of the directory at a path relative to the mount root,
    /// for the user of the process asking (its socket credentials).
    SetAcl {
        /// The directory.
        path: String,
        /// The entries to set.
        changes: Vec<AclChange>,
        /// Start from an empty ACL.
        clear: bool,
    },
    /// Show the ACL of the directory at a path relative to the mount root.
    ListAcl(String),
    /// The facts of a path relative to the mount root and of its volume
    /// (`whereis`, `examine`, `listquota`).
    Examine(String),
    /// Drop what the node cached of a path (a file, or a directory's
    /// listing and its files).
    Flush(String),
    /// Drop what the node cached of a path's volume (root only).
    FlushVolume(String),
    /// Probe every fileserver of the cell now.
    CheckServers,
    /// Change the cache size limit at once, evicting down to it (root only).
    SetCacheSize(u64),
}

/// What the cache manager answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    /// Answer to `Status`.
    Status(Box<NodeStatus>),
    /// Progress of a `Pin`: files done, files in all, bytes done (zero or more
    /// of these precede the final answer).
    Progress(u64, u64, u64),
    /// Final answer to `Pin`/`Unpin`.
    Pinned(PinSummary),
    /// Answer to `SetAcl`/`ListAcl`: the directory's ACL.
    Acl(Vec<AclLine>),
    /// Answer to `Examine`.
    Examined(Box<PathInfo>),
    /// Answer to `Flush`/`FlushVolume`.
    Flushed(Flushed),
    /// Answer to `CheckServers`: each server, the cell's first one first.
    Servers(Vec<ServerState>),
    /// Answer to `SetCacheSize`: bytes used and the new limit.
    CacheSize {
        /// Bytes held by cached copies after evicting.
        used: u64,
        /// The limit now.
        limit: u64,
    },
    /// The request was not understood.
    Error(String),
}

/// Errors talking to a running cache manager.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No cache manager listens on that cache folder.
    #[error("no running cache manager uses {path} ({source}); is the cell mounted with --cache {dir}?")]
    Connect {
        path: PathBuf,
        dir: String,
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The answer was not understood.
    #[error("control socket: bad answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The control socket of the cache folder `cache_dir`.
pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("control.sock")
}

/// Makes the control socket of the cache folder `cache_dir` (before the
/// mount reports ready, so a status command right after finds it); call
/// within the runtime.
pub fn bind(cache_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let path = socket_path(cache_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    // Anyone may connect: what a request may do depends on who asks (its
    // socket credentials), checked in `answer` and by the fileserver.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    Ok(listener)
}

/// Serves the control socket `listener` until the task is dropped.
pub async fn serve(core: Arc<Core>, listener: tokio::net::UnixListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let core = core.clone();
        let asker = match stream.peer_cred() {
            Ok(c) => crate::caller::of(c.uid(), c.gid()),
            Err(e) => {
                tracing::warn!(error = %e, "control connection without credentials; refused");
                continue;
            }
        };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ControlReply>();
            let request = serde_json::from_str::<ControlRequest>(line.trim());
            let work = tokio::task::spawn_blocking(move || {
                let _as = crate::caller::enter(Some(asker.clone()));
                answer(&core, asker.uid, request, &tx)
            });
            while let Some(reply) = rx.recv().await {
                let Ok(mut out) = serde_json::to_vec(&reply) else { break };
                out.push(b'\n');
                if write.write_all(&out).await.is_err() {
                    break;
                }
            }
            let _ = work.await;
        });
    }
}

/// Carries out one request, sending progress and the final reply to `tx`.
fn answer(
    core: &Core,
    uid: u32,
    request: Result<ControlRequest, serde_json::Error>,
    tx: &tokio::sync::mpsc::UnboundedSender<ControlReply>,
) {
    let reply = match request {
        Ok(
            ControlRequest::Pin(_)
            | ControlRequest::Unpin(_)
            | ControlRequest::FlushVolume(_)
            | ControlRequest::SetCacheSize(_),
        ) if uid != 0 => ControlReply::Error("only root may pin, unpin, flush a volume or resize the cache".into()),
        Ok(ControlRequest::Status) => ControlReply::Status(Box::new(core.status())),
        Ok(ControlRequest::SetAcl { path, changes, clear }) => {
            reply_with(core.set_acl(&path, changes, clear), ControlReply::Acl)
        }
        Ok(ControlRequest::ListAcl(path)) => reply_with(core.list_acl(&path), ControlReply::Acl),
        Ok(ControlRequest::Examine(path)) => reply_with(core.examine(&path), |i| ControlReply::Examined(Box::new(i))),
        Ok(ControlRequest::Flush(path)) => reply_with(core.flush_path(&path), ControlReply::Flushed),
        Ok(ControlRequest::FlushVolume(path)) => reply_with(core.flush_volume(&path), ControlReply::Flushed),
        Ok(ControlRequest::CheckServers) => ControlReply::Servers(core.check_servers()),
        Ok(ControlRequest::SetCacheSize(limit)) => reply_with(core.set_cache_size(limit), |(used, limit)| {
            ControlReply::CacheSize { used, limit }
        }),
        Ok(ControlRequest::Pin(path)) => {
            let mut progress = |done, total, bytes| {
                let _ = tx.send(ControlReply::Progress(done, total, bytes));
            };
            match core.pin(&path, &mut progress) {
                Ok(s) => ControlReply::Pinned(s),
                Err(e) => ControlReply::Error(e.message),
            }
        }
        Ok(ControlRequest::Unpin(path)) => match core.unpin(&path) {
            Ok(s) => ControlReply::Pinned(s),
            Err(e) => ControlReply::Error(e.message),
        },
        Err(e) => ControlReply::Error(format!("bad request: {e}")),
    };
    let _ = tx.send(reply);
}

/// The answer to a request: `ok` of its result, or the error with its
/// errno's text first ("Permission denied: ...").
fn reply_with<T>(result: crate::error::FsResult<T>, ok: impl FnOnce(T) -> ControlReply) -> ControlReply {
    match result {
        Ok(value) => ok(value),
        Err(e) => {
            let os = std::io::Error::from_raw_os_error(e.errno).to_string();
            let os = os.split(" (os error").next().unwrap_or_default().to_owned();
            ControlReply::Error(format!("{os}: {}", e.message))
        }
    }
}

/// Sends `req` to the cache manager using `cache_dir` and returns its final
/// answer; `Progress` lines before it go to `on_progress`.
pub fn query(
    cache_dir: &Path,
    req: &ControlRequest,
    on_progress: &mut dyn FnMut(u64, u64, u64),
) -> Result<ControlReply, ControlError> {
    let path = socket_path(cache_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|source| ControlError::Connect {
        path: path.clone(),
        dir: cache_dir.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(ControlError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the cache manager closed the control connection without an answer",
            )));
        }
        match serde_json::from_str(line.trim())? {
            ControlReply::Progress(done, total, bytes) => on_progress(done, total, bytes),
            reply => return Ok(reply),
        }
    }
}
