//! The control socket of a running cache manager (`CACHE/control.sock`),
//! through which `cellfs-cachemanager status` and later fs-style commands
//! talk to it: one JSON request line, one JSON reply line.

use crate::core::{Core, NodeStatus};
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
}

/// What the cache manager answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    /// Answer to `Status`.
    Status(NodeStatus),
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
            let reply = match serde_json::from_str::<ControlRequest>(line.trim()) {
                Ok(ControlRequest::Status) => {
                    let core = core.clone();
                    match tokio::task::spawn_blocking(move || core.status()).await {
                        Ok(s) => ControlReply::Status(s),
                        Err(e) => ControlReply::Error(e.to_string()),
                    }
                }
                Err(e) => ControlReply::Error(format!("bad request: {e}")),
            };
            if let Ok(mut out) = serde_json::to_vec(&reply) {
                out.push(b'\n');
                let _ = write.write_all(&out).await;
            }
        });
    }
}

/// Sends `req` to the cache manager using `cache_dir` and returns its answer.
pub fn query(cache_dir: &Path, req: &ControlRequest) -> Result<ControlReply, ControlError> {
    let path = socket_path(cache_dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|source| ControlError::Connect {
        path: path.clone(),
        dir: cache_dir.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    Ok(serde_json::from_str(answer.trim())?)
}
