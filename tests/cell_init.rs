//! Creating a cell and administering its volumes with `cellfs-vos`.

mod common;

use cellfs::{COMMAND_TIMEOUT, Cell, bin, output_with_timeout};
use cellfs_protocol::{FileKind, Reply, Request};
use common::{server_lookup, server_mkdir, server_root, sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// Every path under `root` with its kind, mode and content hash.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            use std::os::unix::fs::MetadataExt;
            let desc = if meta.is_dir() {
                walk(root, &path, out);
                format!("dir {:o}", meta.mode())
            } else if meta.is_file() {
                format!("file {:o} {}", meta.mode(), sha256(&std::fs::read(&path).unwrap()))
            } else {
                format!("other {:o}", meta.mode())
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn init(data: &Path, cell: &str) -> Output {
    output_with_timeout(
        Command::new(bin("cellfs-fileserver"))
            .arg("init")
            .arg("--data")
            .arg(data)
            .args(["--cell", cell, "--listen", "127.0.0.1:7777"]),
        COMMAND_TIMEOUT,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn init_writes_the_client_bundle_and_refuses_a_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = init(&data, "example.org");
    assert!(first.status.success(), "first init failed: {}", text(&first.stderr));
    for f in [
        "client/cell.toml",
        "client/ca.pem",
        "client/client.pem",
        "client/client.key",
        "ca.pem",
        "ca.key",
    ] {
        assert!(data.join(f).is_file(), "init did not write {f}");
    }
    let cfg = cellfs_protocol::config::CellConfig::load(&data.join("client/cell.toml")).unwrap();
    assert_eq!(cfg.cell, "example.org");
    assert_eq!(cfg.servers, vec!["127.0.0.1:7777".to_owned()]);

    let before = snapshot(&data);
    for cell in ["example.org", "other.org"] {
        let again = init(&data, cell);
        assert!(!again.status.success(), "second init ({cell}) succeeded");
        assert!(
            !again.stderr.is_empty(),
            "second init gave no message; stdout: {}",
            text(&again.stdout)
        );
        assert_eq!(snapshot(&data), before, "second init ({cell}) changed the data folder");
    }
}

#[test]
fn vos_volume_round_trip() {
    let cell = Cell::new();
    let created = cell.vos_ok(["create", "site.www", "--quota", "10GiB"]);
    assert!(created.contains("site.www"), "{created}");

    let list: serde_json::Value = serde_json::from_str(&cell.vos_ok(["list", "--format", "json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"site.www"), "{names:?}");
    assert!(names.len() >= 2, "root volume missing from {names:?}");
    let www = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "site.www")
        .unwrap();
    assert_eq!(www["quota"], 10u64 << 30);

    let text_list = cell.vos_ok(["list"]);
    assert!(text_list.lines().any(|l| l.starts_with("site.www ")), "{text_list}");

    let examine = |name: &str| -> serde_json::Value {
        serde_json::from_str(&cell.vos_ok(["examine", name, "--format", "json"])).unwrap()
    };
    assert_eq!(examine("site.www")["name"], "site.www");
    assert!(cell.vos_ok(["examine", "site.www"]).contains("10.0 GiB"));
    // The disk the volume's data is on, as the server sees it.
    assert!(examine("site.www")["disk"]["total"].as_u64().is_some_and(|t| t > 0));
    assert!(cell.vos_ok(["examine", "site.www"]).contains("server disk:"));

    cell.vos_ok(["setquota", "site.www", "1GiB"]);
    assert_eq!(examine("site.www")["quota"], 1u64 << 30);
    cell.vos_ok(["setquota", "site.www", "0"]);
    assert_eq!(examine("site.www")["quota"], 0);
    assert!(cell.vos_ok(["examine", "site.www"]).contains("unlimited"));

    let dup = cell.vos(["create", "site.www"]);
    assert!(!dup.status.success(), "creating site.www twice succeeded");
    assert!(text(&dup.stderr).contains("site.www"), "{}", text(&dup.stderr));

    let bad = cell.vos(["create", "bad name"]);
    assert!(!bad.status.success(), "an invalid volume name was accepted");

    cell.vos_ok(["create", "unlimited.vol"]);
    assert_eq!(examine("unlimited.vol")["quota"], 0);

    cell.vos_ok(["remove", "site.www"]);
    let list: serde_json::Value = serde_json::from_str(&cell.vos_ok(["list", "--format", "json"])).unwrap();
    assert!(!list.as_array().unwrap().iter().any(|v| v["name"] == "site.www"));
    let gone = cell.vos(["examine", "site.www"]);
    assert!(!gone.status.success());
    let msg = text(&gone.stderr);
    assert!(msg.contains("site.www") && msg.contains("NotFound"), "{msg}");
    assert!(!cell.vos(["remove", "site.www"]).status.success());
    assert!(!cell.vos(["setquota", "site.www", "1GiB"]).status.success());
}

#[test]
fn vos_takes_the_config_from_the_environment_and_explains_a_missing_one() {
    let cell = Cell::new();
    let out = output_with_timeout(
        Command::new(bin("cellfs-vos"))
            .arg("list")
            .env("CELLFS_CONFIG", cell.config_path()),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = output_with_timeout(
        Command::new(bin("cellfs-vos")).arg("list").env_remove("CELLFS_CONFIG"),
        COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("CELLFS_CONFIG"), "{}", text(&out.stderr));
    let out = cell.vos(["create", "v", "--quota", "many"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("many"), "{}", text(&out.stderr));
}

#[test]
fn vos_mkmount_is_seen_by_clients() {
    let cell = Cell::new();
    let root = server_root(&cell);
    server_mkdir(&cell, root.fid, "sites");
    cell.vos_ok(["create", "site.www"]);
    cell.vos_ok(["mkmount", "/sites/www", "site.www"]);

    let sites = server_lookup(&cell, root.fid, "sites");
    let www = server_lookup(&cell, sites.fid, "www");
    assert_eq!(www.kind, FileKind::MountPoint);
    match cell.call(&Request::ReadLink { fid: www.fid }) {
        Ok(Reply::Link(target)) => assert_eq!(target, "site.www"),
        other => panic!("ReadLink of /sites/www: {other:?}"),
    }

    // A mount point inside the mounted volume: the walk crosses /sites/www.
    cell.vos_ok(["create", "site.static"]);
    cell.vos_ok(["mkmount", "/sites/www/static", "site.static"]);
    let www_root = match cell.call(&Request::GetRoot {
        volume: "site.www".into(),
    }) {
        Ok(Reply::Status(s)) => s,
        other => panic!("GetRoot site.www: {other:?}"),
    };
    let st = server_lookup(&cell, www_root.fid, "static");
    assert_eq!(st.kind, FileKind::MountPoint);

    let missing = cell.vos(["mkmount", "/nope/www", "site.www"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("/nope"), "{}", text(&missing.stderr));
    let twice = cell.vos(["mkmount", "/sites/www", "site.www"]);
    assert!(
        !twice.status.success(),
        "a second mount point on the same name succeeded"
    );
    let relative = cell.vos(["mkmount", "sites/x", "site.www"]);
    assert!(!relative.status.success());
}
