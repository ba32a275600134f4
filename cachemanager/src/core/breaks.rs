//! What the fileserver tells the node: callback breaks, whole-volume
//! breaks, and renewals (a small file's new version sent with its break),
//! applied to the node table, the cache and the kernel.

use super::{Core, State};
use crate::cache::CacheEntry;
use crate::nodes::{Listing, Promise};
use cellfs_protocol::message::{Break, Renewal, ServerMessage};
use cellfs_protocol::{Fid, FileKind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How much shorter than the cell's promise lifetime a renewed promise is
/// trusted, counted from when it arrived: the server counts from when it
/// sent it, and cuts off a client that does not acknowledge within its
/// break timeout (2 s), so a renewal that is acted on arrived within that.
const RENEWAL_MARGIN: Duration = Duration::from_secs(2);

impl Core {
    /// Acts on one message from the server (before it is acknowledged).
    pub(super) fn apply_server_message(&self, msg: ServerMessage) {
        let received = Instant::now();
        let mut inodes = Vec::new();
        let mut entries = Vec::new();
        let mut deleted = Vec::new();
        match msg {
            ServerMessage::Break(breaks) => {
                metrics::counter!("cellfs_cachemanager_breaks_received_total").increment(breaks.len() as u64);
                let mut st = self.lock();
                for brk in breaks {
                    apply_break(&mut st, brk, &mut inodes, &mut entries, &mut deleted);
                }
            }
            ServerMessage::Renewed(renewals) => {
                metrics::counter!("cellfs_cachemanager_breaks_received_total").increment(renewals.len() as u64);
                self.apply_renewals(renewals, received, &mut inodes, &mut entries, &mut deleted);
            }
            ServerMessage::BreakVolume(volume) => {
                metrics::counter!("cellfs_cachemanager_breaks_received_total").increment(1);
                let mut st = self.lock();
                st.nodes.note_volume_break(volume);
                st.rights.forget_volume(volume);
                // It may have moved, or its sites changed (a release).
                self.link.forget_route(volume);
                // A release or removal may change where mount points lead.
                entries.extend(st.nodes.forget_mounts_into(volume));
                let affected: Vec<u64> = st
                    .nodes
                    .iter()
                    .filter(|(_, n)| n.fid.volume == volume)
                    .map(|(i, _)| i)
                    .collect();
                for &ino in &affected {
                    if let Some(n) = st.nodes.get_mut(ino) {
                        n.promise = None;
                        if let Some(l) = n.retire_listing() {
                            entries.extend(l.entries.keys().map(|name| (ino, name.clone())));
                        }
                    }
                    entries.extend(st.negatives.remove(&ino).into_iter().flatten().map(|name| (ino, name)));
                }
                inodes.extend(affected);
            }
        }
        self.notify_kernel(&inodes, &entries, &deleted);
    }

    /// Applies each renewal's break, then keeps the new version it carries
    /// where this node held a current copy of the old one: the copy is
    /// replaced and the promise renewed, so the next stat and open of the
    /// file are answered here. Anything else (no copy, unstored local
    /// writes, a passthrough or streaming copy, a promise already broken by
    /// a later change) is a plain break.
    fn apply_renewals(
        &self,
        renewals: Vec<Renewal>,
        received: Instant,
        inodes: &mut Vec<u64>,
        entries: &mut Vec<(u64, String)>,
        deleted: &mut Vec<(u64, u64, String)>,
    ) {
        let lifetime = self
            .link
            .promise_secs()
            .map(Duration::from_secs)
            .and_then(|d| d.checked_sub(RENEWAL_MARGIN))
            .filter(|d| !d.is_zero());
        // The new copies are written before the state is locked.
        let copies: Vec<Option<PathBuf>> = {
            let st = self.lock();
            renewals
                .iter()
                .map(|r| {
                    let fid = r.status.fid;
                    let wanted = lifetime.is_some() && r.data.len() as u64 == r.status.size && replaceable(&st, fid);
                    wanted.then(|| st.cache.temp_path(fid))
                })
                .collect()
        };
        let copies: Vec<Option<PathBuf>> = copies
            .into_iter()
            .zip(&renewals)
            .map(|(tmp, r)| {
                let tmp = tmp?;
                match std::fs::write(&tmp, &r.data) {
                    Ok(()) => Some(tmp),
                    Err(e) => {
                        tracing::debug!(fid = %r.status.fid, error = %e, "cannot write a renewed copy; dropping it");
                        let _ = std::fs::remove_file(&tmp);
                        None
                    }
                }
            })
            .collect();
        let mut st = self.lock();
        let epoch = self.link.epoch();
        for (r, tmp) in renewals.into_iter().zip(copies) {
            let fid = r.status.fid;
            // Only a copy this node still trusts is replaced: if a later
            // change's break arrived first, the promise is gone already and
            // this older version must not come back.
            let current = st.nodes.ino_of(fid).and_then(|ino| st.nodes.get(ino)).is_some_and(|n| {
                n.dirty.is_none()
                    && n.status.data_version < r.status.data_version
                    && n.valid_for(epoch, received).is_some()
            });
            apply_break(&mut st, r.brk, inodes, entries, deleted);
            let Some(tmp) = tmp else { continue };
            let kept = current && replaceable(&st, fid) && crate::cache::place(&tmp, &st.cache.path(fid)).is_ok();
            // After an exchange `tmp` names the old copy.
            let _ = std::fs::remove_file(&tmp);
            let (true, Some(lifetime)) = (kept, lifetime) else {
                continue;
            };
            tracing::debug!(%fid, data_version = r.status.data_version, "callback renewal: new copy kept");
            metrics::counter!("cellfs_cachemanager_renewals_kept_total").increment(1);
            st.cache.insert(
                fid,
                CacheEntry {
                    data_version: r.status.data_version,
                    size: r.status.size,
                },
            );
            let promise = Promise {
                epoch,
                until: received + lifetime,
                breaks_seen: st.nodes.break_gen(),
            };
            st.nodes.upsert(r.status, Some(promise));
        }
    }
}

/// The names in folder `dir` the kernel holds entries for (besides
/// `skip`): those of its listing whose node the kernel holds, or without a
/// listing every node the kernel was last given under this folder.
fn kernel_names_in(st: &State, dir: u64, listing: Option<&Listing>, skip: &[String]) -> Vec<(u64, String)> {
    let held = |fid: Fid| {
        st.nodes
            .ino_of(fid)
            .and_then(|i| st.nodes.get(i))
            .is_some_and(|n| n.lookups > 0)
    };
    let names: Vec<String> = match listing {
        Some(l) => l
            .entries
            .iter()
            .filter(|&(_, &fid)| held(fid))
            .map(|(name, _)| name.clone())
            .collect(),
        None => st
            .nodes
            .kernel_named_in(dir)
            .filter(|n| n.lookups > 0)
            .filter_map(|n| n.kernel_name().map(|(_, name)| name.to_owned()))
            .collect(),
    };
    names
        .into_iter()
        .filter(|name| !skip.contains(name))
        .map(|name| (dir, name))
        .collect()
}

/// Whether the node's copy of `fid` may be replaced by a renewal's: there
/// is one, no handle writes it (its writes go to the copy it opened and are
/// stored from the copy's name), and it is neither a passthrough backing
/// file (new versions go into that file) nor still arriving.
fn replaceable(st: &State, fid: Fid) -> bool {
    st.cache.peek(fid).is_some()
        && !st.files.values().any(|h| h.fid == fid && h.write)
        && !st.passed_through(fid)
        && !st.streams.contains_key(&fid)
}

/// Drops what one break invalidates, collecting the inodes and entries the
/// kernel must drop too, and the kernel entries of deleted files
/// (directory, file, name) it must be told are gone.
fn apply_break(
    st: &mut State,
    brk: Break,
    inodes: &mut Vec<u64>,
    entries: &mut Vec<(u64, String)>,
    gone: &mut Vec<(u64, u64, String)>,
) {
    let Break {
        fid, names, deleted, ..
    } = brk;
    tracing::debug!(%fid, ?names, deleted, "callback break");
    st.nodes.note_break(fid);
    st.rights.forget(fid.volume, fid.vnode);
    let Some(ino) = st.nodes.ino_of(fid) else { return };
    let mut listing = None;
    let mut is_dir = false;
    if let Some(n) = st.nodes.get_mut(ino) {
        n.promise = None;
        listing = n.retire_listing();
        n.target = None;
        is_dir = n.status.kind == FileKind::Dir;
    }
    if is_dir {
        // The promise covered every name the kernel holds in this folder.
        // Without it later changes here break nobody on this node, so the
        // kernel must ask again for each name, not only those that changed.
        entries.extend(kernel_names_in(st, ino, listing.as_deref(), &names));
        entries.extend(st.negatives.remove(&ino).into_iter().flatten().map(|name| (ino, name)));
    }
    if deleted {
        // The kernel is told the file is gone (its name and links), so it
        // lets go of the inode at its last close and forgets it; the node
        // leaves the table then.
        if let Some((dir, name)) = st.nodes.get(ino).and_then(|n| n.kernel_name()) {
            gone.push((dir, ino, name.to_owned()));
        }
        // Held open here, its node keeps the link count: a writer's close
        // must still learn from the server that its writes went nowhere
        // (ESTALE).
        if st.cache.open_count(fid) == 0 {
            super::forget_deleted(st, fid);
        } else {
            st.cache.remove(fid);
            st.nodes.forget_mount(fid);
            if let Some(n) = st.nodes.get_mut(ino) {
                n.removed = true;
            }
        }
    }
    inodes.push(ino);
    entries.extend(names.into_iter().map(|name| (ino, name)));
}
