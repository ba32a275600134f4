//! Every redb table of the fileserver, and the records stored in them.
//!
//! Records are bincode 1.3 behind a one-byte format version, so a change to a
//! record's layout has to bump [`RECORD_VERSION`] (the golden test below fails
//! otherwise).

use crate::error::{FsResult, rpc_err};
use bincode::Options;
use cellfs_protocol::acl::Acl;
use cellfs_protocol::{ErrorCode, FileKind, Timestamp, VolumeId, VolumeKind, VolumeLock};
use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// VLDB: volume name → volume id.
pub const VOLUME_IDS: TableDefinition<&str, u64> = TableDefinition::new("volume_ids");
/// VLDB: volume id → [`VolumeHeader`].
pub const VOLUME_HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("volume_headers");
/// VLDB: volume id → [`VolumeAdmin`]. A volume without a row (made before
/// the table existed) is an unlocked read-write volume with no clone.
pub const VOLUME_ADMIN: TableDefinition<u64, &[u8]> = TableDefinition::new("volume_admin");
/// VLDB: named counters ([`NEXT_VOLUME_ID`]).
pub const VLDB_COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("vldb_counters");
/// Key of the next volume id in [`VLDB_COUNTERS`].
pub const NEXT_VOLUME_ID: &str = "next_volume_id";
/// VLDB (on the cell's first server): server index → address of every
/// fileserver of the cell (index 0 is the first server).
pub const SERVERS: TableDefinition<u32, &str> = TableDefinition::new("servers");
/// VLDB (on the cell's first server): volume id → [`Location`] of every
/// read-write volume held by another fileserver.
pub const LOCATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("locations");
/// VLDB: read-write volume id → its read-only sites (a `Vec<String>`) that
/// missed the latest release; nodes are not sent to them.
pub const OLD_SITES: TableDefinition<u64, &[u8]> = TableDefinition::new("old_sites");
/// Cell security (VLDB server): `state` is the `SecurityState` (users,
/// groups, revoked fingerprints), `hosts` the credentials issued.
pub const SECURITY: TableDefinition<&str, &[u8]> = TableDefinition::new("security");

/// Volume: vnode number → [`VnodeRecord`].
pub const VNODES: TableDefinition<u64, &[u8]> = TableDefinition::new("vnodes");
/// Volume: (directory vnode, name) → (vnode, uniquifier).
pub const ENTRIES: TableDefinition<(u64, &str), (u64, u64)> = TableDefinition::new("entries");
/// Volume: the single [`VolumeState`] record under [`STATE_KEY`].
pub const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
/// Key of the volume state in [`STATE`].
pub const STATE_KEY: &str = "volume";
/// Key in [`STATE`] present while a server has the volume open (see
/// `volume/unclean.rs`): found at open, the volume was not closed.
pub const OPEN_KEY: &str = "open";
/// Key of the volume's [`JournalState`] in [`STATE`] (a separate record so
/// volumes written before the journal existed keep their [`VolumeState`]).
pub const JOURNAL_KEY: &str = "journal";
/// Volume: change journal, change number → the (vnode, uniquifier) pairs the
/// change touched (a [`JournalEntry`]). Keys are exactly
/// `JournalState::oldest..=JournalState::seq`.
pub const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

/// Volume: (vnode, data file) → the whole bytes of a data file committed
/// without an fsync of its own, until it is settled (`volume/settle.rs`).
pub const UNSETTLED: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("unsettled");

/// Format version byte in front of every record.
pub const RECORD_VERSION: u8 = 2;

/// A volume's entry in the VLDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeHeader {
    /// Volume name.
    pub name: String,
    /// Quota in bytes (0 = unlimited).
    pub quota: u64,
    /// Creation time.
    pub created: Timestamp,
}

/// Where a volume held by another fileserver lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Volume name.
    pub name: String,
    /// Address of the fileserver holding the read-write volume.
    pub server: String,
}

/// A volume's administrative state in the VLDB, beside its [`VolumeHeader`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAdmin {
    /// Read-write volume or backup clone.
    pub kind: VolumeKind,
    /// For a backup clone: the id of the read-write volume it copies.
    pub parent: Option<VolumeId>,
    /// For a read-write volume: the id of its backup clone, if it has one.
    pub backup: Option<VolumeId>,
    /// When the (latest) backup clone was made.
    pub backup_time: Option<Timestamp>,
    /// The administrative lock (`cellfs-vos lock`).
    pub lock: Option<VolumeLock>,
    /// For a read-write volume: the id of its released read-only copy.
    pub readonly: Option<VolumeId>,
    /// For a read-write volume: its read-only sites (server addresses).
    pub ro_sites: Vec<String>,
    /// When the volume was last released to its read-only sites.
    pub last_release: Option<Timestamp>,
}

impl VolumeAdmin {
    /// The id of this read-write volume's clone of `kind`, if it has one.
    pub fn clone_id(&self, kind: VolumeKind) -> Option<VolumeId> {
        match kind {
            VolumeKind::Backup => self.backup,
            VolumeKind::ReadOnly => self.readonly,
            VolumeKind::ReadWrite => None,
        }
    }

    /// Records (or with `None` forgets) this volume's clone of `kind`.
    pub fn set_clone_id(&mut self, kind: VolumeKind, id: Option<VolumeId>) {
        match kind {
            VolumeKind::Backup => self.backup = id,
            VolumeKind::ReadOnly => self.readonly = id,
            VolumeKind::ReadWrite => {}
        }
    }

    /// Every clone of this volume, with its kind.
    pub fn clones(&self) -> impl Iterator<Item = (VolumeKind, VolumeId)> {
        let backup = self.backup.map(|id| (VolumeKind::Backup, id));
        let readonly = self.readonly.map(|id| (VolumeKind::ReadOnly, id));
        backup.into_iter().chain(readonly)
    }
}

/// A volume's counters, kept in its own database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    /// Next vnode number to hand out (numbers are never reused).
    pub next_vnode: u64,
    /// Next uniquifier to hand out.
    pub next_unique: u64,
    /// Bytes of file data.
    pub used: u64,
    /// Number of vnodes.
    pub files: u64,
    /// Last change to anything in the volume.
    pub updated: Timestamp,
}

/// A volume's change numbering and the reach of its journal, kept in its own
/// database beside [`VolumeState`] and written in the same transaction as
/// every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalState {
    /// Random nonzero id of this incarnation of the volume: a new one is made
    /// whenever the volume is created (or first opened by a server with a
    /// journal), which voids every change number clients learned before.
    pub incarnation: u64,
    /// Change number of the last committed change (0: none yet).
    pub seq: u64,
    /// Lowest change number still in [`JOURNAL`] (`seq + 1` when it is empty).
    /// Every change after `oldest - 1` is listed, so a client that is up to
    /// date through change `since` can be told exactly what changed iff
    /// `oldest - 1 <= since <= seq`.
    pub oldest: u64,
}

/// One journal entry: the FIDs (as vnode, uniquifier) one change touched.
pub type JournalEntry = Vec<(u64, u64)>;

/// One vnode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnodeRecord {
    /// File, directory, symlink or mount point.
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Link count (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (directories: 32 per entry; links: target length).
    pub size: u64,
    /// Bumped on every change of the vnode.
    pub data_version: u64,
    /// Version suffix of the committed data file `data/<vnode>.<data_file>`.
    pub data_file: u64,
    /// Content modification time.
    pub mtime: Timestamp,
    /// Status change time.
    pub ctime: Timestamp,
    /// Access time as set by clients.
    pub atime: Timestamp,
    /// Uniquifier of this incarnation of the vnode number.
    pub unique: u64,
    /// Symlink target or mount point volume name.
    pub target: Option<String>,
    /// The directory this vnode is in: for a directory its parent (the
    /// root is its own), for anything else the directory it was made in or
    /// last renamed into, whose ACL governs it.
    pub parent: u64,
    /// A directory's access control list (`None`: the open default,
    /// [`Acl::open`]); always `None` for anything else.
    pub acl: Option<Acl>,
}

impl VnodeRecord {
    /// A new, empty vnode of `kind` created at `now`: link count 2 for a
    /// directory, 1 otherwise; data version 1; no data file.
    pub fn new(kind: FileKind, mode: u32, (uid, gid): (u32, u32), unique: u64, parent: u64, now: Timestamp) -> Self {
        VnodeRecord {
            kind,
            mode,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            uid,
            gid,
            size: 0,
            data_version: 1,
            data_file: 0,
            mtime: now,
            ctime: now,
            atime: now,
            unique,
            target: None,
            parent,
            acl: None,
        }
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(1 << 20)
        .reject_trailing_bytes()
}

/// Encodes a record with its version byte.
pub fn encode<T: Serialize>(value: &T) -> FsResult<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    out.extend(options().serialize(value)?);
    Ok(out)
}

/// Decodes a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> FsResult<T> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => Ok(options().deserialize(rest)?),
        Some((v, _)) => Err(rpc_err(ErrorCode::Io, format!("unknown record version {v}"))),
        None => Err(rpc_err(ErrorCode::Io, "empty record")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_of_a_vnode_record() {
        let rec = VnodeRecord {
            kind: FileKind::Symlink,
            mode: 0o755,
            nlink: 1,
            uid: 2,
            gid: 3,
            size: 4,
            data_version: 5,
            data_file: 6,
            mtime: Timestamp { secs: 7, nanos: 8 },
            ctime: Timestamp { secs: 9, nanos: 10 },
            atime: Timestamp { secs: 11, nanos: 12 },
            unique: 13,
            target: Some("t".into()),
            parent: 14,
            acl: Some(Acl::open()),
        };
        let bytes = encode(&rec).unwrap();
        // Changing this layout must bump RECORD_VERSION.
        assert_eq!(
            bytes,
            vec![
                2, 2, 251, 237, 1, 1, 2, 3, 4, 5, 6, 14, 8, 18, 10, 22, 12, 13, 1, 1, b't', 14, 1, 1, 0, 127, 0
            ]
        );
        assert_eq!(decode::<VnodeRecord>(&bytes).unwrap(), rec);
        assert!(decode::<VnodeRecord>(&[9, 1, 2]).is_err());
        assert!(decode::<VnodeRecord>(&[]).is_err());
    }

    #[test]
    fn golden_bytes_of_journal_records() {
        let st = JournalState {
            incarnation: 300,
            seq: 2,
            oldest: 1,
        };
        let bytes = encode(&st).unwrap();
        // Changing this layout must bump RECORD_VERSION.
        assert_eq!(bytes, vec![2, 251, 44, 1, 2, 1]);
        assert_eq!(decode::<JournalState>(&bytes).unwrap(), st);
        let entry: JournalEntry = vec![(1, 1), (5, 9)];
        let bytes = encode(&entry).unwrap();
        assert_eq!(bytes, vec![2, 2, 1, 1, 5, 9]);
        assert_eq!(decode::<JournalEntry>(&bytes).unwrap(), entry);
    }
}
