//! The fixture harness: run a consumer component on a batch you build, in process, and look at
//! what it did. `wasmq test` runs [fixture files](fixture) with it; Rust tests can use it
//! directly.
//!
//! A batch goes through the same path as under `wasmq run`: the component is compiled and
//! linked by [`ConsumerComponent`], called with [`ConsumerComponent::run_batch`] with its
//! time and memory limits, its calls are resolved by
//! [`precedence::resolve`] and each retried message's fate is decided by [`precedence::fate`],
//! the function the engine settles with. Its sends go to the real redb engine (in memory, on a
//! [`ManualClock`](crate::engine::ManualClock) that stands still), which accepts or refuses
//! them as it would in production; the harness records the accepted ones. Nothing sleeps:
//! delays are reported as numbers; only `limits.timeout` is real time.
//!
//! ```no_run
//! use wasmq_host::harness::{Harness, MessageFate, Setup, TestMessage};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let harness = Harness::new()?;
//! let setup = Setup::default()
//!     .binding("OUT", "out")
//!     .max_retries(1)
//!     .dead_letter_queue("jobs-dlq");
//! let consumer = harness
//!     .load("guest-examples/target/wasm32-wasip2/release/scripted.wasm", setup)
//!     .await?;
//! let report = consumer
//!     .run(vec![
//!         TestMessage::text("ack;send:OUT:hello"),
//!         TestMessage::text("fail:boom").with_attempts(2),
//!     ])
//!     .await?;
//! assert_eq!(report.failure.as_ref().map(|f| f.to_string()).as_deref(),
//!            Some("handler returned an error: boom"));
//! assert_eq!(report.fates, [MessageFate::Acked, MessageFate::DeadLettered]);
//! assert_eq!(report.sent[0].body, b"hello");
//! assert!(report.output_contains("[scripted]"));
//! # Ok(()) }
//! ```
//!
//! A [`Harness`] compiles each component once per distinct configuration (the wasm, its
//! limits, environment and binding names) and reuses it; it belongs to the tokio runtime it
//! was first used on.

pub mod fixture;
pub mod report;

mod check;
mod recorder;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

pub use self::check::{Mismatch, check};
pub use self::fixture::{Case, Expectations, ExpectedResult, ExpectedSend, Fixture};
pub use self::report::{CaseReport, FixtureReport, RunReport};

use self::recorder::{CaseQueues, Recorder, binding_queue};
use crate::engine::precedence::{self, BatchCall, Fate, IgnoredCall};
use crate::engine::{Backlog, ConsumerSettings, ContentType, Message, MessageId, Outcome};
use crate::runtime::{
    BatchInput, ComponentLimits, ComponentOptions, ConsumerComponent, Failure, InstanceReuse,
    Runtime, SendTarget,
};

/// The time the harness's clock stands at, and the default `timestamp` of test messages:
/// 2023-11-14T22:13:20Z, in ms since the Unix epoch.
pub const DEFAULT_NOW_MS: u64 = 1_700_000_000_000;

/// The queue a test batch comes from unless the setup names one.
pub const DEFAULT_QUEUE: &str = "jobs";

/// How a component is set up for a test: what a manifest would say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The queue the batches come from (`batch.queue()`), default [`DEFAULT_QUEUE`].
    pub queue: String,
    /// The consumer's settings: `max_retries`, `retry_delay` and `dead_letter_queue` decide
    /// the fate of retried messages.
    pub consumer: ConsumerSettings,
    /// Binding name → queue, like the manifest's `producers`.
    pub bindings: BTreeMap<String, String>,
    /// Time and memory limits of one batch.
    pub limits: ComponentLimits,
    /// Environment variables the component sees.
    pub env: BTreeMap<String, String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            queue: DEFAULT_QUEUE.to_owned(),
            consumer: ConsumerSettings::default(),
            bindings: BTreeMap::new(),
            limits: ComponentLimits::default(),
            env: BTreeMap::new(),
        }
    }
}

impl Setup {
    /// Binds `name` to `queue`.
    pub fn binding(mut self, name: impl Into<String>, queue: impl Into<String>) -> Self {
        self.bindings.insert(name.into(), queue.into());
        self
    }

    /// Sets the consumer's `max_retries`.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.consumer.max_retries = max_retries;
        self
    }

    /// Sets the consumer's `retry_delay`.
    pub fn retry_delay(mut self, seconds: u32) -> Self {
        self.consumer.retry_delay = seconds;
        self
    }

    /// Sets the consumer's `dead_letter_queue`.
    pub fn dead_letter_queue(mut self, queue: impl Into<String>) -> Self {
        self.consumer.dead_letter_queue = Some(queue.into());
        self
    }

    /// Sets the time limit of one batch.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.limits.timeout = timeout;
        self
    }

    /// Sets the memory limit.
    pub fn memory_bytes(mut self, bytes: usize) -> Self {
        self.limits.memory_bytes = bytes;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Names the queue the batches come from.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
}

/// One message of a test batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestMessage {
    /// Its id; `None` takes [`message_id("", index)`](message_id).
    pub id: Option<MessageId>,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// The body.
    pub body: Vec<u8>,
    /// Which delivery this is (1 the first time); a failure on delivery `1 + max_retries`
    /// dead-letters or drops the message.
    pub attempts: u32,
    /// When it was first sent, ms since the epoch.
    pub timestamp_ms: u64,
}

impl TestMessage {
    /// A first delivery of `body`.
    pub fn new(body: impl Into<Vec<u8>>, content_type: ContentType) -> Self {
        Self {
            id: None,
            content_type,
            body: body.into(),
            attempts: 1,
            timestamp_ms: DEFAULT_NOW_MS,
        }
    }

    /// A `text` message.
    pub fn text(body: impl Into<String>) -> Self {
        Self::new(body.into().into_bytes(), ContentType::Text)
    }

    /// A `json` message.
    pub fn json(value: &serde_json::Value) -> Self {
        Self::new(
            serde_json::to_vec(value).expect("JSON values serialize"),
            ContentType::Json,
        )
    }

    /// A `bytes` message.
    pub fn bytes(body: impl Into<Vec<u8>>) -> Self {
        Self::new(body, ContentType::Bytes)
    }

    /// Sets the id.
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets which delivery this is.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets the first-send time.
    pub fn with_timestamp_ms(mut self, timestamp_ms: u64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }
}

/// A stable message id made from `seed` and `index` (fixtures use the case name), so that
/// runs are reproducible and ids look like real ones.
pub fn message_id(seed: &str, index: usize) -> MessageId {
    // FNV-1a over the seed and the index, spread over 128 bits by splitmix64's finalizer.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed
        .bytes()
        .chain([0xff])
        .chain((index as u64).to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&mix(hash).to_be_bytes());
    id[8..].copy_from_slice(&mix(hash ^ 0x9e37_79b9_7f4a_7c15).to_be_bytes());
    MessageId(id)
}

/// What became of one message of a test batch: the settlement `wasmq run` would commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFate {
    /// Deleted.
    Acked,
    /// Delivered again after this many seconds.
    Retried {
        /// The delay that applies (explicit, else `retry-all`'s, else `retry_delay`).
        delay_seconds: u32,
    },
    /// Retries exhausted: moved to the dead-letter queue.
    DeadLettered,
    /// Retries exhausted, no dead-letter queue: deleted.
    Dropped,
}

/// One message the guest sent and the engine accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The binding it was sent through.
    pub binding: String,
    /// The queue the setup binds it to.
    pub queue: String,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// The body.
    pub body: Vec<u8>,
    /// Seconds before it becomes visible (its own delay, else its batch's, else 0).
    pub delay_seconds: u32,
    /// Its dedup key.
    pub dedup_key: Option<String>,
    /// True when an earlier send of this batch had the same dedup key: accepted, not stored.
    pub deduplicated: bool,
}

/// Everything one test batch came to.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// The batch as the guest saw it.
    pub messages: Vec<Message>,
    /// The calls the guest made on the batch, in order.
    pub calls: Vec<BatchCall>,
    /// Calls that changed nothing, and why (the host logs these as warnings).
    pub ignored: Vec<IgnoredCall>,
    /// `None` when `handle` returned `ok`.
    pub failure: Option<Failure>,
    /// One fate per message, in batch order.
    pub fates: Vec<MessageFate>,
    /// The messages the guest sent, in order.
    pub sent: Vec<SentMessage>,
    /// The guest's output: its stdout lines, then its stderr lines.
    pub output: Vec<String>,
    /// How long the call of `handle` took (instantiation included).
    pub duration: Duration,
}

impl BatchReport {
    /// The fate of the message with this id.
    pub fn fate_of(&self, id: &MessageId) -> Option<MessageFate> {
        let index = self.messages.iter().position(|m| m.id == *id)?;
        self.fates.get(index).copied()
    }

    /// Indexes of the acked messages.
    pub fn acked(&self) -> Vec<usize> {
        self.indexes(|f| f == MessageFate::Acked)
    }

    /// Indexes of the retried messages with their delays.
    pub fn retried(&self) -> Vec<(usize, u32)> {
        self.fates
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f {
                MessageFate::Retried { delay_seconds } => Some((i, *delay_seconds)),
                _ => None,
            })
            .collect()
    }

    /// Indexes of the dead-lettered messages.
    pub fn dead_lettered(&self) -> Vec<usize> {
        self.indexes(|f| f == MessageFate::DeadLettered)
    }

    /// Indexes of the dropped messages.
    pub fn dropped(&self) -> Vec<usize> {
        self.indexes(|f| f == MessageFate::Dropped)
    }

    /// The messages sent through `binding`.
    pub fn sent_to<'a>(&'a self, binding: &'a str) -> impl Iterator<Item = &'a SentMessage> {
        self.sent.iter().filter(move |s| s.binding == binding)
    }

    /// True if some line of the output contains `text`.
    pub fn output_contains(&self, text: &str) -> bool {
        self.output.iter().any(|line| line.contains(text))
    }

    fn indexes(&self, keep: impl Fn(MessageFate) -> bool) -> Vec<usize> {
        self.fates
            .iter()
            .enumerate()
            .filter(|(_, f)| keep(**f))
            .map(|(i, _)| i)
            .collect()
    }
}

/// What identifies a compiled component: the same wasm with the same limits, environment and
/// binding names is compiled once.
struct LoadKey {
    wasm: Arc<[u8]>,
    limits: (Duration, usize),
    env: BTreeMap<String, String>,
    bindings: Vec<String>,
}

impl LoadKey {
    fn matches(&self, other: &LoadKey) -> bool {
        (Arc::ptr_eq(&self.wasm, &other.wasm) || self.wasm == other.wasm)
            && self.limits == other.limits
            && self.env == other.env
            && self.bindings == other.bindings
    }
}

struct Loaded {
    key: LoadKey,
    component: ConsumerComponent,
    recorder: Arc<Recorder>,
}

/// Loads components for tests and keeps them compiled.
pub struct Harness {
    runtime: Runtime,
    loaded: tokio::sync::Mutex<Vec<Loaded>>,
    compiled: AtomicUsize,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("compiled", &self.compilations())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// A harness with its own wasmtime engine.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self::with_runtime(Runtime::new()?))
    }

    /// A harness on an existing engine.
    pub fn with_runtime(runtime: Runtime) -> Self {
        Self {
            runtime,
            loaded: tokio::sync::Mutex::new(Vec::new()),
            compiled: AtomicUsize::new(0),
        }
    }

    /// How many times a component was compiled so far.
    pub fn compilations(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Loads the component at `path` (compiling it unless an identical one was loaded).
    pub async fn load(
        &self,
        path: impl AsRef<Path>,
        setup: Setup,
    ) -> anyhow::Result<TestComponent> {
        let path = path.as_ref();
        let wasm =
            std::fs::read(path).with_context(|| format!("reading component {}", path.display()))?;
        self.load_wasm(&component_name(path), wasm.into(), setup)
            .await
    }

    /// Loads a component from its bytes; `name` labels its log lines.
    pub async fn load_wasm(
        &self,
        name: &str,
        wasm: Arc<[u8]>,
        setup: Setup,
    ) -> anyhow::Result<TestComponent> {
        let key = LoadKey {
            wasm,
            limits: (setup.limits.timeout, setup.limits.memory_bytes),
            env: setup.env.clone(),
            bindings: setup.bindings.keys().cloned().collect(),
        };
        let mut loaded = self.loaded.lock().await;
        if let Some(found) = loaded.iter().find(|l| l.key.matches(&key)) {
            return Ok(TestComponent {
                component: found.component.clone(),
                recorder: found.recorder.clone(),
                setup,
            });
        }
        let recorder = Arc::new(Recorder::new());
        let options = ComponentOptions {
            limits: setup.limits,
            env: setup.env.clone().into_iter().collect(),
            send_target: Some(SendTarget {
                publisher: recorder.clone(),
                bindings: Arc::new(
                    key.bindings
                        .iter()
                        .enumerate()
                        .map(|(i, binding)| (binding.clone(), binding_queue(i)))
                        .collect(),
                ),
            }),
            // Every case starts from a fresh instance, whatever ran before it.
            reuse: InstanceReuse::FRESH,
            ..ComponentOptions::default()
        };
        let runtime = self.runtime.clone();
        let wasm = key.wasm.clone();
        let owned_name = name.to_owned();
        let component = tokio::task::spawn_blocking(move || {
            ConsumerComponent::new(&runtime, &owned_name, &wasm, options)
        })
        .await
        .context("compiling a component")??;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        loaded.push(Loaded {
            key,
            component: component.clone(),
            recorder: recorder.clone(),
        });
        Ok(TestComponent {
            component,
            recorder,
            setup,
        })
    }
}

/// The name a component file gives its log lines: its stem.
fn component_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "component".into(), |s| s.to_string_lossy().into_owned())
}

/// A loaded component with its setup, ready to run batches (one at a time).
#[derive(Clone)]
pub struct TestComponent {
    component: ConsumerComponent,
    recorder: Arc<Recorder>,
    setup: Setup,
}

impl std::fmt::Debug for TestComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestComponent")
            .field("name", &self.component.name())
            .field("setup", &self.setup)
            .finish_non_exhaustive()
    }
}

impl TestComponent {
    /// Its setup.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Hands `messages` to the component as one batch of [`Setup::queue`] and reports what
    /// came of it. Each run starts from empty queues. Errors are host problems (a broken
    /// engine), not guest failures: those are in [`BatchReport::failure`].
    pub async fn run(&self, messages: Vec<TestMessage>) -> anyhow::Result<BatchReport> {
        let _one_at_a_time = self.recorder.running.lock().await;
        let messages: Vec<Message> = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| Message {
                id: m.id.unwrap_or_else(|| message_id("", i)),
                timestamp_ms: m.timestamp_ms,
                content_type: m.content_type,
                body: m.body,
                attempts: m.attempts,
            })
            .collect();
        let ids: Vec<MessageId> = messages.iter().map(|m| m.id).collect();
        let backlog = Backlog {
            count: messages.len() as u64,
            bytes: messages.iter().map(|m| m.body.len() as u64).sum(),
            oldest_timestamp_ms: messages.iter().map(|m| m.timestamp_ms).min(),
        };
        let queues = CaseQueues::new(&self.setup.bindings, DEFAULT_NOW_MS)
            .await
            .context("creating the queues of a test case")?;
        self.recorder.install(queues.clone());
        let input = BatchInput {
            queue: self.setup.queue.clone(),
            messages: messages.clone(),
            backlog,
        };
        let start = Instant::now();
        let run = self.component.run_batch(input).await;
        let duration = start.elapsed();
        self.recorder.uninstall();

        let resolution = precedence::resolve(&ids, &run.calls, run.result());
        let fates = resolution
            .outcomes
            .iter()
            .zip(&messages)
            .map(|((_, outcome), message)| match *outcome {
                Outcome::Ack => MessageFate::Acked,
                Outcome::Retry { delay_seconds } => {
                    match precedence::fate(message.attempts, &self.setup.consumer, delay_seconds) {
                        Fate::Retry { delay_seconds } => MessageFate::Retried { delay_seconds },
                        Fate::DeadLetter => MessageFate::DeadLettered,
                        Fate::Drop => MessageFate::Dropped,
                    }
                }
            })
            .collect();
        Ok(BatchReport {
            messages,
            calls: run.calls,
            ignored: resolution.ignored,
            failure: run.failure,
            fates,
            sent: queues.sent(),
            output: run.output,
            duration,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let a = message_id("case", 0);
        assert_eq!(a, message_id("case", 0));
        assert_ne!(a, message_id("case", 1));
        assert_ne!(a, message_id("other case", 0));
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(
            message_id("", 0).to_string(),
            message_id("", 0)
                .to_string()
                .parse::<MessageId>()
                .unwrap()
                .to_string()
        );
    }
}
