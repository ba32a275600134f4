//! Connections from this fileserver to the other fileservers of its cell
//! (to create a volume there, send a release or a moving volume), made with
//! the server's peer credential (`peer.pem`), one QUIC connection per server
//! kept open and made again when lost.

use crate::error::{FsResult, rpc_err};
use cellfs_protocol::pieces::FilePieces;
use cellfs_protocol::tls::Credential;
use cellfs_protocol::transport::{CallError, Connector, RpcClient, SEND_PIECE, resolve};
use cellfs_protocol::{ErrorCode, Reply, Request};
use std::collections::HashMap;
use std::time::Duration;

/// Bound on one call to another server (and on connecting to it).
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Slowest rate accepted while sending a dump to another server.
const MIN_PEER_RATE: u64 = 1 << 20;

/// Bound on work another server does for a call beyond moving bytes:
/// building a received volume, or an admin operation forwarded to it (a
/// move or release of a large volume). A server that dies meanwhile still
/// ends the call through the connection's idle timeout.
const PEER_WORK_TIMEOUT: Duration = Duration::from_secs(3600);

/// Connections to the cell's other fileservers.
pub struct Peers {
    ca_pem: String,
    credential: Option<Credential>,
    clients: tokio::sync::Mutex<HashMap<String, (Connector, Option<RpcClient>)>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    /// Peers reached with `credential` (none: a cell made before servers
    /// had one, which cannot reach other servers), trusting `ca_pem`.
    pub fn new(ca_pem: String, credential: Option<Credential>) -> Self {
        Peers {
            ca_pem,
            credential,
            clients: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self, addr: &str) -> FsResult<RpcClient> {
        let Some(credential) = &self.credential else {
            return Err(rpc_err(
                ErrorCode::NotPermitted,
                "this fileserver has no peer credential (peer.pem): it was made before cells had several servers",
            ));
        };
        let mut clients = self.clients.lock().await;
        if !clients.contains_key(addr) {
            let sock = resolve(addr).map_err(|e| rpc_err(ErrorCode::Invalid, format!("server {addr}: {e}")))?;
            let connector = Connector::new(sock, &self.ca_pem, Some(credential))
                .map_err(|e| rpc_err(ErrorCode::Io, format!("server {addr}: {e}")))?;
            clients.insert(addr.to_owned(), (connector, None));
        }
        let Some((connector, current)) = clients.get_mut(addr) else {
            return Err(rpc_err(ErrorCode::Io, format!("server {addr}: no connector")));
        };
        if let Some(c) = current.as_ref().filter(|c| c.connection().close_reason().is_none()) {
            return Ok(c.clone());
        }
        let c = match tokio::time::timeout(PEER_TIMEOUT, connector.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(rpc_err(ErrorCode::Io, format!("cannot reach fileserver {addr}: {e}"))),
            Err(_) => return Err(rpc_err(ErrorCode::Io, format!("fileserver {addr} does not answer"))),
        };
        *current = Some(c.clone());
        Ok(c)
    }

    /// Sends `req` to the server at `addr`: a quick call.
    pub async fn call(&self, addr: &str, req: &Request) -> FsResult<Reply> {
        let client = self.client(addr).await?;
        bounded(addr, PEER_TIMEOUT, client.call(req)).await
    }

    /// Sends `req` to the server at `addr`, which may work on it long (an
    /// admin operation forwarded to it).
    pub async fn call_long(&self, addr: &str, req: &Request) -> FsResult<Reply> {
        let client = self.client(addr).await?;
        bounded(addr, PEER_WORK_TIMEOUT, client.call(req)).await
    }

    /// Sends `req` followed by the first `len` bytes of `file`.
    pub async fn call_with_file(&self, addr: &str, req: &Request, file: std::fs::File, len: u64) -> FsResult<Reply> {
        let client = self.client(addr).await?;
        let mut file = FilePieces::new(file, 0, len, SEND_PIECE);
        let limit = PEER_WORK_TIMEOUT + Duration::from_secs(len / MIN_PEER_RATE);
        bounded(addr, limit, client.call_with_data(req, len, &mut file)).await
    }
}

impl Peers {
    /// Sends a `DumpVolume` to `addr` and writes the dump to a new file at
    /// `path`; returns its length.
    pub async fn dump_to_file(&self, addr: &str, req: &Request, path: &std::path::Path) -> FsResult<u64> {
        let client = self.client(addr).await?;
        let mut file = tokio::fs::File::create(path).await?;
        bounded(addr, DUMP_TIMEOUT, client.dump_volume(req, &mut file, |_, _| {})).await
    }
}

/// Bound on fetching a whole dump from another server.
const DUMP_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Waits at most `limit` for a call to `addr`; its errors keep the remote
/// server's code and message.
async fn bounded<T>(
    addr: &str,
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, CallError>>,
) -> FsResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(CallError::Rpc(e))) => Err(rpc_err(e.code, format!("fileserver {addr}: {}", e.message))),
        Ok(Err(e)) => Err(rpc_err(ErrorCode::Io, format!("fileserver {addr}: {e}"))),
        Err(_) => Err(rpc_err(
            ErrorCode::Io,
            format!("fileserver {addr} did not answer in {limit:?}"),
        )),
    }
}
