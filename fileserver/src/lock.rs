//! The data folder lock: `serve` and `salvage` each hold an exclusive
//! `flock` on `DIR/lock` for as long as they run, so a second server or a
//! salvager never works on a folder a server is using. The kernel drops the
//! lock when the holder exits, however it exits (kill -9 included).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data folder.
pub const LOCK_FILE: &str = "lock";

/// Failure to take the data folder lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another server in this process) holds it.
    #[error(
        "{dir} is in use by another cellfs-fileserver (serve or salvage{holder}); \
         stop it first (lock file {path})"
    )]
    Busy {
        /// The data folder.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// ", pid N" when the holder wrote its pid.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; released on drop.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
    path: PathBuf,
}

impl DataLock {
    /// Takes the exclusive lock on `dir/lock` without waiting, and writes
    /// this process's pid into it.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() || pid.len() > 20 {
                    String::new()
                } else {
                    format!(", pid {pid}")
                };
                return Err(LockError::Busy {
                    dir: dir.to_owned(),
                    path,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DataLock::acquire(tmp.path()).unwrap();
        let err = DataLock::acquire(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Busy { .. }), "{msg}");
        assert!(msg.contains("in use by another cellfs-fileserver"), "{msg}");
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(first);
        let again = DataLock::acquire(tmp.path()).unwrap();
        assert_eq!(again.path(), tmp.path().join(LOCK_FILE));
    }
}
