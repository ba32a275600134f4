//! The whole-file disk cache: one data file per FID in the cache folder,
//! tagged with the data version it holds, bounded by size with least recently
//! used eviction. Files open right now are never evicted.
//!
//! Copies are spread over `SHARDS` folders (`data/00` … `data/ff`): one
//! folder of every copy made the threads writing a batch of small copies
//! queue on its lock and search ever longer directory blocks.

use cellfs_protocol::Fid;
use cellfs_protocol::spares::{Spares, rename_with};
use lru::LruCache;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// One cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheEntry {
    /// Data version the local copy holds.
    pub data_version: u64,
    /// Bytes the local copy takes (its length).
    pub size: u64,
}

/// Folders the copies are spread over.
const SHARDS: u64 = 256;

/// The shard (a folder under `data/`) holding the copy of `fid`. Files of
/// one folder have neighbouring vnode numbers, so a batch of them spreads.
fn shard_of(fid: Fid) -> usize {
    ((fid.vnode ^ fid.volume.wrapping_mul(31)) % SHARDS) as usize
}

/// A shard folder's name.
fn shard_name(shard: usize) -> String {
    format!("{shard:02x}")
}

/// The name of the copy of `fid` within its shard.
fn copy_name(fid: Fid) -> String {
    format!("{}.{}.{}", fid.volume, fid.vnode, fid.unique)
}

/// Size-bounded LRU index of the cache folder's data files.
pub struct DiskCache {
    root: PathBuf,
    dir: PathBuf,
    limit: u64,
    used: u64,
    entries: LruCache<Fid, CacheEntry>,
    open: HashMap<Fid, u32>,
    /// Hoarded FIDs (`cellfs-cachemanager pin`): never evicted.
    hoarded: std::collections::HashSet<Fid>,
    /// Shard folders known to exist (made on first use).
    made: Box<[std::sync::atomic::AtomicBool]>,
    /// Empty files new copies are made from (see `cellfs_protocol::spares`).
    spares: Spares,
}

/// Spare files a cache keeps ready.
const SPARES: usize = 128;

/// Writes a first copy, `data`, straight at `dest` when no file is there
/// (no temporary file, no rename: half the file-system work of a cold
/// small file); false, writing nothing, when `dest` exists. A copy cut
/// short (a full disk) is removed, unless another fetch's copy has taken
/// its name meanwhile; a crash leaves one the index does not vouch for,
/// which the next start deletes.
fn write_new(spares: &Spares, dest: &Path, data: &[u8]) -> io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let mut file = match spares.create_new(dest) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    if let Err(e) = file.write_all(data) {
        let ino = |m: std::fs::Metadata| m.ino();
        if file.metadata().map(ino).ok() == std::fs::symlink_metadata(dest).map(ino).ok() {
            let _ = std::fs::remove_file(dest);
        }
        return Err(e);
    }
    Ok(true)
}

/// Puts `data` at `dest` as its copy: written straight there when `dest`
/// has none (`write_new`), otherwise written to `tmp` and put in place
/// atomically ([`place`]), `tmp` removed either way.
pub fn put_copy(spares: &Spares, data: &[u8], tmp: &Path, dest: &Path) -> io::Result<()> {
    if write_new(spares, dest, data)? {
        return Ok(());
    }
    let placed = std::fs::write(tmp, data).and_then(|()| place(tmp, dest));
    // After an exchange `tmp` names the old copy.
    let _ = std::fs::remove_file(tmp);
    placed
}

/// Puts the new copy at `tmp` where `dest` is, atomically: an open by name
/// finds the old copy or the new one, never neither. When `dest` exists the
/// two names are exchanged (`RENAME_EXCHANGE`) and `tmp` is left naming the
/// old copy, for the caller to remove: ext4 starts writing back a file
/// renamed over another one (`auto_da_alloc`) before the rename returns,
/// which cost 0.35–0.8 ms a placed copy on a refreshed small file here;
/// an exchange costs about 40 µs. Falls back to a plain rename where
/// `dest` is missing or the file system cannot exchange.
pub fn place(tmp: &Path, dest: &Path) -> io::Result<()> {
    match rename_with(tmp, dest, libc::RENAME_EXCHANGE) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            std::fs::rename(tmp, dest)
        }
        placed => placed,
    }
}

impl DiskCache {
    /// Opens the cache folder `dir` with a size limit in bytes, keeping the
    /// copies in `known` (from the saved index, least recently used first)
    /// whose data file is there with the recorded length. Every other file in
    /// the data folder (partial fetches, copies the index does not vouch for)
    /// is deleted.
    pub fn open(dir: &Path, limit: u64, known: Vec<(Fid, CacheEntry)>) -> io::Result<Self> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let mut cache = DiskCache {
            root: dir.to_owned(),
            dir: data,
            limit,
            used: 0,
            entries: LruCache::unbounded(),
            open: HashMap::new(),
            hoarded: std::collections::HashSet::new(),
            made: (0..SHARDS).map(|_| std::sync::atomic::AtomicBool::new(false)).collect(),
            spares: Spares::new(&dir.join("spare"), SPARES)?,
        };
        let mut discarded = 0usize;
        for (fid, entry) in known {
            // A copy kept by a version that did not shard moves into its
            // shard; one that cannot (a full disk) is fetched again later.
            let flat = cache.dir.join(copy_name(fid));
            if flat.is_file()
                && let Err(e) = std::fs::rename(&flat, cache.path(fid))
            {
                tracing::warn!(%fid, error = %e, "cannot move a cached copy into its shard; dropping it");
            }
            match std::fs::metadata(cache.path(fid)) {
                Ok(md) if md.is_file() && md.len() == entry.size => cache.insert(fid, entry),
                _ => discarded += 1,
            }
        }
        let vouched: std::collections::HashSet<PathBuf> = cache.entries.iter().map(|(f, _)| cache.path(*f)).collect();
        for file in std::fs::read_dir(&cache.dir)?.flatten() {
            if file.file_type()?.is_dir() {
                for copy in std::fs::read_dir(file.path())?.flatten() {
                    if !vouched.contains(&copy.path()) {
                        discarded += 1;
                        std::fs::remove_file(copy.path())?;
                    }
                }
            } else {
                discarded += 1;
                std::fs::remove_file(file.path())?;
            }
        }
        if discarded > 0 {
            tracing::info!(
                discarded,
                kept = cache.entries.len(),
                "cache check: discarded copies the index does not vouch for"
            );
        }
        Ok(cache)
    }

    /// The cache folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every cached copy, least recently used first (for the saved index).
    pub fn entries(&self) -> Vec<(Fid, CacheEntry)> {
        self.entries.iter().rev().map(|(f, e)| (*f, *e)).collect()
    }

    /// The spare files new copies are made from.
    pub fn spares(&self) -> Spares {
        self.spares.clone()
    }

    /// Where the copy of `fid` lives (its shard folder is made on first use).
    pub fn path(&self, fid: Fid) -> PathBuf {
        self.shard(fid).join(copy_name(fid))
    }

    /// The shard folder of `fid`, made if it was not yet. A failure to make
    /// it shows as the error of the file operation that follows.
    fn shard(&self, fid: Fid) -> PathBuf {
        use std::sync::atomic::Ordering;
        let shard = shard_of(fid);
        let dir = self.dir.join(shard_name(shard));
        if !self.made[shard].load(Ordering::Relaxed) && std::fs::create_dir_all(&dir).is_ok() {
            self.made[shard].store(true, Ordering::Relaxed);
        }
        dir
    }

    /// A fresh temporary path in the cache folder for a fetch in progress.
    pub fn temp_path(&self, fid: Fid) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.shard(fid).join(format!("tmp.{}.{n}", copy_name(fid)))
    }

    /// The cached copy of `fid`, if any, marking it most recently used.
    pub fn get(&mut self, fid: Fid) -> Option<CacheEntry> {
        self.entries.get(&fid).copied()
    }

    /// The cached copy of `fid`, without touching its recency.
    pub fn peek(&self, fid: Fid) -> Option<CacheEntry> {
        self.entries.peek(&fid).copied()
    }

    /// Whether a copy of `fid` is cached (without touching its recency).
    pub fn contains(&self, fid: Fid) -> bool {
        self.entries.contains(&fid)
    }

    /// Records that the file at `path(fid)` now holds `entry` (after a fetch,
    /// create or store), then evicts down to the limit.
    pub fn insert(&mut self, fid: Fid, entry: CacheEntry) {
        if let Some(old) = self.entries.put(fid, entry) {
            self.used -= old.size;
        }
        self.used += entry.size;
        self.evict();
    }

    /// Updates the size of a cached copy after local writes.
    pub fn resize(&mut self, fid: Fid, size: u64) {
        if let Some(e) = self.entries.peek_mut(&fid) {
            self.used = self.used - e.size + size;
            e.size = size;
        }
        self.evict();
    }

    /// Sets the data version of a cached copy if it currently holds `expected`;
    /// otherwise the copy is stale and is dropped. Returns whether it was kept.
    pub fn advance(&mut self, fid: Fid, expected: u64, new: u64) -> bool {
        match self.entries.peek_mut(&fid) {
            Some(e) if e.data_version == expected => {
                e.data_version = new;
                true
            }
            Some(_) => {
                self.remove(fid);
                false
            }
            None => false,
        }
    }

    /// Drops the copy of `fid` (its file too, unless it is open).
    pub fn remove(&mut self, fid: Fid) {
        if let Some(e) = self.entries.pop(&fid) {
            self.used -= e.size;
            if !self.open.contains_key(&fid) {
                let _ = std::fs::remove_file(self.path(fid));
            }
        }
    }

    /// Marks `fid` open: it will not be evicted until [`DiskCache::unpin`].
    pub fn pin(&mut self, fid: Fid) {
        *self.open.entry(fid).or_default() += 1;
    }

    /// How many open handles pin `fid`.
    pub fn open_count(&self, fid: Fid) -> u32 {
        self.open.get(&fid).copied().unwrap_or(0)
    }

    /// Undoes one [`DiskCache::pin`].
    pub fn unpin(&mut self, fid: Fid) {
        if let Some(n) = self.open.get_mut(&fid) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&fid);
                if !self.entries.contains(&fid) {
                    let _ = std::fs::remove_file(self.path(fid));
                }
            }
        }
        self.evict();
    }

    /// Bytes held by cached copies.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Keeps `fid` from eviction until [`DiskCache::unhoard`].
    pub fn hoard(&mut self, fid: Fid) {
        self.hoarded.insert(fid);
    }

    /// Lets `fid` be evicted again.
    pub fn unhoard(&mut self, fid: Fid) {
        self.hoarded.remove(&fid);
        self.evict();
    }

    /// Whether `fid` is hoarded.
    pub fn is_hoarded(&self, fid: Fid) -> bool {
        self.hoarded.contains(&fid)
    }

    /// Hoarded FIDs.
    pub fn hoarded(&self) -> Vec<Fid> {
        self.hoarded.iter().copied().collect()
    }

    /// Bytes of hoarded copies (they count against the limit).
    pub fn hoarded_bytes(&self) -> u64 {
        self.hoarded
            .iter()
            .filter_map(|f| self.entries.peek(f))
            .map(|e| e.size)
            .sum()
    }

    /// Number of cached copies.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The configured limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Changes the size limit, evicting down to it (open and pinned copies
    /// stay, so the cache may stay above a very small limit).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
        self.evict();
    }

    /// Opens the local copy of `fid` for reading and writing.
    pub fn open_file(&self, fid: Fid) -> io::Result<File> {
        File::options().read(true).write(true).open(self.path(fid))
    }

    /// Evicts copies, least recently used first, until at least `bytes`
    /// are freed or only open, hoarded copies and `keep` are left; returns
    /// the bytes freed. For a disk that filled before the cache reached
    /// its limit.
    pub fn make_room(&mut self, bytes: u64, keep: Fid) -> u64 {
        let before = self.used;
        let target = before.saturating_sub(bytes);
        self.evict_until(target, Some(keep));
        before - self.used
    }

    fn evict(&mut self) {
        self.evict_until(self.limit, None);
    }

    /// Evicts copies, least recently used first, until `used` is at most
    /// `target` or none but open, hoarded copies and `keep` are left.
    fn evict_until(&mut self, target: u64, keep: Option<Fid>) {
        while self.used > target {
            let victim = self
                .entries
                .iter()
                .rev()
                .map(|(f, _)| *f)
                .find(|f| !self.open.contains_key(f) && !self.hoarded.contains(f) && Some(*f) != keep);
            match victim {
                Some(fid) => {
                    tracing::debug!(%fid, "evicting from cache");
                    metrics::counter!("cellfs_cachemanager_evictions_total").increment(1);
                    self.remove(fid);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fid(n: u64) -> Fid {
        Fid {
            volume: 1,
            vnode: n,
            unique: 1,
        }
    }

    fn put(cache: &mut DiskCache, n: u64, size: u64) {
        std::fs::write(cache.path(fid(n)), vec![0u8; size as usize]).unwrap();
        cache.insert(fid(n), CacheEntry { data_version: 1, size });
    }

    #[test]
    fn a_first_copy_is_written_at_its_name_and_an_existing_one_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("copy");
        let spares = Spares::new(&dir.path().join("spare"), 2).unwrap();
        assert!(write_new(&spares, &dest, b"first").unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        assert!(
            !write_new(&spares, &dest, b"second").unwrap(),
            "wrote over an existing copy"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"first");
        let missing = dir.path().join("no-such-folder/copy");
        assert!(write_new(&spares, &missing, b"x").is_err());
        put_copy(&spares, b"third", &dir.path().join("tmp.copy"), &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"third");
        assert!(!dir.path().join("tmp.copy").exists(), "the temporary file stayed");
    }

    #[test]
    fn a_folders_files_spread_over_the_shards() {
        let shards: std::collections::HashSet<usize> = (1000..1100).map(|n| shard_of(fid(n))).collect();
        assert!(shards.len() >= 90, "100 neighbouring vnodes in {} shards", shards.len());
        assert!(shards.iter().all(|s| (*s as u64) < SHARDS));
        assert_eq!(shard_name(10), "0a");
    }

    #[test]
    fn opening_moves_kept_flat_copies_into_shards_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // Left by a version that kept every copy in one folder.
        std::fs::write(data.join(copy_name(fid(1))), b"kept").unwrap();
        std::fs::write(data.join(copy_name(fid(2))), b"not vouched").unwrap();
        let entry = CacheEntry {
            data_version: 3,
            size: 4,
        };
        let cache = DiskCache::open(dir.path(), 1 << 20, vec![(fid(1), entry)]).unwrap();
        assert_eq!(std::fs::read(cache.path(fid(1))).unwrap(), b"kept");
        assert_eq!(cache.peek(fid(1)), Some(entry));
        assert!(!data.join(copy_name(fid(1))).exists());
        assert!(!data.join(copy_name(fid(2))).exists());
        // A partial copy in a shard is dropped at the next start.
        let tmp = cache.temp_path(fid(5));
        std::fs::write(&tmp, b"partial").unwrap();
        drop(cache);
        let cache = DiskCache::open(dir.path(), 1 << 20, vec![(fid(1), entry)]).unwrap();
        assert!(!tmp.exists());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn evicts_least_recently_used_but_never_open_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = DiskCache::open(dir.path(), 100, Vec::new()).unwrap();
        put(&mut cache, 1, 40);
        put(&mut cache, 2, 40);
        cache.pin(fid(1));
        assert!(cache.get(fid(2)).is_some());
        put(&mut cache, 3, 40); // over the limit: 1 is least recent but open, so 2 goes
        assert!(cache.entries.contains(&fid(1)));
        assert!(!cache.entries.contains(&fid(2)));
        assert!(!cache.path(fid(2)).exists());
        assert_eq!(cache.used(), 80);
        cache.unpin(fid(1));
        put(&mut cache, 4, 40); // now 1 is evictable and least recent
        assert!(cache.get(fid(1)).is_none());
        assert_eq!(cache.used(), 80);
    }

    #[test]
    fn making_room_evicts_the_least_recent_copies_but_not_the_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = DiskCache::open(dir.path(), 1000, Vec::new()).unwrap();
        for n in 1..=5 {
            put(&mut cache, n, 30);
        }
        cache.pin(fid(2));
        cache.hoard(fid(3));
        // 1 is least recent but is the copy being kept; 2 is open, 3
        // hoarded: 4 and then 5 go, and that is all there is.
        assert_eq!(cache.make_room(40, fid(1)), 60);
        assert!(!cache.path(fid(4)).exists() && !cache.path(fid(5)).exists());
        assert_eq!(cache.make_room(40, fid(1)), 0);
        assert_eq!(cache.used(), 90);
        // Without the exception, the least recent goes first and no more.
        assert_eq!(cache.make_room(10, fid(9)), 30);
        assert!(!cache.entries.contains(&fid(1)));
    }

    #[test]
    fn hoarded_copies_are_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = DiskCache::open(dir.path(), 100, Vec::new()).unwrap();
        put(&mut cache, 1, 60);
        cache.hoard(fid(1));
        put(&mut cache, 2, 60);
        assert!(cache.entries.contains(&fid(1)));
        assert!(!cache.entries.contains(&fid(2)));
        assert_eq!(cache.hoarded_bytes(), 60);
        cache.unhoard(fid(1));
        put(&mut cache, 3, 60);
        assert!(!cache.entries.contains(&fid(1)));
    }

    #[test]
    fn advance_keeps_current_copies_and_drops_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = DiskCache::open(dir.path(), 1000, Vec::new()).unwrap();
        put(&mut cache, 1, 10);
        assert!(cache.advance(fid(1), 1, 2));
        assert_eq!(cache.get(fid(1)).unwrap().data_version, 2);
        assert!(!cache.advance(fid(1), 1, 3));
        assert!(cache.get(fid(1)).is_none());
        assert_eq!(cache.used(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u16),
        Get(u8),
        Pin(u8),
        Unpin(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..8, 0u16..400).prop_map(|(f, s)| Op::Put(f, s)),
            (0u8..8).prop_map(Op::Get),
            (0u8..8).prop_map(Op::Pin),
            (0u8..8).prop_map(Op::Unpin),
            (0u8..8).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Against a model: used bytes equal the sum of entries, the limit holds
        /// unless only open files remain, open files are never evicted, and
        /// every entry has its data file.
        #[test]
        fn cache_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let mut cache = DiskCache::open(dir.path(), 1000, Vec::new()).unwrap();
            let mut pins: HashMap<u64, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Put(f, s) => put(&mut cache, u64::from(f), u64::from(s)),
                    Op::Get(f) => { cache.get(fid(u64::from(f))); }
                    Op::Pin(f) => { cache.pin(fid(u64::from(f))); *pins.entry(u64::from(f)).or_default() += 1; }
                    Op::Unpin(f) => {
                        if let Some(n) = pins.get_mut(&u64::from(f)) {
                            cache.unpin(fid(u64::from(f)));
                            *n -= 1;
                            if *n == 0 { pins.remove(&u64::from(f)); }
                        }
                    }
                    Op::Remove(f) => cache.remove(fid(u64::from(f))),
                }
                let sum: u64 = cache.entries.iter().map(|(_, e)| e.size).sum();
                prop_assert_eq!(sum, cache.used());
                let pinned_bytes: u64 = cache.entries.iter().filter(|(f, _)| pins.contains_key(&f.vnode)).map(|(_, e)| e.size).sum();
                prop_assert!(cache.used() <= cache.limit() || cache.used() == pinned_bytes);
                for (f, _) in cache.entries.iter() {
                    prop_assert!(cache.path(*f).exists());
                }
            }
        }
    }
}
