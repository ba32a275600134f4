//! The QUIC server: endpoint, accept loop with a connection cap, a task per
//! connection and per stream, and clean shutdown.

use crate::callbacks::{Callbacks, ClientId};
use crate::config::{CA_PEM, ConfigError, PEER_KEY, PEER_PEM, SERVER_KEY, SERVER_PEM, ServerConfig};
use crate::error::FsError;
use crate::lock::DataLock;
use crate::rpc::{Context, Outcome};
use crate::security::Who;
use crate::store::Store;
use cellfs_protocol::acl::MAX_CALLER_GIDS;
use cellfs_protocol::codec::{CodecError, MAX_FRAME};
use cellfs_protocol::message::Reply;
use cellfs_protocol::tls::{self, Credential, TlsError};
use cellfs_protocol::{ErrorCode, RpcError, transport};
use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

/// Request data bytes the server reads and discards after refusing a
/// `StoreData`, so the client gets the error reply; beyond this the stream is stopped.
pub const DRAIN_LIMIT: u64 = 64 << 20;
/// How often expired promises are swept out of the registry.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown lets the endpoint resend its close frames.
const CLOSE_LINGER: Duration = Duration::from_millis(250);

/// How long shutdown waits for connections and streams to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Stream error code: the request was malformed.
const CODE_BAD_REQUEST: u32 = 1;
/// Stream error code: the server could not finish sending data.
const CODE_DATA_FAILED: u32 = 2;
/// Connection close code: too many connections with one credential.
const CODE_BUSY: u32 = 3;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `server.toml` is missing or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error("opening the store: {0}")]
    Store(#[from] FsError),
    /// A credential file could not be read.
    #[error("cannot read {path}: {source}")]
    Credential {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TLS material is invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listen address does not resolve.
    #[error("cannot resolve listen address {0}")]
    Resolve(String),
    /// Another server or a salvager is using the data folder.
    #[error(transparent)]
    Locked(#[from] crate::lock::LockError),
    /// The run marker (`grace.rs`) could not be written.
    #[error("cannot write the run marker {path}: {source}")]
    Marker {
        /// The marker file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Settings that override `server.toml` for one run.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Listen address (instead of `listen`).
    pub listen: Option<SocketAddr>,
    /// Journal length per volume (instead of `journal_len`).
    pub journal_len: Option<u64>,
}

/// A bound, ready fileserver. It holds the data folder lock until [`Server::run`] returns.
pub struct Server {
    endpoint: quinn::Endpoint,
    ctx: Arc<Context>,
    local_addr: SocketAddr,
    lock: DataLock,
    data_dir: PathBuf,
}

fn read_pem(path: PathBuf) -> Result<String, ServerError> {
    std::fs::read_to_string(&path).map_err(|source| ServerError::Credential { path, source })
}

impl Server {
    /// Opens the cell in `data_dir` and binds its endpoint on `listen` (or the
    /// configured address). Must run inside a tokio runtime.
    pub async fn open(data_dir: &Path, listen: Option<SocketAddr>) -> Result<Self, ServerError> {
        let opts = ServeOptions {
            listen,
            ..ServeOptions::default()
        };
        Self::open_with(data_dir, &opts).await
    }

    /// Opens the cell in `data_dir` with `opts` overriding `server.toml`.
    /// Refuses (`Locked`) when another server or a salvager holds the folder.
    pub async fn open_with(data_dir: &Path, opts: &ServeOptions) -> Result<Self, ServerError> {
        let mut config = ServerConfig::load(data_dir)?;
        let lock = DataLock::acquire(data_dir)?;
        let listen = opts.listen;
        if let Some(n) = opts.journal_len {
            config.journal_len = n;
        }
        let addr = match listen {
            Some(a) => a,
            None => transport::resolve(&config.listen).map_err(|_| ServerError::Resolve(config.listen.clone()))?,
        };
        let ca = read_pem(data_dir.join(CA_PEM))?;
        let credential = Credential {
            cert_pem: read_pem(data_dir.join(SERVER_PEM))?,
            key_pem: read_pem(data_dir.join(SERVER_KEY))?,
        };
        let crypto = tls::server_crypto(&credential, &ca)?;
        let root = data_dir.to_owned();
        let journal_len = config.journal_len;
        let store = tokio::task::spawn_blocking(move || Store::open_with(&root, journal_len))
            .await
            .map_err(FsError::from)??;
        let endpoint = transport::server_endpoint(
            addr,
            crypto,
            credential.key_pem.as_bytes(),
            config.max_streams_per_connection,
        )
        .map_err(|source| ServerError::Bind { addr, source })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| ServerError::Bind { addr, source })?;
        let callbacks = Arc::new(Callbacks::new(Duration::from_secs(config.promise_secs)));
        let server_addr = if listen.is_some() {
            local_addr.to_string()
        } else {
            config.listen.clone()
        };
        let peer = match (read_pem(data_dir.join(PEER_PEM)), read_pem(data_dir.join(PEER_KEY))) {
            (Ok(cert_pem), Ok(key_pem)) => Some(Credential { cert_pem, key_pem }),
            _ => None,
        };
        if config.vldb.is_none() && store.servers().map_err(ServerError::from)?.is_empty() {
            // A cell made before fileservers were registered.
            store.register_server(&config.listen).map_err(ServerError::from)?;
        }
        let peers = crate::peers::Peers::new(ca.clone(), peer);
        let security = store.security_state().map_err(ServerError::from)?;
        let mut ctx = Context::new(Arc::new(store), callbacks, config, server_addr, peers);
        ctx.grace = crate::grace::Grace::begin(data_dir).map_err(|source| ServerError::Marker {
            path: data_dir.join(crate::grace::MARKER),
            source,
        })?;
        let ctx = Arc::new(ctx);
        ctx.security.replace(security);
        Ok(Server {
            endpoint,
            ctx,
            local_addr,
            lock,
            data_dir: data_dir.to_owned(),
        })
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handler context (store, callbacks, counters).
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Serves until `shutdown` completes, then closes the endpoint and waits
    /// (up to [`SHUTDOWN_GRACE`]) for connections and streams to end.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            endpoint,
            ctx,
            local_addr,
            lock,
            data_dir,
        } = self;
        tracing::info!("serving cell {} on {}", ctx.config.cell, local_addr);
        let limit = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
        let requests = Arc::new(Semaphore::new(ctx.config.max_requests.max(1)));
        let per_credential = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
        let puller = ctx.config.vldb.is_some().then(|| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::secops::SECURITY_PULL_INTERVAL);
                loop {
                    tick.tick().await;
                    if let Err(e) = ctx.pull_security().await {
                        tracing::debug!(error = %e, "cannot pull the cell's security state yet");
                    }
                }
            })
        });
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let sweeper = {
            let callbacks = ctx.callbacks.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SWEEP_INTERVAL);
                loop {
                    tick.tick().await;
                    callbacks.sweep();
                }
            })
        };
        tokio::pin!(shutdown);
        let mut next_client: ClientId = 0;
        loop {
            let incoming = tokio::select! {
                () = &mut shutdown => break,
                incoming = endpoint.accept() => incoming,
            };
            let Some(incoming) = incoming else { break };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(remote = %incoming.remote_address(), "connection limit reached; refusing");
                incoming.refuse();
                continue;
            };
            next_client += 1;
            let client = next_client;
            let span = tracing::info_span!("conn", client, remote = %incoming.remote_address());
            let ctx = ctx.clone();
            let done = done_tx.downgrade();
            let limits = Limits {
                requests: requests.clone(),
                per_credential: per_credential.clone(),
            };
            tokio::spawn(
                async move {
                    connection(ctx, client, incoming, limits, done).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tracing::info!("shutting down");
        sweeper.abort();
        if let Some(p) = puller {
            p.abort();
        }
        // A node that misses the close learns of the stop from its next
        // packet, maybe only after a new run began: that run needs a grace.
        let outstanding = ctx.callbacks.promises() > 0;
        endpoint.close(quinn::VarInt::from_u32(0), b"server shutdown");
        drop(done_tx);
        if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv()).await.is_err() {
            tracing::warn!("shutdown grace period over; exiting with work in flight");
        }
        // The close frames went out with `close`; idleness past a moment only
        // waits out handshakes clients abandoned (their idle timeout, 6 s).
        let _ = tokio::time::timeout(CLOSE_LINGER, endpoint.wait_idle()).await;
        crate::grace::end(&data_dir, outstanding);
        drop(lock);
        Ok(())
    }
}

/// Opens the cell in `data_dir` and serves it until `shutdown` completes.
pub async fn serve(
    data_dir: &Path,
    listen: Option<SocketAddr>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::open(data_dir, listen).await?.run(shutdown).await
}

/// Opens the cell in `data_dir` with `opts` and serves it until `shutdown` completes.
pub async fn serve_with(
    data_dir: &Path,
    opts: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::open_with(data_dir, opts).await?.run(shutdown).await
}

fn log_close(e: &quinn::ConnectionError) {
    match e {
        quinn::ConnectionError::ApplicationClosed(_)
        | quinn::ConnectionError::LocallyClosed
        | quinn::ConnectionError::TimedOut => tracing::debug!(reason = %e, "connection closed"),
        _ => tracing::info!(reason = %e, "connection lost"),
    }
}

/// Bounds shared by every connection.
struct Limits {
    /// Requests in progress on the whole server.
    requests: Arc<Semaphore>,
    /// Connections open per credential fingerprint.
    per_credential: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

/// Counts a connection against its credential's cap until dropped.
struct CredentialSlot {
    counts: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    fingerprint: String,
}

impl CredentialSlot {
    fn take(counts: &Arc<std::sync::Mutex<HashMap<String, usize>>>, fingerprint: &str, max: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(fingerprint.to_owned()).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(CredentialSlot {
            counts: counts.clone(),
            fingerprint: fingerprint.to_owned(),
        })
    }
}

impl Drop for CredentialSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.fingerprint) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.fingerprint);
            }
        }
    }
}

/// The verified identity of a connection's client certificate.
fn peer_identity(conn: &quinn::Connection) -> Result<tls::Identity, TlsError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<cellfs_protocol::tls::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or(TlsError::Identity("no client certificate"))?;
    let first = certs.first().ok_or(TlsError::Identity("no client certificate"))?;
    tls::identify(first)
}

async fn connection(
    ctx: Arc<Context>,
    client: ClientId,
    incoming: quinn::Incoming,
    limits: Limits,
    done: mpsc::WeakSender<()>,
) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, "handshake failed");
            return;
        }
    };
    // Shutdown waits for connections, not for handshakes: one a client
    // gave up on lasts until its idle timeout. Nothing is served once the
    // server stops waiting (the last strong sender is gone).
    let Some(done) = done.upgrade() else {
        conn.close(quinn::VarInt::from_u32(0), b"server shutdown");
        return;
    };
    let identity = match peer_identity(&conn) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "refusing a connection");
            conn.close(
                quinn::VarInt::from_u32(crate::security::REVOKED_CODE),
                b"no usable identity",
            );
            return;
        }
    };
    let Some(_slot) = CredentialSlot::take(
        &limits.per_credential,
        &identity.fingerprint,
        ctx.config.max_connections_per_credential.max(1),
    ) else {
        tracing::warn!(name = %identity.name, "too many connections with one credential; refusing");
        conn.close(
            quinn::VarInt::from_u32(CODE_BUSY),
            b"too many connections with this credential",
        );
        return;
    };
    if let Err(e) = ctx.security.admit(client, &identity, &conn) {
        tracing::warn!(name = %identity.name, "refusing a revoked credential");
        conn.close(
            quinn::VarInt::from_u32(crate::security::REVOKED_CODE),
            e.to_string().as_bytes(),
        );
        return;
    }
    tracing::debug!(name = %identity.name, role = %identity.role, "connected");
    ctx.callbacks.add_client(client, conn.clone());
    let identity = Arc::new(identity);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                // Waiting here holds further streams of this connection in
                // QUIC flow control while the whole server is busy.
                let Ok(permit) = limits.requests.clone().acquire_owned().await else {
                    break;
                };
                let span = tracing::debug_span!("rpc", stream = %send.id(), op = tracing::field::Empty);
                let ctx = ctx.clone();
                let done = done.clone();
                let identity = identity.clone();
                tokio::spawn(
                    async move {
                        stream(&ctx, client, &identity, send, recv).await;
                        drop(permit);
                        drop(done);
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                log_close(&e);
                break;
            }
        }
    }
    ctx.security.leave(client);
    ctx.callbacks.remove_client(client);
    ctx.file_locks.drop_client(client);
}

async fn stream(
    ctx: &Context,
    client: ClientId,
    identity: &Arc<tls::Identity>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let call = transport::read_call(&mut recv, MAX_FRAME)
        .await
        .map_err(|e| e.to_string());
    let call = call.and_then(|c| match &c.caller {
        Some(caller) if caller.gids.len() > MAX_CALLER_GIDS => Err(format!(
            "a caller with {} gids; at most {MAX_CALLER_GIDS}",
            caller.gids.len()
        )),
        _ => Ok(c),
    });
    let call = match call {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "bad request frame");
            let reply = Err(RpcError::new(ErrorCode::BadRequest, format!("bad request: {e}")));
            if transport::write_reply(&mut send, &reply).await.is_ok() {
                let _ = send.finish();
            } else {
                let _ = send.reset(quinn::VarInt::from_u32(CODE_BAD_REQUEST));
            }
            let _ = recv.stop(quinn::VarInt::from_u32(CODE_BAD_REQUEST));
            return;
        }
    };
    let req = call.request;
    let op = req.op_name();
    tracing::Span::current().record("op", op);
    let who = Who {
        identity: identity.clone(),
        caller: call.caller,
    };
    let started = std::time::Instant::now();
    let handled = ctx.handle(client, &who, req, &mut recv).await;
    let outcome = match &handled.outcome {
        Outcome::Reply(Err(_)) => "error",
        _ => "ok",
    };
    metrics::histogram!("cellfs_fileserver_rpc_seconds", "op" => op, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    let sent = match handled.outcome {
        Outcome::Reply(reply) => write_reply(&mut send, &reply).await,
        Outcome::Data { reply, len, file } => send_data(&mut send, reply, len, file).await,
    };
    if handled.unread > 0 {
        drain(&mut recv, handled.unread).await;
    }
    match sent {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => {
            tracing::debug!(error = %e, "reply not delivered");
            let _ = send.reset(quinn::VarInt::from_u32(CODE_DATA_FAILED));
        }
    }
}

async fn write_reply(send: &mut quinn::SendStream, reply: &Result<Reply, RpcError>) -> std::io::Result<()> {
    match transport::write_reply(send, reply).await {
        Ok(()) => Ok(()),
        Err(CodecError::TooLarge { len, max }) => {
            let err = Err(RpcError::new(
                ErrorCode::TooLarge,
                format!("reply of {len} bytes exceeds the frame limit of {max}"),
            ));
            transport::write_reply(send, &err).await.map_err(std::io::Error::other)
        }
        Err(e) => Err(std::io::Error::other(e)),
    }
}

/// Sends `reply` followed by the first `size` bytes of `file`, in chunks
/// read on a blocking thread one ahead of the one being sent, each handed
/// to the stream without a copy.
async fn send_data(send: &mut quinn::SendStream, reply: Reply, size: u64, file: Option<File>) -> std::io::Result<()> {
    transport::write_reply(send, &Ok(reply))
        .await
        .map_err(std::io::Error::other)?;
    let Some(file) = file else {
        return if size == 0 {
            Ok(())
        } else {
            Err(std::io::Error::other("data file missing"))
        };
    };
    // Chunks are read one after another from the file's position (files
    // come freshly opened; starting it at 0 is a guard).
    (&file).rewind()?;
    let mut at = 0;
    let mut next = (size > 0).then(|| read_chunk(file, size));
    while let Some(reading) = next.take() {
        let (file, chunk) = reading.await.map_err(std::io::Error::other)??;
        if chunk.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "data file shorter than its recorded size",
            ));
        }
        at += chunk.len() as u64;
        if at < size {
            next = Some(read_chunk(file, size - at));
        }
        send.write_chunk(transport::Bytes::from(chunk)).await?;
    }
    Ok(())
}

/// Reads the next chunk of `file` (at most `left` bytes) from where it
/// stands, on a blocking thread, into memory that is not zeroed first.
fn read_chunk(file: File, left: u64) -> tokio::task::JoinHandle<std::io::Result<(File, Vec<u8>)>> {
    let want = usize::try_from(left).unwrap_or(usize::MAX).min(crate::volume::CHUNK);
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(want);
        (&file).take(want as u64).read_to_end(&mut chunk)?;
        Ok((file, chunk))
    })
}

/// Reads and discards up to `unread` bytes so a refused `StoreData` client can
/// finish sending and read its error; stops the stream when that is too much.
async fn drain(recv: &mut quinn::RecvStream, unread: u64) {
    if unread > DRAIN_LIMIT {
        let _ = recv.stop(quinn::VarInt::from_u32(CODE_BAD_REQUEST));
        return;
    }
    let mut sink = tokio::io::sink();
    let drained = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::copy(&mut (&mut *recv).take(unread), &mut sink),
    )
    .await;
    if !matches!(drained, Ok(Ok(_))) {
        let _ = recv.stop(quinn::VarInt::from_u32(CODE_BAD_REQUEST));
    }
}
