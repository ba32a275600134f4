//! The fileserver's internal error type and its mapping to wire error codes.

use cellfs_protocol::{ErrorCode, RpcError};

/// Anything that can go wrong serving a request or opening the store.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A condition the client caused (not found, exists, quota, ...).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The metadata database failed.
    #[error("database: {0}")]
    Db(#[source] redb::Error),
    /// A data file or folder operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A stored record could not be decoded or encoded.
    #[error("corrupt record: {0}")]
    Record(#[from] bincode::Error),
    /// A blocking task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for FsError {
            fn from(e: $t) -> Self {
                FsError::Db(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Shorthand for building a client-caused error.
pub fn rpc_err(code: ErrorCode, message: impl Into<String>) -> FsError {
    FsError::Rpc(RpcError::new(code, message))
}

fn io_code(e: &std::io::Error) -> ErrorCode {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => ErrorCode::NoSpace,
        Some(libc::EDQUOT) => ErrorCode::NoSpace,
        // The data folder's file system caps file sizes below ours (ext4: 16 TiB).
        Some(libc::EFBIG) => ErrorCode::TooLarge,
        _ => ErrorCode::Io,
    }
}

impl FsError {
    /// The error as the client sees it: client-caused errors keep their code,
    /// a full disk becomes `NoSpace`, a size the disk cannot hold `TooLarge`,
    /// every other failure `Io`.
    pub fn to_rpc(&self) -> RpcError {
        match self {
            FsError::Rpc(e) => e.clone(),
            FsError::Io(e) => RpcError::new(io_code(e), format!("server I/O error: {e}")),
            FsError::Db(redb::Error::Io(e)) => RpcError::new(io_code(e), format!("server database I/O error: {e}")),
            FsError::Db(e) => RpcError::new(ErrorCode::Io, format!("server database error: {e}")),
            FsError::Record(e) => RpcError::new(ErrorCode::Io, format!("server record error: {e}")),
            FsError::Task(e) => RpcError::new(ErrorCode::Io, format!("server task error: {e}")),
        }
    }

    /// True when the client caused it (logged at debug, not warn): a
    /// refusal, or a size the disk cannot hold.
    pub fn is_client(&self) -> bool {
        match self {
            FsError::Rpc(_) => true,
            FsError::Io(e) => e.raw_os_error() == Some(libc::EFBIG),
            _ => false,
        }
    }
}

/// Result of fileserver operations.
pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_no_space_efbig_to_too_large_and_other_io_to_io() {
        let full = FsError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.to_rpc().code, ErrorCode::NoSpace);
        let other = FsError::Io(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(other.to_rpc().code, ErrorCode::Io);
        let db = FsError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(db.to_rpc().code, ErrorCode::NoSpace);
        let big = FsError::Io(std::io::Error::from_raw_os_error(libc::EFBIG));
        assert_eq!(big.to_rpc().code, ErrorCode::TooLarge);
        assert_eq!(rpc_err(ErrorCode::Exists, "x").to_rpc().code, ErrorCode::Exists);
    }
}
