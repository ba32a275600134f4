//! Walking a cell path (`/sites/www`) from the root volume, crossing mount
//! points, to find where a new mount point goes.

use anyhow::{Context, bail};
use cellfs_protocol::transport::{CallError, RpcClient};
use cellfs_protocol::{ErrorCode, FileKind, Reply, Request, Status};

/// Something that answers RPCs: the real [`RpcClient`], or a fake in tests.
pub trait Rpc {
    /// Sends `req` and returns the server's reply.
    fn call(&self, req: &Request) -> impl Future<Output = Result<Reply, CallError>>;
}

/// How long a change a restarted server holds back (its grace, a few
/// seconds: `fileserver/src/grace.rs`) is repeated before its error stands.
const GRACE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

impl Rpc for RpcClient {
    async fn call(&self, req: &Request) -> Result<Reply, CallError> {
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            match RpcClient::call(self, req).await {
                Err(CallError::Rpc(e)) if e.code == ErrorCode::Grace && started.elapsed() < GRACE_PATIENCE => {
                    if !std::mem::replace(&mut told, true) {
                        eprintln!("cellfs-vos: {}; waiting", e.message);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }
}

/// Splits an absolute cell path into its parent components and the last one.
/// Empty components (`//`, a trailing `/`) are ignored; `.` and `..` are refused.
pub fn split_path(path: &str) -> anyhow::Result<(Vec<String>, String)> {
    if !path.starts_with('/') {
        bail!("path {path:?} must be absolute from the cell root, e.g. /sites/www");
    }
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            bail!("path {path:?} may not contain '.' or '..'");
        }
        cellfs_protocol::names::validate_name(part).with_context(|| format!("path {path:?}"))?;
        parts.push(part.to_owned());
    }
    let Some(last) = parts.pop() else {
        bail!("path {path:?} names the cell root; give the mount point's name, e.g. /sites/www");
    };
    Ok((parts, last))
}

/// Displays the first `n` components of `parts` as a cell path.
fn prefix(parts: &[String], n: usize) -> String {
    format!("/{}", parts[..n].join("/"))
}

fn expect_status(reply: Reply, what: &'static str) -> anyhow::Result<Status> {
    match reply {
        Reply::Status(s) => Ok(s),
        other => bail!("unexpected reply to {what}: {other:?}"),
    }
}

/// The root directory status of `volume`.
pub async fn volume_root<C: Rpc>(client: &C, volume: &str) -> anyhow::Result<Status> {
    let reply = client
        .call(&Request::GetRoot {
            volume: volume.to_owned(),
        })
        .await
        .with_context(|| format!("cannot open the root of volume {volume:?}"))?;
    expect_status(reply, "GetRoot")
}

/// Walks `dirs` from the root of `root_volume`, following mount points into the
/// volumes they name, and returns the status of the final directory.
pub async fn walk_dirs<C: Rpc>(client: &C, root_volume: &str, dirs: &[String]) -> anyhow::Result<Status> {
    let mut dir = volume_root(client, root_volume).await?;
    for (i, name) in dirs.iter().enumerate() {
        let here = prefix(dirs, i + 1);
        let reply = client
            .call(&Request::Lookup {
                dir: dir.fid,
                name: name.clone(),
            })
            .await
            .with_context(|| format!("cannot look up {here}"))?;
        let status = expect_status(reply, "Lookup")?;
        dir = match status.kind {
            FileKind::Dir => status,
            FileKind::MountPoint => {
                let target = match client
                    .call(&Request::ReadLink { fid: status.fid })
                    .await
                    .with_context(|| format!("cannot read mount point {here}"))?
                {
                    Reply::Link(v) => v,
                    other => bail!("unexpected reply to ReadLink of {here}: {other:?}"),
                };
                // Admin changes go to the read-write volume behind any mount point.
                let (volume, _) = cellfs_protocol::names::parse_mount_target(&target);
                volume_root(client, volume)
                    .await
                    .with_context(|| format!("mount point {here} names volume {volume:?}"))?
            }
            FileKind::File | FileKind::Symlink | FileKind::Special(_) => bail!("{here} is not a directory"),
        };
    }
    Ok(dir)
}

/// Creates a mount point at `path` (from the cell root) showing `volume`.
/// Returns the new mount point's status.
pub async fn make_mount<C: Rpc>(client: &C, path: &str, volume: &str, read_write: bool) -> anyhow::Result<Status> {
    let (dirs, last) = split_path(path)?;
    let root_volume = match client.call(&Request::Hello).await.context("Hello")? {
        Reply::Hello { root_volume, .. } => root_volume,
        other => bail!("unexpected reply to Hello: {other:?}"),
    };
    let parent = walk_dirs(client, &root_volume, &dirs).await?;
    let reply = client
        .call(&Request::MakeMount {
            dir: parent.fid,
            name: last,
            volume: volume.to_owned(),
            read_write,
        })
        .await
        .with_context(|| format!("cannot create mount point {path} for volume {volume:?}"))?;
    match reply {
        Reply::Created { status, .. } => Ok(status),
        other => bail!("unexpected reply to MakeMount: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellfs_protocol::{Fid, RpcError, Timestamp};
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn status(fid: Fid, kind: FileKind) -> Status {
        Status {
            fid,
            kind,
            mode: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            size: 0,
            data_version: 1,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            atime: Timestamp::default(),
            acl_dir: 1,
        }
    }

    /// A tiny in-memory cell: volumes by name, entries by (dir, name), links by fid.
    #[derive(Default)]
    struct FakeCell {
        volumes: HashMap<String, u64>,
        entries: HashMap<(Fid, String), Status>,
        links: HashMap<Fid, String>,
        made: Mutex<Vec<(Fid, String, String)>>,
    }

    impl FakeCell {
        fn new() -> Self {
            let mut cell = FakeCell::default();
            cell.volumes.insert("root.cell".into(), 1);
            cell.volumes.insert("site.www".into(), 7);
            let sites = Fid {
                volume: 1,
                vnode: 2,
                unique: 1,
            };
            cell.entries
                .insert((Fid::root(1), "sites".into()), status(sites, FileKind::Dir));
            let mp = Fid {
                volume: 1,
                vnode: 3,
                unique: 1,
            };
            cell.entries
                .insert((sites, "www".into()), status(mp, FileKind::MountPoint));
            cell.links.insert(mp, "site.www".into());
            let file = Fid {
                volume: 1,
                vnode: 4,
                unique: 1,
            };
            cell.entries
                .insert((Fid::root(1), "README".into()), status(file, FileKind::File));
            cell
        }
    }

    fn not_found(what: &str) -> CallError {
        CallError::Rpc(RpcError::new(ErrorCode::NotFound, format!("no such {what}")))
    }

    impl Rpc for FakeCell {
        async fn call(&self, req: &Request) -> Result<Reply, CallError> {
            match req {
                Request::Hello => Ok(Reply::Hello {
                    cell: "test".into(),
                    root_volume: "root.cell".into(),
                    promise_secs: 60,
                    max_data: 1 << 20,
                    address: "127.0.0.1:7000".into(),
                }),
                Request::GetRoot { volume } => match self.volumes.get(volume) {
                    Some(id) => Ok(Reply::Status(status(Fid::root(*id), FileKind::Dir))),
                    None => Err(not_found("volume")),
                },
                Request::Lookup { dir, name } => match self.entries.get(&(*dir, name.clone())) {
                    Some(s) => Ok(Reply::Status(s.clone())),
                    None => Err(not_found("entry")),
                },
                Request::ReadLink { fid } => self.links.get(fid).cloned().map(Reply::Link).ok_or(not_found("link")),
                Request::MakeMount { dir, name, volume, .. } => {
                    self.made.lock().unwrap().push((*dir, name.clone(), volume.clone()));
                    let new = Fid {
                        volume: dir.volume,
                        vnode: 99,
                        unique: 1,
                    };
                    Ok(Reply::Created {
                        dir: status(*dir, FileKind::Dir),
                        status: status(new, FileKind::MountPoint),
                    })
                }
                _ => Err(CallError::Unexpected("fake")),
            }
        }
    }

    #[test]
    fn split_paths() {
        assert_eq!(split_path("/www").unwrap(), (vec![], "www".to_owned()));
        assert_eq!(
            split_path("/sites/www/").unwrap(),
            (vec!["sites".to_owned()], "www".to_owned())
        );
        assert_eq!(
            split_path("//a//b/c").unwrap(),
            (vec!["a".to_owned(), "b".to_owned()], "c".to_owned())
        );
        for bad in ["", "/", "//", "sites/www", "/sites/../www", "/./www", "/a/."] {
            assert!(split_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(split_path(&format!("/{}", "x".repeat(256))).is_err());
    }

    #[tokio::test]
    async fn mount_in_the_root_volume() {
        let cell = FakeCell::new();
        make_mount(&cell, "/sites/shop", "site.shop", false).await.unwrap();
        let made = cell.made.lock().unwrap().clone();
        let sites = Fid {
            volume: 1,
            vnode: 2,
            unique: 1,
        };
        assert_eq!(made, vec![(sites, "shop".to_owned(), "site.shop".to_owned())]);
    }

    #[tokio::test]
    async fn walk_crosses_mount_points() {
        let cell = FakeCell::new();
        make_mount(&cell, "/sites/www/static", "site.static", false)
            .await
            .unwrap();
        let made = cell.made.lock().unwrap().clone();
        assert_eq!(
            made,
            vec![(Fid::root(7), "static".to_owned(), "site.static".to_owned())]
        );
    }

    #[tokio::test]
    async fn errors_name_the_path() {
        let cell = FakeCell::new();
        let err = make_mount(&cell, "/nope/www", "v", false).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("/nope") && text.contains("NotFound"), "{text}");
        let err = make_mount(&cell, "/README/x", "v", false).await.unwrap_err();
        assert!(format!("{err:#}").contains("/README is not a directory"), "{err:#}");
        assert!(cell.made.lock().unwrap().is_empty());
    }
}
