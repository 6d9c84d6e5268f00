//! End-to-end: real components from `guest-examples/` (build them with
//! `scripts/build-guests.sh`) run by the real wasmtime runtime against a real redb file,
//! driven through the scriptable guest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use wasmq_host::dispatch::ConsumerStats;
use wasmq_host::engine::{ConsumerSettings, SendRequest};
use wasmq_host::runtime::{ComponentLimits, ComponentOptions, ConsumerComponent, Failure, Runtime};
use wasmq_tests::{RunningDispatcher, TestConsumer, TestHost};

/// Queues `dlq` and `out`, and `jobs` (carrying `consumer`'s settings) consumed by the
/// scripted guest with `limits`, its binding `OUT` sending to `out`.
async fn setup(consumer: ConsumerSettings, limits: ComponentLimits) -> TestHost {
    let scripted = TestConsumer::guest("scripted")
        .settings(consumer)
        .limits(limits)
        .bind("OUT", "out");
    TestHost::builder()
        .queue("dlq")
        .queue("out")
        .consumer("jobs", scripted)
        .build()
        .await
}

async fn default_setup() -> TestHost {
    setup(ConsumerSettings::default(), ComponentLimits::default()).await
}

/// Batches of one message, delivered as soon as it is visible.
fn one_message_batches() -> ConsumerSettings {
    ConsumerSettings {
        max_batch_size: 1,
        max_batch_timeout: 0,
        ..ConsumerSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_ack_when_handle_returns_ok() {
    let s = default_setup().await;
    s.send_texts("jobs", &["noop", "print:hello", "noop"]).await;
    let d = s.deliver("jobs").await;
    assert_eq!(d.run.failure, None);
    assert_eq!(d.report.acked, 3);
    assert!(
        d.run.output.iter().any(|line| line == "hello"),
        "{:?}",
        d.run.output
    );
    assert_eq!(s.broker.metrics("jobs").await.unwrap().backlog.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ack_survives_a_failed_batch() {
    let s = default_setup().await;
    s.send_texts("jobs", &["ack", "fail:boom"]).await;
    let d = s.deliver("jobs").await;
    assert_eq!(d.run.failure, Some(Failure::Error("boom".into())));
    assert_eq!((d.report.acked, d.report.retried), (1, 1));
    assert_eq!(
        s.lease_and_retry("jobs").await,
        [("fail:boom".to_owned(), 2)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_retry_with_delay_and_retry_all() {
    let s = default_setup().await;
    s.send_texts("jobs", &["retry:30", "noop"]).await;
    let d = s.deliver("jobs").await;
    assert_eq!((d.report.acked, d.report.retried), (1, 1));
    assert_eq!(s.broker.metrics("jobs").await.unwrap().delayed, 1);

    s.send_texts("jobs", &["ack", "retry-all:0"]).await;
    let d = s.deliver("jobs").await;
    assert_eq!((d.report.acked, d.report.retried), (1, 1));
}

/// Every precedence case of `docs/semantics.md`, driven through the guest: the bodies of one batch and
/// what must become of each message (`A` acked, `R` retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_cases_through_a_real_guest() {
    let cases: &[(&[&str], &str)] = &[
        (&["ack;retry"], "A"), // first call on a message wins
        (&["retry;ack"], "R"),
        (&["ack", "retry-all"], "AR"), // a single-message call made first beats retry-all
        (&["retry", "ack-all"], "RA"), // … and ack-all
        (&["retry-all", "ack"], "RR"), // a single-message call made after retry-all is ignored
        (&["ack-all", "retry"], "AA"), // … and after ack-all
        (&["ack-all;fail"], "A"),      // ack-all is explicit: a later failure keeps it
        (&["retry-all", "noop"], "RR"), // retry-all then ok: retried
        (&["retry-all;ack-all", "noop"], "RR"), // first batch-wide call wins
        (&["noop", "fail"], "RR"),     // failure retries what was not acked
        (&["noop", "noop"], "AA"),     // ok acks what was not retried
    ];
    for (bodies, expected) in cases {
        let s = default_setup().await;
        s.send_texts("jobs", bodies).await;
        let d = s.deliver("jobs").await;
        let acked = expected.matches('A').count() as u32;
        let retried = expected.matches('R').count() as u32;
        assert_eq!(
            (d.report.acked, d.report.retried),
            (acked, retried),
            "bodies {bodies:?}"
        );
        // Which ones: the retried bodies are the ones still waiting.
        let mut waiting: Vec<_> = s
            .lease_and_retry("jobs")
            .await
            .into_iter()
            .map(|m| m.0)
            .collect();
        waiting.sort();
        let mut want: Vec<_> = bodies
            .iter()
            .zip(expected.chars())
            .filter(|(_, fate)| *fate == 'R')
            .map(|(body, _)| body.to_string())
            .collect();
        want.sort();
        assert_eq!(waiting, want, "bodies {bodies:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_without_a_dead_letter_queue_drop_the_message() {
    let consumer = ConsumerSettings {
        max_retries: 0,
        ..ConsumerSettings::default()
    };
    let s = setup(consumer, ComponentLimits::default()).await;
    s.send_texts("jobs", &["fail"]).await;
    let d = s.deliver("jobs").await;
    assert_eq!((d.report.dropped, d.report.retried), (1, 0));
    let m = s.broker.metrics("jobs").await.unwrap();
    assert_eq!((m.dropped, m.backlog.count), (1, 0));
    assert_eq!(s.broker.metrics("dlq").await.unwrap().backlog.count, 0);
}

/// A retry with an out-of-range delay fails the batch like a thrown exception: the ack made
/// before it stands, everything else is retried, nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_retry_delay_fails_the_batch_and_never_acks() {
    for (bodies, call) in [
        (["ack", "retry:86401", "noop"], "retry("),
        (
            ["ack", "retry-all:100000", "noop"],
            "retry-all(Some(100000))",
        ),
    ] {
        let s = default_setup().await;
        s.send_texts("jobs", &bodies).await;
        let d = s.deliver("jobs").await;
        match &d.run.failure {
            Some(Failure::Trap(text)) => assert!(
                text.contains(call) && text.contains("over the maximum of 86400"),
                "{text}"
            ),
            other => panic!("{bodies:?}: expected a trap naming the call, got {other:?}"),
        }
        assert_eq!((d.report.acked, d.report.retried), (1, 2), "{bodies:?}");
        let mut waiting = s.lease_and_retry("jobs").await;
        waiting.sort();
        assert_eq!(
            waiting,
            [(bodies[2].to_owned(), 2), (bodies[1].to_owned(), 2)],
            "{bodies:?}"
        );
    }
}

/// A guest that calls `ack` in a loop is stopped after `MAX_CALLS_PER_BATCH` calls; its batch
/// fails (its earlier ack stands) and the host keeps nothing of the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_flood_fails_the_batch() {
    let s = default_setup().await;
    s.send_texts("jobs", &["noop", "ack-times:100000"]).await;
    let d = s.deliver("jobs").await;
    match &d.run.failure {
        Some(Failure::Trap(text)) => assert!(
            text.contains(&format!(
                "more than {} calls",
                wasmq_host::runtime::MAX_CALLS_PER_BATCH
            )),
            "{text}"
        ),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(d.run.calls.len(), wasmq_host::runtime::MAX_CALLS_PER_BATCH);
    // The flooding message was acked by its first call; the other one is retried.
    assert_eq!((d.report.acked, d.report.retried), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_fails_the_batch_and_the_host_keeps_serving() {
    let s = default_setup().await;
    s.send_texts("jobs", &["ack", "trap:kaboom"]).await;
    let d = s.deliver("jobs").await;
    assert!(
        matches!(d.run.failure, Some(Failure::Trap(_))),
        "{:?}",
        d.run.failure
    );
    // The ack came before the trap and stands; the trapping message is retried.
    assert_eq!((d.report.acked, d.report.retried), (1, 1));

    assert_eq!(
        s.lease_and_retry("jobs").await,
        [("trap:kaboom".to_owned(), 2)]
    );

    // The same component serves the next batch normally.
    s.broker.purge("jobs").await.unwrap();
    s.send_texts("jobs", &["noop"]).await;
    let d = s.deliver("jobs").await;
    assert_eq!((d.run.failure, d.report.acked), (None, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_interrupts_an_endless_loop() {
    let limits = ComponentLimits {
        timeout: Duration::from_millis(200),
        ..ComponentLimits::default()
    };
    let s = setup(ConsumerSettings::default(), limits).await;
    s.send_texts("jobs", &["loop"]).await;
    let started = std::time::Instant::now();
    let d = s.deliver("jobs").await;
    assert_eq!(d.run.failure, Some(Failure::Timeout));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(d.report.retried, 1);
}

/// The time limit holds while the guest waits in a host call (here a sleep), not only while
/// it computes: the batch fails at its deadline and the ack made before stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_holds_while_the_guest_sleeps_in_a_host_call() {
    let limits = ComponentLimits {
        timeout: Duration::from_millis(300),
        ..ComponentLimits::default()
    };
    let s = setup(ConsumerSettings::default(), limits).await;
    s.send_texts("jobs", &["ack", "sleep:20000"]).await;
    let started = Instant::now();
    let d = s.deliver("jobs").await;
    let took = started.elapsed();
    assert_eq!(d.run.failure, Some(Failure::Timeout));
    assert_eq!((d.report.acked, d.report.retried), (1, 1));
    // Within 10 % + 100 ms of the limit (the batch's lease and settle included).
    assert!(
        took <= Duration::from_millis(430),
        "the batch took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_stops_a_runaway_allocation() {
    let limits = ComponentLimits {
        memory_bytes: 16 * 1024 * 1024,
        ..ComponentLimits::default()
    };
    let s = setup(ConsumerSettings::default(), limits).await;
    s.send_texts("jobs", &["oom"]).await;
    let d = s.deliver("jobs").await;
    assert!(
        matches!(d.run.failure, Some(Failure::Trap(_))),
        "{:?}",
        d.run.failure
    );
    assert_eq!(d.report.retried, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_move_to_the_dead_letter_queue() {
    let consumer = ConsumerSettings {
        max_retries: 1,
        dead_letter_queue: Some("dlq".into()),
        ..ConsumerSettings::default()
    };
    let s = setup(consumer, ComponentLimits::default()).await;
    s.send_texts("jobs", &["fail"]).await;
    assert_eq!(s.deliver("jobs").await.report.retried, 1);
    assert_eq!(s.deliver("jobs").await.report.dead_lettered, 1);
    assert_eq!(s.lease_and_retry("dlq").await, [("fail".to_owned(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_fans_out_to_its_bindings_only() {
    let s = default_setup().await;
    s.send_texts("jobs", &["send:OUT:hello;send-batch:OUT:3:n{i}"])
        .await;
    let d = s.deliver("jobs").await;
    assert_eq!(d.run.failure, None);
    let mut out: Vec<_> = s
        .lease_and_retry("out")
        .await
        .into_iter()
        .map(|m| m.0)
        .collect();
    out.sort();
    assert_eq!(out, ["hello", "n0", "n1", "n2"]);

    s.send_texts("jobs", &["send:NOPE:x"]).await;
    let d = s.deliver("jobs").await;
    assert!(
        matches!(&d.run.failure, Some(Failure::Error(e)) if e.contains("UnknownBinding")),
        "{:?}",
        d.run.failure
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_flushes_on_size_and_on_timeout() {
    let consumer = ConsumerSettings {
        max_batch_size: 3,
        max_batch_timeout: 1,
        ..ConsumerSettings::default()
    };
    let mut s = setup(consumer, ComponentLimits::default()).await;
    let running = RunningDispatcher::start(s.take_dispatcher("jobs"));
    let broker = &s.broker;

    // Two messages wait for the batch timeout (1 s); the third fills the batch at once.
    s.send_texts("jobs", &["noop", "noop"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        broker.metrics("jobs").await.unwrap().acked,
        0,
        "delivered before full or due"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while broker.metrics("jobs").await.unwrap().acked < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "batch timeout never fired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let sent = std::time::Instant::now();
    s.send_texts("jobs", &["noop", "noop", "noop"]).await;
    while broker.metrics("jobs").await.unwrap().acked < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "full batch never delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        sent.elapsed() < Duration::from_millis(900),
        "a full batch waited for the timeout"
    );

    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_batches_run_at_once_and_never_more() {
    let scripted = TestConsumer::guest("scripted")
        .settings(one_message_batches())
        .observed();
    let mut s = TestHost::builder().consumer("jobs", scripted).build().await;
    let dispatcher = s.take_dispatcher("jobs").with_concurrency(4);
    let batch = (0..8).map(|_| SendRequest::text("sleep:400")).collect();
    s.send("jobs", batch).await;
    let running = RunningDispatcher::start(dispatcher);

    let started = s.started("jobs");
    let mut starts = Vec::new();
    for _ in 0..8 {
        let batch = tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await
            .expect("a batch starts")
            .unwrap();
        starts.push(batch.at);
    }
    // Each batch sleeps 400 ms: four start together, the next four only as those finish.
    let first = starts[0];
    let early = starts
        .iter()
        .filter(|at| at.duration_since(first) < Duration::from_millis(200))
        .count();
    assert_eq!(
        early,
        4,
        "batches started at {:?}",
        starts
            .iter()
            .map(|at| at.duration_since(first))
            .collect::<Vec<_>>()
    );
    running.stop().await;
    assert_eq!(s.broker.metrics("jobs").await.unwrap().acked, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_without_the_handler_export_is_refused() {
    let runtime = Runtime::new().unwrap();
    let empty = wat::parse_str("(component)").unwrap();
    let err = ConsumerComponent::new(&runtime, "empty", &empty, ComponentOptions::default())
        .err()
        .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("component `empty` is not a consumer")
            && text.contains("wasmq:queues/handler@0.1.0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_module_is_refused() {
    let runtime = Runtime::new().unwrap();
    // A core module is not a component at all.
    let err = ConsumerComponent::new(
        &runtime,
        "bad",
        b"\0asm\x01\0\0\0",
        ComponentOptions::default(),
    )
    .err()
    .expect("refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("component `bad` is a core WebAssembly module, not a component")
            && text.contains("wasm32-wasip2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_scales_up_with_the_backlog_and_back_down_when_it_drains() {
    let mut s = setup(one_message_batches(), ComponentLimits::default()).await;
    let stats = ConsumerStats::default();
    let dispatcher = s.take_dispatcher("jobs");
    let running =
        RunningDispatcher::start(dispatcher.with_concurrency(4).with_stats(stats.clone()));
    let broker = &s.broker;
    let level = || stats.concurrency("scripted", "jobs");
    let acked = || async { broker.metrics("jobs").await.unwrap().acked };

    // One message at a time: one batch at a time.
    for _ in 0..3 {
        let before = acked().await;
        broker
            .send("jobs", SendRequest::text("sleep:50"))
            .await
            .unwrap();
        while acked().await == before {
            assert!(level() <= 1, "level {} under light load", level());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // A backlog of slow batches: the level climbs to the ceiling and never past it.
    let batch = (0..12).map(|_| SendRequest::text("sleep:300")).collect();
    broker.send_batch("jobs", batch, None).await.unwrap();
    let mut highest = 0;
    while acked().await < 15 {
        highest = highest.max(level());
        assert!(level() <= 4, "level {}", level());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(highest, 4);

    // Drained: back to one.
    let deadline = Instant::now() + Duration::from_secs(3);
    while level() != 1 {
        assert!(Instant::now() < deadline, "level stays at {}", level());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
}

/// Two queues share a host-wide ceiling of one batch in flight: while one has a long backlog
/// (whose batches follow each other in one commit each), the other's message still gets its
/// turn after the batch that is running, not after the whole backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_does_not_keep_another_queue_from_the_host_wide_ceiling() {
    let scripted = || TestConsumer::guest("scripted").settings(one_message_batches());
    let mut s = TestHost::builder()
        .consumer("long", scripted())
        .consumer("short", scripted())
        .build()
        .await;
    let ceiling = Arc::new(Semaphore::new(1));
    let long = s.take_dispatcher("long").with_ceiling(ceiling.clone());
    let short = s.take_dispatcher("short").with_ceiling(ceiling);
    let backlog = (0..20).map(|_| SendRequest::text("sleep:50")).collect();
    s.broker.send_batch("long", backlog, None).await.unwrap();
    let running = [
        RunningDispatcher::start(long),
        RunningDispatcher::start(short),
    ];
    let acked = |queue: &'static str| {
        let broker = s.broker.clone();
        async move { broker.metrics(queue).await.unwrap().acked }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked("long").await == 0 {
        assert!(Instant::now() < deadline, "the long queue never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.broker
        .send("short", SendRequest::text("noop"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked("short").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the short queue never got a turn"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let long_done = acked("long").await;
    assert!(
        long_done < 10,
        "the short queue waited for {long_done} of the long queue's 20 batches"
    );
    for dispatcher in running {
        dispatcher.stop().await;
    }
}
