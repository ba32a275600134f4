//! Carrying out `cellfs-vos` commands against the cell's fileserver.

use crate::cli::{Cli, Command};
use crate::{output, size, transfer, walk};
use anyhow::{Context, anyhow, bail};
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::transport::{Connector, RpcClient};
use cellfs_protocol::{Reply, Request, VolumeInfo};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// How long connecting to the fileserver may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one command may take once connected.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long closing the connection may take before the process exits.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a dump or restore may take once connected.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli
        .config
        .ok_or_else(|| anyhow!("no cell config: pass --config CELL.TOML or set CELLFS_CONFIG"))?;
    let config = CellConfig::load(&config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Dumps and restores move whole volumes; a dead server still ends them
    // through the connection's idle timeout.
    let limit = match cli.command {
        Command::Dump { .. } | Command::Restore { .. } | Command::Move { .. } | Command::Release { .. } => {
            TRANSFER_TIMEOUT
        }
        _ => COMMAND_TIMEOUT,
    };
    let text = runtime.block_on(async {
        let (connector, client) = connect(&config, &config_path).await?;
        let result = tokio::time::timeout(limit, execute(&client, &config, cli.command)).await;
        client.close();
        connector.wait_idle(CLOSE_TIMEOUT).await;
        result.map_err(|_| anyhow!("no answer from the fileserver within {limit:?}"))?
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).context("cannot write to stdout")?;
    stdout.flush().context("cannot write to stdout")
}

/// Renders an error and its causes on one line, skipping a cause whose text
/// the message already holds (many errors print their source themselves).
pub fn render_error(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn connect(config: &CellConfig, path: &Path) -> anyhow::Result<(Connector, RpcClient)> {
    let connector = Connector::from_config(config)
        .with_context(|| format!("cannot set up a connection from {}", path.display()))?;
    let server = connector.addr();
    let client = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect())
        .await
        .map_err(|_| anyhow!("fileserver {server} did not answer within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("cannot connect to fileserver {server} of cell {}", config.cell))?;
    Ok((connector, client))
}

/// Sends an admin request answered with `Reply::Volume`; `doing` names the
/// operation in errors ("rename volume \"x\"").
async fn call_volume(client: &RpcClient, req: Request, doing: &str) -> anyhow::Result<VolumeInfo> {
    let op = req.op_name();
    match client.call(&req).await.with_context(|| format!("cannot {doing}"))? {
        Reply::Volume(v) => Ok(v),
        other => bail!("unexpected reply to {op}: {other:?}"),
    }
}

/// Executes `command` and returns what to print.
async fn execute(client: &RpcClient, config: &CellConfig, command: Command) -> anyhow::Result<String> {
    match command {
        Command::Generate { what } => Ok(crate::docs::text(what)),
        Command::Host { action } => crate::principals::host(client, config, action).await,
        Command::User { action } => crate::principals::user(client, action).await,
        Command::Group { action } => crate::principals::group(client, action).await,
        Command::Create { name, quota, server } => {
            let req = Request::CreateVolume {
                name: name.clone(),
                quota,
                server,
            };
            let reply = client
                .call(&req)
                .await
                .with_context(|| format!("cannot create volume {name:?}"))?;
            let created = match reply {
                Reply::Volume(v) => format!("created volume {} (id {})\n", v.name, v.id),
                Reply::Ok => format!("created volume {name}\n"),
                other => bail!("unexpected reply to CreateVolume: {other:?}"),
            };
            Ok(created)
        }
        Command::List { format, server } => {
            let mut list = list_volumes(client).await?;
            if let Some(server) = server {
                let named =
                    cellfs_protocol::transport::resolve(&server).with_context(|| format!("--server {server}"))?;
                list.retain(|v| cellfs_protocol::transport::resolve(&v.server).is_ok_and(|a| a == named));
            }
            output::volumes(&list, format)
        }
        Command::Move { name, to } => {
            let started = std::time::Instant::now();
            let req = Request::MoveVolume {
                name: name.clone(),
                to: to.clone(),
            };
            let v = call_volume(client, req, &format!("move volume {name:?} to {to}")).await?;
            Ok(format!(
                "moved volume {name} (id {}, {} files) to {} in {:.0?}\n",
                v.id,
                v.files,
                v.server,
                started.elapsed()
            ))
        }
        Command::ListVldb { format } => output::vldb(&list_volumes(client).await?, format),
        Command::SyncVldb => match client.call(&Request::SyncVldb).await.context("cannot sync the VLDB")? {
            Reply::Report(lines) => Ok(lines.into_iter().map(|l| l + "\n").collect()),
            other => bail!("unexpected reply to SyncVldb: {other:?}"),
        },
        Command::Examine { name, format } => {
            let req = Request::ExamineVolume { name: name.clone() };
            let v = call_volume(client, req, &format!("examine volume {name:?}")).await?;
            output::volume(&v, format)
        }
        Command::Remove { name } => {
            client
                .call(&Request::RemoveVolume { name: name.clone() })
                .await
                .with_context(|| format!("cannot remove volume {name:?}"))?;
            Ok(format!("removed volume {name}\n"))
        }
        Command::SetQuota { name, quota } => {
            client
                .call(&Request::SetQuota {
                    name: name.clone(),
                    quota,
                })
                .await
                .with_context(|| format!("cannot set the quota of volume {name:?}"))?;
            Ok(format!("volume {name}: quota {}\n", size::format_quota(quota)))
        }
        Command::MkMount { path, name, rw } => {
            walk::make_mount(client, &path, &name, rw).await?;
            let kind = if rw { "read-write mount point" } else { "mount point" };
            Ok(format!("{kind} {path} shows volume {name}\n"))
        }
        Command::AddSite { name, server } => {
            let req = Request::AddSite {
                name: name.clone(),
                server: server.clone(),
            };
            call_volume(client, req, &format!("add a site for volume {name:?}")).await?;
            Ok(format!(
                "added read-only site {server} for volume {name}; `release {name}` fills it\n"
            ))
        }
        Command::RemSite { name, server } => {
            let req = Request::RemoveSite {
                name: name.clone(),
                server: server.clone(),
            };
            call_volume(client, req, &format!("remove a site of volume {name:?}")).await?;
            Ok(format!("removed read-only site {server} of volume {name}\n"))
        }
        Command::Release { name } => {
            let started = std::time::Instant::now();
            let req = Request::Release { name: name.clone() };
            let v = call_volume(client, req, &format!("release volume {name:?}")).await?;
            Ok(format!(
                "released volume {name} to {} ({} site(s), {} files) in {:.0?}\n",
                v.name,
                v.sites.len(),
                v.files,
                started.elapsed()
            ))
        }
        Command::Rename { name, new_name } => {
            let req = Request::RenameVolume {
                name: name.clone(),
                new_name: new_name.clone(),
            };
            let v = call_volume(client, req, &format!("rename volume {name:?}")).await?;
            Ok(format!(
                "renamed volume {name} to {} (id {}); mount points naming {name} must be made again\n",
                v.name, v.id
            ))
        }
        Command::Lock { name } => {
            let req = Request::LockVolume {
                name: name.clone(),
                holder: lock_holder(),
            };
            let v = call_volume(client, req, &format!("lock volume {name:?}")).await?;
            let holder = v.lock.map(|l| l.holder).unwrap_or_default();
            Ok(format!("locked volume {name} for {holder}\n"))
        }
        Command::Unlock { name } => {
            client
                .call(&Request::UnlockVolume { name: name.clone() })
                .await
                .with_context(|| format!("cannot unlock volume {name:?}"))?;
            Ok(format!("unlocked volume {name}\n"))
        }
        Command::Backup { name } => {
            let started = std::time::Instant::now();
            let req = Request::BackupVolume { name: name.clone() };
            let v = call_volume(client, req, &format!("back up volume {name:?}")).await?;
            Ok(format!(
                "made backup clone {} (id {}) of {name}: {} files in {:.0?}\n",
                v.name,
                v.id,
                v.files,
                started.elapsed()
            ))
        }
        Command::Dump { name, file, since } => transfer::dump(client, &name, file.as_deref(), since).await,
        Command::Restore {
            name,
            file,
            overwrite,
            server,
        } => transfer::restore(client, &name, &file, overwrite, server.as_deref()).await,
    }
}

async fn list_volumes(client: &RpcClient) -> anyhow::Result<Vec<VolumeInfo>> {
    match client
        .call(&Request::ListVolumes)
        .await
        .context("cannot list volumes")?
    {
        Reply::Volumes(v) => Ok(v),
        other => bail!("unexpected reply to ListVolumes: {other:?}"),
    }
}

/// Who takes a lock: `user@host` of the caller.
fn lock_holder() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_render_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io)
            .context("cannot read x: no such file")
            .context("loading config");
        assert_eq!(render_error(&err), "loading config: cannot read x: no such file");
        let err = anyhow!("inner").context("outer");
        assert_eq!(render_error(&err), "outer: inner");
    }
}
