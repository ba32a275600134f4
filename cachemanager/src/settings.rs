//! The cache manager's settings file (`--settings FILE`, TOML): every
//! setting `mount` takes as a flag, plus subtrees to pin at start. A flag
//! given on the command line wins over the file; an unknown key or a bad
//! value is refused with the file, line and key named.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where packages put the settings file.
pub const DEFAULT_SETTINGS: &str = "/etc/cellfs/cachemanager.toml";

/// Where a mount serves its metrics unless told otherwise.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9471";

/// What the settings file may hold (each one a `mount` flag). The field
/// docs are the keys' text in cellfs.toml(5).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The cell config (`--config`).
    pub config: Option<PathBuf>,
    /// The cache folder (`--cache`).
    pub cache: Option<PathBuf>,
    /// The cache size limit, e.g. "8GiB" (`--cache-size`; 1GiB by default).
    #[schemars(with = "Option<String>")]
    pub cache_size: Option<bytesize::ByteSize>,
    /// FUSE worker threads (`--threads`; 16 by default).
    pub threads: Option<usize>,
    /// Seconds a request may take before the fileserver counts as down
    /// (`--request-timeout`; 2 by default).
    pub request_timeout: Option<f64>,
    /// false turns FUSE passthrough off (`--no-passthrough`).
    pub passthrough: Option<bool>,
    /// Where to mount.
    pub mountpoint: Option<PathBuf>,
    /// Where to serve Prometheus metrics, or "off" (`--metrics`;
    /// 127.0.0.1:9471 by default).
    pub metrics: Option<String>,
    /// Paths from the mount root to pin once mounted, so the node serves
    /// them through a fileserver outage (`--pin`, added to).
    #[serde(default)]
    pub pin: Vec<String>,
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// It cannot be read.
    #[error("cannot read settings {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid: the message names the line and the key.
    #[error("invalid settings {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where (line, column, key).
        source: toml::de::Error,
    },
}

impl Settings {
    /// Reads and checks the settings file at `path`.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| SettingsError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses settings text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let s: Settings = toml::from_str(text)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_reads() {
        let s = Settings::parse(
            "config = \"/etc/cellfs/cell.toml\"\ncache = \"/var/cache/cellfs/www\"\ncache_size = \"8GiB\"\n\
             threads = 8\nrequest_timeout = 1.5\npassthrough = false\nmountpoint = \"/srv/www\"\n\
             pin = [\"/example.org\"]\n",
        )
        .unwrap();
        assert_eq!(s.cache_size, Some(bytesize::ByteSize::gib(8)));
        assert_eq!(s.threads, Some(8));
        assert_eq!(s.passthrough, Some(false));
        assert_eq!(s.pin, ["/example.org"]);
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_line_and_key() {
        let e = Settings::parse("cache = \"/c\"\ncache_sise = \"1GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("cache_sise"), "{e}");
        let e = Settings::parse("threads = \"many\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("threads"), "{e}");
        let e = Settings::parse("cache_size = \"lots\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
