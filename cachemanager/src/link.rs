//! The cache manager's link to its fileserver: one QUIC connection, made
//! again after it is lost, every request bounded in time, and a "down" state
//! in which nothing waits on the network at all.
//!
//! Callback breaks from the server are handed to the core through a channel.

use cellfs_protocol::message::ServerMessage;
use cellfs_protocol::pieces::FilePieces;
use cellfs_protocol::transport::{
    Bytes, CallError, ChunkSink, ConnectError, Connector, RpcClient, SEND_PIECE, ServerMessageAck,
};
use cellfs_protocol::{Fid, Reply, Request, Status, writeback};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// Default bound on one request (and on connecting).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound on the quick ping that tells a slow server from a gone one.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// How many request-timeout slices a request answered by a live server may take.
const MAX_SLOW_WAITS: u32 = 10;

/// Slowest data rate a transfer may have before it counts as a dead server.
const MIN_TRANSFER_RATE: u64 = 1 << 20;

/// When a connection last received a datagram, as seen by polling it.
struct Heard {
    datagrams: u64,
    at: Instant,
}

impl Heard {
    fn new(client: &RpcClient) -> Heard {
        Heard {
            datagrams: client.datagrams_received(),
            at: Instant::now(),
        }
    }

    /// Whether `client` received a datagram within the last `window`.
    fn within(&mut self, client: &RpcClient, window: Duration) -> bool {
        let now = client.datagrams_received();
        if now != self.datagrams {
            self.datagrams = now;
            self.at = Instant::now();
        }
        self.at.elapsed() < window
    }
}

/// Something the server told us, or a change of connection.
pub enum LinkEvent {
    /// A callback message to act on, then acknowledge.
    Message(ServerMessage, ServerMessageAck),
    /// A new connection replaced a lost one: promises from before are void.
    Reconnected,
    /// The connection ended or the server stopped answering; the core should
    /// probe in the background until it answers again.
    Lost,
}

/// Parameters the server announced in `Hello`.
#[derive(Debug, Clone)]
pub struct CellInfo {
    /// Cell name.
    pub cell: String,
    /// Root volume name.
    pub root_volume: String,
    /// Promise lifetime in seconds.
    pub promise_secs: u64,
    /// The address the cell knows the server by.
    pub address: String,
}

/// Whether the server is reachable, as the link last saw it.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// Since when the server is considered down, if it is.
    down_since: Option<(Instant, SystemTime)>,
    /// When the last connection was lost (promises held then were current).
    lost_at: Option<Instant>,
    /// The last probe's handshake failed on certificates.
    refused: bool,
}

/// A connection to one fileserver.
pub struct ServerLink {
    connector: Connector,
    current: tokio::sync::Mutex<Option<RpcClient>>,
    epoch: Arc<AtomicU64>,
    /// The link to the cell's first server: its first connection voids
    /// promises from a saved index.
    primary: bool,
    events: mpsc::UnboundedSender<LinkEvent>,
    info: Mutex<Option<CellInfo>>,
    health: Mutex<Health>,
    timeout: Duration,
}

impl ServerLink {
    /// A link that is not connected yet; events go to `events`; every request
    /// and connection attempt is bounded by `timeout`. `epoch` is shared by
    /// every link of the mount (see [`ServerLink::epoch`]).
    pub fn new(
        connector: Connector,
        events: mpsc::UnboundedSender<LinkEvent>,
        timeout: Duration,
        epoch: Arc<AtomicU64>,
        primary: bool,
    ) -> Self {
        ServerLink {
            connector,
            current: tokio::sync::Mutex::new(None),
            epoch,
            primary,
            events,
            info: Mutex::new(None),
            health: Mutex::new(Health {
                down_since: None,
                lost_at: None,
                refused: false,
            }),
            timeout,
        }
    }

    /// Connection generation, shared by every link of a mount: bumped each
    /// time a connection replaces a lost one (or the first server's first
    /// connection is made). Promises granted under an older epoch are void.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// What the server said in `Hello` on the current connection.
    pub fn info(&self) -> Option<CellInfo> {
        self.info.lock().ok().and_then(|i| i.clone())
    }

    /// The promise lifetime the server announced, once connected.
    pub fn promise_secs(&self) -> Option<u64> {
        self.info.lock().ok()?.as_ref().map(|i| i.promise_secs)
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fileserver's address.
    pub fn server(&self) -> std::net::SocketAddr {
        self.connector.addr()
    }

    /// True while the server is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.health().down_since.is_some()
    }

    /// Since when the server is down (wall clock), if it is.
    pub fn down_since(&self) -> Option<SystemTime> {
        self.health().down_since.map(|(_, t)| t)
    }

    /// When the previous connection was lost, if one was.
    pub fn lost_at(&self) -> Option<Instant> {
        self.health().lost_at
    }

    /// Marks the server down: from now on requests fail at once until a
    /// probe reconnects.
    fn mark_down(&self, why: &str) {
        let newly = {
            let mut h = self.health();
            let newly = h.down_since.is_none();
            if newly {
                h.down_since = Some((Instant::now(), SystemTime::now()));
                h.lost_at.get_or_insert_with(Instant::now);
            }
            newly
        };
        if newly {
            tracing::warn!(server = %self.connector.addr(), why, "fileserver unreachable: the cell is disconnected; serving cached data read-only");
            let _ = self.events.send(LinkEvent::Lost);
        }
    }

    /// The live client. Fails at once while the server is down; otherwise
    /// connects (bounded) if the connection is gone.
    pub async fn client(&self) -> Result<RpcClient, LinkError> {
        if self.is_down() {
            return Err(LinkError::Down);
        }
        match tokio::time::timeout(self.timeout, self.connect_if_needed()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => {
                self.mark_down(&e.to_string());
                Err(e)
            }
            Err(_) => {
                self.mark_down("connect timed out");
                Err(LinkError::Down)
            }
        }
    }

    /// Tries to reach the server once, even while it is marked down; on
    /// success the link is up again. Returns whether it is up.
    pub async fn probe(&self) -> bool {
        let probe = async {
            let c = self.connect_if_needed().await?;
            c.call(&Request::Ping).await?;
            Ok::<_, LinkError>(())
        };
        let outcome = tokio::time::timeout(self.timeout, probe).await;
        let up = matches!(outcome, Ok(Ok(())));
        let refused = match &outcome {
            Ok(Err(LinkError::Connect(e))) if e.is_refused() => Some(e.to_string()),
            _ => None,
        };
        let newly_refused = {
            let mut h = self.health();
            let newly = refused.is_some() && !h.refused;
            h.refused = refused.is_some();
            newly
        };
        if let Some(error) = refused.filter(|_| newly_refused) {
            tracing::error!(
                server = %self.connector.addr(),
                error,
                "the fileserver and this node do not trust each other's certificates: the cell was initialised again, or this node's credential was revoked or is another cell's. The node serves its cache and tries again every {}s; give it a credential of this cell (cellfs-vos host add) and restart it",
                crate::core::REFUSED_PROBE_INTERVAL.as_secs()
            );
        }
        if !up {
            self.mark_down("the connection was lost and the server does not answer");
        }
        up
    }

    /// Whether the last probe's handshake failed on certificates.
    pub fn is_refused(&self) -> bool {
        self.health().refused
    }

    async fn connect_if_needed(&self) -> Result<RpcClient, LinkError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            if c.connection().close_reason().is_none() {
                return Ok(c.clone());
            }
            tracing::info!(reason = ?c.connection().close_reason(), "connection to fileserver lost; reconnecting");
            self.health().lost_at.get_or_insert_with(Instant::now);
        }
        let client = self.connector.connect().await?;
        let hello = client.call(&Request::Hello).await?;
        let Reply::Hello {
            cell,
            root_volume,
            promise_secs,
            address,
            ..
        } = hello
        else {
            return Err(LinkError::Call(CallError::Unexpected("hello")));
        };
        if let Ok(mut info) = self.info.lock() {
            *info = Some(CellInfo {
                cell,
                root_volume,
                promise_secs,
                address,
            });
        }
        let first = current.is_none();
        // Up again before anyone hears of the new connection, so that the
        // revalidation it triggers can use it.
        let was_down = self.health().down_since.take();
        if !first || self.primary || was_down.is_some() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        if let Some((since, _)) = was_down {
            tracing::info!(server = %self.connector.addr(), down_for = ?since.elapsed(), "fileserver reachable again");
        }
        self.spawn_listener(client.clone());
        if !first || was_down.is_some() {
            // Promises from before (or from the saved index) need revalidating.
            let _ = self.events.send(LinkEvent::Reconnected);
        }
        tracing::info!(server = %self.connector.addr(), "connected to fileserver");
        *current = Some(client.clone());
        Ok(client)
    }

    /// Called by the core once a reconnection has been fully revalidated.
    pub fn revalidated(&self) {
        self.health().lost_at = None;
    }

    fn spawn_listener(&self, client: RpcClient) {
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match client.accept_server_message().await {
                    Ok((msg, ack)) => {
                        if events.send(LinkEvent::Message(msg, ack)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "callback listener ends");
                        let _ = events.send(LinkEvent::Lost);
                        return;
                    }
                }
            }
        });
    }

    /// Runs `op` on the live connection. When the connection turns out to be
    /// dead it is retried once on a new one, if `req` changes nothing or the
    /// server reset the connection (a restarted server never saw the request).
    async fn with_retry<T, F, Fut>(&self, req: &Request, limit: Duration, op: F) -> Result<T, LinkError>
    where
        F: Fn(RpcClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        // Read before the first await: this runs on the thread serving the
        // kernel request, which entered its caller.
        let caller = crate::caller::current();
        let client = self.client().await?.acting_for(caller.clone());
        match self.bounded(req, limit, &client, op(client.clone())).await? {
            Err(e) if e.is_transport() && (is_idempotent(req) || client.was_reset()) => {
                tracing::debug!(error = %e, op = req.op_name(), "retrying on a new connection");
                let client = self.client().await?.acting_for(caller);
                Ok(self.bounded(req, limit, &client, op(client.clone())).await??)
            }
            other => Ok(other?),
        }
    }

    /// Waits for `fut` in slices of `limit`. When a slice passes without an
    /// answer, a quick ping tells a slow server (a change waiting for another
    /// client's break acknowledgement, a big directory) from a gone one: only
    /// a server that does not answer the ping either, or that keeps a request
    /// past [`MAX_SLOW_WAITS`] slices, is marked down.
    ///
    /// A transfer (`limit` longer than the request timeout) is watched more
    /// closely: it goes on while the connection hears from the server within
    /// each request timeout, and a silence that long is checked with the ping
    /// at once. A server that dies mid-fetch so fails its readers within
    /// about the request timeout, not after the connection's idle timeout.
    async fn bounded<T>(
        &self,
        req: &Request,
        limit: Duration,
        client: &RpcClient,
        fut: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<Result<T, CallError>, LinkError> {
        tokio::pin!(fut);
        let transfer = limit > self.timeout;
        let slice = if transfer { self.timeout / 4 } else { limit };
        let started = Instant::now();
        let mut heard = Heard::new(client);
        let mut slow = 0;
        loop {
            if let Ok(r) = tokio::time::timeout(slice, &mut fut).await {
                return Ok(r);
            }
            if transfer && heard.within(client, self.timeout) && started.elapsed() < limit * MAX_SLOW_WAITS {
                continue;
            }
            let ping = tokio::time::timeout(PING_TIMEOUT, client.call(&Request::Ping)).await;
            slow += 1;
            if !matches!(ping, Ok(Ok(_))) || slow >= MAX_SLOW_WAITS {
                break;
            }
            tracing::debug!(
                op = req.op_name(),
                "request slow but the server answers pings; waiting on"
            );
        }
        self.mark_down(&format!(
            "{} not answered in {limit:?} and the server does not answer pings",
            req.op_name()
        ));
        client.close();
        Err(LinkError::Down)
    }

    /// Sends `req` and returns the reply.
    pub async fn call(&self, req: &Request) -> Result<Reply, LinkError> {
        self.with_retry(req, self.timeout, |c| async move { c.call(req).await })
            .await
    }

    /// Fetches the whole content of `fid` (about `size` bytes) into a new file at `path`.
    ///
    /// The copy is written on the thread that polls this future (the cache
    /// manager drives fetches with `block_on` from its FUSE and fetch
    /// threads, never from a runtime task): each piece goes straight from
    /// the stream's buffer into the file, while the connection goes on
    /// receiving on the runtime's threads.
    pub async fn fetch_to(&self, fid: Fid, size: u64, path: &Path, arrived: Arrived<'_>) -> Result<Status, LinkError> {
        self.with_retry(&Request::FetchData { fid }, self.transfer_limit(size), |c| async move {
            let mut copy = Copy {
                file: std::fs::File::create(path)?,
                written: 0,
                drop_behind: size >= writeback::DROP_BEHIND_FROM,
                arrived,
            };
            if let Some(arrived) = arrived {
                arrived.restart();
            }
            c.fetch_data_into(fid, &mut copy).await
        })
        .await
    }

    /// Sends a `StoreData` whose bytes start at `start` in the file at `path`.
    pub async fn store_from(&self, req: &Request, path: &Path, start: u64) -> Result<Status, LinkError> {
        let len = match req {
            Request::StoreData { len, .. } => *len,
            _ => 0,
        };
        self.with_retry(req, self.transfer_limit(len), |c| async move {
            let file = std::fs::File::open(path)?;
            let mut pieces = FilePieces::new(file, start, len, SEND_PIECE);
            c.store_data(req, &mut pieces).await
        })
        .await
    }

    /// Time allowed for moving `bytes`: the request bound plus the bytes at
    /// the slowest rate we accept.
    fn transfer_limit(&self, bytes: u64) -> Duration {
        self.timeout + Duration::from_secs(bytes / MIN_TRANSFER_RATE)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some(c) = self.current.lock().await.take() {
            c.close();
        }
    }
}

/// Told of a fetched copy's bytes as they arrive and are written.
pub type Arrived<'a> = Option<&'a crate::arrival::Arrival>;

/// A copy being fetched, written a piece at a time on the polling thread
/// (straight from the stream's buffers), each piece handed to readers
/// before it is written and reported written after. A large file's copy
/// is dropped from the page cache as it is written ([`writeback`]): its
/// readers meanwhile take the newest bytes from the arrival's window.
struct Copy<'a> {
    file: std::fs::File,
    written: u64,
    drop_behind: bool,
    arrived: Arrived<'a>,
}

impl ChunkSink for Copy<'_> {
    async fn put(&mut self, piece: &[Bytes]) -> std::io::Result<()> {
        if let Some(arrived) = self.arrived {
            arrived.received(piece);
        }
        let n = cellfs_protocol::pieces::write_pieces(&mut self.file, piece)?;
        // Smaller copies are left to the kernel's writeback: a cached copy
        // needs no early write, and many are replaced or evicted first.
        if self.drop_behind {
            writeback::wrote(&self.file, self.written, n as usize, true)?;
        }
        self.written += n;
        if let Some(arrived) = self.arrived {
            arrived.written(self.written);
        }
        Ok(())
    }
}

/// Requests that may be sent twice without changing the outcome.
pub fn is_idempotent(req: &Request) -> bool {
    matches!(
        req,
        Request::Ping
            | Request::Hello
            | Request::Stats
            | Request::GetRoot { .. }
            | Request::FetchStatus { .. }
            | Request::BulkStatus { .. }
            | Request::Lookup { .. }
            | Request::ReadDir { .. }
            | Request::FetchData { .. }
            | Request::StoreData { .. }
            | Request::ReadLink { .. }
            | Request::GetVolumeStatus { .. }
            | Request::ListVolumes
            | Request::ExamineVolume { .. }
            | Request::Reconnect { .. }
            | Request::FetchFiles { .. }
            | Request::GetRights { .. }
            | Request::GetAcl { .. }
    )
}

/// Errors reaching the server or from its answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The fileserver is unreachable (known down, or it just stopped answering).
    #[error("the fileserver is unreachable (cell disconnected)")]
    Down,
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The errno of reads that need the server while it is unreachable.
pub const DISCONNECTED_ERRNO: i32 = libc::EHOSTDOWN;

impl LinkError {
    /// The errno an application should see for a read.
    pub fn errno(&self) -> i32 {
        match self {
            LinkError::Down | LinkError::Connect(_) => DISCONNECTED_ERRNO,
            LinkError::Call(e) => e.errno(),
        }
    }

    /// True when the server answered that the volume is no longer there.
    pub fn is_moved(&self) -> bool {
        self.code() == Some(cellfs_protocol::ErrorCode::Moved)
    }

    /// True when a restarted server refused a change for the moment
    /// (`fileserver/src/grace.rs`): it is taken if repeated shortly.
    pub fn is_grace(&self) -> bool {
        self.code() == Some(cellfs_protocol::ErrorCode::Grace)
    }

    /// True when a store made on condition found its file changed.
    pub fn is_changed(&self) -> bool {
        self.code() == Some(cellfs_protocol::ErrorCode::Changed)
    }

    /// The server's error code, when it answered with an error.
    pub fn code(&self) -> Option<cellfs_protocol::ErrorCode> {
        match self {
            LinkError::Call(CallError::Rpc(e)) => Some(e.code),
            _ => None,
        }
    }

    /// True when the server could not be reached (as opposed to answering
    /// with an error).
    pub fn is_unreachable(&self) -> bool {
        match self {
            LinkError::Down | LinkError::Connect(_) => true,
            LinkError::Call(e) => e.is_transport(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellfs_protocol::pieces::IOV_MAX;
    use proptest::prelude::*;

    /// The test content's byte at `offset` (not periodic in 256, so a part
    /// written at the wrong place shows).
    fn byte_at(offset: usize) -> u8 {
        (offset ^ (offset >> 8) ^ (offset >> 16)) as u8
    }

    /// Writes `pieces` (each a list of part lengths) through a [`Copy`] and
    /// returns the file's bytes, the bytes expected and the last report.
    fn copy_through(pieces: &[Vec<usize>]) -> (Vec<u8>, Vec<u8>, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy");
        let arrival = crate::arrival::Arrival::default();
        let mut copy = Copy {
            file: std::fs::File::create(&path).unwrap(),
            written: 0,
            drop_behind: false,
            arrived: Some(&arrival),
        };
        let mut expected = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for lens in pieces {
            let parts: Vec<Bytes> = lens
                .iter()
                .map(|&len| {
                    let part: Vec<u8> = (expected.len()..expected.len() + len).map(byte_at).collect();
                    expected.extend_from_slice(&part);
                    Bytes::from(part)
                })
                .collect();
            rt.block_on(copy.put(&parts)).unwrap();
            assert_eq!(arrival.snapshot().0, expected.len() as u64, "reported after each piece");
        }
        drop(copy);
        (std::fs::read(&path).unwrap(), expected, arrival.snapshot().0)
    }

    #[test]
    fn a_piece_of_more_parts_than_one_writev_takes_is_written_whole() {
        // 1,200-byte frames make about 870 parts a MiB; tiny ones far more.
        let (got, expected, reported) = copy_through(&[vec![7; 3 * IOV_MAX + 5], vec![1200; 900]]);
        assert_eq!(got, expected);
        assert_eq!(reported, expected.len() as u64);
    }

    proptest! {
        #[test]
        fn copies_hold_every_piece_in_order(pieces in prop::collection::vec(prop::collection::vec(0usize..3000, 0..40), 0..8)) {
            let (got, expected, _) = copy_through(&pieces);
            prop_assert_eq!(got, expected);
        }
    }
}
