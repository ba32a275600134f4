//! The server's configuration file (`server.toml`) and `init`, which lays out
//! a new cell in a data folder.

use crate::error::FsError;
use crate::store::Store;
use cellfs_protocol::acl::{HostInfo, Role};
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::names;
use cellfs_protocol::tls::{CellAuthority, Credential, TlsError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Server configuration file name inside the data folder.
pub const SERVER_TOML: &str = "server.toml";
/// Cell CA certificate.
pub const CA_PEM: &str = "ca.pem";
/// Cell CA key (mode 0600).
pub const CA_KEY: &str = "ca.key";
/// Server certificate.
pub const SERVER_PEM: &str = "server.pem";
/// Server key (mode 0600).
pub const SERVER_KEY: &str = "server.key";
/// The server's client certificate, to call the cell's other fileservers.
pub const PEER_PEM: &str = "peer.pem";
/// Key of [`PEER_PEM`] (mode 0600).
pub const PEER_KEY: &str = "peer.key";
/// Folder holding the first client credential and its `cell.toml`.
pub const CLIENT_DIR: &str = "client";
/// Name of the cell's root volume.
pub const ROOT_VOLUME: &str = "root.cell";
/// Default promise lifetime in seconds.
pub const DEFAULT_PROMISE_SECS: u64 = 600;
/// Default bound on one `StoreData` (1 TiB).
pub const DEFAULT_MAX_DATA: u64 = 1 << 40;
/// Default cap on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default cap on concurrent connections made with one credential.
pub const DEFAULT_MAX_CONNECTIONS_PER_CREDENTIAL: usize = 64;
/// Default cap on requests in progress on one connection (QUIC streams).
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Default cap on requests in progress on the whole server.
pub const DEFAULT_MAX_REQUESTS: usize = 4096;
/// Folder holding the first admin credential and its `cell.toml`.
pub const ADMIN_DIR: &str = "admin";

fn default_max_connections_per_credential() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_CREDENTIAL
}

fn default_max_streams_per_connection() -> u32 {
    DEFAULT_MAX_STREAMS_PER_CONNECTION
}

fn default_max_requests() -> usize {
    DEFAULT_MAX_REQUESTS
}

/// Default number of changes each volume's journal remembers.
pub const DEFAULT_JOURNAL_LEN: u64 = 100_000;

fn default_journal_len() -> u64 {
    DEFAULT_JOURNAL_LEN
}

fn default_max_data() -> u64 {
    DEFAULT_MAX_DATA
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// Contents of `server.toml`. The field docs are the keys' text in
/// cellfs.toml(5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The cell's name.
    pub cell: String,
    /// The address to listen on (`host:port`), also given to clients; `serve --listen` wins.
    pub listen: String,
    /// Lifetime of callback promises, in seconds.
    pub promise_secs: u64,
    /// The name of the cell's root volume.
    pub root_volume: String,
    /// The largest store accepted, in bytes.
    #[serde(default = "default_max_data")]
    pub max_data: u64,
    /// Most client connections at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections made with one credential (a flood from one node
    /// cannot take the whole server).
    #[serde(default = "default_max_connections_per_credential")]
    pub max_connections_per_credential: usize,
    /// Most requests in progress on one connection.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// Most requests in progress on the server; more wait.
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// Changes each volume's journal remembers for reconnecting clients
    /// (older ones are trimmed; a client further behind revalidates in
    /// bulk); `serve --journal-len` wins.
    #[serde(default = "default_journal_len")]
    pub journal_len: u64,
    /// This server's number in the cell (0 for the first server); its
    /// volume ids start at index × 2^32.
    #[serde(default)]
    pub index: u32,
    /// The address of the cell's first server, which keeps the VLDB; absent
    /// on the first server itself.
    #[serde(default)]
    pub vldb: Option<String>,
    /// Where to serve Prometheus metrics (`host:port`, or `off`);
    /// 127.0.0.1:9470 when absent; `serve --metrics` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Where the fileserver serves its metrics unless told otherwise.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9470";

/// Errors of `init` and of loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The folder already holds a cell.
    #[error("{0} already holds a cell (server.toml or vldb.redb exists); refusing to overwrite it")]
    AlreadyInitialized(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `server.toml` is not valid.
    #[error("invalid {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// Certificates could not be generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The VLDB or root volume could not be created.
    #[error("creating the store: {0}")]
    Store(#[from] FsError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    }
}

impl ServerConfig {
    /// Reads `DIR/server.toml`.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(SERVER_TOML);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })
    }

    /// Serializes to TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Data folder to create.
    pub data: PathBuf,
    /// Cell name.
    pub cell: String,
    /// Listen address, also written as the server address clients use.
    pub listen: String,
    /// Promise lifetime in seconds.
    pub promise_secs: u64,
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
    /// The client `cell.toml` (a host credential, for cache managers).
    pub client_config: PathBuf,
    /// The admin `cell.toml` (an admin credential, for `cellfs-vos`), when
    /// this run made one.
    pub admin_config: Option<PathBuf>,
}

/// Writes a client bundle in `dir` for a cell served at `listen` and
/// returns its `cell.toml` path.
fn write_bundle(
    dir: &Path,
    cell: &str,
    listen: &str,
    ca_pem: &str,
    credential: &Credential,
    files: &mut Vec<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    let servers = [listen.to_owned()];
    let written =
        cellfs_protocol::config::write_bundle(dir, cell, &servers, ca_pem, &credential.cert_pem, &credential.key_pem)
            .map_err(|e| ConfigError::Io {
            path: e.path,
            source: e.source,
        })?;
    let toml = written.last().cloned().unwrap_or_else(|| dir.join("cell.toml"));
    files.extend(written);
    Ok(toml)
}

/// The registry entry of a credential just issued.
pub fn host_info(name: &str, role: Role, credential: &Credential) -> Result<HostInfo, TlsError> {
    Ok(HostInfo {
        name: name.to_owned(),
        role,
        fingerprint: cellfs_protocol::tls::pem_fingerprint(&credential.cert_pem)?,
        issued: cellfs_protocol::Timestamp::now(),
        revoked: None,
    })
}

fn write_file(path: &Path, contents: &str, mode: u32, files: &mut Vec<PathBuf>) -> Result<(), ConfigError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    files.push(path.to_owned());
    Ok(())
}

/// Creates a new cell in `opts.data`: CA, server and client credentials, the
/// client `cell.toml`, `server.toml`, the VLDB and the root volume. Refuses,
/// changing nothing, when the folder already holds a cell.
pub fn init(opts: &InitOptions) -> Result<InitReport, ConfigError> {
    let dir = &opts.data;
    if dir.join(SERVER_TOML).exists() || dir.join(crate::store::VLDB_FILE).exists() {
        return Err(ConfigError::AlreadyInitialized(dir.clone()));
    }
    names::validate_volume_name(&opts.cell).map_err(|e| ConfigError::Invalid(format!("cell name: {}", e.message)))?;
    cellfs_protocol::transport::resolve(&opts.listen)
        .map_err(|_| ConfigError::Invalid(format!("listen address {:?} does not resolve", opts.listen)))?;
    // Generate everything in memory first so a failure writes nothing.
    let authority = CellAuthority::generate(&opts.cell)?;
    let server = authority.issue_server()?;
    let peer = authority.issue_client("fileserver 0", Role::Server)?;
    let client = authority.issue_client("client", Role::Host)?;
    let admin = authority.issue_client("admin", Role::Admin)?;
    let mut files = Vec::new();
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_file(&dir.join(CA_PEM), &authority.ca.cert_pem, 0o644, &mut files)?;
    write_file(&dir.join(CA_KEY), &authority.ca.key_pem, 0o600, &mut files)?;
    write_file(&dir.join(SERVER_PEM), &server.cert_pem, 0o644, &mut files)?;
    write_file(&dir.join(SERVER_KEY), &server.key_pem, 0o600, &mut files)?;
    write_file(&dir.join(PEER_PEM), &peer.cert_pem, 0o644, &mut files)?;
    write_file(&dir.join(PEER_KEY), &peer.key_pem, 0o600, &mut files)?;
    let bundle = |sub: &str, cred: &Credential, files: &mut Vec<PathBuf>| {
        write_bundle(
            &dir.join(sub),
            &opts.cell,
            &opts.listen,
            &authority.ca.cert_pem,
            cred,
            files,
        )
    };
    let client_config = bundle(CLIENT_DIR, &client, &mut files)?;
    let admin_config = bundle(ADMIN_DIR, &admin, &mut files)?;
    let store = Store::create(dir)?;
    store.create_volume(ROOT_VOLUME, 0)?;
    store.register_server(&opts.listen)?;
    let issued = [
        ("fileserver 0", Role::Server, &peer),
        ("client", Role::Host, &client),
        ("admin", Role::Admin, &admin),
    ];
    let hosts = issued
        .into_iter()
        .map(|(name, role, cred)| host_info(name, role, cred))
        .collect::<Result<Vec<_>, _>>()?;
    store.set_hosts(&hosts)?;
    files.push(dir.join(crate::store::VLDB_FILE));
    files.push(dir.join(crate::store::VOLUMES_DIR));
    let config = ServerConfig {
        cell: opts.cell.clone(),
        listen: opts.listen.clone(),
        promise_secs: opts.promise_secs,
        root_volume: ROOT_VOLUME.to_owned(),
        max_data: DEFAULT_MAX_DATA,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        journal_len: DEFAULT_JOURNAL_LEN,
        max_connections_per_credential: DEFAULT_MAX_CONNECTIONS_PER_CREDENTIAL,
        max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
        max_requests: DEFAULT_MAX_REQUESTS,
        index: 0,
        vldb: None,
        metrics: None,
    };
    // Written last: its presence marks a complete cell.
    write_file(&dir.join(SERVER_TOML), &config.to_toml(), 0o644, &mut files)?;
    Ok(InitReport {
        files,
        client_config,
        admin_config: Some(admin_config),
    })
}

/// What `init --join` needs.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// Data folder to create for the new server.
    pub data: PathBuf,
    /// Its listen address, also the address the cell knows it by.
    pub listen: String,
    /// A folder holding the cell's `ca.pem`, `ca.key` and `client/cell.toml`
    /// (the first server's data folder, or a copy of those files).
    pub cell_dir: PathBuf,
}

/// Adds a new fileserver to an existing cell: issues its certificates with
/// the cell CA, registers it with the cell's first server (which keeps the
/// VLDB and answers with the server's index) and lays out an empty store.
/// Refuses, changing nothing, when the folder already holds a cell.
pub fn join(opts: &JoinOptions) -> Result<InitReport, ConfigError> {
    let dir = &opts.data;
    if dir.join(SERVER_TOML).exists() || dir.join(crate::store::VLDB_FILE).exists() {
        return Err(ConfigError::AlreadyInitialized(dir.clone()));
    }
    cellfs_protocol::transport::resolve(&opts.listen)
        .map_err(|_| ConfigError::Invalid(format!("listen address {:?} does not resolve", opts.listen)))?;
    let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(io_err(&p));
    let cell_toml = opts.cell_dir.join(CLIENT_DIR).join("cell.toml");
    let cell = CellConfig::load(&cell_toml).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let ca = cellfs_protocol::tls::Credential {
        cert_pem: read(opts.cell_dir.join(CA_PEM))?,
        key_pem: read(opts.cell_dir.join(CA_KEY))?,
    };
    let authority = CellAuthority::load(&cell.cell, ca)?;
    let server = authority.issue_server()?;
    let peer = authority.issue_client(&format!("fileserver {}", opts.listen), Role::Server)?;
    let first = cell.servers[0].clone();
    let index = register_with(&first, &authority.ca.cert_pem, &peer, &opts.listen)?;
    if index == 0 {
        return Err(ConfigError::Invalid(format!(
            "{} is the cell's first server itself",
            opts.listen
        )));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut files = Vec::new();
    write_file(&dir.join(CA_PEM), &authority.ca.cert_pem, 0o644, &mut files)?;
    write_file(&dir.join(SERVER_PEM), &server.cert_pem, 0o644, &mut files)?;
    write_file(&dir.join(SERVER_KEY), &server.key_pem, 0o600, &mut files)?;
    write_file(&dir.join(PEER_PEM), &peer.cert_pem, 0o644, &mut files)?;
    write_file(&dir.join(PEER_KEY), &peer.key_pem, 0o600, &mut files)?;
    Store::create_with_index(dir, index)?;
    files.push(dir.join(crate::store::VLDB_FILE));
    let config = ServerConfig {
        cell: cell.cell.clone(),
        listen: opts.listen.clone(),
        promise_secs: DEFAULT_PROMISE_SECS,
        root_volume: ROOT_VOLUME.to_owned(),
        max_data: DEFAULT_MAX_DATA,
        max_connections: DEFAULT_MAX_CONNECTIONS,
        journal_len: DEFAULT_JOURNAL_LEN,
        max_connections_per_credential: DEFAULT_MAX_CONNECTIONS_PER_CREDENTIAL,
        max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
        max_requests: DEFAULT_MAX_REQUESTS,
        index,
        vldb: Some(first),
        metrics: None,
    };
    write_file(&dir.join(SERVER_TOML), &config.to_toml(), 0o644, &mut files)?;
    Ok(InitReport {
        files,
        client_config: cell_toml,
        admin_config: None,
    })
}

/// Registers `listen` with the cell's first server at `first`; returns the index.
fn register_with(
    first: &str,
    ca_pem: &str,
    peer: &cellfs_protocol::tls::Credential,
    listen: &str,
) -> Result<u32, ConfigError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err(Path::new("tokio runtime")))?;
    rt.block_on(async {
        let peers = crate::peers::Peers::new(ca_pem.to_owned(), Some(peer.clone()));
        let req = cellfs_protocol::Request::RegisterServer {
            address: listen.to_owned(),
        };
        match peers.call(first, &req).await {
            Ok(cellfs_protocol::Reply::Registered { index }) => Ok(index),
            Ok(other) => Err(ConfigError::Invalid(format!(
                "unexpected reply from {first} to RegisterServer: {other:?}"
            ))),
            Err(e) => Err(ConfigError::Invalid(format!(
                "cannot register with the cell's first server {first}: {e}"
            ))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_lays_out_a_cell_and_refuses_to_run_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("cell");
        let opts = InitOptions {
            data: data.clone(),
            cell: "example".into(),
            listen: "127.0.0.1:7000".into(),
            promise_secs: DEFAULT_PROMISE_SECS,
        };
        let report = init(&opts).unwrap();
        for key in [data.join(CA_KEY), data.join(SERVER_KEY), data.join("client/client.key")] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let cfg = ServerConfig::load(&data).unwrap();
        assert_eq!(cfg.cell, "example");
        assert_eq!(cfg.promise_secs, 600);
        let cell = CellConfig::load(&report.client_config).unwrap();
        assert_eq!(cell.servers, vec!["127.0.0.1:7000".to_string()]);
        assert_eq!(cell.ca, data.join("client/ca.pem"));
        let before = std::fs::read(data.join(CA_PEM)).unwrap();
        assert!(matches!(init(&opts), Err(ConfigError::AlreadyInitialized(_))));
        assert_eq!(std::fs::read(data.join(CA_PEM)).unwrap(), before);
        assert_eq!(cfg.journal_len, DEFAULT_JOURNAL_LEN);
        // A server.toml written before the journal existed still loads.
        let old = "cell = \"x\"\nlisten = \"127.0.0.1:1\"\npromise_secs = 5\nroot_volume = \"root.cell\"\n";
        let old_dir = tmp.path().join("old");
        std::fs::create_dir_all(&old_dir).unwrap();
        std::fs::write(old_dir.join(SERVER_TOML), old).unwrap();
        assert_eq!(ServerConfig::load(&old_dir).unwrap().journal_len, DEFAULT_JOURNAL_LEN);
        let store = Store::open(&data).unwrap();
        let root = store.volume_by_name(ROOT_VOLUME).unwrap();
        let st = root.status(cellfs_protocol::Fid::root(root.id())).unwrap();
        assert_eq!((st.mode, st.uid, st.gid, st.nlink), (0o755, 0, 0, 2));
    }
}
