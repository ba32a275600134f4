//! Directory ACLs: reading the ACL that governs a vnode, and changing one.

use super::txn::VnodeAccess;
use super::{Change, Volume, brk};
use crate::error::FsResult;
use cellfs_protocol::acl::Acl;
use cellfs_protocol::{Fid, FileKind, Status};

/// What decides access to one vnode.
#[derive(Debug, Clone)]
pub struct Governed {
    /// The directory whose ACL applies.
    pub dir: Fid,
    /// Its ACL.
    pub acl: Acl,
    /// The vnode's owner.
    pub owner: u32,
}

impl Volume {
    /// For each of `fids`: the directory whose ACL governs it (a directory
    /// itself, a file's directory), that ACL, and the vnode's owner; read in
    /// one transaction.
    pub fn governing_acls(&self, fids: &[Fid]) -> FsResult<Vec<Governed>> {
        let r = self.reader()?;
        let mut by_dir: std::collections::HashMap<u64, (Fid, Acl)> = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(fids.len());
        for &fid in fids {
            let rec = r.vnode(fid)?;
            let owner = rec.uid;
            let dir = if rec.kind == FileKind::Dir {
                fid.vnode
            } else {
                rec.parent
            };
            let (dir, acl) = match by_dir.get(&dir) {
                Some(a) => a.clone(),
                None => {
                    let d = if dir == fid.vnode { rec } else { r.vnode_by_number(dir)? };
                    let dir_fid = Fid {
                        volume: fid.volume,
                        vnode: dir,
                        unique: d.unique,
                    };
                    let a = (dir_fid, d.acl.unwrap_or_else(Acl::open));
                    by_dir.insert(dir, a.clone());
                    a
                }
            };
            out.push(Governed { dir, acl, owner });
        }
        Ok(out)
    }

    /// The ACL of directory `dir`.
    pub fn acl(&self, dir: Fid) -> FsResult<Acl> {
        let r = self.reader()?;
        Ok(r.dir(dir)?.acl.unwrap_or_else(Acl::open))
    }

    /// Replaces the ACL of directory `dir`; every holder of a promise on it
    /// is told (their cached rights are stale).
    pub fn set_acl(&self, dir: Fid, acl: Acl) -> FsResult<Change<Status>> {
        self.write(|t| {
            let mut rec = t.dir(dir)?;
            rec.acl = Some(acl);
            rec.ctime = t.now;
            rec.data_version += 1;
            t.put(dir.vnode, &rec)?;
            Ok((t.status(dir.vnode, &rec), vec![brk(dir, Vec::new(), false)]))
        })
    }
}
