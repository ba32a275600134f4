//! The error every core operation returns: an errno for the kernel plus a
//! message for the log.

use crate::link::LinkError;

/// A failed file operation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (errno {errno})")]
pub struct FsError {
    /// What the kernel is told.
    pub errno: i32,
    /// What the log says.
    pub message: String,
}

impl FsError {
    /// An error with `errno` and a message.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError {
            errno,
            message: message.into(),
        }
    }

    /// `ENOENT`.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(libc::ENOENT, format!("{what} not found"))
    }

    /// `EBADF` for an unknown file handle.
    pub fn bad_handle(fh: u64) -> Self {
        Self::new(libc::EBADF, format!("unknown file handle {fh}"))
    }

    /// `EIO` from a local cache I/O error.
    pub fn local(context: &str, e: std::io::Error) -> Self {
        Self::new(e.raw_os_error().unwrap_or(libc::EIO), format!("cache {context}: {e}"))
    }
}

impl From<LinkError> for FsError {
    fn from(e: LinkError) -> Self {
        FsError {
            errno: e.errno(),
            message: e.to_string(),
        }
    }
}

/// Shorthand for core results.
pub type FsResult<T> = Result<T, FsError>;
