//! Hostile guests: components written to exhaust the host (tables grown without end, many
//! memories, output floods). Each must fail its own batch within its limits while the host
//! and the other queues carry on, and no message may be lost or dropped for it.

use std::time::Duration;

use wasmq_host::engine::SendRequest;
use wasmq_host::runtime::{
    ComponentLimits, ComponentOptions, ConsumerComponent, Failure, Runtime, RuntimeConfig,
};
use wasmq_tests::{TestConsumer, TestHost, guest};

/// A consumer component in WebAssembly text whose `handle` runs `body` (a core function
/// body taking the batch handle and returning a pointer) in a core module that also holds
/// `items` (tables, memories).
fn consumer_wat(items: &str, body: &str) -> Vec<u8> {
    let text = format!(
        r#"
(component
  (import "wasmq:queues/batch@0.1.0" (instance $batch
    (export "message-batch" (type (sub resource)))
  ))
  (alias export $batch "message-batch" (type $message-batch))
  (core module $m
    (memory $mem (export "memory") 1)
    {items}
    (func (export "handle") (param i32) (result i32) {body})
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
  )
  (core instance $i (instantiate $m))
  (type $handle-type (func (param "batch" (borrow $message-batch)) (result (result (error string)))))
  (func $handle (type $handle-type)
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))
  (instance $handler
    (export "message-batch" (type $message-batch))
    (export "handle" (func $handle)))
  (export "wasmq:queues/handler@0.1.0" (instance $handler))
)
"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}"))
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A broker with a queue `bomb` consumed by `wasm` and a queue `good` consumed by the scripted
/// guest, both on one runtime (pooling allocator or not), each with a 5 s time limit.
async fn host(wasm: &[u8], pooling: bool) -> TestHost {
    let limits = ComponentLimits {
        timeout: Duration::from_secs(5),
        ..ComponentLimits::default()
    };
    TestHost::builder()
        .runtime(RuntimeConfig {
            pooling_allocator: pooling,
            ..RuntimeConfig::default()
        })
        .consumer(
            "bomb",
            TestConsumer::wasm("bomb", wasm.to_vec()).limits(limits),
        )
        .consumer(
            "good",
            TestConsumer::wasm("good", guest("scripted")).limits(limits),
        )
        .build()
        .await
}

/// One bomb at a time: resident memory is the whole test process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs one batch of the bomb and one of the good consumer; returns the bomb's failure text
/// and how much the process's resident memory grew.
async fn detonate(wasm: &[u8], pooling: bool) -> (String, u64) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = host(wasm, pooling).await;
    h.broker.send("bomb", SendRequest::text("x")).await.unwrap();
    h.broker
        .send("good", SendRequest::text("ack"))
        .await
        .unwrap();
    let before = rss();
    let d = h.deliver("bomb").await;
    let grew = rss().saturating_sub(before);
    let text = match d.run.failure {
        Some(Failure::Trap(text)) => text,
        other => panic!("the bomb should trap, not {other:?}"),
    };
    // Its message is retried (attempt 2 next), never dropped for the host's sake.
    assert_eq!((d.report.retried, d.report.dropped), (1, 0));
    let m = h.broker.metrics("bomb").await.unwrap();
    assert_eq!(m.backlog.count, 1);
    // The other queue keeps flowing.
    let d = h.deliver("good").await;
    assert_eq!((d.run.failure, d.report.acked), (None, 1));
    (text, grew)
}

/// The bound the tests hold a bomb to: the component's 64 MiB of memory plus slack for the
/// host's own allocations.
const RSS_BOUND: u64 = 128 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_grown_without_end_stops_at_its_limit_under_both_allocators() {
    let wasm = consumer_wat(
        "(table $t 1 funcref)",
        "(loop $l (drop (table.grow $t (ref.null func) (i32.const 10000))) (br $l)) (unreachable)",
    );
    for pooling in [false, true] {
        let (text, grew) = detonate(&wasm, pooling).await;
        assert!(text.contains("table elements"), "pooling {pooling}: {text}");
        assert!(
            grew < RSS_BOUND,
            "pooling {pooling}: resident memory grew {grew} bytes"
        );
    }
}

/// Four memories of 20 MiB each: each is under the 64 MiB limit, together they are not. (The
/// pooling allocator refuses a module with more than one memory when it is loaded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memories_count_together_against_the_memory_limit() {
    let memories = "(memory $a 320) (memory $b 320) (memory $c 320) (memory $d 320)";
    let wasm = consumer_wat(memories, "(unreachable)");
    let (text, grew) = detonate(&wasm, false).await;
    assert!(text.contains("bytes of memory"), "{text}");
    assert!(grew < RSS_BOUND, "resident memory grew {grew} bytes");

    let pooled = Runtime::with_config(&RuntimeConfig {
        pooling_allocator: true,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let refused = ConsumerComponent::new(&pooled, "bomb", &wasm, ComponentOptions::default());
    let err = format!("{:#}", refused.err().expect("refused at load"));
    assert!(err.contains("pooling allocator"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_memories_are_refused() {
    let memories: String = (0..64).map(|i| format!("(memory $m{i} 1)")).collect();
    let wasm = consumer_wat(&memories, "(unreachable)");
    let (text, grew) = detonate(&wasm, false).await;
    assert!(text.contains("memory count"), "{text}");
    assert!(grew < RSS_BOUND, "resident memory grew {grew} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_grown_without_end_stops_at_its_limit() {
    let wasm = consumer_wat(
        "",
        "(loop $l (drop (memory.grow $mem (i32.const 16))) (br $l)) (unreachable)",
    );
    for pooling in [false, true] {
        let (text, grew) = detonate(&wasm, pooling).await;
        assert!(
            text.contains("bytes of memory"),
            "pooling {pooling}: {text}"
        );
        assert!(
            grew < RSS_BOUND,
            "pooling {pooling}: resident memory grew {grew} bytes"
        );
    }
}

/// 32 MiB of output without a newline: logged in lines of at most 64 KiB, found in linear
/// time, and the batch's kept output stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_flood_is_split_and_bounded() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = host(&guest("scripted"), true).await;
    h.broker
        .send("bomb", SendRequest::text("print-flood:33554432"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let d = h.deliver("bomb").await;
    assert_eq!(d.run.failure, None);
    let kept: usize = d.run.output.iter().map(String::len).sum();
    assert!(kept <= 128 * 1024, "kept {kept} bytes of output");
    assert!(d.run.output.iter().all(|line| line.len() <= 64 * 1024));
    // Linear, not quadratic: 32 MiB takes well under the 5 s limit.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// With the instance pool full, a dispatcher takes no messages: the batch waits, and no
/// attempt is counted for the host's lack of capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_makes_a_batch_wait_without_an_attempt() {
    let wasm = guest("scripted");
    let _alone = ONE_AT_A_TIME.lock().await;
    // The smallest pool that holds one instance of the component: a second does not fit.
    let mut smallest = None;
    for slots in 1..=16 {
        let runtime = Runtime::with_config(&RuntimeConfig {
            pooling_allocator: true,
            instance_slots: slots,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let component =
            ConsumerComponent::new(&runtime, "tight", &wasm, ComponentOptions::default()).unwrap();
        if component.instantiate().await.is_ok() {
            smallest = Some((runtime, component));
            break;
        }
    }
    let (runtime, component) = smallest.expect("a pool that holds one instance");
    let host = TestHost::builder()
        .consumer("jobs", TestConsumer::loaded(component.clone()))
        .build()
        .await;
    let broker = &host.broker;
    broker.send("jobs", SendRequest::text("ack")).await.unwrap();
    let dispatcher = host.dispatcher("jobs");

    let held = component.instantiate().await.expect("the one slot");
    let refused = dispatcher.deliver_one().await;
    let err = format!("{:#}", refused.expect_err("no slot for a second instance"));
    assert!(err.contains("no instance slot free"), "{err}");
    let m = broker.metrics("jobs").await.unwrap();
    assert_eq!((m.in_flight, m.retried, m.backlog.count), (0, 0, 1));
    let waiting = broker.peek("jobs", 10).await.unwrap();
    assert_eq!(waiting[0].attempts, 0, "no attempt was counted");

    drop(held);
    let d = dispatcher.deliver_one().await.unwrap().expect("a batch");
    assert_eq!((d.run.failure, d.report.acked), (None, 1));
    assert_eq!(d.run.calls.len(), 1);
    drop(runtime);
}
