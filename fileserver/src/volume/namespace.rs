//! Directory changes: create, mkdir, symlink, mount point, link, remove,
//! rmdir, rename, and attribute changes that do not touch file content.

use super::txn::{VnodeAccess, VolTxn};
use super::{Change, DIR_ENTRY_SIZE, MAX_LINKS, MAX_TARGET_LEN, Volume, brk};
use crate::error::{FsResult, rpc_err};
use crate::schema::VnodeRecord;
use cellfs_protocol::{ErrorCode, Fid, FileKind, SetAttr, Special, Status};
use std::path::PathBuf;

/// Answer to a call that adds a name.
#[derive(Debug, Clone)]
pub struct Created {
    /// The directory's new status.
    pub dir: Status,
    /// The named vnode's status.
    pub status: Status,
}

/// Answer to `Remove`/`RemoveDir`.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The directory's new status.
    pub dir: Status,
    /// The removed vnode's status if it still exists.
    pub victim: Option<Status>,
}

/// Answer to `Rename`.
#[derive(Debug, Clone)]
pub struct Renamed {
    /// Source directory's new status.
    pub from_dir: Status,
    /// Target directory's new status.
    pub to_dir: Status,
    /// The moved vnode's status.
    pub moved: Status,
    /// A replaced vnode's status if it survives.
    pub replaced: Option<Status>,
}

/// What to create in a directory.
struct NewNode<'a> {
    kind: FileKind,
    mode: u32,
    uid: u32,
    gid: u32,
    target: Option<&'a str>,
    /// A (vnode, uniquifier) pair set aside for it, or `None` for new ones.
    fid: Option<(u64, u64)>,
}

impl NewNode<'_> {
    /// An empty file, under `fid` when one was set aside for it.
    fn file(mode: u32, (uid, gid): (u32, u32), fid: Option<(u64, u64)>) -> Self {
        NewNode {
            kind: FileKind::File,
            mode,
            uid,
            gid,
            target: None,
            fid,
        }
    }
}

/// Records a change of a directory's entries: size, DV and times.
fn dir_changed(t: &VolTxn<'_>, rec: &mut VnodeRecord, entries_delta: i64) {
    let delta = entries_delta.unsigned_abs() * DIR_ENTRY_SIZE;
    rec.size = if entries_delta >= 0 {
        rec.size.saturating_add(delta)
    } else {
        rec.size.saturating_sub(delta)
    };
    rec.data_version += 1;
    rec.mtime = t.now;
    rec.ctime = t.now;
}

fn not_found(name: &str) -> crate::error::FsError {
    rpc_err(ErrorCode::NotFound, format!("{name:?} not found"))
}

/// Drops one link of a non-directory; returns its surviving status, and the
/// data file to delete after commit if it is gone.
fn drop_link(t: &mut VolTxn<'_>, vol: &Volume, vnode: u64, mut rec: VnodeRecord) -> FsResult<DropResult> {
    rec.nlink = rec.nlink.saturating_sub(1);
    if rec.nlink == 0 {
        t.delete(vnode, &rec)?;
        let path = (rec.kind == FileKind::File).then(|| vol.data_path(vnode, rec.data_file));
        Ok(DropResult {
            survivor: None,
            fid: Fid {
                volume: vol.id,
                vnode,
                unique: rec.unique,
            },
            garbage: path,
        })
    } else {
        rec.ctime = t.now;
        t.put(vnode, &rec)?;
        let status = t.status(vnode, &rec);
        Ok(DropResult {
            fid: status.fid,
            survivor: Some(status),
            garbage: None,
        })
    }
}

struct DropResult {
    fid: Fid,
    survivor: Option<Status>,
    garbage: Option<PathBuf>,
}

impl Volume {
    fn make_node(&self, dir: Fid, name: &str, node: NewNode<'_>) -> FsResult<Change<Created>> {
        self.write(|t| {
            let mut drec = t.dir(dir)?;
            if t.entry(dir.vnode, name)?.is_some() {
                return Err(rpc_err(ErrorCode::Exists, format!("{name:?} exists")));
            }
            let is_dir = node.kind == FileKind::Dir;
            if is_dir && drec.nlink >= MAX_LINKS {
                return Err(rpc_err(ErrorCode::TooManyLinks, "too many subdirectories"));
            }
            let (vnode, unique) = match node.fid {
                Some((vnode, unique)) => {
                    t.claim(vnode, unique)?;
                    (vnode, unique)
                }
                None => t.alloc(),
            };
            let mut rec = VnodeRecord::new(
                node.kind,
                node.mode & 0o7777,
                (node.uid, node.gid),
                unique,
                dir.vnode,
                t.now,
            );
            if is_dir {
                // A new directory starts with its parent's ACL.
                rec.acl = drec.acl.clone();
            }
            if let Some(target) = node.target {
                rec.size = target.len() as u64;
                rec.target = Some(target.to_owned());
            }
            t.put(vnode, &rec)?;
            t.link(dir.vnode, name, vnode, unique)?;
            if is_dir {
                drec.nlink += 1;
            }
            dir_changed(t, &mut drec, 1);
            t.put(dir.vnode, &drec)?;
            let created = Created {
                dir: t.status(dir.vnode, &drec),
                status: t.status(vnode, &rec),
            };
            Ok((created, vec![brk(dir, vec![name.to_owned()], false)]))
        })
    }

    /// Creates an empty file; an existing file is returned unchanged unless `exclusive`.
    pub fn create(
        &self,
        dir: Fid,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        exclusive: bool,
    ) -> FsResult<Change<Created>> {
        if !exclusive {
            let r = self.reader()?;
            let drec = r.dir(dir)?;
            if let Some((vnode, _)) = r.entry(dir.vnode, name)? {
                let rec = r.vnode_by_number(vnode)?;
                return match rec.kind {
                    FileKind::File => Ok(Change {
                        value: Created {
                            dir: r.status(dir.vnode, &drec),
                            status: r.status(vnode, &rec),
                        },
                        breaks: Vec::new(),
                    }),
                    FileKind::Dir => Err(rpc_err(ErrorCode::IsDir, format!("{name:?} is a directory"))),
                    FileKind::Symlink | FileKind::MountPoint | FileKind::Special(_) => {
                        Err(rpc_err(ErrorCode::Exists, format!("{name:?} exists")))
                    }
                };
            }
        }
        self.make_node(dir, name, NewNode::file(mode, (uid, gid), None))
    }

    /// Creates an empty file under a FID [`Volume::set_aside`] handed out:
    /// a name that exists is refused (`Exists`), whatever it names.
    pub fn create_reserved(
        &self,
        dir: Fid,
        name: &str,
        fid: Fid,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Change<Created>> {
        if fid.volume != dir.volume {
            return Err(rpc_err(
                ErrorCode::CrossVolume,
                "a file's FID is of another volume than its folder",
            ));
        }
        let node = NewNode::file(mode, (uid, gid), Some((fid.vnode, fid.unique)));
        self.make_node(dir, name, node)
    }

    /// Moves the volume's counters past `count` FIDs for
    /// [`Volume::create_reserved`].
    pub fn set_aside(&self, count: u32) -> FsResult<Change<Vec<Fid>>> {
        let volume = self.id;
        self.write(|t| {
            let fids = t
                .set_aside(u64::from(count))
                .into_iter()
                .map(|(vnode, unique)| Fid { volume, vnode, unique })
                .collect();
            Ok((fids, Vec::new()))
        })
    }

    /// Creates a directory.
    pub fn make_dir(&self, dir: Fid, name: &str, mode: u32, uid: u32, gid: u32) -> FsResult<Change<Created>> {
        let node = NewNode {
            kind: FileKind::Dir,
            mode,
            uid,
            gid,
            target: None,
            fid: None,
        };
        self.make_node(dir, name, node)
    }

    /// Creates a FIFO, socket or device node.
    pub fn make_special(
        &self,
        dir: Fid,
        name: &str,
        special: Special,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Change<Created>> {
        let node = NewNode {
            kind: FileKind::Special(special),
            mode,
            uid,
            gid,
            target: None,
            fid: None,
        };
        self.make_node(dir, name, node)
    }

    /// Creates a symbolic link.
    pub fn symlink(&self, dir: Fid, name: &str, target: &str, uid: u32, gid: u32) -> FsResult<Change<Created>> {
        if target.is_empty() || target.contains('\0') {
            return Err(rpc_err(ErrorCode::Invalid, "symlink target is empty or holds NUL"));
        }
        if target.len() > MAX_TARGET_LEN {
            return Err(rpc_err(ErrorCode::NameTooLong, "symlink target over 4095 bytes"));
        }
        let node = NewNode {
            kind: FileKind::Symlink,
            mode: 0o777,
            uid,
            gid,
            target: Some(target),
            fid: None,
        };
        self.make_node(dir, name, node)
    }

    /// Creates a mount point for `volume` (already validated by the caller).
    pub fn make_mount(&self, dir: Fid, name: &str, volume: &str) -> FsResult<Change<Created>> {
        let node = NewNode {
            kind: FileKind::MountPoint,
            mode: 0o755,
            uid: 0,
            gid: 0,
            target: Some(volume),
            fid: None,
        };
        self.make_node(dir, name, node)
    }

    /// Adds a hard link `name` in `dir` to `fid`.
    pub fn link(&self, dir: Fid, name: &str, fid: Fid) -> FsResult<Change<Created>> {
        self.write(|t| {
            let mut drec = t.dir(dir)?;
            let mut rec = t.vnode(fid)?;
            if rec.kind == FileKind::Dir {
                return Err(rpc_err(ErrorCode::NotPermitted, "cannot hard-link a directory"));
            }
            if t.entry(dir.vnode, name)?.is_some() {
                return Err(rpc_err(ErrorCode::Exists, format!("{name:?} exists")));
            }
            if rec.nlink >= MAX_LINKS {
                return Err(rpc_err(ErrorCode::TooManyLinks, "too many links"));
            }
            rec.nlink += 1;
            rec.ctime = t.now;
            t.put(fid.vnode, &rec)?;
            t.link(dir.vnode, name, fid.vnode, fid.unique)?;
            dir_changed(t, &mut drec, 1);
            t.put(dir.vnode, &drec)?;
            let created = Created {
                dir: t.status(dir.vnode, &drec),
                status: t.status(fid.vnode, &rec),
            };
            let breaks = vec![brk(dir, vec![name.to_owned()], false), brk(fid, Vec::new(), false)];
            Ok((created, breaks))
        })
    }

    /// Removes a non-directory entry.
    pub fn remove(&self, dir: Fid, name: &str) -> FsResult<Change<Removed>> {
        let change = self.write(|t| {
            let mut drec = t.dir(dir)?;
            let (vnode, _) = t.entry(dir.vnode, name)?.ok_or_else(|| not_found(name))?;
            let rec = t.vnode_by_number(vnode)?;
            if rec.kind == FileKind::Dir {
                return Err(rpc_err(ErrorCode::IsDir, format!("{name:?} is a directory")));
            }
            t.unlink(dir.vnode, name)?;
            let dropped = drop_link(t, self, vnode, rec)?;
            dir_changed(t, &mut drec, -1);
            t.put(dir.vnode, &drec)?;
            let deleted = dropped.survivor.is_none();
            let value = Removed {
                dir: t.status(dir.vnode, &drec),
                victim: dropped.survivor,
            };
            let breaks = vec![
                brk(dir, vec![name.to_owned()], false),
                brk(dropped.fid, Vec::new(), deleted),
            ];
            Ok(((value, dropped.garbage), breaks))
        })?;
        let (value, garbage) = change.value;
        self.collect_garbage(garbage);
        Ok(Change {
            value,
            breaks: change.breaks,
        })
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, dir: Fid, name: &str) -> FsResult<Change<Removed>> {
        self.write(|t| {
            let mut drec = t.dir(dir)?;
            let (vnode, _) = t.entry(dir.vnode, name)?.ok_or_else(|| not_found(name))?;
            let rec = t.vnode_by_number(vnode)?;
            if rec.kind != FileKind::Dir {
                return Err(rpc_err(ErrorCode::NotDir, format!("{name:?} is not a directory")));
            }
            if !t.is_empty_dir(vnode)? {
                return Err(rpc_err(ErrorCode::NotEmpty, format!("{name:?} is not empty")));
            }
            t.unlink(dir.vnode, name)?;
            t.delete(vnode, &rec)?;
            drec.nlink = drec.nlink.saturating_sub(1);
            dir_changed(t, &mut drec, -1);
            t.put(dir.vnode, &drec)?;
            let victim = t.status(vnode, &rec).fid;
            let value = Removed {
                dir: t.status(dir.vnode, &drec),
                victim: None,
            };
            Ok((
                value,
                vec![brk(dir, vec![name.to_owned()], false), brk(victim, Vec::new(), true)],
            ))
        })
    }

    /// Renames within this volume, replacing a compatible target. Renaming a
    /// name onto itself (or onto another link of the same vnode) changes nothing.
    pub fn rename(&self, from_dir: Fid, from_name: &str, to_dir: Fid, to_name: &str) -> FsResult<Change<Renamed>> {
        if from_dir.volume != to_dir.volume {
            return Err(rpc_err(ErrorCode::CrossVolume, "rename across volumes"));
        }
        let change = self.write(|t| {
            let done = rename_in(t, self, from_dir, from_name, to_dir, to_name)?;
            if done.noop {
                return Ok(((done.value, None), Vec::new()));
            }
            let mut breaks = Vec::new();
            if from_dir == to_dir {
                let mut names = vec![from_name.to_owned()];
                if to_name != from_name {
                    names.push(to_name.to_owned());
                }
                breaks.push(brk(from_dir, names, false));
            } else {
                breaks.push(brk(from_dir, vec![from_name.to_owned()], false));
                breaks.push(brk(to_dir, vec![to_name.to_owned()], false));
            }
            breaks.push(brk(done.value.moved.fid, Vec::new(), false));
            if let Some(fid) = done.replaced {
                breaks.push(brk(fid, Vec::new(), done.value.replaced.is_none()));
            }
            Ok(((done.value, done.garbage), breaks))
        })?;
        let (value, garbage) = change.value;
        self.collect_garbage(garbage);
        Ok(Change {
            value,
            breaks: change.breaks,
        })
    }

    /// chmod/chown/utimes (a size change goes through [`Volume::set_attr_full`]).
    pub fn set_attr(&self, fid: Fid, attr: &SetAttr) -> FsResult<Change<Status>> {
        self.write(|t| {
            let mut rec = t.vnode(fid)?;
            apply_attr(t, &mut rec, attr);
            t.put(fid.vnode, &rec)?;
            Ok((t.status(fid.vnode, &rec), vec![brk(fid, Vec::new(), false)]))
        })
    }

    /// Deletes data files of vnodes a committed change removed, or hands them
    /// to the clones that still name them (best effort: what is left
    /// is dealt with as an orphan at the next start).
    pub(super) fn collect_garbage(&self, garbage: Option<PathBuf>) {
        // In a commit group, once the group is durable.
        if let Some(path) = garbage.and_then(super::group::defer_garbage) {
            if self.hand_to_clones(&path) {
                return;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove data file"),
            }
        }
    }
}

/// Applies the non-size fields of a `SetAttr` and sets ctime (the caller bumps the DV).
pub(super) fn apply_attr(t: &VolTxn<'_>, rec: &mut VnodeRecord, attr: &SetAttr) {
    if let Some(mode) = attr.mode {
        rec.mode = mode & 0o7777;
    }
    if let Some(uid) = attr.uid {
        rec.uid = uid;
    }
    if let Some(gid) = attr.gid {
        rec.gid = gid;
    }
    if let Some(atime) = attr.atime {
        rec.atime = atime;
    }
    if let Some(mtime) = attr.mtime {
        rec.mtime = mtime;
    }
    rec.ctime = t.now;
}

struct RenameDone {
    value: Renamed,
    replaced: Option<Fid>,
    garbage: Option<PathBuf>,
    noop: bool,
}

fn rename_in(
    t: &mut VolTxn<'_>,
    vol: &Volume,
    from_dir: Fid,
    from_name: &str,
    to_dir: Fid,
    to_name: &str,
) -> FsResult<RenameDone> {
    let same_dir = from_dir == to_dir;
    let mut frec = t.dir(from_dir)?;
    let mut trec = if same_dir { frec.clone() } else { t.dir(to_dir)? };
    let (mv, mvu) = t
        .entry(from_dir.vnode, from_name)?
        .ok_or_else(|| not_found(from_name))?;
    let mut mrec = t.vnode_by_number(mv)?;
    let target = t.entry(to_dir.vnode, to_name)?;
    if target.is_some_and(|(tv, _)| tv == mv) {
        return Ok(RenameDone {
            value: Renamed {
                from_dir: t.status(from_dir.vnode, &frec),
                to_dir: t.status(to_dir.vnode, &trec),
                moved: t.status(mv, &mrec),
                replaced: None,
            },
            replaced: None,
            garbage: None,
            noop: true,
        });
    }
    let is_dir = mrec.kind == FileKind::Dir;
    if is_dir && !same_dir {
        // The target directory must not be the moved directory or inside it.
        let mut cur = to_dir.vnode;
        let mut steps = 0u64;
        loop {
            if cur == mv {
                return Err(rpc_err(ErrorCode::Loop, "cannot move a directory into itself"));
            }
            if cur == Fid::ROOT_VNODE {
                break;
            }
            steps += 1;
            if steps > t.state.files {
                return Err(rpc_err(ErrorCode::Io, "directory parent chain is cyclic"));
            }
            cur = t.vnode_by_number(cur)?.parent;
        }
        if trec.nlink >= MAX_LINKS {
            return Err(rpc_err(ErrorCode::TooManyLinks, "too many subdirectories"));
        }
    }
    let mut replaced = None;
    let mut replaced_status = None;
    let mut garbage = None;
    if let Some((tv, _)) = target {
        let vrec = t.vnode_by_number(tv)?;
        match (is_dir, vrec.kind == FileKind::Dir) {
            (true, false) => return Err(rpc_err(ErrorCode::NotDir, format!("{to_name:?} is not a directory"))),
            (false, true) => return Err(rpc_err(ErrorCode::IsDir, format!("{to_name:?} is a directory"))),
            (true, true) => {
                if !t.is_empty_dir(tv)? {
                    return Err(rpc_err(ErrorCode::NotEmpty, format!("{to_name:?} is not empty")));
                }
                replaced = Some(t.status(tv, &vrec).fid);
                t.delete(tv, &vrec)?;
                trec.nlink = trec.nlink.saturating_sub(1);
            }
            (false, false) => {
                let dropped = drop_link(t, vol, tv, vrec)?;
                replaced = Some(dropped.fid);
                replaced_status = dropped.survivor;
                garbage = dropped.garbage;
            }
        }
    }
    t.unlink(from_dir.vnode, from_name)?;
    t.link(to_dir.vnode, to_name, mv, mvu)?;
    let added = if target.is_some() { 0 } else { 1 };
    if same_dir {
        dir_changed(t, &mut trec, added - 1);
        t.put(to_dir.vnode, &trec)?;
        frec = trec.clone();
    } else {
        if is_dir {
            frec.nlink = frec.nlink.saturating_sub(1);
            trec.nlink += 1;
        }
        // Whatever moves is governed by its new directory's ACL from now on.
        mrec.parent = to_dir.vnode;
        dir_changed(t, &mut frec, -1);
        dir_changed(t, &mut trec, added);
        t.put(from_dir.vnode, &frec)?;
        t.put(to_dir.vnode, &trec)?;
    }
    mrec.ctime = t.now;
    t.put(mv, &mrec)?;
    Ok(RenameDone {
        value: Renamed {
            from_dir: t.status(from_dir.vnode, &frec),
            to_dir: t.status(to_dir.vnode, &trec),
            moved: t.status(mv, &mrec),
            replaced: replaced_status,
        },
        replaced,
        garbage,
        noop: false,
    })
}
