//! The byte-range locks of one file among the processes of this node, with
//! POSIX `fcntl` semantics: a lock belongs to an owner (a process, or an
//! open file for `flock` and OFD locks), an owner's new lock replaces what
//! it held on the range, and read locks of different owners share.

use cellfs_protocol::message::LockMode;

/// A lock's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A shared (read) lock.
    Read,
    /// An exclusive (write) lock.
    Write,
}

impl Kind {
    /// The whole-file server mode a lock of this kind needs.
    pub fn mode(self) -> LockMode {
        match self {
            Kind::Read => LockMode::Shared,
            Kind::Write => LockMode::Exclusive,
        }
    }
}

/// One held lock on the bytes `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The kernel's lock owner id.
    pub owner: u64,
    /// The process that took it (what `F_GETLK` reports).
    pub pid: u32,
    /// The open file it was taken through: closing it releases the lock.
    pub fh: u64,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive; `i64::MAX` reaches the end of any file).
    pub end: u64,
    /// Shared or exclusive.
    pub kind: Kind,
}

impl Held {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }
}

/// The locks held on one file.
#[derive(Debug, Clone, Default)]
pub struct RangeLocks {
    held: Vec<Held>,
}

impl RangeLocks {
    /// The first lock of another owner that keeps `owner` from taking a
    /// `kind` lock on `start..=end`.
    pub fn conflict(&self, owner: u64, start: u64, end: u64, kind: Kind) -> Option<Held> {
        self.held
            .iter()
            .find(|h| h.owner != owner && h.overlaps(start, end) && (kind == Kind::Write || h.kind == Kind::Write))
            .copied()
    }

    /// Sets `owner`'s lock on `start..=end` to `kind`, or unlocks the range
    /// with `None`, splitting and merging its existing locks. The caller
    /// has checked [`RangeLocks::conflict`].
    pub fn set(&mut self, lock: Held, kind: Option<Kind>) {
        let (start, end) = (lock.start, lock.end);
        let mut kept = Vec::with_capacity(self.held.len() + 2);
        for h in self.held.drain(..) {
            if h.owner != lock.owner || !h.overlaps(start, end) {
                kept.push(h);
                continue;
            }
            if h.start < start {
                kept.push(Held { end: start - 1, ..h });
            }
            if h.end > end {
                kept.push(Held { start: end + 1, ..h });
            }
        }
        self.held = kept;
        if let Some(kind) = kind {
            self.held.push(Held { kind, ..lock });
            self.merge(lock.owner);
        }
    }

    /// Joins `owner`'s locks of one kind that touch or overlap.
    fn merge(&mut self, owner: u64) {
        let (mut mine, others): (Vec<Held>, Vec<Held>) = self.held.drain(..).partition(|h| h.owner == owner);
        mine.sort_by_key(|h| h.start);
        let mut joined: Vec<Held> = Vec::with_capacity(mine.len());
        for h in mine {
            match joined.last_mut() {
                Some(last) if last.kind == h.kind && h.start <= last.end.saturating_add(1) => {
                    last.end = last.end.max(h.end);
                }
                _ => joined.push(h),
            }
        }
        self.held = others;
        self.held.extend(joined);
    }

    /// Drops every lock `keep` refuses; true when any was dropped.
    pub fn retain(&mut self, keep: impl Fn(&Held) -> bool) -> bool {
        let before = self.held.len();
        self.held.retain(|h| keep(h));
        self.held.len() != before
    }

    /// The whole-file mode this node needs on the server for these locks.
    pub fn mode(&self) -> Option<LockMode> {
        self.held.iter().map(|h| h.kind.mode()).max()
    }

    /// The mode needed once `lock` is set to `kind`.
    pub fn mode_after(&self, lock: Held, kind: Option<Kind>) -> Option<LockMode> {
        let mut next = self.clone();
        next.set(lock, kind);
        next.mode()
    }

    /// True when no lock is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The locks held, in no particular order.
    pub fn held(&self) -> &[Held] {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn lock(owner: u64, start: u64, end: u64) -> Held {
        Held {
            owner,
            pid: owner as u32,
            fh: owner,
            start,
            end,
            kind: Kind::Read,
        }
    }

    #[test]
    fn an_unlock_in_the_middle_splits_a_lock() {
        let mut l = RangeLocks::default();
        l.set(lock(1, 0, 99), Some(Kind::Write));
        l.set(lock(1, 40, 59), None);
        assert!(l.conflict(2, 40, 59, Kind::Write).is_none());
        assert!(l.conflict(2, 39, 39, Kind::Read).is_some());
        assert!(l.conflict(2, 60, 60, Kind::Read).is_some());
        assert_eq!(l.held().len(), 2);
        l.set(lock(1, 40, 59), Some(Kind::Write));
        assert_eq!(l.held().len(), 1, "touching locks of one kind merge: {:?}", l.held());
        assert_eq!(l.mode(), Some(LockMode::Exclusive));
        l.set(lock(1, 0, 99), Some(Kind::Read));
        assert_eq!(l.mode(), Some(LockMode::Shared));
        assert!(l.conflict(2, 0, 99, Kind::Read).is_none());
        assert!(l.retain(|h| h.owner != 1));
        assert!(l.is_empty());
    }

    #[test]
    fn locks_reaching_the_end_of_any_file_do_not_overflow() {
        let mut l = RangeLocks::default();
        let end = u64::MAX;
        l.set(lock(1, 0, end), Some(Kind::Write));
        l.set(lock(1, end, end), None);
        l.set(lock(1, end, end), Some(Kind::Write));
        assert_eq!(l.held().len(), 1);
        assert!(l.conflict(2, end, end, Kind::Read).is_some());
    }

    /// Each byte of a small file: which owners hold it and how.
    type Model = HashMap<(u64, u64), Kind>;

    fn model_conflict(m: &Model, owner: u64, start: u64, end: u64, kind: Kind) -> bool {
        m.iter()
            .any(|((o, b), k)| *o != owner && (start..=end).contains(b) && (kind == Kind::Write || *k == Kind::Write))
    }

    fn op() -> impl Strategy<Value = (u64, u64, u64, Option<Kind>)> {
        (
            0u64..3,
            0u64..24,
            0u64..8,
            prop_oneof![Just(None), Just(Some(Kind::Read)), Just(Some(Kind::Write))],
        )
            .prop_map(|(owner, start, len, kind)| (owner, start, start + len, kind))
    }

    proptest! {
        /// The range table answers every conflict question as a byte-by-byte
        /// model of the same locks does.
        #[test]
        fn ranges_behave_like_a_byte_map(ops in proptest::collection::vec(op(), 1..40)) {
            let mut l = RangeLocks::default();
            let mut m = Model::new();
            for (owner, start, end, kind) in ops {
                let blocked = kind.is_some_and(|k| model_conflict(&m, owner, start, end, k));
                prop_assert_eq!(kind.is_some_and(|k| l.conflict(owner, start, end, k).is_some()), blocked);
                if blocked {
                    continue;
                }
                l.set(lock(owner, start, end), kind);
                for b in start..=end {
                    match kind {
                        Some(k) => m.insert((owner, b), k),
                        None => m.remove(&(owner, b)),
                    };
                }
                for owner in 0..3 {
                    for b in 0..32 {
                        for k in [Kind::Read, Kind::Write] {
                            prop_assert_eq!(l.conflict(owner, b, b, k).is_some(), model_conflict(&m, owner, b, b, k));
                        }
                    }
                }
                let model_mode = m.values().map(|k| k.mode()).max();
                prop_assert_eq!(l.mode(), model_mode);
            }
        }
    }
}
