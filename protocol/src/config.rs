//! The cell configuration a client (cache manager or `cellfs-vos`) reads:
//! `cell.toml` with the server addresses, the cell CA, and a client credential.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors reading a cell config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not a valid cell config.
    #[error("invalid cell config {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    /// The config names no server.
    #[error("cell config {0} names no server")]
    NoServer(PathBuf),
}

/// A file of a credential bundle could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct BundleError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Writes a credential bundle into `dir` (created if missing; no file may
/// exist yet): `ca.pem`, `client.pem`, `client.key` (mode 0600) and a
/// `cell.toml` naming them for cell `cell` at `servers`. Returns the files
/// written, `cell.toml` last.
pub fn write_bundle(
    dir: &Path,
    cell: &str,
    servers: &[String],
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Vec<PathBuf>, BundleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError { path, source }
    };
    std::fs::create_dir_all(dir).map_err(fail(dir))?;
    let cfg = CellConfig {
        cell: cell.to_owned(),
        servers: servers.to_vec(),
        ca: "ca.pem".into(),
        cert: Some("client.pem".into()),
        key: Some("client.key".into()),
    };
    let toml = cfg.to_toml();
    let mut written = Vec::new();
    for (name, text, mode) in [
        ("ca.pem", ca_pem, 0o644),
        ("client.pem", cert_pem, 0o644),
        ("client.key", key_pem, 0o600),
        ("cell.toml", toml.as_str(), 0o644),
    ] {
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(fail(&path))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(fail(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Contents of `cell.toml`. Relative paths are relative to the file's folder.
/// The field docs are the keys' text in cellfs.toml(5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CellConfig {
    /// The cell's name.
    pub cell: String,
    /// The fileservers' addresses (`host:port`), the cell's first server first.
    pub servers: Vec<String>,
    /// The PEM file of the cell's certificate authority, which signs every server certificate.
    pub ca: PathBuf,
    /// The PEM certificate of this credential (host, admin or server role).
    pub cert: Option<PathBuf>,
    /// The PEM private key of this credential.
    pub key: Option<PathBuf>,
}

impl CellConfig {
    /// Reads and validates `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: CellConfig = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if cfg.servers.is_empty() {
            return Err(ConfigError::NoServer(path.to_owned()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.ca = base.join(&cfg.ca);
        cfg.cert = cfg.cert.map(|p| base.join(p));
        cfg.key = cfg.key.map(|p| base.join(p));
        Ok(cfg)
    }

    /// Serializes to TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_resolves_relative_paths_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell.toml");
        let cfg = CellConfig {
            cell: "example".into(),
            servers: vec!["127.0.0.1:7000".into()],
            ca: "ca.pem".into(),
            cert: Some("client.pem".into()),
            key: Some("client.key".into()),
        };
        std::fs::write(&path, cfg.to_toml()).unwrap();
        let back = CellConfig::load(&path).unwrap();
        assert_eq!(back.ca, dir.path().join("ca.pem"));
        assert_eq!(back.cert, Some(dir.path().join("client.pem")));
        std::fs::write(&path, format!("{}\nbogus = 1\n", cfg.to_toml())).unwrap();
        assert!(matches!(CellConfig::load(&path), Err(ConfigError::Parse { .. })));
        assert!(matches!(
            CellConfig::load(&dir.path().join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
    }
}
