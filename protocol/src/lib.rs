//! The cellfs wire: FIDs and status, RPC requests and replies, callback breaks,
//! error codes, the one codec module, and the QUIC transport shared by the
//! fileserver, the cache manager and `cellfs-vos`.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod acl;
pub mod allocator;
pub mod codec;
pub mod config;
pub mod error;
pub mod logging;
pub mod message;
pub mod metrics_endpoint;
pub mod names;
pub mod pieces;
pub mod spares;
pub mod tls;
pub mod transport;
pub mod types;
pub mod writeback;

pub use error::{ErrorCode, RpcError};
pub use message::{MAX_RESERVED_FIDS, Reply, Request, ServerMessage};
pub use types::{
    DirEntry, DiskSpace, Fid, FileKind, SetAttr, Special, Stats, Status, Timestamp, VolumeId, VolumeInfo, VolumeKind,
    VolumeLock,
};
