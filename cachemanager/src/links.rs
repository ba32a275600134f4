//! The cache manager's links to every fileserver of its cell, and which
//! volume each request goes to.
//!
//! The cell's first server (the first in `cell.toml`) keeps the VLDB. A
//! volume's route is learned when a mount point is crossed (`GetMountRoot`
//! names the servers holding it) or asked of the VLDB (`LocateVolume`).
//! Requests about a volume go to the first server of its route that is up;
//! a read of a read-only volume with several sites moves on to the next site
//! when one does not answer. A server answering that a volume moved makes
//! the route be asked again.

use crate::link::{CellInfo, LinkError, LinkEvent, ServerLink, is_idempotent};
use cellfs_protocol::transport::{Connector, same_server};
use cellfs_protocol::{Fid, Reply, Request, Status, VolumeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

/// How long a change refused by a restarted server's grace is repeated
/// before its error is returned (the server's grace is a few seconds).
const GRACE_PATIENCE: Duration = Duration::from_secs(30);

/// Pause between repeats of a change refused by a server's grace.
const GRACE_RETRY: Duration = Duration::from_millis(50);

/// Most routes remembered (volumes a node reaches); more are asked again.
const MAX_ROUTES: usize = 65_536;

/// Every fileserver link of one mount, and the route of each volume.
pub struct Links {
    primary: Arc<ServerLink>,
    template: Connector,
    events: mpsc::UnboundedSender<LinkEvent>,
    timeout: Duration,
    epoch: Arc<AtomicU64>,
    servers: Mutex<HashMap<SocketAddr, Arc<ServerLink>>>,
    routes: Mutex<HashMap<VolumeId, Route>>,
}

/// The servers of one volume, best first.
struct Route {
    links: Vec<Arc<ServerLink>>,
    /// False once a break or a `Moved` answer says it may be out of date:
    /// the VLDB is asked again, and this route used only when it cannot answer.
    fresh: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Links {
    /// Links for a cell whose first server `connector` reaches; events of
    /// every link go to `events`; requests are bounded by `timeout`.
    pub fn new(connector: Connector, events: mpsc::UnboundedSender<LinkEvent>, timeout: Duration) -> Self {
        let epoch = Arc::new(AtomicU64::new(0));
        let primary = Arc::new(ServerLink::new(
            connector.clone(),
            events.clone(),
            timeout,
            epoch.clone(),
            true,
        ));
        let servers = HashMap::from([(connector.addr(), primary.clone())]);
        Links {
            primary,
            template: connector,
            events,
            timeout,
            epoch,
            servers: Mutex::new(servers),
            routes: Mutex::new(HashMap::new()),
        }
    }

    /// The link to the cell's first server.
    pub fn primary(&self) -> &ServerLink {
        &self.primary
    }

    /// The shared connection generation (see [`ServerLink::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// What the first server said in `Hello`, with the shortest promise
    /// lifetime any connected server announced (a promise is never kept
    /// longer than the server that granted it keeps it).
    pub fn info(&self) -> Option<CellInfo> {
        let mut info = self.primary.info()?;
        info.promise_secs = self.promise_secs()?;
        Some(info)
    }

    /// The shortest promise lifetime any connected server announced (none
    /// before the first server answered).
    pub fn promise_secs(&self) -> Option<u64> {
        let first = self.primary.promise_secs()?;
        let others = lock(&self.servers).values().filter_map(|l| l.promise_secs()).min();
        Some(others.map_or(first, |o| o.min(first)))
    }

    /// The links to every server but the first, by address.
    pub fn others(&self) -> Vec<Arc<ServerLink>> {
        let mut others: Vec<Arc<ServerLink>> = lock(&self.servers)
            .values()
            .filter(|l| !Arc::ptr_eq(l, &self.primary))
            .cloned()
            .collect();
        others.sort_by_key(|l| l.server());
        others
    }

    /// The first server's address.
    pub fn server(&self) -> SocketAddr {
        self.primary.server()
    }

    /// True while the cell's first server is unreachable.
    pub fn is_down(&self) -> bool {
        self.primary.is_down()
    }

    /// True while no server holding `volume` is reachable.
    pub fn is_down_for(&self, volume: VolumeId) -> bool {
        match lock(&self.routes).get(&volume) {
            Some(r) => r.links.iter().all(|l| l.is_down()),
            None => self.primary.is_down(),
        }
    }

    /// True while any server is unreachable.
    pub fn any_down(&self) -> bool {
        lock(&self.servers).values().any(|l| l.is_down())
    }

    /// Since when the first server is down, if it is.
    pub fn down_since(&self) -> Option<SystemTime> {
        self.primary.down_since()
    }

    /// When the earliest lost connection still to be revalidated was lost.
    pub fn lost_at(&self) -> Option<Instant> {
        lock(&self.servers).values().filter_map(|l| l.lost_at()).min()
    }

    /// Called once every link's reconnection has been revalidated.
    pub fn revalidated(&self) {
        for link in lock(&self.servers).values() {
            link.revalidated();
        }
    }

    /// Connects to the first server (bounded).
    pub async fn connect(&self) -> Result<(), LinkError> {
        self.primary.client().await.map(|_| ())
    }

    /// Probes every server once (a lost connection is made again, which
    /// starts revalidation); true when all answer.
    pub async fn probe(&self) -> bool {
        let links: Vec<Arc<ServerLink>> = lock(&self.servers).values().cloned().collect();
        let mut all = true;
        for link in links {
            all &= link.probe().await;
        }
        all
    }

    /// Whether a server refused this node's handshake at the last probe
    /// (or presented a certificate it does not trust).
    pub fn any_refused(&self) -> bool {
        lock(&self.servers).values().any(|l| l.is_refused())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        let links: Vec<Arc<ServerLink>> = lock(&self.servers).values().cloned().collect();
        for link in links {
            link.close().await;
        }
    }

    /// Records that `volume` is held by `sites` (server addresses, best
    /// first). Addresses that do not resolve are skipped.
    pub fn set_route(&self, volume: VolumeId, sites: &[String]) {
        let primary = self.primary.info().map(|i| i.address);
        let links: Vec<Arc<ServerLink>> = sites
            .iter()
            .filter_map(|s| match cellfs_protocol::transport::resolve(s) {
                // The first server, however this node reaches it (a proxy, NAT).
                _ if primary.as_deref().is_some_and(|p| same_server(p, s)) => Some(self.primary.clone()),
                Ok(a) => Some(self.link_to(a)),
                Err(e) => {
                    tracing::warn!(server = %s, error = %e, "ignoring a site that does not resolve");
                    None
                }
            })
            .collect();
        if links.is_empty() {
            return;
        }
        let mut routes = lock(&self.routes);
        if routes.len() >= MAX_ROUTES && !routes.contains_key(&volume) {
            routes.clear();
        }
        routes.insert(volume, Route { links, fresh: true });
    }

    /// Records that the cell's first server holds `volume` (the root volume).
    pub fn route_to_primary(&self, volume: VolumeId) {
        let links = vec![self.primary.clone()];
        lock(&self.routes).insert(volume, Route { links, fresh: true });
    }

    fn link_to(&self, addr: SocketAddr) -> Arc<ServerLink> {
        lock(&self.servers)
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(ServerLink::new(
                    self.template.to(addr),
                    self.events.clone(),
                    self.timeout,
                    self.epoch.clone(),
                    false,
                ))
            })
            .clone()
    }

    /// The servers to ask about `volume`, best first: its known route, or
    /// what the VLDB says (the first server when it cannot say).
    async fn route(&self, volume: Option<VolumeId>) -> Vec<Arc<ServerLink>> {
        let Some(volume) = volume else {
            return vec![self.primary.clone()];
        };
        let stale = match lock(&self.routes).get(&volume) {
            Some(r) if r.fresh => return r.links.clone(),
            Some(r) => Some(r.links.clone()),
            None => None,
        };
        match self.primary.call(&Request::LocateVolume { volume }).await {
            Ok(Reply::Located(sites)) if !sites.is_empty() => {
                self.set_route(volume, &sites);
                if let Some(r) = lock(&self.routes).get(&volume) {
                    return r.links.clone();
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(volume, error = %e, "cannot locate volume; using what was known"),
        }
        stale.unwrap_or_else(|| vec![self.primary.clone()])
    }

    /// Marks what is known of `volume`'s servers out of date: the next
    /// request asks the VLDB again (and uses it only if the VLDB cannot answer).
    pub fn forget_route(&self, volume: VolumeId) {
        if let Some(r) = lock(&self.routes).get_mut(&volume) {
            r.fresh = false;
        }
    }

    /// Runs `op` on the servers of `req`'s volume: the first one up; the
    /// next site when one does not answer a request that may be repeated;
    /// the route asked again (once) when the volume moved; again shortly
    /// while a restarted server holds changes back (its grace).
    async fn routed<T, F, Fut>(&self, req: &Request, op: F) -> Result<T, LinkError>
    where
        F: Fn(Arc<ServerLink>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LinkError>>,
    {
        let started = std::time::Instant::now();
        let result = loop {
            match self.routed_once(req, &op).await {
                Err(e) if e.is_grace() && started.elapsed() < GRACE_PATIENCE => {
                    tracing::debug!(op = req.op_name(), error = %e, "the fileserver holds changes after its restart; repeating");
                    tokio::time::sleep(GRACE_RETRY).await;
                }
                other => break other,
            }
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_unreachable() => "unreachable",
            Err(_) => "error",
        };
        metrics::histogram!("cellfs_cachemanager_rpc_seconds", "op" => req.op_name(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn routed_once<T, F, Fut>(&self, req: &Request, op: F) -> Result<T, LinkError>
    where
        F: Fn(Arc<ServerLink>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LinkError>>,
    {
        let volume = req.volume();
        let mut relocated = false;
        loop {
            let links = self.route(volume).await;
            let mut last = LinkError::Down;
            let mut moved = false;
            for (i, link) in links.iter().enumerate() {
                let more = i + 1 < links.len();
                if link.is_down() && more {
                    continue;
                }
                match op(link.clone()).await {
                    Err(e) if e.is_moved() => {
                        moved = true;
                        last = e;
                        break;
                    }
                    Err(e) if more && e.is_unreachable() && is_idempotent(req) => {
                        tracing::info!(server = %link.server(), error = %e, op = req.op_name(), "site unreachable; trying the next one");
                        last = e;
                    }
                    other => return other,
                }
            }
            match volume {
                Some(v) if moved && !relocated => {
                    tracing::info!(volume = v, "volume moved; asking the VLDB where it is");
                    self.forget_route(v);
                    relocated = true;
                }
                _ => return Err(last),
            }
        }
    }

    /// Sends `req` to the server of its volume and returns the reply.
    pub async fn call(&self, req: &Request) -> Result<Reply, LinkError> {
        self.routed(req, |link| async move { link.call(req).await }).await
    }

    /// Fetches the whole content of `fid` (about `size` bytes) into a new file at `path`.
    pub async fn fetch_to(
        &self,
        fid: Fid,
        size: u64,
        path: &Path,
        arrived: crate::link::Arrived<'_>,
    ) -> Result<Status, LinkError> {
        let req = Request::FetchData { fid };
        self.routed(
            &req,
            |link| async move { link.fetch_to(fid, size, path, arrived).await },
        )
        .await
    }

    /// Sends a `StoreData` whose bytes start at `start` in the file at `path`.
    pub async fn store_from(&self, req: &Request, path: &Path, start: u64) -> Result<Status, LinkError> {
        self.routed(req, |link| async move { link.store_from(req, path, start).await })
            .await
    }
}
