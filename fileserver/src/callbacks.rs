//! The callback promise registry and the break fan-out.
//!
//! Every reply carrying a status grants the calling connection a promise on
//! that FID for `promise_secs`. A change by one client breaks every other
//! client's live promise on the affected FIDs before the changer gets its
//! reply; all holders are told in parallel, each within [`BREAK_TIMEOUT`].

use cellfs_protocol::message::{Break, ServerMessage};
use cellfs_protocol::transport;
use cellfs_protocol::{Fid, VolumeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long one client is given to acknowledge a break.
pub const BREAK_TIMEOUT: Duration = Duration::from_secs(2);

/// Identifies one client connection.
pub type ClientId = u64;

#[derive(Debug, Default)]
struct Inner {
    promises: HashMap<Fid, Vec<(ClientId, Instant)>>,
    clients: HashMap<ClientId, quinn::Connection>,
    /// Clients with a change of their own waiting for break acknowledgements.
    waiting: HashMap<ClientId, u32>,
}

/// Promise registry: FID → holders with expiry, plus the live connections.
#[derive(Debug)]
pub struct Callbacks {
    lifetime: Duration,
    shared: Arc<Shared>,
}

/// The state break deliveries that outlive a request still update.
#[derive(Debug, Default)]
struct Shared {
    inner: Mutex<Inner>,
    breaks_sent: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records how one client's delivery went.
    fn settle(&self, (client, count, sent): Delivery) {
        match sent {
            Ok(Ok(())) => {
                self.breaks_sent.fetch_add(count, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tracing::warn!(client, error = %e, "callback break failed; disconnecting the client");
                self.cut_off(client);
            }
            Err(_) => {
                tracing::warn!(
                    client,
                    "callback break not acknowledged in 2 s; disconnecting the client"
                );
                self.cut_off(client);
            }
        }
    }

    /// A client that missed a break must not go on trusting its promises:
    /// they are dropped here and its connection is closed, so it reconnects
    /// and revalidates through the change journal.
    fn cut_off(&self, client: ClientId) {
        let conn = {
            let mut inner = self.lock();
            drop_promises_of(&mut inner, client);
            inner.clients.remove(&client)
        };
        if let Some(conn) = conn {
            conn.close(quinn::VarInt::from_u32(1), b"callback break not acknowledged");
        }
    }
}

/// Outcome of sending one client its breaks: client, breaks, result.
type Delivery = (
    ClientId,
    u64,
    Result<Result<(), transport::CallError>, tokio::time::error::Elapsed>,
);

/// Marks a client as waiting for acknowledgements of its own change.
struct WaitingGuard<'a> {
    shared: &'a Shared,
    client: ClientId,
}

impl<'a> WaitingGuard<'a> {
    fn new(callbacks: &'a Callbacks, client: ClientId) -> Self {
        *callbacks.shared.lock().waiting.entry(client).or_default() += 1;
        WaitingGuard {
            shared: &callbacks.shared,
            client,
        }
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some(n) = inner.waiting.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                inner.waiting.remove(&self.client);
            }
        }
    }
}

impl Callbacks {
    /// A registry granting promises that last `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        Callbacks {
            lifetime,
            shared: Arc::new(Shared::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Registers a live connection that breaks can be sent on.
    pub fn add_client(&self, client: ClientId, conn: quinn::Connection) {
        self.lock().clients.insert(client, conn);
    }

    /// Forgets a connection and every promise it holds.
    pub fn remove_client(&self, client: ClientId) {
        let mut inner = self.lock();
        inner.clients.remove(&client);
        drop_promises_of(&mut inner, client);
    }

    /// Number of live connections.
    pub fn connections(&self) -> u64 {
        self.lock().clients.len() as u64
    }

    /// Breaks delivered (and acknowledged) since start.
    pub fn breaks_sent(&self) -> u64 {
        self.shared.breaks_sent.load(Ordering::Relaxed)
    }

    /// Promises not yet expired.
    pub fn promises(&self) -> u64 {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .promises
            .values()
            .map(|h| h.iter().filter(|(_, exp)| *exp > now).count() as u64)
            .sum()
    }

    /// Grants `client` a promise on each FID, lasting the registry's lifetime from now.
    pub fn grant(&self, client: ClientId, fids: impl IntoIterator<Item = Fid>) {
        let now = Instant::now();
        let expiry = now + self.lifetime;
        let mut inner = self.lock();
        for fid in fids {
            let holders = inner.promises.entry(fid).or_default();
            holders.retain(|(c, exp)| *c != client && *exp > now);
            holders.push((client, expiry));
        }
    }

    /// Drops `client`'s promises on `fids` (GiveUpCallbacks).
    pub fn give_up(&self, client: ClientId, fids: &[Fid]) {
        let mut inner = self.lock();
        for fid in fids {
            if let Some(holders) = inner.promises.get_mut(fid) {
                holders.retain(|(c, _)| *c != client);
                if holders.is_empty() {
                    inner.promises.remove(fid);
                }
            }
        }
    }

    /// Drops expired promises.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.promises.retain(|_, holders| {
            holders.retain(|(_, exp)| *exp > now);
            !holders.is_empty()
        });
    }

    /// Removes the promises `breaks` invalidate and returns, per holder other
    /// than `changer` with a live promise, the breaks to send it. The
    /// changer keeps its promise on a FID that still exists.
    pub fn take_breaks(&self, changer: Option<ClientId>, breaks: &[Break]) -> HashMap<ClientId, Vec<Break>> {
        let now = Instant::now();
        let mut merged: Vec<Break> = Vec::with_capacity(breaks.len());
        for b in breaks {
            match merged.iter_mut().find(|m| m.fid == b.fid) {
                Some(m) => {
                    m.names.extend(
                        b.names
                            .iter()
                            .filter(|n| !m.names.contains(n))
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                    m.deleted |= b.deleted;
                    m.seq = m.seq.max(b.seq);
                }
                None => merged.push(b.clone()),
            }
        }
        let mut out: HashMap<ClientId, Vec<Break>> = HashMap::new();
        let mut inner = self.lock();
        for b in &merged {
            let Some(holders) = inner.promises.get_mut(&b.fid) else {
                continue;
            };
            holders.retain(|&(client, exp)| {
                if Some(client) == changer {
                    return !b.deleted && exp > now;
                }
                if exp > now {
                    out.entry(client).or_default().push(b.clone());
                }
                false
            });
            if holders.is_empty() {
                inner.promises.remove(&b.fid);
            }
        }
        out
    }

    /// Breaks promises on the affected FIDs: every other live holder is told
    /// and has acknowledged (or timed out, losing all its promises) on return.
    pub async fn break_promises(&self, changer: Option<ClientId>, breaks: &[Break]) {
        if breaks.is_empty() {
            return;
        }
        let per_client = self.take_breaks(changer, breaks);
        self.deliver_breaks(changer, per_client).await;
    }

    /// Sends breaks collected by [`Callbacks::take_breaks`] for a change made
    /// by `changer`, all clients in parallel.
    pub async fn deliver_breaks(&self, changer: Option<ClientId>, per_client: HashMap<ClientId, Vec<Break>>) {
        if per_client.is_empty() {
            return;
        }
        let messages = per_client
            .into_iter()
            .map(|(client, list)| {
                let n = list.len() as u64;
                (client, ServerMessage::Break(list), n)
            })
            .collect();
        self.deliver(changer, messages).await;
    }

    /// Tells every client but `changer` that volume `volume` is gone, and
    /// drops their promises in it.
    pub async fn break_volume(&self, changer: Option<ClientId>, volume: VolumeId) {
        let clients: Vec<ClientId> = {
            let mut inner = self.lock();
            inner.promises.retain(|fid, _| fid.volume != volume);
            inner.clients.keys().copied().filter(|c| Some(*c) != changer).collect()
        };
        let messages = clients
            .into_iter()
            .map(|c| (c, ServerMessage::BreakVolume(volume), 1))
            .collect();
        self.deliver(changer, messages).await;
    }

    /// Delivers breaks and waits for the acknowledgements, except from clients
    /// that are themselves waiting for acknowledgements of a change of theirs:
    /// such a client may be unable to acknowledge until its own change
    /// returns (its kernel holds the directory lock that the invalidation
    /// needs), so waiting on it could deadlock two nodes changing one
    /// directory. Those breaks are still delivered, just not awaited.
    async fn deliver(&self, changer: Option<ClientId>, messages: Vec<(ClientId, ServerMessage, u64)>) {
        let _waiting = changer.map(|c| WaitingGuard::new(self, c));
        let mut set = JoinSet::new();
        for (client, msg, count) in messages {
            let (conn, busy) = {
                let inner = self.lock();
                let Some(conn) = inner.clients.get(&client).cloned() else {
                    continue;
                };
                (conn, inner.waiting.get(&client).is_some_and(|n| *n > 0))
            };
            let send = async move {
                let sent = tokio::time::timeout(BREAK_TIMEOUT, transport::send_server_message(&conn, &msg)).await;
                (client, count, sent)
            };
            if busy {
                let this = self.shared.clone();
                tokio::spawn(async move { this.settle(send.await) });
            } else {
                set.spawn(send);
            }
        }
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(outcome) => self.shared.settle(outcome),
                Err(e) => tracing::warn!(error = %e, "callback break task failed"),
            }
        }
    }
}

fn drop_promises_of(inner: &mut Inner, client: ClientId) {
    inner.promises.retain(|_, holders| {
        holders.retain(|(c, _)| *c != client);
        !holders.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fid(vnode: u64) -> Fid {
        Fid {
            volume: 1,
            vnode,
            unique: vnode,
        }
    }

    fn brk(f: Fid, names: &[&str], deleted: bool) -> Break {
        Break {
            fid: f,
            names: names.iter().map(|s| s.to_string()).collect(),
            deleted,
            seq: 0,
        }
    }

    #[test]
    fn grant_counts_once_per_client_and_fid() {
        let cb = Callbacks::new(Duration::from_secs(60));
        cb.grant(1, [fid(1), fid(2)]);
        cb.grant(1, [fid(1)]);
        cb.grant(2, [fid(1)]);
        assert_eq!(cb.promises(), 3);
        cb.give_up(1, &[fid(1)]);
        assert_eq!(cb.promises(), 2);
        cb.remove_client(2);
        assert_eq!(cb.promises(), 1);
    }

    #[test]
    fn break_excludes_the_changer_and_removes_broken_promises() {
        let cb = Callbacks::new(Duration::from_secs(60));
        cb.grant(1, [fid(1), fid(2)]);
        cb.grant(2, [fid(1), fid(2)]);
        cb.grant(3, [fid(3)]);
        let out = cb.take_breaks(Some(1), &[brk(fid(1), &["a"], false), brk(fid(2), &[], true)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[&2], vec![brk(fid(1), &["a"], false), brk(fid(2), &[], true)]);
        // Client 1 keeps its promise on the surviving FID, loses it on the deleted one;
        // client 2 lost both; client 3 is untouched.
        assert_eq!(cb.promises(), 2);
        assert!(cb.take_breaks(Some(9), &[brk(fid(2), &[], false)]).is_empty());
        assert_eq!(cb.take_breaks(Some(9), &[brk(fid(1), &[], false)]).len(), 1);
    }

    #[test]
    fn expired_promises_are_not_broken() {
        let cb = Callbacks::new(Duration::ZERO);
        cb.grant(2, [fid(1)]);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cb.promises(), 0);
        assert!(cb.take_breaks(Some(1), &[brk(fid(1), &["x"], false)]).is_empty());
        cb.grant(2, [fid(1)]);
        cb.sweep();
        assert_eq!(cb.lock().promises.len(), 0);
    }

    #[test]
    fn names_of_one_fid_are_merged_per_client() {
        let cb = Callbacks::new(Duration::from_secs(60));
        cb.grant(2, [fid(1)]);
        let out = cb.take_breaks(None, &[brk(fid(1), &["a"], false), brk(fid(1), &["b"], false)]);
        assert_eq!(out[&2], vec![brk(fid(1), &["a", "b"], false)]);
    }
}
