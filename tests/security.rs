//! Security through the real programs: credentials issued and revoked with
//! `cellfs-vos host`, admin operations refused to host credentials, and
//! directory ACLs enforced by the server (raw RPCs) and by a mount (the
//! client run as other users), also for reads served from the cache.

mod common;

use cellfs::{COMMAND_TIMEOUT, Cell, ClientError, Mount, bin, output_with_timeout, wait_for};
use cellfs_protocol::acl::{AclChange, Caller, Role};
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::message::{LockMode, LockOp};
use cellfs_protocol::tls::{CellAuthority, Credential};
use cellfs_protocol::transport::{CallError, Connector};
use cellfs_protocol::{ErrorCode, Fid, Reply, Request, Status};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const ALICE: u32 = 1001;
const BOB: u32 = 1002;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cellfs-vos host add NAME --out DIR [--admin]`; returns the bundle's cell.toml.
fn issue(cell: &Cell, name: &str, admin: bool) -> PathBuf {
    let out = cell.root().join(format!("bundle-{name}"));
    let mut args = vec!["host".to_owned(), "add".into(), name.into(), "--out".into()];
    args.push(out.display().to_string());
    if admin {
        args.push("--admin".into());
    }
    cell.vos_ok(&args);
    out.join("cell.toml")
}

fn load(path: &Path) -> CellConfig {
    CellConfig::load(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn credentials_are_issued_checked_and_revoked() {
    let cell = Cell::new();
    // A host credential lists but may not change anything.
    let web = issue(&cell, "web9", false);
    let listed = cell.vos_with(&web, ["list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let refused = cell.vos_with(&web, ["create", "site.x"]);
    assert!(!refused.status.success());
    let msg = text(&refused.stderr);
    assert!(
        msg.contains("permission denied") && msg.contains("create_volume"),
        "{msg}"
    );
    for args in [
        vec!["user", "add", "mallory", "--uid", "7"],
        vec!["host", "add", "other", "--out", "/nonexistent-cellfs-dir"],
        vec!["host", "revoke", "admin"],
    ] {
        let out = cell.vos_with(&web, &args);
        assert!(!out.status.success(), "{args:?} was allowed to a host credential");
        assert!(text(&out.stderr).contains("permission denied"), "{}", text(&out.stderr));
    }
    // An admin credential issued the same way may.
    let ops = issue(&cell, "ops", true);
    let made = cell.vos_with(&ops, ["create", "site.x"]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    // A name in use is not issued twice.
    let again = cell.vos([
        "host",
        "add",
        "web9",
        "--out",
        &cell.root().join("again").display().to_string(),
    ]);
    assert!(!again.status.success());

    // An expired credential of the cell's own CA is refused at the handshake.
    let data = cell.data_dir();
    let ca = Credential {
        cert_pem: std::fs::read_to_string(data.join("ca.pem")).unwrap(),
        key_pem: std::fs::read_to_string(data.join("ca.key")).unwrap(),
    };
    let authority = CellAuthority::load(cellfs::CELL_NAME, ca).unwrap();
    let old = authority
        .issue_client_valid("old", Role::Admin, Some(((2000, 1, 1), (2000, 1, 2))))
        .unwrap();
    let dir = cell.root().join("expired");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.pem"), &old.cert_pem).unwrap();
    std::fs::write(dir.join("c.key"), &old.key_pem).unwrap();
    let mut expired = cell.admin_config();
    expired.cert = Some(dir.join("c.pem"));
    expired.key = Some(dir.join("c.key"));
    let before = cell.stats().rpcs;
    assert!(cell.call_with(&expired, &Request::ListVolumes).is_err());
    assert_eq!(cell.stats().rpcs, before, "an expired credential got an RPC answered");

    // Revocation closes the live connection and refuses the next one.
    let web_cfg = load(&web);
    let (client, _connector) = cell.block_on(async {
        let connector = Connector::from_config(&web_cfg).unwrap();
        let client = connector.connect().await.unwrap();
        assert_eq!(client.call(&Request::Ping).await.unwrap(), Reply::Ok);
        (client, connector)
    });
    cell.vos_ok(["host", "revoke", "web9"]);
    wait_for("the revoked host's connection to close", Duration::from_secs(5), || {
        client.connection().close_reason().is_some()
    });
    let after = cell.block_on(client.call(&Request::Ping));
    assert!(after.is_err(), "a revoked connection still answers: {after:?}");
    assert!(
        cell.call_with(&web_cfg, &Request::Ping).is_err(),
        "a revoked credential connected again"
    );
    assert!(
        cell.vos_with(&ops, ["list"]).status.success(),
        "revoking one credential hurt another"
    );
    let hosts: serde_json::Value = serde_json::from_str(&cell.vos_ok(["host", "list", "--format", "json"])).unwrap();
    let web9 = hosts.as_array().unwrap().iter().find(|h| h["name"] == "web9").unwrap();
    assert!(!web9["revoked"].is_null(), "{web9}");
    assert!(
        cell.vos(["host", "revoke", "web9"]).status.code() != Some(0),
        "revoked twice"
    );
    assert!(cell.log().contains("revoked"), "the server did not log the revocation");
}

fn caller(uid: u32) -> Caller {
    Caller { uid, gids: vec![uid] }
}

fn root_caller() -> Caller {
    caller(0)
}

fn lookup(cell: &Cell, dir: Fid, name: &str) -> Status {
    match cell.call_as(root_caller(), &Request::Lookup { dir, name: name.into() }) {
        Ok(Reply::Status(s)) => s,
        other => panic!("lookup {name}: {other:?}"),
    }
}

/// Sets the ACL of `dir` to exactly these entries, as root through the server.
fn set_acl(cell: &Cell, dir: Fid, entries: &[(&str, &str)]) {
    let changes = entries
        .iter()
        .map(|(name, rights)| AclChange {
            name: (*name).into(),
            rights: (*rights).into(),
            negative: false,
        })
        .collect();
    let reply = cell.call_as(
        root_caller(),
        &Request::SetAcl {
            dir,
            changes,
            clear: true,
        },
    );
    assert!(matches!(reply, Ok(Reply::Acl(_))), "{reply:?}");
}

/// Runs `argv` as `uid` (with gid `uid` and no other groups).
fn as_user(uid: u32, argv: &[&str]) -> Output {
    output_with_timeout(
        Command::new("setpriv")
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &uid.to_string(),
                "--clear-groups",
                "--",
            ])
            .args(argv),
        COMMAND_TIMEOUT,
    )
}

#[track_caller]
fn assert_denied(out: &Output, what: &str) {
    assert!(!out.status.success(), "{what} succeeded");
    let err = text(&out.stderr).to_lowercase();
    assert!(err.contains("permission denied"), "{what}: {err}");
}

#[track_caller]
fn assert_allowed(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed: {}", text(&out.stderr));
}

/// The mount and its cache folder reachable by other users.
fn open_up(m: &Mount) {
    for p in [m.path().parent().unwrap(), m.cache_dir()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn users(cell: &Cell) {
    cell.vos_ok(["user", "add", "alice", "--uid", &ALICE.to_string()]);
    cell.vos_ok(["user", "add", "bob", "--uid", &BOB.to_string()]);
    cell.vos_ok(["group", "add", "site1", "--gid", "3000"]);
    cell.vos_ok(["group", "member", "add", "site1", "alice"]);
    let groups = cell.vos_ok(["group", "list"]);
    assert!(groups.contains("site1") && groups.contains("alice"), "{groups}");
}

#[test]
fn each_right_is_enforced_by_the_server_and_through_a_mount() {
    let cell = Cell::new();
    users(&cell);
    let a = Mount::new(&cell);
    open_up(&a);
    let root = common::server_root(&cell);
    // One directory per right: alice holds it (through her group for `r`),
    // bob does not; both may look names up where the right is not `l`.
    let rights = ["r", "l", "i", "d", "w", "k", "a"];
    for right in rights {
        let d = a.path().join(format!("d{right}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        for f in ["f", "v1", "v2"] {
            std::fs::write(d.join(f), b"secret").unwrap();
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o666)).unwrap();
        }
        let fid = lookup(&cell, root.fid, &format!("d{right}")).fid;
        // Writing a whole-file cached copy means fetching it first, so the
        // writer of the `w` case also reads (as AFS's `write` is rlidwk).
        let alice_rights = match right {
            "l" => "l".to_owned(),
            "w" => "lrw".to_owned(),
            "k" => "lrk".to_owned(),
            _ => format!("l{right}"),
        };
        let bob_rights = match right {
            "l" => "r",
            "w" | "k" => "lr",
            _ => "l",
        };
        let alice_entry = if right == "r" { "site1" } else { "alice" };
        set_acl(
            &cell,
            fid,
            &[("uid:0", "all"), (alice_entry, &alice_rights), ("bob", bob_rights)],
        );
    }

    // By raw RPC, skipping every check of the cache manager.
    for right in rights {
        let dir = lookup(&cell, root.fid, &format!("d{right}")).fid;
        let f = lookup(&cell, dir, "f").fid;
        let req = |who: u32| match right {
            "r" => Request::FetchData { fid: f },
            "l" => Request::Lookup { dir, name: "f".into() },
            "i" => Request::Create {
                dir,
                name: format!("new{who}"),
                mode: 0o644,
                uid: who,
                gid: who,
                exclusive: true,
            },
            "d" => Request::Remove {
                dir,
                name: if who == ALICE { "v1".into() } else { "v2".into() },
            },
            "w" => Request::StoreData {
                fid: f,
                offset: 0,
                len: 0,
                truncate: Some(3),
                mtime: None,
                expect: None,
            },
            // Test needs the right as Acquire does, but leaves no lock
            // behind: one held by this one-shot connection would last until
            // the server noticed it gone, and alice's flock through the
            // mount below would meet it (seen once under a loaded run).
            "k" => Request::Lock {
                fid: f,
                op: LockOp::Test(LockMode::Exclusive),
            },
            _ => Request::SetAcl {
                dir,
                changes: Vec::new(),
                clear: false,
            },
        };
        let mut alice = caller(ALICE);
        if right == "r" {
            alice.gids = vec![100];
        }
        let ok = cell.call_as(alice, &req(ALICE));
        assert!(ok.is_ok(), "{right}: alice was refused: {ok:?}");
        match cell.call_as(caller(BOB), &req(BOB)) {
            Err(ClientError::Call(CallError::Rpc(e))) => assert_eq!(e.code, ErrorCode::AccessDenied, "{right}: {e}"),
            other => panic!("{right}: bob was not refused: {other:?}"),
        }
        // Anonymous requests get what system:anyuser has: nothing here.
        assert!(cell.call(&req(BOB)).is_err(), "{right}: an anonymous request passed");
    }

    // Through the mount, as the users themselves.
    let p = |right: &str, name: &str| a.path().join(format!("d{right}")).join(name).display().to_string();
    let run = |uid: u32, argv: &[&str]| as_user(uid, argv);
    // r: alice reads through her group's entry; bob only looks names up.
    assert_denied(&run(BOB, &["cat", &p("r", "f")]), "bob reading without r");
    assert_allowed(&run(ALICE, &["cat", &p("r", "f")]), "alice reading");
    // l: bob first, so no kernel listing cache is filled before him.
    assert_denied(&run(BOB, &["ls", &p("l", "")]), "bob listing without l");
    assert_allowed(&run(ALICE, &["ls", &p("l", "")]), "alice listing");
    // i
    assert_denied(&run(BOB, &["touch", &p("i", "bob-new")]), "bob creating without i");
    assert_allowed(&run(ALICE, &["touch", &p("i", "alice-new")]), "alice creating");
    // d
    std::fs::write(p("d", "x1"), b"1").unwrap();
    std::fs::write(p("d", "x2"), b"2").unwrap();
    assert_denied(&run(BOB, &["rm", "-f", &p("d", "x2")]), "bob removing without d");
    assert_allowed(&run(ALICE, &["rm", "-f", &p("d", "x1")]), "alice removing");
    // w
    assert_denied(
        &run(BOB, &["sh", "-c", &format!("echo bob >> {}", p("w", "f"))]),
        "bob writing without w",
    );
    assert_allowed(
        &run(ALICE, &["sh", "-c", &format!("echo alice >> {}", p("w", "f"))]),
        "alice writing",
    );
    // k: flock(1) opens the file for reading, then locks it.
    let flock = |uid: u32| run(uid, &["flock", "-n", &p("k", "f"), "true"]);
    assert_denied(&flock(BOB), "bob locking without k");
    assert_allowed(&flock(ALICE), "alice locking");
    // a: setacl through the cache manager's control socket.
    let setacl = |uid: u32| {
        let cm = bin("cellfs-cachemanager");
        let cache = a.cache_dir().display().to_string();
        run(
            uid,
            &[
                cm.to_str().unwrap(),
                "setacl",
                "--cache",
                &cache,
                &p("a", ""),
                "bob",
                "rl",
            ],
        )
    };
    assert_denied(&setacl(BOB), "bob changing the ACL without a");
    assert_allowed(&setacl(ALICE), "alice changing the ACL");
    let listed = a.command(&["listacl"], Some(&a.path().join("da")));
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let acl = text(&listed.stdout);
    assert!(acl.contains("alice la") && acl.contains("bob rl"), "{acl}");
}

#[test]
fn cached_reads_honour_acls_per_caller() {
    let cell = Cell::new();
    users(&cell);
    let a = Mount::new(&cell);
    open_up(&a);
    let d = a.path().join("private");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(d.join("f"), b"only alice").unwrap();
    std::fs::set_permissions(d.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = common::server_root(&cell);
    let dir = lookup(&cell, root.fid, "private").fid;
    set_acl(&cell, dir, &[("uid:0", "all"), ("alice", "rl"), ("bob", "l")]);
    let f = d.join("f").display().to_string();
    let read = as_user(ALICE, &["cat", &f]);
    assert_allowed(&read, "alice reading");
    assert_eq!(text(&read.stdout), "only alice");
    // The copy is cached now; bob still may not read it on this node.
    let rpcs = cell.stats().rpcs;
    assert_denied(&as_user(BOB, &["cat", &f]), "bob reading alice's cached file");
    assert_allowed(&as_user(ALICE, &["cat", &f]), "alice reading again");
    assert!(
        cell.stats().rpcs <= rpcs + 2,
        "cached reads asked the server every time"
    );
    // Granting bob `r` reaches the node's cached rights at once.
    set_acl(&cell, dir, &[("uid:0", "all"), ("alice", "rl"), ("bob", "rl")]);
    assert_allowed(&as_user(BOB, &["cat", &f]), "bob reading after the grant");
    // And taking it away again too, with a negative entry.
    let negative = cell.call_as(
        root_caller(),
        &Request::SetAcl {
            dir,
            changes: vec![AclChange {
                name: "bob".into(),
                rights: "r".into(),
                negative: true,
            }],
            clear: false,
        },
    );
    assert!(negative.is_ok(), "{negative:?}");
    assert_denied(&as_user(BOB, &["cat", &f]), "bob reading after a negative entry");
    assert_allowed(
        &as_user(ALICE, &["cat", &f]),
        "alice reading after bob's negative entry",
    );
    // New directories inherit their parent's ACL.
    std::fs::create_dir(d.join("sub")).unwrap();
    let sub = lookup(&cell, dir, "sub").fid;
    match cell.call_as(root_caller(), &Request::GetAcl { dir: sub }) {
        Ok(Reply::Acl(lines)) => {
            assert!(
                lines.iter().any(|l| l.name == "bob" && l.negative && l.rights == "r"),
                "{lines:?}"
            );
        }
        other => panic!("GetAcl: {other:?}"),
    }
}

#[test]
fn users_and_revocations_reach_a_joined_server() {
    let cell = Cell::new();
    let second = cell.join();
    let s2 = second.addr().to_string();
    cell.vos_ok(["create", "site.two", "--server", &s2]);
    cell.vos_ok(["mkmount", "/two", "site.two"]);
    users(&cell);
    let a = Mount::new(&cell);
    open_up(&a);
    let d = a.path().join("two").join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(d.join("f"), b"on the second server").unwrap();
    std::fs::set_permissions(d.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // The second server resolves the cell's users: they were pushed to it.
    let cm = bin("cellfs-cachemanager");
    let cache = a.cache_dir().display().to_string();
    let path = d.display().to_string();
    let out = output_with_timeout(
        Command::new(&cm).args([
            "setacl", "--cache", &cache, "--clear", &path, "uid:0", "all", "alice", "rl", "bob", "l",
        ]),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "setacl on the second server: {}",
        text(&out.stderr)
    );
    let f = d.join("f").display().to_string();
    assert_allowed(&as_user(ALICE, &["cat", &f]), "alice reading on the second server");
    assert_denied(&as_user(BOB, &["cat", &f]), "bob reading on the second server");
    // A revoked credential is cut off the second server too.
    let web = load(&issue(&cell, "web2", false));
    let mut direct = web.clone();
    direct.servers = vec![s2.clone()];
    let client = cell.block_on(async {
        let client = Connector::from_config(&direct).unwrap().connect().await.unwrap();
        assert_eq!(client.call(&Request::Ping).await.unwrap(), Reply::Ok);
        client
    });
    cell.vos_ok(["host", "revoke", "web2"]);
    wait_for(
        "the second server to close the revoked connection",
        Duration::from_secs(5),
        || client.connection().close_reason().is_some(),
    );
    assert!(cell.call_with(&direct, &Request::Ping).is_err());
    // The node's own (host) credential still reaches both.
    assert_allowed(
        &as_user(ALICE, &["cat", &f]),
        "alice reading after another host's revocation",
    );
}

/// Nothing outside an ACL may change it (root is a uid like any other), so
/// a change that would take the `a` right from the caller making it is
/// refused with a clear reason and changes nothing; one that keeps it for
/// the caller goes through.
#[test]
fn an_acl_change_that_would_take_the_callers_a_right_is_refused() {
    let cell = Cell::new();
    users(&cell);
    let a = Mount::new(&cell);
    open_up(&a);
    std::fs::create_dir(a.path().join("site")).unwrap();
    let root = common::server_root(&cell);
    let dir = lookup(&cell, root.fid, "site").fid;
    set_acl(&cell, dir, &[("uid:0", "all"), ("alice", "rl")]);
    let change = |rights: &str| {
        cell.call_as(
            root_caller(),
            &Request::SetAcl {
                dir,
                changes: vec![AclChange {
                    name: "uid:0".into(),
                    rights: rights.into(),
                    negative: false,
                }],
                clear: false,
            },
        )
    };
    match change("rl") {
        Err(e) => assert!(e.to_string().contains("a (administer) right from uid 0"), "{e}"),
        Ok(r) => panic!("root took its own a right: {r:?}"),
    }
    let kept = cell.call_as(root_caller(), &Request::GetAcl { dir });
    assert!(
        matches!(&kept, Ok(Reply::Acl(lines)) if lines.iter().any(|l| l.name == "uid:0" && l.rights == "rlidwka")),
        "{kept:?}"
    );
    assert!(change("rlidwka").is_ok());
}
