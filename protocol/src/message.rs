//! RPC requests and replies (modelled on AFS RXAFS) and the messages a server
//! pushes to clients.
//!
//! One RPC is one bidirectional QUIC stream: the client writes a [`Request`]
//! frame, then for `StoreData` exactly `len` raw bytes, and finishes its side.
//! The server answers with one frame holding `Result<Reply, RpcError>`, then for
//! `FetchData` exactly the `len` raw bytes the reply announces.
//!
//! Every reply that carries a [`Status`] also grants the caller a callback
//! promise on that FID, lasting [`Reply::Hello::promise_secs`] from when the
//! request was sent.

use crate::acl::{AclChange, AclLine, Caller, GroupInfo, HostInfo, Rights, Role, UserInfo};
use crate::types::{DirEntry, Fid, SetAttr, Special, Stats, Status, Timestamp, VolumeId, VolumeInfo};
use serde::{Deserialize, Serialize};

/// Most FIDs one `BulkStatus` may ask about (the reply must fit a frame);
/// a client splits longer lists. More is refused with `BadRequest`.
pub const MAX_BULK_FIDS: usize = 250_000;

/// Most FIDs one `Reconnect` may list. More is refused with `BadRequest`.
pub const MAX_RECONNECT_FIDS: usize = 1_000_000;

/// Most FIDs one `FetchFiles` may ask for. More is refused with `BadRequest`.
pub const MAX_FETCH_FILES: usize = 1024;

/// Largest file `FetchFiles` returns with its bytes; larger ones come back
/// without (the client fetches them with `FetchData`).
pub const MAX_INLINE_FILE: u64 = 1 << 20;

/// Most bytes of file content in one `FetchFiles` reply; files past it come
/// back without their bytes.
pub const MAX_INLINE_TOTAL: u64 = 16 << 20;

/// Everything a client can ask a fileserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe; answered with `Reply::Ok`.
    Ping,
    /// First call on a connection: returns the cell's parameters.
    Hello,
    /// Server counters (not counted in `Stats::rpcs`).
    Stats,
    /// The root directory status of the named volume.
    GetRoot { volume: String },
    /// Status of one vnode.
    FetchStatus { fid: Fid },
    /// Status of many vnodes in one trip; each answered separately. At most
    /// [`MAX_BULK_FIDS`].
    BulkStatus { fids: Vec<Fid> },
    /// Look a name up in a directory.
    Lookup { dir: Fid, name: String },
    /// The whole listing of a directory, with every entry's status.
    ReadDir { dir: Fid },
    /// The whole content of a file; reply `Data`, then the bytes.
    FetchData { fid: Fid },
    /// Write `len` bytes (sent after the frame) at `offset`, then set the size
    /// to `truncate` if given (before the write is applied). `len` may be 0.
    /// With `expect`, refused with [`crate::ErrorCode::Changed`] unless the
    /// file's data version is still `expect` when the store commits (a
    /// write kept through an outage, stored once the server is back).
    StoreData {
        fid: Fid,
        offset: u64,
        len: u64,
        truncate: Option<u64>,
        mtime: Option<crate::Timestamp>,
        expect: Option<u64>,
    },
    /// Change attributes (chmod/chown/utimes/truncate).
    SetAttr { fid: Fid, attr: SetAttr },
    /// Create an empty file.
    Create {
        dir: Fid,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    },
    /// Create a directory.
    MakeDir {
        dir: Fid,
        name: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Create a symbolic link.
    Symlink {
        dir: Fid,
        name: String,
        target: String,
        uid: u32,
        gid: u32,
    },
    /// Add a hard link `name` in `dir` to the file `fid`.
    Link { dir: Fid, name: String, fid: Fid },
    /// Remove a non-directory entry.
    Remove { dir: Fid, name: String },
    /// Remove an empty directory.
    RemoveDir { dir: Fid, name: String },
    /// Rename within a volume, replacing a compatible target.
    Rename {
        from_dir: Fid,
        from_name: String,
        to_dir: Fid,
        to_name: String,
    },
    /// The target of a symlink or mount point.
    ReadLink { fid: Fid },
    /// Quota and usage of a volume.
    GetVolumeStatus { volume: VolumeId },
    /// The client drops its promises on these FIDs.
    GiveUpCallbacks { fids: Vec<Fid> },
    /// Admin: create a volume, on `server` when given (another fileserver
    /// of the cell, which the VLDB server asks to hold it) or here.
    CreateVolume {
        name: String,
        quota: u64,
        server: Option<String>,
    },
    /// Admin: list volumes.
    ListVolumes,
    /// Admin: describe one volume.
    ExamineVolume { name: String },
    /// Admin: delete a volume and everything in it.
    RemoveVolume { name: String },
    /// Admin: change a volume's quota (0 = unlimited).
    SetQuota { name: String, quota: u64 },
    /// Admin: create a mount point `name` in `dir` for `volume`; a
    /// `read_write` one always shows the read-write volume.
    MakeMount {
        dir: Fid,
        name: String,
        volume: String,
        read_write: bool,
    },
    /// The root a mount point for `volume` leads to: the released read-only
    /// copy when there is one and the mount point is not `read_write`,
    /// otherwise the read-write volume. Answered with `Reply::MountRoot`.
    GetMountRoot { volume: String, read_write: bool },
    /// The servers holding volume `volume`, best first. Answered with
    /// `Reply::Located`; asked of the VLDB server.
    LocateVolume { volume: VolumeId },
    /// A fileserver joining the cell registers its address with the VLDB
    /// server. Answered with `Reply::Registered`.
    RegisterServer { address: String },
    /// Server to server: install the full dump that follows (`len` bytes)
    /// as volume `id` called `name` of `kind`, replacing a previous copy
    /// whole; every node holding anything of it drops it. Used by `release`
    /// (read-only copies) and `move`. Answered with `Reply::Volume`.
    InstallVolume {
        name: String,
        id: VolumeId,
        kind: crate::VolumeKind,
        len: u64,
    },
    /// Admin: move read-write volume `name` to fileserver `to`; nodes
    /// follow it without a remount. Answered with `Reply::Volume`.
    MoveVolume { name: String, to: String },
    /// Admin: add a read-only site on `server` for a volume (filled by the next release).
    AddSite { name: String, server: String },
    /// Admin: remove a read-only site (its copy is deleted).
    RemoveSite { name: String, server: String },
    /// Admin: snapshot the read-write volume to its read-only sites
    /// atomically. Answered with the read-only copy's `Reply::Volume`.
    Release { name: String },
    /// Admin: compare the VLDB with the volumes this server holds and mend
    /// dangling references. Answered with `Reply::Report`.
    SyncVldb,
    /// Admin: rename a volume (and its backup clone with it).
    RenameVolume { name: String, new_name: String },
    /// Admin: take the administrative lock of a volume for `holder`.
    LockVolume { name: String, holder: String },
    /// Admin: release the administrative lock of a volume.
    UnlockVolume { name: String },
    /// Admin: make (or remake) the read-only copy-on-write clone
    /// `NAME.backup` of a read-write volume. Answered with the clone's
    /// `Reply::Volume`.
    BackupVolume { name: String },
    /// Admin: a dump of the volume (see `docs/DUMP-FORMAT.md`), whole or
    /// incremental (file contents only of files changed at or after `since`).
    /// Answered with `Reply::Dump { len }` followed by exactly `len` bytes.
    DumpVolume { name: String, since: Option<Timestamp> },
    /// Admin: restore a dump (`len` bytes sent after the frame) as volume
    /// `name`. A full dump creates the volume, or replaces it when
    /// `overwrite`; an incremental dump applies to the existing volume it was
    /// taken from. Answered with `Reply::Volume`.
    /// With `server`, the volume is made on that fileserver of the cell.
    RestoreVolume {
        name: String,
        len: u64,
        overwrite: bool,
        server: Option<String>,
    },
    /// A client that lost contact asks what changed in `volume` since change
    /// number `since` of the volume incarnation `incarnation` (both as learned
    /// from an earlier `Reconnect` reply or from breaks; 0 when unknown). It
    /// lists the FIDs it holds cached copies of; the server grants promises on
    /// those that did not change. Answered with `Reply::Reconnected`. At most
    /// [`MAX_RECONNECT_FIDS`] FIDs.
    Reconnect {
        volume: VolumeId,
        incarnation: u64,
        since: u64,
        fids: Vec<Fid>,
    },
    /// The status and whole content of several small files at once (a cold
    /// directory of PHP includes costs one round trip, not one per file).
    /// Answered with `Reply::Files`. At most [`MAX_FETCH_FILES`] FIDs; each
    /// file's bytes come back when it is at most `max_file` (capped at
    /// [`MAX_INLINE_FILE`]) and they fit in `max_total` (capped at
    /// [`MAX_INLINE_TOTAL`]).
    FetchFiles {
        fids: Vec<Fid>,
        max_file: u64,
        max_total: u64,
    },
    /// Change the ACL of directory `dir` (needs the `a` right): each
    /// change sets one principal's entry; with `clear` the ACL starts empty.
    /// Answered with `Reply::Acl`.
    SetAcl {
        dir: Fid,
        changes: Vec<AclChange>,
        clear: bool,
    },
    /// The ACL of directory `dir` with names resolved (needs `l`).
    /// Answered with `Reply::Acl`.
    GetAcl { dir: Fid },
    /// The rights the caller has on the ACL governing `fid` (a directory's
    /// own, a file's directory's: `Status::acl_dir`). Answered with
    /// `Reply::Rights`.
    GetRights { fid: Fid },
    /// Admin: issue a credential named `name` for `role`; the reply carries
    /// its certificate and key (`Reply::Credential`), which are not kept.
    AddHost { name: String, role: Role },
    /// Admin: revoke every credential issued as `name`; connections using
    /// one are closed at once and refused from then on.
    RevokeHost { name: String },
    /// The credentials the cell issued. Answered with `Reply::Hosts`.
    ListHosts,
    /// Admin: add a user of the cell with the uid web nodes know it by.
    AddUser { name: String, uid: u32 },
    /// Admin: remove a user (and its group memberships).
    RemoveUser { name: String },
    /// The cell's users. Answered with `Reply::Users`.
    ListUsers,
    /// Admin: add a group with the gid web nodes know it by.
    AddGroup { name: String, gid: u32 },
    /// Admin: remove a group.
    RemoveGroup { name: String },
    /// Admin: add user `user` to group `group`.
    AddMember { group: String, user: String },
    /// Admin: remove user `user` from group `group`.
    RemoveMember { group: String, user: String },
    /// The cell's groups with their members. Answered with `Reply::Groups`.
    ListGroups,
    /// Server to server: the cell's users, groups and revoked credentials,
    /// pushed by the VLDB server after every change.
    PutSecurity { state: SecurityState },
    /// Server to server: the cell's security state, asked of the VLDB
    /// server at start. Answered with `Reply::Security`.
    GetSecurity,
    /// A whole-file lock held by the asking node (its connection) for the
    /// processes on it; acquiring and testing need the `k` right. Answered
    /// with `Reply::Lock`. Locks end with the connection.
    Lock { fid: Fid, op: LockOp },
    /// Create a FIFO, socket or device node (`mknod`). Answered with
    /// `Reply::Created`.
    MakeSpecial {
        dir: Fid,
        name: String,
        special: Special,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// Makes every change to `fid`'s volume durable and changes nothing:
    /// what the close of a new file the node has not written sends, since
    /// its create may have been answered before it was durable. Answered
    /// with `Reply::Ok`.
    Sync { fid: Fid },
    /// Sets aside `count` FIDs of `volume` (at most [`MAX_RESERVED_FIDS`]
    /// a request) for files the asking node will make with
    /// `CreateReserved`. Answered with `Reply::Fids` once the volume's
    /// counters are durably past them, so no crash hands them out again.
    /// The set-aside ends with the server process.
    ReserveFids { volume: VolumeId, count: u32 },
    /// Creates an empty file as `Create` does, under a FID `ReserveFids`
    /// set aside: the node answered the kernel before sending it.
    /// Refused with `Exists` when the name is taken and `Stale` when the
    /// FID is not set aside. The server holds back later requests naming
    /// the FID until this one is answered. Answered with `Reply::Created`.
    CreateReserved {
        dir: Fid,
        name: String,
        fid: Fid,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Most FIDs one `ReserveFids` sets aside.
pub const MAX_RESERVED_FIDS: u32 = 256;

/// A whole-file lock mode, as a node holds it on behalf of its processes
/// (byte ranges are kept by the node itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// Shared with other nodes holding `Shared` (read locks).
    Shared,
    /// No other node holds any lock (write locks).
    Exclusive,
}

/// What a `Lock` request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Hold the file in this mode (replacing what this node held) unless
    /// another node holds a conflicting lock.
    Acquire(LockMode),
    /// Only say whether `Acquire` of this mode would conflict.
    Test(LockMode),
    /// Hold nothing on the file any more.
    Release,
}

/// The part of the cell's security every fileserver needs: who is who, and
/// which credentials no longer count.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecurityState {
    /// The cell's users.
    pub users: Vec<UserInfo>,
    /// The cell's groups.
    pub groups: Vec<GroupInfo>,
    /// SHA-256 fingerprints (hex) of revoked certificates.
    pub revoked: Vec<String>,
}

/// What a client writes at the start of every RPC stream: the request and,
/// for file requests made for a process on a web node, who that process is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// The process the request acts for; `None` is anonymous (only
    /// `system:anyuser` entries apply).
    pub caller: Option<Caller>,
    /// The request.
    pub request: Request,
}

impl Request {
    /// The volume a file request is about (the one whose server must answer
    /// it); `None` for cell-wide and admin requests.
    pub fn volume(&self) -> Option<VolumeId> {
        match self {
            Request::FetchStatus { fid }
            | Request::FetchData { fid }
            | Request::StoreData { fid, .. }
            | Request::SetAttr { fid, .. }
            | Request::ReadLink { fid } => Some(fid.volume),
            Request::Lookup { dir, .. }
            | Request::ReadDir { dir }
            | Request::Create { dir, .. }
            | Request::CreateReserved { dir, .. }
            | Request::MakeDir { dir, .. }
            | Request::Symlink { dir, .. }
            | Request::MakeSpecial { dir, .. }
            | Request::Link { dir, .. }
            | Request::Remove { dir, .. }
            | Request::RemoveDir { dir, .. }
            | Request::MakeMount { dir, .. }
            | Request::SetAcl { dir, .. }
            | Request::GetAcl { dir } => Some(dir.volume),
            Request::GetRights { fid } | Request::Lock { fid, .. } | Request::Sync { fid } => Some(fid.volume),
            Request::Rename { from_dir, .. } => Some(from_dir.volume),
            Request::BulkStatus { fids } | Request::GiveUpCallbacks { fids } | Request::FetchFiles { fids, .. } => {
                fids.first().map(|f| f.volume)
            }
            Request::GetVolumeStatus { volume }
            | Request::Reconnect { volume, .. }
            | Request::ReserveFids { volume, .. } => Some(*volume),
            _ => None,
        }
    }

    /// True for a change to a volume's files or folders, the kind that
    /// breaks other nodes' promises.
    pub fn changes_files(&self) -> bool {
        matches!(
            self,
            Request::StoreData { .. }
                | Request::SetAttr { .. }
                | Request::Create { .. }
                | Request::CreateReserved { .. }
                | Request::MakeDir { .. }
                | Request::Symlink { .. }
                | Request::MakeSpecial { .. }
                | Request::Link { .. }
                | Request::Remove { .. }
                | Request::RemoveDir { .. }
                | Request::Rename { .. }
                | Request::MakeMount { .. }
                | Request::SetAcl { .. }
        )
    }

    /// True for a volume operation that replaces or removes a volume's
    /// files wholesale (a release, a backup, a restore, a move, a removal),
    /// breaking every promise on the volume at once.
    pub fn replaces_volumes(&self) -> bool {
        matches!(
            self,
            Request::RemoveVolume { .. }
                | Request::BackupVolume { .. }
                | Request::Release { .. }
                | Request::RemoveSite { .. }
                | Request::MoveVolume { .. }
                | Request::RestoreVolume { .. }
                | Request::InstallVolume { .. }
        )
    }

    /// Short operation name for logs and metrics.
    pub fn op_name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Hello => "hello",
            Request::Stats => "stats",
            Request::GetRoot { .. } => "get_root",
            Request::FetchStatus { .. } => "fetch_status",
            Request::BulkStatus { .. } => "bulk_status",
            Request::Lookup { .. } => "lookup",
            Request::ReadDir { .. } => "read_dir",
            Request::FetchData { .. } => "fetch_data",
            Request::StoreData { .. } => "store_data",
            Request::SetAttr { .. } => "set_attr",
            Request::Create { .. } => "create",
            Request::MakeDir { .. } => "make_dir",
            Request::Symlink { .. } => "symlink",
            Request::MakeSpecial { .. } => "make_special",
            Request::Link { .. } => "link",
            Request::Remove { .. } => "remove",
            Request::RemoveDir { .. } => "remove_dir",
            Request::Rename { .. } => "rename",
            Request::ReadLink { .. } => "read_link",
            Request::GetVolumeStatus { .. } => "get_volume_status",
            Request::GiveUpCallbacks { .. } => "give_up_callbacks",
            Request::CreateVolume { .. } => "create_volume",
            Request::ListVolumes => "list_volumes",
            Request::ExamineVolume { .. } => "examine_volume",
            Request::RemoveVolume { .. } => "remove_volume",
            Request::SetQuota { .. } => "set_quota",
            Request::MakeMount { .. } => "make_mount",
            Request::GetMountRoot { .. } => "get_mount_root",
            Request::LocateVolume { .. } => "locate_volume",
            Request::RegisterServer { .. } => "register_server",
            Request::InstallVolume { .. } => "install_volume",
            Request::MoveVolume { .. } => "move_volume",
            Request::AddSite { .. } => "add_site",
            Request::RemoveSite { .. } => "remove_site",
            Request::Release { .. } => "release",
            Request::SyncVldb => "sync_vldb",
            Request::Reconnect { .. } => "reconnect",
            Request::FetchFiles { .. } => "fetch_files",
            Request::RenameVolume { .. } => "rename_volume",
            Request::LockVolume { .. } => "lock_volume",
            Request::UnlockVolume { .. } => "unlock_volume",
            Request::BackupVolume { .. } => "backup_volume",
            Request::DumpVolume { .. } => "dump_volume",
            Request::RestoreVolume { .. } => "restore_volume",
            Request::SetAcl { .. } => "set_acl",
            Request::GetAcl { .. } => "get_acl",
            Request::GetRights { .. } => "get_rights",
            Request::AddHost { .. } => "add_host",
            Request::RevokeHost { .. } => "revoke_host",
            Request::ListHosts => "list_hosts",
            Request::AddUser { .. } => "add_user",
            Request::RemoveUser { .. } => "remove_user",
            Request::ListUsers => "list_users",
            Request::AddGroup { .. } => "add_group",
            Request::RemoveGroup { .. } => "remove_group",
            Request::AddMember { .. } => "add_member",
            Request::RemoveMember { .. } => "remove_member",
            Request::ListGroups => "list_groups",
            Request::PutSecurity { .. } => "put_security",
            Request::GetSecurity => "get_security",
            Request::Lock { .. } => "lock",
            Request::Sync { .. } => "sync",
            Request::ReserveFids { .. } => "reserve_fids",
            Request::CreateReserved { .. } => "create_reserved",
        }
    }
}

/// Successful answers. Which variant answers which request is documented on
/// [`Request`]; a client treats any other variant as a protocol error.
// One reply is built per RPC and moved once; boxing the big variants would
// only make every match on them noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to return.
    Ok,
    /// Answer to `Hello`.
    Hello {
        /// Cell name.
        cell: String,
        /// Name of the cell's root volume (`root.cell`).
        root_volume: String,
        /// Lifetime of every promise granted on this connection.
        promise_secs: u64,
        /// Largest `StoreData`/`FetchData` length the server accepts.
        max_data: u64,
        /// The address the cell knows this server by (as the VLDB names
        /// sites), so a client knows which sites it already reaches.
        address: String,
    },
    /// Answer to `Stats`.
    Stats(Stats),
    /// One vnode's status (FetchStatus, Lookup, GetRoot, StoreData, SetAttr).
    Status(Status),
    /// Answer to `BulkStatus`: one result per requested FID, in order.
    BulkStatus(Vec<Result<Status, crate::RpcError>>),
    /// A directory and its entries (ReadDir), and the rights the caller has
    /// under its ACL (so a node need not ask `GetRights` for it).
    Dir {
        dir: Status,
        entries: Vec<DirEntry>,
        rights: Rights,
    },
    /// `FetchData`: the file's status; exactly `status.size` bytes follow.
    Data { status: Status },
    /// A new name: the parent directory's new status and the named vnode's
    /// (Create, MakeDir, Symlink, MakeSpecial, Link, MakeMount).
    Created { dir: Status, status: Status },
    /// `Remove`/`RemoveDir`: the directory's new status, and the removed
    /// vnode's new status if it still exists (other hard links).
    Removed { dir: Status, victim: Option<Status> },
    /// `Rename`: both directories' new status (equal FIDs when the same), the
    /// moved vnode's status, and a replaced vnode's new status if it survives.
    Renamed {
        from_dir: Status,
        to_dir: Status,
        moved: Status,
        replaced: Option<Status>,
    },
    /// `ReadLink`: the target.
    Link(String),
    /// One volume.
    Volume(VolumeInfo),
    /// Many volumes.
    Volumes(Vec<VolumeInfo>),
    /// Answer to `Reconnect`.
    Reconnected {
        /// The volume's incarnation: changes when the volume is recreated or
        /// restored, which voids every change number of the old one.
        incarnation: u64,
        /// The volume's change number now.
        current: u64,
        /// The FIDs changed (content, status or entries) after `since`, or
        /// `None` when the journal no longer reaches back that far or the
        /// incarnation differs: the client must then check its FIDs in bulk
        /// (`BulkStatus`). Every listed FID the client sent that is not in
        /// `changed` now has a promise.
        changed: Option<Vec<Fid>>,
    },
    /// Answer to `FetchFiles`: one result per requested FID, in order.
    Files(Vec<Result<InlineFile, crate::RpcError>>),
    /// Answer to `DumpVolume`: exactly `len` bytes of the dump follow.
    Dump { len: u64 },
    /// Lines of a report for humans (`SyncVldb`).
    Report(Vec<String>),
    /// Answer to `GetMountRoot`: the volume a mount point leads to, the
    /// servers that hold it (best first), and its root's status when the
    /// answering server holds it (otherwise ask one of `sites`).
    MountRoot {
        volume: VolumeId,
        sites: Vec<String>,
        root: Option<Status>,
    },
    /// Answer to `LocateVolume`: the servers holding the volume, best first.
    Located(Vec<String>),
    /// Answer to `RegisterServer`: the new server's index in the cell, which
    /// places its volume ids (`index << 32` and up).
    Registered { index: u32 },
    /// A directory's ACL (`SetAcl`, `GetAcl`).
    Acl(Vec<AclLine>),
    /// The caller's rights on a directory (`GetRights`).
    Rights(Rights),
    /// A new credential (`AddHost`).
    Credential { cert_pem: String, key_pem: String },
    /// The cell's credentials (`ListHosts`).
    Hosts(Vec<HostInfo>),
    /// The cell's users (`ListUsers`).
    Users(Vec<UserInfo>),
    /// The cell's groups (`ListGroups`).
    Groups(Vec<GroupInfo>),
    /// The cell's security state (`GetSecurity`).
    Security(SecurityState),
    /// Answer to `Lock`: the strongest lock another node holds that is in
    /// the way (`None`: acquired, or would be; always `None` for `Release`).
    Lock { conflict: Option<LockMode> },
    /// FIDs set aside for the asking node (`ReserveFids`).
    Fids(Vec<Fid>),
}

/// A file's status and, when it was small enough, its whole content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InlineFile {
    /// The file's status.
    pub status: Status,
    /// The file's bytes (`status.size` of them), or `None` when it was too
    /// large for the reply. Encoded as one byte string, not byte by byte.
    #[serde(with = "serde_bytes")]
    pub data: Option<Vec<u8>>,
}

/// One broken promise: the FID changed. For directories, `names` lists the
/// entries that appeared, disappeared or now name something else, so clients
/// can drop exactly those kernel dentries (positive and negative).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// The FID whose promise is broken.
    pub fid: Fid,
    /// Changed entry names when `fid` is a directory.
    pub names: Vec<String>,
    /// True when the vnode no longer exists.
    pub deleted: bool,
    /// The volume's change number after this change, so a client knows how
    /// far it is up to date when it later asks `Reconnect`.
    pub seq: u64,
}

/// Messages a server sends on a stream it opens to a client. The client
/// answers each with [`ClientAck`] after it has acted on it, so the server can
/// finish the change that caused it knowing every other client has dropped
/// its stale copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// These promises are broken.
    Break(Vec<Break>),
    /// Every promise this client holds in the volume is broken.
    BreakVolume(VolumeId),
    /// These small files changed: each promise is broken as by `Break`, and
    /// the server granted this client a new one, on the version carried
    /// here, lasting the cell's promise lifetime from when it was sent. A
    /// client that held a current copy may keep the new one instead and
    /// serve the next open without asking.
    Renewed(Vec<Renewal>),
}

/// A small file's new version, sent with the break of a promise on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// The broken promise.
    pub brk: Break,
    /// The file's new status.
    pub status: Status,
    /// The file's whole content (`status.size` bytes).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A client's acknowledgement of a [`ServerMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAck;
