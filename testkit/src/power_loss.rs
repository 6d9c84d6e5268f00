//! A simulated disk with a volatile write cache, for power-loss tests: `kill -9` alone
//! does not show that a crash loses nothing.
//!
//! `kill -9` only proves the process's own ordering: the operating system's page cache
//! survives it. A power cut loses every write that was not made durable by `fsync`. A
//! [`SimulatedDisk`] models exactly that for redb:
//!
//! - it keeps a *durable* image (what is on the platter) and the list of writes and length
//!   changes made since the last `sync_data` (what is still in the drive's cache);
//! - reads see the latest writes, as they would on a live machine;
//! - `sync_data` makes every pending change durable;
//! - the test can cut the power at once ([`SimulatedDisk::cut_power`]) or after a number of
//!   further `sync_data` or `write` calls ([`SimulatedDisk::cut_after_syncs`],
//!   [`SimulatedDisk::cut_after_writes`]), so the cut lands inside a commit. From then on every
//!   call fails with an [`io::Error`], so redb (and the broker above it) sees a failed write or
//!   commit;
//! - [`SimulatedDisk::surviving_image`] gives the bytes found after the reboot: only what was
//!   synced ([`Survival::Strict`]), all of it ([`Survival::Everything`]), or what was synced
//!   plus a random subset of the unsynced changes, each
//!   having reached the platter or not ([`Survival::TornWrites`], or per 512-byte sector with
//!   [`Survival::TornSectors`]).
//!
//! "Rebooting" is opening a fresh disk over the surviving image
//! ([`SimulatedDisk::reboot`]) and handing its [`SimulatedDisk::backend`] to
//! `wasmq_engine::Storage::redb_on`.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::StorageBackend;

/// The unit a drive writes atomically in [`Survival::TornSectors`] mode.
pub const SECTOR: u64 = 512;

/// Which unsynced changes survive a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survival {
    /// Only synced bytes survive: the drive's cache is lost entirely.
    Strict,
    /// Every unsynced change reached the platter just before the cut (the interrupted write
    /// included): the state `kill -9` leaves, taken at the exact point of the cut.
    Everything,
    /// Each unsynced `write` or `set_len` independently reached the platter or not (chosen by
    /// a generator seeded with `seed`); the ones that did are applied in their original order.
    TornWrites {
        /// Seed of the choice.
        seed: u64,
    },
    /// Like [`Survival::TornWrites`], but every [`SECTOR`]-aligned piece of an unsynced write
    /// survives or not on its own: a multi-sector write can be torn.
    TornSectors {
        /// Seed of the choice.
        seed: u64,
    },
}

impl fmt::Display for Survival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Survival::Strict => f.write_str("strict"),
            Survival::Everything => f.write_str("everything"),
            Survival::TornWrites { seed } => write!(f, "torn-writes(seed {seed})"),
            Survival::TornSectors { seed } => write!(f, "torn-sectors(seed {seed})"),
        }
    }
}

/// Counts of the calls a disk has served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Successful `write` calls.
    pub writes: u64,
    /// Successful `sync_data` calls.
    pub syncs: u64,
    /// Successful `set_len` calls.
    pub set_lens: u64,
    /// Calls refused because the power was off.
    pub refused: u64,
    /// Changes made since the last successful `sync_data`.
    pub pending: usize,
    /// The length readers see.
    pub len: u64,
    /// The durable length.
    pub durable_len: u64,
    /// True once the power is cut.
    pub cut: bool,
}

/// A change not yet synced.
#[derive(Debug, Clone)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Default)]
struct DiskState {
    /// What is on the platter.
    durable: Vec<u8>,
    /// What readers see: `durable` with every pending change applied.
    current: Vec<u8>,
    /// Changes since the last successful sync, oldest first.
    pending: Vec<Change>,
    /// The write that was in progress when the power was cut by [`SimulatedDisk::cut_after_writes`]:
    /// it never completed, but part of it may have reached the platter in a torn mode.
    interrupted: Option<Change>,
    cut: bool,
    /// The power goes off when `stats.syncs` would pass this.
    cut_at_syncs: Option<u64>,
    /// The power goes off when `stats.writes` would pass this.
    cut_at_writes: Option<u64>,
    stats: DiskStats,
}

impl DiskState {
    fn power_off() -> io::Error {
        io::Error::other("simulated power loss: the disk is gone")
    }

    fn check_power(&mut self) -> io::Result<()> {
        if self.cut {
            self.stats.refused += 1;
            return Err(Self::power_off());
        }
        Ok(())
    }
}

fn apply(image: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, data } => {
            let start = usize::try_from(*offset).expect("offset fits in memory");
            let end = start + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[start..end].copy_from_slice(data);
        }
        Change::SetLen(len) => {
            image.resize(usize::try_from(*len).expect("length fits in memory"), 0);
        }
    }
}

/// A disk with a volatile write cache. Clones share the same disk: keep one as the test's
/// handle and give [`SimulatedDisk::backend`] to redb.
#[derive(Clone, Default)]
pub struct SimulatedDisk {
    state: Arc<Mutex<DiskState>>,
}

impl fmt::Debug for SimulatedDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedDisk")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SimulatedDisk {
    /// An empty, powered disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// A powered disk whose platter holds `image` (fully durable).
    pub fn from_image(image: Vec<u8>) -> Self {
        let state = DiskState {
            current: image.clone(),
            durable: image,
            ..DiskState::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock leaves consistent data (every mutation is complete
        // before any call that could panic), so read through poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A storage backend for redb on this disk.
    pub fn backend(&self) -> DiskBackend {
        DiskBackend { disk: self.clone() }
    }

    /// Cuts the power now: every later call fails.
    pub fn cut_power(&self) {
        self.lock().cut = true;
    }

    /// True once the power is cut.
    pub fn is_cut(&self) -> bool {
        self.lock().cut
    }

    /// Lets `n` more `sync_data` calls succeed; the one after them finds the power cut (it
    /// fails and makes nothing durable).
    pub fn cut_after_syncs(&self, n: u64) {
        let mut state = self.lock();
        state.cut_at_syncs = Some(state.stats.syncs + n);
    }

    /// Lets `n` more `write` calls succeed; the one after them is interrupted by the power cut
    /// (it fails; in a torn mode part of it may still reach the platter).
    pub fn cut_after_writes(&self, n: u64) {
        let mut state = self.lock();
        state.cut_at_writes = Some(state.stats.writes + n);
    }

    /// What the disk has served so far.
    pub fn stats(&self) -> DiskStats {
        let state = self.lock();
        DiskStats {
            pending: state.pending.len(),
            len: state.current.len() as u64,
            durable_len: state.durable.len() as u64,
            cut: state.cut,
            ..state.stats
        }
    }

    /// The bytes that would be found on the platter if the power went off now (it need not
    /// be off already).
    pub fn surviving_image(&self, survival: Survival) -> Vec<u8> {
        let state = self.lock();
        let mut image = state.durable.clone();
        let unsynced = state.pending.iter().chain(state.interrupted.as_ref());
        match survival {
            Survival::Strict => {}
            Survival::Everything => {
                for change in unsynced {
                    apply(&mut image, change);
                }
            }
            Survival::TornWrites { seed } => {
                let mut rng = StdRng::seed_from_u64(seed);
                for change in unsynced {
                    if rng.random_bool(0.5) {
                        apply(&mut image, change);
                    }
                }
            }
            Survival::TornSectors { seed } => {
                let mut rng = StdRng::seed_from_u64(seed);
                for change in unsynced {
                    match change {
                        Change::SetLen(_) => {
                            if rng.random_bool(0.5) {
                                apply(&mut image, change);
                            }
                        }
                        Change::Write { offset, data } => {
                            let end = offset + data.len() as u64;
                            let mut start = *offset;
                            while start < end {
                                let piece_end = ((start / SECTOR + 1) * SECTOR).min(end);
                                if rng.random_bool(0.5) {
                                    let from = (start - offset) as usize;
                                    let to = (piece_end - offset) as usize;
                                    let piece = Change::Write {
                                        offset: start,
                                        data: data[from..to].to_vec(),
                                    };
                                    apply(&mut image, &piece);
                                }
                                start = piece_end;
                            }
                        }
                    }
                }
            }
        }
        image
    }

    /// A fresh, powered disk holding what survives a power cut now.
    pub fn reboot(&self, survival: Survival) -> SimulatedDisk {
        SimulatedDisk::from_image(self.surviving_image(survival))
    }
}

/// The [`StorageBackend`] redb uses on a [`SimulatedDisk`].
#[derive(Clone)]
pub struct DiskBackend {
    disk: SimulatedDisk,
}

impl fmt::Debug for DiskBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskBackend")
            .field("disk", &self.disk)
            .finish()
    }
}

impl DiskBackend {
    /// The disk under this backend.
    pub fn disk(&self) -> &SimulatedDisk {
        &self.disk
    }
}

impl StorageBackend for DiskBackend {
    fn len(&self) -> io::Result<u64> {
        let mut state = self.disk.lock();
        state.check_power()?;
        Ok(state.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.check_power()?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let source = state
            .current
            .get(start..start + out.len())
            .ok_or_else(out_of_range)?;
        out.copy_from_slice(source);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.check_power()?;
        let change = Change::SetLen(len);
        apply(&mut state.current, &change);
        state.pending.push(change);
        state.stats.set_lens += 1;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.check_power()?;
        if state.cut_at_syncs.is_some_and(|at| state.stats.syncs >= at) {
            state.cut = true;
            state.stats.refused += 1;
            return Err(DiskState::power_off());
        }
        let pending = std::mem::take(&mut state.pending);
        for change in &pending {
            apply(&mut state.durable, change);
        }
        debug_assert_eq!(state.durable, state.current);
        state.stats.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.disk.lock();
        state.check_power()?;
        let change = Change::Write {
            offset,
            data: data.to_vec(),
        };
        if state
            .cut_at_writes
            .is_some_and(|at| state.stats.writes >= at)
        {
            state.cut = true;
            state.stats.refused += 1;
            state.interrupted = Some(change);
            return Err(DiskState::power_off());
        }
        // Like a file: writing past the end is refused by redb's contract, so check it.
        if offset + data.len() as u64 > state.current.len() as u64 {
            return Err(out_of_range());
        }
        apply(&mut state.current, &change);
        state.pending.push(change);
        state.stats.writes += 1;
        Ok(())
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access past the end of the disk",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    #[test]
    fn reads_see_writes_and_only_synced_bytes_survive_strictly() {
        let disk = SimulatedDisk::new();
        let b = disk.backend();
        b.set_len(8).unwrap();
        b.write(0, b"abcd").unwrap();
        b.sync_data().unwrap();
        b.write(4, b"efgh").unwrap();
        b.set_len(12).unwrap();
        let mut out = [0u8; 8];
        b.read(0, &mut out).unwrap();
        assert_eq!(&out, b"abcdefgh");
        assert_eq!(b.len().unwrap(), 12);
        let s = disk.stats();
        assert_eq!((s.writes, s.syncs, s.set_lens, s.pending), (2, 1, 2, 2));
        assert_eq!((s.len, s.durable_len), (12, 8));

        assert_eq!(disk.surviving_image(Survival::Strict), b"abcd\0\0\0\0");
        assert_eq!(
            disk.surviving_image(Survival::Everything),
            b"abcdefgh\0\0\0\0"
        );
        assert!(b.read(9, &mut out).is_err(), "reads past the end fail");
        assert!(b.write(10, b"xyz").is_err(), "writes past the end fail");
    }

    #[test]
    fn a_cut_fails_every_later_call() {
        let disk = SimulatedDisk::new();
        let b = disk.backend();
        b.set_len(4).unwrap();
        b.sync_data().unwrap();
        disk.cut_power();
        assert!(disk.is_cut());
        assert!(b.len().is_err());
        assert!(b.read(0, &mut [0u8; 1]).is_err());
        assert!(b.write(0, b"x").is_err());
        assert!(b.set_len(8).is_err());
        assert!(b.sync_data().is_err());
        assert_eq!(disk.stats().refused, 5);
        assert_eq!(disk.surviving_image(Survival::Strict), vec![0; 4]);
    }

    #[test]
    fn automatic_cuts_land_on_the_chosen_call() {
        let disk = SimulatedDisk::new();
        let b = disk.backend();
        b.set_len(16).unwrap();
        disk.cut_after_syncs(2);
        b.write(0, b"a").unwrap();
        b.sync_data().unwrap();
        b.write(1, b"b").unwrap();
        b.sync_data().unwrap();
        b.write(2, b"c").unwrap();
        assert!(b.sync_data().is_err(), "the third sync finds the power cut");
        assert!(disk.is_cut());
        assert_eq!(&disk.surviving_image(Survival::Strict)[..3], b"ab\0");

        let disk = SimulatedDisk::new();
        let b = disk.backend();
        b.set_len(16).unwrap();
        disk.cut_after_writes(1);
        b.write(0, b"a").unwrap();
        assert!(b.write(1, b"b").is_err(), "the second write is interrupted");
        assert!(b.sync_data().is_err());
        assert_eq!(disk.surviving_image(Survival::Strict), Vec::<u8>::new());
        // In a torn mode the interrupted write may have landed too.
        let landed = (0..64).any(|seed| {
            disk.surviving_image(Survival::TornWrites { seed })
                .get(1)
                .is_some_and(|&byte| byte == b'b')
        });
        assert!(landed);
    }

    #[test]
    fn torn_modes_keep_a_subset_of_unsynced_changes_in_order() {
        let disk = SimulatedDisk::new();
        let b = disk.backend();
        b.set_len(4 * SECTOR).unwrap();
        b.sync_data().unwrap();
        b.write(0, &vec![1; 4 * SECTOR as usize]).unwrap();
        b.write(0, &vec![2; SECTOR as usize]).unwrap();

        let mut whole = std::collections::HashSet::new();
        let mut torn_within_a_write = false;
        for seed in 0..64 {
            let image = disk.surviving_image(Survival::TornWrites { seed });
            assert_eq!(image.len(), 4 * SECTOR as usize);
            // A write survives whole or not at all.
            let first: Vec<u8> = (0..4).map(|s| image[(s * SECTOR) as usize]).collect();
            assert!(first[1..].iter().all(|&x| x == first[1]));
            whole.insert(first);

            let image = disk.surviving_image(Survival::TornSectors { seed });
            let tail: Vec<u8> = (1..4).map(|s| image[(s * SECTOR) as usize]).collect();
            torn_within_a_write |= tail.iter().any(|&x| x != tail[0]);
            // Deterministic given the seed.
            assert_eq!(image, disk.surviving_image(Survival::TornSectors { seed }));
        }
        // Every combination of the two writes shows up, and the later one wins when both land.
        assert!(whole.contains(&vec![0, 0, 0, 0]));
        assert!(whole.contains(&vec![1, 1, 1, 1]));
        assert!(whole.contains(&vec![2, 0, 0, 0]));
        assert!(whole.contains(&vec![2, 1, 1, 1]));
        assert!(torn_within_a_write);
    }

    #[test]
    fn redb_survives_a_cut_with_every_committed_write() {
        let disk = SimulatedDisk::new();
        let db = redb::Builder::new()
            .create_with_backend(disk.backend())
            .unwrap();
        for i in 0..20u64 {
            let txn = db.begin_write().unwrap();
            txn.open_table(T)
                .unwrap()
                .insert(i, b"x".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        disk.cut_after_writes(1);
        let txn = db.begin_write().unwrap();
        txn.open_table(T)
            .unwrap()
            .insert(99, b"y".as_slice())
            .unwrap();
        assert!(txn.commit().is_err(), "the commit sees the power cut");
        drop(db);

        for survival in [
            Survival::Strict,
            Survival::Everything,
            Survival::TornWrites { seed: 1 },
            Survival::TornSectors { seed: 2 },
        ] {
            let rebooted = disk.reboot(survival);
            let db = Database::builder()
                .create_with_backend(rebooted.backend())
                .unwrap_or_else(|e| panic!("{survival}: reopening failed: {e}"));
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(T).unwrap();
            for i in 0..20u64 {
                assert!(table.get(i).unwrap().is_some(), "{survival}: key {i} lost");
            }
        }
    }
}
