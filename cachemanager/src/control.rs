//! The control socket of a running cache manager (`CACHE/control.sock`),
//! through which `cellfs-cachemanager status` and later fs-style commands
//! talk to it: one JSON request line, one JSON reply line.

use crate::core::{Core, NodeStatus, PinSummary};
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
}

/// What the cache manager answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    /// Answer to `Status`.
    Status(NodeStatus),
    /// Progress of a `Pin`: files done, files in all, bytes done (zero or more
    /// of these precede the final answer).
    Progress(u64, u64, u64),
    /// Final answer to `Pin`/`Unpin`.
    Pinned(PinSummary),
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

/// Serves the control socket until the task is dropped.
pub async fn serve(core: Arc<Core>, cache_dir: PathBuf) -> std::io::Result<()> {
    let path = socket_path(&cache_dir);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let core = core.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_LINE));
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ControlReply>();
            let request = serde_json::from_str::<ControlRequest>(line.trim());
            let work = tokio::task::spawn_blocking(move || answer(&core, request, &tx));
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
    request: Result<ControlRequest, serde_json::Error>,
    tx: &tokio::sync::mpsc::UnboundedSender<ControlReply>,
) {
    let reply = match request {
        Ok(ControlRequest::Status) => ControlReply::Status(core.status()),
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
