//! The saved cache index: what a node knew of the cell (statuses, listings,
//! link targets, mount points, journal baselines) and which cached copies
//! are complete, so a restarted cache manager comes back warm and can serve
//! its cache even when the fileserver is down.
//!
//! Written atomically (temporary file, fsync, rename) every few seconds and
//! at unmount. The live tables are encoded in place through borrowed views
//! ([`SnapshotRef`]), never copied first, so a save at 100,000 files costs
//! the encoded bytes, not a second node table. A copy is listed only once its fetch completed and while it
//! holds no unstored writes, so a crash never leaves a partial or dirty copy
//! vouched for; anything else in the data folder is discarded at start.

use crate::cache::CacheEntry;
use crate::nodes::Listing;
use cellfs_protocol::{Fid, Status, VolumeId};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the index in the cache folder.
const INDEX_FILE: &str = "index.bin";
/// Leading bytes of the index file.
const MAGIC: &[u8; 8] = b"CELLFSIX";
/// Format version; bump on any change to [`Snapshot`].
pub const VERSION: u32 = 2;

/// One node as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedNode {
    /// Last status known.
    pub status: Status,
    /// Directory listing, if held.
    pub listing: Option<Listing>,
    /// Symlink or mount point target, if known.
    pub target: Option<String>,
    /// Milliseconds the promise had left when saved (0: none).
    pub promise_left_ms: u64,
}

/// Everything the index holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Cell name, so a cache folder is never used for another cell.
    pub cell: String,
    /// FID of the cell's root directory.
    pub root: Fid,
    /// Known nodes.
    pub nodes: Vec<SavedNode>,
    /// Mount point → volume root.
    pub mounts: Vec<(Fid, Fid)>,
    /// Journal baselines per volume: (incarnation, change number).
    pub baselines: Vec<(VolumeId, (u64, u64))>,
    /// Complete cached copies, least recently used first.
    pub copies: Vec<(Fid, CacheEntry)>,
    /// Hoarded (pinned) FIDs.
    pub hoarded: Vec<Fid>,
}

/// One node as saved, borrowed from the live table; encodes exactly as
/// [`SavedNode`].
#[derive(Debug, Serialize)]
pub struct SavedNodeRef<'a> {
    /// Last status known.
    pub status: &'a Status,
    /// Directory listing, if held.
    pub listing: Option<&'a Listing>,
    /// Symlink or mount point target, if known.
    pub target: Option<&'a str>,
    /// Milliseconds the promise had left when saved (0: none).
    pub promise_left_ms: u64,
}

/// The index borrowed from the live state; encodes exactly as [`Snapshot`].
#[derive(Debug, Serialize)]
pub struct SnapshotRef<'a> {
    /// Cell name.
    pub cell: &'a str,
    /// FID of the cell's root directory.
    pub root: Fid,
    /// Known nodes.
    pub nodes: Vec<SavedNodeRef<'a>>,
    /// Mount point → volume root.
    pub mounts: Vec<(Fid, Fid)>,
    /// Journal baselines per volume.
    pub baselines: Vec<(VolumeId, (u64, u64))>,
    /// Complete cached copies, least recently used first.
    pub copies: Vec<(Fid, CacheEntry)>,
    /// Hoarded (pinned) FIDs.
    pub hoarded: Vec<Fid>,
}

impl Snapshot {
    /// This snapshot as the borrowed view [`encode`] takes.
    pub fn as_ref(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            cell: &self.cell,
            root: self.root,
            nodes: self
                .nodes
                .iter()
                .map(|n| SavedNodeRef {
                    status: &n.status,
                    listing: n.listing.as_ref(),
                    target: n.target.as_deref(),
                    promise_left_ms: n.promise_left_ms,
                })
                .collect(),
            mounts: self.mounts.clone(),
            baselines: self.baselines.clone(),
            copies: self.copies.clone(),
            hoarded: self.hoarded.clone(),
        }
    }
}

/// Errors saving or loading the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// File I/O failed.
    #[error("cache index {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is not an index of this version.
    #[error("cache index {0}: not a version {VERSION} cellfs index")]
    Format(PathBuf),
    /// The body does not decode.
    #[error("cache index {path}: {source}")]
    Decode { path: PathBuf, source: bincode::Error },
}

/// The index file's bytes for `snap`: header and body, allocated once at
/// their exact size.
pub fn encode(snap: &SnapshotRef<'_>) -> Result<Vec<u8>, bincode::Error> {
    let size = bincode::serialized_size(snap)?;
    let mut bytes = Vec::with_capacity(12 + usize::try_from(size).unwrap_or(0));
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bincode::serialize_into(&mut bytes, snap)?;
    Ok(bytes)
}

/// Writes index bytes made by [`encode`] into `cache_dir` atomically.
pub fn write(cache_dir: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let path = cache_dir.join(INDEX_FILE);
    let tmp = cache_dir.join(format!("{INDEX_FILE}.tmp"));
    let io = |source| IndexError::Io {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    if let Ok(dir) = std::fs::File::open(cache_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads the index of `cache_dir`; `Ok(None)` when there is none.
pub fn load(cache_dir: &Path) -> Result<Option<Snapshot>, IndexError> {
    let path = cache_dir.join(INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IndexError::Io { path, source }),
    };
    if bytes.len() < 12 || &bytes[..8] != MAGIC || bytes[8..12] != VERSION.to_le_bytes() {
        return Err(IndexError::Format(path));
    }
    bincode::deserialize(&bytes[12..])
        .map(Some)
        .map_err(|source| IndexError::Decode { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellfs_protocol::{FileKind, Timestamp};

    fn snapshot() -> Snapshot {
        let fid = Fid {
            volume: 1,
            vnode: 1,
            unique: 1,
        };
        let status = Status {
            fid,
            kind: FileKind::Dir,
            mode: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            data_version: 3,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            atime: Timestamp::default(),
            acl_dir: 1,
        };
        Snapshot {
            cell: "c".into(),
            root: fid,
            nodes: vec![SavedNode {
                status,
                listing: Some(Listing::default()),
                target: None,
                promise_left_ms: 5,
            }],
            mounts: vec![(fid, fid)],
            baselines: vec![(1, (7, 9))],
            copies: vec![(
                fid,
                CacheEntry {
                    data_version: 3,
                    size: 10,
                },
            )],
            hoarded: vec![fid],
        }
    }

    #[test]
    fn round_trips_and_refuses_foreign_or_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        write(dir.path(), &encode(&snapshot().as_ref()).unwrap()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(snapshot()));
        let path = dir.path().join(INDEX_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(load(dir.path()), Err(IndexError::Decode { .. })));
        std::fs::write(&path, b"something else").unwrap();
        assert!(matches!(load(dir.path()), Err(IndexError::Format(_))));
    }

    #[test]
    fn golden_header() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &encode(&snapshot().as_ref()).unwrap()).unwrap();
        let bytes = std::fs::read(dir.path().join(INDEX_FILE)).unwrap();
        // A change to the format must bump VERSION.
        assert_eq!(&bytes[..12], b"CELLFSIX\x02\x00\x00\x00");
        // The borrowed view encodes byte for byte as the owned snapshot.
        assert_eq!(bytes[12..], bincode::serialize(&snapshot()).unwrap());
    }
}
