//! `cellfs-vos host`, `user` and `group`: the cell's credentials and the
//! users and groups its directory ACLs name.

use crate::cli::{Format, GroupCommand, HostCommand, MemberCommand, UserCommand};
use crate::output::{table, utc};
use anyhow::{Context, bail};
use cellfs_protocol::acl::Role;
use cellfs_protocol::config::CellConfig;
use cellfs_protocol::transport::RpcClient;
use cellfs_protocol::{Reply, Request};
use std::path::Path;

/// Sends `req`, which changes something and is answered `Ok`.
async fn change(client: &RpcClient, req: Request, doing: &str) -> anyhow::Result<()> {
    match client.call(&req).await.with_context(|| format!("cannot {doing}"))? {
        Reply::Ok => Ok(()),
        other => bail!("unexpected reply to {}: {other:?}", req.op_name()),
    }
}

/// Sends `req` and returns its reply.
async fn ask(client: &RpcClient, req: Request) -> anyhow::Result<Reply> {
    let op = req.op_name();
    client.call(&req).await.with_context(|| format!("{op} failed"))
}

fn render<T: serde::Serialize>(
    items: &[T],
    format: Format,
    rows: impl Fn(&T) -> Vec<String>,
    header: &[&str],
) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(items)? + "\n",
        Format::Text => {
            let mut all = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
            all.extend(items.iter().map(rows));
            table(&all)
        }
    })
}

/// `host add/revoke/list`.
pub async fn host(client: &RpcClient, config: &CellConfig, action: HostCommand) -> anyhow::Result<String> {
    match action {
        HostCommand::Add { name, out, admin } => {
            if out.exists() {
                bail!("{} exists; the bundle goes into a new folder", out.display());
            }
            let role = if admin { Role::Admin } else { Role::Host };
            let (cert, key) = match ask(
                client,
                Request::AddHost {
                    name: name.clone(),
                    role,
                },
            )
            .await?
            {
                Reply::Credential { cert_pem, key_pem } => (cert_pem, key_pem),
                other => bail!("unexpected reply to add_host: {other:?}"),
            };
            write_bundle(&out, config, &cert, &key)?;
            Ok(format!(
                "issued a {role} credential to {name}; its bundle is in {} (cell.toml there)\n",
                out.display()
            ))
        }
        HostCommand::Revoke { name } => {
            change(
                client,
                Request::RevokeHost { name: name.clone() },
                &format!("revoke {name:?}"),
            )
            .await?;
            Ok(format!(
                "revoked the credentials of {name}; their connections are closed\n"
            ))
        }
        HostCommand::List { format } => {
            let Reply::Hosts(hosts) = ask(client, Request::ListHosts).await? else {
                bail!("unexpected reply to list_hosts");
            };
            render(
                &hosts,
                format,
                |h| {
                    vec![
                        h.name.clone(),
                        h.role.to_string(),
                        utc(h.issued),
                        h.revoked.map(utc).unwrap_or_else(|| "-".into()),
                        h.fingerprint.chars().take(16).collect(),
                    ]
                },
                &["NAME", "ROLE", "ISSUED", "REVOKED", "FINGERPRINT"],
            )
        }
    }
}

/// Writes a credential bundle: the cell CA, the credential and a
/// `cell.toml` reaching the same servers as `config`.
fn write_bundle(dir: &Path, config: &CellConfig, cert: &str, key: &str) -> anyhow::Result<()> {
    let ca = std::fs::read_to_string(&config.ca).with_context(|| format!("cannot read {}", config.ca.display()))?;
    cellfs_protocol::config::write_bundle(dir, &config.cell, &config.servers, &ca, cert, key)?;
    Ok(())
}

/// `user add/remove/list`.
pub async fn user(client: &RpcClient, action: UserCommand) -> anyhow::Result<String> {
    match action {
        UserCommand::Add { name, uid } => {
            change(
                client,
                Request::AddUser {
                    name: name.clone(),
                    uid,
                },
                &format!("add user {name:?}"),
            )
            .await?;
            Ok(format!("added user {name} (uid {uid})\n"))
        }
        UserCommand::Remove { name } => {
            change(
                client,
                Request::RemoveUser { name: name.clone() },
                &format!("remove user {name:?}"),
            )
            .await?;
            Ok(format!("removed user {name}\n"))
        }
        UserCommand::List { format } => {
            let Reply::Users(users) = ask(client, Request::ListUsers).await? else {
                bail!("unexpected reply to list_users");
            };
            render(
                &users,
                format,
                |u| vec![u.name.clone(), u.uid.to_string()],
                &["NAME", "UID"],
            )
        }
    }
}

/// `group add/remove/member add/remove/list`.
pub async fn group(client: &RpcClient, action: GroupCommand) -> anyhow::Result<String> {
    match action {
        GroupCommand::Add { name, gid } => {
            change(
                client,
                Request::AddGroup {
                    name: name.clone(),
                    gid,
                },
                &format!("add group {name:?}"),
            )
            .await?;
            Ok(format!("added group {name} (gid {gid})\n"))
        }
        GroupCommand::Remove { name } => {
            change(
                client,
                Request::RemoveGroup { name: name.clone() },
                &format!("remove group {name:?}"),
            )
            .await?;
            Ok(format!("removed group {name}\n"))
        }
        GroupCommand::Member { action } => match action {
            MemberCommand::Add { group, user } => {
                let req = Request::AddMember {
                    group: group.clone(),
                    user: user.clone(),
                };
                change(client, req, &format!("add {user:?} to {group:?}")).await?;
                Ok(format!("added {user} to {group}\n"))
            }
            MemberCommand::Remove { group, user } => {
                let req = Request::RemoveMember {
                    group: group.clone(),
                    user: user.clone(),
                };
                change(client, req, &format!("remove {user:?} from {group:?}")).await?;
                Ok(format!("removed {user} from {group}\n"))
            }
        },
        GroupCommand::List { format } => {
            let Reply::Groups(groups) = ask(client, Request::ListGroups).await? else {
                bail!("unexpected reply to list_groups");
            };
            let users = match ask(client, Request::ListUsers).await? {
                Reply::Users(u) => u,
                _ => Vec::new(),
            };
            let name = |uid: u32| {
                users
                    .iter()
                    .find(|u| u.uid == uid)
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| format!("uid:{uid}"))
            };
            render(
                &groups,
                format,
                |g| {
                    let members: Vec<String> = g.members.iter().map(|m| name(*m)).collect();
                    vec![g.name.clone(), g.gid.to_string(), members.join(",")]
                },
                &["NAME", "GID", "MEMBERS"],
            )
        }
    }
}
