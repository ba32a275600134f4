//! The cache manager's logic, with no FUSE in it: lookups answered from cached
//! directory listings, whole-file fetches into the disk cache, close-to-open
//! stores, and callback breaks turned into kernel invalidations.
//!
//! Every method is synchronous (FUSE threads call it) and runs RPCs on the
//! tokio runtime it was given. The state lock is never held across an RPC.

use crate::arrival::Arrival;
use crate::cache::{CacheEntry, DiskCache};
use crate::error::{FsError, FsResult};
use crate::link::{DISCONNECTED_ERRNO, LinkError, LinkEvent};
use crate::links::Links;
use crate::nodes::{Listing, Node, NodeTable, Promise, ROOT_INO};
use crate::persist::{self, Snapshot, SnapshotRef};
use crate::readers;
use crate::rights::RightsCache;
use cellfs_protocol::acl::{AclChange, AclLine, Caller, Rights};
use cellfs_protocol::transport::CallError;
use cellfs_protocol::{Fid, FileKind, Reply, Request, SetAttr, Special, Status, VolumeId, VolumeInfo, VolumeKind};
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

mod breaks;
mod early;
mod fscmds;
mod kept;
mod locking;
pub use fscmds::{Flushed, PathInfo};
pub use locking::{Blocker, LockRequest};

/// Longest wait for the kernel to apply a break's invalidations before the
/// break is acknowledged anyway.
const ACK_WAIT: Duration = Duration::from_millis(250);

/// `Node::kernel_dv` of pages the kernel cached from a read whose version is
/// not known (no data version is 0): an open then never keeps them.
const UNKNOWN_PAGES: u64 = 0;

/// How often an unreachable fileserver is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often a server that refused this node's handshake is probed: its
/// certificates will not change by themselves, and each try costs it a log
/// line.
pub const REFUSED_PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// FIDs per `BulkStatus` when revalidating without a journal.
const BULK_CHUNK: usize = 1000;

/// Most negative entries remembered per directory; past it, misses are
/// answered with no kernel TTL.
const MAX_NEGATIVE_NAMES: usize = 4096;

/// How the core tells the kernel to drop what it cached (implemented over
/// fuser's `Notifier`; never called from inside a FUSE request).
pub trait KernelCache: Send + Sync {
    /// Drop attributes and cached pages of `ino`.
    fn inval_inode(&self, ino: u64);
    /// Drop the dentry (positive or negative) `name` in directory `parent`.
    fn inval_entry(&self, parent: u64, name: &str);
    /// Drop the dentry `name` in directory `parent` whose file `child` was
    /// deleted: the kernel also takes its links away, so it lets go of the
    /// inode (and forgets it) once nothing holds it.
    fn delete(&self, parent: u64, child: u64, name: &str);
    /// Put `data` in the kernel's page cache of `ino` from offset 0, so
    /// reading it takes no READ; false when it did not land (the kernel
    /// has no such inode yet).
    fn store(&self, ino: u64, data: &[u8]) -> bool;
}

/// An inode with its status and how long the kernel may trust it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Kernel inode number.
    pub ino: u64,
    /// Status to report.
    pub status: Status,
    /// Attribute and entry time-to-live.
    pub ttl: Duration,
}

/// Result of a lookup: found, or missing with how long the miss may be cached.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The name exists.
    Found(Entry),
    /// The name does not exist; the kernel may remember that this long.
    Missing(Duration),
}

/// Files at least this large are read as they arrive when fetched for a
/// reader; smaller ones arrive before the open returns.
pub const STREAM_MIN_SIZE: u64 = 4 << 20;

/// When a request was sent, and how many breaks had been applied by then.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    breaks_seen: u64,
}

/// Files at most this large are fetched together with the other small
/// files of their directory (`FetchFiles`).
const INLINE_FILE_MAX: u64 = 64 << 10;
/// Most files in one `FetchFiles`.
const INLINE_BATCH_FILES: usize = 256;
/// Most bytes of content asked for in one `FetchFiles`.
const INLINE_BATCH_BYTES: u64 = 4 << 20;
/// Most requests one batch of small files is split into, sent at once.
const FETCH_PARTS: usize = 4;
/// Fewest files in one part of a split batch.
const FETCH_PART_MIN: usize = 8;

/// A small file: fetched with the other small files of its folder.
fn is_small(n: &Node) -> bool {
    n.status.kind == FileKind::File && n.status.size <= INLINE_FILE_MAX
}

/// `batch` and then the other small files of `listing` with no current
/// local copy that nothing is writing, holding open or reading ahead, up
/// to one `FetchFiles`' worth: what to bring in one batch.
fn small_batch(st: &State, listing: &Listing, mut batch: Vec<Fid>) -> Vec<Fid> {
    let mut bytes = 0;
    for other in listing.entries.values() {
        if batch.len() >= INLINE_BATCH_FILES || bytes >= INLINE_BATCH_BYTES {
            break;
        }
        let Some(n) = st.nodes.ino_of(*other).and_then(|i| st.nodes.get(i)) else {
            continue;
        };
        let current = st
            .cache
            .peek(*other)
            .is_some_and(|c| c.data_version == n.status.data_version);
        let quiet = n.dirty.is_none() && st.cache.open_count(*other) == 0 && !st.reading_ahead.contains_key(other);
        if !batch.contains(other) && is_small(n) && !current && quiet {
            batch.push(*other);
            bytes += n.status.size;
        }
    }
    batch
}

/// The read-ahead parts `fids` is sent as: at most [`FETCH_PARTS`] - 1
/// requests (the opener's own part being the other), none smaller than
/// [`FETCH_PART_MIN`] files.
fn fetch_parts(fids: &[Fid]) -> std::slice::Chunks<'_, Fid> {
    fids.chunks(fids.len().div_ceil(FETCH_PARTS - 1).max(FETCH_PART_MIN))
}

/// When the open of `ino` found a current copy in a folder read ahead and
/// is the first there to do so: that folder (whose copies then go into the
/// kernel, which knows its inodes now, and whose next folder is read
/// ahead). Cheap when nothing is read ahead, as on a warm node.
fn reached_folder_ahead(st: &mut State, ino: u64) -> Option<u64> {
    if st.folders_ahead.is_empty() {
        return None;
    }
    let dir = *st.parents.get(&ino)?;
    st.folders_ahead.remove(&dir).then_some(dir)
}

/// The folder to read ahead when small file `ino` is opened without a
/// current copy, or is the first reached in a folder read ahead: the
/// folder after `ino`'s in their parent's listing, once per listing of
/// `ino`'s folder. A tree read folder by folder, as by `tar` or a cold PHP
/// application, finds the next one on its way; a warm node reads nothing
/// ahead.
fn next_folder(st: &mut State, ino: u64) -> Option<u64> {
    let dir = *st.parents.get(&ino)?;
    if !is_small(st.nodes.get(ino)?) {
        return None;
    }
    let dv = st.nodes.get(dir)?.listing.as_ref()?.data_version;
    if st.next_read_ahead.insert(dir, dv) == Some(dv) {
        return None;
    }
    let dir_fid = st.nodes.get(dir)?.fid;
    let listing = st.nodes.get(*st.parents.get(&dir)?)?.listing.clone()?;
    let (name, _) = listing.entries.iter().find(|(_, f)| **f == dir_fid)?;
    let later = (std::ops::Bound::Excluded(name.as_str()), std::ops::Bound::Unbounded);
    let next = listing.entries.range::<str, _>(later).find_map(|(_, f)| {
        let i = st.nodes.ino_of(*f)?;
        (st.nodes.get(i)?.status.kind == FileKind::Dir).then_some(i)
    })?;
    st.folders_ahead.insert(next);
    Some(next)
}

/// What one request of a split `FetchFiles` brought.
#[derive(Default)]
struct FetchedPart {
    /// Copies written into place, with their bytes.
    placed: Vec<(Status, Vec<u8>)>,
    /// The target's status when it came without its bytes.
    target: Option<Status>,
    /// Why the part stopped early.
    error: Option<FsError>,
}

impl FetchedPart {
    /// This part, stopped by `e`.
    fn failed(mut self, e: FsError) -> Self {
        self.error = Some(e);
        self
    }
}

/// An opened file as the FUSE layer needs it.
#[derive(Debug)]
pub struct Opened {
    /// The file handle.
    pub fh: u64,
    /// Whether the kernel's cached pages of the file are still good.
    pub keep_cache: bool,
    /// The local copy, when opened at once (a writer's, a stream's); a
    /// reader's is opened at its first READ or [`Core::handle_file`].
    pub file: Option<Arc<File>>,
    /// The file's size as last known.
    pub size: u64,
    /// The copy is still arriving: reads must come to the cache manager
    /// (no passthrough).
    pub streaming: bool,
}

/// Replaces the content of `dest` with that of `src`, keeping `dest`'s inode.
fn overwrite_in_place(src: &Path, dest: &Path) -> std::io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = File::options().write(true).open(dest)?;
    let len = std::io::copy(&mut from, &mut to)?;
    to.set_len(len)
}

/// (mtime in ns, size) of an open local copy: how passthrough writes show.
fn stamp(file: &File) -> std::io::Result<(i128, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata()?;
    Ok((
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        m.len(),
    ))
}

/// One row of a directory listing handed to readdir.
#[derive(Debug, Clone)]
pub struct DirItem {
    /// Inode of the entry.
    pub ino: u64,
    /// Kind of the entry (a mount point is shown as a directory).
    pub kind: FileKind,
    /// Entry name.
    pub name: String,
}

/// An open file: its local copy in the cache folder.
struct OpenFile {
    ino: u64,
    fid: Fid,
    /// The local copy: opened with the handle for a writer or a stream, at
    /// first use for a reader (a warm read is served from the kernel's
    /// pages and never needs it), again after a newer version took its
    /// place (see [`Core::refresh`]). See [`OpenFile::file`].
    file: Mutex<Option<HandleCopy>>,
    /// Opened for writing.
    write: bool,
    /// The kernel writes the local copy itself (FUSE passthrough): changes
    /// are found by comparing the file's (mtime, size) with `seen`.
    passthrough: std::sync::atomic::AtomicBool,
    /// (mtime ns, size) of the local copy when last checked.
    seen: Mutex<(i128, u64)>,
    /// Who opened it: stores of what it wrote are made for them.
    caller: Option<Arc<Caller>>,
    /// Opened with `O_APPEND`: each write goes to the copy's end.
    append: std::sync::atomic::AtomicBool,
    /// The fetch still bringing the copy, when the handle reads it as it
    /// arrives.
    arrival: Option<Arc<Arrival>>,
    /// [`Core::drops`] when this handle's reads last marked the kernel's
    /// pages (see [`Core::read`]).
    drops_seen: AtomicU64,
}

impl OpenFile {
    /// The handle's local copy, opened now if it was not yet: the copy is
    /// pinned while the handle lives, so its name still holds it (or the
    /// version a fetch has put there since, which a reader may see). Takes
    /// the state lock when it opens: never called with the lock held.
    fn file(&self, core: &Core) -> std::io::Result<Arc<File>> {
        if let Some(c) = self.opened() {
            return Ok(c.file);
        }
        let opened = HandleCopy::open(core, self.fid)?;
        Ok(self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(opened)
            .file
            .clone())
    }

    /// The copy this handle has open, if it opened one yet.
    fn opened(&self) -> Option<HandleCopy> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opens the copy at its name again (a newer version was placed there).
    fn reopen(&self, core: &Core) -> std::io::Result<()> {
        let opened = HandleCopy::open(core, self.fid)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(opened);
        Ok(())
    }
}

/// The local copy a handle has open, and the data version the cache had
/// for it then.
#[derive(Clone)]
struct HandleCopy {
    file: Arc<File>,
    data_version: Option<u64>,
}

impl HandleCopy {
    /// The copy of `fid` now at its name. Takes the state lock.
    fn open(core: &Core, fid: Fid) -> std::io::Result<Self> {
        let st = core.lock();
        Ok(HandleCopy {
            file: Arc::new(st.cache.open_file(fid)?),
            data_version: st.cache.peek(fid).map(|c| c.data_version),
        })
    }
}

struct State {
    /// Per directory inode, the names we answered as missing with a TTL: the
    /// kernel's negative entries, dropped when the directory's names change
    /// in ways a break does not list.
    negatives: HashMap<u64, HashSet<String>>,
    /// Per volume, whether it refuses changes (backup clones): learned at
    /// the first open for writing in it, which then fails at once.
    volume_read_only: HashMap<VolumeId, bool>,
    nodes: NodeTable,
    cache: DiskCache,
    files: HashMap<u64, Arc<OpenFile>>,
    /// Inodes with handles open for writing through passthrough, and how many.
    direct_writers: HashMap<u64, u32>,
    /// Files whose writes were kept (a store found the server unreachable)
    /// while a handle stayed open for writing: that handle's later writes
    /// join them, and its next store sends the whole copy on their version
    /// (`core/kept.rs`).
    rewrites: HashMap<Fid, kept::Rewrite>,
    /// Directory each file was last listed in (for fetching its small
    /// neighbours with it).
    parents: HashMap<u64, u64>,
    /// Readdir rows of each directory and the data version they reflect
    /// (not the listing itself: sharing it would make each local change
    /// copy the whole listing).
    dir_items: HashMap<u64, (u64, Arc<Vec<DirItem>>)>,
    next_fh: u64,
    /// Per volume: (incarnation, change number) up to which our promises
    /// are known to reflect the server; where a reconnect asks from.
    baselines: HashMap<VolumeId, (u64, u64)>,
    /// Rights the server granted callers under each directory ACL.
    rights: RightsCache,
    /// Large files being fetched for readers, who read them as they arrive:
    /// the progress and the copy being written.
    streams: HashMap<Fid, (Arc<Arrival>, Arc<File>)>,
    /// Small files a read-ahead part of a `FetchFiles` batch is bringing,
    /// behind the open that asked for the batch: an open of one waits for
    /// its part instead of fetching it again.
    reading_ahead: HashMap<Fid, Arc<Arrival>>,
    /// Folders whose next sibling folder was read ahead, and the data
    /// version of their listing then (once per listing).
    next_read_ahead: HashMap<u64, u64>,
    /// Folders read ahead that no open has reached yet: the first that
    /// does reads ahead the folder after it, so a tree read folder by
    /// folder stays one folder ahead.
    folders_ahead: HashSet<u64>,
    /// The file whose pages are being put in the kernel right now.
    pushing: Option<Fid>,
    /// Inodes whose unstored bytes are being stored right now, and how
    /// that store ended, for flushes of the same inode that wait for it.
    storing: HashMap<u64, Arc<StoreSlot>>,
    /// FIDs the server set aside for creates answered here (`core/early.rs`).
    fid_pool: early::FidPool,
    /// Files answered early whose create has no answer from the server yet.
    /// Their folder's inode and the latch their answer ends.
    creating: HashMap<u64, (u64, Arc<Arrival>)>,
    /// Files answered early whose create the server refused, and the file
    /// made (or found) at their name since, which their close stores into
    /// (`None`: not made yet, the close makes it).
    failed_creates: HashMap<u64, Option<Fid>>,
}

/// One store of an inode's unstored bytes in flight, and its outcome.
#[derive(Default)]
struct StoreSlot {
    done: Mutex<Option<FsResult<()>>>,
    ended: std::sync::Condvar,
}

impl StoreSlot {
    fn finish(&self, result: FsResult<()>) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.ended.notify_all();
    }

    fn wait(&self) -> FsResult<()> {
        readers::before_wait();
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = done.as_ref() {
                return result.clone();
            }
            done = self.ended.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Ends an inode's store slot however the store ends (a panic included),
/// so flushes waiting on it never hang.
struct Storing<'a> {
    core: &'a Core,
    ino: u64,
    slot: Arc<StoreSlot>,
    result: Option<FsResult<()>>,
}

impl Drop for Storing<'_> {
    fn drop(&mut self) {
        self.core.lock().storing.remove(&self.ino);
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(FsError::new(libc::EIO, "the store ended without a result")));
        self.slot.finish(result);
    }
}

impl State {
    /// Whether the kernel reads or writes some copy of `fid` directly
    /// (passthrough): then every open of it must pass through to that one
    /// file, and a new version goes into it whole.
    fn passed_through(&self, fid: Fid) -> bool {
        self.files
            .values()
            .any(|h| h.fid == fid && h.passthrough.load(Ordering::Relaxed))
    }

    /// The node of `ino`, or `ENOENT`.
    fn node(&self, ino: u64) -> FsResult<&Node> {
        self.nodes
            .get(ino)
            .ok_or_else(|| FsError::not_found(format!("inode {ino}")))
    }
}

/// The cache manager core for one mount.
pub struct Core {
    link: Links,
    rt: tokio::runtime::Handle,
    state: Mutex<State>,
    kernel: OnceLock<Box<dyn KernelCache>>,
    cell: OnceLock<String>,
    mountpoint: OnceLock<std::path::PathBuf>,
    last_revalidation: Mutex<Option<Revalidation>>,
    closing: std::sync::atomic::AtomicBool,
    probing: std::sync::atomic::AtomicBool,
    /// Set while kept writes are being stored (`core/kept.rs`).
    storing_kept: std::sync::atomic::AtomicBool,
    /// Kept writes were asked to be stored again during a run.
    kept_again: std::sync::atomic::AtomicBool,
    locks: Mutex<locking::NodeLocks>,
    locks_changed: std::sync::Condvar,
    /// This core, for fetches that finish on threads of their own.
    me: OnceLock<std::sync::Weak<Core>>,
    /// Held while pages are put in the kernel and while the kernel is told
    /// to drop an inode's pages, so a version's pages can never arrive after
    /// the invalidation that the version's break caused. Never taken on a
    /// FUSE thread: the invalidation may wait for READs those threads serve.
    pages: Mutex<()>,
    /// Writes whose store found the server unreachable, kept until it
    /// answers (`core/kept.rs`).
    unstored: crate::unstored::Unstored,
    /// Signalled when a push of a file's pages ends (`State::pushing`).
    pushed: std::sync::Condvar,
    /// How many times the kernel was told to drop inodes' pages (bumped
    /// under the state lock): a READ takes the lock to mark pages only
    /// when this moved since its handle last looked.
    drops: AtomicU64,
}

impl Core {
    /// The runtime the core's network calls run on (its blocking pool
    /// serves requests deferred from the FUSE threads).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Opens the disk cache in `cache_dir` (limited to `cache_size` bytes) with
    /// the index saved by the last run, connects through `link` and resolves
    /// the cell's root volume. When the fileserver cannot be reached but the
    /// cache holds an index of cell `cell`, it starts disconnected and serves
    /// the cache; the link probes in the background.
    pub fn start(
        link: Links,
        rt: tokio::runtime::Handle,
        cache_dir: &Path,
        cache_size: u64,
        cell: &str,
    ) -> anyhow::Result<Arc<Self>> {
        let saved = match persist::load(cache_dir) {
            Ok(s) => s.filter(|s| s.cell == cell),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the saved cache index");
                None
            }
        };
        let copies = saved.as_ref().map(|s| s.copies.clone()).unwrap_or_default();
        let mut cache = DiskCache::open(cache_dir, cache_size, copies)?;
        for fid in saved.iter().flat_map(|s| s.hoarded.iter()) {
            cache.hoard(*fid);
        }
        let online = rt.block_on(async {
            link.connect().await?;
            let root_volume = link.info().map(|i| i.root_volume).unwrap_or_else(|| "root.cell".into());
            let sent = Sent {
                at: Instant::now(),
                breaks_seen: 0,
            };
            let reply = link.call(&Request::GetRoot { volume: root_volume }).await?;
            Ok::<_, LinkError>((reply, sent))
        });
        let now = Instant::now();
        let restore = |snap: Snapshot, root: Fid| {
            let baselines = snap.baselines.into_iter().collect();
            NodeTable::import(root, snap.nodes, snap.mounts, now).map(|t| (t, baselines))
        };
        let (nodes, baselines, root_reply, warm) = match (online, saved) {
            (Ok((Reply::Status(root), sent)), saved) => {
                let restored = saved.filter(|s| s.root == root.fid).and_then(|s| restore(s, root.fid));
                let warm = restored.is_some();
                let (nodes, baselines) =
                    restored.unwrap_or_else(|| (NodeTable::new(root.clone(), None), HashMap::new()));
                (nodes, baselines, Some((root, sent)), warm)
            }
            (Ok(_), _) => anyhow::bail!("unexpected reply to GetRoot"),
            (Err(e), Some(snap)) => {
                let root = snap.root;
                let (nodes, baselines) =
                    restore(snap, root).ok_or_else(|| anyhow::anyhow!("the saved cache index has no root"))?;
                tracing::warn!(error = %e, "fileserver unreachable at start: serving the cache of the last run read-only");
                (nodes, baselines, None, true)
            }
            (Err(e), None) => {
                return Err(anyhow::Error::new(e)
                    .context("the fileserver is unreachable and the cache holds no index to serve"));
            }
        };
        let core = Arc::new(Core {
            state: Mutex::new(State {
                negatives: HashMap::new(),
                volume_read_only: HashMap::new(),
                nodes,
                cache,
                files: HashMap::new(),
                dir_items: HashMap::new(),
                parents: HashMap::new(),
                direct_writers: HashMap::new(),
                rewrites: HashMap::new(),
                next_fh: 1,
                baselines,
                rights: RightsCache::default(),
                streams: HashMap::new(),
                reading_ahead: HashMap::new(),
                next_read_ahead: HashMap::new(),
                folders_ahead: HashSet::new(),
                pushing: None,
                storing: HashMap::new(),
                fid_pool: early::FidPool::default(),
                creating: HashMap::new(),
                failed_creates: HashMap::new(),
            }),
            link,
            rt,
            unstored: {
                let u = crate::unstored::Unstored::new(cache_dir);
                u.discard_partial();
                u
            },
            kernel: OnceLock::new(),
            pages: Mutex::new(()),
            pushed: std::sync::Condvar::new(),
            drops: 0.into(),
            cell: OnceLock::from(cell.to_owned()),
            last_revalidation: Mutex::new(None),
            mountpoint: OnceLock::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            probing: std::sync::atomic::AtomicBool::new(false),
            storing_kept: std::sync::atomic::AtomicBool::new(false),
            kept_again: std::sync::atomic::AtomicBool::new(false),
            locks: Mutex::default(),
            locks_changed: std::sync::Condvar::new(),
            me: OnceLock::new(),
        });
        let _ = core.me.set(Arc::downgrade(&core));
        if let Some((root, sent)) = root_reply {
            let volume = root.fid.volume;
            core.link.route_to_primary(volume);
            let promise = core.promise_from(sent);
            core.lock().nodes.upsert(root, promise);
            if warm {
                // Bring the saved state up to date before serving.
                core.revalidate();
            }
            core.learn_baseline(volume);
            core.spawn_store_kept();
        }
        Ok(core)
    }

    /// The saved index's bytes for the state now, and the folder they go
    /// to. Encoded under the state lock straight from the live tables
    /// (borrowed, not copied), so a save costs its bytes in memory.
    fn encoded_index(&self) -> Option<(PathBuf, Vec<u8>)> {
        let st = self.lock();
        let cell = self.link.info().map(|i| i.cell).or_else(|| self.cell.get().cloned())?;
        let root = st.nodes.get(ROOT_INO)?.fid;
        let (nodes, mounts) = st.nodes.export(self.link.epoch(), Instant::now());
        let dirty: HashSet<Fid> = st
            .nodes
            .iter()
            .filter(|(_, n)| n.dirty.is_some())
            .map(|(_, n)| n.fid)
            .collect();
        let copies = st
            .cache
            .entries()
            .into_iter()
            .filter(|(f, _)| !dirty.contains(f))
            .collect();
        let snap = SnapshotRef {
            cell: &cell,
            root,
            nodes,
            mounts,
            baselines: st.baselines.iter().map(|(v, b)| (*v, *b)).collect(),
            copies,
            hoarded: st.cache.hoarded(),
        };
        match persist::encode(&snap) {
            Ok(bytes) => Some((st.cache.root().to_owned(), bytes)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the cache index");
                None
            }
        }
    }

    /// Saves the cache index so the next start comes back warm.
    pub fn save_index(&self) {
        let Some((dir, bytes)) = self.encoded_index() else {
            return;
        };
        if let Err(e) = persist::write(&dir, &bytes) {
            tracing::warn!(error = %e, "cannot save the cache index");
        }
        drop(bytes);
        cellfs_protocol::allocator::trim();
    }

    /// Records where the cell is mounted (for status and pin).
    pub fn set_mountpoint(&self, path: std::path::PathBuf) {
        let _ = self.mountpoint.set(path);
    }

    /// Installs the kernel notifier (once the FUSE session exists).
    pub fn set_kernel_cache(&self, kernel: Box<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    /// Handles link events (callback breaks, reconnects) until the channel closes.
    pub async fn run_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<LinkEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Message(msg, ack) => {
                    let core = self.clone();
                    let applied = tokio::task::spawn_blocking(move || core.apply_server_message(msg));
                    // inval_entry takes the directory's lock in the kernel. If a
                    // request of ours holds it while it waits on the server, and
                    // the server waits on this ack, only a bounded wait breaks
                    // the cycle; the invalidation then completes on its own.
                    if tokio::time::timeout(ACK_WAIT, applied).await.is_err() {
                        tracing::debug!("kernel invalidation still pending; acknowledging the break anyway");
                    }
                    if let Err(e) = ack.ack().await {
                        tracing::debug!(error = %e, "could not acknowledge callback break");
                    }
                }
                LinkEvent::Lost => {
                    if !self.probing.swap(true, Ordering::AcqRel) {
                        let core = self.clone();
                        tokio::spawn(async move { core.probe_until_up().await });
                    }
                }
                LinkEvent::Reconnected => {
                    let core = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        core.revalidate();
                        core.reassert_locks();
                    })
                    .await;
                    self.spawn_store_kept();
                }
            }
        }
    }

    /// Probes the fileserver in the background after the connection was lost
    /// or the server stopped answering, until it answers again; the new
    /// connection then triggers [`Core::revalidate`].
    async fn probe_until_up(&self) {
        loop {
            if self.closing.load(Ordering::Acquire) || self.link.probe().await {
                break;
            }
            let wait = match self.link.any_refused() {
                true => REFUSED_PROBE_INTERVAL,
                false => PROBE_INTERVAL,
            };
            tokio::time::sleep(wait).await;
        }
        self.probing.store(false, Ordering::Release);
    }

    /// Closes the server connection.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        self.save_index();
        self.rt.block_on(self.link.close());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` to its end on the runtime, from a thread outside it (a FUSE
    /// thread, which first lets another thread read the kernel's requests).
    fn wait<F: std::future::Future>(&self, f: F) -> F::Output {
        readers::before_wait();
        self.rt.block_on(f)
    }

    /// A request that only reads: while the server is unreachable it fails
    /// at once with [`DISCONNECTED_ERRNO`].
    fn call(&self, req: Request) -> FsResult<(Reply, Option<Promise>)> {
        let sent = self.sent();
        let reply = self.wait(self.link.call(&req))?;
        Ok((reply, self.promise_from(sent)))
    }

    /// Refuses with `EACCES` when the caller of the kernel request being
    /// served lacks `need` under the ACL governing `ino`, as the server
    /// granted it (asked once per directory, caller and promise). Work
    /// without a caller is the node's own. While the server is unreachable
    /// and the caller's rights were never learned, the node serves its cache
    /// (a web node keeps serving; see docs/SECURITY.md).
    fn check_rights(&self, ino: u64, need: Rights) -> FsResult<()> {
        let Some(caller) = crate::caller::current() else {
            return Ok(());
        };
        let epoch = self.link.epoch();
        let (fid, dir, owner, cached) = {
            let st = self.lock();
            let n = st.node(ino)?;
            let dir = (n.fid.volume, n.status.acl_dir);
            let cached = st.rights.get(dir, &caller, epoch, Instant::now());
            (n.fid, dir, n.status.uid == caller.uid, cached)
        };
        let granted = match cached {
            Some(r) => r,
            None if self.link.is_down_for(fid.volume) => return Ok(()),
            None => {
                let sent = self.sent();
                let rights = match self.call(Request::GetRights { fid }) {
                    Ok((Reply::Rights(r), _)) => r,
                    Ok(_) => return Err(FsError::new(libc::EIO, "unexpected reply to GetRights")),
                    Err(e) if e.errno == DISCONNECTED_ERRNO => return Ok(()),
                    Err(e) => return Err(e),
                };
                let mut st = self.lock();
                // A break after the request was sent may have changed the ACL.
                if st.nodes.break_gen() == sent.breaks_seen
                    && let Some(p) = self.promise_from(sent)
                {
                    st.rights.put(dir, &caller, rights, p.epoch, p.until);
                }
                rights
            }
        };
        if granted.allow(need, owner) {
            Ok(())
        } else {
            Err(FsError::new(
                libc::EACCES,
                format!("uid {} lacks the {need} right on {fid}", caller.uid),
            ))
        }
    }

    /// A request that changes the cell: refused with `EROFS` at once while
    /// the cell is disconnected.
    fn change(&self, req: Request) -> FsResult<(Reply, Option<Promise>)> {
        let down = match req.volume() {
            Some(v) => self.link.is_down_for(v),
            None => self.link.is_down(),
        };
        if down {
            return Err(disconnected(req.op_name()));
        }
        let sent = self.sent();
        match self.wait(self.link.call(&req)) {
            Ok(reply) => Ok((reply, self.promise_from(sent))),
            Err(e) if e.is_unreachable() => Err(disconnected(req.op_name())),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether what we cached of `n` may be served without asking the server:
    /// under a valid promise, or, while the server is unreachable, whatever
    /// we last knew (a web node keeps serving its cache).
    fn usable(&self, n: &Node) -> bool {
        n.valid_for(self.link.epoch(), Instant::now()).is_some() || self.link.is_down_for(n.fid.volume)
    }

    /// `r`, or when it failed because the server became unreachable, what
    /// `cached` finds in our state.
    fn or_cached<T>(&self, r: FsResult<T>, cached: impl FnOnce(&State) -> Option<T>) -> FsResult<T> {
        match r {
            Err(e) if self.link.any_down() => cached(&self.lock()).ok_or(e),
            other => other,
        }
    }

    /// Marks a request about to be sent: the promise its reply brings runs
    /// from now and is void if a break is applied before the reply is.
    /// This core as an owned handle, for work finished on another thread;
    /// `None` while it is being dropped.
    fn shared(&self) -> Option<Arc<Core>> {
        self.me.get().and_then(std::sync::Weak::upgrade)
    }

    fn sent(&self) -> Sent {
        Sent {
            at: Instant::now(),
            breaks_seen: self.lock().nodes.break_gen(),
        }
    }

    fn promise_from(&self, sent: Sent) -> Option<Promise> {
        let secs = self.link.promise_secs()?;
        Some(Promise {
            epoch: self.link.epoch(),
            until: sent.at + Duration::from_secs(secs),
            breaks_seen: sent.breaks_seen,
        })
    }

    fn ttl(&self, node: &Node) -> Duration {
        node.valid_for(self.link.epoch(), Instant::now())
            .unwrap_or(Duration::ZERO)
    }

    fn entry(&self, st: &State, ino: u64) -> FsResult<Entry> {
        let node = st.node(ino)?;
        let mut status = node.status.clone();
        if node.removed {
            // The kernel was told it has no links; so is `fstat`.
            status.nlink = 0;
        }
        Ok(Entry {
            ino,
            status,
            ttl: self.ttl(node),
        })
    }

    fn node_fid(&self, ino: u64) -> FsResult<(Fid, FileKind)> {
        let st = self.lock();
        let n = st.node(ino)?;
        Ok((n.fid, n.status.kind))
    }

    // ---- directories -------------------------------------------------------

    /// The listing of directory `ino`, fetched (with every entry's status) when
    /// we hold no valid promise on it.
    fn listing(&self, ino: u64) -> FsResult<Arc<Listing>> {
        let fid = {
            let st = self.lock();
            let n = st.node(ino)?;
            if n.status.kind != FileKind::Dir {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"));
            }
            if let Some(l) = n.listing.as_ref().filter(|_| self.usable(n)) {
                return Ok(l.clone());
            }
            n.fid
        };
        // The server's listing then holds the files answered early here.
        self.wait_creates();
        let sent = self.sent();
        let (reply, promise) = match self.call(Request::ReadDir { dir: fid }) {
            Ok(r) => r,
            Err(e) => {
                return self.or_cached(Err(e), |st| {
                    let n = st.nodes.get(ino)?;
                    n.listing.clone().or_else(|| n.stale_listing.clone())
                });
            }
        };
        let Reply::Dir { dir, entries, rights } = reply else {
            return Err(unexpected("read_dir"));
        };
        let mut st = self.lock();
        // The listing brings the caller's rights under this directory's ACL
        // (and so on the files it governs): no `GetRights` for them.
        if let (Some(caller), Some(p)) = (crate::caller::current(), promise)
            && st.nodes.break_gen() == sent.breaks_seen
        {
            st.rights
                .put((fid.volume, fid.vnode), &caller, rights, p.epoch, p.until);
        }
        let listing = Arc::new(Listing {
            data_version: dir.data_version,
            entries: entries.iter().map(|e| (e.name.clone(), e.status.fid)).collect(),
        });
        let dir_ino = st.nodes.upsert(dir, promise);
        for e in entries {
            let child = st.nodes.upsert(e.status, promise);
            st.parents.insert(child, dir_ino);
        }
        let ino = dir_ino;
        if let Some(n) = st.nodes.get_mut(ino) {
            n.listing = Some(listing.clone());
            n.stale_listing = None;
        }
        Ok(listing)
    }

    /// Looks `name` up in directory `parent`, crossing mount points.
    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Lookup> {
        // The listing first: fetching it brings the caller's rights along.
        let listing = self.listing(parent)?;
        self.check_rights(parent, Rights::LOOKUP)?;
        let Some(&fid) = listing.entries.get(name) else {
            let mut st = self.lock();
            let ttl = st.nodes.get(parent).map(|n| self.ttl(n)).unwrap_or_default();
            // The kernel keeps a negative entry only while we can name it to
            // drop later (a break that does not list names, such as a volume
            // break, must reach it too).
            let names = st.negatives.entry(parent).or_default();
            if !names.contains(name) {
                if names.len() >= MAX_NEGATIVE_NAMES {
                    return Ok(Lookup::Missing(Duration::ZERO));
                }
                names.insert(name.to_owned());
            }
            return Ok(Lookup::Missing(ttl));
        };
        let (ino, kind) = {
            let st = self.lock();
            let ino = st.nodes.ino_of(fid).ok_or_else(|| FsError::not_found(name))?;
            (ino, st.nodes.get(ino).map(|n| n.status.kind))
        };
        if kind == Some(FileKind::MountPoint) {
            self.lock().nodes.note_mount_entry(fid, parent, name);
            return self.cross_mount(fid).map(Lookup::Found);
        }
        let st = self.lock();
        self.entry(&st, ino).map(Lookup::Found)
    }

    /// The root of the volume a mount point leads to.
    fn cross_mount(&self, mount_point: Fid) -> FsResult<Entry> {
        let known = self.lock().nodes.mount_target(mount_point);
        if let Some(root) = known {
            let ino = self.lock().nodes.ino_of(root);
            if let Some(ino) = ino {
                return self.getattr(ino);
            }
        }
        let (reply, _) = self.call(Request::ReadLink { fid: mount_point })?;
        let Reply::Link(target) = reply else {
            return Err(unexpected("read_link"));
        };
        let (volume, read_write) = cellfs_protocol::names::parse_mount_target(&target);
        let req = Request::GetMountRoot {
            volume: volume.to_owned(),
            read_write,
        };
        let (reply, promise) = self.call(req)?;
        let Reply::MountRoot { volume, sites, root } = reply else {
            return Err(unexpected("get_mount_root"));
        };
        self.link.set_route(volume, &sites);
        let (root, promise) = match root {
            Some(root) => (root, promise),
            None => match self.call(Request::FetchStatus { fid: Fid::root(volume) })? {
                (Reply::Status(root), promise) => (root, promise),
                _ => return Err(unexpected("fetch_status")),
            },
        };
        self.learn_baseline(root.fid.volume);
        let mut st = self.lock();
        st.nodes.set_mount_target(mount_point, root.fid);
        let ino = st.nodes.upsert(root, promise);
        self.entry(&st, ino)
    }

    /// The entries of directory `ino` for readdir, in a stable order, built
    /// once per listing (the kernel reads a large directory a page at a time).
    pub fn dir_items(&self, ino: u64) -> FsResult<Arc<Vec<DirItem>>> {
        let listing = self.listing(ino)?;
        self.check_rights(ino, Rights::LOOKUP)?;
        let mut st = self.lock();
        // A directory's entries are the same at the same data version.
        if let Some((dv, items)) = st.dir_items.get(&ino)
            && *dv == listing.data_version
        {
            return Ok(items.clone());
        }
        let items: Arc<Vec<DirItem>> = Arc::new(
            listing
                .entries
                .iter()
                .filter_map(|(name, fid)| {
                    let ino = st.nodes.ino_of(*fid)?;
                    Some(DirItem {
                        ino,
                        kind: st.nodes.get(ino)?.status.kind,
                        name: name.clone(),
                    })
                })
                .collect(),
        );
        st.dir_items.insert(ino, (listing.data_version, items.clone()));
        Ok(items)
    }

    /// Current attributes of `items` for readdirplus (`None` for an entry
    /// whose node is gone).
    pub fn entries_of(&self, items: &[DirItem]) -> Vec<Option<Entry>> {
        let st = self.lock();
        items.iter().map(|i| self.entry(&st, i.ino).ok()).collect()
    }

    // ---- attributes --------------------------------------------------------

    /// Status of `ino`, revalidated with the server when its promise lapsed.
    pub fn getattr(&self, ino: u64) -> FsResult<Entry> {
        // The kernel writes passthrough files without telling us: size and
        // mtime come from the local copy while such a writer is open.
        self.note_direct_writes_of(ino)?;
        // A folder's times and size move with the creates in it.
        self.wait_creates_in(ino);
        let (fid, stale_small_copy) = {
            let st = self.lock();
            let n = st.node(ino)?;
            if self.usable(n) || n.dirty.is_some() || n.status.nlink == 0 {
                return self.entry(&st, ino);
            }
            let stale_small_copy = n.status.kind == FileKind::File
                && n.status.size <= INLINE_FILE_MAX
                && st.cache.peek(n.fid).is_some()
                && st.cache.open_count(n.fid) == 0;
            (n.fid, stale_small_copy)
        };
        // A small file read here before and changed since (the stat before
        // the next open, after another node's write): its status and bytes
        // in one round trip, so the open that follows is local. Refused
        // (say, no read right) or failed: the status alone, below.
        if stale_small_copy {
            match self.fetch_inline(vec![fid], fid, INLINE_FILE_MAX) {
                Ok(_) => {
                    let st = self.lock();
                    let n = st.node(ino)?;
                    if n.valid_for(self.link.epoch(), Instant::now()).is_some() {
                        return self.entry(&st, ino);
                    }
                }
                Err(e) if self.link.any_down() => return self.or_cached(Err(e), |st| self.entry(st, ino).ok()),
                Err(_) => {}
            }
        }
        let (reply, promise) = match self.call(Request::FetchStatus { fid }) {
            Ok(r) => r,
            // Removed by another node after this node's promise lapsed (no
            // break came): forgotten as a break would have, and answered as
            // an unlinked file while held; its node goes at the last close
            // or the kernel's forget, whichever is later.
            Err(e) if e.errno == libc::ESTALE => {
                let mut st = self.lock();
                forget_deleted(&mut st, fid);
                // Still held by the kernel (this stat came through it): a
                // deleted file with no links, as an unlinked open file is.
                return self.entry(&st, ino).map_err(|_| e);
            }
            Err(e) => return self.or_cached(Err(e), |st| self.entry(st, ino).ok()),
        };
        let Reply::Status(status) = reply else {
            return Err(unexpected("fetch_status"));
        };
        let mut st = self.lock();
        let ino = st.nodes.upsert(status, promise);
        self.entry(&st, ino)
    }

    /// chmod/chown/utimes/truncate.
    pub fn setattr(&self, ino: u64, attr: SetAttr, fh: Option<u64>) -> FsResult<Entry> {
        if let Some(entry) = self.empty_for_writer(ino, &attr, fh)? {
            return Ok(entry);
        }
        if let Some(entry) = self.setattr_deleted(ino, &attr)? {
            return Ok(entry);
        }
        let (fid, _) = self.node_fid(ino)?;
        if attr.size.is_some() || attr.mtime.is_some() {
            // Unstored writes go first, so the truncate or the explicit time
            // (tar and cp -p set it after writing) applies after them.
            self.note_direct_writes_of(ino)?;
            self.flush_ino(ino)?;
        }
        let (reply, promise) = self.change(Request::SetAttr {
            fid,
            attr: attr.clone(),
        })?;
        let Reply::Status(status) = reply else {
            return Err(unexpected("set_attr"));
        };
        let mut st = self.lock();
        if let Some(size) = attr.size
            && st.cache.get(fid).is_some()
        {
            let resized = File::options()
                .write(true)
                .open(st.cache.path(fid))
                .and_then(|f| f.set_len(size));
            match resized {
                Ok(()) => {
                    st.cache.resize(fid, size);
                    st.cache
                        .advance(fid, status.data_version.saturating_sub(1), status.data_version);
                }
                Err(e) => {
                    tracing::warn!(%fid, error = %e, "cannot truncate the cached copy; dropping it");
                    st.cache.remove(fid);
                }
            }
        }
        let ino = st.nodes.upsert(status, promise);
        self.entry(&st, ino)
    }

    /// chmod/chown/utimes/truncate of a file deleted while open here
    /// (`fchmod` after `unlink`): no server holds it any more, so the change
    /// is made to what this node keeps until the last close. `None` for a
    /// file that exists.
    fn setattr_deleted(&self, ino: u64, attr: &SetAttr) -> FsResult<Option<Entry>> {
        // The copy is truncated through an open handle, outside the state
        // lock (the cache no longer lists the copy; its handles pin it).
        let handle = {
            let st = self.lock();
            if st.nodes.get(ino).is_none_or(|n| n.status.nlink != 0) {
                return Ok(None);
            }
            st.files.values().find(|h| h.ino == ino && h.arrival.is_none()).cloned()
        };
        if let Some(size) = attr.size {
            let h = handle.ok_or_else(|| FsError::new(libc::ESTALE, "removed and no longer open"))?;
            h.file(self)
                .and_then(|f| f.set_len(size))
                .map_err(|e| FsError::local("truncate", e))?;
        }
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(ino) {
            let s = &mut n.status;
            s.mode = attr.mode.map_or(s.mode, |m| m & 0o7777);
            s.uid = attr.uid.unwrap_or(s.uid);
            s.gid = attr.gid.unwrap_or(s.gid);
            s.size = attr.size.unwrap_or(s.size);
            s.atime = attr.atime.unwrap_or(s.atime);
            s.mtime = attr.mtime.unwrap_or(s.mtime);
            s.ctime = cellfs_protocol::Timestamp::now();
        }
        self.entry(&st, ino).map(Some)
    }

    /// `O_TRUNC` on the open that made handle `fh` (the kernel passes it
    /// with the open): deferred to the store at close when
    /// [`Core::setattr`] can, else made on the server at once.
    pub fn truncate_opened(&self, ino: u64, fh: u64) -> FsResult<()> {
        let empty = SetAttr {
            size: Some(0),
            ..SetAttr::default()
        };
        self.setattr(ino, empty, Some(fh)).map(|_| ())
    }

    /// `O_TRUNC`, or `ftruncate(fd, 0)`, through a handle this node holds
    /// open for writing, on a file it holds a promise on: the local copy is
    /// emptied now and the truncation is stored with the writes at close, in
    /// the same store (one durable commit on the server instead of two;
    /// other nodes see the new content at close, as with every write).
    /// `None` when `attr` is anything else; a truncate by path, or of a file
    /// without a promise, goes to the server at once.
    fn empty_for_writer(&self, ino: u64, attr: &SetAttr, fh: Option<u64>) -> FsResult<Option<Entry>> {
        // The kernel sends O_TRUNC and ftruncate as size 0 with the time.
        let only_empties = attr.size == Some(0)
            && attr.mode.is_none()
            && attr.uid.is_none()
            && attr.gid.is_none()
            && attr.atime.is_none();
        let Some(h) = fh.filter(|_| only_empties).and_then(|fh| self.handle(fh).ok()) else {
            return Ok(None);
        };
        if !h.write || h.ino != ino || h.arrival.is_some() {
            return Ok(None);
        }
        // Before the state lock: opening a copy not yet open takes it.
        let file = h.file(self).map_err(|e| FsError::local("truncate", e))?;
        let mut st = self.lock();
        let promised = st
            .nodes
            .get(ino)
            .is_some_and(|n| n.valid_for(self.link.epoch(), Instant::now()).is_some());
        if !promised || st.cache.peek(h.fid).is_none() {
            return Ok(None);
        }
        file.set_len(0).map_err(|e| FsError::local("truncate", e))?;
        st.cache.resize(h.fid, 0);
        if let Some(n) = st.nodes.get_mut(ino) {
            // Whatever was written before is gone with the truncation.
            n.dirty = Some((0, 0));
            n.status.size = 0;
            n.status.mtime = attr.mtime.unwrap_or_else(cellfs_protocol::Timestamp::now);
        }
        self.entry(&st, ino).map(Some)
    }

    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let fid = {
            let st = self.lock();
            let n = st.node(ino)?;
            if let Some(t) = n.target.as_ref().filter(|_| self.usable(n)) {
                return Ok(t.clone());
            }
            n.fid
        };
        let (reply, _) = match self.call(Request::ReadLink { fid }) {
            Ok(r) => r,
            Err(e) => return self.or_cached(Err(e), |st| st.nodes.get(ino).and_then(|n| n.target.clone())),
        };
        let Reply::Link(target) = reply else {
            return Err(unexpected("read_link"));
        };
        if let Some(n) = self.lock().nodes.get_mut(ino) {
            n.target = Some(target.clone());
        }
        Ok(target)
    }

    /// Whether `volume` refuses changes (a backup clone), asked of the server
    /// once per volume, the first time one of its files is opened for
    /// writing (reads never pay for it).
    fn volume_is_read_only(&self, volume: VolumeId) -> bool {
        if let Some(&ro) = self.lock().volume_read_only.get(&volume) {
            return ro;
        }
        match self.call(Request::GetVolumeStatus { volume }) {
            Ok((Reply::Volume(info), _)) => {
                let ro = info.kind != VolumeKind::ReadWrite;
                self.lock().volume_read_only.insert(volume, ro);
                ro
            }
            // Unknown: the server refuses the store itself if it must.
            _ => false,
        }
    }

    /// Quota and usage of the volume holding `ino`.
    pub fn statfs(&self, ino: u64) -> FsResult<VolumeInfo> {
        let (fid, _) = self.node_fid(ino)?;
        match self.call(Request::GetVolumeStatus { volume: fid.volume })?.0 {
            Reply::Volume(v) => Ok(v),
            _ => Err(unexpected("get_volume_status")),
        }
    }

    // ---- namespace changes -------------------------------------------------

    /// Applies a `Created` reply: the directory gains `name`.
    fn created(&self, reply: Reply, promise: Option<Promise>, name: &str) -> FsResult<Entry> {
        let Reply::Created { dir, status } = reply else {
            return Err(unexpected("create"));
        };
        let mut st = self.lock();
        let fid = status.fid;
        let ino = st.nodes.upsert(status, promise);
        st.nodes.apply_dir_change(dir, promise, |l| {
            l.entries.insert(name.to_owned(), fid);
        });
        self.entry(&st, ino)
    }

    fn dir_fid(&self, ino: u64) -> FsResult<Fid> {
        match self.node_fid(ino)? {
            (fid, FileKind::Dir) => Ok(fid),
            _ => Err(FsError::new(libc::ENOTDIR, "not a directory")),
        }
    }

    /// Makes `name` in directory `parent` with the request `make` builds
    /// from the directory's FID and the name, and applies the reply.
    fn make_in(&self, parent: u64, name: &str, make: impl FnOnce(Fid, String) -> FsResult<Request>) -> FsResult<Entry> {
        let dir = self.dir_fid(parent)?;
        self.wait_creates();
        let (reply, p) = self.change(make(dir, name.into())?)?;
        self.created(reply, p, name)
    }

    /// The group and mode something made in folder `parent` by a creator in
    /// group `gid` gets: a set-group-ID folder gives what is made in it its
    /// group, and new folders its set-group-ID bit, as local filesystems do
    /// (the kernel leaves this to FUSE filesystems).
    fn inherited(&self, parent: u64, gid: u32, mode: u32, is_dir: bool) -> (u32, u32) {
        let st = self.lock();
        match st.nodes.get(parent).map(|n| &n.status) {
            Some(s) if s.mode & libc::S_ISGID != 0 => (s.gid, if is_dir { mode | libc::S_ISGID } else { mode }),
            _ => (gid, mode),
        }
    }

    /// mkdir.
    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> FsResult<Entry> {
        let (gid, mode) = self.inherited(parent, gid, mode, true);
        self.make_in(parent, name, |dir, name| {
            Ok(Request::MakeDir {
                dir,
                name,
                mode,
                uid,
                gid,
            })
        })
    }

    /// symlink.
    pub fn symlink(&self, parent: u64, name: &str, target: &str, uid: u32, gid: u32) -> FsResult<Entry> {
        let (gid, _) = self.inherited(parent, gid, 0, false);
        self.make_in(parent, name, |dir, name| {
            Ok(Request::Symlink {
                dir,
                name,
                target: target.into(),
                uid,
                gid,
            })
        })
    }

    /// mknod of a FIFO, socket or device node.
    pub fn make_special(
        &self,
        parent: u64,
        name: &str,
        special: Special,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Entry> {
        let (gid, mode) = self.inherited(parent, gid, mode, false);
        self.make_in(parent, name, |dir, name| {
            Ok(Request::MakeSpecial {
                dir,
                name,
                special,
                mode,
                uid,
                gid,
            })
        })
    }

    /// Hard link `name` in `parent` to `ino`.
    pub fn link(&self, ino: u64, parent: u64, name: &str) -> FsResult<Entry> {
        let (fid, _) = self.node_fid(ino)?;
        self.make_in(parent, name, |dir, name| {
            if fid.volume != dir.volume {
                return Err(FsError::new(libc::EXDEV, "link across volumes"));
            }
            Ok(Request::Link { dir, name, fid })
        })
    }

    /// Creates and opens a file; returns its entry and a file handle.
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    ) -> FsResult<(Entry, Opened)> {
        let (gid, mode) = self.inherited(parent, gid, mode, false);
        if !exclusive && let Some(entry) = self.create_early(parent, name, (mode, uid, gid))? {
            self.place_empty_copy(&entry)?;
            let opened = self.open(entry.ino, true)?;
            return Ok((entry, opened));
        }
        let entry = self.make_in(parent, name, |dir, name| {
            Ok(Request::Create {
                dir,
                name,
                mode,
                uid,
                gid,
                exclusive,
            })
        })?;
        if entry.status.size == 0 {
            self.place_empty_copy(&entry)?;
        }
        let opened = self.open(entry.ino, true)?;
        Ok((entry, opened))
    }

    /// Makes the empty copy of a file just created.
    fn place_empty_copy(&self, entry: &Entry) -> FsResult<()> {
        let fid = entry.status.fid;
        // Made outside the state lock: from a spare file it is a rename,
        // but making a file can take a millisecond, and every other
        // request of the node would wait on it.
        let (path, spares) = {
            let st = self.lock();
            (st.cache.path(fid), st.cache.spares())
        };
        let made = match spares.create_new(&path) {
            Ok(_) => true,
            // A reader's fetch placed a copy first; it is as good.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(FsError::local("create", e)),
        };
        let mut st = self.lock();
        if made && !st.cache.contains(fid) {
            let data_version = entry.status.data_version;
            st.cache.insert(fid, CacheEntry { data_version, size: 0 });
        }
        // The server may answer a create before it is durable (its next
        // durable change makes it so): a close that stores nothing
        // asks for that change, so every close leaves the file durable.
        if let Some(n) = st.nodes.get_mut(entry.ino) {
            n.unsynced = true;
        }
        Ok(())
    }

    /// unlink / rmdir.
    pub fn remove(&self, parent: u64, name: &str, is_dir: bool) -> FsResult<()> {
        let dir = self.dir_fid(parent)?;
        self.wait_creates();
        let req = if is_dir {
            Request::RemoveDir { dir, name: name.into() }
        } else {
            Request::Remove { dir, name: name.into() }
        };
        let (reply, p) = self.change(req)?;
        let Reply::Removed { dir, victim } = reply else {
            return Err(unexpected("remove"));
        };
        let mut st = self.lock();
        let gone = st
            .nodes
            .get(parent)
            .and_then(|n| n.listing.as_ref())
            .and_then(|l| l.entries.get(name).copied());
        st.nodes.apply_dir_change(dir, p, |l| {
            l.entries.remove(name);
        });
        match victim {
            Some(v) => {
                st.nodes.upsert(v, p);
            }
            None => {
                if let Some(fid) = gone {
                    forget_deleted(&mut st, fid);
                }
            }
        }
        Ok(())
    }

    /// rename within a volume.
    pub fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str, noreplace: bool) -> FsResult<()> {
        let from_dir = self.dir_fid(parent)?;
        let to_dir = self.dir_fid(new_parent)?;
        if from_dir.volume != to_dir.volume {
            return Err(FsError::new(libc::EXDEV, "rename across volumes"));
        }
        self.wait_creates();
        if noreplace && matches!(self.lookup(new_parent, new_name)?, Lookup::Found(_)) {
            return Err(FsError::new(libc::EEXIST, "target exists"));
        }
        let req = Request::Rename {
            from_dir,
            from_name: name.into(),
            to_dir,
            to_name: new_name.into(),
        };
        let (reply, p) = self.change(req)?;
        let Reply::Renamed {
            from_dir,
            to_dir,
            moved,
            replaced,
        } = reply
        else {
            return Err(unexpected("rename"));
        };
        let mut st = self.lock();
        let moved_fid = moved.fid;
        // Only a listing under a promise says for sure what the name held.
        let now = Instant::now();
        let overwritten = st
            .nodes
            .get(new_parent)
            .filter(|n| n.valid_for(self.link.epoch(), now).is_some())
            .and_then(|n| n.listing.as_ref())
            .and_then(|l| l.entries.get(new_name).copied())
            .filter(|&f| f != moved_fid);
        let moved_ino = st.nodes.upsert(moved, p);
        // The kernel moved its entry: a deletion is announced under the new name.
        if st.nodes.get(moved_ino).is_some_and(|n| n.kernel_name().is_some()) {
            st.nodes.set_kernel_name(moved_ino, new_parent, new_name);
        }
        match (replaced, overwritten) {
            (Some(r), _) => {
                st.nodes.upsert(r, p);
            }
            (None, Some(fid)) => forget_deleted(&mut st, fid),
            (None, None) => {}
        }
        if from_dir.fid == to_dir.fid {
            st.nodes.apply_dir_change(to_dir, p, |l| {
                l.entries.remove(new_name);
                l.entries.remove(name);
                l.entries.insert(new_name.to_owned(), moved_fid);
            });
        } else {
            st.nodes.apply_dir_change(from_dir, p, |l| {
                l.entries.remove(name);
            });
            st.nodes.apply_dir_change(to_dir, p, |l| {
                l.entries.insert(new_name.to_owned(), moved_fid);
            });
        }
        Ok(())
    }

    // ---- file data ---------------------------------------------------------

    /// Makes sure the local copy of `ino` is current, fetching it if needed.
    /// Returns whether the kernel's cached pages are still good.
    ///
    /// For a `reader` of a large file the fetch goes on in the background
    /// (see [`Core::start_stream`]); the copy is then not whole yet.
    fn ensure_data(&self, ino: u64, reader: bool) -> FsResult<bool> {
        if self.join_stream(ino, reader)? {
            return Ok(false);
        }
        // A file a read-ahead part is bringing is waited for, then looked at
        // again, instead of being fetched twice.
        let (fid, valid, next_folder) = loop {
            let (fid, valid, latch, next_folder) = {
                let mut st = self.lock();
                let n = st.node(ino)?;
                let (fid, dv) = (n.fid, n.status.data_version);
                let valid = n.valid_for(self.link.epoch(), Instant::now()).is_some() || n.dirty.is_some();
                if n.status.kind == FileKind::Dir {
                    return Err(FsError::new(libc::EISDIR, "is a directory"));
                }
                let cached = st.cache.get(fid);
                if valid && cached.is_some_and(|c| c.data_version == dv) {
                    metrics::counter!("cellfs_cachemanager_cache_hits_total").increment(1);
                    let reached = reached_folder_ahead(&mut st, ino);
                    let next_folder = reached.and_then(|_| next_folder(&mut st, ino));
                    drop(st);
                    if let Some(dir) = reached {
                        self.push_folder(dir);
                    }
                    if let Some(dir) = next_folder {
                        self.read_ahead_folder(dir, fid);
                    }
                    return Ok(true);
                }
                if self.link.is_down_for(fid.volume) && cached.is_some() {
                    // Disconnected: serve the last content we have.
                    return Ok(true);
                }
                let latch = st.reading_ahead.get(&fid).cloned();
                (fid, valid, latch, next_folder(&mut st, ino))
            };
            match latch {
                Some(latch) => {
                    if let Some(dir) = next_folder {
                        self.read_ahead_folder(dir, fid);
                    }
                    let _ = latch.wait_for(u64::MAX);
                }
                None => break (fid, valid, next_folder),
            }
        };
        let have_copy = |st: &State| st.cache.contains(fid).then_some(true);
        if !valid {
            // Revalidate by data version before fetching.
            let old = self.lock().cache.get(fid).map(|c| c.data_version);
            let (reply, p) = match self.call(Request::FetchStatus { fid }) {
                Ok(r) => r,
                Err(e) => return self.or_cached(Err(e), have_copy),
            };
            let Reply::Status(status) = reply else {
                return Err(unexpected("fetch_status"));
            };
            let dv = status.data_version;
            self.lock().nodes.upsert(status, p);
            if old == Some(dv) {
                return Ok(true);
            }
        }
        let size = self.lock().nodes.get(ino).map_or(0, |n| n.status.size);
        metrics::counter!("cellfs_cachemanager_cache_misses_total").increment(1);
        let fetched = match self.small_neighbours(ino, fid) {
            Some(batch) => self.fetch_small(fid, batch),
            None if reader && size >= STREAM_MIN_SIZE && !self.lock().passed_through(fid) => {
                self.start_stream(fid, size)
            }
            None => self.fetch(fid),
        };
        // The next folder is asked for behind this open's own fetch.
        if let Some(dir) = next_folder {
            self.read_ahead_folder(dir, fid);
        }
        self.or_cached(fetched.map(|()| false), have_copy)
    }

    /// When `fid` (inode `ino`) is a small file, it and the other small
    /// files of the directory it was listed in that have no current local
    /// copy: what one `FetchFiles` should bring.
    fn small_neighbours(&self, ino: u64, fid: Fid) -> Option<Vec<Fid>> {
        let st = self.lock();
        // A copy open elsewhere is updated in place by `fetch`.
        if !is_small(st.nodes.get(ino)?) || st.cache.open_count(fid) > 1 {
            return None;
        }
        let listing = st.nodes.get(*st.parents.get(&ino)?)?.listing.clone()?;
        let batch = small_batch(&st, &listing, vec![fid]);
        (batch.len() > 1).then_some(batch)
    }

    /// Reads ahead the small files of folder `dir` (the next sibling of a
    /// folder whose files are being opened), on a blocking thread and for
    /// the caller of the open of `opener` that started it: its listing,
    /// then its small files without a current copy in read-ahead parts, so
    /// the server reads them from disk while the opener's folder is read.
    fn read_ahead_folder(&self, dir: u64, opener: Fid) {
        let Some(core) = self.shared() else {
            return;
        };
        let caller = crate::caller::current();
        self.rt.spawn_blocking(move || {
            let _as = crate::caller::enter(caller);
            let listing = match core.listing(dir) {
                Ok(l) => l,
                Err(e) => return tracing::debug!(error = %e, dir, "read-ahead of the next folder failed"),
            };
            let batch = small_batch(&core.lock(), &listing, Vec::new());
            tracing::debug!(dir, files = batch.len(), "reading ahead the next folder");
            for part in fetch_parts(&batch) {
                // Pushed when the folder is reached: the kernel has not seen
                // these inodes yet.
                core.read_ahead(part.to_vec(), opener, INLINE_BATCH_BYTES, false);
            }
        });
    }

    /// Fetches `batch` (which starts with `fid`) with their bytes in one
    /// round trip; `fid` itself by `FetchData` if it did not come inline.
    fn fetch_small(&self, fid: Fid, batch: Vec<Fid>) -> FsResult<()> {
        if self.fetch_inline(batch, fid, INLINE_BATCH_BYTES)? {
            Ok(())
        } else {
            self.fetch(fid)
        }
    }

    /// `FetchFiles` of `fids` (which start with `target`): places each copy
    /// that came with its bytes (keeping one as new that an open fetched
    /// meanwhile, except `target`'s) and records `target`'s status even
    /// without its bytes. Whether `target`'s copy was placed.
    ///
    /// A large batch goes as up to [`FETCH_PARTS`] requests at once. This
    /// open waits only for the part with `target`; the others are read
    /// ahead on blocking threads (the server reads them from disk while the
    /// caller reads its file), and an open of a file in one of them waits
    /// for that part (see [`Core::ensure_data`]). Only `target`'s
    /// part failing fails the call.
    fn fetch_inline(&self, fids: Vec<Fid>, target: Fid, max_total: u64) -> FsResult<bool> {
        let sent = self.sent();
        // The opener's part is the smallest, so the open returns soonest.
        let (first, rest) = fids.split_at(fids.len().min(FETCH_PART_MIN));
        for part in fetch_parts(rest) {
            self.read_ahead(part.to_vec(), target, max_total, true);
        }
        let mut mine = self.fetch_part(first, target, max_total);
        let got_it = self.record_part(&mine, sent, target);
        let placed = std::mem::take(&mut mine.placed);
        // Not from this kernel request's thread: a push may wait for page
        // locks that READs served by the other FUSE threads hold.
        if let Some(core) = self.shared() {
            self.rt.spawn_blocking(move || core.push_pages(&placed));
        }
        match mine.error {
            Some(e) => Err(e),
            None => Ok(got_it),
        }
    }

    /// Puts the bytes of fetched small files in the kernel's page cache, so
    /// a cold `tar` or PHP include costs OPEN and RELEASE, not also READ and
    /// the GETATTR the kernel sends after a READ (it drops the atime). Only
    /// for a copy that is current, promised, not dirty and open nowhere
    /// (an open of the file being pushed waits for the push: see
    /// [`Core::open`]; with no handle open, no READ holds its pages), and
    /// whose kernel pages are of no other version; under [`Core::pages`], so
    /// the break of that version cannot invalidate before the push lands.
    fn push_pages(&self, placed: &[(Status, Vec<u8>)]) {
        let Some(kernel) = self.kernel.get() else { return };
        let now = Instant::now();
        let mut pushed = 0usize;
        for (status, data) in placed {
            let _pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
            let ino = {
                let mut st = self.lock();
                let State { nodes, cache, .. } = &mut *st;
                let Some(ino) = nodes.ino_of(status.fid) else { continue };
                let quiet = cache.open_count(status.fid) == 0
                    && cache
                        .peek(status.fid)
                        .is_some_and(|c| c.data_version == status.data_version);
                let Some(n) = nodes.get_mut(ino) else { continue };
                let current = n.status.data_version == status.data_version
                    && n.dirty.is_none()
                    && n.valid_for(self.link.epoch(), now).is_some();
                if !quiet || !current || n.kernel_dv.is_some_and(|k| k != status.data_version) {
                    continue;
                }
                n.kernel_dv = Some(status.data_version);
                st.pushing = Some(status.fid);
                ino
            };
            let landed = kernel.store(ino, data);
            {
                let mut st = self.lock();
                st.pushing = None;
                // Not in the kernel (it has not seen the inode yet): a later
                // push may try again.
                if !landed && let Some(n) = st.nodes.get_mut(ino) {
                    n.kernel_dv = None;
                }
            }
            self.pushed.notify_all();
            pushed += usize::from(landed);
        }
        tracing::debug!(pushed, "fetched small files put in the kernel's page cache");
    }

    /// Puts the current copies of folder `dir`'s small files that the kernel
    /// holds no pages of into its page cache (see [`Core::push_pages`]),
    /// reading them from the cache folder, on a blocking thread: for a
    /// folder read ahead before the kernel knew its inodes.
    fn push_folder(&self, dir: u64) {
        const CHUNK: usize = 32;
        let Some(core) = self.shared() else {
            return;
        };
        self.rt.spawn_blocking(move || {
            let copies: Vec<(Status, PathBuf)> = {
                let st = core.lock();
                let Some(listing) = st.nodes.get(dir).and_then(|n| n.listing.clone()) else {
                    return;
                };
                listing
                    .entries
                    .values()
                    .filter_map(|fid| {
                        let n = st.nodes.get(st.nodes.ino_of(*fid)?)?;
                        let current = st.cache.peek(*fid)?.data_version == n.status.data_version;
                        (is_small(n) && current && n.kernel_dv.is_none())
                            .then(|| (n.status.clone(), st.cache.path(*fid)))
                    })
                    .collect()
            };
            for chunk in copies.chunks(CHUNK) {
                let read: Vec<(Status, Vec<u8>)> = chunk
                    .iter()
                    .filter_map(|(status, path)| Some((status.clone(), std::fs::read(path).ok()?)))
                    .collect();
                core.push_pages(&read);
            }
        });
    }

    /// Records the copies `part` placed (even when it then failed, so the
    /// cache's size accounting never misses one) and `target`'s status if
    /// it came without its bytes; whether `target`'s copy was placed.
    fn record_part(&self, part: &FetchedPart, sent: Sent, target: Fid) -> bool {
        let promise = self.promise_from(sent);
        let mut st = self.lock();
        let mut got_it = false;
        for (status, _) in &part.placed {
            got_it |= status.fid == target;
            let entry = CacheEntry {
                data_version: status.data_version,
                size: status.size,
            };
            st.cache.insert(status.fid, entry);
            st.nodes.upsert(status.clone(), promise);
        }
        if let Some(status) = &part.target {
            st.nodes.upsert(status.clone(), promise);
        }
        got_it
    }

    /// Fetches `part` of a small-file batch on a blocking thread, behind the
    /// open that asked for the batch and acting for its caller (so files
    /// only that caller may read come too). Without a handle on the core
    /// (being dropped) the part is simply not read ahead.
    fn read_ahead(&self, part: Vec<Fid>, target: Fid, max_total: u64, push: bool) {
        let Some(core) = self.shared() else {
            return;
        };
        let latch = Arc::new(Arrival::default());
        {
            let mut st = self.lock();
            for fid in &part {
                st.reading_ahead.insert(*fid, latch.clone());
            }
        }
        let (sent, caller) = (self.sent(), crate::caller::current());
        self.rt.spawn_blocking(move || {
            let _as = crate::caller::enter(caller);
            let fetched = core.fetch_part(&part, target, max_total);
            core.record_part(&fetched, sent, target);
            if push {
                core.push_pages(&fetched.placed);
            }
            if let Some(e) = &fetched.error {
                tracing::debug!(error = %e, "read-ahead of small files failed");
            }
            let mut st = core.lock();
            for fid in &part {
                if st.reading_ahead.get(fid).is_some_and(|l| Arc::ptr_eq(l, &latch)) {
                    st.reading_ahead.remove(fid);
                }
            }
            drop(st);
            // Waiters look at the cache again, and fetch themselves what
            // did not come.
            latch.end(Ok(()));
        });
    }

    /// One `FetchFiles` request of `fids`: writes each copy that came with its
    /// bytes into place.
    fn fetch_part(&self, fids: &[Fid], target: Fid, max_total: u64) -> FetchedPart {
        let mut part = FetchedPart::default();
        let files = match self.call(Request::FetchFiles {
            fids: fids.to_vec(),
            max_file: INLINE_FILE_MAX,
            max_total,
        }) {
            Ok((Reply::Files(files), _)) => files,
            Ok(_) => return part.failed(unexpected("fetch_files")),
            Err(e) => return part.failed(e),
        };
        for file in files.into_iter().flatten() {
            let fid = file.status.fid;
            let Some(data) = file.data else {
                if fid == target {
                    part.target = Some(file.status);
                }
                continue;
            };
            metrics::counter!("cellfs_cachemanager_fetched_bytes_total").increment(data.len() as u64);
            let (tmp, dest, spares) = {
                let st = self.lock();
                // A copy as new arrived meanwhile (an open fetched it): keep it.
                let newer = |c: CacheEntry| c.data_version >= file.status.data_version;
                if fid != target && st.cache.peek(fid).is_some_and(newer) {
                    continue;
                }
                (st.cache.temp_path(fid), st.cache.path(fid), st.cache.spares())
            };
            let written = crate::cache::put_copy(&spares, &data, &tmp, &dest);
            match written {
                Ok(()) => part.placed.push((file.status, data)),
                Err(e) => return part.failed(FsError::local("writing a fetched copy", e)),
            }
        }
        part
    }

    /// Fetches the whole file into the cache.
    fn fetch(&self, fid: Fid) -> FsResult<()> {
        let (tmp, size) = self.fetch_target(fid);
        self.fetch_into(fid, size, &tmp, self.sent(), None)
    }

    /// Where a fetch of `fid` writes, and the size it expects.
    fn fetch_target(&self, fid: Fid) -> (std::path::PathBuf, u64) {
        {
            let st = self.lock();
            let size = st
                .nodes
                .ino_of(fid)
                .and_then(|i| st.nodes.get(i))
                .map(|n| n.status.size)
                .unwrap_or(0);
            (st.cache.temp_path(fid), size)
        }
    }

    /// Fetches `fid` into `tmp`, telling `arrived` of the bytes as they come,
    /// then puts the copy in place.
    fn fetch_into(&self, fid: Fid, size: u64, tmp: &Path, sent: Sent, arrived: crate::link::Arrived) -> FsResult<()> {
        let status = match self.wait(self.link.fetch_to(fid, size, tmp, arrived)) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(tmp);
                return Err(e.into());
            }
        };
        let promise = self.promise_from(sent);
        let (dest, in_place) = {
            let st = self.lock();
            let dest = st.cache.path(fid);
            // Another handle holds this copy open (as the kernel's
            // passthrough backing file, or read and written through us):
            // every open of an inode must share one file, so the new version
            // goes into it. A handle left on an older copy would read bytes
            // the kernel then caches for every open, and its writes would be
            // stored from the new copy, which lacks them.
            let in_place = (st.passed_through(fid) || st.cache.open_count(fid) > 1) && dest.exists();
            (dest, in_place)
        };
        let placed = if in_place {
            overwrite_in_place(tmp, &dest)
        } else {
            crate::cache::place(tmp, &dest)
        };
        // After an exchange (or a failure) `tmp` names what is not kept.
        let _ = std::fs::remove_file(tmp);
        placed.map_err(|e| FsError::local("placing the fetched copy", e))?;
        metrics::counter!("cellfs_cachemanager_fetched_bytes_total").increment(status.size);
        let mut st = self.lock();
        // Opens from now on find the whole copy, not the stream.
        st.streams.remove(&fid);
        st.cache.insert(
            fid,
            CacheEntry {
                data_version: status.data_version,
                size: status.size,
            },
        );
        st.nodes.upsert(status, promise);
        Ok(())
    }

    /// Starts fetching large file `fid` for readers on a thread of its own;
    /// they read it as it arrives (a reader of the first block does not
    /// wait for the last). The fetch acts for the caller that started it.
    fn start_stream(&self, fid: Fid, size: u64) -> FsResult<()> {
        let Some(core) = self.shared() else {
            return self.fetch(fid);
        };
        let (tmp, _) = self.fetch_target(fid);
        // Made now, so opens hold it before the first byte arrives (the
        // fetch writes this same file; placing it keeps its inode).
        let copy = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| FsError::local("creating the fetched copy", e))?;
        let arrival = Arc::new(Arrival::default());
        self.lock().streams.insert(fid, (arrival.clone(), Arc::new(copy)));
        let (sent, caller) = (self.sent(), crate::caller::current());
        self.rt.spawn_blocking(move || {
            let _as = crate::caller::enter(caller);
            let outcome = core.fetch_into(fid, size, &tmp, sent, Some(&arrival));
            if let Err(e) = &outcome {
                tracing::warn!(%fid, error = %e.message, "fetching a large file failed");
                let mut st = core.lock();
                if st.streams.get(&fid).is_some_and(|(a, _)| Arc::ptr_eq(a, &arrival)) {
                    st.streams.remove(&fid);
                }
            }
            arrival.end(outcome);
        });
        Ok(())
    }

    /// Whether a large-file fetch of `ino` is under way that this open
    /// joins: a reader joins it while the promise on the file holds; anyone
    /// else waits for it to end first.
    fn join_stream(&self, ino: u64, reader: bool) -> FsResult<bool> {
        let arrival = {
            let st = self.lock();
            let n = st.node(ino)?;
            let Some((arrival, _)) = st.streams.get(&n.fid) else {
                return Ok(false);
            };
            if reader && n.valid_for(self.link.epoch(), Instant::now()).is_some() {
                return Ok(true);
            }
            arrival.clone()
        };
        // Its failure is this open's only if its own fetch fails too.
        let _ = arrival.wait_for(u64::MAX);
        Ok(false)
    }

    /// Opens file `ino` (for writing if `write`).
    pub fn open(&self, ino: u64, write: bool) -> FsResult<Opened> {
        let (fid, _) = self.node_fid(ino)?;
        // Reads of a cached copy are checked only here; writes again by the
        // server when they are stored (refused here, the writer learns at
        // open rather than at close).
        self.check_rights(ino, if write { Rights::WRITE } else { Rights::READ })?;
        if write && self.link.is_down_for(fid.volume) {
            return Err(disconnected("open for writing"));
        }
        if write && self.volume_is_read_only(fid.volume) {
            return Err(FsError::new(libc::EROFS, format!("{fid}: a read-only volume")));
        }
        // Writes other handles made through passthrough count as unstored
        // changes: a fetch must not replace them.
        self.note_direct_writes_of(ino)?;
        // Pinned before the fetch, so a file larger than the cache survives
        // the eviction its own arrival triggers.
        {
            let mut st = self.lock();
            st.cache.pin(fid);
            // A push of this file's pages under way lands first (a writer's
            // pages must not be overwritten by it); later ones see the file
            // open and leave it alone.
            while st.pushing == Some(fid) {
                readers::before_wait();
                st = self.pushed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        let opened = self.ensure_data(ino, !write).and_then(|_| {
            let mut st = self.lock();
            // The kernel may keep its pages unless they are of another version.
            let keep_cache = match st.nodes.get_mut(ino) {
                Some(n) => {
                    let dv = n.status.data_version;
                    n.kernel_dv.replace(dv).is_none_or(|k| k == dv)
                }
                None => false,
            };
            let local = |e| FsError::local("open", e);
            let stream = if write { None } else { st.streams.get(&fid).cloned() };
            // A reader's copy is opened when first needed: a warm read is
            // answered from the kernel's pages and never needs it.
            let file = match &stream {
                Some((_, copy)) => Some(copy.clone()),
                None if write => Some(Arc::new(st.cache.open_file(fid).map_err(local)?)),
                None => None,
            };
            let arrival = stream.map(|(a, _)| a);
            let streaming = arrival.is_some();
            // Only a writer's handle needs the stamp passthrough writes show by.
            let seen = Mutex::new(match &file {
                Some(f) if write => stamp(f).map_err(local)?,
                _ => (0, 0),
            });
            let size = st.nodes.get(ino).map_or(0, |n| n.status.size);
            let fh = st.next_fh;
            st.next_fh += 1;
            let handle = OpenFile {
                ino,
                fid,
                file: Mutex::new(file.clone().map(|file| HandleCopy {
                    file,
                    data_version: st.cache.peek(fid).map(|c| c.data_version),
                })),
                write,
                passthrough: false.into(),
                seen,
                caller: crate::caller::current(),
                append: false.into(),
                arrival,
                drops_seen: self.drops.load(Ordering::Acquire).into(),
            };
            st.files.insert(fh, Arc::new(handle));
            Ok(Opened {
                fh,
                keep_cache,
                file,
                size,
                streaming,
            })
        });
        if let Err(e) = &opened {
            let mut st = self.lock();
            st.cache.unpin(fid);
            // Deleted on the server before this open's fetch (no break came
            // here): forgotten as a break would have made it.
            if e.errno == libc::ESTALE {
                forget_deleted(&mut st, fid);
            }
        }
        opened
    }

    /// The local copy handle `fh` reads, opened now if it was not yet (for
    /// FUSE passthrough).
    pub fn handle_file(&self, fh: u64) -> FsResult<Arc<File>> {
        let h = self.handle(fh)?;
        h.file(self).map_err(|e| FsError::local("open", e))
    }

    /// Records that `fh` was opened with `O_APPEND` (see [`Core::write`]).
    pub fn set_append(&self, fh: u64) {
        if let Some(h) = self.lock().files.get(&fh) {
            h.append.store(true, Ordering::Relaxed);
        }
    }

    /// Records that the kernel reads and writes `fh`'s local copy directly
    /// (FUSE passthrough): its writes are found at flush by the file's stamp.
    pub fn set_passthrough(&self, fh: u64) {
        let mut st = self.lock();
        if let Some(h) = st.files.get(&fh).cloned() {
            h.passthrough.store(true, Ordering::Relaxed);
            if h.write {
                *st.direct_writers.entry(h.ino).or_default() += 1;
            }
        }
    }

    /// [`Core::note_direct_writes`] for every passthrough writer open on `ino`.
    fn note_direct_writes_of(&self, ino: u64) -> FsResult<()> {
        let handles: Vec<Arc<OpenFile>> = {
            let st = self.lock();
            if !st.direct_writers.contains_key(&ino) {
                return Ok(());
            }
            st.files.values().filter(|h| h.ino == ino && h.write).cloned().collect()
        };
        handles.iter().try_for_each(|h| self.note_direct_writes(h))
    }

    /// For a passthrough handle open for writing: when the local copy
    /// changed since last seen, marks the whole file dirty.
    fn note_direct_writes(&self, h: &OpenFile) -> FsResult<()> {
        if !h.write || !h.passthrough.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = h
            .file(self)
            .and_then(|f| stamp(&f))
            .map_err(|e| FsError::local("stat", e))?;
        {
            let mut seen = h.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Ok(());
            }
            *seen = now;
        }
        let size = now.1;
        let mut st = self.lock();
        if let Some(r) = st.rewrites.get_mut(&h.fid) {
            r.written();
        }
        if let Some(n) = st.nodes.get_mut(h.ino) {
            n.dirty = Some(match n.dirty {
                Some((_, b)) => (0, b.max(size)),
                None => (0, size),
            });
            n.status.size = size;
            n.status.mtime = cellfs_protocol::Timestamp::now();
        }
        st.cache.resize(h.fid, size);
        Ok(())
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.lock()
            .files
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::bad_handle(fh))
    }

    /// Reads up to `size` bytes at `offset` from the local copy into the
    /// start of `buf` (grown as needed, and kept by the caller so reads do
    /// not map and fault in a fresh buffer each time); returns how many.
    pub fn read(&self, fh: u64, offset: u64, size: u32, buf: &mut Vec<u8>) -> FsResult<usize> {
        let h = self.handle(fh)?;
        let size = size as usize;
        if buf.len() < size {
            buf.resize(size, 0);
        }
        // A reader following a fetch takes the bytes from memory.
        if let Some(arrival) = &h.arrival {
            let from_memory = arrival.read_recent(offset, &mut buf[..size])?;
            let from = if from_memory { "memory" } else { "copy" };
            metrics::counter!("cellfs_cachemanager_stream_read_bytes_total", "from" => from).increment(size as u64);
            if from_memory {
                return Ok(size);
            }
        }
        self.refresh(&h);
        let file = h.file(self).map_err(|e| FsError::local("open", e))?;
        let mut done = 0;
        while done < size {
            match file.read_at(&mut buf[done..size], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FsError::local("read", e)),
            }
        }
        // The kernel caches what this read answers. After it was told to
        // drop the inode's pages (a break), those bytes may be of the
        // version the break replaced: the next open must not keep them.
        // Only a drop since this handle last looked can have unmarked them.
        let drops = self.drops.load(Ordering::Acquire);
        if h.drops_seen.load(Ordering::Relaxed) != drops {
            if let Some(n) = self.lock().nodes.get_mut(h.ino)
                && n.kernel_dv.is_none()
            {
                n.kernel_dv = Some(UNKNOWN_PAGES);
            }
            h.drops_seen.store(drops, Ordering::Relaxed);
        }
        Ok(done)
    }

    /// Brings the copy handle `h` reads and writes up to the server's
    /// version, unless writes to the file wait here to be stored: another
    /// node changed the file while it was open here (a session file read
    /// after its lock was granted, a log followed with `tail -f`), and the
    /// next read or write must see that change, as on AFS and NFS, not the
    /// version the handle first read. The copy is fetched again when this
    /// node's promise on it is gone or its status names a newer version,
    /// and opened again when a newer one took its place (a renewal). When
    /// the server cannot be asked (unreachable, the file deleted there),
    /// the handle goes on with the copy it has.
    fn refresh(&self, h: &OpenFile) {
        if h.arrival.is_some() || h.passthrough.load(Ordering::Relaxed) {
            return;
        }
        // The data version of the copy this handle has open, if it has one.
        let opened = h.opened().map(|c| c.data_version);
        // A newer copy took the open one's place, and no writes wait here
        // to be stored (a reopen would leave them behind).
        let replaced = |st: &State| {
            opened.is_some_and(|dv| {
                st.nodes.get(h.ino).is_some_and(|n| n.dirty.is_none())
                    && st.cache.peek(h.fid).is_some_and(|c| Some(c.data_version) != dv)
            })
        };
        // One look at the state on the common path (nothing changed).
        let (fetch, mut newer) = {
            let st = self.lock();
            let Some(n) = st.nodes.get(h.ino) else { return };
            if n.dirty.is_some() || n.deleted() || n.status.kind != FileKind::File {
                return;
            }
            let current = st
                .cache
                .peek(h.fid)
                .is_some_and(|c| c.data_version == n.status.data_version);
            let stale = !(current && n.valid_for(self.link.epoch(), Instant::now()).is_some());
            (stale && !self.link.is_down_for(h.fid.volume), replaced(&st))
        };
        if fetch {
            if let Err(e) = self.ensure_data(h.ino, false) {
                tracing::debug!(fid = %h.fid, error = %e.message, "cannot refresh an open file's copy");
                // Deleted on the server (no break came here): forgotten as a
                // break would have made it, so the next read does not ask again.
                if e.errno == libc::ESTALE {
                    forget_deleted(&mut self.lock(), h.fid);
                }
            }
            newer = replaced(&self.lock());
        }
        if newer && let Err(e) = h.reopen(self) {
            tracing::debug!(fid = %h.fid, error = %e, "cannot open the refreshed copy");
        }
    }

    /// Writes to the local copy; stored on the server at flush/fsync/close.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        self.refresh(&h);
        let file = h.file(self).map_err(|e| FsError::local("open", e))?;
        // The kernel places an append at the end it knows, which another
        // node's append may have moved: the refreshed copy's end is the
        // file's (the kernel serializes this inode's writes).
        let offset = if h.append.load(Ordering::Relaxed) {
            file.metadata().map_err(|e| FsError::local("stat", e))?.len()
        } else {
            offset
        };
        if let Err(e) = file.write_all_at(data, offset) {
            // A full cache disk: undo any growth so a later store cannot
            // send bytes that were never written; the writer sees ENOSPC.
            let size = self.lock().nodes.get(h.ino).map(|n| n.status.size);
            if let Some(size) = size {
                let _ = file.set_len(size);
            }
            return Err(FsError::local("write", e));
        }
        let end = offset + data.len() as u64;
        let mut st = self.lock();
        if !st.rewrites.is_empty()
            && let Some(r) = st.rewrites.get_mut(&h.fid)
        {
            r.written();
        }
        let mut size = end;
        if let Some(n) = st.nodes.get_mut(h.ino) {
            n.dirty = Some(match n.dirty {
                Some((a, b)) => (a.min(offset), b.max(end)),
                None => (offset, end),
            });
            n.status.size = n.status.size.max(end);
            n.status.mtime = cellfs_protocol::Timestamp::now();
            size = n.status.size;
        }
        st.cache.resize(h.fid, size);
        Ok(data.len() as u32)
    }

    /// Stores what was written to `fh`'s file since the last store.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        // Stores are made for whoever opened the file (the kernel may send
        // the last flush or release for another process).
        let _as = crate::caller::enter(h.caller.clone());
        self.note_direct_writes(&h)?;
        self.flush_ino(h.ino)
    }

    /// Stores what `ino` holds unstored. One store per inode at a time: a
    /// flush that finds another handle's store of the inode in flight (the
    /// kernel sends one handle's RELEASE while another handle's FLUSH
    /// runs) waits for it and shares its failure, since its own writes may
    /// be in that store; answering success while they went to lost+found
    /// would lose them silently. Then it stores what was written since.
    fn flush_ino(&self, ino: u64) -> FsResult<()> {
        let slot = loop {
            let busy = match self.lock().storing.entry(ino) {
                MapEntry::Occupied(e) => e.get().clone(),
                MapEntry::Vacant(v) => break v.insert(Arc::new(StoreSlot::default())).clone(),
            };
            busy.wait()?;
        };
        let mut storing = Storing {
            core: self,
            ino,
            slot,
            result: None,
        };
        let result = self.store_dirty(ino);
        storing.result = Some(result.clone());
        result
    }

    /// Stores `ino`'s dirty range, if any (see [`Core::flush_ino`]).
    fn store_dirty(&self, ino: u64) -> FsResult<()> {
        let (fid, range, mtime, was_valid, base, unsynced) = {
            let mut st = self.lock();
            let epoch = self.link.epoch();
            let Some(n) = st.nodes.get_mut(ino) else { return Ok(()) };
            let unsynced = std::mem::take(&mut n.unsynced);
            let Some(range) = n.dirty.take() else {
                let fid = n.fid;
                drop(st);
                return if unsynced { self.sync_created(ino, fid) } else { Ok(()) };
            };
            if n.status.nlink == 0 {
                // Deleted while open: its writes end with it, as on a local disk.
                return Ok(());
            }
            let valid = n.valid_for(epoch, Instant::now()).is_some();
            let (fid, mtime, known) = (n.fid, n.status.mtime, n.status.data_version);
            // The version the writes were made on: the copy's.
            let base = st.cache.peek(fid).map_or(known, |c| c.data_version);
            (fid, range, mtime, valid, base, unsynced)
        };
        // Writes joined to kept ones go whole, on the kept ones' version.
        let rewrite = self.rewrite_store(fid);
        let (range, base) = match rewrite {
            Some(kept_base) => ((0, u64::MAX), kept_base),
            None => (range, base),
        };
        let result = match self.store_range(fid, range, mtime, rewrite) {
            Err(e) if e.is_unreachable() => {
                let written = kept::Written {
                    fid,
                    base,
                    mtime,
                    created: unsynced,
                };
                return Err(self.keep_unstored(ino, written, e));
            }
            Err(e) if rewrite.is_some() && (e.is_changed() || e.errno() == libc::ESTALE) => {
                return Err(self.rewrite_refused(ino, fid, e));
            }
            Ok(stored) if rewrite.is_some() => {
                self.rewrite_stored(fid);
                Ok(stored)
            }
            Err(e) if e.errno() == libc::ESTALE && unsynced && self.create_failed(ino) => {
                // Answered early, and the server refused the create.
                return self.create_again(ino);
            }
            other => other,
        };
        let mut st = self.lock();
        match result {
            Ok((status, promise)) => {
                if was_valid {
                    let current = st.cache.get(fid).map(|c| c.data_version).unwrap_or(0);
                    st.cache.advance(fid, current, status.data_version);
                } else {
                    st.cache.remove(fid);
                }
                st.nodes.upsert(status, promise);
                Ok(())
            }
            Err(e) if e.errno() == libc::ESTALE => {
                // Removed by another node before this close: the writes end
                // with the file, and this close says so. The handle goes on
                // as an unlinked open file's does.
                tracing::info!(%fid, "the file was removed on the server before its writes were stored; they are dropped");
                forget_deleted(&mut st, fid);
                Err(e.into())
            }
            Err(e) => {
                if let Some(n) = st.nodes.get_mut(ino) {
                    n.dirty = Some(match n.dirty {
                        Some((a, b)) => (a.min(range.0), b.max(range.1)),
                        None => range,
                    });
                }
                tracing::warn!(%fid, error = %e, "store failed; data kept in the local copy");
                Err(e.into())
            }
        }
    }

    /// Makes a file created here durable on the server when its close has
    /// nothing to store (the store would have: see [`Core::create`]).
    fn sync_created(&self, ino: u64, fid: Fid) -> FsResult<()> {
        let synced = match self.call(Request::Sync { fid }) {
            Err(e) if e.errno == libc::ESTALE && self.create_failed(ino) => return self.create_again(ino),
            other => other.map(|_| ()),
        };
        if synced.is_err()
            && let Some(n) = self.lock().nodes.get_mut(ino)
        {
            n.unsynced = true;
        }
        synced
    }

    /// Stores bytes `start..end` of `fid`'s copy (clamped to its length),
    /// taken only while the file is at data version `expect`, if given.
    fn store_range(
        &self,
        fid: Fid,
        (start, end): (u64, u64),
        mtime: cellfs_protocol::Timestamp,
        expect: Option<u64>,
    ) -> Result<(Status, Option<Promise>), LinkError> {
        let path = self.lock().cache.path(fid);
        let local_len = std::fs::metadata(&path).map_err(CallError::Io)?.len();
        let end = end.min(local_len);
        let start = start.min(end);
        let req = Request::StoreData {
            fid,
            offset: start,
            len: end - start,
            truncate: Some(local_len),
            mtime: Some(mtime),
            expect,
        };
        let sent = self.sent();
        let status = self.wait(self.link.store_from(&req, &path, start))?;
        Ok((status, self.promise_from(sent)))
    }

    /// Closes a file handle, storing anything still unstored.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        // A read-only handle wrote nothing to store: only a writer's close
        // stores (a reader's opened with FOPEN_NOFLUSH, and its release is
        // the one request of every warm read's close).
        let result = match self.handle(fh) {
            Ok(h) if !h.write => Ok(()),
            _ => self.flush(fh),
        };
        let mut st = self.lock();
        let removed = st.files.remove(&fh);
        if let Some(h) = &removed
            && h.write
            && st.rewrites.contains_key(&h.fid)
            && !st.files.values().any(|o| o.ino == h.ino && o.write)
        {
            // The last writer of writes joined to kept ones closed without
            // storing them: they go the kept way, whole.
            drop(st);
            if let Some(Err(e)) = self.end_rewrite(h.ino, h.fid) {
                tracing::error!(fid = %h.fid, error = %e, "writes made after a store failed could not be kept; their bytes are lost");
            }
            st = self.lock();
        }
        if let Some(h) = removed {
            st.cache.unpin(h.fid);
            // One lookup on the common path: every warm read ends here.
            if st.nodes.get(h.ino).is_some_and(Node::deleted) {
                prune_deleted(&mut st, h.fid);
            }
            if h.write
                && h.passthrough.load(Ordering::Relaxed)
                && let Some(n) = st.direct_writers.get_mut(&h.ino)
            {
                *n -= 1;
                if *n == 0 {
                    st.direct_writers.remove(&h.ino);
                }
            }
        }
        result
    }

    /// The kernel was given an entry for each of `entries` (inode, its
    /// directory and name: a lookup, a create, a readdirplus row): each
    /// counts until the kernel forgets it.
    pub fn note_entries<'a>(&self, entries: impl IntoIterator<Item = (u64, u64, &'a str)>) {
        let mut st = self.lock();
        for (ino, dir, name) in entries {
            st.nodes.note_entry(ino, dir, name);
        }
    }

    /// The kernel forgot `count` entries of each `(ino, count)`: a deleted
    /// node it no longer holds leaves the table.
    pub fn forget(&self, forgotten: impl IntoIterator<Item = (u64, u64)>) {
        let mut st = self.lock();
        for (ino, count) in forgotten {
            let Some(n) = st.nodes.get_mut(ino) else { continue };
            n.lookups = n.lookups.saturating_sub(count);
            if n.lookups == 0 && n.deleted() {
                let fid = n.fid;
                prune_deleted(&mut st, fid);
            }
        }
    }

    // ---- callbacks ---------------------------------------------------------

    /// Learns where volume `volume`'s change journal stands, before anything
    /// of it is cached, so a later reconnect can ask what changed since.
    fn learn_baseline(&self, volume: VolumeId) {
        if self.lock().baselines.contains_key(&volume) {
            return;
        }
        let req = Request::Reconnect {
            volume,
            incarnation: 0,
            since: 0,
            fids: Vec::new(),
        };
        match self.call(req) {
            Ok((
                Reply::Reconnected {
                    incarnation, current, ..
                },
                _,
            )) => {
                self.lock().baselines.entry(volume).or_insert((incarnation, current));
            }
            Ok(_) => tracing::warn!(volume, "unexpected reply to reconnect"),
            Err(e) => tracing::debug!(volume, error = %e.message, "cannot learn the volume's change number"),
        }
    }

    /// After a new connection, every promise is void. Promises that were
    /// still good when the old connection was lost are restored for what did
    /// not change, asking each volume's change journal what changed since our
    /// baseline; where the journal does not reach back, their statuses are
    /// checked in bulk. Exactly what changed is dropped here and in the kernel.
    fn revalidate(&self) {
        let lost_at = self.link.lost_at().unwrap_or_else(Instant::now);
        let held: HashMap<VolumeId, Vec<Fid>> = {
            let st = self.lock();
            let mut held: HashMap<VolumeId, Vec<Fid>> = HashMap::new();
            for (_, n) in st.nodes.iter() {
                if n.promise.is_some_and(|p| p.until > lost_at) {
                    held.entry(n.fid.volume).or_default().push(n.fid);
                }
            }
            held
        };
        let started = Instant::now();
        let mut stale = Vec::new();
        let (mut journal, mut bulk) = (0usize, 0usize);
        for (volume, fids) in held {
            let (incarnation, since) = self.lock().baselines.get(&volume).copied().unwrap_or((0, 0));
            let req = Request::Reconnect {
                volume,
                incarnation,
                since,
                fids: fids.clone(),
            };
            let result = match self.call(req) {
                Ok((
                    Reply::Reconnected {
                        incarnation,
                        current,
                        changed,
                    },
                    promise,
                )) => {
                    let outcome = match changed {
                        Some(changed) => {
                            journal += fids.len();
                            let changed: HashSet<Fid> = changed.into_iter().collect();
                            let mut st = self.lock();
                            for fid in fids {
                                if changed.contains(&fid) {
                                    stale.push(fid);
                                } else if let Some(n) = st.nodes.ino_of(fid).and_then(|i| st.nodes.get_mut(i)) {
                                    n.promise = promise;
                                }
                            }
                            Ok(())
                        }
                        None => {
                            bulk += fids.len();
                            self.bulk_revalidate(&fids, &mut stale)
                        }
                    };
                    outcome.map(|()| {
                        self.lock().baselines.insert(volume, (incarnation, current));
                    })
                }
                Ok(_) => Err(unexpected("reconnect")),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(volume, error = %e.message, "revalidation after reconnect interrupted");
                return;
            }
        }
        let (inodes, entries) = self.drop_stale(&stale);
        self.link.revalidated();
        *self.last_revalidation.lock().unwrap_or_else(|p| p.into_inner()) = Some(Revalidation {
            at: unix_secs(std::time::SystemTime::now()),
            journal: journal as u64,
            bulk: bulk as u64,
            changed: stale.len() as u64,
            took_ms: started.elapsed().as_millis() as u64,
        });
        tracing::info!(
            journal,
            bulk,
            changed = stale.len(),
            took = ?started.elapsed(),
            "reconnected: cache revalidated"
        );
        self.notify_kernel(&inodes, &entries, &[]);
    }

    /// Checks `fids` with `BulkStatus`; those whose data version moved or that
    /// are gone go to `stale`, the rest get new promises.
    fn bulk_revalidate(&self, fids: &[Fid], stale: &mut Vec<Fid>) -> FsResult<()> {
        for chunk in fids.chunks(BULK_CHUNK) {
            let (reply, promise) = self.call(Request::BulkStatus { fids: chunk.to_vec() })?;
            let Reply::BulkStatus(results) = reply else {
                return Err(unexpected("bulk_status"));
            };
            let mut st = self.lock();
            for (fid, result) in chunk.iter().zip(results) {
                let known = st
                    .nodes
                    .ino_of(*fid)
                    .and_then(|i| st.nodes.get(i))
                    .map(|n| n.status.clone());
                match result {
                    Ok(status) if known.as_ref() == Some(&status) => {
                        st.nodes.upsert(status, promise);
                    }
                    _ => stale.push(*fid),
                }
            }
        }
        Ok(())
    }

    /// Forgets what we knew of `fids` (status promise, listing, link target)
    /// and returns what the kernel must drop: their inodes and the names of
    /// the listings we dropped.
    fn drop_stale(&self, fids: &[Fid]) -> (Vec<u64>, Vec<(u64, String)>) {
        let mut st = self.lock();
        let mut inodes = Vec::new();
        let mut entries = Vec::new();
        for fid in fids {
            let Some(ino) = st.nodes.ino_of(*fid) else { continue };
            if let Some(n) = st.nodes.get_mut(ino) {
                n.promise = None;
                n.target = None;
                if let Some(l) = n.retire_listing() {
                    entries.extend(l.entries.keys().map(|name| (ino, name.clone())));
                }
            }
            entries.extend(st.negatives.remove(&ino).into_iter().flatten().map(|name| (ino, name)));
            inodes.push(ino);
        }
        (inodes, entries)
    }

    /// Tells the kernel to drop the attributes and pages of `inodes`, the
    /// entries (directory, name) and the entries of deleted files
    /// (directory, file, name), whose inodes it then lets go of.
    fn notify_kernel(&self, inodes: &[u64], entries: &[(u64, String)], deleted: &[(u64, u64, String)]) {
        let Some(kernel) = self.kernel.get() else { return };
        {
            let _pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
            // Marked before the kernel drops them, so a read answered in
            // between marks its pages (see `read`) rather than being unmarked.
            {
                let mut st = self.lock();
                for &ino in inodes {
                    if let Some(n) = st.nodes.get_mut(ino) {
                        n.kernel_dv = None;
                    }
                }
                self.drops.fetch_add(1, Ordering::AcqRel);
            }
            for &ino in inodes {
                kernel.inval_inode(ino);
            }
        }
        {
            let mut st = self.lock();
            let names = entries
                .iter()
                .map(|(p, n)| (p, n))
                .chain(deleted.iter().map(|(p, _, n)| (p, n)));
            for (parent, name) in names {
                if let Some(names) = st.negatives.get_mut(parent) {
                    names.remove(name);
                }
            }
        }
        // Deletions first: an entry dropped before would leave the kernel
        // holding the inode with its links.
        for (parent, child, name) in deleted {
            kernel.delete(*parent, *child, name);
        }
        for (parent, name) in entries {
            kernel.inval_entry(*parent, name);
        }
    }

    /// The inode at `path` (relative to the mount root), crossing mount points.
    pub fn resolve(&self, path: &str) -> FsResult<u64> {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            match self.lookup(ino, part)? {
                Lookup::Found(e) => ino = e.ino,
                Lookup::Missing(_) => return Err(FsError::not_found(path)),
            }
        }
        Ok(ino)
    }

    /// The directory at `path` (from the mount root) and its FID.
    fn acl_dir(&self, path: &str) -> FsResult<(u64, Fid)> {
        let ino = self.resolve(path)?;
        let st = self.lock();
        let n = st.node(ino)?;
        if n.status.kind != FileKind::Dir {
            return Err(FsError::new(
                libc::ENOTDIR,
                format!("{path}: ACLs belong to directories (a file has its directory's)"),
            ));
        }
        Ok((ino, n.fid))
    }

    /// `setacl`: changes the ACL of the directory at `path` for the caller
    /// entered on this thread (the server checks its `a` right).
    pub fn set_acl(&self, path: &str, changes: Vec<AclChange>, clear: bool) -> FsResult<Vec<AclLine>> {
        let (ino, dir) = self.acl_dir(path)?;
        let (reply, _) = self.change(Request::SetAcl { dir, changes, clear })?;
        let mut st = self.lock();
        st.rights.forget(dir.volume, dir.vnode);
        if let Some(n) = st.nodes.get_mut(ino) {
            n.promise = None;
        }
        match reply {
            Reply::Acl(lines) => Ok(lines),
            _ => Err(FsError::new(libc::EIO, "unexpected reply to SetAcl")),
        }
    }

    /// `listacl`: the ACL of the directory at `path`.
    pub fn list_acl(&self, path: &str) -> FsResult<Vec<AclLine>> {
        let (_, dir) = self.acl_dir(path)?;
        match self.call(Request::GetAcl { dir })?.0 {
            Reply::Acl(lines) => Ok(lines),
            _ => Err(FsError::new(libc::EIO, "unexpected reply to GetAcl")),
        }
    }

    /// Every file under `ino` and the number of directories.
    fn subtree(&self, ino: u64) -> FsResult<(Vec<SubtreeFile>, u64)> {
        let mut files = Vec::new();
        let mut dirs = 0;
        let mut queue = vec![ino];
        while let Some(dir) = queue.pop() {
            let e = self.getattr(dir)?;
            if e.status.kind != FileKind::Dir {
                files.push((dir, e.status.fid, e.status.size));
                continue;
            }
            dirs += 1;
            for name in self.listing(dir)?.entries.keys() {
                let Lookup::Found(e) = self.lookup(dir, name)? else {
                    continue;
                };
                match e.status.kind {
                    FileKind::Dir => queue.push(e.ino),
                    FileKind::File => files.push((e.ino, e.status.fid, e.status.size)),
                    FileKind::Symlink => {
                        self.readlink(e.ino)?;
                    }
                    FileKind::MountPoint | FileKind::Special(_) => {}
                }
            }
        }
        Ok((files, dirs))
    }

    /// Hoards the subtree at `path`: fetches every file and keeps it from
    /// eviction. Refused when the pinned bytes would exceed the cache size.
    /// `progress` is told (files done, files in all, bytes done).
    pub fn pin(&self, path: &str, progress: &mut dyn FnMut(u64, u64, u64)) -> FsResult<PinSummary> {
        let ino = self.resolve(path)?;
        let (files, dirs) = self.subtree(ino)?;
        {
            let st = self.lock();
            let more: u64 = files
                .iter()
                .filter(|(_, f, _)| !st.cache.is_hoarded(*f))
                .map(|(_, _, s)| s)
                .sum();
            let (pinned, limit) = (st.cache.hoarded_bytes(), st.cache.limit());
            if pinned + more > limit {
                return Err(FsError::new(
                    libc::ENOSPC,
                    format!(
                        "pinning {path} needs {more} more bytes, but {pinned} of the cache's {limit} bytes are pinned already; raise --cache-size or unpin something"
                    ),
                ));
            }
        }
        let total = files.len() as u64;
        let mut summary = PinSummary {
            files: total,
            dirs,
            ..PinSummary::default()
        };
        for (i, (ino, fid, size)) in files.into_iter().enumerate() {
            self.lock().cache.pin(fid);
            let kept = self.ensure_data(ino, false);
            let mut st = self.lock();
            if kept.is_ok() {
                st.cache.hoard(fid);
            }
            st.cache.unpin(fid);
            drop(st);
            if !kept? {
                summary.fetched += 1;
            }
            summary.bytes += size;
            progress(i as u64 + 1, total, summary.bytes);
        }
        Ok(summary)
    }

    /// Lets the subtree at `path` be evicted again.
    pub fn unpin(&self, path: &str) -> FsResult<PinSummary> {
        let ino = self.resolve(path)?;
        let (files, dirs) = self.subtree(ino)?;
        let mut st = self.lock();
        let mut summary = PinSummary {
            files: files.len() as u64,
            dirs,
            ..PinSummary::default()
        };
        for (_, fid, size) in files {
            st.cache.unhoard(fid);
            summary.bytes += size;
        }
        Ok(summary)
    }

    /// What `cellfs-cachemanager status` shows.
    pub fn status(&self) -> NodeStatus {
        let unstored_writes = self.unstored.count() as u64;
        let st = self.lock();
        let (epoch, now) = (self.link.epoch(), Instant::now());
        let last = self.last_revalidation.lock().unwrap_or_else(|p| p.into_inner()).clone();
        NodeStatus {
            server: self.link.server().to_string(),
            up: !self.link.is_down(),
            down_since: self.link.down_since().map(unix_secs),
            refused: self.link.any_refused(),
            cache_used: st.cache.used(),
            cache_limit: st.cache.limit(),
            files_cached: st.cache.len() as u64,
            pinned_bytes: st.cache.hoarded_bytes(),
            mountpoint: self.mountpoint.get().cloned().unwrap_or_default(),
            promises_held: st
                .nodes
                .iter()
                .filter(|(_, n)| n.valid_for(epoch, now).is_some())
                .count() as u64,
            nodes_known: st.nodes.len() as u64,
            unstored_writes,
            early_creates: st.fid_pool.answered,
            early_creates_made_again: st.fid_pool.made_again,
            last_revalidation: last,
            other_servers: self.server_states().into_iter().skip(1).collect(),
            fetching: st
                .streams
                .iter()
                .map(|(fid, (a, _))| Fetching {
                    fid: fid.to_string(),
                    arrived: a.snapshot().0,
                })
                .collect(),
        }
    }
}

/// One node's state as `cellfs-cachemanager status` reports it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// Fileserver address.
    pub server: String,
    /// Whether the fileserver is reachable.
    pub up: bool,
    /// Since when it is down (Unix seconds).
    pub down_since: Option<u64>,
    /// A fileserver's handshake failed on certificates at the last probe
    /// (the cell was initialised again, or this node's credential revoked).
    #[serde(default)]
    pub refused: bool,
    /// Bytes held by cached copies.
    pub cache_used: u64,
    /// Cache size limit.
    pub cache_limit: u64,
    /// Number of cached copies.
    pub files_cached: u64,
    /// Bytes of pinned (hoarded) copies.
    pub pinned_bytes: u64,
    /// Where the cell is mounted.
    pub mountpoint: std::path::PathBuf,
    /// Callback promises currently valid.
    pub promises_held: u64,
    /// Files and folders the node table holds (inodes the kernel was given).
    #[serde(default)]
    pub nodes_known: u64,
    /// Writes whose store found the server unreachable, kept to be stored
    /// when it answers (`unstored/` in the cache folder).
    #[serde(default)]
    pub unstored_writes: u64,
    /// Creates answered before the fileserver answered them, since start
    /// (`core/early.rs`).
    #[serde(default)]
    pub early_creates: u64,
    /// Of those, the ones the fileserver refused, made again at their close.
    #[serde(default)]
    pub early_creates_made_again: u64,
    /// The last revalidation after a reconnect, if any.
    pub last_revalidation: Option<Revalidation>,
    /// The cell's other fileservers this node has reached.
    #[serde(default)]
    pub other_servers: Vec<ServerState>,
    /// Large files being fetched while readers read them.
    #[serde(default)]
    pub fetching: Vec<Fetching>,
}

/// A large file arriving for its readers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Fetching {
    /// Its FID.
    pub fid: String,
    /// Bytes arrived so far.
    pub arrived: u64,
}

/// How a node sees one of the cell's other fileservers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerState {
    /// Its address.
    pub server: String,
    /// Whether it is reachable.
    pub up: bool,
    /// Since when it is down (Unix seconds).
    pub down_since: Option<u64>,
}

/// A file found under a pinned path: inode, FID, size.
type SubtreeFile = (u64, Fid, u64);

/// What a pin or unpin covered.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PinSummary {
    /// Files in the subtree.
    pub files: u64,
    /// Directories in the subtree.
    pub dirs: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Files that had to be fetched.
    pub fetched: u64,
}

/// What the last revalidation after a reconnect did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Revalidation {
    /// When it finished (Unix seconds).
    pub at: u64,
    /// FIDs confirmed through the change journal.
    pub journal: u64,
    /// FIDs checked in bulk.
    pub bulk: u64,
    /// FIDs found changed and dropped.
    pub changed: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `EROFS` for a change attempted while the cell is disconnected.
fn disconnected(op: &str) -> FsError {
    tracing::warn!(
        op,
        "the cell is disconnected: changes are refused (read-only) until the fileserver is back"
    );
    FsError::new(libc::EROFS, format!("{op}: the cell is disconnected"))
}

fn unexpected(op: &'static str) -> FsError {
    FsError::new(libc::EIO, format!("unexpected reply to {op}"))
}

/// `fid` no longer exists on the server (its last name went): its copy
/// leaves the cache (the file stays while open) and its node is answered
/// locally from now on, with no links, as an unlinked open file is.
fn forget_deleted(st: &mut State, fid: Fid) {
    // A file answered early is not gone when the server does not know it:
    // its create is on its way, or was refused and its close makes it
    // again (`core/early.rs`).
    let ino = st.nodes.ino_of(fid);
    if ino.is_some_and(|i| st.creating.contains_key(&i) || st.failed_creates.contains_key(&i)) {
        return;
    }
    st.cache.remove(fid);
    st.nodes.forget_mount(fid);
    if let Some(n) = ino.and_then(|i| st.nodes.get_mut(i)) {
        n.promise = None;
        n.status.nlink = 0;
    }
    prune_deleted(st, fid);
}

/// Drops the node of deleted `fid` once nothing holds it: no handle, no
/// fetch, no entry the kernel still has (an unlinked open file, or a
/// removed folder that is a working directory, stays usable until its last
/// close or the kernel's forget, which call this again). Without it the
/// node table kept every file this node ever saw created and deleted
/// (session files, page caches), for good.
fn prune_deleted(st: &mut State, fid: Fid) {
    if st.cache.open_count(fid) > 0 {
        return;
    }
    let Some(ino) = st.nodes.ino_of(fid) else { return };
    if !st.nodes.get(ino).is_some_and(|n| n.deleted() && n.lookups == 0) {
        return;
    }
    st.nodes.remove(ino);
    st.parents.remove(&ino);
    st.dir_items.remove(&ino);
    st.next_read_ahead.remove(&ino);
    st.folders_ahead.remove(&ino);
}
