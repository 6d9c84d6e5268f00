//! Fixture files: TOML that names a consumer component, hands it batches and states what
//! should come of them. `wasmq test` runs them; [`parse`] and [`load`] read them for
//! [`Harness::run_fixture`](super::Harness::run_fixture).
//!
//! ```toml
//! # The component, relative to this file.
//! component = "../target/wasm32-wasip2/release/scripted.wasm"
//!
//! [consumer]                 # optional: the manifest's consumer keys, all optional here
//! queue = "jobs"             # the queue the batch comes from (default "jobs")
//! max_retries = 1            # 1 + max_retries failed attempts, then dead-letter or drop
//! retry_delay = 0
//! dead_letter_queue = "dlq"
//! max_batch_size = 10        # a case may not hand over more messages than this
//!
//! [limits]                   # optional, as in the manifest
//! timeout = "30s"
//! memory = "64MiB"
//!
//! [env]                      # optional: environment variables the component sees
//! GREETING = "hello"
//!
//! [bindings]                 # optional: binding name → queue, the manifest's `producers`
//! OUT = "out"
//!
//! [[case]]
//! name = "explicit ack survives a failure"
//! messages = [
//!     { body = "ack" },                          # text
//!     { body = "fail:boom", attempts = 2 },      # attempts: this delivery's number (default 1)
//!     { json = { order = 42 } },                 # any TOML value, sent as JSON
//!     { base64 = "aGk=" },                       # bytes
//! ]
//! limits = { timeout = "50ms" }                  # optional overrides of [limits] / [consumer]
//! expect.result = { error = "boom" }             # "ok", "error", "trap", "timeout" or { error = "text" }
//! expect.acked = [0]                             # message indexes (or ids)
//! expect.retried = [{ message = 1, delay = 0 }, 2, 3]
//! expect.dead_lettered = []
//! expect.dropped = []
//! expect.sent = [{ binding = "OUT", body = "hello" }]
//! expect.output_contains = ["[scripted]"]
//! ```
//!
//! A message may also set `id` (32 lowercase hex characters; by default one derived from the
//! case name and the message's index), `timestamp` (ms since the epoch, default
//! [`DEFAULT_NOW_MS`](super::DEFAULT_NOW_MS)) and `content_type` (`text`, `json` or `bytes`,
//! to override the one implied by `body` / `json` / `base64`).
//!
//! Each expectation that is written is checked; those left out are not. The fate lists
//! (`acked`, `retried`, `dead_lettered`, `dropped`) are compared as sets, `sent` and `output`
//! in order. `docs/fixtures.md` is the full reference.
//!
//! Reading is strict: unknown keys, wrong types, out-of-range values, a message index that is
//! not in the batch… every one is reported at once, each [`ConfigError`] naming the file,
//! line, column and key. The `[consumer]` and `[limits]` tables are the manifest's, read and
//! checked by the same code ([`crate::config`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use toml::Spanned;

use super::{DEFAULT_NOW_MS, DEFAULT_QUEUE, Setup, TestMessage, message_id};
use crate::config::check::{Checker as Base, file_problem};
use crate::config::raw::{RawConsumer, RawLimits};
use crate::config::{ConfigError, ConfigErrors, KeyPath as Key, Position};
use crate::engine::limits::{MAX_DELAY_SECONDS, MAX_MESSAGE_BYTES, check_queue_name};
use crate::engine::{ConsumerSettings, ContentType, MessageId};
use crate::runtime::ComponentLimits;

/// A checked fixture file.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// The file, as given to [`load`].
    pub path: PathBuf,
    /// The component (`component`, resolved against the file's folder).
    pub component: PathBuf,
    /// The file-level settings (`[consumer]`, `[limits]`, `[env]`, `[bindings]`).
    pub setup: Setup,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One `[[case]]`.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its `name`, unique in the file.
    pub name: String,
    /// The file's settings with the case's `consumer` and `limits` overrides applied.
    pub setup: Setup,
    /// The batch, every message with its id.
    pub messages: Vec<TestMessage>,
    /// What should come of it.
    pub expect: Expectations,
}

/// `expect`: what a case should come to. `None` (or empty) means "not checked".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// How `handle` should finish.
    pub result: Option<ExpectedResult>,
    /// Indexes of the messages that should end acked.
    pub acked: Option<BTreeSet<usize>>,
    /// Messages that should be retried, with the delay if it is checked.
    pub retried: Option<BTreeMap<usize, Option<u32>>>,
    /// Indexes of the messages that should move to the dead-letter queue.
    pub dead_lettered: Option<BTreeSet<usize>>,
    /// Indexes of the messages that should be dropped (retries exhausted, no dead-letter queue).
    pub dropped: Option<BTreeSet<usize>>,
    /// Every send the guest should make, in order.
    pub sent: Option<Vec<ExpectedSend>>,
    /// Texts that should each appear in some line of the guest's output.
    pub output_contains: Vec<String>,
    /// The guest's whole output (stdout lines, then stderr lines).
    pub output: Option<Vec<String>>,
}

/// `expect.result`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedResult {
    /// `"ok"`: `handle` returned `ok`.
    Ok,
    /// `"error"`: `handle` returned `err`, whatever the text.
    AnyError,
    /// `{ error = "text" }`: `handle` returned `err(text)`.
    Error(String),
    /// `"trap"`: the guest trapped (a panic, its memory limit…).
    Trap,
    /// `"timeout"`: the guest ran past `limits.timeout`.
    Timeout,
}

/// One entry of `expect.sent`. `delay_seconds`, `dedup_key` and `deduplicated` are checked only
/// when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedSend {
    /// The binding the guest sent to.
    pub binding: String,
    /// The content type (implied by `body`, `json` or `base64` unless `content_type` is given).
    pub content_type: ContentType,
    /// The body (for JSON, compared as JSON values, not bytes).
    pub body: Vec<u8>,
    /// The send delay the message got (its own, else its batch's, else 0).
    pub delay_seconds: Option<u32>,
    /// Its dedup key (`""` for none).
    pub dedup_key: Option<String>,
    /// Whether an earlier send of the case with the same dedup key made it a no-op.
    pub deduplicated: Option<bool>,
}

/// Reads and checks the fixture file at `path`. The component must exist; it is not loaded.
pub fn load(path: &Path) -> Result<Fixture, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the fixture file: {e}")))?;
    parse(&text, path)
}

/// Checks the fixture `text`, read from `path` (relative paths in it are resolved against
/// `path`'s folder; errors name `path`).
pub fn parse(text: &str, path: &Path) -> Result<Fixture, ConfigErrors> {
    let document =
        toml::de::DeTable::parse(text).map_err(|e| ConfigError::from_toml(path, text, None, &e))?;
    let raw = RawFixture::deserialize(toml::Deserializer::from(document.clone())).map_err(|e| {
        let mut error = ConfigError::from_toml(path, text, Some(document.get_ref()), &e);
        // A required top-level key is missing: toml points at the start of the file, which
        // may be inside some other table; name the missing key instead.
        if e.span()
            .is_some_and(|span| span.is_empty() && span.start == 0)
        {
            error.position = None;
            error.key = e
                .message()
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_owned);
        }
        error
    })?;
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| ConfigError::whole_file(path, "cannot tell which folder this file is in"))?;
    let mut checker = Checker {
        base: Base::new(text, path),
    };
    let fixture = checker.fixture(raw, &dir);
    checker.base.finish()?;
    Ok(fixture)
}

// ---------------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixture {
    component: Spanned<String>,
    #[serde(default)]
    consumer: RawConsumer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    bindings: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    case: Vec<Spanned<RawCase>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    messages: Spanned<Vec<Spanned<RawMessage>>>,
    #[serde(default)]
    consumer: RawConsumer,
    #[serde(default)]
    limits: RawLimits,
    expect: Option<Spanned<RawExpect>>,
}

/// The body keys shared by messages and expected sends.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    body: Option<Spanned<String>>,
    json: Option<Spanned<serde_json::Value>>,
    base64: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    id: Option<Spanned<String>>,
    attempts: Option<Spanned<u32>>,
    timestamp: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    result: Option<Spanned<RawResult>>,
    acked: Option<Vec<Spanned<MessageRef>>>,
    retried: Option<Vec<Spanned<RawRetried>>>,
    dead_lettered: Option<Vec<Spanned<MessageRef>>>,
    dropped: Option<Vec<Spanned<MessageRef>>>,
    sent: Option<Vec<Spanned<RawSent>>>,
    output_contains: Option<Vec<String>>,
    output: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSent {
    binding: Spanned<String>,
    body: Option<Spanned<String>>,
    json: Option<Spanned<serde_json::Value>>,
    base64: Option<Spanned<String>>,
    content_type: Option<Spanned<String>>,
    delay: Option<Spanned<u32>>,
    dedup_key: Option<String>,
    deduplicated: Option<bool>,
}

/// A message named by its index in the batch or by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MessageRef {
    Index(i64),
    Id(String),
}

impl<'de> Deserialize<'de> for MessageRef {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MessageRefVisitor)
    }
}

struct MessageRefVisitor;

impl<'de> Visitor<'de> for MessageRefVisitor {
    type Value = MessageRef;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message index (0, 1, …) or a message id")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageRef, E> {
        Ok(MessageRef::Index(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageRef, E> {
        Ok(MessageRef::Index(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageRef, E> {
        Ok(MessageRef::Id(v.to_owned()))
    }
}

/// An entry of `retried`: a message, or `{ message, delay }`.
#[derive(Debug)]
struct RawRetried {
    message: MessageRef,
    delay: Option<u32>,
}

impl<'de> Deserialize<'de> for RawRetried {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRetried;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message index or id, or a table like { message = 1, delay = 30 }")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawRetried, E> {
                MessageRefVisitor.visit_i64(v).map(RawRetried::any_delay)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawRetried, E> {
                MessageRefVisitor.visit_u64(v).map(RawRetried::any_delay)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRetried, E> {
                MessageRefVisitor.visit_str(v).map(RawRetried::any_delay)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRetried, A::Error> {
                let mut message = None;
                let mut delay = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "message" => message = Some(map.next_value::<MessageRef>()?),
                        "delay" => delay = Some(map.next_value::<u32>()?),
                        other => {
                            return Err(de::Error::unknown_field(other, &["message", "delay"]));
                        }
                    }
                }
                let message = message.ok_or_else(|| de::Error::missing_field("message"))?;
                Ok(RawRetried { message, delay })
            }
        }
        d.deserialize_any(V)
    }
}

impl RawRetried {
    fn any_delay(message: MessageRef) -> Self {
        Self {
            message,
            delay: None,
        }
    }
}

/// `expect.result` as written.
#[derive(Debug)]
enum RawResult {
    Named(String),
    Error(String),
}

impl<'de> Deserialize<'de> for RawResult {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawResult;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""ok", "error", "trap", "timeout" or { error = "text" }"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawResult, E> {
                Ok(RawResult::Named(v.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawResult, A::Error> {
                let mut error = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "error" => error = Some(map.next_value::<String>()?),
                        other => return Err(de::Error::unknown_field(other, &["error"])),
                    }
                }
                error
                    .map(RawResult::Error)
                    .ok_or_else(|| de::Error::missing_field("error"))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Checking.

struct Checker<'a> {
    /// The errors, and the checks fixture files share with manifests.
    base: Base<'a>,
}

/// A consumer or limits value with where it was written: its span and its key.
type Located<T> = Option<(Spanned<T>, Key)>;

/// The `[consumer]` and `[limits]` values of the file, then of a case. The queue and the
/// dead-letter queue keep their origin, so that a queue that is its own dead-letter queue is
/// blamed on the line that made it so.
#[derive(Clone, Default)]
struct Settings {
    queue: Located<String>,
    dead_letter_queue: Located<String>,
    /// Where `max_batch_size` was written last, if anywhere.
    max_batch_size_key: Option<Key>,
    consumer: ConsumerSettings,
    limits: ComponentLimits,
}

impl Checker<'_> {
    fn fixture(&mut self, raw: RawFixture, dir: &Path) -> Fixture {
        let component_key = Key::root("component");
        let component = dir.join(raw.component.get_ref());
        if raw.component.get_ref().trim().is_empty() {
            self.base
                .report(&component_key, raw.component.span(), "it is empty");
        } else if let Err(message) = file_problem(&component, " (build it first)") {
            self.base
                .report(&component_key, raw.component.span(), message);
        }

        let mut env = BTreeMap::new();
        for (name, value) in &raw.env {
            self.base
                .env_name(&Key::root("env").child(name.get_ref()), name);
            env.insert(name.get_ref().clone(), value.clone());
        }

        let mut bindings = BTreeMap::new();
        for (binding, queue) in &raw.bindings {
            let key = Key::root("bindings").child(binding.get_ref());
            self.base.binding_name(&key, binding);
            if let Err(e) = check_queue_name(queue.get_ref()) {
                self.base.report(&key, queue.span(), e.to_string());
            }
            bindings.insert(binding.get_ref().clone(), queue.get_ref().clone());
        }

        let base = self.settings(
            Settings::default(),
            &Key::root("consumer"),
            &raw.consumer,
            &Key::root("limits"),
            &raw.limits,
        );
        let setup = self.setup(&base, &env, &bindings, None);

        let mut cases = Vec::new();
        let mut names: BTreeMap<String, Position> = BTreeMap::new();
        if raw.case.is_empty() {
            self.base
                .report_unplaced("case", "the file has no `[[case]]`");
        }
        for (i, case) in raw.case.iter().enumerate() {
            let key = Key::root("case").index(i);
            let span = case.span();
            let case = case.get_ref();
            let name = case.name.get_ref().trim().to_owned();
            if name.is_empty() {
                self.base
                    .report(&key.child("name"), case.name.span(), "it is empty");
            } else if let Some(first) = names.get(&name) {
                let message = format!(
                    "another case (line {}) already has the name `{name}`",
                    first.line
                );
                self.base
                    .report(&key.child("name"), case.name.span(), message);
            } else {
                names.insert(name.clone(), self.base.position(case.name.span()));
            }
            let settings = self.settings(
                base.clone(),
                &key.child("consumer"),
                &case.consumer,
                &key.child("limits"),
                &case.limits,
            );
            let setup = self.setup(&settings, &env, &bindings, Some(&key));
            let messages = self.messages(&key, &name, case, &setup, &settings);
            let expect = match &case.expect {
                Some(expect) => self.expect(&key.child("expect"), expect, &messages, &bindings),
                None => {
                    self.base.report(
                        &key,
                        span,
                        "the case has no `expect`: say what should come of it (e.g. \
                         expect.result = \"ok\")",
                    );
                    Expectations::default()
                }
            };
            cases.push(Case {
                name,
                setup,
                messages,
                expect,
            });
        }

        Fixture {
            path: self.base.file().to_path_buf(),
            component,
            setup,
            cases,
        }
    }

    /// Applies one `consumer` and one `limits` table over `base`, checking each value.
    fn settings(
        &mut self,
        mut base: Settings,
        consumer_key: &Key,
        consumer: &RawConsumer,
        limits_key: &Key,
        limits: &RawLimits,
    ) -> Settings {
        if let Some(queue) = &consumer.queue {
            let key = consumer_key.child("queue");
            if let Err(e) = check_queue_name(queue.get_ref()) {
                self.base.report(&key, queue.span(), e.to_string());
            }
            base.queue = Some((queue.clone(), key));
        }
        if let Some(dlq) = &consumer.dead_letter_queue {
            let key = consumer_key.child("dead_letter_queue");
            if let Err(e) = check_queue_name(dlq.get_ref()) {
                self.base.report(&key, dlq.span(), e.to_string());
            }
            base.dead_letter_queue = Some((dlq.clone(), key));
        }
        base.consumer = self
            .base
            .consumer_settings(consumer_key, consumer, base.consumer);
        if consumer.max_batch_size.is_some() {
            base.max_batch_size_key = Some(consumer_key.child("max_batch_size"));
        }
        self.base.max_concurrency(consumer_key, consumer);
        // Checked as in a manifest, though every case runs in a fresh instance.
        self.base.instance_reuse(consumer_key, consumer);
        base.limits = self.base.limits(limits_key, limits, base.limits);
        base
    }

    /// The [`Setup`] of settings already checked value by value; checks what depends on
    /// several of them (a queue that is its own dead-letter queue). `case` is `None` for the
    /// file's own settings.
    fn setup(
        &mut self,
        settings: &Settings,
        env: &BTreeMap<String, String>,
        bindings: &BTreeMap<String, String>,
        case: Option<&Key>,
    ) -> Setup {
        let queue = settings
            .queue
            .as_ref()
            .map_or(DEFAULT_QUEUE.to_owned(), |q| q.0.get_ref().clone());
        if let Some((dlq, key)) = &settings.dead_letter_queue {
            // Blame the value written last, once: in the case that wrote it, or in the file.
            let blamed_here = match case {
                Some(case) => {
                    key.to_string().starts_with(&case.to_string())
                        || settings
                            .queue
                            .as_ref()
                            .is_some_and(|q| q.1.to_string().starts_with(&case.to_string()))
                }
                None => true,
            };
            if blamed_here {
                self.base.own_dead_letter_queue(key, dlq, &queue);
            }
        }
        Setup {
            queue,
            consumer: ConsumerSettings {
                dead_letter_queue: settings
                    .dead_letter_queue
                    .as_ref()
                    .map(|d| d.0.get_ref().clone()),
                ..settings.consumer.clone()
            },
            bindings: bindings.clone(),
            limits: settings.limits,
            env: env.clone(),
        }
    }

    fn messages(
        &mut self,
        case_key: &Key,
        case_name: &str,
        case: &RawCase,
        setup: &Setup,
        settings: &Settings,
    ) -> Vec<TestMessage> {
        let key = case_key.child("messages");
        let raw = case.messages.get_ref();
        if raw.is_empty() {
            self.base.report(
                &key,
                case.messages.span(),
                "the batch is empty (the host never delivers an empty batch)",
            );
        }
        let max = setup.consumer.max_batch_size as usize;
        if raw.len() > max {
            let from = match &settings.max_batch_size_key {
                Some(key) => format!("`{key}`"),
                None => "the default max_batch_size".into(),
            };
            self.base.report(
                &key,
                case.messages.span(),
                format!(
                    "{} messages, but {from} is {max}: the host never delivers a batch that large",
                    raw.len()
                ),
            );
        }
        let mut ids: BTreeMap<MessageId, usize> = BTreeMap::new();
        let mut messages = Vec::with_capacity(raw.len());
        for (i, message) in raw.iter().enumerate() {
            let key = key.index(i);
            let span = message.span();
            let message = message.get_ref();
            let (content_type, body) = self.body(
                &key,
                span.clone(),
                &message.body,
                &message.json,
                &message.base64,
                &message.content_type,
            );
            let id = match &message.id {
                Some(id) => match id.get_ref().parse::<MessageId>() {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        self.base.report(&key.child("id"), id.span(), e);
                        message_id(case_name, i)
                    }
                },
                None => message_id(case_name, i),
            };
            if let Some(first) = ids.insert(id, i) {
                let span = message.id.as_ref().map_or(span.clone(), |id| id.span());
                self.base.report(
                    &key.child("id"),
                    span,
                    format!("message {first} already has the id {id}"),
                );
            }
            let attempts = match &message.attempts {
                Some(a) if *a.get_ref() == 0 => {
                    self.base.report(
                        &key.child("attempts"),
                        a.span(),
                        "attempts counts this delivery: it is at least 1",
                    );
                    1
                }
                Some(a) => *a.get_ref(),
                None => 1,
            };
            messages.push(TestMessage {
                id: Some(id),
                content_type,
                body,
                attempts,
                timestamp_ms: message
                    .timestamp
                    .as_ref()
                    .map_or(DEFAULT_NOW_MS, |t| *t.get_ref()),
            });
        }
        messages
    }

    /// Reads exactly one of `body`, `json` and `base64`, with an optional `content_type`, and
    /// checks the bytes against the content type as the engine would.
    fn body(
        &mut self,
        key: &Key,
        span: Range<usize>,
        body: &Option<Spanned<String>>,
        json: &Option<Spanned<serde_json::Value>>,
        base64: &Option<Spanned<String>>,
        content_type: &Option<Spanned<String>>,
    ) -> (ContentType, Vec<u8>) {
        let given = [body.is_some(), json.is_some(), base64.is_some()]
            .into_iter()
            .filter(|g| *g)
            .count();
        if given != 1 {
            let message = if given == 0 {
                "give the body as one of `body` (text), `json` or `base64` (bytes)"
            } else {
                "give only one of `body`, `json` and `base64`"
            };
            self.base.report(key, span.clone(), message);
        }
        let (implied, bytes, body_span, body_key) = if let Some(json) = json {
            let bytes = serde_json::to_vec(json.get_ref()).expect("JSON values serialize");
            (ContentType::Json, bytes, json.span(), "json")
        } else if let Some(b64) = base64 {
            let bytes = match base64::engine::general_purpose::STANDARD.decode(b64.get_ref()) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.base.report(
                        &key.child("base64"),
                        b64.span(),
                        format!("not valid base64: {e}"),
                    );
                    Vec::new()
                }
            };
            (ContentType::Bytes, bytes, b64.span(), "base64")
        } else if let Some(text) = body {
            (
                ContentType::Text,
                text.get_ref().clone().into_bytes(),
                text.span(),
                "body",
            )
        } else {
            (ContentType::Text, Vec::new(), span, "body")
        };
        let content_type = match content_type {
            Some(ct) => match ct.get_ref().parse::<ContentType>() {
                Ok(parsed) if json.is_some() && parsed != ContentType::Json => {
                    self.base.report(
                        &key.child("content_type"),
                        ct.span(),
                        "a `json` body is always content type json (use `body` or `base64` \
                         for other content types)",
                    );
                    parsed
                }
                Ok(parsed) => parsed,
                Err(e) => {
                    self.base.report(&key.child("content_type"), ct.span(), e);
                    implied
                }
            },
            None => implied,
        };
        let body_key = key.child(body_key);
        match content_type {
            ContentType::Json if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() => {
                self.base.report(
                    &body_key,
                    body_span.clone(),
                    "content type json, but the body is not valid JSON",
                );
            }
            ContentType::Text if std::str::from_utf8(&bytes).is_err() => {
                self.base.report(
                    &body_key,
                    body_span.clone(),
                    "content type text, but the body is not UTF-8",
                );
            }
            _ => {}
        }
        if bytes.len() as u64 > MAX_MESSAGE_BYTES {
            self.base.report(
                &body_key,
                body_span,
                format!(
                    "the body is {} bytes, over the limit of {MAX_MESSAGE_BYTES}",
                    bytes.len()
                ),
            );
        }
        (content_type, bytes)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one check per expectation key, in the order the reference lists them"
    )]
    fn expect(
        &mut self,
        key: &Key,
        raw: &Spanned<RawExpect>,
        messages: &[TestMessage],
        bindings: &BTreeMap<String, String>,
    ) -> Expectations {
        let span = raw.span();
        let raw = raw.get_ref();
        let mut expect = Expectations::default();
        let mut listed: BTreeMap<usize, &'static str> = BTreeMap::new();

        if let Some(result) = &raw.result {
            expect.result = match result.get_ref() {
                RawResult::Error(text) => Some(ExpectedResult::Error(text.clone())),
                RawResult::Named(name) => match name.as_str() {
                    "ok" => Some(ExpectedResult::Ok),
                    "error" => Some(ExpectedResult::AnyError),
                    "trap" => Some(ExpectedResult::Trap),
                    "timeout" => Some(ExpectedResult::Timeout),
                    other => {
                        self.base.report(
                            &key.child("result"),
                            result.span(),
                            format!(
                                "unknown result `{other}`; expected \"ok\", \"error\", \"trap\", \
                                 \"timeout\" or {{ error = \"text\" }}"
                            ),
                        );
                        None
                    }
                },
            };
        }

        let sets = [
            ("acked", &raw.acked),
            ("dead_lettered", &raw.dead_lettered),
            ("dropped", &raw.dropped),
        ];
        for (list, refs) in sets {
            let Some(refs) = refs else { continue };
            let mut set = BTreeSet::new();
            for (j, r) in refs.iter().enumerate() {
                let item_key = key.child(list).index(j);
                if let Some(index) = self.message_index(&item_key, r.span(), r.get_ref(), messages)
                {
                    self.list_once(&item_key, r.span(), index, list, &mut listed);
                    set.insert(index);
                }
            }
            match list {
                "acked" => expect.acked = Some(set),
                "dead_lettered" => expect.dead_lettered = Some(set),
                _ => expect.dropped = Some(set),
            }
        }
        if let Some(retried) = &raw.retried {
            let mut map = BTreeMap::new();
            for (j, entry) in retried.iter().enumerate() {
                let item_key = key.child("retried").index(j);
                let r = entry.get_ref();
                if let Some(delay) = r.delay
                    && delay > MAX_DELAY_SECONDS
                {
                    self.base.report(
                        &item_key.child("delay"),
                        entry.span(),
                        format!("{delay} is out of range (0..={MAX_DELAY_SECONDS})"),
                    );
                }
                if let Some(index) =
                    self.message_index(&item_key, entry.span(), &r.message, messages)
                {
                    self.list_once(&item_key, entry.span(), index, "retried", &mut listed);
                    map.insert(index, r.delay);
                }
            }
            expect.retried = Some(map);
        }

        if let Some(sent) = &raw.sent {
            let mut out = Vec::new();
            for (j, entry) in sent.iter().enumerate() {
                let item_key = key.child("sent").index(j);
                let s = entry.get_ref();
                if !bindings.contains_key(s.binding.get_ref()) {
                    let declared = if bindings.is_empty() {
                        "the file declares no [bindings]".to_owned()
                    } else {
                        format!(
                            "declared: {}",
                            bindings.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    };
                    self.base.report(
                        &item_key.child("binding"),
                        s.binding.span(),
                        format!(
                            "binding `{}` is not declared in [bindings] ({declared})",
                            s.binding.get_ref()
                        ),
                    );
                }
                let (content_type, body) = self.body(
                    &item_key,
                    entry.span(),
                    &s.body,
                    &s.json,
                    &s.base64,
                    &s.content_type,
                );
                if let Some(delay) = &s.delay {
                    self.base
                        .in_range(&item_key, "delay", delay, 0..=MAX_DELAY_SECONDS);
                }
                out.push(ExpectedSend {
                    binding: s.binding.get_ref().clone(),
                    content_type,
                    body,
                    delay_seconds: s.delay.as_ref().map(|d| *d.get_ref()),
                    dedup_key: s.dedup_key.clone(),
                    deduplicated: s.deduplicated,
                });
            }
            expect.sent = Some(out);
        }
        expect.output_contains = raw.output_contains.clone().unwrap_or_default();
        expect.output = raw.output.clone();

        let states_something = raw.result.is_some()
            || raw.acked.is_some()
            || raw.retried.is_some()
            || raw.dead_lettered.is_some()
            || raw.dropped.is_some()
            || raw.sent.is_some()
            || raw.output_contains.as_ref().is_some_and(|o| !o.is_empty())
            || raw.output.is_some();
        if !states_something {
            self.base.report(
                key,
                span,
                "it states nothing: give at least one of result, acked, retried, dead_lettered, \
                 dropped, sent, output_contains, output",
            );
        }
        expect
    }

    /// The index of the message `r` names, if it is in the batch.
    fn message_index(
        &mut self,
        key: &Key,
        span: Range<usize>,
        r: &MessageRef,
        messages: &[TestMessage],
    ) -> Option<usize> {
        match r {
            MessageRef::Index(i) => match usize::try_from(*i) {
                Ok(i) if i < messages.len() => Some(i),
                _ => {
                    self.base.report(
                        key,
                        span,
                        format!(
                            "message {i} is not in the batch (it has {} message{}, 0 to {})",
                            messages.len(),
                            if messages.len() == 1 { "" } else { "s" },
                            messages.len().saturating_sub(1)
                        ),
                    );
                    None
                }
            },
            MessageRef::Id(id) => {
                let found = messages
                    .iter()
                    .position(|m| m.id.is_some_and(|m| m.to_string() == *id));
                if found.is_none() {
                    self.base.report(
                        key,
                        span,
                        format!(
                            "no message of this case has the id `{id}` (name messages by index, \
                             or give them an `id`)"
                        ),
                    );
                }
                found
            }
        }
    }

    /// Records that message `index` is expected in `list`; a message has one fate.
    fn list_once(
        &mut self,
        key: &Key,
        span: Range<usize>,
        index: usize,
        list: &'static str,
        listed: &mut BTreeMap<usize, &'static str>,
    ) {
        if let Some(first) = listed.insert(index, list) {
            let message = if first == list {
                format!("message {index} is listed twice")
            } else {
                format!("message {index} is already listed in `{first}`: a message has one fate")
            };
            self.base.report(key, span, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn fixture(body: &str) -> Result<Fixture, ConfigErrors> {
        // Any existing file will do as the component for parsing.
        let component = env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml";
        let text = format!("component = {component:?}\n{body}");
        parse(&text, Path::new("t.toml"))
    }

    fn error(body: &str) -> String {
        fixture(body).unwrap_err().to_string()
    }

    #[test]
    fn a_full_case_parses() {
        let f = fixture(
            r#"
[consumer]
max_retries = 1
dead_letter_queue = "dlq"
[bindings]
OUT = "out"
[[case]]
name = "all kinds"
messages = [ { body = "ack" }, { body = "fail:boom", attempts = 2 }, { json = { a = 1 } }, { base64 = "aGk=" } ]
limits = { timeout = "50ms" }
expect.result = { error = "boom" }
expect.acked = [0]
expect.retried = [ { message = 1, delay = 0 }, 2 ]
expect.dead_lettered = [3]
expect.sent = [ { binding = "OUT", body = "hello", delay = 0 } ]
expect.output_contains = ["[scripted]"]
"#,
        )
        .unwrap();
        let case = &f.cases[0];
        assert_eq!(case.setup.consumer.max_retries, 1);
        assert_eq!(case.setup.limits.timeout, Duration::from_millis(50));
        assert_eq!(f.setup.limits.timeout, Duration::from_secs(30));
        assert_eq!(case.messages[2].body, br#"{"a":1}"#);
        assert_eq!(case.messages[2].content_type, ContentType::Json);
        assert_eq!(case.messages[3].body, b"hi");
        assert_eq!(case.messages[1].attempts, 2);
        assert_eq!(case.messages[0].id, Some(message_id("all kinds", 0)));
        let e = &case.expect;
        assert_eq!(e.result, Some(ExpectedResult::Error("boom".into())));
        assert_eq!(e.retried.as_ref().unwrap()[&1], Some(0));
        assert_eq!(e.retried.as_ref().unwrap()[&2], None);
        assert_eq!(e.sent.as_ref().unwrap()[0].body, b"hello");
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let e =
            error("[[case]]\nname = \"x\"\nmessages = [{ body = \"ack\" }]\nexpect.acks = [0]\n");
        assert!(
            e.starts_with("t.toml:5:8: case[0].expect.acks: unknown field `acks`"),
            "{e}"
        );
        let e = error(
            "[[case]]\nname = \"x\"\nmessages = [{ bdy = \"ack\" }]\nexpect.result = \"ok\"\n",
        );
        assert!(
            e.starts_with("t.toml:4:15: case[0].messages[0].bdy: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_their_key() {
        let case = |messages: &str, expect: &str| {
            error(&format!(
                "[[case]]\nname = \"x\"\nmessages = {messages}\n{expect}\n"
            ))
        };
        let e = case("[{ body = \"a\" }]", "expect.acked = [3]");
        assert!(
            e.starts_with("t.toml:5:17: case[0].expect.acked[0]: message 3 is not in the batch"),
            "{e}"
        );
        let e = case("[{ body = \"a\", json = 1 }]", "expect.result = \"ok\"");
        assert!(e.contains("case[0].messages[0]: give only one of"), "{e}");
        let e = case("[{ body = \"a\" }]", "expect.result = \"fine\"");
        assert!(
            e.contains("case[0].expect.result: unknown result `fine`"),
            "{e}"
        );
        let e = case(
            "[{ body = \"a\" }]",
            "expect.acked = [0]\nexpect.retried = [0]",
        );
        assert!(
            e.contains("case[0].expect.retried[0]: message 0 is already listed in `acked`"),
            "{e}"
        );
        let e = case("[{ body = \"a\", attempts = 0 }]", "expect.result = \"ok\"");
        assert!(e.contains("case[0].messages[0].attempts:"), "{e}");
        let e = case("[]", "expect.result = \"ok\"");
        assert!(e.contains("case[0].messages: the batch is empty"), "{e}");
        let e = case("[{ body = \"a\" }]", "");
        assert!(e.contains("case[0]: the case has no `expect`"), "{e}");
        let e = case(
            "[{ body = \"a\" }]",
            "expect.sent = [{ binding = \"OUT\", body = \"x\" }]",
        );
        assert!(
            e.contains("case[0].expect.sent[0].binding: binding `OUT` is not declared"),
            "{e}"
        );
        let e = case(
            "[{ body = \"a\" }]",
            "limits.timeout = \"soon\"\nexpect.result = \"ok\"",
        );
        assert!(
            e.contains("case[0].limits.timeout: `soon` is not a duration"),
            "{e}"
        );
        let e = error(
            "[consumer]\nmax_retries = 101\n[[case]]\nname = \"x\"\nmessages = [{ body = \"a\" }]\nexpect.result = \"ok\"\n",
        );
        assert!(
            e.starts_with("t.toml:3:15: consumer.max_retries: 101 is out of range (0..=100)"),
            "{e}"
        );
        let e = error(
            "[consumer]\nqueue = \"q\"\ndead_letter_queue = \"q\"\n[[case]]\nname = \"x\"\nmessages = [{ body = \"a\" }]\nexpect.result = \"ok\"\n",
        );
        assert!(
            e.contains("consumer.dead_letter_queue: queue `q` cannot be its own"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_top_level_key_is_named() {
        let e = parse(
            "[[case]]\nname = \"x\"\nmessages = [{ body = \"a\" }]\nexpect.result = \"ok\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml: component: missing field `component`"
        );
    }

    #[test]
    fn missing_component_is_named() {
        let e = parse(
            "component = \"nope.wasm\"\n[[case]]\nname = \"x\"\nmessages = [{ body = \"a\" }]\nexpect.result = \"ok\"\n",
            Path::new("dir/t.toml"),
        )
        .unwrap_err();
        let e = e.first();
        assert_eq!(e.key.as_deref(), Some("component"));
        assert_eq!(
            e.position,
            Some(Position {
                line: 1,
                column: 13
            })
        );
        assert!(e.message.contains("does not exist"), "{e}");
    }
}
