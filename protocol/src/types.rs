//! Names of things on the wire: FIDs, status records, volume descriptions.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A volume's numeric id, unique in the cell.
pub type VolumeId = u64;

/// A file identifier: (volume, vnode, uniquifier). Never reused: a vnode number
/// comes back only with a new uniquifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fid {
    /// Volume that holds the vnode.
    pub volume: VolumeId,
    /// Vnode number inside the volume (1 is the volume root).
    pub vnode: u64,
    /// Uniquifier: distinguishes reuses of a vnode number.
    pub unique: u64,
}

impl Fid {
    /// The vnode number of every volume's root directory.
    pub const ROOT_VNODE: u64 = 1;

    /// The root directory FID of `volume`.
    pub fn root(volume: VolumeId) -> Self {
        Fid {
            volume,
            vnode: Self::ROOT_VNODE,
            unique: 1,
        }
    }
}

impl std::fmt::Display for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.volume, self.vnode, self.unique)
    }
}

/// What a vnode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is fetched with `ReadLink`.
    Symlink,
    /// An AFS-style mount point: its target (`ReadLink`) is a volume name,
    /// and clients show the root of that volume in its place.
    MountPoint,
    /// A FIFO, socket or device node (`mknod`): only its status is kept.
    /// Each node's kernel runs the pipes and sockets opened through it, and
    /// never opens a device (cellfs mounts are `nodev`).
    Special(Special),
}

/// What a [`FileKind::Special`] vnode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Special {
    /// A named pipe.
    Fifo,
    /// A Unix-domain socket's name.
    Socket,
    /// A character device node with this device number.
    CharDevice(u64),
    /// A block device node with this device number.
    BlockDevice(u64),
}

impl Special {
    /// The special file `mode` (its `S_IFMT` bits) and `rdev` describe, if
    /// it is one.
    pub fn from_mode(mode: u32, rdev: u64) -> Option<Special> {
        match mode & 0o170000 {
            0o010000 => Some(Special::Fifo),
            0o140000 => Some(Special::Socket),
            0o020000 => Some(Special::CharDevice(rdev)),
            0o060000 => Some(Special::BlockDevice(rdev)),
            _ => None,
        }
    }

    /// The device number (0 for a FIFO or socket).
    pub fn rdev(self) -> u64 {
        match self {
            Special::CharDevice(d) | Special::BlockDevice(d) => d,
            Special::Fifo | Special::Socket => 0,
        }
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds within the second, `< 1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// Converts back to a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(self.nanos.min(999_999_999)));
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.secs as u64) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs()) + nanos
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -(d.as_secs() as i64);
                let mut nanos = 0;
                if d.subsec_nanos() > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - d.subsec_nanos();
                }
                Timestamp { secs, nanos }
            }
        }
    }
}

/// The status of a vnode as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Which vnode this describes.
    pub fid: Fid,
    /// File, directory, symlink or mount point.
    pub kind: FileKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Number of directory entries naming this vnode (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes (symlinks: length of the target).
    pub size: u64,
    /// Data version: bumped on every content or directory change.
    pub data_version: u64,
    /// Last content modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Last access as set by clients (the server does not track reads).
    pub atime: Timestamp,
    /// Vnode number of the directory whose ACL governs this vnode: a
    /// directory's own, otherwise the directory it was made or renamed in.
    pub acl_dir: u64,
}

/// One name in a directory listing, with the status of what it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// The entry's name (never `.` or `..`).
    pub name: String,
    /// Status of the named vnode.
    pub status: Status,
}

/// Attribute changes for `SetAttr`; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// Truncate or extend to this size (files only).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
}

/// What kind of volume a volume is (AFS: RW, RO, BK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum VolumeKind {
    /// The read-write volume every change goes to.
    #[default]
    ReadWrite,
    /// A read-only copy-on-write clone of a read-write volume (`NAME.backup`),
    /// made by `cellfs-vos backup`.
    Backup,
    /// The released read-only copy of a read-write volume (`NAME.readonly`),
    /// made by `cellfs-vos release`; regular mount points show it.
    ReadOnly,
}

impl VolumeKind {
    /// The short name `cellfs-vos` prints: `RW`, `BK` or `RO`.
    pub fn short(self) -> &'static str {
        match self {
            VolumeKind::ReadWrite => "RW",
            VolumeKind::Backup => "BK",
            VolumeKind::ReadOnly => "RO",
        }
    }
}

/// An administrative lock on a volume (`cellfs-vos lock`): while it is held,
/// admin operations on the volume are refused with the holder named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeLock {
    /// Who took the lock (as the locking tool reported it, e.g. `root@admin1`).
    pub holder: String,
    /// When it was taken.
    pub since: Timestamp,
}

/// Space on the file system that holds a volume's data on its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// Size in bytes.
    pub total: u64,
    /// Bytes still free for an unprivileged writer.
    pub avail: u64,
}

impl DiskSpace {
    /// The space of the file system that holds `path`, or `None` when it
    /// cannot be asked.
    pub fn of(path: &std::path::Path) -> Option<Self> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c` is a NUL-terminated path and `st` a buffer of the
        // right type; statvfs(3) fills it when it returns 0.
        if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it initialized `st`.
        let st = unsafe { st.assume_init() };
        let unit = st.f_frsize;
        Some(DiskSpace {
            total: st.f_blocks.saturating_mul(unit),
            avail: st.f_bavail.saturating_mul(unit),
        })
    }
}

/// A volume as `cellfs-vos` and `statfs` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Numeric id.
    pub id: VolumeId,
    /// Name, e.g. `root.cell` or `site.www`.
    pub name: String,
    /// Quota in bytes; 0 means unlimited.
    pub quota: u64,
    /// Bytes used by file data.
    pub used: u64,
    /// Number of vnodes (files, directories, links).
    pub files: u64,
    /// Server address that holds it.
    pub server: String,
    /// When the volume was created.
    pub created: Timestamp,
    /// When anything in it last changed.
    pub updated: Timestamp,
    /// Read-write or backup clone.
    pub kind: VolumeKind,
    /// For a backup clone or read-only copy: the name of the read-write volume it copies.
    pub parent: Option<String>,
    /// For a read-write volume: when its backup clone was last made; for a
    /// clone: when it was made. `None`: never.
    pub backup_time: Option<Timestamp>,
    /// The administrative lock, if one is held.
    pub lock: Option<VolumeLock>,
    /// Servers holding a copy of the volume: the read-write site first, then
    /// the read-only sites (`addsite`).
    pub sites: Vec<String>,
    /// When the volume was last released to its read-only sites (`None`: never).
    pub last_release: Option<Timestamp>,
    /// The server file system that holds the volume's data, when the
    /// server that holds it answered.
    pub disk: Option<DiskSpace>,
}

/// What `df` shows for a volume without a quota on a server that did not
/// say how large its disk is.
pub const UNLIMITED_SPACE: u64 = 1 << 50;

impl VolumeInfo {
    /// The size and the free bytes `df` shows for the volume: its quota,
    /// bounded by the server disk that holds it; without a quota, that
    /// disk.
    pub fn space(&self) -> (u64, u64) {
        let by_quota = (self.quota > 0).then(|| (self.quota, self.quota.saturating_sub(self.used)));
        match (by_quota, self.disk) {
            (Some((total, free)), Some(d)) => (total.min(d.total), free.min(d.avail)),
            (Some(q), None) => q,
            (None, Some(d)) => (d.total, d.avail),
            (None, None) => (UNLIMITED_SPACE, UNLIMITED_SPACE.saturating_sub(self.used)),
        }
    }
}

/// Counters a fileserver exposes through the `Stats` RPC.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// RPCs served since start, excluding `Stats` itself.
    pub rpcs: u64,
    /// Callback breaks delivered to clients.
    pub breaks_sent: u64,
    /// Callback promises currently held.
    pub promises: u64,
    /// Clients connected now.
    pub connections: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(quota: u64, used: u64, disk: Option<DiskSpace>) -> VolumeInfo {
        VolumeInfo {
            id: 1,
            name: "v".into(),
            quota,
            used,
            files: 1,
            server: String::new(),
            created: Timestamp { secs: 0, nanos: 0 },
            updated: Timestamp { secs: 0, nanos: 0 },
            kind: VolumeKind::ReadWrite,
            parent: None,
            backup_time: None,
            lock: None,
            sites: Vec::new(),
            last_release: None,
            disk,
        }
    }

    #[test]
    fn space_is_the_quota_bounded_by_the_disk() {
        let disk = Some(DiskSpace {
            total: 100 << 30,
            avail: 5 << 30,
        });
        // No quota: the server's disk.
        assert_eq!(volume(0, 1 << 30, disk).space(), (100 << 30, 5 << 30));
        // A quota with room, on a nearly full disk: the disk's room.
        assert_eq!(volume(10 << 30, 1 << 30, disk).space(), (10 << 30, 5 << 30));
        // A quota nearly used up: the quota's room.
        assert_eq!(volume(10 << 30, 9 << 30, disk).space(), (10 << 30, 1 << 30));
        // A quota larger than the disk: the disk's size.
        assert_eq!(volume(1 << 40, 0, disk).space(), (100 << 30, 5 << 30));
        // Over quota (a lowered quota): nothing free.
        assert_eq!(volume(1 << 30, 2 << 30, None).space(), (1 << 30, 0));
        // Nothing known of the disk and no quota.
        assert_eq!(volume(0, 10, None).space(), (UNLIMITED_SPACE, UNLIMITED_SPACE - 10));
    }

    #[test]
    fn disk_space_of_a_folder_and_of_nothing() {
        let d = DiskSpace::of(std::path::Path::new("/")).expect("statvfs of /");
        assert!(d.total > 0 && d.avail <= d.total, "{d:?}");
        assert!(DiskSpace::of(std::path::Path::new("/no/such/folder/here")).is_none());
    }
}
