//! Giving space back. redb reuses the pages a drained queue frees, but never shrinks its file
//! on its own: after a backlog of millions has drained, the file keeps its peak size.
//! Compaction moves the live pages to the front of the file and truncates it.
//!
//! It needs the database to itself (no transaction open), so it runs on the writer thread when
//! the writer has been idle for a while after writing and most of the file is estimated free
//! ([`Compaction`]), or for a stopped host with `wasmq compact` ([`compact_file`]). Sends,
//! leases and reads (metrics, readiness) that arrive while it runs wait for it; it runs only
//! when nothing was sent for [`Compaction::idle`], and after a drain there is little left to
//! move.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use redb::{CompactionError, Database};

use super::records::Counters;

/// Bytes a stored message is assumed to take besides its body (its state, index entries and
/// B-tree overhead), for the estimate of the live data.
const OVERHEAD_PER_MESSAGE: u64 = 256;

/// When the writer compacts the file on its own: after [`Self::idle`] without a job following
/// writes, if the file is at least [`Self::min_file_bytes`] and the live data is estimated at
/// less than a quarter of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// How long the writer has had nothing to do (default 5 s).
    pub idle: Duration,
    /// Smallest file worth compacting (default 64 MiB).
    pub min_file_bytes: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(5),
            min_file_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Compaction {
    /// Whether a file of `file_bytes` holding the queues counted in `counters` is worth
    /// compacting.
    pub(super) fn worth_it<'c>(
        &self,
        file_bytes: u64,
        counters: impl IntoIterator<Item = &'c Counters>,
    ) -> bool {
        let live: u64 = counters
            .into_iter()
            .map(|c| c.backlog_bytes + c.backlog_count * OVERHEAD_PER_MESSAGE)
            .sum();
        file_bytes >= self.min_file_bytes && live.saturating_mul(4) < file_bytes
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// File size before, in bytes.
    pub before_bytes: u64,
    /// File size after, in bytes.
    pub after_bytes: u64,
    /// How long it took.
    pub took: Duration,
}

/// Compacts `db`, stored at `path`, as far as it goes.
pub(super) fn compact(db: &mut Database, path: &Path) -> Result<Compacted, CompactionError> {
    let before_bytes = file_bytes(path);
    let started = Instant::now();
    // One call compacts until no further progress is possible.
    db.compact()?;
    Ok(Compacted {
        before_bytes,
        after_bytes: file_bytes(path),
        took: started.elapsed(),
    })
}

/// Compacts the queue file at `path`, which no host may have open (a running host compacts
/// its own file when idle).
pub fn compact_file(path: &Path) -> anyhow::Result<Compacted> {
    let mut db = Database::open(path).with_context(|| {
        format!(
            "opening queue database {} (is a host running on it?)",
            path.display()
        )
    })?;
    let mut done =
        compact(&mut db, path).with_context(|| format!("compacting {}", path.display()))?;
    // Closing writes the file's final header: measure after it.
    drop(db);
    done.after_bytes = file_bytes(path);
    Ok(done)
}

/// The size of the file at `path` (0 if it cannot be read).
pub(super) fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn counters(count: u64, bytes: u64) -> Counters {
        Counters {
            backlog_count: count,
            backlog_bytes: bytes,
            ..Counters::default()
        }
    }

    #[test]
    fn only_a_large_file_that_is_mostly_free_is_compacted() {
        let policy = Compaction::default();
        let empty = [counters(0, 0)];
        assert!(policy.worth_it(1_600 * MIB, &empty));
        assert!(!policy.worth_it(63 * MIB, &empty), "too small to matter");
        // 1 M messages of 100 bytes: ~340 MB live in a 1.6 GB file.
        assert!(policy.worth_it(1_600 * MIB, &[counters(1_000_000, 100_000_000)]));
        // The same backlog in a 1 GB file: more than a quarter is live.
        assert!(!policy.worth_it(1_000 * MIB, &[counters(1_000_000, 100_000_000)]));
        // Queues add up.
        let two = [counters(0, 150 * MIB), counters(0, 150 * MIB)];
        assert!(!policy.worth_it(1_000 * MIB, &two));
        assert!(policy.worth_it(1_300 * MIB, &two));
    }
}
