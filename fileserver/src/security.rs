//! Who may do what: the credential a connection presented (its role and
//! whether it was revoked), the cell's users and groups, what each request
//! needs, and the rights an ACL gives a caller.
//!
//! The VLDB server keeps the state in its redb (`security` table) and pushes
//! it to the cell's other servers; every server checks every request itself.

use crate::error::{FsResult, rpc_err};
use crate::schema::{self, SECURITY};
use crate::store::Store;
use cellfs_protocol::acl::{
    ANYUSER, AUTHUSER, Acl, AclLine, Caller, GroupInfo, HostInfo, Principal, Rights, Role, UserInfo,
};
use cellfs_protocol::message::{LockOp, Request, SecurityState};
use cellfs_protocol::names::validate_name;
use cellfs_protocol::tls::Identity;
use cellfs_protocol::{ErrorCode, Fid};
use redb::ReadableDatabase;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

/// Key of the [`SecurityState`] in the `security` table.
const STATE_KEY: &str = "state";
/// Key of the issued credentials (`Vec<HostInfo>`) in the `security` table.
const HOSTS_KEY: &str = "hosts";

/// Who sent a request: the credential of its connection, and the process on
/// a web node it acts for (if it says).
#[derive(Debug, Clone)]
pub struct Who {
    /// The connection's verified credential.
    pub identity: std::sync::Arc<Identity>,
    /// The process the request is made for; `None`: anonymous.
    pub caller: Option<Caller>,
}

/// What a request needs of the credential that sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Any credential of the cell.
    Any,
    /// An admin credential (or a fileserver forwarding an admin's request).
    Admin,
    /// A fileserver of the cell.
    Server,
}

/// What `req` needs of its credential.
pub fn needs(req: &Request) -> Needs {
    match req {
        Request::CreateVolume { .. }
        | Request::RemoveVolume { .. }
        | Request::SetQuota { .. }
        | Request::MakeMount { .. }
        | Request::MoveVolume { .. }
        | Request::AddSite { .. }
        | Request::RemoveSite { .. }
        | Request::Release { .. }
        | Request::SyncVldb
        | Request::RenameVolume { .. }
        | Request::LockVolume { .. }
        | Request::UnlockVolume { .. }
        | Request::BackupVolume { .. }
        | Request::DumpVolume { .. }
        | Request::RestoreVolume { .. }
        | Request::AddHost { .. }
        | Request::RevokeHost { .. }
        | Request::AddUser { .. }
        | Request::RemoveUser { .. }
        | Request::AddGroup { .. }
        | Request::RemoveGroup { .. }
        | Request::AddMember { .. }
        | Request::RemoveMember { .. } => Needs::Admin,
        Request::RegisterServer { .. }
        | Request::InstallVolume { .. }
        | Request::PutSecurity { .. }
        | Request::GetSecurity => Needs::Server,
        _ => Needs::Any,
    }
}

/// Refuses `req` when `identity`'s role may not send it.
pub fn check_role(identity: &Identity, req: &Request) -> FsResult<()> {
    let ok = match needs(req) {
        Needs::Any => true,
        Needs::Admin => matches!(identity.role, Role::Admin | Role::Server),
        Needs::Server => identity.role == Role::Server,
    };
    if ok {
        return Ok(());
    }
    let wanted = if needs(req) == Needs::Server {
        "a fileserver's credential"
    } else {
        "an admin credential"
    };
    Err(rpc_err(
        ErrorCode::NotPermitted,
        format!(
            "permission denied: {} needs {wanted}; this connection uses the {} credential {:?}",
            req.op_name(),
            identity.role,
            identity.name
        ),
    ))
}

/// The rights a file request needs, on the ACL governing each FID (a
/// directory's own, a file's directory's). Status requests need none: a
/// node revalidates what it holds without acting for anyone.
pub fn file_rights(req: &Request) -> Vec<(Fid, Rights)> {
    match req {
        Request::Lookup { dir, .. } | Request::ReadDir { dir } | Request::GetAcl { dir } => {
            vec![(*dir, Rights::LOOKUP)]
        }
        Request::ReadLink { fid } => vec![(*fid, Rights::LOOKUP)],
        Request::FetchData { fid } => vec![(*fid, Rights::READ)],
        Request::FetchFiles { fids, .. } => fids.iter().map(|f| (*f, Rights::READ)).collect(),
        Request::StoreData { fid, .. } | Request::SetAttr { fid, .. } => vec![(*fid, Rights::WRITE)],
        Request::Create { dir, .. }
        | Request::CreateReserved { dir, .. }
        | Request::MakeDir { dir, .. }
        | Request::Symlink { dir, .. }
        | Request::MakeSpecial { dir, .. }
        | Request::Link { dir, .. }
        | Request::MakeMount { dir, .. } => vec![(*dir, Rights::INSERT)],
        Request::Remove { dir, .. } | Request::RemoveDir { dir, .. } => vec![(*dir, Rights::DELETE)],
        Request::Rename { from_dir, to_dir, .. } => vec![(*from_dir, Rights::DELETE), (*to_dir, Rights::INSERT)],
        Request::SetAcl { dir, .. } => vec![(*dir, Rights::ADMINISTER)],
        Request::Lock {
            fid,
            op: LockOp::Acquire(_) | LockOp::Test(_),
        } => vec![(*fid, Rights::LOCK)],
        _ => Vec::new(),
    }
}

/// The security state with lookups built for checks.
#[derive(Debug, Default)]
struct Index {
    state: SecurityState,
    users: HashMap<u32, String>,
    groups: HashMap<u32, (String, HashSet<u32>)>,
    revoked: HashSet<String>,
}

impl Index {
    fn new(state: SecurityState) -> Index {
        Index {
            users: state.users.iter().map(|u| (u.uid, u.name.clone())).collect(),
            groups: state
                .groups
                .iter()
                .map(|g| (g.gid, (g.name.clone(), g.members.iter().copied().collect())))
                .collect(),
            revoked: state.revoked.iter().cloned().collect(),
            state,
        }
    }

    fn matches(&self, caller: Option<&Caller>, p: Principal) -> bool {
        let Some(c) = caller else {
            return p == Principal::AnyUser;
        };
        match p {
            Principal::AnyUser => true,
            Principal::AuthUser => self.users.contains_key(&c.uid),
            Principal::User(uid) => uid == c.uid,
            Principal::Group(gid) => {
                c.gids.contains(&gid) || self.groups.get(&gid).is_some_and(|(_, m)| m.contains(&c.uid))
            }
        }
    }
}

/// A fileserver's view of the cell's security, and the connections it
/// admitted (so a revocation closes them).
#[derive(Debug, Default)]
pub struct Security {
    index: RwLock<Index>,
    sessions: Mutex<HashMap<u64, (String, quinn::Connection)>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

impl Security {
    /// Security with `state`.
    pub fn new(state: SecurityState) -> Security {
        Security {
            index: RwLock::new(Index::new(state)),
            sessions: Mutex::default(),
        }
    }

    /// Replaces the state (a change here, or one pushed by the VLDB server)
    /// and closes every admitted connection whose credential it revokes.
    pub fn replace(&self, state: SecurityState) {
        let index = Index::new(state);
        let revoked = index.revoked.clone();
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = index;
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for (fp, conn) in sessions.values() {
            if revoked.contains(fp) {
                tracing::info!(fingerprint = %fp, "closing the connection of a revoked credential");
                conn.close(quinn::VarInt::from_u32(REVOKED_CODE), b"credential revoked");
            }
        }
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> SecurityState {
        read(&self.index).state.clone()
    }

    /// Admits connection `client` made with `identity`, or refuses a revoked
    /// credential.
    pub fn admit(&self, client: u64, identity: &Identity, conn: &quinn::Connection) -> FsResult<()> {
        // Checked under the sessions lock so a revocation racing this
        // connection either sees it admitted or is seen here.
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if read(&self.index).revoked.contains(&identity.fingerprint) {
            return Err(rpc_err(
                ErrorCode::NotPermitted,
                format!("the credential {:?} was revoked", identity.name),
            ));
        }
        sessions.insert(client, (identity.fingerprint.clone(), conn.clone()));
        Ok(())
    }

    /// Forgets connection `client`.
    pub fn leave(&self, client: u64) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
    }

    /// Whether the credential with this fingerprint was revoked.
    pub fn is_revoked(&self, fingerprint: &str) -> bool {
        read(&self.index).revoked.contains(fingerprint)
    }

    /// The rights `acl` gives `caller`.
    pub fn rights(&self, acl: &Acl, caller: Option<&Caller>) -> Rights {
        let index = read(&self.index);
        acl.rights(|p| index.matches(caller, p))
    }

    /// The principal called `name`: a built-in, a user or group of the
    /// cell, or `uid:N` / `gid:N`.
    pub fn resolve(&self, name: &str) -> FsResult<Principal> {
        let bad = |why: String| rpc_err(ErrorCode::Invalid, why);
        match name {
            ANYUSER => return Ok(Principal::AnyUser),
            AUTHUSER => return Ok(Principal::AuthUser),
            _ => {}
        }
        let number = |s: &str| s.parse::<u32>().map_err(|_| bad(format!("bad id in {name:?}")));
        if let Some(n) = name.strip_prefix("uid:") {
            return Ok(Principal::User(number(n)?));
        }
        if let Some(n) = name.strip_prefix("gid:") {
            return Ok(Principal::Group(number(n)?));
        }
        let index = read(&self.index);
        if let Some(u) = index.state.users.iter().find(|u| u.name == name) {
            return Ok(Principal::User(u.uid));
        }
        if let Some(g) = index.state.groups.iter().find(|g| g.name == name) {
            return Ok(Principal::Group(g.gid));
        }
        Err(rpc_err(
            ErrorCode::NotFound,
            format!("no user or group called {name:?} in the cell (add one with `cellfs-vos user add` or `group add`)"),
        ))
    }

    /// The name `listacl` shows for `p`.
    pub fn name_of(&self, p: Principal) -> String {
        let index = read(&self.index);
        match p {
            Principal::AnyUser => ANYUSER.to_owned(),
            Principal::AuthUser => AUTHUSER.to_owned(),
            Principal::User(uid) => index.users.get(&uid).cloned().unwrap_or_else(|| format!("uid:{uid}")),
            Principal::Group(gid) => index
                .groups
                .get(&gid)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("gid:{gid}")),
        }
    }

    /// `acl` with names resolved, positive entries first.
    pub fn lines(&self, acl: &Acl) -> Vec<AclLine> {
        let line = |negative: bool| {
            move |e: &cellfs_protocol::acl::AclEntry| AclLine {
                name: self.name_of(e.who),
                rights: e.rights.to_string(),
                negative,
            }
        };
        acl.positive
            .iter()
            .map(line(false))
            .chain(acl.negative.iter().map(line(true)))
            .collect()
    }
}

/// Application close code of a connection whose credential was revoked.
pub const REVOKED_CODE: u32 = 403;

fn check_principal_name(name: &str) -> FsResult<()> {
    validate_name(name)?;
    if name.starts_with("system:") || name.starts_with("uid:") || name.starts_with("gid:") {
        return Err(rpc_err(
            ErrorCode::Invalid,
            format!("{name:?}: names starting with system:, uid: or gid: are reserved"),
        ));
    }
    Ok(())
}

/// Applies an admin request about users and groups to `state`.
pub fn apply(state: &mut SecurityState, req: &Request) -> FsResult<()> {
    let exists = |what: &str| rpc_err(ErrorCode::Exists, what.to_owned());
    let user_uid = |state: &SecurityState, name: &str| {
        state
            .users
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.uid)
            .ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no user called {name:?}")))
    };
    let group = |state: &mut SecurityState, name: &str| {
        let i = state.groups.iter().position(|g| g.name == name);
        i.ok_or_else(|| rpc_err(ErrorCode::NotFound, format!("no group called {name:?}")))
    };
    match req {
        Request::AddUser { name, uid } => {
            check_principal_name(name)?;
            if state.users.iter().any(|u| &u.name == name || u.uid == *uid) {
                return Err(exists(&format!("a user called {name:?} or with uid {uid} exists")));
            }
            if state.groups.iter().any(|g| &g.name == name) {
                return Err(exists(&format!("a group is called {name:?}")));
            }
            state.users.push(UserInfo {
                name: name.clone(),
                uid: *uid,
            });
            state.users.sort_by_key(|u| u.uid);
        }
        Request::RemoveUser { name } => {
            let uid = user_uid(state, name)?;
            state.users.retain(|u| u.uid != uid);
            for g in &mut state.groups {
                g.members.retain(|m| *m != uid);
            }
        }
        Request::AddGroup { name, gid } => {
            check_principal_name(name)?;
            if state.groups.iter().any(|g| &g.name == name || g.gid == *gid) {
                return Err(exists(&format!("a group called {name:?} or with gid {gid} exists")));
            }
            if state.users.iter().any(|u| &u.name == name) {
                return Err(exists(&format!("a user is called {name:?}")));
            }
            state.groups.push(GroupInfo {
                name: name.clone(),
                gid: *gid,
                members: Vec::new(),
            });
            state.groups.sort_by_key(|g| g.gid);
        }
        Request::RemoveGroup { name } => {
            let i = group(state, name)?;
            state.groups.remove(i);
        }
        Request::AddMember { group: g, user } => {
            let uid = user_uid(state, user)?;
            let i = group(state, g)?;
            let members = &mut state.groups[i].members;
            if members.contains(&uid) {
                return Err(exists(&format!("{user:?} is a member of {g:?} already")));
            }
            members.push(uid);
            members.sort_unstable();
        }
        Request::RemoveMember { group: g, user } => {
            let uid = user_uid(state, user)?;
            let i = group(state, g)?;
            let members = &mut state.groups[i].members;
            if !members.contains(&uid) {
                return Err(rpc_err(
                    ErrorCode::NotFound,
                    format!("{user:?} is not a member of {g:?}"),
                ));
            }
            members.retain(|m| *m != uid);
        }
        other => {
            return Err(rpc_err(
                ErrorCode::BadRequest,
                format!("{} does not change users or groups", other.op_name()),
            ));
        }
    }
    Ok(())
}

impl Store {
    fn security_value<T: serde::de::DeserializeOwned + Default>(&self, key: &str) -> FsResult<T> {
        let txn = self.vldb().begin_read()?;
        let table = match txn.open_table(SECURITY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(T::default()),
            Err(e) => return Err(e.into()),
        };
        let value = table.get(key)?.map(|v| schema::decode(v.value())).transpose()?;
        Ok(value.unwrap_or_default())
    }

    fn put_security_value<T: serde::Serialize>(&self, key: &str, value: &T) -> FsResult<()> {
        let txn = self.vldb().begin_write()?;
        {
            let mut table = txn.open_table(SECURITY)?;
            table.insert(key, schema::encode(value)?.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The saved security state (empty in a new cell).
    pub fn security_state(&self) -> FsResult<SecurityState> {
        self.security_value(STATE_KEY)
    }

    /// Saves the security state.
    pub fn set_security_state(&self, state: &SecurityState) -> FsResult<()> {
        self.put_security_value(STATE_KEY, state)
    }

    /// The credentials the cell issued.
    pub fn hosts(&self) -> FsResult<Vec<HostInfo>> {
        self.security_value(HOSTS_KEY)
    }

    /// Saves the list of issued credentials.
    pub fn set_hosts(&self, hosts: &[HostInfo]) -> FsResult<()> {
        self.put_security_value(HOSTS_KEY, &hosts.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gids: &[u32]) -> Caller {
        Caller {
            uid,
            gids: gids.to_vec(),
        }
    }

    #[test]
    fn users_groups_and_rights() {
        let mut st = SecurityState::default();
        apply(
            &mut st,
            &Request::AddUser {
                name: "alice".into(),
                uid: 1001,
            },
        )
        .unwrap();
        apply(
            &mut st,
            &Request::AddUser {
                name: "bob".into(),
                uid: 1002,
            },
        )
        .unwrap();
        assert!(
            apply(
                &mut st,
                &Request::AddUser {
                    name: "carol".into(),
                    uid: 1001
                }
            )
            .is_err()
        );
        assert!(
            apply(
                &mut st,
                &Request::AddUser {
                    name: "system:x".into(),
                    uid: 5
                }
            )
            .is_err()
        );
        assert!(
            apply(
                &mut st,
                &Request::AddUser {
                    name: "a/b".into(),
                    uid: 5
                }
            )
            .is_err()
        );
        apply(
            &mut st,
            &Request::AddGroup {
                name: "site1".into(),
                gid: 2000,
            },
        )
        .unwrap();
        apply(
            &mut st,
            &Request::AddMember {
                group: "site1".into(),
                user: "alice".into(),
            },
        )
        .unwrap();
        assert!(
            apply(
                &mut st,
                &Request::AddMember {
                    group: "site1".into(),
                    user: "alice".into()
                }
            )
            .is_err()
        );
        assert!(
            apply(
                &mut st,
                &Request::AddMember {
                    group: "nope".into(),
                    user: "bob".into()
                }
            )
            .is_err()
        );
        let sec = Security::new(st.clone());
        let mut acl = Acl::default();
        acl.set(sec.resolve("site1").unwrap(), Rights::parse("rl").unwrap(), false)
            .unwrap();
        acl.set(sec.resolve(AUTHUSER).unwrap(), Rights::LOOKUP, false).unwrap();
        acl.set(sec.resolve("uid:33").unwrap(), Rights::parse("rlw").unwrap(), false)
            .unwrap();
        assert_eq!(sec.rights(&acl, Some(&caller(1001, &[100]))).to_string(), "rl");
        assert_eq!(sec.rights(&acl, Some(&caller(1002, &[100]))).to_string(), "l");
        // A gid the node reported counts like a membership.
        assert_eq!(sec.rights(&acl, Some(&caller(4000, &[2000]))).to_string(), "rl");
        assert_eq!(sec.rights(&acl, Some(&caller(33, &[33]))).to_string(), "rlw");
        assert_eq!(sec.rights(&acl, None), Rights::NONE);
        assert_eq!(sec.name_of(Principal::Group(2000)), "site1");
        assert_eq!(sec.name_of(Principal::User(7)), "uid:7");
        assert!(sec.resolve("nobody").is_err());
        apply(&mut st, &Request::RemoveUser { name: "alice".into() }).unwrap();
        assert!(st.groups[0].members.is_empty());
        sec.replace(st);
        assert_eq!(sec.rights(&acl, Some(&caller(1001, &[100]))), Rights::NONE);
    }

    #[test]
    fn roles_gate_requests() {
        let id = |role| Identity {
            name: "web1".into(),
            role,
            fingerprint: "00".into(),
        };
        let create = Request::CreateVolume {
            name: "v".into(),
            quota: 0,
            server: None,
        };
        let err = check_role(&id(Role::Host), &create).unwrap_err().to_string();
        assert!(
            err.contains("permission denied") && err.contains("create_volume"),
            "{err}"
        );
        check_role(&id(Role::Admin), &create).unwrap();
        check_role(&id(Role::Server), &create).unwrap();
        assert!(check_role(&id(Role::Admin), &Request::GetSecurity).is_err());
        check_role(&id(Role::Host), &Request::ListVolumes).unwrap();
    }
}
