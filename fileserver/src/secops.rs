//! Handlers of the security requests: directory ACLs, issued credentials
//! (`host add/revoke/list`), and the cell's users and groups, which the
//! VLDB server keeps and pushes to the cell's other servers.

use crate::callbacks::ClientId;
use crate::config::{CA_KEY, CA_PEM, host_info};
use crate::error::{FsResult, rpc_err};
use crate::rpc::{Context, blocking};
use crate::security::Who;
use crate::volume::Governed;
use cellfs_protocol::acl::{Acl, AclChange, Rights, Role};
use cellfs_protocol::message::{Reply, Request, SecurityState};
use cellfs_protocol::names::validate_name;
use cellfs_protocol::tls::{CellAuthority, Credential};
use cellfs_protocol::{ErrorCode, Fid, Status, Timestamp};
use std::time::Duration;

/// How often a server other than the VLDB server asks it for the security
/// state (pushes carry changes at once; this mends a missed push).
pub const SECURITY_PULL_INTERVAL: Duration = Duration::from_secs(10);

impl Context {
    /// Refuses `req` unless `who` may send it: its credential's role, and
    /// for file requests the rights the governing ACLs give its caller.
    /// Returns the caller's rights under the first ACL checked (for a
    /// `ReadDir`, the directory's own).
    pub(crate) async fn authorize(&self, who: &Who, req: &Request) -> FsResult<Option<Rights>> {
        crate::security::check_role(&who.identity, req)?;
        let wanted = crate::security::file_rights(req);
        let Some(first) = wanted.first() else {
            return Ok(None);
        };
        if wanted.iter().any(|(f, _)| f.volume != first.0.volume) {
            // Refused as its handler would refuse it.
            let code = if matches!(req, Request::FetchFiles { .. }) {
                ErrorCode::BadRequest
            } else {
                ErrorCode::CrossVolume
            };
            return Err(rpc_err(code, format!("{} across volumes", req.op_name())));
        }
        let vol = self.store.volume(first.0.volume)?;
        // A create of a name that exists opens that file (O_CREAT without
        // O_EXCL): it needs the right to write it, not to insert.
        let existing = match req {
            Request::Create {
                dir,
                name,
                exclusive: false,
                ..
            } => Some((*dir, name.clone())),
            _ => None,
        };
        // A file being made under a FID set aside is governed by its
        // folder and owned by its creator. Only a store reaches here before
        // the create is answered (`reserved::until`).
        let making = match req {
            Request::StoreData { fid, .. } if self.reserved.any() => self.reserved.creating(*fid),
            _ => None,
        };
        let (wanted, governed) = blocking(move || {
            let wanted = match existing.and_then(|(dir, name)| vol.lookup(dir, &name).ok()) {
                Some(st) => vec![(st.fid, Rights::WRITE)],
                None => wanted,
            };
            if let Some((dir, uid)) = making {
                let mut governed = vol.governing_acls(&[dir])?;
                for g in &mut governed {
                    g.owner = uid;
                }
                return Ok((wanted, governed));
            }
            let fids: Vec<Fid> = wanted.iter().map(|(f, _)| *f).collect();
            let governed = vol.governing_acls(&fids)?;
            Ok((wanted, governed))
        })
        .await?;
        let mut granted = None;
        for ((fid, need), g) in wanted.iter().zip(governed) {
            let have = self.security.rights(&g.acl, who.caller.as_ref());
            granted.get_or_insert(have);
            let owner = who.caller.as_ref().is_some_and(|c| c.uid == g.owner);
            if !have.allow(*need, owner) {
                let who = match &who.caller {
                    Some(c) => format!("uid {}", c.uid),
                    None => "an anonymous caller".to_owned(),
                };
                return Err(rpc_err(
                    ErrorCode::AccessDenied,
                    format!(
                        "{} on {fid}: {who} lacks the {need} right (has \"{have}\")",
                        req.op_name()
                    ),
                ));
            }
        }
        Ok(granted)
    }

    /// `SetAcl`: applies `changes` to the ACL of `dir` (or to an empty one
    /// with `clear`); nodes holding promises on it drop their cached rights.
    ///
    /// A change that would take the `a` right from the caller making it is
    /// refused: nothing outside an ACL may change it (root is a uid like
    /// any other), so it could leave the folder's ACL fixed for good.
    pub(crate) async fn set_acl(
        &self,
        client: ClientId,
        who: &Who,
        dir: Fid,
        changes: Vec<AclChange>,
        clear: bool,
    ) -> FsResult<Reply> {
        let vol = self.store.volume(dir.volume)?;
        let v = vol.clone();
        let mut acl = if clear {
            Acl::default()
        } else {
            blocking(move || v.acl(dir)).await?
        };
        for c in &changes {
            let who = self.security.resolve(&c.name)?;
            let rights = Rights::parse(&c.rights).map_err(|e| rpc_err(ErrorCode::Invalid, e))?;
            acl.set(who, rights, c.negative)
                .map_err(|e| rpc_err(ErrorCode::Invalid, e))?;
        }
        if let Some(caller) = &who.caller
            && !self.security.rights(&acl, Some(caller)).contains(Rights::ADMINISTER)
        {
            let uid = caller.uid;
            return Err(rpc_err(
                ErrorCode::Invalid,
                format!(
                    "this ACL would take the a (administer) right from uid {uid}, who changes it, and might leave \
                     nobody able to change it again: keep an entry that gives it (for example uid:{uid} all)"
                ),
            ));
        }
        let lines = self.security.lines(&acl);
        self.change(vol, client, move |v| v.set_acl(dir, acl), |s: &Status| vec![s.fid])
            .await?;
        Ok(Reply::Acl(lines))
    }

    /// `GetAcl`: the ACL of `dir` with names.
    pub(crate) async fn get_acl(&self, dir: Fid) -> FsResult<Reply> {
        let vol = self.store.volume(dir.volume)?;
        let acl = blocking(move || vol.acl(dir)).await?;
        Ok(Reply::Acl(self.security.lines(&acl)))
    }

    /// `GetRights`: what `who`'s caller may do under the ACL governing `fid`.
    /// The caller gets a promise on the governing directory: a change of
    /// its ACL breaks it, so the node drops the rights it cached.
    pub(crate) async fn get_rights(&self, client: ClientId, who: &Who, fid: Fid) -> FsResult<Reply> {
        let vol = self.store.volume(fid.volume)?;
        let governing = |a: &Vec<Governed>| a.iter().map(|g| g.dir).collect();
        let acls = self
            .read(vol, client, move |v| v.governing_acls(&[fid]), governing)
            .await?;
        let acl = acls.into_iter().next().map(|g| g.acl).unwrap_or_default();
        Ok(Reply::Rights(self.security.rights(&acl, who.caller.as_ref())))
    }

    fn only_on_vldb_server(&self, op: &str) -> FsResult<()> {
        match &self.config.vldb {
            None => Ok(()),
            Some(first) => Err(rpc_err(
                ErrorCode::NotPermitted,
                format!("{op} is asked of the cell's first server ({first}), which keeps the cell's security"),
            )),
        }
    }

    /// `AddHost`: issues a credential with the cell CA and records it.
    pub(crate) async fn add_host(&self, name: String, role: Role) -> FsResult<Reply> {
        self.only_on_vldb_server("host add")?;
        validate_name(&name)?;
        let store = self.store.clone();
        let cell = self.config.cell.clone();
        let credential = blocking(move || {
            let mut hosts = store.hosts()?;
            if hosts.iter().any(|h| h.name == name && h.revoked.is_none()) {
                return Err(rpc_err(
                    ErrorCode::Exists,
                    format!("a credential named {name:?} is in use; revoke it first or pick another name"),
                ));
            }
            let read = |f: &str| std::fs::read_to_string(store.root().join(f));
            let ca = Credential {
                cert_pem: read(CA_PEM)?,
                key_pem: read(CA_KEY).map_err(|e| {
                    rpc_err(
                        ErrorCode::Io,
                        format!("this server cannot issue credentials ({CA_KEY}: {e})"),
                    )
                })?,
            };
            let authority = CellAuthority::load(&cell, ca).map_err(|e| rpc_err(ErrorCode::Io, e.to_string()))?;
            let credential = authority
                .issue_client(&name, role)
                .map_err(|e| rpc_err(ErrorCode::Io, e.to_string()))?;
            hosts.push(host_info(&name, role, &credential).map_err(|e| rpc_err(ErrorCode::Io, e.to_string()))?);
            store.set_hosts(&hosts)?;
            tracing::info!(%name, %role, "credential issued");
            Ok(credential)
        })
        .await?;
        Ok(Reply::Credential {
            cert_pem: credential.cert_pem,
            key_pem: credential.key_pem,
        })
    }

    /// `RevokeHost`: every live credential named `name` stops counting; its
    /// connections here and on the cell's other servers are closed.
    pub(crate) async fn revoke_host(&self, name: String) -> FsResult<Reply> {
        self.only_on_vldb_server("host revoke")?;
        let store = self.store.clone();
        let mut state = self.security.snapshot();
        let state = blocking(move || {
            let mut hosts = store.hosts()?;
            let mut found = false;
            for h in hosts.iter_mut().filter(|h| h.name == name && h.revoked.is_none()) {
                h.revoked = Some(Timestamp::now());
                state.revoked.push(h.fingerprint.clone());
                found = true;
            }
            if !found {
                return Err(rpc_err(
                    ErrorCode::NotFound,
                    format!("no live credential named {name:?} (see `cellfs-vos host list`)"),
                ));
            }
            state.revoked.sort();
            state.revoked.dedup();
            store.set_security_state(&state)?;
            store.set_hosts(&hosts)?;
            tracing::info!(%name, "credential revoked");
            Ok(state)
        })
        .await?;
        self.install_security(state).await;
        Ok(Reply::Ok)
    }

    /// `ListHosts`: the credentials the cell issued.
    pub(crate) async fn list_hosts(&self) -> FsResult<Reply> {
        self.only_on_vldb_server("host list")?;
        let store = self.store.clone();
        Ok(Reply::Hosts(blocking(move || store.hosts()).await?))
    }

    /// User and group changes.
    pub(crate) async fn change_principals(&self, req: Request) -> FsResult<Reply> {
        self.only_on_vldb_server(req.op_name())?;
        let mut state = self.security.snapshot();
        crate::security::apply(&mut state, &req)?;
        let store = self.store.clone();
        let saved = state.clone();
        blocking(move || store.set_security_state(&saved)).await?;
        self.install_security(state).await;
        Ok(Reply::Ok)
    }

    /// `PutSecurity`: the VLDB server's state replaces ours.
    pub(crate) async fn put_security(&self, state: SecurityState) -> FsResult<Reply> {
        if self.config.vldb.is_none() {
            return Err(rpc_err(
                ErrorCode::NotPermitted,
                "the VLDB server keeps the cell's security; it takes no pushed state",
            ));
        }
        self.adopt_security(state).await?;
        Ok(Reply::Ok)
    }

    /// Saves and uses `state` (pushed or pulled from the VLDB server).
    pub async fn adopt_security(&self, state: SecurityState) -> FsResult<()> {
        if state == self.security.snapshot() {
            return Ok(());
        }
        let store = self.store.clone();
        let saved = state.clone();
        blocking(move || store.set_security_state(&saved)).await?;
        self.security.replace(state);
        Ok(())
    }

    /// Uses `state` here and pushes it to the cell's other servers (a server
    /// that misses it gets it at its next pull).
    async fn install_security(&self, state: SecurityState) {
        self.security.replace(state.clone());
        let servers = match self.store.servers() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cell's servers to push security");
                return;
            }
        };
        for (_, addr) in servers {
            if crate::vldb::same_server(&addr, &self.server_addr)
                || crate::vldb::same_server(&addr, &self.config.listen)
            {
                continue;
            }
            let req = Request::PutSecurity { state: state.clone() };
            if let Err(e) = self.peers.call(&addr, &req).await {
                tracing::warn!(server = %addr, error = %e, "security change not pushed; it will pull it");
            }
        }
    }

    /// On a server other than the VLDB server: asks the VLDB server for the
    /// security state and adopts it.
    pub async fn pull_security(&self) -> FsResult<()> {
        let Some(first) = self.config.vldb.clone() else {
            return Ok(());
        };
        match self.peers.call(&first, &Request::GetSecurity).await? {
            Reply::Security(state) => self.adopt_security(state).await,
            _ => Err(rpc_err(ErrorCode::BadRequest, "unexpected reply to GetSecurity")),
        }
    }
}
