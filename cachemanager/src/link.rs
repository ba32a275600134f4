//! The cache manager's link to its fileserver: one QUIC connection, made
//! again after it is lost, with callback breaks from the server handed to the
//! core through a channel.

use cellfs_protocol::message::ServerMessage;
use cellfs_protocol::transport::{CallError, ConnectError, Connector, RpcClient, ServerMessageAck};
use cellfs_protocol::{Fid, Reply, Request, Status};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Something the server told us, or a change of connection.
pub enum LinkEvent {
    /// A callback message to act on, then acknowledge.
    Message(ServerMessage, ServerMessageAck),
    /// A new connection replaced a lost one: promises from before are void.
    Reconnected,
    /// The connection ended; the core should reconnect in the background so
    /// that it hears about changes again.
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
}

/// A connection to one fileserver that reconnects on demand.
pub struct ServerLink {
    connector: Connector,
    current: tokio::sync::Mutex<Option<RpcClient>>,
    epoch: AtomicU64,
    events: mpsc::UnboundedSender<LinkEvent>,
    info: Mutex<Option<CellInfo>>,
}

impl ServerLink {
    /// A link that is not connected yet; events go to `events`.
    pub fn new(connector: Connector, events: mpsc::UnboundedSender<LinkEvent>) -> Self {
        ServerLink {
            connector,
            current: tokio::sync::Mutex::new(None),
            epoch: AtomicU64::new(0),
            events,
            info: Mutex::new(None),
        }
    }

    /// Connection generation: bumped each time a new connection is made.
    /// Promises granted under an older epoch are void.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// What the server said in `Hello` on the current connection.
    pub fn info(&self) -> Option<CellInfo> {
        self.info.lock().ok().and_then(|i| i.clone())
    }

    /// The live client, connecting (and saying `Hello`) if there is none.
    pub async fn client(&self) -> Result<RpcClient, LinkError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            if c.connection().close_reason().is_none() {
                return Ok(c.clone());
            }
            tracing::warn!(reason = ?c.connection().close_reason(), "connection to fileserver lost; reconnecting");
        }
        let client = self.connector.connect().await?;
        let hello = client.call(&Request::Hello).await?;
        let Reply::Hello {
            cell,
            root_volume,
            promise_secs,
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
            });
        }
        let first = current.is_none();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.spawn_listener(client.clone());
        if !first {
            let _ = self.events.send(LinkEvent::Reconnected);
        }
        tracing::info!(server = %self.connector.addr(), "connected to fileserver");
        *current = Some(client.clone());
        Ok(client)
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
    async fn with_retry<T, F, Fut>(&self, req: &Request, op: F) -> Result<T, LinkError>
    where
        F: Fn(RpcClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let client = self.client().await?;
        match op(client.clone()).await {
            Err(e) if e.is_transport() && (is_idempotent(req) || client.was_reset()) => {
                tracing::debug!(error = %e, op = req.op_name(), "retrying on a new connection");
                let client = self.client().await?;
                Ok(op(client).await?)
            }
            other => Ok(other?),
        }
    }

    /// Sends `req` and returns the reply.
    pub async fn call(&self, req: &Request) -> Result<Reply, LinkError> {
        self.with_retry(req, |c| async move { c.call(req).await }).await
    }

    /// Fetches the whole content of `fid` into a new file at `path`.
    pub async fn fetch_to(&self, fid: Fid, path: &Path) -> Result<Status, LinkError> {
        self.with_retry(&Request::FetchData { fid }, |c| async move {
            let mut file = tokio::fs::File::create(path).await?;
            let status = c.fetch_data(fid, &mut file).await?;
            file.flush().await?;
            Ok(status)
        })
        .await
    }

    /// Sends a `StoreData` whose bytes start at `start` in the file at `path`.
    pub async fn store_from(&self, req: &Request, path: &Path, start: u64) -> Result<Status, LinkError> {
        self.with_retry(req, |c| async move {
            let mut file = tokio::fs::File::open(path).await?;
            file.seek(std::io::SeekFrom::Start(start)).await?;
            c.store_data(req, &mut file).await
        })
        .await
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some(c) = self.current.lock().await.take() {
            c.close();
        }
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
    )
}

/// Errors reaching the server or from its answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl LinkError {
    /// The errno an application should see.
    pub fn errno(&self) -> i32 {
        match self {
            LinkError::Connect(_) => libc::EIO,
            LinkError::Call(e) => e.errno(),
        }
    }
}
