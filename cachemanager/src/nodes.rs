//! The node table: kernel inode numbers for FIDs, the last status seen for
//! each, the callback promise that keeps it valid, and cached directory
//! listings.

use crate::persist::{SavedNode, SavedNodeRef};
use cellfs_protocol::{Fid, Status, VolumeId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most mount point kernel entries remembered.
const MAX_MOUNT_ENTRIES: usize = 65_536;
/// The root inode number the kernel uses for the mount.
pub const ROOT_INO: u64 = 1;

/// Longest time the kernel is told to trust an attribute or entry.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// A callback promise as the client holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    /// Connection generation it was granted on.
    pub epoch: u64,
    /// When it expires.
    pub until: Instant,
    /// [`NodeTable::break_gen`] when the request that brought it was sent:
    /// a break applied after that voids it (the reply raced the break).
    pub breaks_seen: u64,
}

impl Promise {
    /// Time left if the promise still holds under `epoch` at `now`.
    pub fn remaining(&self, epoch: u64, now: Instant) -> Option<Duration> {
        (self.epoch == epoch && self.until > now).then(|| (self.until - now).min(MAX_TTL))
    }
}

/// A directory's names, valid for the directory's data version.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    /// Data version of the directory this listing reflects.
    pub data_version: u64,
    /// Name → FID of what it names.
    pub entries: BTreeMap<String, Fid>,
}

/// What the cache manager knows of one vnode.
#[derive(Debug, Clone)]
pub struct Node {
    /// The vnode.
    pub fid: Fid,
    /// Last status the server gave (with local writes applied to size/mtime).
    pub status: Status,
    /// Promise keeping `status` (and `listing`) current, if any.
    pub promise: Option<Promise>,
    /// The directory listing, when fetched (shared: lookups read it without copying).
    pub listing: Option<Arc<Listing>>,
    /// The last listing, after a break or a revalidation found it out of
    /// date: served only while the server is unreachable (a folder broken
    /// just before an outage still resolves the names it held).
    pub stale_listing: Option<Arc<Listing>>,
    /// Symlink or mount point target, when fetched.
    pub target: Option<String>,
    /// Byte range written locally and not yet stored on the server.
    pub dirty: Option<(u64, u64)>,
    /// Created here, and the server may have answered before the create was
    /// durable: a close that stores nothing asks it to make it so (`Sync`).
    pub unsynced: bool,
    /// Data version of the pages the kernel may hold for this inode (set
    /// when it is opened, cleared when the kernel is told to drop them).
    pub kernel_dv: Option<u64>,
    /// Deleted on the server while held open here: forgotten at its last
    /// close (its link count stays as it was until a request learns it).
    pub removed: bool,
    /// Entries for this node the kernel was given (lookups, creates,
    /// readdirplus rows) and has not forgotten: while any remain the kernel
    /// may ask about it (an open descriptor, a working directory), so a
    /// deleted node stays until they are gone.
    pub lookups: u64,
    /// The directory and name the kernel was last given an entry for this
    /// node by (to tell it the file was deleted elsewhere); set through
    /// [`NodeTable::set_kernel_name`], which indexes it by directory.
    kernel_name: Option<(u64, Box<str>)>,
}

impl Node {
    /// The directory and name the kernel was last given an entry for this
    /// node by.
    pub fn kernel_name(&self) -> Option<(u64, &str)> {
        self.kernel_name.as_ref().map(|(d, n)| (*d, &**n))
    }

    /// Takes the listing as out of date, keeping it as the stale listing
    /// served while the server is unreachable.
    pub fn retire_listing(&mut self) -> Option<Arc<Listing>> {
        let listing = self.listing.take();
        if listing.is_some() {
            self.stale_listing.clone_from(&listing);
        }
        listing
    }

    /// Whether its file is known to be deleted (unlinked, or removed on
    /// the server while held open here).
    pub fn deleted(&self) -> bool {
        self.status.nlink == 0 || self.removed
    }

    /// Time left on this node's promise.
    pub fn valid_for(&self, epoch: u64, now: Instant) -> Option<Duration> {
        self.promise.and_then(|p| p.remaining(epoch, now))
    }
}

/// Inode numbers ↔ FIDs and per-node state. Inode numbers are never reused.
#[derive(Debug)]
pub struct NodeTable {
    nodes: HashMap<u64, Node>,
    by_fid: HashMap<Fid, u64>,
    next_ino: u64,
    mounts: HashMap<Fid, Fid>,
    /// The kernel entry (parent inode, name) each crossed mount point was
    /// looked up by, to drop when its target changes (the parent's listing
    /// may no longer be cached then).
    mount_entries: HashMap<Fid, (u64, String)>,
    /// Counts the callback breaks applied.
    break_gen: u64,
    /// FID → `break_gen` of its last break (the most recent ones).
    broken: HashMap<Fid, u64>,
    /// Volume → `break_gen` of its last whole-volume break.
    broken_volumes: HashMap<VolumeId, u64>,
    /// Breaks up to this generation were forgotten from `broken`.
    pruned_gen: u64,
    /// Directory inode → the nodes whose `kernel_name` is in it, so a
    /// folder's break finds the names the kernel holds there without a
    /// walk of the table.
    named_in: HashMap<u64, HashSet<u64>>,
}

/// Names `n` (inode `ino`) `name` in `dir`, keeping the by-directory
/// index `named_in` in step.
fn name_in(named_in: &mut HashMap<u64, HashSet<u64>>, n: &mut Node, ino: u64, dir: u64, name: &str) {
    if n.kernel_name.as_ref().is_some_and(|(d, m)| *d == dir && **m == *name) {
        return;
    }
    let old = n.kernel_name.replace((dir, name.into()));
    if let Some((old_dir, _)) = old
        && old_dir != dir
    {
        unname(named_in, old_dir, ino);
    }
    named_in.entry(dir).or_default().insert(ino);
}

/// Takes `ino` out of `dir`'s names in `named_in` (and the directory out
/// once it has none).
fn unname(named_in: &mut HashMap<u64, HashSet<u64>>, dir: u64, ino: u64) {
    if let Some(set) = named_in.get_mut(&dir) {
        set.remove(&ino);
        if set.is_empty() {
            named_in.remove(&dir);
        }
    }
}

/// Most FIDs whose last break is remembered; past it the older half is
/// forgotten and promises from requests sent before them are refused.
const MAX_REMEMBERED_BREAKS: usize = 65_536;

impl NodeTable {
    /// A table whose root inode is the volume root `root`.
    pub fn new(root: Status, promise: Option<Promise>) -> Self {
        let mut t = NodeTable {
            nodes: HashMap::new(),
            by_fid: HashMap::new(),
            next_ino: ROOT_INO,
            mounts: HashMap::new(),
            mount_entries: HashMap::new(),
            break_gen: 0,
            broken: HashMap::new(),
            broken_volumes: HashMap::new(),
            pruned_gen: 0,
            named_in: HashMap::new(),
        };
        t.upsert(root, promise);
        t
    }

    /// Breaks applied so far: taken when a request is sent, carried by the
    /// promise its reply brings ([`Promise::breaks_seen`]).
    pub fn break_gen(&self) -> u64 {
        self.break_gen
    }

    /// Records a callback break on `fid`, so a reply that was already on its
    /// way cannot bring back a promise on what it describes.
    pub fn note_break(&mut self, fid: Fid) {
        self.break_gen += 1;
        if self.broken.len() >= MAX_REMEMBERED_BREAKS {
            let mut gens: Vec<u64> = self.broken.values().copied().collect();
            let (_, cut, _) = gens.select_nth_unstable(MAX_REMEMBERED_BREAKS / 2);
            let cut = *cut;
            self.broken.retain(|_, g| *g > cut);
            self.pruned_gen = self.pruned_gen.max(cut);
        }
        self.broken.insert(fid, self.break_gen);
    }

    /// Records a break of every promise in `volume`.
    pub fn note_volume_break(&mut self, volume: VolumeId) {
        self.break_gen += 1;
        self.broken_volumes.insert(volume, self.break_gen);
    }

    /// `promise`, unless a break on `fid` was applied after its request was sent.
    fn admit(&self, fid: Fid, promise: Option<Promise>) -> Option<Promise> {
        let p = promise?;
        let after_send = |g: &u64| *g > p.breaks_seen;
        if self.broken_volumes.get(&fid.volume).is_some_and(after_send) {
            return None;
        }
        match self.broken.get(&fid) {
            Some(g) => (!after_send(g)).then_some(p),
            // Forgotten breaks were all at or before `pruned_gen`.
            None => (p.breaks_seen >= self.pruned_gen).then_some(p),
        }
    }

    /// Records a status the server gave (and its promise), returning the inode.
    /// A changed data version drops the listing and target, which described the old one.
    pub fn upsert(&mut self, status: Status, promise: Option<Promise>) -> u64 {
        let promise = self.admit(status.fid, promise);
        if let Some(&ino) = self.by_fid.get(&status.fid) {
            let node = self.nodes.get_mut(&ino).expect("by_fid and nodes agree");
            if node.status.data_version != status.data_version {
                if node
                    .listing
                    .as_ref()
                    .is_some_and(|l| l.data_version != status.data_version)
                {
                    node.retire_listing();
                }
                if node.dirty.is_none() {
                    node.target = None;
                }
            }
            let keep_local = node.dirty.is_some();
            let (size, mtime) = (node.status.size, node.status.mtime);
            node.status = status;
            if keep_local {
                // The local copy holds unstored changes and is stored whole
                // (truncated to its length): its size is the file's, larger
                // or smaller (a deferred truncation) than the server's.
                node.status.size = size;
                node.status.mtime = node.status.mtime.max(mtime);
            }
            if promise.is_some() {
                node.promise = promise;
            }
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_fid.insert(status.fid, ino);
        self.nodes.insert(
            ino,
            Node {
                fid: status.fid,
                status,
                promise,
                listing: None,
                stale_listing: None,
                target: None,
                dirty: None,
                unsynced: false,
                kernel_dv: None,
                removed: false,
                lookups: 0,
                kernel_name: None,
            },
        );
        ino
    }

    /// Forgets `ino` and its FID (the root stays). Its number is not used
    /// again; a request for it finds nothing.
    pub fn remove(&mut self, ino: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return None;
        }
        let node = self.nodes.remove(&ino)?;
        if let Some((dir, _)) = &node.kernel_name {
            unname(&mut self.named_in, *dir, ino);
        }
        self.by_fid.remove(&node.fid);
        self.mounts.remove(&node.fid);
        self.mount_entries.remove(&node.fid);
        Some(node)
    }

    /// Counts one more entry the kernel was given for `ino`, as `name` in
    /// directory `dir` (one lookup of the node: this runs for every entry
    /// a lookup or readdirplus hands out).
    pub fn note_entry(&mut self, ino: u64, dir: u64, name: &str) {
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        n.lookups += 1;
        name_in(&mut self.named_in, n, ino, dir, name);
    }

    /// Records that the kernel was given an entry for `ino` as `name` in
    /// directory `dir` (its latest name there: a rename or another link
    /// replaces it).
    pub fn set_kernel_name(&mut self, ino: u64, dir: u64, name: &str) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            name_in(&mut self.named_in, n, ino, dir, name);
        }
    }

    /// The nodes the kernel was last given an entry for in directory `dir`.
    pub fn kernel_named_in(&self, dir: u64) -> impl Iterator<Item = &Node> {
        self.named_in
            .get(&dir)
            .into_iter()
            .flatten()
            .filter_map(|ino| self.nodes.get(ino))
    }

    /// How many nodes the table holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the table is empty (never once built: the root stays).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node for `ino`.
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The node for `ino`, mutable.
    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    /// The inode of `fid`, if known.
    pub fn ino_of(&self, fid: Fid) -> Option<u64> {
        self.by_fid.get(&fid).copied()
    }

    /// The volume root a mount point vnode leads to, if resolved before.
    pub fn mount_target(&self, mount_point: Fid) -> Option<Fid> {
        self.mounts.get(&mount_point).copied()
    }

    /// Remembers where a mount point leads.
    pub fn set_mount_target(&mut self, mount_point: Fid, root: Fid) {
        self.mounts.insert(mount_point, root);
    }

    /// Remembers the kernel entry a mount point was looked up by.
    pub fn note_mount_entry(&mut self, mount_point: Fid, parent: u64, name: &str) {
        if self.mount_entries.len() >= MAX_MOUNT_ENTRIES && !self.mount_entries.contains_key(&mount_point) {
            return;
        }
        self.mount_entries.insert(mount_point, (parent, name.to_owned()));
    }

    /// Forgets a mount point's resolution (it was removed or changed).
    pub fn forget_mount(&mut self, mount_point: Fid) {
        self.mounts.remove(&mount_point);
    }

    /// Forgets every mount point target in `volume`, so the next crossing
    /// asks the server where each leads; returns the kernel entries (parent
    /// inode, name) of those mount points, which must be dropped too.
    pub fn forget_mounts_into(&mut self, volume: VolumeId) -> Vec<(u64, String)> {
        let mut dropped = HashSet::new();
        self.mounts.retain(|mount_point, root| {
            let keep = root.volume != volume;
            if !keep {
                dropped.insert(*mount_point);
            }
            keep
        });
        if dropped.is_empty() {
            return Vec::new();
        }
        let mut entries: Vec<(u64, String)> = dropped
            .iter()
            .filter_map(|m| self.mount_entries.get(m).cloned())
            .collect();
        for (ino, n) in &self.nodes {
            let Some(listing) = &n.listing else { continue };
            for (name, fid) in &listing.entries {
                if dropped.contains(fid) {
                    entries.push((*ino, name.clone()));
                }
            }
        }
        entries
    }

    /// Every inode with its node.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Node)> {
        self.nodes.iter().map(|(i, n)| (*i, n))
    }

    /// Every node, mutable.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.nodes.values_mut()
    }

    /// Everything worth saving: nodes (with the promise time left at `now`
    /// under `epoch`) and mount point resolutions.
    pub fn export(&self, epoch: u64, now: Instant) -> (Vec<SavedNodeRef<'_>>, Vec<(Fid, Fid)>) {
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        let nodes = inos
            .into_iter()
            .filter_map(|ino| self.nodes.get(&ino))
            .map(|n| SavedNodeRef {
                status: &n.status,
                listing: n.listing.as_deref(),
                target: n.target.as_deref(),
                promise_left_ms: n.valid_for(epoch, now).map(|d| d.as_millis() as u64).unwrap_or(0),
            })
            .collect();
        (nodes, self.mounts.iter().map(|(m, r)| (*m, *r)).collect())
    }

    /// Rebuilds a table from a saved index whose root is `root`. Saved
    /// promises come back under epoch 0, which no connection has: they only
    /// tell [`crate::core::Core`]'s revalidation what was current when saved.
    pub fn import(root: Fid, saved: Vec<SavedNode>, mounts: Vec<(Fid, Fid)>, now: Instant) -> Option<Self> {
        let root_node = saved.iter().find(|n| n.status.fid == root)?.clone();
        let mut t = NodeTable::new(root_node.status.clone(), None);
        for n in std::iter::once(root_node).chain(saved.into_iter().filter(|n| n.status.fid != root)) {
            let promise = (n.promise_left_ms > 0).then(|| Promise {
                breaks_seen: 0,
                epoch: 0,
                until: now + Duration::from_millis(n.promise_left_ms),
            });
            let ino = t.upsert(n.status, promise);
            if let Some(node) = t.nodes.get_mut(&ino) {
                node.listing = n.listing.map(Arc::new);
                node.target = n.target;
            }
        }
        t.mounts = mounts.into_iter().collect();
        Some(t)
    }

    /// Applies a directory change this client made: `after` is the directory's
    /// status the server returned. When the change is the only one since our
    /// listing (`after.dv == listing.dv + 1`), `edit` patches the listing;
    /// otherwise someone else changed it too and the listing is dropped.
    pub fn apply_dir_change(&mut self, after: Status, promise: Option<Promise>, edit: impl FnOnce(&mut Listing)) {
        let dv = after.data_version;
        let ino = self.upsert_keep_listing(after, promise);
        if let Some(node) = self.nodes.get_mut(&ino) {
            match node.listing.as_mut() {
                Some(l) if l.data_version + 1 == dv => {
                    let l = Arc::make_mut(l);
                    edit(l);
                    l.data_version = dv;
                }
                _ => node.listing = None,
            }
        }
    }

    fn upsert_keep_listing(&mut self, status: Status, promise: Option<Promise>) -> u64 {
        let listing = self
            .by_fid
            .get(&status.fid)
            .and_then(|i| self.nodes.get_mut(i))
            .and_then(|n| n.listing.take());
        let ino = self.upsert(status, promise);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.listing = listing;
        }
        ino
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellfs_protocol::{FileKind, Timestamp};

    fn status(vnode: u64, dv: u64) -> Status {
        Status {
            fid: Fid {
                volume: 1,
                vnode,
                unique: 1,
            },
            kind: FileKind::Dir,
            mode: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            data_version: dv,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            atime: Timestamp::default(),
            acl_dir: 1,
        }
    }

    #[test]
    fn inodes_are_stable_per_fid_and_root_is_one() {
        let mut t = NodeTable::new(status(1, 1), None);
        assert_eq!(t.ino_of(status(1, 1).fid), Some(ROOT_INO));
        let a = t.upsert(status(5, 1), None);
        assert_eq!(t.upsert(status(5, 2), None), a);
        assert_ne!(t.upsert(status(6, 1), None), a);
    }

    #[test]
    fn kernel_names_are_found_by_directory_through_renames_and_removals() {
        let mut t = NodeTable::new(status(1, 1), None);
        let d = t.upsert(status(2, 1), None);
        let (a, b) = (t.upsert(status(3, 1), None), t.upsert(status(4, 1), None));
        let names = |t: &NodeTable, dir| {
            let mut v: Vec<String> = t
                .kernel_named_in(dir)
                .filter_map(|n| n.kernel_name().map(|(_, m)| m.to_owned()))
                .collect();
            v.sort();
            v
        };
        t.set_kernel_name(d, ROOT_INO, "d");
        t.set_kernel_name(a, d, "a");
        t.set_kernel_name(b, d, "b");
        assert_eq!(names(&t, d), ["a", "b"]);
        assert_eq!(names(&t, ROOT_INO), ["d"]);
        t.set_kernel_name(a, d, "a2");
        t.set_kernel_name(b, ROOT_INO, "b");
        assert_eq!(names(&t, d), ["a2"]);
        assert_eq!(names(&t, ROOT_INO), ["b", "d"]);
        t.remove(a);
        assert!(names(&t, d).is_empty());
        assert_eq!(t.named_in.get(&d), None, "an emptied directory leaves the index");
        t.set_kernel_name(999, d, "not in the table");
        assert!(names(&t, d).is_empty());
    }

    #[test]
    fn own_dir_change_patches_listing_and_foreign_change_drops_it() {
        let mut t = NodeTable::new(status(1, 1), None);
        t.get_mut(ROOT_INO).unwrap().listing = Some(Arc::new(Listing {
            data_version: 1,
            entries: BTreeMap::new(),
        }));
        t.apply_dir_change(status(1, 2), None, |l| {
            l.entries.insert("a".into(), status(9, 1).fid);
        });
        let l = t.get(ROOT_INO).unwrap().listing.clone().unwrap();
        assert_eq!((l.data_version, l.entries.len()), (2, 1));
        t.apply_dir_change(status(1, 4), None, |_| {});
        assert!(t.get(ROOT_INO).unwrap().listing.is_none());
    }

    #[test]
    fn export_import_round_trip_keeps_root_listings_and_promises() {
        let now = Instant::now();
        let mut t = NodeTable::new(
            status(1, 1),
            Some(Promise {
                epoch: 2,
                until: now + Duration::from_secs(30),
                breaks_seen: 0,
            }),
        );
        let child = t.upsert(status(7, 4), None);
        t.get_mut(ROOT_INO).unwrap().listing = Some(Arc::new(Listing {
            data_version: 1,
            entries: [("a".to_owned(), status(7, 4).fid)].into(),
        }));
        t.set_mount_target(status(9, 1).fid, status(7, 4).fid);
        let (saved, mounts) = t.export(2, now);
        // The borrowed export encodes exactly as the owned nodes it loads as.
        let saved: Vec<SavedNode> = bincode::deserialize(&bincode::serialize(&saved).unwrap()).unwrap();
        let back = NodeTable::import(status(1, 1).fid, saved, mounts, now).unwrap();
        let root = back.get(ROOT_INO).unwrap();
        assert_eq!(root.listing.as_ref().unwrap().entries.len(), 1);
        assert!(root.promise.is_some_and(|p| p.epoch == 0));
        assert_eq!(back.get(child).unwrap().status.data_version, 4);
        assert!(back.get(child).unwrap().promise.is_none());
        assert_eq!(back.mount_target(status(9, 1).fid), Some(status(7, 4).fid));
        assert!(NodeTable::import(status(5, 1).fid, Vec::new(), Vec::new(), now).is_none());
    }

    #[test]
    fn promise_remaining_respects_epoch_and_expiry() {
        let now = Instant::now();
        let p = Promise {
            epoch: 3,
            until: now + Duration::from_secs(10),
            breaks_seen: 0,
        };
        assert!(p.remaining(3, now).is_some());
        assert!(p.remaining(4, now).is_none());
        assert!(p.remaining(3, now + Duration::from_secs(11)).is_none());
    }

    #[test]
    fn a_reply_racing_a_break_brings_no_promise() {
        let now = Instant::now();
        let promise = |seen: u64| {
            Some(Promise {
                epoch: 1,
                until: now + Duration::from_secs(60),
                breaks_seen: seen,
            })
        };
        let mut t = NodeTable::new(status(1, 1), None);
        let sent = t.break_gen();
        // The break is applied while the reply that read version 1 is on its way.
        t.note_break(status(5, 1).fid);
        let ino = t.upsert(status(5, 1), promise(sent));
        assert!(
            t.get(ino).unwrap().promise.is_none(),
            "a stale reply must not bring a promise"
        );
        // A request sent after the break is fine; other FIDs are untouched.
        t.upsert(status(5, 2), promise(t.break_gen()));
        assert!(t.get(ino).unwrap().promise.is_some());
        let other = t.upsert(status(6, 1), promise(sent));
        assert!(t.get(other).unwrap().promise.is_some());
        // A whole-volume break voids every older promise in the volume.
        let before = t.break_gen();
        t.note_volume_break(1);
        let ino7 = t.upsert(status(7, 1), promise(before));
        assert!(t.get(ino7).unwrap().promise.is_none());
    }

    #[test]
    fn forgotten_breaks_make_older_promises_refused() {
        let now = Instant::now();
        let mut t = NodeTable::new(status(1, 1), None);
        let sent = t.break_gen();
        for v in 0..(MAX_REMEMBERED_BREAKS as u64 + 10) {
            t.note_break(status(1_000 + v, 1).fid);
        }
        let p = |seen: u64| {
            Some(Promise {
                epoch: 1,
                until: now + Duration::from_secs(60),
                breaks_seen: seen,
            })
        };
        // Never broken, but a break before `sent` may have been forgotten.
        let ino = t.upsert(status(9, 1), p(sent));
        assert!(t.get(ino).unwrap().promise.is_none());
        let ino = t.upsert(status(9, 1), p(t.break_gen()));
        assert!(t.get(ino).unwrap().promise.is_some());
        assert!(t.broken.len() <= MAX_REMEMBERED_BREAKS);
    }
}
