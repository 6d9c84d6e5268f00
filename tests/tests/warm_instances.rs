//! Warm instances: a consumer's instance runs batch after batch with its globals intact (as a
//! warm Cloudflare isolate does) until it traps or times out, holds more than half its memory
//! limit, or has run `max_batches_per_instance`; `fresh_instance` gives every batch a new one.
//! The `scripted` guest's `count` prints how many times *this instance* counted.

use std::time::Duration;

use wasmq_host::runtime::{
    BatchRun, ComponentLimits, ComponentOptions, ConsumerComponent, Failure, InstanceReuse, Runtime,
};
use wasmq_tests::{guest, one_message_batch};

fn scripted(reuse: InstanceReuse) -> ConsumerComponent {
    let options = ComponentOptions {
        reuse,
        limits: ComponentLimits {
            timeout: Duration::from_secs(2),
            memory_bytes: 32 << 20,
            ..ComponentLimits::default()
        },
        ..ComponentOptions::default()
    };
    ConsumerComponent::new(
        &Runtime::new().unwrap(),
        "scripted",
        &guest("scripted"),
        options,
    )
    .unwrap()
}

/// Runs one batch of one message with `body`.
async fn batch(component: &ConsumerComponent, body: &str) -> BatchRun {
    component
        .run_batch(one_message_batch(body.as_bytes()))
        .await
}

/// The `count N` the batch printed.
async fn count(component: &ConsumerComponent, before: &str) -> u32 {
    let run = batch(component, &format!("{before}count")).await;
    let line = run
        .output
        .iter()
        .find_map(|line| line.strip_prefix("count "))
        .unwrap_or_else(|| panic!("no count in {run:?}"));
    line.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_instance_keeps_its_globals_until_it_fails_or_is_recycled() {
    let warm = scripted(InstanceReuse::default());
    assert_eq!(count(&warm, "").await, 1);
    assert_eq!(count(&warm, "").await, 2);
    // A handler error is the guest's answer, not a broken instance: it stays warm.
    let failed = batch(&warm, "fail:no").await;
    assert_eq!(failed.failure, Some(Failure::Error("no".into())));
    assert_eq!(count(&warm, "").await, 3);
    // Each batch's output is its own.
    let run = batch(&warm, "print:only mine").await;
    assert_eq!(run.output.len(), 2, "{:?}", run.output);
    assert!(
        run.output.iter().any(|l| l == "only mine"),
        "{:?}",
        run.output
    );
    assert!(
        !run.output.iter().any(|l| l.starts_with("count ")),
        "{:?}",
        run.output
    );
    // A trap leaves the instance in whatever state the call was cut off in: never reused.
    let trapped = batch(&warm, "count;trap").await;
    assert!(
        matches!(trapped.failure, Some(Failure::Trap(_))),
        "{trapped:?}"
    );
    assert_eq!(count(&warm, "").await, 1);
    // So does a timeout.
    let timed_out = batch(&warm, "loop").await;
    assert_eq!(timed_out.failure, Some(Failure::Timeout));
    assert_eq!(count(&warm, "").await, 1);
    // Past half its memory limit (32 MiB) after a batch, it is replaced.
    assert_eq!(count(&warm, "hold:4;").await, 2);
    assert_eq!(count(&warm, "hold:14;").await, 3);
    assert_eq!(count(&warm, "").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_given_back_unused_runs_the_next_batch() {
    // Taken for a batch whose lease came back empty, and given back.
    let warm = scripted(InstanceReuse::default());
    assert_eq!(count(&warm, "").await, 1);
    warm.instantiate().await.unwrap().release();
    assert_eq!(count(&warm, "").await, 2);
    // A new instance given back unused is as good as fresh, even with `fresh_instance`.
    let fresh = scripted(InstanceReuse::FRESH);
    fresh.instantiate().await.unwrap().release();
    assert_eq!(count(&fresh, "").await, 1);
    assert_eq!(count(&fresh, "").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_instance_and_max_batches_per_instance() {
    let fresh = scripted(InstanceReuse::FRESH);
    for _ in 0..3 {
        assert_eq!(count(&fresh, "").await, 1);
    }
    let recycled = scripted(InstanceReuse { max_batches: 2 });
    let mut counts = Vec::new();
    for _ in 0..5 {
        counts.push(count(&recycled, "").await);
    }
    assert_eq!(counts, [1, 2, 1, 2, 1]);
}
