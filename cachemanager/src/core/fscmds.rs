//! What the fs-style commands ask of a running node (`whereis`, `examine`,
//! `listquota`, `flush`, `flushvolume`, `checkservers`, `setcachesize`):
//! the facts of a path, dropping cached state, probing the servers, and
//! changing the cache size live.

use super::{Core, ServerState, unexpected, unix_secs};
use crate::error::{FsError, FsResult};
use cellfs_protocol::{Fid, FileKind, Reply, Request, Status, VolumeInfo};
use std::time::Instant;

/// One path as the node knows it, with its volume as the server does.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathInfo {
    /// The path inside the mount.
    pub path: String,
    /// Its status.
    pub status: Status,
    /// Whether this node holds a copy of its contents.
    pub cached: bool,
    /// Seconds left on the callback promise (none: revalidated at next use).
    pub promise_secs: Option<u64>,
    /// Its volume, as the server describes it; `None` while unreachable.
    pub volume: Option<VolumeInfo>,
}

/// What a flush dropped.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Flushed {
    /// Cached copies dropped.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Copies kept because they hold changes not yet stored.
    pub kept_dirty: u64,
}

impl Core {
    /// The facts of `path` (from the mount root).
    pub fn examine(&self, path: &str) -> FsResult<PathInfo> {
        let ino = self.resolve(path)?;
        let (status, cached, promise_secs) = {
            let st = self.lock();
            let n = st.node(ino)?;
            let left = n.valid_for(self.link.epoch(), Instant::now()).map(|d| d.as_secs());
            (n.status.clone(), st.cache.peek(n.fid).is_some(), left)
        };
        let volume = match self.call(Request::GetVolumeStatus {
            volume: status.fid.volume,
        }) {
            Ok((Reply::Volume(v), _)) => Some(v),
            Ok(_) => return Err(unexpected("get_volume_status")),
            Err(e) if e.errno == crate::link::DISCONNECTED_ERRNO => None,
            Err(e) => return Err(e),
        };
        Ok(PathInfo {
            path: path.to_owned(),
            status,
            cached,
            promise_secs,
            volume,
        })
    }

    /// Drops what this node cached of `path`: a file's copy, or a
    /// directory's listing and the copies of the files directly in it. The
    /// next use fetches them again. Copies with unstored changes stay.
    pub fn flush_path(&self, path: &str) -> FsResult<Flushed> {
        let ino = self.resolve(path)?;
        let fids: Vec<Fid> = {
            let st = self.lock();
            let n = st.node(ino)?;
            let mut fids = vec![n.fid];
            if n.status.kind == FileKind::Dir
                && let Some(listing) = &n.listing
            {
                fids.extend(listing.entries.values().copied());
            }
            fids
        };
        Ok(self.drop_cached(&fids))
    }

    /// Drops everything this node cached of the volume holding `path`.
    pub fn flush_volume(&self, path: &str) -> FsResult<Flushed> {
        let ino = self.resolve(path)?;
        let fids: Vec<Fid> = {
            let st = self.lock();
            let volume = st.node(ino)?.fid.volume;
            st.nodes
                .iter()
                .map(|(_, n)| n.fid)
                .chain(st.cache.entries().into_iter().map(|(f, _)| f))
                .filter(|f| f.volume == volume)
                .collect()
        };
        Ok(self.drop_cached(&fids))
    }

    /// Forgets `fids` (promises, listings, copies without unstored changes)
    /// here and in the kernel.
    fn drop_cached(&self, fids: &[Fid]) -> Flushed {
        let mut out = Flushed::default();
        let mut forget = Vec::with_capacity(fids.len());
        {
            let mut st = self.lock();
            for fid in fids {
                let dirty = st
                    .nodes
                    .ino_of(*fid)
                    .and_then(|i| st.nodes.get(i))
                    .is_some_and(|n| n.dirty.is_some());
                if dirty {
                    out.kept_dirty += 1;
                    continue;
                }
                if let Some(e) = st.cache.peek(*fid) {
                    out.files += 1;
                    out.bytes += e.size;
                    st.cache.remove(*fid);
                }
                forget.push(*fid);
            }
        }
        let (inodes, entries) = self.drop_stale(&forget);
        // Also unmarks the kernel's pages, so they are kept again only after
        // the next fetch.
        self.notify_kernel(&inodes, &entries, &[]);
        out
    }

    /// Probes every server of the cell now and says how each is.
    pub fn check_servers(&self) -> Vec<ServerState> {
        self.wait(self.link.probe());
        self.server_states()
    }

    /// Changes the cache size limit at once, evicting down to it.
    pub fn set_cache_size(&self, limit: u64) -> FsResult<(u64, u64)> {
        if limit == 0 {
            return Err(FsError::new(libc::EINVAL, "a cache size of 0 cannot hold anything"));
        }
        let mut st = self.lock();
        st.cache.set_limit(limit);
        Ok((st.cache.used(), st.cache.limit()))
    }

    /// Every server of the cell as this node last saw it, first server first.
    pub(super) fn server_states(&self) -> Vec<ServerState> {
        let first = ServerState {
            server: self.link.server().to_string(),
            up: !self.link.is_down(),
            down_since: self.link.down_since().map(unix_secs),
        };
        std::iter::once(first)
            .chain(self.link.others().iter().map(|l| ServerState {
                server: l.server().to_string(),
                up: !l.is_down(),
                down_since: l.down_since().map(unix_secs),
            }))
            .collect()
    }
}
