//! AFS-style access control: the rights a directory's ACL grants, who a
//! request acts for (`Caller`), and the cell's users and groups (`pts`).
//!
//! A directory's ACL lists positive and negative entries for users, groups
//! and the built-ins `system:anyuser` (everyone, also unauthenticated) and
//! `system:authuser` (every user the cell knows). A caller's rights are the
//! union of the positive entries that match it minus the union of the
//! negative ones. Files are governed by the ACL of their directory.

use serde::{Deserialize, Serialize};

/// Most entries an ACL holds (positive and negative each), as in AFS.
pub const MAX_ACL_ENTRIES: usize = 20;

/// Most group ids one request may carry.
pub const MAX_CALLER_GIDS: usize = 64;

/// Name of the built-in that matches every caller.
pub const ANYUSER: &str = "system:anyuser";

/// Name of the built-in that matches every caller who is a user of the cell.
pub const AUTHUSER: &str = "system:authuser";

/// A set of rights, one bit per letter of `rlidwka`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rights(pub u8);

impl Rights {
    /// `r`: read the contents of files.
    pub const READ: Rights = Rights(1);
    /// `l`: look names up and list the directory.
    pub const LOOKUP: Rights = Rights(2);
    /// `i`: add entries (create, mkdir, symlink, link, rename into).
    pub const INSERT: Rights = Rights(4);
    /// `d`: remove entries (unlink, rmdir, rename out of).
    pub const DELETE: Rights = Rights(8);
    /// `w`: change the contents and status of files.
    pub const WRITE: Rights = Rights(16);
    /// `k`: take locks on files.
    pub const LOCK: Rights = Rights(32);
    /// `a`: change the ACL.
    pub const ADMINISTER: Rights = Rights(64);
    /// Every right.
    pub const ALL: Rights = Rights(127);
    /// No right.
    pub const NONE: Rights = Rights(0);

    const LETTERS: [(char, Rights); 7] = [
        ('r', Rights::READ),
        ('l', Rights::LOOKUP),
        ('i', Rights::INSERT),
        ('d', Rights::DELETE),
        ('w', Rights::WRITE),
        ('k', Rights::LOCK),
        ('a', Rights::ADMINISTER),
    ];

    /// Whether these rights allow `need` on a file owned by the caller when
    /// `owner` (as in AFS: the owner of a file may write it with `i` alone,
    /// so a file made in an insert-only drop box can be filled).
    pub fn allow(self, need: Rights, owner: bool) -> bool {
        self.contains(need) || (owner && need == Rights::WRITE && self.contains(Rights::INSERT))
    }

    /// Whether every right of `other` is in `self`.
    pub fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// The rights in either.
    pub fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// The rights of `self` not in `other`.
    pub fn minus(self, other: Rights) -> Rights {
        Rights(self.0 & !other.0)
    }

    /// Parses `rlidwka` letters, or the AFS words `read` (rl), `write`
    /// (rlidwk), `all` (rlidwka) and `none`.
    pub fn parse(s: &str) -> Result<Rights, String> {
        match s {
            "read" => return Ok(Rights::READ.union(Rights::LOOKUP)),
            "write" => return Ok(Rights(Rights::ALL.0 & !Rights::ADMINISTER.0)),
            "all" => return Ok(Rights::ALL),
            "none" => return Ok(Rights::NONE),
            _ => {}
        }
        let mut out = Rights::NONE;
        for c in s.chars() {
            let Some((_, r)) = Self::LETTERS.iter().find(|(l, _)| *l == c) else {
                return Err(format!(
                    "bad rights {s:?}: use letters of rlidwka, or read, write, all, none"
                ));
            };
            out = out.union(*r);
        }
        Ok(out)
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (c, r) in Self::LETTERS {
            if self.contains(r) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Who an ACL entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    /// `system:anyuser`: every caller.
    AnyUser,
    /// `system:authuser`: every caller whose uid is a user of the cell.
    AuthUser,
    /// The user with this uid.
    User(u32),
    /// The group with this gid.
    Group(u32),
}

/// One ACL entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    /// Who it is about.
    pub who: Principal,
    /// What it grants (or, when negative, takes away).
    pub rights: Rights,
}

/// A directory's access control list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Acl {
    /// Entries that grant rights.
    pub positive: Vec<AclEntry>,
    /// Entries that take rights away, whatever the positive ones grant.
    pub negative: Vec<AclEntry>,
}

impl Acl {
    /// The ACL of a new volume's root: every caller has every right, so a
    /// new volume behaves like a POSIX filesystem until an admin narrows it
    /// (mode bits still apply on every node).
    pub fn open() -> Acl {
        Acl {
            positive: vec![AclEntry {
                who: Principal::AnyUser,
                rights: Rights::ALL,
            }],
            negative: Vec::new(),
        }
    }

    /// Sets `who`'s positive (or negative) entry to `rights`; `Rights::NONE`
    /// removes it. Refuses more than [`MAX_ACL_ENTRIES`] entries.
    pub fn set(&mut self, who: Principal, rights: Rights, negative: bool) -> Result<(), String> {
        let list = if negative {
            &mut self.negative
        } else {
            &mut self.positive
        };
        list.retain(|e| e.who != who);
        if rights == Rights::NONE {
            return Ok(());
        }
        if list.len() >= MAX_ACL_ENTRIES {
            return Err(format!("an ACL holds at most {MAX_ACL_ENTRIES} entries of each sign"));
        }
        list.push(AclEntry { who, rights });
        list.sort_by_key(|e| e.who);
        Ok(())
    }

    /// Checks the bounds a stored ACL must keep.
    pub fn validate(&self) -> Result<(), String> {
        if self.positive.len() > MAX_ACL_ENTRIES || self.negative.len() > MAX_ACL_ENTRIES {
            return Err(format!("an ACL holds at most {MAX_ACL_ENTRIES} entries of each sign"));
        }
        Ok(())
    }

    /// The rights this ACL gives a caller for whom `matches` says which
    /// principals it is.
    pub fn rights(&self, matches: impl Fn(Principal) -> bool) -> Rights {
        let grant = |list: &[AclEntry]| {
            list.iter()
                .filter(|e| matches(e.who))
                .fold(Rights::NONE, |acc, e| acc.union(e.rights))
        };
        grant(&self.positive).minus(grant(&self.negative))
    }
}

/// Who a file request acts for: the uid and gids the cache manager saw in
/// the kernel's request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caller {
    /// The process's uid.
    pub uid: u32,
    /// Its gids (primary first); at most [`MAX_CALLER_GIDS`] count.
    pub gids: Vec<u32>,
}

/// A user of the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// Name, unique in the cell.
    pub name: String,
    /// The uid web nodes run its processes as.
    pub uid: u32,
}

/// A group of the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Name, unique in the cell.
    pub name: String,
    /// The gid web nodes know it by.
    pub gid: u32,
    /// The uids of its members.
    pub members: Vec<u32>,
}

/// One line of an ACL as `listacl` shows it, with names resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclLine {
    /// The principal's name (`system:anyuser`, a user, a group, or
    /// `uid:N`/`gid:N` for ids the cell has no name for).
    pub name: String,
    /// Its rights, as letters.
    pub rights: String,
    /// Whether this is a negative entry.
    pub negative: bool,
}

/// One change `setacl` asks for: `name`'s entry becomes `rights`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclChange {
    /// The principal's name (as in [`AclLine::name`]).
    pub name: String,
    /// The new rights (`none` removes the entry).
    pub rights: String,
    /// Whether the negative entry is meant.
    pub negative: bool,
}

/// The role a credential was issued for, carried in its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A cell administrator (`cellfs-vos`): may change volumes and the cell.
    Admin,
    /// A web node's cache manager: file requests only.
    Host,
    /// A fileserver of the cell calling another.
    Server,
}

impl Role {
    /// The organizational unit that marks the role in a certificate.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Admin => "cellfs admin",
            Role::Host => "cellfs host",
            Role::Server => "cellfs server",
        }
    }

    /// The role whose unit is `unit`.
    pub fn from_unit(unit: &str) -> Option<Role> {
        [Role::Admin, Role::Host, Role::Server]
            .into_iter()
            .find(|r| r.unit() == unit)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Host => "host",
            Role::Server => "server",
        })
    }
}

/// A credential the cell issued, as `host list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The name it was issued to.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of its certificate, in hex.
    pub fingerprint: String,
    /// When it was issued.
    pub issued: crate::Timestamp,
    /// When it was revoked, if it was.
    pub revoked: Option<crate::Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rights_parse_and_print() {
        assert_eq!(Rights::parse("rl").unwrap(), Rights(3));
        assert_eq!(Rights::parse("all").unwrap().to_string(), "rlidwka");
        assert_eq!(Rights::parse("write").unwrap().to_string(), "rlidwk");
        assert_eq!(Rights::parse("read").unwrap().to_string(), "rl");
        assert_eq!(Rights::parse("").unwrap(), Rights::NONE);
        assert!(Rights::parse("rx").unwrap_err().contains("rlidwka"));
    }

    #[test]
    fn negative_entries_win_and_none_removes() {
        let mut acl = Acl::open();
        acl.set(Principal::User(33), Rights::parse("w").unwrap(), true).unwrap();
        acl.set(Principal::Group(50), Rights::parse("rl").unwrap(), false)
            .unwrap();
        let www = |p: Principal| matches!(p, Principal::AnyUser | Principal::User(33));
        assert_eq!(acl.rights(www).to_string(), "rlidka");
        let other = |p: Principal| matches!(p, Principal::AnyUser);
        assert_eq!(acl.rights(other), Rights::ALL);
        acl.set(Principal::AnyUser, Rights::NONE, false).unwrap();
        assert_eq!(acl.rights(other), Rights::NONE);
        assert_eq!(acl.positive.len(), 1);
    }

    #[test]
    fn an_acl_is_bounded() {
        let mut acl = Acl::default();
        for uid in 0..MAX_ACL_ENTRIES as u32 {
            acl.set(Principal::User(uid), Rights::ALL, false).unwrap();
        }
        assert!(acl.set(Principal::User(999), Rights::ALL, false).is_err());
        assert!(acl.set(Principal::User(999), Rights::ALL, true).is_ok());
        acl.validate().unwrap();
    }

    proptest! {
        /// Rights print and parse back to themselves, and evaluation never
        /// grants a right no matching positive entry holds.
        #[test]
        fn rights_round_trip_and_evaluation_is_bounded(bits in 0u8..128, pos in proptest::collection::vec((0u32..4, 0u8..128), 0..8), neg in proptest::collection::vec((0u32..4, 0u8..128), 0..8)) {
            let r = Rights(bits);
            prop_assert_eq!(Rights::parse(&r.to_string()).unwrap(), r);
            let mut acl = Acl::default();
            for (uid, bits) in &pos { acl.set(Principal::User(*uid), Rights(*bits), false).unwrap(); }
            for (uid, bits) in &neg { acl.set(Principal::User(*uid), Rights(*bits), true).unwrap(); }
            let me = |p: Principal| p == Principal::User(1);
            let got = acl.rights(me);
            let granted = acl.positive.iter().filter(|e| e.who == Principal::User(1)).fold(Rights::NONE, |a, e| a.union(e.rights));
            let denied = acl.negative.iter().filter(|e| e.who == Principal::User(1)).fold(Rights::NONE, |a, e| a.union(e.rights));
            prop_assert!(granted.contains(got));
            prop_assert_eq!(got.0 & denied.0, 0);
        }
    }
}
