//! SIGKILL of a real process: this test binary re-executes itself to run only
//! [`sigkill_child`], which runs the [`workload`](crate::workload) on a redb file and prints
//! every answer it got; [`sigkill_mid_load`] kills it with SIGKILL mid-load, reopens the file
//! and checks the invariants ([`verify_after_restart`]). This proves the real file and the real
//! process: the order of redb's writes and fsyncs as the operating system sees them, which the
//! simulated disk only models.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wasmq_engine::{RedbOptions, Storage};

use crate::check::{Summary, verify_after_restart};
use crate::seeds;
use crate::workload::{Event, Journal, Recorder, consumer, create_queues, producer};

const CHILD_ENV: &str = "WASMQ_CRASH_CHILD";
const CHILD_SEED_ENV: &str = "WASMQ_CRASH_CHILD_SEED";
/// Sends acknowledged to the parent before it kills the child (at least).
const KILL_AFTER_SENT: usize = 2_000;

/// Not a test on its own: when `WASMQ_CRASH_CHILD` names a database, runs the workload on it
/// forever, printing every event on stdout, until [`sigkill_mid_load`] kills the process.
/// Without the variable it returns at once.
#[test]
fn sigkill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let broker = wasmq_engine::open(Storage::redb(&path, RedbOptions::default()))
            .await
            .expect("child: open");
        fn record_raw(line: &str) {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").expect("child: stdout");
            out.flush().expect("child: stdout");
        }
        let record: Recorder = Arc::new(|event| record_raw(&event.to_string()));
        // libtest has written "test sigkill::sigkill_child ... " without a newline: end that
        // line so the first event gets one of its own.
        record_raw("");
        let tags = Arc::new(AtomicU64::new(1));
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tasks = Vec::new();
        for _ in 0..3 {
            tasks.push(tokio::spawn(producer(
                broker.clone(),
                tags.clone(),
                StdRng::seed_from_u64(rng.random()),
                record.clone(),
                None,
            )));
        }
        for _ in 0..2 {
            tasks.push(tokio::spawn(consumer(
                broker.clone(),
                StdRng::seed_from_u64(rng.random()),
                record.clone(),
                None,
            )));
        }
        let all = async {
            for task in tasks {
                if let Err(stop) = task.await.expect("child: task") {
                    panic!("child: workload stopped: {stop:?}");
                }
            }
        };
        // The parent kills us long before this.
        if tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .is_err()
        {
            panic!("child: never killed");
        }
    });
}

/// Kills a child process running the workload with SIGKILL after it reported at least
/// [`KILL_AFTER_SENT`] acknowledged sends, then reopens its database and checks the
/// invariants. Three rounds (seeds 0..3, or `WASMQ_CRASH_SEED`), each killing later.
#[test]
fn sigkill_mid_load() {
    let seeds = match std::env::var("WASMQ_CRASH_SEED") {
        Ok(_) => seeds(1),
        Err(_) => (0..3).collect(),
    };
    for seed in seeds {
        let started = Instant::now();
        let kill_after = KILL_AFTER_SENT + seed as usize % 4 * 500;
        let (journal, summary) = sigkill_round(seed, kill_after);
        eprintln!(
            "sigkill_mid_load seed {seed}: {} sent, {} acked, {} in flight at the kill; \
             {summary:?} in {:?}",
            journal.sent.len(),
            journal.acked.len(),
            journal.in_flight().count(),
            started.elapsed()
        );
        assert!(
            !journal.acked.is_empty(),
            "seed {seed}: the child acked nothing"
        );
        assert!(
            summary.in_flight_back > 0,
            "seed {seed}: nothing was in flight at the kill"
        );
    }
}

/// One child run killed after `kill_after` acknowledged sends; panics naming the seed if an
/// invariant breaks.
fn sigkill_round(seed: u64, kill_after: usize) -> (Journal, Summary) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("queues.redb");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let broker = wasmq_engine::open(Storage::redb(&path, RedbOptions::default()))
            .await
            .expect("open");
        create_queues(&*broker).await.expect("create queues");
        broker.close().await.expect("close");
    });

    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "sigkill::sigkill_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .env(CHILD_SEED_ENV, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the child");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    // Complete lines only: the last one may be cut short by the kill.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        while stdout.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = lines_tx.send(complete.to_owned());
            }
            line.clear();
        }
    });

    let mut journal = Journal::default();
    let record_line = |line: &str, journal: &mut Journal| {
        // libtest's own output ("running 1 test") is not an event.
        if let Ok(event) = line.parse::<Event>() {
            journal.record(event);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while journal.sent.len() < kill_after {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(timeout) {
            Ok(line) => record_line(&line, &mut journal),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "seed {seed}: the child stopped or stalled after {} acknowledged sends; its \
                     stderr:\n{}",
                    journal.sent.len(),
                    stderr.join().unwrap_or_default()
                );
            }
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    // What the child wrote before it died counts too.
    for line in lines.try_iter() {
        record_line(&line, &mut journal);
    }
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        !status.success(),
        "seed {seed}: the child exited by itself ({status}); its stderr:\n{stderr}"
    );

    let summary = runtime.block_on(async {
        let broker = wasmq_engine::open(Storage::redb(&path, RedbOptions::default()))
            .await
            .expect("reopening after SIGKILL");
        let summary = verify_after_restart(&*broker, &journal).await;
        broker.close().await.expect("close");
        summary
    });
    let summary = summary.unwrap_or_else(|err| {
        panic!(
            "after SIGKILL (rerun with WASMQ_CRASH_SEED={seed}): {err:#}\nchild stderr:\n{stderr}"
        )
    });
    (journal, summary)
}
