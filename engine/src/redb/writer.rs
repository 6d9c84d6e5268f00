//! The single writer thread and its group commit.
//!
//! Every state change is a job sent to one thread that owns the write side of the database.
//! The thread takes every job waiting in its queue, runs them all in one write transaction and
//! commits once, so one fsync serves every message of the group. Callers are answered only
//! after that commit is durable. If a commit (or any storage call) fails, the transaction is
//! dropped, every job of the group gets the error, and the writer refuses all later jobs: the
//! in-memory counters may no longer match the disk, and only a reopen re-derives them.
//!
//! When no job has come for a while after writes, the writer may compact the file
//! ([`super::compact`]): it is the one thread that can have the database to itself.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{CompactionError, Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{oneshot, watch};

use super::compact::{Compaction, compact, file_bytes};
use super::records::{
    COUNTERS, Counters, DEDUP, DEDUP_EXPIRY, LEASES, LeaseRecord, MESSAGES, META, QUEUES,
    QueueRecord, READY,
};
use crate::clock::Clock;
use crate::error::{BrokerError, BrokerResult};

/// Most jobs committed together; bounds the size of one transaction.
const MAX_GROUP: usize = 512;

/// Called after the group's commit with its result.
type Finish = Box<dyn FnOnce(Result<(), BrokerError>) + Send>;
/// Runs one operation inside the group's transaction (`None`: the writer is stopped).
type Run = Box<dyn FnOnce(Option<&mut Txn<'_>>) -> Finish + Send>;

/// What a job is for. The host's periodic sweeps are [`Work::Maintenance`]: they do not make
/// the writer busy, or a host that sweeps every second would never be idle enough to compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Work {
    /// A caller's operation (send, lease, settle, …).
    Operation,
    /// Housekeeping (expiring leases, messages past their retention, dedup keys).
    Maintenance,
}

struct Job {
    work: Work,
    run: Run,
}

/// What the writer keeps in memory between transactions. Loaded at open; only the writer
/// thread touches it.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    pub queues: HashMap<String, QueueRecord>,
    pub names: HashMap<u32, String>,
    pub counters: HashMap<u32, Counters>,
    pub next_seq: u64,
    pub next_queue_id: u32,
}

/// One write transaction with every table open, plus the writer's memory.
pub(super) struct Txn<'t> {
    /// The group's time, ms since the epoch.
    pub now: u64,
    pub state: &'t mut WriterState,
    dirty_counters: HashSet<u32>,
    /// Messages released from each lease in this transaction, applied to [`LEASES`] at flush.
    pub released: HashMap<(u64, u32, u64), u32>,
    /// Set when a storage call failed: the transaction must not be committed.
    broken: Option<BrokerError>,
    /// Whether the transaction may have changed anything: every operation may; housekeeping
    /// says so when it did. A group that changed nothing is not committed (an idle host's
    /// sweeps cost no fsync).
    pub changed: bool,
    pub meta: Table<'t, &'static str, u64>,
    pub queues: Table<'t, &'static str, &'static [u8]>,
    pub counters: Table<'t, u32, [u8; Counters::LEN]>,
    pub messages: Table<'t, (u32, u64), &'static [u8]>,
    pub ready: Table<'t, (u32, u64, u64), u64>,
    pub leases: Table<'t, (u64, u32, u64), &'static [u8]>,
    pub dedup: Table<'t, (u32, &'static str), u64>,
    pub dedup_expiry: Table<'t, (u64, u32, &'static str), ()>,
}

impl<'t> Txn<'t> {
    pub(super) fn open(
        txn: &'t WriteTransaction,
        state: &'t mut WriterState,
        now: u64,
    ) -> BrokerResult<Self> {
        Ok(Self {
            now,
            state,
            dirty_counters: HashSet::new(),
            released: HashMap::new(),
            broken: None,
            changed: false,
            meta: txn.open_table(META)?,
            queues: txn.open_table(QUEUES)?,
            counters: txn.open_table(COUNTERS)?,
            messages: txn.open_table(MESSAGES)?,
            ready: txn.open_table(READY)?,
            leases: txn.open_table(LEASES)?,
            dedup: txn.open_table(DEDUP)?,
            dedup_expiry: txn.open_table(DEDUP_EXPIRY)?,
        })
    }

    /// A fresh number from the global sequence (message seqs, ready tickets, lease ids).
    pub(super) fn next_seq(&mut self) -> u64 {
        let seq = self.state.next_seq;
        self.state.next_seq += 1;
        seq
    }

    /// The counters of queue `id`, marked to be written at commit.
    pub(super) fn counters_mut(&mut self, id: u32) -> &mut Counters {
        self.dirty_counters.insert(id);
        self.state.counters.entry(id).or_default()
    }

    /// Forgets the counters of a deleted queue.
    pub(super) fn drop_counters(&mut self, id: u32) -> BrokerResult<()> {
        self.dirty_counters.remove(&id);
        self.state.counters.remove(&id);
        self.counters.remove(id)?;
        Ok(())
    }

    /// Writes the in-memory counters and sequence that this transaction changed, and updates
    /// (or deletes, once nothing is held) the lease records it released messages from.
    pub(super) fn flush(&mut self) -> BrokerResult<()> {
        for (key, released) in std::mem::take(&mut self.released) {
            let record = self
                .leases
                .get(key)?
                .and_then(|raw| LeaseRecord::decode(raw.value()));
            match record {
                Some(mut record) if record.held > released => {
                    record.held -= released;
                    self.leases.insert(key, record.encode().as_slice())?;
                }
                Some(_) => {
                    self.leases.remove(key)?;
                }
                None => {}
            }
        }
        for id in std::mem::take(&mut self.dirty_counters) {
            if let Some(c) = self.state.counters.get(&id) {
                self.counters.insert(id, c.encode())?;
            }
        }
        self.meta.insert("next_seq", self.state.next_seq)?;
        self.meta
            .insert("next_queue_id", u64::from(self.state.next_queue_id))?;
        Ok(())
    }
}

/// Handle to the writer thread.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread on an opened database whose state was loaded into `state`.
    /// `changes` is bumped by every commit that changed something ([`commit_group`]). With
    /// `compaction`, the file at its
    /// path is compacted when the writer is idle and the policy says it is worth it.
    pub(super) fn start(
        db: Arc<RwLock<Database>>,
        state: WriterState,
        clock: Arc<dyn Clock>,
        changes: watch::Sender<u64>,
        compaction: Option<(PathBuf, Compaction)>,
    ) -> Self {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("wasmq-redb-writer".into())
            .spawn(move || {
                let mut idle = compaction.map(|(path, policy)| Idle {
                    path,
                    policy,
                    busy_at: None,
                });
                run(&db, state, &*clock, &inbox, &changes, &mut idle);
            })
            .expect("spawning the redb writer thread");
        Self {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// Runs `op` in the next group transaction and answers once that transaction is durable.
    pub(super) async fn submit<T, F>(&self, op: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> BrokerResult<T> + Send + 'static,
    {
        self.submit_as(Work::Operation, op).await
    }

    /// [`Self::submit`] for `work` of the given kind.
    pub(super) async fn submit_as<T, F>(&self, work: Work, op: F) -> BrokerResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> BrokerResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let run: Run = Box::new(move |txn| {
            let result = match txn {
                Some(txn) => {
                    if work == Work::Operation {
                        txn.changed = true;
                    }
                    let result = op(txn);
                    if let Err(err @ BrokerError::Unavailable(_)) = &result {
                        txn.broken.get_or_insert_with(|| err.clone());
                    }
                    result
                }
                None => Err(BrokerError::Unavailable("the writer is stopped".into())),
            };
            Box::new(move |commit: Result<(), BrokerError>| {
                let _ = reply.send(commit.and(result));
            })
        });
        let sender = self
            .jobs
            .as_ref()
            .ok_or_else(|| BrokerError::Unavailable("the broker is closed".into()))?;
        sender
            .send(Job { work, run })
            .map_err(|_| BrokerError::Unavailable("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| BrokerError::Unavailable("the writer thread has stopped".into()))?
    }

    /// Stops accepting jobs, lets the thread finish the ones queued and waits for it.
    pub(super) fn stop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the queued jobs; do not block here.
        self.jobs.take();
    }
}

/// The writer's idle-time compaction of the file at `path`.
struct Idle {
    path: PathBuf,
    policy: Compaction,
    /// When an operation was last committed, if one was since the last compaction check:
    /// only then can compacting be worth it.
    busy_at: Option<Instant>,
}

impl Idle {
    /// Compacts the file if operations were committed since the last look, none for the
    /// policy's idle time, and the policy finds the file worth it.
    fn look(&mut self, db: &RwLock<Database>, state: &WriterState) {
        let Some(busy_at) = self.busy_at.filter(|at| at.elapsed() >= self.policy.idle) else {
            return;
        };
        self.busy_at = None;
        if !self
            .policy
            .worth_it(file_bytes(&self.path), state.counters.values())
        {
            return;
        }
        let mut db = db.write().unwrap_or_else(PoisonError::into_inner);
        match compact(&mut db, &self.path) {
            Ok(done) => tracing::info!(
                before_bytes = done.before_bytes,
                after_bytes = done.after_bytes,
                took_ms = done.took.as_millis() as u64,
                "compacted the queue file"
            ),
            Err(CompactionError::TransactionInProgress) => {
                // A read was open (the dashboard, metrics): try again at the next look.
                self.busy_at = Some(busy_at);
                tracing::debug!("compacting the queue file must wait for a read");
            }
            Err(err) => {
                tracing::warn!(error = %err, "the queue file could not be compacted");
            }
        }
    }
}

fn run(
    db: &RwLock<Database>,
    mut state: WriterState,
    clock: &dyn Clock,
    inbox: &mpsc::Receiver<Job>,
    changes: &watch::Sender<u64>,
    idle: &mut Option<Idle>,
) {
    let mut stopped: Option<BrokerError> = None;
    let wait = idle.as_ref().map_or(Duration::MAX, |idle| idle.policy.idle);
    loop {
        let first = match inbox.recv_timeout(wait) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                if stopped.is_none()
                    && let Some(idle) = idle
                {
                    idle.look(db, &state);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match inbox.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Some(err) = &stopped {
            for job in group {
                (job.run)(None)(Err(err.clone()));
            }
            continue;
        }
        let operations = group.iter().any(|job| job.work == Work::Operation);
        let committed = commit_group(db, &mut state, clock.now_ms(), group, changes);
        if committed.is_ok()
            && let Some(idle) = idle
        {
            if operations {
                idle.busy_at = Some(Instant::now());
            } else {
                idle.look(db, &state);
            }
        }
        if let Err(err) = committed {
            tracing::error!(error = %err, "queue storage commit failed; refusing writes until reopened");
            stopped = Some(BrokerError::Unavailable(format!(
                "a commit failed ({err}); writes are refused until the host restarts"
            )));
        }
    }
}

/// Runs a group of jobs in one transaction and commits it, unless it changed nothing; then
/// bumps `changes` (before any job is answered, so that a caller who waits on it after its
/// answer never sees its own commit as news), and answers every job.
fn commit_group(
    db: &RwLock<Database>,
    state: &mut WriterState,
    now: u64,
    group: Vec<Job>,
    changes: &watch::Sender<u64>,
) -> Result<(), BrokerError> {
    let txn = match begin(db) {
        Ok(txn) => txn,
        Err(err) => {
            for job in group {
                (job.run)(None)(Err(err.clone()));
            }
            return Err(err);
        }
    };
    let mut finishes = Vec::with_capacity(group.len());
    let (broken, changed) = match Txn::open(&txn, state, now) {
        Ok(mut ctx) => {
            for job in group {
                finishes.push((job.run)(Some(&mut ctx)));
            }
            if ctx.changed
                && ctx.broken.is_none()
                && let Err(err) = ctx.flush()
            {
                ctx.broken = Some(err);
            }
            (ctx.broken.take(), ctx.changed)
        }
        Err(err) => {
            for job in group {
                finishes.push((job.run)(None));
            }
            (Some(err), true)
        }
    };
    let result = match broken {
        Some(err) => {
            let _ = txn.abort();
            Err(err)
        }
        None if !changed => txn.abort().map_err(BrokerError::from),
        None => txn.commit().map_err(BrokerError::from),
    };
    if result.is_ok() && changed {
        changes.send_modify(|n| *n = n.wrapping_add(1));
    }
    for finish in finishes {
        finish(result.clone());
    }
    result
}

fn begin(db: &RwLock<Database>) -> BrokerResult<WriteTransaction> {
    let mut txn = db
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .begin_write()?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    Ok(txn)
}
