//! The restart grace. A node learns that the fileserver restarted only when
//! it next sends a packet, at most [`KEEP_ALIVE`] later (the stateless
//! reset that answers it is the news). Until then it trusts the promises
//! of the old server process, which the new one does not know, and its
//! kernel keeps serving the cached bytes: a change made in that window
//! would break no promise and the node would go on reading the old bytes.
//!
//! So after a run that may have left nodes holding promises (it crashed,
//! or it stopped while nodes held promises) the server refuses file
//! changes with `Grace` for [`GRACE`] after it starts: by then every node
//! that can reach it has noticed, reconnected and revalidated what it
//! holds (getting promises the new process knows). Nodes repeat a refused
//! change (`cachemanager/src/links.rs`); reads are served throughout.
//! Volume operations that replace a volume's files wholesale (a release, a
//! backup, a restore, a move, a removal: `Request::replaces_volumes`) are
//! held until the grace ends rather than refused: they come from `vos` or
//! another server, which would only repeat them. A
//! run that began on a folder no server ever left promises in (a new cell,
//! or one stopped cleanly with no node holding promises) has no grace.
//!
//! The marker file [`MARKER`] says a run is on, or that the last one ended
//! with promises outstanding.

use cellfs_protocol::transport::KEEP_ALIVE;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long file changes are refused after a restart with promises
/// outstanding: a node's keep-alive interval, the reset's round trip and
/// its reconnection and revalidation, with room to spare.
pub const GRACE: Duration = KEEP_ALIVE.saturating_mul(3);

/// Name of the marker file inside the data folder.
pub const MARKER: &str = "running";

/// When this run's grace ends, if it has one.
#[derive(Debug, Default)]
pub struct Grace {
    until: Option<Instant>,
}

impl Grace {
    /// Begins a run in `dir`: a marker left by the previous run starts a
    /// grace of [`GRACE`] from now; the marker is (re)written and made
    /// durable either way, so a crash of this run is known to the next.
    pub fn begin(dir: &Path) -> io::Result<Self> {
        let path = marker(dir);
        let outstanding = path.exists();
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?
            .sync_all()?;
        File::open(dir)?.sync_all()?;
        if outstanding {
            tracing::info!(
                grace = ?GRACE,
                "the last run crashed or left nodes holding promises: \
                 file changes wait until every node has noticed the restart"
            );
        }
        Ok(Grace {
            until: outstanding.then(|| Instant::now() + GRACE),
        })
    }

    /// Time left before file changes are taken, or `None` once the grace
    /// is over (or there was none).
    pub fn left(&self) -> Option<Duration> {
        let left = self.until?.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }
}

/// Ends a run in `dir` that stopped cleanly: without promises outstanding
/// the marker goes, so the next run has no grace.
pub fn end(dir: &Path, promises_outstanding: bool) {
    if promises_outstanding {
        return;
    }
    if let Err(e) = std::fs::remove_file(marker(dir)) {
        tracing::warn!(error = %e, "cannot remove the run marker; the next start holds changes for a moment");
    }
}

fn marker(dir: &Path) -> PathBuf {
    dir.join(MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grace_follows_only_a_run_that_did_not_end_cleanly_without_promises() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Grace::begin(dir.path()).unwrap().left().is_none(),
            "a new folder has no grace"
        );
        // That run crashed: its marker is still there.
        let left = Grace::begin(dir.path())
            .unwrap()
            .left()
            .expect("a crash leaves a grace");
        assert!(left <= GRACE);
        end(dir.path(), true);
        assert!(
            Grace::begin(dir.path()).unwrap().left().is_some(),
            "promises were outstanding"
        );
        end(dir.path(), false);
        assert!(
            Grace::begin(dir.path()).unwrap().left().is_none(),
            "a clean stop without promises"
        );
    }

    #[test]
    fn a_grace_runs_out() {
        let grace = Grace {
            until: Some(Instant::now()),
        };
        assert!(grace.left().is_none());
        assert!(Grace::default().left().is_none());
    }
}
