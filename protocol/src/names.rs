//! Validation of directory entry names, shared by the server and clients.

use crate::error::{ErrorCode, RpcError};

/// Longest name in bytes, as on Linux filesystems.
pub const MAX_NAME_LEN: usize = 255;

/// Checks that `name` can be a directory entry: not empty, not `.` or `..`,
/// no `/` or NUL, at most [`MAX_NAME_LEN`] bytes.
pub fn validate_name(name: &str) -> Result<(), RpcError> {
    if name.len() > MAX_NAME_LEN {
        return Err(RpcError::new(
            ErrorCode::NameTooLong,
            format!("name is {} bytes, over 255", name.len()),
        ));
    }
    if name.is_empty() || name == "." || name == ".." {
        return Err(RpcError::new(ErrorCode::InvalidName, format!("invalid name {name:?}")));
    }
    if name.contains(['/', '\0']) {
        return Err(RpcError::new(
            ErrorCode::InvalidName,
            format!("name {name:?} holds '/' or NUL"),
        ));
    }
    Ok(())
}

/// Checks a volume name: 1..=64 bytes of ASCII letters, digits, `.`, `_`, `-`.
pub fn validate_volume_name(name: &str) -> Result<(), RpcError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RpcError::new(
            ErrorCode::InvalidName,
            format!("invalid volume name {name:?}: use 1-64 letters, digits, '.', '_' or '-'"),
        ))
    }
}

/// Prefix of a read-write mount point's target (AFS `%`): it always shows
/// the read-write volume, where a regular mount point shows the volume's
/// released read-only copy when there is one.
pub const RW_MOUNT_PREFIX: char = '%';

/// The target a mount point stores for `volume`.
pub fn mount_target(volume: &str, read_write: bool) -> String {
    if read_write {
        format!("{RW_MOUNT_PREFIX}{volume}")
    } else {
        volume.to_owned()
    }
}

/// A mount point's target as (volume name, read-write).
pub fn parse_mount_target(target: &str) -> (&str, bool) {
    match target.strip_prefix(RW_MOUNT_PREFIX) {
        Some(volume) => (volume, true),
        None => (target, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("index.php").is_ok());
        assert_eq!(validate_name("").unwrap_err().code, ErrorCode::InvalidName);
        assert_eq!(validate_name(".").unwrap_err().code, ErrorCode::InvalidName);
        assert_eq!(validate_name("..").unwrap_err().code, ErrorCode::InvalidName);
        assert_eq!(validate_name("a/b").unwrap_err().code, ErrorCode::InvalidName);
        assert_eq!(validate_name("a\0b").unwrap_err().code, ErrorCode::InvalidName);
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert_eq!(
            validate_name(&"x".repeat(256)).unwrap_err().code,
            ErrorCode::NameTooLong
        );
    }

    #[test]
    fn mount_targets_round_trip() {
        for rw in [false, true] {
            assert_eq!(parse_mount_target(&mount_target("site.www", rw)), ("site.www", rw));
        }
    }

    #[test]
    fn volume_names() {
        assert!(validate_volume_name("site.www-1_a").is_ok());
        assert!(validate_volume_name("").is_err());
        assert!(validate_volume_name("a b").is_err());
        assert!(validate_volume_name("..").is_err());
    }
}
