//! Mutual TLS: only clients holding a credential from the cell's CA get RPCs
//! answered, and clients only talk to a server certified by the cell's CA.

use cellfs::Cell;
use cellfs_protocol::acl::Role;
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::tls::{CellAuthority, Credential};
use cellfs_protocol::{Reply, Request};
use std::path::Path;

/// Requests a refused client tries; none may succeed.
fn probes() -> Vec<Request> {
    vec![
        Request::Ping,
        Request::Hello,
        Request::ListVolumes,
        Request::CreateVolume {
            name: "intruder".into(),
            quota: 0,
            server: None,
        },
    ]
}

fn write_credential(dir: &Path, cred: &Credential) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("client.pem");
    let key = dir.join("client.key");
    std::fs::write(&cert, &cred.cert_pem).unwrap();
    std::fs::write(&key, &cred.key_pem).unwrap();
    (cert, key)
}

#[track_caller]
fn assert_refused(cell: &Cell, cfg: &CellConfig, who: &str) {
    for req in probes() {
        let result = cell.call_with(cfg, &req);
        assert!(result.is_err(), "{who}: {} was answered: {result:?}", req.op_name());
    }
}

#[test]
fn the_cell_credential_is_accepted() {
    let cell = Cell::new();
    assert_eq!(cell.call(&Request::Ping).unwrap(), Reply::Ok);
    match cell.call(&Request::Hello).unwrap() {
        Reply::Hello { cell: name, .. } => assert_eq!(name, cellfs::CELL_NAME),
        other => panic!("unexpected reply to Hello: {other:?}"),
    }
}

#[test]
fn a_client_without_credential_is_refused() {
    let cell = Cell::new();
    let before = cell.stats().rpcs;
    let mut cfg = cell.config();
    cfg.cert = None;
    cfg.key = None;
    assert_refused(&cell, &cfg, "no credential");
    assert_eq!(
        cell.stats().rpcs,
        before,
        "the server ran RPCs for a client without credential"
    );
    assert!(cell.call(&Request::Ping).is_ok(), "the valid client no longer works");
}

#[test]
fn a_credential_from_another_ca_is_refused() {
    let cell = Cell::new();
    let tmp = tempfile::tempdir().unwrap();
    let rogue = CellAuthority::generate("rogue").unwrap();
    let (cert, key) = write_credential(tmp.path(), &rogue.issue_client("intruder", Role::Host).unwrap());
    let mut cfg = cell.config();
    cfg.cert = Some(cert);
    cfg.key = Some(key);
    let before = cell.stats().rpcs;
    assert_refused(&cell, &cfg, "credential from another CA");
    assert_eq!(
        cell.stats().rpcs,
        before,
        "the server ran RPCs for a foreign credential"
    );
    let list = cell.call(&Request::ListVolumes).unwrap();
    match list {
        Reply::Volumes(v) => assert!(!v.iter().any(|v| v.name == "intruder"), "{v:?}"),
        other => panic!("unexpected reply to ListVolumes: {other:?}"),
    }
}

#[test]
fn a_server_certified_by_another_ca_is_refused_by_the_client() {
    let cell = Cell::new();
    let tmp = tempfile::tempdir().unwrap();
    let other = CellAuthority::generate("elsewhere").unwrap();
    let ca = tmp.path().join("ca.pem");
    std::fs::write(&ca, &other.ca.cert_pem).unwrap();
    // The client keeps its valid credential but trusts another CA, so it must
    // reject the real server's certificate.
    let mut cfg = cell.config();
    cfg.ca = ca;
    let before = cell.stats().rpcs;
    assert_refused(&cell, &cfg, "client trusting another CA");
    assert_eq!(cell.stats().rpcs, before);
}

#[test]
fn cellfs_vos_reports_a_refused_credential() {
    let cell = Cell::new();
    let tmp = tempfile::tempdir().unwrap();
    let rogue = CellAuthority::generate("rogue").unwrap();
    write_credential(tmp.path(), &rogue.issue_client("intruder", Role::Host).unwrap());
    std::fs::write(tmp.path().join("ca.pem"), std::fs::read(cell.config().ca).unwrap()).unwrap();
    let cfg = CellConfig {
        cell: cellfs::CELL_NAME.into(),
        servers: vec![cell.addr().to_string()],
        ca: "ca.pem".into(),
        cert: Some("client.pem".into()),
        key: Some("client.key".into()),
    };
    let path = tmp.path().join("cell.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    let out = cellfs::output_with_timeout(
        std::process::Command::new(cellfs::bin("cellfs-vos"))
            .arg("--config")
            .arg(&path)
            .args(["create", "intruder"]),
        cellfs::COMMAND_TIMEOUT,
    );
    assert!(!out.status.success(), "cellfs-vos with a foreign credential succeeded");
    assert!(!out.stderr.is_empty());
}
