//! The fs-style commands (like OpenAFS `fs`): they ask the running cache
//! manager of a mount, through the control socket in its cache folder.

use crate::Format;
use anyhow::bail;
use cellfs_cachemanager::control::{ControlReply, ControlRequest, query};
use std::path::{Path, PathBuf};

/// Which mount to ask, and how to print.
#[derive(clap::Args, Debug)]
pub struct Node {
    /// The cache folder the mount was started with.
    #[arg(long, value_name = "DIR")]
    cache: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The fs-style commands.
#[derive(clap::Subcommand, Debug)]
pub enum FsCommand {
    /// Show the volume a path is in, its type (RW, RO, backup) and its
    /// servers (like AFS `fs whereis`).
    #[command(name = "whereis")]
    WhereIs {
        #[command(flatten)]
        node: Node,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Show what the node knows of a path: FID, kind, size, version,
    /// owner, mode, whether it is cached and for how long it is promised.
    Examine {
        #[command(flatten)]
        node: Node,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Show the quota and usage of the volume a path is in.
    #[command(name = "listquota")]
    ListQuota {
        #[command(flatten)]
        node: Node,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Drop what the node cached of a path (a file, or a directory's
    /// listing and the files in it); the next use fetches it again.
    Flush {
        #[command(flatten)]
        node: Node,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Drop everything the node cached of the volume a path is in (root).
    #[command(name = "flushvolume")]
    FlushVolume {
        #[command(flatten)]
        node: Node,
        /// A file or directory inside the mount.
        path: PathBuf,
    },
    /// Probe every fileserver of the cell now and show which answer.
    #[command(name = "checkservers")]
    CheckServers {
        #[command(flatten)]
        node: Node,
    },
    /// Show the cache's size limit and use.
    #[command(name = "getcacheparms")]
    GetCacheParms {
        #[command(flatten)]
        node: Node,
    },
    /// Change the cache's size limit at once, evicting down to it (root).
    #[command(name = "setcachesize")]
    SetCacheSize {
        #[command(flatten)]
        node: Node,
        /// The new limit, e.g. 8GiB.
        size: bytesize::ByteSize,
    },
}

/// Asks the mount and returns its answer, or its refusal as an error.
fn ask(node: &Node, req: &ControlRequest) -> anyhow::Result<ControlReply> {
    match query(&node.cache, req, &mut |_, _, _| {})? {
        ControlReply::Error(e) => bail!("{e}"),
        reply => Ok(reply),
    }
}

/// Prints `value` as JSON, or `text` for people.
fn show<T: serde::Serialize>(node: &Node, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match node.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Text => print!("{}", text()),
    }
    Ok(())
}

fn examine(node: &Node, path: &Path) -> anyhow::Result<cellfs_cachemanager::core::PathInfo> {
    let rel = crate::in_mount(&node.cache, path)?;
    match ask(node, &ControlRequest::Examine(rel))? {
        ControlReply::Examined(info) => Ok(*info),
        other => bail!("unexpected answer from the cache manager: {other:?}"),
    }
}

fn flushed(node: &Node, what: &str, reply: ControlReply) -> anyhow::Result<()> {
    let ControlReply::Flushed(f) = reply else {
        bail!("unexpected answer from the cache manager: {reply:?}");
    };
    show(node, &f, || {
        let kept = if f.kept_dirty > 0 {
            format!("; kept {} with changes not yet stored", f.kept_dirty)
        } else {
            String::new()
        };
        format!(
            "flushed {what}: {} cached files, {}{kept}\n",
            f.files,
            bytesize::ByteSize(f.bytes)
        )
    })
}

/// Runs one fs-style command.
pub fn run(cmd: FsCommand) -> anyhow::Result<()> {
    match cmd {
        FsCommand::WhereIs { node, path } => {
            let info = examine(&node, &path)?;
            let Some(v) = &info.volume else {
                bail!(
                    "the fileserver is unreachable: the volume of {} is unknown",
                    path.display()
                );
            };
            let sites = if v.sites.is_empty() {
                v.server.clone()
            } else {
                v.sites.join(", ")
            };
            show(&node, &info, || {
                format!(
                    "{} is in volume {} ({}, id {}) on {sites}\n",
                    path.display(),
                    v.name,
                    crate::volume_type(v.kind),
                    v.id
                )
            })
        }
        FsCommand::Examine { node, path } => {
            let info = examine(&node, &path)?;
            let s = &info.status;
            show(&node, &info, || {
                let promise = info
                    .promise_secs
                    .map_or("none".to_owned(), |secs| format!("{secs} s left"));
                let volume = info.volume.as_ref().map_or("(server unreachable)".to_owned(), |v| {
                    format!("{} ({})", v.name, crate::volume_type(v.kind))
                });
                format!(
                    "{}\n  fid {}  {:?}, {} bytes, data version {}\n  owner {}:{}  mode {:o}\n  cached here: {}  promise: {promise}\n  volume: {volume}\n",
                    path.display(),
                    s.fid,
                    s.kind,
                    s.size,
                    s.data_version,
                    s.uid,
                    s.gid,
                    s.mode & 0o7777,
                    if info.cached { "yes" } else { "no" },
                )
            })
        }
        FsCommand::ListQuota { node, path } => {
            let info = examine(&node, &path)?;
            let Some(v) = info.volume else {
                bail!(
                    "the fileserver is unreachable: the quota of {} is unknown",
                    path.display()
                );
            };
            show(&node, &v, || {
                let quota = if v.quota == 0 {
                    "no quota".to_owned()
                } else {
                    format!(
                        "quota {}, {:.0}% used",
                        bytesize::ByteSize(v.quota),
                        v.used as f64 * 100.0 / v.quota as f64
                    )
                };
                format!("volume {}: {} used, {quota}\n", v.name, bytesize::ByteSize(v.used))
            })
        }
        FsCommand::Flush { node, path } => {
            let rel = crate::in_mount(&node.cache, &path)?;
            let reply = ask(&node, &ControlRequest::Flush(rel))?;
            flushed(&node, &path.display().to_string(), reply)
        }
        FsCommand::FlushVolume { node, path } => {
            let rel = crate::in_mount(&node.cache, &path)?;
            let reply = ask(&node, &ControlRequest::FlushVolume(rel))?;
            flushed(&node, &format!("the volume of {}", path.display()), reply)
        }
        FsCommand::CheckServers { node } => {
            let ControlReply::Servers(servers) = ask(&node, &ControlRequest::CheckServers)? else {
                bail!("unexpected answer from the cache manager");
            };
            show(&node, &servers, || {
                servers
                    .iter()
                    .map(|s| format!("{}: {}\n", s.server, if s.up { "up" } else { "DOWN" }))
                    .collect()
            })
        }
        FsCommand::GetCacheParms { node } => {
            let ControlReply::Status(s) = ask(&node, &ControlRequest::Status)? else {
                bail!("unexpected answer from the cache manager");
            };
            let parms = serde_json::json!({ "used": s.cache_used, "limit": s.cache_limit, "files": s.files_cached });
            show(&node, &parms, || {
                format!(
                    "cache: {} of {} used, {} files\n",
                    bytesize::ByteSize(s.cache_used),
                    bytesize::ByteSize(s.cache_limit),
                    s.files_cached
                )
            })
        }
        FsCommand::SetCacheSize { node, size } => {
            let reply = ask(&node, &ControlRequest::SetCacheSize(size.as_u64()))?;
            let ControlReply::CacheSize { used, limit } = reply else {
                bail!("unexpected answer from the cache manager: {reply:?}");
            };
            let parms = serde_json::json!({ "used": used, "limit": limit });
            show(&node, &parms, || {
                format!(
                    "cache size set to {}; {} used\n",
                    bytesize::ByteSize(limit),
                    bytesize::ByteSize(used)
                )
            })
        }
    }
}
