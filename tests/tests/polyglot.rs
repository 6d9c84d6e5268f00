//! End-to-end: the Python and JavaScript `worker` guests (`guest-examples/python/worker`,
//! `guest-examples/js/worker`, built into `guest-examples/target/polyglot/` by
//! `scripts/build-polyglot-guests.sh`) run by the real wasmtime runtime through the real
//! dispatcher against a real redb file, like `consumer.rs` does for the Rust guests.
//!
//! The components are 12 to 18 MB and take seconds to compile, so each is compiled once per
//! test binary and shared by the tests (a component holds no per-test state: the workers send
//! nothing, so they get no send target).

use std::sync::OnceLock;

use wasmq_host::dispatch::Delivery;
use wasmq_host::engine::{ConsumerSettings, ContentType, Message, SendRequest};
use wasmq_host::runtime::{ComponentOptions, ConsumerComponent, Runtime};
use wasmq_tests::{TestConsumer, TestHost, guest, polyglot_guest};

/// Characters of a body the workers show before cutting it with `…`.
const MAX_BODY_CHARS: usize = 200;

/// One guest language.
#[derive(Clone, Copy)]
struct Lang {
    /// The component's bytes.
    wasm: fn() -> Vec<u8>,
    /// What the worker's lines start with.
    prefix: &'static str,
    component: &'static OnceLock<ConsumerComponent>,
}

static PYTHON_COMPONENT: OnceLock<ConsumerComponent> = OnceLock::new();
static JS_COMPONENT: OnceLock<ConsumerComponent> = OnceLock::new();
static RUST_COMPONENT: OnceLock<ConsumerComponent> = OnceLock::new();

const PYTHON: Lang = Lang {
    wasm: || polyglot_guest("worker-py"),
    prefix: "[worker-py]",
    component: &PYTHON_COMPONENT,
};
const JS: Lang = Lang {
    wasm: || polyglot_guest("worker-js"),
    prefix: "[worker-js]",
    component: &JS_COMPONENT,
};
/// The Rust original, for comparison (built by `scripts/build-guests.sh`).
const RUST: Lang = Lang {
    wasm: || guest("worker"),
    prefix: "[worker]",
    component: &RUST_COMPONENT,
};

impl Lang {
    /// The component, compiled on first use.
    fn component(self) -> ConsumerComponent {
        self.component
            .get_or_init(|| {
                let runtime = Runtime::new().unwrap();
                let wasm = (self.wasm)();
                ConsumerComponent::new(&runtime, self.prefix, &wasm, ComponentOptions::default())
                    .unwrap_or_else(|e| panic!("loading {}: {e:#}", self.prefix))
            })
            .clone()
    }
}

/// A redb broker with a queue `jobs` (batches of up to 100) consumed by `lang`'s worker.
async fn setup(lang: Lang) -> TestHost {
    let component = tokio::task::spawn_blocking(move || lang.component())
        .await
        .unwrap();
    let consumer = ConsumerSettings {
        max_batch_size: 100,
        ..ConsumerSettings::default()
    };
    let worker = TestConsumer::loaded(component)
        .settings(consumer)
        .observed();
    TestHost::builder().consumer("jobs", worker).build().await
}

/// Delivers one batch of `jobs`; returns it with the messages the component was handed.
async fn deliver(s: &mut TestHost) -> (Delivery, Vec<Message>) {
    let delivery = s.deliver("jobs").await;
    let started = s.started("jobs").recv().await.expect("the batch's start");
    (delivery, started.messages)
}

/// What the Rust `worker` shows of a body (a copy of its `preview`): lossy UTF-8, control
/// characters escaped, at most `max` characters followed by `…` when it was cut.
fn preview(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The line `lang`'s worker prints for `message` of queue `jobs`.
fn expected_line(lang: Lang, message: &Message) -> String {
    format!(
        "{} jobs {} attempt {}: {}",
        lang.prefix,
        message.id,
        message.attempts,
        preview(&message.body, MAX_BODY_CHARS)
    )
}

/// Bodies that exercise the preview: plain, JSON, escapes, invalid UTF-8, multi-byte
/// characters and bodies cut at 200 characters (exactly 200 is not cut).
fn tricky_bodies() -> Vec<SendRequest> {
    vec![
        SendRequest::text("hello"),
        SendRequest::new(r#"{"task":"resize","id":7}"#, ContentType::Json),
        SendRequest::text("line one\nline two\tand a tab\r"),
        SendRequest::text("nul \0, escape \u{1b}[0m, del \u{7f}, next-line \u{85} \\ '\""),
        SendRequest::new(vec![b'a', 0xff, b'b', 0xe2, 0x82, b'c'], ContentType::Bytes),
        SendRequest::text("héllo wörld ✓ 🎉 日本語"),
        SendRequest::text("x".repeat(MAX_BODY_CHARS)),
        SendRequest::text("y".repeat(MAX_BODY_CHARS + 1)),
        SendRequest::text("€".repeat(MAX_BODY_CHARS + 50)),
        SendRequest::text("🎉".repeat(MAX_BODY_CHARS + 1)),
        SendRequest::new(Vec::new(), ContentType::Bytes),
    ]
}

/// Sends `tricky_bodies()` and checks one batch: no failure, everything acked, one line per
/// message exactly as the Rust worker would print it (with `lang`'s prefix).
async fn prints_one_line_per_message_and_acks(lang: Lang) {
    let mut s = setup(lang).await;
    let requests = tricky_bodies();
    let n = requests.len() as u32;
    s.send("jobs", requests).await;
    let (d, messages) = deliver(&mut s).await;
    assert_eq!(d.run.failure, None, "{:?}", d.run.output);
    assert_eq!(messages.len() as u32, n);
    assert_eq!(d.report.acked, n);
    assert_eq!(s.broker.metrics("jobs").await.unwrap().backlog.count, 0);
    let expected: Vec<String> = messages.iter().map(|m| expected_line(lang, m)).collect();
    assert_eq!(d.run.output, expected);
}

/// A message leased and retried once by hand is delivered with `attempt 2`.
async fn shows_the_attempt(lang: Lang) {
    let mut s = setup(lang).await;
    s.send_texts("jobs", &["again"]).await;
    s.lease_and_retry("jobs").await;
    let (d, messages) = deliver(&mut s).await;
    assert_eq!(d.run.failure, None, "{:?}", d.run.output);
    assert_eq!(d.report.acked, 1);
    assert_eq!(messages[0].attempts, 2);
    assert_eq!(
        d.run.output,
        [format!(
            "{} jobs {} attempt 2: again",
            lang.prefix, messages[0].id
        )]
    );
}

/// A full batch of 100 messages in one call.
async fn handles_a_full_batch(lang: Lang) {
    let mut s = setup(lang).await;
    let requests = (0..100)
        .map(|i| SendRequest::text(format!("message {i}")))
        .collect();
    s.send("jobs", requests).await;
    let (d, messages) = deliver(&mut s).await;
    assert_eq!(d.run.failure, None, "{:?}", d.run.output);
    assert_eq!(d.report.acked, 100);
    let expected: Vec<String> = messages.iter().map(|m| expected_line(lang, m)).collect();
    assert_eq!(d.run.output, expected);
    assert_eq!(s.broker.metrics("jobs").await.unwrap().backlog.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_prints_one_line_per_message_and_acks() {
    prints_one_line_per_message_and_acks(PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_worker_prints_one_line_per_message_and_acks() {
    prints_one_line_per_message_and_acks(JS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_shows_the_attempt() {
    shows_the_attempt(PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_worker_shows_the_attempt() {
    shows_the_attempt(JS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_handles_a_full_batch() {
    handles_a_full_batch(PYTHON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_worker_handles_a_full_batch() {
    handles_a_full_batch(JS).await;
}

/// The Rust original prints the same lines as the copy of its `preview` above, so the Python
/// and JavaScript workers match it, not just this file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_worker_matches_the_expected_lines() {
    prints_one_line_per_message_and_acks(RUST).await;
}
