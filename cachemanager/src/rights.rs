//! The rights the fileserver granted each caller under each directory ACL,
//! so cached reads honour ACLs without asking again. An entry lasts while
//! the promise `GetRights` came with holds: a change of the ACL breaks it.

use cellfs_protocol::VolumeId;
use cellfs_protocol::acl::{Caller, Rights};
use std::collections::HashMap;
use std::time::Instant;

/// Most directories remembered; past it everything is forgotten (asked again).
const MAX_DIRS: usize = 65_536;

/// Rights of one directory's ACL per caller.
#[derive(Debug)]
struct DirRights {
    /// Link epoch they were granted in (a reconnect voids them).
    epoch: u64,
    /// Until when the promise on the directory holds.
    until: Instant,
    by_caller: HashMap<Caller, Rights>,
}

/// Rights per (volume, directory vnode) and caller.
#[derive(Debug, Default)]
pub struct RightsCache {
    dirs: HashMap<(VolumeId, u64), DirRights>,
}

impl RightsCache {
    /// The rights `caller` was granted under the ACL of `dir`, if still valid.
    pub fn get(&self, dir: (VolumeId, u64), caller: &Caller, epoch: u64, now: Instant) -> Option<Rights> {
        let d = self.dirs.get(&dir)?;
        if d.epoch != epoch || d.until <= now {
            return None;
        }
        d.by_caller.get(caller).copied()
    }

    /// Records what the server granted.
    pub fn put(&mut self, dir: (VolumeId, u64), caller: &Caller, rights: Rights, epoch: u64, until: Instant) {
        if self.dirs.len() >= MAX_DIRS && !self.dirs.contains_key(&dir) {
            self.dirs.clear();
        }
        let d = self.dirs.entry(dir).or_insert_with(|| DirRights {
            epoch,
            until,
            by_caller: HashMap::new(),
        });
        if d.epoch != epoch {
            d.by_caller.clear();
            d.epoch = epoch;
        }
        // Every caller's entry lasts as long as the shortest promise seen.
        d.until = if d.by_caller.is_empty() {
            until
        } else {
            d.until.min(until)
        };
        d.by_caller.insert(caller.clone(), rights);
    }

    /// Forgets a directory (its ACL may have changed).
    pub fn forget(&mut self, volume: VolumeId, vnode: u64) {
        self.dirs.remove(&(volume, vnode));
    }

    /// Forgets every directory of a volume.
    pub fn forget_volume(&mut self, volume: VolumeId) {
        self.dirs.retain(|(v, _), _| *v != volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_end_with_breaks_epochs_and_time() {
        let mut c = RightsCache::default();
        let a = Caller { uid: 1, gids: vec![1] };
        let b = Caller { uid: 2, gids: vec![2] };
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        c.put((7, 1), &a, Rights::READ, 3, later);
        assert_eq!(c.get((7, 1), &a, 3, now), Some(Rights::READ));
        assert_eq!(c.get((7, 1), &b, 3, now), None, "rights are per caller");
        assert_eq!(c.get((7, 1), &a, 4, now), None, "a new epoch voids them");
        assert_eq!(c.get((7, 1), &a, 3, later), None, "they end with the promise");
        c.forget(7, 1);
        assert_eq!(c.get((7, 1), &a, 3, now), None);
        c.put((7, 2), &a, Rights::ALL, 3, later);
        c.put((8, 2), &a, Rights::ALL, 3, later);
        c.forget_volume(7);
        assert_eq!(c.get((7, 2), &a, 3, now), None);
        assert_eq!(c.get((8, 2), &a, 3, now), Some(Rights::ALL));
    }
}
