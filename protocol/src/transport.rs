//! QUIC transport shared by every cellfs program: endpoints, connecting to a
//! cell, and one RPC per bidirectional stream.

use crate::acl::Caller;
use crate::codec::{self, CodecError, MAX_FRAME};
use crate::config::CellConfig;
use crate::message::{Call, ClientAck, Reply, Request, ServerMessage};
use crate::pieces::PieceSource;
use crate::tls::{self, Credential, TlsError};
use crate::types::{Fid, Status};
use crate::{ErrorCode, RpcError};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The shared, cheaply cloned buffers [`ChunkSink`] pieces are made of.
pub use bytes::Bytes;

/// How often an idle connection sends a keep-alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How long a silent peer is given before its connection is declared dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(6);

/// Errors of one RPC, keeping the server's answer apart from transport failures.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error.
    #[error("server: {0}")]
    Rpc(#[from] RpcError),
    /// The connection is gone or could not be made.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// A frame could not be moved or understood.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// Data bytes could not be moved.
    #[error("data transfer: {0}")]
    Io(#[from] std::io::Error),
    /// The server answered with a reply that does not fit the request.
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
}

impl CallError {
    /// The errno a caller should see.
    pub fn errno(&self) -> i32 {
        match self {
            CallError::Rpc(e) => e.code.errno(),
            // A local failure (the cache disk full: ENOSPC) keeps its errno;
            // stream errors carry none and are EIO.
            CallError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }

    /// The server's error code, if the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Rpc(e) => Some(e.code),
            _ => None,
        }
    }

    /// True when the failure is the connection's, not the request's.
    pub fn is_transport(&self) -> bool {
        !matches!(self, CallError::Rpc(_) | CallError::Unexpected(_))
    }
}

/// Errors setting up a connection to a cell.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Credential or CA files could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// TLS material is invalid.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server address does not resolve.
    #[error("cannot resolve server address {0}")]
    Resolve(String),
    /// The local UDP socket could not be opened.
    #[error("cannot open UDP socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The QUIC handshake could not start.
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed (unreachable, wrong certificate, refused credential).
    #[error("connection to {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: quinn::ConnectionError,
    },
}

impl ConnectError {
    /// Whether the server answered but the TLS handshake failed: its
    /// certificate is not signed by this side's CA (another cell, or one
    /// initialised again), or it refused this side's credential (revoked,
    /// or from another CA). Repeating it soon changes nothing.
    pub fn is_refused(&self) -> bool {
        let ConnectError::Handshake { source, .. } = self else {
            return false;
        };
        let code = match source {
            quinn::ConnectionError::TransportError(e) => e.code,
            quinn::ConnectionError::ConnectionClosed(c) => c.error_code,
            _ => return false,
        };
        is_crypto_error(u64::from(code))
    }
}

/// QUIC's transport error codes 0x100–0x1ff carry a TLS alert (RFC 9001 §4.8).
fn is_crypto_error(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

/// Bytes moved per write when a fetched file is written out.
const COPY_CHUNK: usize = 1 << 20;
/// Bytes of a fetched file's first piece, handed to the sink on its own: a
/// reader of the start of a streaming file waits for this, not for a whole
/// chunk.
const FIRST_PIECE: usize = 64 << 10;

/// Largest UDP payload an endpoint sends or accepts (the endpoint's
/// `max_udp_payload_size`, which also caps MTU discovery at both ends: left
/// at quinn's 1472 bytes, discovery never went past it even on loopback).
/// quinn sends up to 10 datagrams in one segmentation-offload (GSO) batch,
/// and the kernel refuses a batch over 64 KiB with `EMSGSIZE`, which quinn
/// drops silently: larger datagrams were lost, taken for a black hole, and
/// the path fell back to 1200 bytes. 6500 bytes keeps every batch under
/// 64 KiB. On loopback one stream fetches 630–950 MB/s instead of about
/// 300 (`benches/rpc.rs`); on a 1500-byte LAN discovery stops at 1472.
const MAX_DATAGRAM: u16 = 6500;

/// Bytes of a request's trailing data read and sent at a time (below the
/// cache manager's mmap threshold, so the buffers come from its heaps).
pub const SEND_PIECE: usize = 512 << 10;

/// Flow-control window of one stream (bytes in flight on one file
/// transfer): ample for a fast LAN's bandwidth-delay product, and kept
/// under what quinn buffers unread in fragments (2,048 received frames)
/// before it copies them all into one fresh buffer: with a 16 MiB window a
/// reader falling behind made it copy about 13 MB at a time, dozens of
/// times a GiB (a cold 1 GiB fetch through a node: 3.4–3.7 s, and 2.0–2.7 s
/// with 8 MiB).
const STREAM_WINDOW: u32 = 8 << 20;

fn transport_config(max_streams: u32) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(6000))),
    ));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(max_streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Search for datagrams up to MAX_DATAGRAM: loopback and jumbo-frame
    // networks carry more than 1472 bytes a packet, and a probe that is lost
    // only ends the search (RFC 8899).
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_DATAGRAM);
    t.mtu_discovery_config(Some(mtu));
    // Whole-file transfers: enough window for a fast LAN's bandwidth-delay product.
    t.stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW));
    t.send_window(u64::from(STREAM_WINDOW) * 8);
    Arc::new(t)
}

/// Streams a client lets a server open at once (callback breaks).
const CLIENT_MAX_STREAMS: u32 = 256;

/// A server endpoint on `addr` with the fileserver's TLS config, letting
/// each client have at most `max_streams` requests in progress.
///
/// `reset_secret` must be stable across restarts of the same server (it is
/// derived from its private key): the stateless-reset key comes from it, so a
/// restarted server can tell clients of the old process at once that their
/// connection is gone, instead of leaving them to an idle timeout.
pub fn server_endpoint(
    addr: SocketAddr,
    crypto: quinn::crypto::rustls::QuicServerConfig,
    reset_secret: &[u8],
    max_streams: u32,
) -> std::io::Result<quinn::Endpoint> {
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport_config(max_streams.max(1)));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"cellfs stateless reset key\0");
    ctx.update(reset_secret);
    let digest = ctx.finish();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest.as_ref());
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(key));
    // Connection ids are validated with a keyed hash; with a per-process key
    // a restarted server would drop old clients' packets silently.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&digest.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint_config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
    endpoint(addr, endpoint_config, Some(cfg))
}

/// A QUIC endpoint on a new UDP socket bound to `addr` ([`udp_socket`]).
fn endpoint(
    addr: SocketAddr,
    mut config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    config
        .max_udp_payload_size(MAX_DATAGRAM)
        .map_err(std::io::Error::other)?;
    let socket = udp_socket(addr)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| std::io::Error::other("no async runtime for the QUIC endpoint"))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}

/// Kernel buffer asked for on each QUIC socket, each way.
const UDP_BUFFER: usize = 8 << 20;

/// A UDP socket bound to `addr` with large kernel buffers. The default
/// 208 KiB receive buffer overflowed hundreds of times a second during a
/// whole-file transfer on loopback, and every drop cost a loss recovery
/// (fetching 256 MiB: 228 MB/s with drops, 286 MB/s without). The kernel
/// caps the size at `net.core.rmem_max` / `wmem_max`; a smaller buffer is
/// only slower, so failures are ignored.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(UDP_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(UDP_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Resolves `addr` (`host:port`) to one socket address.
pub fn resolve(addr: &str) -> Result<SocketAddr, ConnectError> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ConnectError::Resolve(addr.to_owned()))
}

/// Whether two server addresses name the same server (compared as socket
/// addresses when both are, as written otherwise).
pub fn same_server(a: &str, b: &str) -> bool {
    match (a.parse::<SocketAddr>(), b.parse::<SocketAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Everything needed to (re)connect to one fileserver.
#[derive(Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    addr: SocketAddr,
}

impl Connector {
    /// Builds a connector from PEM material; `credential` is the client certificate.
    pub fn new(addr: SocketAddr, ca_pem: &str, credential: Option<&Credential>) -> Result<Self, ConnectError> {
        let crypto = tls::client_crypto(ca_pem, credential)?;
        let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
        client_config.transport_config(transport_config(CLIENT_MAX_STREAMS));
        let bind: SocketAddr = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .expect("literal address");
        let endpoint = endpoint(bind, quinn::EndpointConfig::default(), None).map_err(ConnectError::Socket)?;
        Ok(Connector {
            endpoint,
            client_config,
            addr,
        })
    }

    /// Builds a connector for the first server of a cell config.
    pub fn from_config(cfg: &CellConfig) -> Result<Self, ConnectError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|source| ConnectError::Read {
                path: p.to_owned(),
                source,
            })
        };
        let ca = read(&cfg.ca)?;
        let credential = match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => Some(Credential {
                cert_pem: read(c)?,
                key_pem: read(k)?,
            }),
            _ => None,
        };
        let addr = resolve(cfg.servers.first().map(String::as_str).unwrap_or_default())?;
        Self::new(addr, &ca, credential.as_ref())
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connector to another server of the same cell, sharing this one's
    /// socket and credentials.
    pub fn to(&self, addr: SocketAddr) -> Connector {
        Connector {
            endpoint: self.endpoint.clone(),
            client_config: self.client_config.clone(),
            addr,
        }
    }

    /// Waits (at most `limit`) until every connection of this connector has
    /// finished closing, so the server learns of a close before the process
    /// exits instead of after its idle timeout.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }

    /// Opens a new connection and returns an RPC client on it.
    pub async fn connect(&self) -> Result<RpcClient, ConnectError> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), self.addr, tls::SERVER_NAME)?;
        let conn = connecting.await.map_err(|source| ConnectError::Handshake {
            addr: self.addr,
            source,
        })?;
        Ok(RpcClient { conn, caller: None })
    }
}

/// RPCs over one QUIC connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RpcClient {
    conn: quinn::Connection,
    caller: Option<Arc<Caller>>,
}

impl RpcClient {
    /// The underlying connection (for accepting server-opened streams).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Datagrams received on this connection so far: any of them (data, an
    /// acknowledgement, a keep-alive's answer) shows the server is alive.
    pub fn datagrams_received(&self) -> u64 {
        self.conn.stats().udp_rx.datagrams
    }

    /// The same connection making its requests for `caller` (a process on
    /// a web node), or anonymously when `None`.
    pub fn acting_for(&self, caller: Option<Arc<Caller>>) -> RpcClient {
        RpcClient {
            conn: self.conn.clone(),
            caller,
        }
    }

    /// Opens a stream and writes the call frame for `req`.
    async fn open_call(&self, req: &Request) -> Result<(quinn::SendStream, quinn::RecvStream), CallError> {
        let (mut send, recv) = self.conn.open_bi().await?;
        write_call(&mut send, self.caller.as_deref(), req).await?;
        Ok((send, recv))
    }

    /// Sends a request with no data and returns its reply.
    pub async fn call(&self, req: &Request) -> Result<Reply, CallError> {
        let (mut send, mut recv) = self.open_call(req).await?;
        let _ = send.finish();
        read_reply(&mut recv).await
    }

    /// `FetchData`: streams the file's bytes into `sink` and returns its status.
    pub async fn fetch_data<W: AsyncWrite + Unpin + Send>(&self, fid: Fid, sink: &mut W) -> Result<Status, CallError> {
        self.fetch_data_into(fid, &mut Writes(sink)).await
    }

    /// `FetchData`: hands the file's bytes to `sink` a piece at a time and
    /// returns its status.
    pub async fn fetch_data_into<S: ChunkSink>(&self, fid: Fid, sink: &mut S) -> Result<Status, CallError> {
        let (mut send, mut recv) = self.open_call(&Request::FetchData { fid }).await?;
        let _ = send.finish();
        let status = match read_reply(&mut recv).await? {
            Reply::Data { status } => status,
            _ => return Err(CallError::Unexpected("fetch_data")),
        };
        copy_exact(&mut recv, status.size, sink, |_, _| ()).await?;
        Ok(status)
    }

    /// `StoreData`: sends `req` (which must be `StoreData { len, .. }`) followed by
    /// exactly `len` bytes taken from `data`, and returns the file's new status.
    pub async fn store_data<S: PieceSource>(&self, req: &Request, data: &mut S) -> Result<Status, CallError> {
        let Request::StoreData { len, .. } = req else {
            return Err(CallError::Unexpected("store_data"));
        };
        match self.call_with_data(req, *len, data).await? {
            Reply::Status(s) => Ok(s),
            _ => Err(CallError::Unexpected("store_data")),
        }
    }

    /// Sends `req` followed by exactly `len` bytes taken from `data` (a
    /// request whose bytes follow its frame: `StoreData`, `RestoreVolume`)
    /// and returns the reply. Pieces go to the stream without a copy.
    pub async fn call_with_data<S: PieceSource>(
        &self,
        req: &Request,
        len: u64,
        data: &mut S,
    ) -> Result<Reply, CallError> {
        let (mut send, mut recv) = self.open_call(req).await?;
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(SEND_PIECE);
            let Some(piece) = data.next_piece(want).await? else {
                return Err(CallError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "short local read",
                )));
            };
            left -= piece.len() as u64;
            match send.write_chunk(piece).await {
                Ok(()) => {}
                // The server answered before it read the bytes (a refusal:
                // quota, grace, rights) and stopped reading: its answer
                // says why.
                Err(quinn::WriteError::Stopped(_)) => return read_reply(&mut recv).await,
                Err(e) => return Err(CallError::Io(e.into())),
            }
        }
        let _ = send.finish();
        read_reply(&mut recv).await
    }

    /// `DumpVolume`: streams the dump's bytes into `sink`, calling `progress`
    /// with (bytes so far, total) after each piece, and returns its length.
    pub async fn dump_volume<W: AsyncWrite + Unpin + Send>(
        &self,
        req: &Request,
        sink: &mut W,
        progress: impl FnMut(u64, u64),
    ) -> Result<u64, CallError> {
        let (mut send, mut recv) = self.open_call(req).await?;
        let _ = send.finish();
        let len = match read_reply(&mut recv).await? {
            Reply::Dump { len } => len,
            _ => return Err(CallError::Unexpected("dump_volume")),
        };
        copy_exact(&mut recv, len, &mut Writes(&mut *sink), progress).await?;
        sink.flush().await?;
        Ok(len)
    }

    /// Waits for the server to open a stream carrying a [`ServerMessage`].
    pub async fn accept_server_message(&self) -> Result<(ServerMessage, ServerMessageAck), CallError> {
        let (send, mut recv) = self.conn.accept_bi().await?;
        let msg = codec::read_frame(&mut recv, MAX_FRAME).await?;
        Ok((msg, ServerMessageAck { send }))
    }

    /// True when the server answered with a stateless reset: it restarted and
    /// holds no state for this connection, so it never saw requests that failed.
    pub fn was_reset(&self) -> bool {
        matches!(self.conn.close_reason(), Some(quinn::ConnectionError::Reset))
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(quinn::VarInt::from_u32(0), b"bye");
    }
}

/// Acknowledges a server message once the client has acted on it.
pub struct ServerMessageAck {
    send: quinn::SendStream,
}

impl ServerMessageAck {
    /// Sends the acknowledgement.
    pub async fn ack(mut self) -> Result<(), CallError> {
        codec::write_frame(&mut self.send, &ClientAck).await?;
        let _ = self.send.finish();
        Ok(())
    }
}

/// Takes the bytes that follow a reply, a piece at a time as they arrive.
pub trait ChunkSink {
    /// Takes the next piece, as the stream's received chunks in order; the
    /// transfer goes on once this returns.
    fn put(&mut self, piece: &[Bytes]) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

/// An async writer as a [`ChunkSink`].
struct Writes<'a, W>(&'a mut W);

impl<W: AsyncWrite + Unpin + Send> ChunkSink for Writes<'_, W> {
    async fn put(&mut self, piece: &[Bytes]) -> std::io::Result<()> {
        for part in piece {
            self.0.write_all(part).await?;
        }
        Ok(())
    }
}

/// Hands exactly `len` bytes of a reply's trailing data to `sink`, in
/// whole aligned chunks (the page cache then holds a fetched copy in large
/// folios, which read back about twice as fast as small ones), reporting
/// (bytes so far, `len`) after each chunk. A piece is the stream's own
/// received chunks, handed over without a copy (a file sink writes them
/// with one `writev`).
async fn copy_exact<S: ChunkSink>(
    recv: &mut quinn::RecvStream,
    len: u64,
    sink: &mut S,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), CallError> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut done = 0u64;
    while done < len {
        // After the small first piece, writes end on chunk boundaries again
        // (aligned writes give the page cache large folios).
        let piece = match done {
            0 => FIRST_PIECE,
            _ => COPY_CHUNK - (done % COPY_CHUNK as u64) as usize,
        };
        let want = usize::try_from(len - done).unwrap_or(usize::MAX).min(piece);
        parts.clear();
        if !crate::pieces::gather(recv, want, &mut parts).await? {
            return Err(CallError::Codec(CodecError::Truncated));
        }
        sink.put(&parts).await?;
        done += want as u64;
        progress(done, len);
    }
    Ok(())
}

async fn read_reply(recv: &mut quinn::RecvStream) -> Result<Reply, CallError> {
    let reply: Result<Reply, RpcError> = codec::read_frame(recv, MAX_FRAME).await?;
    Ok(reply?)
}

/// Client side: writes the call frame of `req` made for `caller`.
pub async fn write_call<W: AsyncWrite + Unpin>(
    send: &mut W,
    caller: Option<&Caller>,
    req: &Request,
) -> Result<(), CodecError> {
    // Encoded by hand as `Call` would be, to avoid cloning the request.
    #[derive(serde::Serialize)]
    struct CallRef<'a> {
        caller: Option<&'a Caller>,
        request: &'a Request,
    }
    codec::write_frame(send, &CallRef { caller, request: req }).await
}

/// Server side: reads one call frame of at most `max` bytes.
pub async fn read_call<R: AsyncRead + Unpin>(recv: &mut R, max: u32) -> Result<Call, CodecError> {
    codec::read_frame(recv, max).await
}

/// Server side: writes one reply frame.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    send: &mut W,
    reply: &Result<Reply, RpcError>,
) -> Result<(), CodecError> {
    codec::write_frame(send, reply).await
}

/// Server side: sends `msg` to a client on a new stream and waits for its ack.
pub async fn send_server_message(conn: &quinn::Connection, msg: &ServerMessage) -> Result<(), CallError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    codec::write_frame(&mut send, msg).await?;
    let _ = send.finish();
    let _: ClientAck = codec::read_frame(&mut recv, 64).await?;
    Ok(())
}

/// Writes all of `data` then flushes; a helper for raw data after a reply frame.
pub async fn write_data<W: AsyncWrite + Unpin>(send: &mut W, data: &[u8]) -> std::io::Result<()> {
    send.write_all(data).await?;
    send.flush().await
}
