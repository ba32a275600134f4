//! The callback promise registry and the break fan-out.
//!
//! Every reply carrying a status grants the calling connection a promise on
//! that FID for `promise_secs`. A change by one client breaks every other
//! client's live promise on the affected FIDs before the changer gets its
//! reply; all holders are told in parallel, each within [`BREAK_TIMEOUT`].
//!
//! The table is sized for millions of promises (a web node caches every
//! file of its sites): one entry per promise, keyed by (vnode, client) as
//! two `u32` in a map per volume, holding the expiry as whole seconds since
//! the registry started, rounded up: 12 bytes an entry, under 32 bytes a
//! promise with the hash table's slack. The uniquifier is not stored: a
//! vnode number is reused only after its file is deleted, and the deletion
//! breaks every promise on it, so a promise found under a reused number can
//! only cause a spurious break. The holders of a FID are found by looking
//! up each client that holds promises (tens on a web cluster). Vnode or
//! client numbers that do not fit 32 bits go to a small exact side table.

use cellfs_protocol::message::{Break, InlineFile, Renewal, ServerMessage};
use cellfs_protocol::transport;
use cellfs_protocol::{Fid, VolumeId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long one client is given to acknowledge a break.
pub const BREAK_TIMEOUT: Duration = Duration::from_secs(2);

/// Identifies one client connection.
pub type ClientId = u64;

/// Per client, the new versions of small files to send it with their breaks.
pub type Renewals = HashMap<ClientId, Vec<Renewal>>;

#[derive(Debug)]
struct Inner {
    /// Start of the expiry clock.
    base: Instant,
    /// Volume → (vnode, client) → expiry in seconds since `base`.
    promises: HashMap<VolumeId, HashMap<(u32, u32), u32>>,
    /// Promises whose vnode or client does not fit the compact key.
    wide: HashMap<(Fid, ClientId), Instant>,
    /// Clients that may hold promises in `promises`.
    holders: HashSet<u32>,
    clients: HashMap<ClientId, quinn::Connection>,
    /// Clients with a change of their own waiting for break acknowledgements.
    waiting: HashMap<ClientId, u32>,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            base: Instant::now(),
            promises: HashMap::new(),
            wide: HashMap::new(),
            holders: HashSet::new(),
            clients: HashMap::new(),
            waiting: HashMap::new(),
        }
    }
}

/// The compact key of a promise, when vnode and client fit.
fn compact(fid: Fid, client: ClientId) -> Option<(u32, u32)> {
    Some((u32::try_from(fid.vnode).ok()?, u32::try_from(client).ok()?))
}

impl Inner {
    /// Whole seconds from `base` to `t`, rounded down (a clock reading).
    fn secs(&self, t: Instant) -> u32 {
        u32::try_from(t.saturating_duration_since(self.base).as_secs()).unwrap_or(u32::MAX)
    }

    /// `t` in seconds from `base`, rounded up: the server never forgets a
    /// promise before the client stops trusting it.
    fn secs_up(&self, t: Instant) -> u32 {
        let d = t.saturating_duration_since(self.base);
        let up = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        u32::try_from(up).unwrap_or(u32::MAX)
    }

    fn grant(&mut self, client: ClientId, fid: Fid, expiry: Instant) {
        match compact(fid, client) {
            Some(key) => {
                let exp = self.secs_up(expiry);
                self.holders.insert(key.1);
                self.promises.entry(fid.volume).or_default().insert(key, exp);
            }
            None => {
                self.wide.insert((fid, client), expiry);
            }
        }
    }

    /// Removes `client`'s promise on `fid`; returns whether it was live at `now`.
    fn take(&mut self, client: ClientId, fid: Fid, now: Instant) -> bool {
        match compact(fid, client) {
            Some(key) => {
                let now = self.secs(now);
                let Some(vol) = self.promises.get_mut(&fid.volume) else {
                    return false;
                };
                let live = vol.remove(&key).is_some_and(|exp| exp > now);
                if vol.is_empty() {
                    self.promises.remove(&fid.volume);
                }
                live
            }
            None => self.wide.remove(&(fid, client)).is_some_and(|exp| exp > now),
        }
    }

    /// Clients holding a promise (live or not) on `fid`.
    fn holders_of(&self, fid: Fid) -> Vec<ClientId> {
        let mut out: Vec<ClientId> = self.wide.keys().filter(|(f, _)| *f == fid).map(|(_, c)| *c).collect();
        if let (Some(vol), Ok(vnode)) = (self.promises.get(&fid.volume), u32::try_from(fid.vnode)) {
            out.extend(
                self.holders
                    .iter()
                    .filter(|c| vol.contains_key(&(vnode, **c)))
                    .map(|c| ClientId::from(*c)),
            );
        }
        out
    }

    fn live(&self, now: Instant) -> u64 {
        let secs = self.secs(now);
        let compact: usize = self
            .promises
            .values()
            .map(|v| v.values().filter(|exp| **exp > secs).count())
            .sum();
        (compact + self.wide.values().filter(|exp| **exp > now).count()) as u64
    }

    fn sweep(&mut self, now: Instant) {
        let secs = self.secs(now);
        self.promises.retain(|_, v| {
            v.retain(|_, exp| *exp > secs);
            !v.is_empty()
        });
        self.wide.retain(|_, exp| *exp > now);
    }

    fn drop_client(&mut self, client: ClientId) {
        if let Ok(c) = u32::try_from(client)
            && self.holders.remove(&c)
        {
            self.promises.retain(|_, v| {
                v.retain(|(_, holder), _| *holder != c);
                !v.is_empty()
            });
        }
        self.wide.retain(|(_, c), _| *c != client);
    }

    fn drop_volume(&mut self, volume: VolumeId) {
        self.promises.remove(&volume);
        self.wide.retain(|(f, _), _| f.volume != volume);
    }
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
            inner.drop_client(client);
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
        inner.drop_client(client);
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
        self.lock().live(Instant::now())
    }

    /// Grants `client` a promise on each FID, lasting the registry's lifetime from now.
    pub fn grant(&self, client: ClientId, fids: impl IntoIterator<Item = Fid>) {
        let expiry = Instant::now() + self.lifetime;
        let mut inner = self.lock();
        for fid in fids {
            inner.grant(client, fid, expiry);
        }
    }

    /// Drops `client`'s promises on `fids` (GiveUpCallbacks).
    pub fn give_up(&self, client: ClientId, fids: &[Fid]) {
        let now = Instant::now();
        let mut inner = self.lock();
        for fid in fids {
            inner.take(client, *fid, now);
        }
    }

    /// Drops expired promises.
    pub fn sweep(&self) {
        self.lock().sweep(Instant::now());
    }

    /// Removes the promises `breaks` invalidate and returns, per holder other
    /// than `changer` with a live promise, the breaks to send it. The
    /// changer keeps its promise on a FID that still exists.
    pub fn take_breaks(&self, changer: Option<ClientId>, breaks: &[Break]) -> HashMap<ClientId, Vec<Break>> {
        self.take_breaks_at(changer, breaks, Instant::now())
    }

    fn take_breaks_at(
        &self,
        changer: Option<ClientId>,
        breaks: &[Break],
        now: Instant,
    ) -> HashMap<ClientId, Vec<Break>> {
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
            for client in inner.holders_of(b.fid) {
                if Some(client) == changer && !b.deleted {
                    // The changer keeps its promise on a FID that still exists.
                    continue;
                }
                if inner.take(client, b.fid, now) && Some(client) != changer {
                    out.entry(client).or_default().push(b.clone());
                }
            }
        }
        out
    }

    /// True when a client other than `changer` holds a promise on `fid`
    /// (live or not yet swept): whether a change of it has anyone to tell.
    pub fn held_by_others(&self, fid: Fid, changer: ClientId) -> bool {
        self.lock().holders_of(fid).into_iter().any(|c| c != changer)
    }

    /// Turns the break of `file`'s FID in `per_client` (from
    /// [`Callbacks::take_breaks`]) into a renewal for each client it was for:
    /// the client is granted a new promise on the file now and gets its new
    /// status and bytes with the break, so its next open needs no request.
    pub fn renew(&self, per_client: &mut HashMap<ClientId, Vec<Break>>, file: &InlineFile) -> Renewals {
        let fid = file.status.fid;
        let Some(data) = file.data.as_ref() else {
            return Renewals::new();
        };
        let expiry = Instant::now() + self.lifetime;
        let mut renewals = Renewals::new();
        let mut inner = self.lock();
        per_client.retain(|client, breaks| {
            let Some(at) = breaks.iter().position(|b| b.fid == fid && !b.deleted) else {
                return true;
            };
            let brk = breaks.remove(at);
            inner.grant(*client, fid, expiry);
            renewals.entry(*client).or_default().push(Renewal {
                brk,
                status: file.status.clone(),
                data: data.clone(),
            });
            !breaks.is_empty()
        });
        renewals
    }

    /// Breaks promises on the affected FIDs: every other live holder is told
    /// and has acknowledged (or timed out, losing all its promises) on return.
    pub async fn break_promises(&self, changer: Option<ClientId>, breaks: &[Break]) {
        if breaks.is_empty() {
            return;
        }
        let per_client = self.take_breaks(changer, breaks);
        self.deliver_breaks(changer, per_client, Renewals::new()).await;
    }

    /// Sends breaks collected by [`Callbacks::take_breaks`] and renewals
    /// made by [`Callbacks::renew`] for a change made by `changer`, all
    /// clients in parallel.
    pub async fn deliver_breaks(
        &self,
        changer: Option<ClientId>,
        per_client: HashMap<ClientId, Vec<Break>>,
        renewals: Renewals,
    ) {
        if per_client.is_empty() && renewals.is_empty() {
            return;
        }
        let breaks = per_client.into_iter().map(|(client, list)| {
            let n = list.len() as u64;
            (client, ServerMessage::Break(list), n)
        });
        let renewed = renewals.into_iter().map(|(client, list)| {
            let n = list.len() as u64;
            (client, ServerMessage::Renewed(list), n)
        });
        self.deliver(changer, breaks.chain(renewed).collect()).await;
    }

    /// Tells every client but `changer` that volume `volume` is gone, and
    /// drops their promises in it.
    pub async fn break_volume(&self, changer: Option<ClientId>, volume: VolumeId) {
        let clients: Vec<ClientId> = {
            let mut inner = self.lock();
            inner.drop_volume(volume);
            // Only clients that took promises cache anything (admin tools do not).
            let holders = &inner.holders;
            inner
                .clients
                .keys()
                .copied()
                .filter(|c| Some(*c) != changer && u32::try_from(*c).map_or(true, |c| holders.contains(&c)))
                .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
    fn renewal_moves_the_files_break_and_grants_the_holder_a_new_promise() {
        let cb = Callbacks::new(Duration::from_secs(60));
        cb.grant(1, [fid(1)]);
        cb.grant(2, [fid(1), fid(2)]);
        cb.grant(3, [fid(1)]);
        let mut out = cb.take_breaks(Some(1), &[brk(fid(1), &[], false), brk(fid(2), &["n"], false)]);
        assert!(!cb.held_by_others(fid(1), 1), "only the changer's promise is left");
        assert_eq!(cb.promises(), 1);
        let status = cellfs_protocol::Status {
            fid: fid(1),
            kind: cellfs_protocol::FileKind::File,
            mode: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 3,
            data_version: 2,
            mtime: Default::default(),
            ctime: Default::default(),
            atime: Default::default(),
            acl_dir: 1,
        };
        let file = InlineFile {
            status: status.clone(),
            data: Some(b"new".to_vec()),
        };
        let renewed = cb.renew(&mut out, &file);
        // Client 2 keeps its other break; client 3 had only the renewed one.
        assert_eq!(out.len(), 1);
        assert_eq!(out[&2], vec![brk(fid(2), &["n"], false)]);
        assert_eq!(renewed.len(), 2);
        for client in [2, 3] {
            assert_eq!(
                renewed[&client],
                vec![Renewal {
                    brk: brk(fid(1), &[], false),
                    status: status.clone(),
                    data: b"new".to_vec()
                }]
            );
        }
        // Both hold a promise on the new version, which the next change breaks.
        assert_eq!(cb.promises(), 3);
        assert!(cb.held_by_others(fid(1), 1));
        assert_eq!(cb.take_breaks(Some(1), &[brk(fid(1), &[], false)]).len(), 2);
        // A deleted FID is never renewed, and a file without bytes renews nothing.
        cb.grant(2, [fid(1)]);
        let mut out = cb.take_breaks(Some(1), &[brk(fid(1), &[], true)]);
        assert!(cb.renew(&mut out, &file).is_empty());
        assert_eq!(out[&2], vec![brk(fid(1), &[], true)]);
        cb.grant(2, [fid(1)]);
        let mut out = cb.take_breaks(Some(1), &[brk(fid(1), &[], false)]);
        let bare = InlineFile { status, data: None };
        assert!(cb.renew(&mut out, &bare).is_empty());
        assert_eq!(out.len(), 1);
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
        let cb = Callbacks::new(Duration::from_secs(60));
        let base = cb.lock().base;
        let at = |s: u64| base + Duration::from_secs(s);
        cb.lock().grant(2, fid(1), at(1));
        cb.lock().grant(3, fid(1), at(10));
        assert_eq!(cb.lock().live(at(5)), 1);
        let out = cb.take_breaks_at(Some(1), &[brk(fid(1), &["x"], false)], at(5));
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), vec![3]);
        cb.lock().grant(2, fid(1), at(1));
        cb.lock().grant(2, fid(u64::MAX), at(1));
        cb.lock().sweep(at(5));
        assert!(cb.lock().promises.is_empty() && cb.lock().wide.is_empty());
    }

    #[test]
    fn expiry_is_rounded_up_never_down() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let base = cb.lock().base;
        cb.lock().grant(2, fid(1), base + Duration::from_millis(1_500));
        // Still held at 1.9 s (the client's promise lasts until 1.5 s).
        assert_eq!(cb.lock().live(base + Duration::from_millis(1_900)), 1);
        assert_eq!(cb.lock().live(base + Duration::from_secs(2)), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Grant(ClientId, Fid, u64),
        GiveUp(ClientId, Fid),
        Break(Option<ClientId>, Fid, bool, u64),
        Remove(ClientId),
        Sweep(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few clients and vnodes so operations collide; some past 32 bits.
        let client = prop_oneof![1u64..4, Just(u64::from(u32::MAX) + 7)];
        let fid = prop_oneof![1u64..6, Just(u64::from(u32::MAX) + 3)].prop_map(fid);
        prop_oneof![
            (client.clone(), fid.clone(), 0u64..20).prop_map(|(c, f, t)| Op::Grant(c, f, t)),
            (client.clone(), fid.clone()).prop_map(|(c, f)| Op::GiveUp(c, f)),
            (proptest::option::of(client.clone()), fid, any::<bool>(), 0u64..20)
                .prop_map(|(c, f, d, t)| Op::Break(c, f, d, t)),
            client.prop_map(Op::Remove),
            (0u64..20).prop_map(Op::Sweep),
        ]
    }

    proptest! {
        /// The compact table behaves like a plain map of (FID, client) → expiry.
        #[test]
        fn compact_table_matches_a_plain_map(ops in proptest::collection::vec(op(), 1..60)) {
            let cb = Callbacks::new(Duration::from_secs(60));
            let base = cb.lock().base;
            let at = |s: u64| base + Duration::from_secs(s);
            let mut model: HashMap<(Fid, ClientId), u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Grant(c, f, t) => {
                        cb.lock().grant(c, f, at(t));
                        model.insert((f, c), t);
                    }
                    Op::GiveUp(c, f) => {
                        cb.lock().take(c, f, at(0));
                        model.remove(&(f, c));
                    }
                    Op::Break(changer, f, deleted, now) => {
                        let got = cb.take_breaks_at(changer, &[brk(f, &[], deleted)], at(now));
                        let mut want: Vec<ClientId> = Vec::new();
                        model.retain(|(mf, mc), exp| {
                            if *mf != f || (Some(*mc) == changer && !deleted) {
                                return true;
                            }
                            if *exp > now && Some(*mc) != changer {
                                want.push(*mc);
                            }
                            false
                        });
                        let mut got: Vec<ClientId> = got.into_keys().collect();
                        got.sort_unstable();
                        want.sort_unstable();
                        prop_assert_eq!(got, want);
                    }
                    Op::Remove(c) => {
                        cb.lock().drop_client(c);
                        model.retain(|(_, mc), _| *mc != c);
                    }
                    Op::Sweep(now) => {
                        cb.lock().sweep(at(now));
                        model.retain(|_, exp| *exp > now);
                    }
                }
                for now in [0, 5, 10, 19] {
                    let want = model.values().filter(|exp| **exp > now).count() as u64;
                    prop_assert_eq!(cb.lock().live(at(now)), want);
                }
            }
        }
    }

    #[test]
    fn names_of_one_fid_are_merged_per_client() {
        let cb = Callbacks::new(Duration::from_secs(60));
        cb.grant(2, [fid(1)]);
        let out = cb.take_breaks(None, &[brk(fid(1), &["a"], false), brk(fid(1), &["b"], false)]);
        assert_eq!(out[&2], vec![brk(fid(1), &["a", "b"], false)]);
    }
}
