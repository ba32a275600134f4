//! Error codes carried on the wire and their errno mapping.

use serde::{Deserialize, Serialize};

/// What went wrong, as the server reports it. Each code maps to one errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// No such file, directory or volume (`ENOENT`).
    NotFound,
    /// The name already exists (`EEXIST`).
    Exists,
    /// Directory not empty (`ENOTEMPTY`).
    NotEmpty,
    /// Is a directory (`EISDIR`).
    IsDir,
    /// Not a directory (`ENOTDIR`).
    NotDir,
    /// Operation across volumes (`EXDEV`).
    CrossVolume,
    /// A name longer than 255 bytes (`ENAMETOOLONG`).
    NameTooLong,
    /// An empty name, `.`, `..`, or one holding `/` or NUL (`EINVAL`).
    InvalidName,
    /// Volume quota exceeded (`EDQUOT`).
    QuotaExceeded,
    /// Server disk full (`ENOSPC`).
    NoSpace,
    /// Server I/O error (`EIO`).
    Io,
    /// Invalid argument (`EINVAL`).
    Invalid,
    /// Not permitted (`EPERM`).
    NotPermitted,
    /// Access denied (`EACCES`).
    AccessDenied,
    /// A FID the server does not know or no longer has (`ESTALE`).
    Stale,
    /// A request the server could not decode or does not know (`EPROTO`).
    BadRequest,
    /// A length over the configured bound (`EFBIG`).
    TooLarge,
    /// Too many links (`EMLINK`).
    TooManyLinks,
    /// Directory loop, e.g. renaming a directory into itself (`EINVAL`).
    Loop,
    /// A change to a read-only volume, such as a backup clone (`EROFS`).
    ReadOnly,
    /// The volume is locked or busy with another admin operation (`EBUSY`).
    Busy,
    /// Data that fails its checksum or format checks, e.g. a damaged dump (`EBADMSG`).
    Corrupt,
    /// The volume is no longer on this server (moved): ask the VLDB where it
    /// is (`ESTALE` if it ever reaches an application).
    Moved,
    /// A file change the server holds back for a moment after a restart
    /// that may have left nodes trusting promises it no longer knows
    /// (`fileserver/src/grace.rs`): repeat it shortly (`EAGAIN` if it ever
    /// reaches an application).
    Grace,
    /// A store made on condition that the file was unchanged found it
    /// changed (`ESTALE` if it ever reaches an application).
    Changed,
}

impl ErrorCode {
    /// The errno a local filesystem would return for this condition.
    pub fn errno(self) -> i32 {
        match self {
            ErrorCode::NotFound => libc::ENOENT,
            ErrorCode::Exists => libc::EEXIST,
            ErrorCode::NotEmpty => libc::ENOTEMPTY,
            ErrorCode::IsDir => libc::EISDIR,
            ErrorCode::NotDir => libc::ENOTDIR,
            ErrorCode::CrossVolume => libc::EXDEV,
            ErrorCode::NameTooLong => libc::ENAMETOOLONG,
            ErrorCode::InvalidName => libc::EINVAL,
            ErrorCode::QuotaExceeded => libc::EDQUOT,
            ErrorCode::NoSpace => libc::ENOSPC,
            ErrorCode::Io => libc::EIO,
            ErrorCode::Invalid => libc::EINVAL,
            ErrorCode::NotPermitted => libc::EPERM,
            ErrorCode::AccessDenied => libc::EACCES,
            ErrorCode::Stale => libc::ESTALE,
            ErrorCode::BadRequest => libc::EPROTO,
            ErrorCode::TooLarge => libc::EFBIG,
            ErrorCode::TooManyLinks => libc::EMLINK,
            ErrorCode::Loop => libc::EINVAL,
            ErrorCode::ReadOnly => libc::EROFS,
            ErrorCode::Busy => libc::EBUSY,
            ErrorCode::Corrupt => libc::EBADMSG,
            ErrorCode::Moved => libc::ESTALE,
            ErrorCode::Grace => libc::EAGAIN,
            ErrorCode::Changed => libc::ESTALE,
        }
    }
}

/// An error reply: a code plus a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct RpcError {
    /// Machine-readable cause.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl RpcError {
    /// Builds an error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }
}
