//! Crash safety of the redb broker: the "Delivery" rules of `docs/semantics.md` under
//! process kills and power cuts. One test binary, one module per design:
//!
//! - [`power_loss`] (`power_loss_at_random_*`): a broker on a [`SimulatedDisk`] runs a
//!   concurrent workload (sends, batches, dedup sends, leases, acks, retries, dead-lettering)
//!   until the power is cut after a random number of `sync_data` or `write` calls. The broker
//!   is "rebooted" from what survived (only synced bytes; every write, as if the cache had been
//!   flushed just in time; or the synced bytes plus a random subset of the unsynced writes or
//!   sectors) and checked against a journal of what the callers were told. Each run then cuts
//!   the power a second time, during or just after the recovery of the rebooted broker, and
//!   checks again.
//! - [`sigkill`] (`sigkill_mid_load`): a real child process (this test binary, re-executed to
//!   run only `sigkill_child`) runs the same workload on a file and prints every answer it got;
//!   the parent kills it with SIGKILL mid-load, reopens the file and checks the same
//!   invariants.
//! - [`model`] (`model_*`): a proptest that runs random operation sequences against the broker
//!   and a small in-memory reference model, with clean restarts and power cuts between
//!   operations.
//!
//! The first two share the workload and its journal ([`workload`]) and the invariants checked
//! after every restart ([`check`]); the helpers below are shared by more than one design.
//!
//! Workload choices are made by generators seeded from the printed seed; thread scheduling
//! (and so the exact grouping of commits) is not under the test's control, so a seed
//! reproduces the workload, not necessarily the very same cut. `WASMQ_CRASH_SEED=<n>` runs a
//! single seed, `WASMQ_CRASH_SEEDS=<n>` sets how many seeds the power-loss tests run (60 by
//! default), `WASMQ_CRASH_DEBUG=1` prints what each power-loss run did.

mod check;
mod model;
mod power_loss;
mod sigkill;
mod workload;

use std::sync::Arc;

use wasmq_engine::{Broker, ManualClock, RedbOptions, Storage};
use wasmq_testkit::power_loss::{SimulatedDisk, Survival};

/// The seeds to run: `WASMQ_CRASH_SEED` alone, else `0..WASMQ_CRASH_SEEDS` (`0..default`).
fn seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("WASMQ_CRASH_SEED") {
        return vec![seed.parse().expect("WASMQ_CRASH_SEED is a number")];
    }
    let n = std::env::var("WASMQ_CRASH_SEEDS")
        .map(|n| n.parse().expect("WASMQ_CRASH_SEEDS is a number"))
        .unwrap_or(default);
    (0..n).collect()
}

/// One of the four survival modes, chosen by `seed`.
fn survival_for(seed: u64) -> Survival {
    match seed % 4 {
        0 => Survival::Strict,
        1 => Survival::Everything,
        2 => Survival::TornWrites { seed },
        _ => Survival::TornSectors { seed },
    }
}

/// Opens a broker on `disk` with a redb cache of `cache` bytes.
async fn open_sim(
    disk: &SimulatedDisk,
    clock: &ManualClock,
    cache: usize,
) -> anyhow::Result<Arc<dyn Broker>> {
    let options = RedbOptions {
        cache_size_bytes: cache,
        ..RedbOptions::with_clock(clock.clone())
    };
    wasmq_engine::open(Storage::redb_on(disk.backend(), options)).await
}
