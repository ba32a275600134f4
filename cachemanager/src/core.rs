//! The cache manager's logic, with no FUSE in it: lookups answered from cached
//! directory listings, whole-file fetches into the disk cache, close-to-open
//! stores, and callback breaks turned into kernel invalidations.
//!
//! Every method is synchronous (FUSE threads call it) and runs RPCs on the
//! tokio runtime it was given. The state lock is never held across an RPC.

use crate::cache::{CacheEntry, DiskCache};
use crate::error::{FsError, FsResult};
use crate::link::{LinkError, LinkEvent, ServerLink};
use crate::nodes::{Listing, Node, NodeTable, Promise, ROOT_INO};
use cellfs_protocol::message::{Break, ServerMessage};
use cellfs_protocol::{Fid, FileKind, Reply, Request, SetAttr, Status, VolumeInfo};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest wait for the kernel to apply a break's invalidations before the
/// break is acknowledged anyway.
const ACK_WAIT: Duration = Duration::from_millis(250);

/// How the core tells the kernel to drop what it cached (implemented over
/// fuser's `Notifier`; never called from inside a FUSE request).
pub trait KernelCache: Send + Sync {
    /// Drop attributes and cached pages of `ino`.
    fn inval_inode(&self, ino: u64);
    /// Drop the dentry (positive or negative) `name` in directory `parent`.
    fn inval_entry(&self, parent: u64, name: &str);
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

/// One row of a directory listing handed to readdir.
#[derive(Debug, Clone)]
pub struct DirItem {
    /// Inode of the entry.
    pub ino: u64,
    /// Kind to report (mount points show as directories).
    pub kind: FileKind,
    /// Entry name.
    pub name: String,
}

/// An open file: its local copy in the cache folder.
struct OpenFile {
    ino: u64,
    fid: Fid,
    file: File,
}

struct State {
    nodes: NodeTable,
    cache: DiskCache,
    files: HashMap<u64, Arc<OpenFile>>,
    dirs: HashMap<u64, Arc<Vec<DirItem>>>,
    next_fh: u64,
}

/// The cache manager core for one mount.
pub struct Core {
    link: ServerLink,
    rt: tokio::runtime::Handle,
    state: Mutex<State>,
    kernel: OnceLock<Box<dyn KernelCache>>,
    closing: std::sync::atomic::AtomicBool,
}

impl Core {
    /// Connects through `link`, resolves the cell's root volume and opens the
    /// disk cache in `cache_dir` limited to `cache_size` bytes.
    pub fn start(
        link: ServerLink,
        rt: tokio::runtime::Handle,
        cache_dir: &Path,
        cache_size: u64,
    ) -> anyhow::Result<Arc<Self>> {
        let cache = DiskCache::open(cache_dir, cache_size)?;
        let (root, promise) = rt.block_on(async {
            link.client().await?;
            let root_volume = link.info().map(|i| i.root_volume).unwrap_or_else(|| "root.cell".into());
            let sent = Instant::now();
            let reply = link.call(&Request::GetRoot { volume: root_volume }).await?;
            Ok::<_, LinkError>((reply, sent))
        })?;
        let Reply::Status(root) = root else {
            anyhow::bail!("unexpected reply to GetRoot")
        };
        let core = Core {
            state: Mutex::new(State {
                nodes: NodeTable::new(root, None),
                cache,
                files: HashMap::new(),
                dirs: HashMap::new(),
                next_fh: 1,
            }),
            link,
            rt,
            kernel: OnceLock::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        };
        let p = core.promise_from(promise);
        if let Some(n) = core.lock().nodes.get_mut(ROOT_INO) {
            n.promise = p;
        }
        Ok(Arc::new(core))
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
                    let core = self.clone();
                    tokio::spawn(async move { core.reconnect().await });
                }
                LinkEvent::Reconnected => {
                    let core = self.clone();
                    let _ = tokio::task::spawn_blocking(move || core.invalidate_everything()).await;
                }
            }
        }
    }

    /// Reconnects in the background after the connection was lost, so that
    /// promises are re-established without waiting for a file operation.
    async fn reconnect(&self) {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            match self.link.client().await {
                Ok(_) => return,
                Err(e) => tracing::debug!(error = %e, "fileserver not reachable yet"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Closes the server connection.
    pub fn shutdown(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Release);
        self.rt.block_on(self.link.close());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call(&self, req: Request) -> FsResult<(Reply, Option<Promise>)> {
        let sent = Instant::now();
        let reply = self.rt.block_on(self.link.call(&req))?;
        Ok((reply, self.promise_from(sent)))
    }

    fn promise_from(&self, sent: Instant) -> Option<Promise> {
        let secs = self.link.info().map(|i| i.promise_secs)?;
        Some(Promise {
            epoch: self.link.epoch(),
            until: sent + Duration::from_secs(secs),
        })
    }

    fn ttl(&self, node: &Node) -> Duration {
        node.valid_for(self.link.epoch(), Instant::now())
            .unwrap_or(Duration::ZERO)
    }

    fn entry(&self, st: &State, ino: u64) -> FsResult<Entry> {
        let node = st
            .nodes
            .get(ino)
            .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
        Ok(Entry {
            ino,
            status: node.status.clone(),
            ttl: self.ttl(node),
        })
    }

    fn node_fid(&self, ino: u64) -> FsResult<(Fid, FileKind)> {
        let st = self.lock();
        let n = st
            .nodes
            .get(ino)
            .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
        Ok((n.fid, n.status.kind))
    }

    // ---- directories -------------------------------------------------------

    /// The listing of directory `ino`, fetched (with every entry's status) when
    /// we hold no valid promise on it.
    fn listing(&self, ino: u64) -> FsResult<Listing> {
        let fid = {
            let st = self.lock();
            let n = st
                .nodes
                .get(ino)
                .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
            if n.status.kind != FileKind::Dir {
                return Err(FsError::new(libc::ENOTDIR, "not a directory"));
            }
            if let (Some(l), Some(_)) = (&n.listing, n.valid_for(self.link.epoch(), Instant::now())) {
                return Ok(l.clone());
            }
            n.fid
        };
        let (reply, promise) = self.call(Request::ReadDir { dir: fid })?;
        let Reply::Dir { dir, entries } = reply else {
            return Err(unexpected("read_dir"));
        };
        let mut st = self.lock();
        let listing = Listing {
            data_version: dir.data_version,
            entries: entries.iter().map(|e| (e.name.clone(), e.status.fid)).collect(),
        };
        for e in entries {
            st.nodes.upsert(e.status, promise);
        }
        let ino = st.nodes.upsert(dir, promise);
        if let Some(n) = st.nodes.get_mut(ino) {
            n.listing = Some(listing.clone());
        }
        Ok(listing)
    }

    /// Looks `name` up in directory `parent`, crossing mount points.
    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Lookup> {
        let listing = self.listing(parent)?;
        let Some(&fid) = listing.entries.get(name) else {
            let st = self.lock();
            let ttl = st.nodes.get(parent).map(|n| self.ttl(n)).unwrap_or_default();
            return Ok(Lookup::Missing(ttl));
        };
        let (ino, kind) = {
            let st = self.lock();
            let ino = st.nodes.ino_of(fid).ok_or_else(|| FsError::not_found(name))?;
            (ino, st.nodes.get(ino).map(|n| n.status.kind))
        };
        if kind == Some(FileKind::MountPoint) {
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
        let Reply::Link(volume) = reply else {
            return Err(unexpected("read_link"));
        };
        let (reply, promise) = self.call(Request::GetRoot { volume })?;
        let Reply::Status(root) = reply else {
            return Err(unexpected("get_root"));
        };
        let mut st = self.lock();
        st.nodes.set_mount_target(mount_point, root.fid);
        let ino = st.nodes.upsert(root, promise);
        self.entry(&st, ino)
    }

    /// Opens directory `ino`: a snapshot of its entries for readdir, and
    /// whether the kernel's cached listing is still good.
    pub fn opendir(&self, ino: u64) -> FsResult<(u64, bool)> {
        let before = self
            .lock()
            .nodes
            .get(ino)
            .and_then(|n| n.listing.as_ref().map(|l| l.data_version));
        let listing = self.listing(ino)?;
        let mut st = self.lock();
        let items: Vec<DirItem> = listing
            .entries
            .iter()
            .filter_map(|(name, fid)| {
                let ino = st.nodes.ino_of(*fid)?;
                let kind = match st.nodes.get(ino)?.status.kind {
                    FileKind::MountPoint => FileKind::Dir,
                    k => k,
                };
                Some(DirItem {
                    ino,
                    kind,
                    name: name.clone(),
                })
            })
            .collect();
        let fh = st.next_fh;
        st.next_fh += 1;
        st.dirs.insert(fh, Arc::new(items));
        Ok((fh, before == Some(listing.data_version)))
    }

    /// The snapshot taken by `opendir`.
    pub fn dir_items(&self, fh: u64) -> FsResult<Arc<Vec<DirItem>>> {
        self.lock()
            .dirs
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::bad_handle(fh))
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.lock().dirs.remove(&fh);
    }

    // ---- attributes --------------------------------------------------------

    /// Status of `ino`, revalidated with the server when its promise lapsed.
    pub fn getattr(&self, ino: u64) -> FsResult<Entry> {
        let fid = {
            let st = self.lock();
            let n = st
                .nodes
                .get(ino)
                .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
            if n.valid_for(self.link.epoch(), Instant::now()).is_some() || n.dirty.is_some() {
                return self.entry(&st, ino);
            }
            n.fid
        };
        let (reply, promise) = self.call(Request::FetchStatus { fid })?;
        let Reply::Status(status) = reply else {
            return Err(unexpected("fetch_status"));
        };
        let mut st = self.lock();
        let ino = st.nodes.upsert(status, promise);
        self.entry(&st, ino)
    }

    /// chmod/chown/utimes/truncate.
    pub fn setattr(&self, ino: u64, attr: SetAttr) -> FsResult<Entry> {
        let (fid, _) = self.node_fid(ino)?;
        if attr.size.is_some() {
            // Unstored writes go first, so the truncate applies after them.
            self.flush_ino(ino)?;
        }
        let (reply, promise) = self.call(Request::SetAttr {
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

    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        let fid = {
            let st = self.lock();
            let n = st
                .nodes
                .get(ino)
                .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
            if let (Some(t), Some(_)) = (&n.target, n.valid_for(self.link.epoch(), Instant::now())) {
                return Ok(t.clone());
            }
            n.fid
        };
        let (reply, _) = self.call(Request::ReadLink { fid })?;
        let Reply::Link(target) = reply else {
            return Err(unexpected("read_link"));
        };
        if let Some(n) = self.lock().nodes.get_mut(ino) {
            n.target = Some(target.clone());
        }
        Ok(target)
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

    /// mkdir.
    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> FsResult<Entry> {
        let dir = self.dir_fid(parent)?;
        let (reply, p) = self.call(Request::MakeDir {
            dir,
            name: name.into(),
            mode,
            uid,
            gid,
        })?;
        self.created(reply, p, name)
    }

    /// symlink.
    pub fn symlink(&self, parent: u64, name: &str, target: &str, uid: u32, gid: u32) -> FsResult<Entry> {
        let dir = self.dir_fid(parent)?;
        let (reply, p) = self.call(Request::Symlink {
            dir,
            name: name.into(),
            target: target.into(),
            uid,
            gid,
        })?;
        self.created(reply, p, name)
    }

    /// Hard link `name` in `parent` to `ino`.
    pub fn link(&self, ino: u64, parent: u64, name: &str) -> FsResult<Entry> {
        let dir = self.dir_fid(parent)?;
        let (fid, _) = self.node_fid(ino)?;
        if fid.volume != dir.volume {
            return Err(FsError::new(libc::EXDEV, "link across volumes"));
        }
        let (reply, p) = self.call(Request::Link {
            dir,
            name: name.into(),
            fid,
        })?;
        self.created(reply, p, name)
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
    ) -> FsResult<(Entry, u64)> {
        let dir = self.dir_fid(parent)?;
        let (reply, p) = self.call(Request::Create {
            dir,
            name: name.into(),
            mode,
            uid,
            gid,
            exclusive,
        })?;
        let entry = self.created(reply, p, name)?;
        let fid = entry.status.fid;
        {
            let mut st = self.lock();
            if entry.status.size == 0 {
                let path = st.cache.path(fid);
                File::create(&path).map_err(|e| FsError::local("create", e))?;
                st.cache.insert(
                    fid,
                    CacheEntry {
                        data_version: entry.status.data_version,
                        size: 0,
                    },
                );
            }
        }
        let (fh, _) = self.open(entry.ino)?;
        Ok((entry, fh))
    }

    /// unlink / rmdir.
    pub fn remove(&self, parent: u64, name: &str, is_dir: bool) -> FsResult<()> {
        let dir = self.dir_fid(parent)?;
        let req = if is_dir {
            Request::RemoveDir { dir, name: name.into() }
        } else {
            Request::Remove { dir, name: name.into() }
        };
        let (reply, p) = self.call(req)?;
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
                    st.cache.remove(fid);
                    st.nodes.forget_mount(fid);
                    if let Some(n) = st.nodes.ino_of(fid).and_then(|i| st.nodes.get_mut(i)) {
                        n.promise = None;
                        n.status.nlink = 0;
                    }
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
        if noreplace && matches!(self.lookup(new_parent, new_name)?, Lookup::Found(_)) {
            return Err(FsError::new(libc::EEXIST, "target exists"));
        }
        let req = Request::Rename {
            from_dir,
            from_name: name.into(),
            to_dir,
            to_name: new_name.into(),
        };
        let (reply, p) = self.call(req)?;
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
        st.nodes.upsert(moved, p);
        if let Some(r) = replaced {
            st.nodes.upsert(r, p);
        }
        if from_dir.fid == to_dir.fid {
            st.nodes.apply_dir_change(to_dir, p, |l| {
                if let Some(old) = l.entries.remove(new_name) {
                    let _ = old;
                }
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
    fn ensure_data(&self, ino: u64) -> FsResult<bool> {
        let (fid, valid) = {
            let mut st = self.lock();
            let n = st
                .nodes
                .get(ino)
                .ok_or_else(|| FsError::not_found(format!("inode {ino}")))?;
            let (fid, dv) = (n.fid, n.status.data_version);
            let valid = n.valid_for(self.link.epoch(), Instant::now()).is_some() || n.dirty.is_some();
            if n.status.kind == FileKind::Dir {
                return Err(FsError::new(libc::EISDIR, "is a directory"));
            }
            if valid && st.cache.get(fid).is_some_and(|c| c.data_version == dv) {
                return Ok(true);
            }
            (fid, valid)
        };
        if !valid {
            // Revalidate by data version before fetching.
            let old = self.lock().cache.get(fid).map(|c| c.data_version);
            let (reply, p) = self.call(Request::FetchStatus { fid })?;
            let Reply::Status(status) = reply else {
                return Err(unexpected("fetch_status"));
            };
            let dv = status.data_version;
            self.lock().nodes.upsert(status, p);
            if old == Some(dv) {
                return Ok(true);
            }
        }
        self.fetch(fid)?;
        Ok(false)
    }

    /// Fetches the whole file into the cache.
    fn fetch(&self, fid: Fid) -> FsResult<()> {
        let tmp = self.lock().cache.temp_path(fid);
        let sent = Instant::now();
        let status = match self.rt.block_on(self.link.fetch_to(fid, &tmp)) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        let promise = self.promise_from(sent);
        let mut st = self.lock();
        let dest = st.cache.path(fid);
        std::fs::rename(&tmp, &dest).map_err(|e| FsError::local("rename", e))?;
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

    /// Opens file `ino`; returns the handle and whether the kernel may keep its pages.
    pub fn open(&self, ino: u64) -> FsResult<(u64, bool)> {
        let (fid, _) = self.node_fid(ino)?;
        // Pinned before the fetch, so a file larger than the cache survives
        // the eviction its own arrival triggers.
        self.lock().cache.pin(fid);
        let opened = self.ensure_data(ino).and_then(|keep| {
            let mut st = self.lock();
            let file = st.cache.open_file(fid).map_err(|e| FsError::local("open", e))?;
            let fh = st.next_fh;
            st.next_fh += 1;
            st.files.insert(fh, Arc::new(OpenFile { ino, fid, file }));
            Ok((fh, keep))
        });
        if opened.is_err() {
            self.lock().cache.unpin(fid);
        }
        opened
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.lock()
            .files
            .get(&fh)
            .cloned()
            .ok_or_else(|| FsError::bad_handle(fh))
    }

    /// Reads from the local copy.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let h = self.handle(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match h.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FsError::local("read", e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// Writes to the local copy; stored on the server at flush/fsync/close.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let h = self.handle(fh)?;
        h.file
            .write_all_at(data, offset)
            .map_err(|e| FsError::local("write", e))?;
        let end = offset + data.len() as u64;
        let mut st = self.lock();
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
        self.flush_ino(h.ino)
    }

    fn flush_ino(&self, ino: u64) -> FsResult<()> {
        let (fid, range, size, mtime, was_valid) = {
            let mut st = self.lock();
            let epoch = self.link.epoch();
            let Some(n) = st.nodes.get_mut(ino) else { return Ok(()) };
            let Some(range) = n.dirty.take() else { return Ok(()) };
            let valid = n.valid_for(epoch, Instant::now()).is_some();
            (n.fid, range, n.status.size, n.status.mtime, valid)
        };
        let result = self.store_range(fid, range, size, mtime);
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
            Err(e) => {
                if let Some(n) = st.nodes.get_mut(ino) {
                    n.dirty = Some(match n.dirty {
                        Some((a, b)) => (a.min(range.0), b.max(range.1)),
                        None => range,
                    });
                }
                tracing::warn!(%fid, error = %e.message, "store failed; data kept in the local copy");
                Err(e)
            }
        }
    }

    fn store_range(
        &self,
        fid: Fid,
        (start, end): (u64, u64),
        size: u64,
        mtime: cellfs_protocol::Timestamp,
    ) -> FsResult<(Status, Option<Promise>)> {
        let path = self.lock().cache.path(fid);
        let local_len = std::fs::metadata(&path).map_err(|e| FsError::local("stat", e))?.len();
        let end = end.min(local_len);
        let start = start.min(end);
        let _ = size;
        let req = Request::StoreData {
            fid,
            offset: start,
            len: end - start,
            truncate: Some(local_len),
            mtime: Some(mtime),
        };
        let sent = Instant::now();
        let status = self.rt.block_on(self.link.store_from(&req, &path, start))?;
        Ok((status, self.promise_from(sent)))
    }

    /// Closes a file handle, storing anything still unstored.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        let result = self.flush(fh);
        let mut st = self.lock();
        if let Some(h) = st.files.remove(&fh) {
            st.cache.unpin(h.fid);
        }
        result
    }

    // ---- callbacks ---------------------------------------------------------

    fn apply_server_message(&self, msg: ServerMessage) {
        let mut inodes = Vec::new();
        let mut entries = Vec::new();
        {
            let mut st = self.lock();
            match msg {
                ServerMessage::Break(breaks) => {
                    for Break { fid, names, deleted } in breaks {
                        tracing::debug!(%fid, ?names, deleted, "callback break");
                        let Some(ino) = st.nodes.ino_of(fid) else { continue };
                        if let Some(n) = st.nodes.get_mut(ino) {
                            n.promise = None;
                            n.listing = None;
                            n.target = None;
                        }
                        if deleted {
                            st.cache.remove(fid);
                            st.nodes.forget_mount(fid);
                        }
                        inodes.push(ino);
                        entries.extend(names.into_iter().map(|name| (ino, name)));
                    }
                }
                ServerMessage::BreakVolume(volume) => {
                    for n in st.nodes.iter_mut().filter(|n| n.fid.volume == volume) {
                        n.promise = None;
                        n.listing = None;
                    }
                    inodes.extend(st.nodes.iter().filter(|(_, n)| n.fid.volume == volume).map(|(i, _)| i));
                }
            }
        }
        self.notify_kernel(&inodes, &entries);
    }

    /// After a reconnect every promise is void: tell the kernel to forget
    /// everything it cached, so nothing older than the server is served.
    fn invalidate_everything(&self) {
        let (inodes, entries): (Vec<u64>, Vec<(u64, String)>) = {
            let st = self.lock();
            let inodes = st.nodes.iter().map(|(i, _)| i).collect();
            let entries = st
                .nodes
                .iter()
                .flat_map(|(i, n)| {
                    n.listing
                        .iter()
                        .flat_map(move |l| l.entries.keys().map(move |k| (i, k.clone())))
                })
                .collect();
            (inodes, entries)
        };
        tracing::info!(
            inodes = inodes.len(),
            "reconnected: revalidating everything by data version"
        );
        self.notify_kernel(&inodes, &entries);
    }

    fn notify_kernel(&self, inodes: &[u64], entries: &[(u64, String)]) {
        let Some(kernel) = self.kernel.get() else { return };
        for &ino in inodes {
            kernel.inval_inode(ino);
        }
        for (parent, name) in entries {
            kernel.inval_entry(*parent, name);
        }
    }

    /// Bytes used by the disk cache and its limit.
    pub fn cache_usage(&self) -> (u64, u64) {
        let st = self.lock();
        (st.cache.used(), st.cache.limit())
    }
}

fn unexpected(op: &'static str) -> FsError {
    FsError::new(libc::EIO, format!("unexpected reply to {op}"))
}
