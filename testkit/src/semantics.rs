//! The queue semantics of docs/semantics.md as backend-independent test cases.
//!
//! Every case takes a fresh [`Ctx`] (an empty broker and the [`ManualClock`] it reads) and
//! panics when the broker misbehaves. Time only moves when a case advances the clock: nothing
//! here sleeps. A backend runs the whole list with
//!
//! ```ignore
//! async fn factory() -> wasmq_testkit::Ctx { /* fresh broker on a ManualClock at START_MS */ }
//! wasmq_testkit::semantic_suite!(factory);
//! ```

use std::any::Any;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use wasmq_engine::{
    Backlog, Broker, BrokerError, Clock, ContentType, LeaseId, LeaseOptions, LeasedMessage,
    ManualClock, Message, Outcome, QueueInfo, QueueMetrics, QueueSettings, SendRequest,
    SettleReport, SweepReport,
};

/// Where the clock of a fresh [`Ctx`] should stand (ms since the Unix epoch).
pub const START_MS: u64 = 1_700_000_000_000;

/// The visibility timeout of leases taken by the helpers (ms).
const VIS: u64 = 30_000;

/// One hour in ms: a lease that outlives a case's clock steps.
const HOUR: u64 = 3_600_000;

/// A fresh, empty broker and the clock it reads.
pub struct Ctx {
    /// The broker under test.
    pub broker: Arc<dyn Broker>,
    /// The broker's clock.
    pub clock: ManualClock,
    /// Whatever must outlive the broker (a temporary directory, a database cluster…).
    /// Dropped after the broker.
    _guard: Box<dyn Any + Send + Sync>,
}

impl Ctx {
    /// Wraps a broker, its clock and a guard that is dropped after the broker.
    pub fn new(broker: Arc<dyn Broker>, clock: ManualClock, guard: impl Any + Send + Sync) -> Self {
        Self {
            broker,
            clock,
            _guard: Box::new(guard),
        }
    }

    fn b(&self) -> &dyn Broker {
        &*self.broker
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }
}

/// Expands to one `#[tokio::test]` per semantic case; `$factory().await` must give a fresh
/// [`Ctx`].
#[macro_export]
macro_rules! semantic_suite {
    ($factory:path) => {
        $crate::semantic_suite!(@cases $factory;
            send_then_lease,
            ack_deletes,
            retry_redelivers_with_next_attempt,
            retry_explicit_delay,
            retry_without_delay_uses_consumer_retry_delay,
            retry_explicit_zero_overrides_retry_delay,
            retries_exhausted_move_to_dead_letter_queue,
            retries_exhausted_without_dead_letter_queue_drop,
            max_retries_zero_dead_letters_on_first_failure,
            dead_letter_queue_without_consumer_keeps_messages_until_retention,
            queue_cannot_be_its_own_dead_letter_queue,
            unknown_dead_letter_queue_is_refused,
            dead_letter_cycle_through_two_queues_is_allowed,
            send_delay_precedence,
            message_size_limit,
            batch_count_limit,
            batch_size_limit,
            empty_batch_is_refused,
            delay_limit,
            retry_delay_over_limit_is_refused,
            body_must_match_content_type,
            invalid_dedup_key_is_refused,
            batch_with_one_bad_message_stores_nothing,
            unknown_queue_is_refused_everywhere,
            settings_out_of_range_are_refused,
            settings_at_range_bounds_are_accepted,
            invalid_queue_names_are_refused,
            duplicate_queue_is_refused,
            lease_oldest_first_up_to_max,
            retried_message_goes_behind_waiting_ones,
            leased_messages_are_not_leased_again,
            expired_lease_redelivers_with_next_attempt,
            expired_lease_found_by_sweep,
            expired_lease_on_last_attempt_dead_letters,
            late_ack_deletes_a_redelivered_message,
            late_settle_of_a_waiting_message_applies,
            invalid_lease_options_are_refused,
            in_flight_follows_lease_and_settle,
            pause_and_resume,
            purge_deletes_everything,
            peek_does_not_lease,
            replay_moves_messages_back,
            retention_expires_old_messages,
            expired_messages_are_never_leased,
            dedup_within_window_stores_once,
            dedup_key_forgotten_after_window,
            dedup_is_per_queue,
            dedup_window_zero_disables_dedup,
            metrics_count_every_transition,
            backlog_tracks_count_bytes_and_oldest,
            list_queues_is_sorted_by_name,
            queue_info_reports_settings_state_and_metrics,
            configure_queue_changes_settings_and_keeps_messages,
            delete_queue_deletes_its_messages,
            delete_queue_refused_while_used_as_dead_letter_queue,
            concurrent_sends_are_each_leased_once,
        );
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let ctx: $crate::Ctx = $factory().await;
                $crate::semantics::$case(&ctx).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn text(body: &str) -> SendRequest {
    SendRequest::text(body)
}

fn settings(edit: impl FnOnce(&mut QueueSettings)) -> QueueSettings {
    let mut s = QueueSettings::default();
    edit(&mut s);
    s
}

/// Settings whose consumer dead-letters to `dlq` after `max_retries` retries.
fn with_dlq(max_retries: u32, dlq: Option<&str>) -> QueueSettings {
    settings(|s| {
        s.consumer.max_retries = max_retries;
        s.consumer.dead_letter_queue = dlq.map(str::to_owned);
    })
}

fn retry(delay_seconds: Option<u32>) -> Outcome {
    Outcome::Retry { delay_seconds }
}

fn ok<T>(what: &str, result: Result<T, BrokerError>) -> T {
    result.unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

fn err<T: Debug>(what: &str, result: Result<T, BrokerError>) -> BrokerError {
    match result {
        Ok(v) => panic!("{what} succeeded with {v:?}; expected an error"),
        Err(e) => e,
    }
}

async fn create(b: &dyn Broker, name: &str) -> QueueInfo {
    create_with(b, name, QueueSettings::default()).await
}

async fn create_with(b: &dyn Broker, name: &str, s: QueueSettings) -> QueueInfo {
    ok(
        &format!("create_queue({name})"),
        b.create_queue(name, s).await,
    )
}

async fn send(b: &dyn Broker, q: &str, request: SendRequest) -> Backlog {
    ok(&format!("send({q})"), b.send(q, request).await)
}

async fn send_text(b: &dyn Broker, q: &str, body: &str) -> Backlog {
    send(b, q, text(body)).await
}

async fn lease_opts(b: &dyn Broker, q: &str, n: u32, vis_ms: u64) -> Vec<LeasedMessage> {
    ok(
        &format!("lease({q})"),
        b.lease(q, LeaseOptions::new(n, vis_ms)).await,
    )
}

async fn lease_n(b: &dyn Broker, q: &str, n: u32) -> Vec<LeasedMessage> {
    lease_opts(b, q, n, VIS).await
}

async fn lease_all(b: &dyn Broker, q: &str) -> Vec<LeasedMessage> {
    lease_n(b, q, 100).await
}

/// Leases exactly one message.
async fn lease_one(b: &dyn Broker, q: &str) -> LeasedMessage {
    let mut leased = lease_all(b, q).await;
    assert_eq!(leased.len(), 1, "expected one message in `{q}`: {leased:?}");
    leased.remove(0)
}

fn body_str(body: &[u8]) -> String {
    String::from_utf8(body.to_vec()).expect("test bodies are UTF-8")
}

fn bodies(leased: &[LeasedMessage]) -> Vec<String> {
    leased.iter().map(|l| body_str(&l.message.body)).collect()
}

fn peeked(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| body_str(&m.body)).collect()
}

fn attempts(leased: &[LeasedMessage]) -> Vec<u32> {
    leased.iter().map(|l| l.message.attempts).collect()
}

async fn settle(b: &dyn Broker, q: &str, outcomes: Vec<(LeaseId, Outcome)>) -> SettleReport {
    ok(&format!("settle({q})"), b.settle(q, outcomes).await)
}

async fn settle_one(b: &dyn Broker, q: &str, m: &LeasedMessage, o: Outcome) -> SettleReport {
    settle(b, q, vec![(m.lease, o)]).await
}

async fn ack_each(b: &dyn Broker, q: &str, leased: &[LeasedMessage]) -> SettleReport {
    settle(
        b,
        q,
        leased.iter().map(|l| (l.lease, Outcome::Ack)).collect(),
    )
    .await
}

async fn metrics(b: &dyn Broker, q: &str) -> QueueMetrics {
    ok(&format!("metrics({q})"), b.metrics(q).await)
}

async fn count(b: &dyn Broker, q: &str) -> u64 {
    metrics(b, q).await.backlog.count
}

async fn sweep(b: &dyn Broker) -> SweepReport {
    ok("sweep", b.sweep().await)
}

fn report(edit: impl FnOnce(&mut SettleReport)) -> SettleReport {
    let mut r = SettleReport::default();
    edit(&mut r);
    r
}

fn is_lower_hex_32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

// ---------------------------------------------------------------------------------------------
// Sending and delivering

/// Message fields survive the round trip; sends answer the backlog after the send.
pub async fn send_then_lease(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let t0 = ctx.now();

    let json = SendRequest::new(br#"{"n":1}"#.to_vec(), ContentType::Json);
    let backlog = send(b, "q", json).await;
    assert_eq!(
        backlog,
        Backlog {
            count: 1,
            bytes: 7,
            oldest_timestamp_ms: Some(t0)
        }
    );

    ctx.clock.advance_secs(2);
    let raw = SendRequest::new(vec![0u8, 255, 1], ContentType::Bytes);
    let backlog = send(b, "q", raw).await;
    assert_eq!(
        backlog,
        Backlog {
            count: 2,
            bytes: 10,
            oldest_timestamp_ms: Some(t0)
        }
    );
    let backlog = send_text(b, "q", "héllo").await;
    assert_eq!(backlog.count, 3);
    assert_eq!(backlog.bytes, 16);

    ctx.clock.advance_secs(1);
    let leased = lease_opts(b, "q", 10, 5_000).await;
    assert_eq!(leased.len(), 3);
    let ids: HashSet<String> = leased.iter().map(|l| l.message.id.to_string()).collect();
    assert_eq!(ids.len(), 3, "ids are unique");
    for l in &leased {
        let id = l.message.id.to_string();
        assert!(is_lower_hex_32(&id), "id `{id}` is not 32 lowercase hex");
        assert!(is_lower_hex_32(&l.lease.to_string()));
        assert_eq!(l.message.attempts, 1);
        assert_eq!(l.lease_deadline_ms, ctx.now() + 5_000);
    }
    let leases: HashSet<LeaseId> = leased.iter().map(|l| l.lease).collect();
    assert_eq!(leases.len(), 3, "lease ids are unique");

    let m = &leased[0].message;
    assert_eq!(
        (m.timestamp_ms, m.content_type, m.body.as_slice()),
        (t0, ContentType::Json, br#"{"n":1}"#.as_slice())
    );
    let m = &leased[1].message;
    assert_eq!(
        (m.timestamp_ms, m.content_type, m.body.as_slice()),
        (t0 + 2_000, ContentType::Bytes, [0u8, 255, 1].as_slice())
    );
    let m = &leased[2].message;
    assert_eq!(
        (m.timestamp_ms, m.content_type, m.body.as_slice()),
        (t0 + 2_000, ContentType::Text, "héllo".as_bytes())
    );
}

/// An ack deletes the message for good.
pub async fn ack_deletes(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    assert_eq!(
        settle_one(b, "q", &m, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
    let after = metrics(b, "q").await;
    assert_eq!(after.backlog, Backlog::default());
    assert_eq!((after.acked, after.in_flight, after.retried), (1, 0, 0));
    ctx.clock.advance_secs(3600);
    sweep(b).await;
    assert!(lease_all(b, "q").await.is_empty());
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
}

/// A retry redelivers the same message with its attempt count raised.
pub async fn retry_redelivers_with_next_attempt(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let t0 = ctx.now();
    send_text(b, "q", "m").await;
    let first = lease_one(b, "q").await;
    assert_eq!(
        settle_one(b, "q", &first, retry(None)).await,
        report(|r| r.retried = 1)
    );
    let second = lease_one(b, "q").await;
    assert_eq!(second.message.id, first.message.id);
    assert_eq!(second.message.timestamp_ms, t0);
    assert_eq!(second.message.attempts, 2);
    assert_ne!(second.lease, first.lease);
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.retried, m.acked, m.in_flight, m.backlog.count),
        (1, 0, 1, 1)
    );
}

/// `Retry { Some(30) }` hides the message for exactly 30 s.
pub async fn retry_explicit_delay(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    settle_one(b, "q", &m, retry(Some(30))).await;
    assert_eq!(metrics(b, "q").await.delayed, 1);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(29_999);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(1);
    let again = lease_one(b, "q").await;
    assert_eq!(again.message.attempts, 2);
    assert_eq!(metrics(b, "q").await.delayed, 0);
}

/// `Retry { None }` uses the consumer's `retry_delay`.
pub async fn retry_without_delay_uses_consumer_retry_delay(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.consumer.retry_delay = 20)).await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    settle_one(b, "q", &m, retry(None)).await;
    ctx.clock.advance_ms(19_999);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(1);
    assert_eq!(lease_one(b, "q").await.message.attempts, 2);

    // An explicit delay beats the consumer's.
    send_text(b, "q", "n").await;
    let n = lease_one(b, "q").await;
    settle_one(b, "q", &n, retry(Some(5))).await;
    ctx.clock.advance_secs(5);
    assert_eq!(bodies(&lease_all(b, "q").await), ["n"]);
}

/// An explicit `Some(0)` overrides a non-zero `retry_delay`.
pub async fn retry_explicit_zero_overrides_retry_delay(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.consumer.retry_delay = 60)).await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    settle_one(b, "q", &m, retry(Some(0))).await;
    let again = lease_one(b, "q").await;
    assert_eq!(again.message.id, m.message.id);
    assert_eq!(again.message.attempts, 2);
}

// ---------------------------------------------------------------------------------------------
// Retries exhausted and dead-letter queues

/// After `1 + max_retries` failed attempts the message moves to the DLQ, keeping id and
/// timestamp; its attempts start again at 1 there.
pub async fn retries_exhausted_move_to_dead_letter_queue(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(2, Some("dlq"))).await;
    let t0 = ctx.now();
    send_text(b, "src", "m").await;
    ctx.clock.advance_secs(10);

    let mut id = None;
    for attempt in 1..=3 {
        let m = lease_one(b, "src").await;
        assert_eq!(m.message.attempts, attempt);
        id = Some(m.message.id);
        let r = settle_one(b, "src", &m, retry(None)).await;
        if attempt < 3 {
            assert_eq!(r, report(|r| r.retried = 1), "attempt {attempt}");
        } else {
            assert_eq!(r, report(|r| r.dead_lettered = 1), "attempt {attempt}");
        }
    }
    assert!(lease_all(b, "src").await.is_empty());
    let src = metrics(b, "src").await;
    assert_eq!(src.backlog, Backlog::default());
    assert_eq!(
        (
            src.sent,
            src.retried,
            src.dead_lettered,
            src.dropped,
            src.in_flight
        ),
        (1, 2, 1, 0, 0)
    );
    assert_eq!(
        metrics(b, "dlq").await.backlog,
        Backlog {
            count: 1,
            bytes: 1,
            oldest_timestamp_ms: Some(t0)
        }
    );

    let d = lease_one(b, "dlq").await;
    assert_eq!(Some(d.message.id), id);
    assert_eq!(d.message.timestamp_ms, t0);
    assert_eq!(d.message.attempts, 1);
    assert_eq!(d.message.body, b"m");
    assert_eq!(d.message.content_type, ContentType::Text);
}

/// Without a DLQ an exhausted message is deleted and counted as dropped.
pub async fn retries_exhausted_without_dead_letter_queue_drop(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", with_dlq(2, None)).await;
    send_text(b, "q", "m").await;
    for attempt in 1..=3 {
        let m = lease_one(b, "q").await;
        assert_eq!(m.message.attempts, attempt);
        let r = settle_one(b, "q", &m, retry(Some(0))).await;
        if attempt < 3 {
            assert_eq!(r, report(|r| r.retried = 1));
        } else {
            assert_eq!(r, report(|r| r.dropped = 1));
        }
    }
    let m = metrics(b, "q").await;
    assert_eq!(m.backlog, Backlog::default());
    assert_eq!((m.retried, m.dropped, m.dead_lettered), (2, 1, 0));
    assert!(lease_all(b, "q").await.is_empty());
}

/// `max_retries = 0`: the first failure dead-letters.
pub async fn max_retries_zero_dead_letters_on_first_failure(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(0, Some("dlq"))).await;
    send_text(b, "src", "m").await;
    let m = lease_one(b, "src").await;
    assert_eq!(
        settle_one(b, "src", &m, retry(Some(0))).await,
        report(|r| r.dead_lettered = 1)
    );
    assert_eq!(count(b, "src").await, 0);
    assert_eq!(metrics(b, "src").await.retried, 0);
    let d = lease_one(b, "dlq").await;
    assert_eq!((d.message.id, d.message.attempts), (m.message.id, 1));
}

/// A DLQ nobody consumes keeps its messages until their retention runs out.
pub async fn dead_letter_queue_without_consumer_keeps_messages_until_retention(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "dlq", settings(|s| s.message_retention_period = 3_600)).await;
    create_with(b, "src", with_dlq(0, Some("dlq"))).await;
    send_text(b, "src", "m").await;
    let m = lease_one(b, "src").await;
    settle_one(b, "src", &m, retry(None)).await;
    assert_eq!(count(b, "dlq").await, 1);

    ctx.clock.advance_secs(3_000);
    assert_eq!(sweep(b).await.messages_expired, 0);
    assert_eq!(count(b, "dlq").await, 1);
    ctx.clock.advance_secs(599);
    assert_eq!(sweep(b).await.messages_expired, 0);
    assert_eq!(count(b, "dlq").await, 1);

    ctx.clock.advance_secs(2);
    assert_eq!(sweep(b).await.messages_expired, 1);
    let dlq = metrics(b, "dlq").await;
    assert_eq!(dlq.backlog, Backlog::default());
    assert_eq!(dlq.expired, 1);
    assert_eq!(metrics(b, "src").await.expired, 0);
}

/// A queue may not be its own DLQ, neither at creation nor later.
pub async fn queue_cannot_be_its_own_dead_letter_queue(ctx: &Ctx) {
    let b = ctx.b();
    let e = err("create", b.create_queue("a", with_dlq(3, Some("a"))).await);
    assert_eq!(e, BrokerError::SelfDeadLetter("a".into()));
    assert_eq!(
        err("queue_info", b.queue_info("a").await),
        BrokerError::UnknownQueue("a".into())
    );

    create(b, "a").await;
    let e = err(
        "configure",
        b.configure_queue("a", with_dlq(3, Some("a"))).await,
    );
    assert_eq!(e, BrokerError::SelfDeadLetter("a".into()));
    let info = ok("queue_info", b.queue_info("a").await);
    assert_eq!(info.settings, QueueSettings::default());
}

/// A DLQ that does not exist is refused on create and configure.
pub async fn unknown_dead_letter_queue_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    let expected = BrokerError::UnknownDeadLetterQueue {
        queue: "a".into(),
        dead_letter_queue: "missing".into(),
    };
    let e = err(
        "create",
        b.create_queue("a", with_dlq(3, Some("missing"))).await,
    );
    assert_eq!(e, expected);
    assert!(ok("list", b.list_queues().await).is_empty());

    create(b, "a").await;
    let e = err(
        "configure",
        b.configure_queue("a", with_dlq(3, Some("missing"))).await,
    );
    assert_eq!(e, expected);
    let info = ok("queue_info", b.queue_info("a").await);
    assert_eq!(info.settings.consumer.dead_letter_queue, None);
}

/// Two queues may be each other's DLQ; messages travel round the cycle.
pub async fn dead_letter_cycle_through_two_queues_is_allowed(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "a", with_dlq(0, None)).await;
    create_with(b, "b", with_dlq(0, Some("a"))).await;
    let info = ok(
        "configure a",
        b.configure_queue("a", with_dlq(0, Some("b"))).await,
    );
    assert_eq!(
        info.settings.consumer.dead_letter_queue.as_deref(),
        Some("b")
    );

    let t0 = ctx.now();
    send_text(b, "a", "m").await;
    let m = lease_one(b, "a").await;
    settle_one(b, "a", &m, retry(None)).await;
    let in_b = lease_one(b, "b").await;
    assert_eq!(
        (
            in_b.message.id,
            in_b.message.attempts,
            in_b.message.timestamp_ms
        ),
        (m.message.id, 1, t0)
    );
    assert_eq!(
        settle_one(b, "b", &in_b, retry(None)).await,
        report(|r| r.dead_lettered = 1)
    );
    let back = lease_one(b, "a").await;
    assert_eq!((back.message.id, back.message.attempts), (m.message.id, 1));
    assert_eq!(metrics(b, "a").await.dead_lettered, 1);
    assert_eq!(metrics(b, "b").await.dead_lettered, 1);
}

// ---------------------------------------------------------------------------------------------
// Send delay

/// Per message > per batch > queue `delivery_delay` > 0; an explicit 0 overrides.
pub async fn send_delay_precedence(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.delivery_delay = 100)).await;
    let t0 = ctx.now();
    let batch = vec![
        text("message-10").with_delay(10),
        text("batch-50"),
        text("zero-in-batch").with_delay(0),
    ];
    ok("send_batch", b.send_batch("q", batch, Some(50)).await);
    ok(
        "send_batch",
        b.send_batch("q", vec![text("queue-100-batch")], None).await,
    );
    send_text(b, "q", "queue-100").await;
    send(b, "q", text("zero").with_delay(0)).await;

    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.delayed, m.sent), (6, 4, 6));
    assert_eq!(
        bodies(&lease_opts(b, "q", 100, HOUR).await),
        ["zero-in-batch", "zero"]
    );
    assert_eq!(metrics(b, "q").await.delayed, 4);

    let steps: [(u64, &[&str]); 3] = [
        (10_000, &["message-10"]),
        (50_000, &["batch-50"]),
        (100_000, &["queue-100-batch", "queue-100"]),
    ];
    let mut delayed = 4;
    for (at, expected) in steps {
        ctx.clock.set_ms(t0 + at - 1);
        assert!(
            lease_opts(b, "q", 100, HOUR).await.is_empty(),
            "nothing due before {at} ms"
        );
        ctx.clock.set_ms(t0 + at);
        assert_eq!(
            bodies(&lease_opts(b, "q", 100, HOUR).await),
            expected,
            "due at {at} ms"
        );
        delayed -= expected.len() as u64;
        assert_eq!(metrics(b, "q").await.delayed, delayed);
    }
    let m = metrics(b, "q").await;
    assert_eq!((m.in_flight, m.delayed, m.backlog.count), (6, 0, 6));
}

// ---------------------------------------------------------------------------------------------
// Limits

async fn assert_nothing_stored(b: &dyn Broker, q: &str) {
    let m = metrics(b, q).await;
    assert_eq!(m.backlog, Backlog::default(), "nothing may be stored");
    assert_eq!(m.sent, 0, "nothing may be counted as sent");
}

/// Bodies over 128 000 bytes are refused; 128 000 is accepted.
pub async fn message_size_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let big = SendRequest::new(vec![b'a'; 128_001], ContentType::Bytes);
    let e = err("send", b.send("q", big.clone()).await);
    assert_eq!(
        e,
        BrokerError::MessageTooLarge {
            size: 128_001,
            limit: 128_000
        }
    );
    assert_eq!(
        e.to_string(),
        "message body is 128001 bytes; the limit is 128000"
    );
    let e = err("send_batch", b.send_batch("q", vec![big], None).await);
    assert!(matches!(
        e,
        BrokerError::MessageTooLarge { size: 128_001, .. }
    ));
    assert_nothing_stored(b, "q").await;

    let max = SendRequest::new(vec![b'a'; 128_000], ContentType::Bytes);
    assert_eq!(send(b, "q", max).await.bytes, 128_000);
    assert_eq!(lease_one(b, "q").await.message.body.len(), 128_000);
}

/// At most 100 messages per batch.
pub async fn batch_count_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let batch = |n: usize| (0..n).map(|i| text(&i.to_string())).collect::<Vec<_>>();
    let e = err("send_batch", b.send_batch("q", batch(101), None).await);
    assert_eq!(
        e,
        BrokerError::TooManyMessages {
            count: 101,
            limit: 100
        }
    );
    assert_nothing_stored(b, "q").await;
    let backlog = ok("send_batch", b.send_batch("q", batch(100), None).await);
    assert_eq!(backlog.count, 100);
    assert_eq!(metrics(b, "q").await.sent, 100);
}

/// At most 256 000 body bytes per batch.
pub async fn batch_size_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let blob = |n: usize| SendRequest::new(vec![7u8; n], ContentType::Bytes);
    let over = vec![blob(128_000), blob(128_000), blob(1)];
    let e = err("send_batch", b.send_batch("q", over, None).await);
    assert_eq!(
        e,
        BrokerError::BatchTooLarge {
            size: 256_001,
            limit: 256_000
        }
    );
    assert_nothing_stored(b, "q").await;
    let full = vec![blob(128_000), blob(128_000)];
    let backlog = ok("send_batch", b.send_batch("q", full, None).await);
    assert_eq!((backlog.count, backlog.bytes), (2, 256_000));
}

/// An empty batch is an error.
pub async fn empty_batch_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    assert_eq!(
        err("send_batch", b.send_batch("q", vec![], None).await),
        BrokerError::EmptyBatch
    );
    assert_eq!(
        err("send_batch", b.send_batch("q", vec![], Some(5)).await),
        BrokerError::EmptyBatch
    );
    assert_nothing_stored(b, "q").await;
}

/// Delays are limited to 86 400 s, per message and per batch.
pub async fn delay_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let invalid = BrokerError::InvalidDelay {
        delay: 86_401,
        max: 86_400,
    };
    let e = err("send", b.send("q", text("m").with_delay(86_401)).await);
    assert_eq!(e, invalid);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b")], Some(86_401))
            .await,
    );
    assert_eq!(e, invalid);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b").with_delay(86_401)], None)
            .await,
    );
    assert_eq!(e, invalid);
    assert_nothing_stored(b, "q").await;

    send(b, "q", text("m").with_delay(86_400)).await;
    ok(
        "send_batch",
        b.send_batch("q", vec![text("a")], Some(86_400)).await,
    );
    assert_eq!(metrics(b, "q").await.delayed, 2);
    ctx.clock.advance_secs(86_400);
    assert_eq!(bodies(&lease_all(b, "q").await), ["m", "a"]);
}

/// A retry delay over 86 400 s refuses the whole settle; nothing changes.
pub async fn retry_delay_over_limit_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    let ab = lease_all(b, "q").await;
    let e = err(
        "settle",
        b.settle(
            "q",
            vec![
                (ab[0].lease, Outcome::Ack),
                (ab[1].lease, retry(Some(86_401))),
            ],
        )
        .await,
    );
    assert_eq!(
        e,
        BrokerError::InvalidDelay {
            delay: 86_401,
            max: 86_400
        }
    );
    let m = metrics(b, "q").await;
    assert_eq!((m.in_flight, m.acked, m.retried), (2, 0, 0));
    let r = settle(
        b,
        "q",
        vec![
            (ab[0].lease, Outcome::Ack),
            (ab[1].lease, retry(Some(86_400))),
        ],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.acked = 1;
            r.retried = 1;
        })
    );
}

/// json bodies must be JSON and text bodies UTF-8; bytes are anything.
pub async fn body_must_match_content_type(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let bad_json = SendRequest::new(b"{nope".to_vec(), ContentType::Json);
    let bad_text = SendRequest::new(vec![0xff, 0xfe], ContentType::Text);
    for bad in [bad_json, bad_text] {
        let e = err("send", b.send("q", bad.clone()).await);
        assert!(matches!(e, BrokerError::InvalidBody(_)), "{bad:?}: {e:?}");
    }
    assert_nothing_stored(b, "q").await;

    send(
        b,
        "q",
        SendRequest::new(br#"{"a":[1,2]}"#.to_vec(), ContentType::Json),
    )
    .await;
    send(b, "q", text("café")).await;
    send(
        b,
        "q",
        SendRequest::new(vec![0xff, 0xfe], ContentType::Bytes),
    )
    .await;
    let leased = lease_all(b, "q").await;
    let types: Vec<_> = leased.iter().map(|l| l.message.content_type).collect();
    assert_eq!(
        types,
        [ContentType::Json, ContentType::Text, ContentType::Bytes]
    );
    assert_eq!(leased[2].message.body, [0xff, 0xfe]);
}

/// Dedup keys must be 1..=256 bytes.
pub async fn invalid_dedup_key_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for key in [String::new(), "k".repeat(257)] {
        let e = err("send", b.send("q", text("m").with_dedup_key(key)).await);
        assert!(matches!(e, BrokerError::InvalidDedupKey(_)), "{e:?}");
    }
    assert_nothing_stored(b, "q").await;
    send(b, "q", text("m").with_dedup_key("k".repeat(256))).await;
    assert_eq!(count(b, "q").await, 1);
}

/// A batch is all or nothing.
pub async fn batch_with_one_bad_message_stores_nothing(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let bad_json = SendRequest::new(b"{".to_vec(), ContentType::Json);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b"), bad_json], None)
            .await,
    );
    assert!(matches!(e, BrokerError::InvalidBody(_)), "{e:?}");
    let too_big = SendRequest::new(vec![0; 128_001], ContentType::Bytes);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), too_big], None).await,
    );
    assert!(matches!(e, BrokerError::MessageTooLarge { .. }), "{e:?}");
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b").with_dedup_key("")], None)
            .await,
    );
    assert!(matches!(e, BrokerError::InvalidDedupKey(_)), "{e:?}");
    assert_nothing_stored(b, "q").await;
    assert!(lease_all(b, "q").await.is_empty());
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
}

/// Every operation naming a missing queue answers `UnknownQueue` and changes nothing.
pub async fn unknown_queue_is_refused_everywhere(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "real").await;
    send_text(b, "real", "m").await;
    let m = lease_one(b, "real").await;
    let unknown = BrokerError::UnknownQueue("nope".into());

    assert_eq!(err("send", b.send("nope", text("m")).await), unknown);
    assert_eq!(
        err(
            "send_batch",
            b.send_batch("nope", vec![text("m")], None).await
        ),
        unknown
    );
    assert_eq!(
        err("lease", b.lease("nope", LeaseOptions::new(1, VIS)).await),
        unknown
    );
    assert_eq!(
        err(
            "settle",
            b.settle("nope", vec![(m.lease, Outcome::Ack)]).await
        ),
        unknown
    );
    assert_eq!(err("metrics", b.metrics("nope").await), unknown);
    assert_eq!(err("queue_info", b.queue_info("nope").await), unknown);
    assert_eq!(
        err(
            "configure",
            b.configure_queue("nope", QueueSettings::default()).await
        ),
        unknown
    );
    assert_eq!(err("delete", b.delete_queue("nope").await), unknown);
    assert_eq!(err("set_paused", b.set_paused("nope", true).await), unknown);
    assert_eq!(err("purge", b.purge("nope").await), unknown);
    assert_eq!(err("peek", b.peek("nope", 1).await), unknown);
    assert_eq!(err("replay", b.replay("nope", "real", 1).await), unknown);
    assert_eq!(err("replay", b.replay("real", "nope", 1).await), unknown);

    assert_eq!(ok("list", b.list_queues().await).len(), 1);
    let real = metrics(b, "real").await;
    assert_eq!((real.backlog.count, real.in_flight, real.acked), (1, 1, 0));
    assert_eq!(
        settle_one(b, "real", &m, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
}

// ---------------------------------------------------------------------------------------------
// Queue settings and names

type Edit = fn(&mut QueueSettings);

const OUT_OF_RANGE: [(&str, u64, Edit); 10] = [
    ("max_batch_size", 0, |s| s.consumer.max_batch_size = 0),
    ("max_batch_size", 101, |s| s.consumer.max_batch_size = 101),
    ("max_batch_timeout", 61, |s| {
        s.consumer.max_batch_timeout = 61
    }),
    ("max_retries", 101, |s| s.consumer.max_retries = 101),
    ("retry_delay", 86_401, |s| s.consumer.retry_delay = 86_401),
    ("message_retention_period", 59, |s| {
        s.message_retention_period = 59
    }),
    ("message_retention_period", 1_209_601, |s| {
        s.message_retention_period = 1_209_601
    }),
    ("delivery_delay", 86_401, |s| s.delivery_delay = 86_401),
    ("dedup_window", 86_401, |s| s.dedup_window = 86_401),
    ("max_retries", 1_000, |s| s.consumer.max_retries = 1_000),
];

/// Out-of-range settings are refused with `InvalidSetting` naming the key.
pub async fn settings_out_of_range_are_refused(ctx: &Ctx) {
    let b = ctx.b();
    for (key, value, edit) in OUT_OF_RANGE {
        match err(key, b.create_queue("q", settings(edit)).await) {
            BrokerError::InvalidSetting {
                key: k, value: v, ..
            } => {
                assert_eq!((k, v), (key, value));
            }
            other => panic!("create with {key} = {value}: expected InvalidSetting, got {other:?}"),
        }
    }
    assert!(ok("list", b.list_queues().await).is_empty());

    create(b, "q").await;
    for (key, value, edit) in OUT_OF_RANGE {
        match err(key, b.configure_queue("q", settings(edit)).await) {
            BrokerError::InvalidSetting {
                key: k, value: v, ..
            } => {
                assert_eq!((k, v), (key, value));
            }
            other => {
                panic!("configure with {key} = {value}: expected InvalidSetting, got {other:?}")
            }
        }
    }
    let info = ok("queue_info", b.queue_info("q").await);
    assert_eq!(info.settings, QueueSettings::default());
}

/// Both ends of every range are accepted.
pub async fn settings_at_range_bounds_are_accepted(ctx: &Ctx) {
    let b = ctx.b();
    let high = settings(|s| {
        s.delivery_delay = 86_400;
        s.message_retention_period = 1_209_600;
        s.dedup_window = 86_400;
        s.consumer.max_batch_size = 100;
        s.consumer.max_batch_timeout = 60;
        s.consumer.max_retries = 100;
        s.consumer.retry_delay = 86_400;
    });
    let low = settings(|s| {
        s.delivery_delay = 0;
        s.message_retention_period = 60;
        s.dedup_window = 0;
        s.consumer.max_batch_size = 1;
        s.consumer.max_batch_timeout = 0;
        s.consumer.max_retries = 0;
        s.consumer.retry_delay = 0;
    });
    assert_eq!(create_with(b, "high", high.clone()).await.settings, high);
    assert_eq!(create_with(b, "low", low.clone()).await.settings, low);
    assert_eq!(ok("info", b.queue_info("high").await).settings, high);
    assert_eq!(ok("info", b.queue_info("low").await).settings, low);
}

/// Queue names: 1..=63 of `[a-z0-9_-]`, starting with a letter or digit.
pub async fn invalid_queue_names_are_refused(ctx: &Ctx) {
    let b = ctx.b();
    let long = "x".repeat(64);
    for name in ["", "Jobs", "-jobs", "_jobs", "jobs/x", "jöbs", "a b", &long] {
        match err(name, b.create_queue(name, QueueSettings::default()).await) {
            BrokerError::InvalidQueueName { name: n, .. } => assert_eq!(n, name),
            other => panic!("name {name:?}: expected InvalidQueueName, got {other:?}"),
        }
    }
    assert!(ok("list", b.list_queues().await).is_empty());
    for name in ["a", "9", "jobs-dlq", "q_1", &"x".repeat(63)] {
        create(b, name).await;
    }
    assert_eq!(ok("list", b.list_queues().await).len(), 5);
}

/// Creating a queue twice is refused and leaves the first one alone.
pub async fn duplicate_queue_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.delivery_delay = 5)).await;
    send_text(b, "q", "m").await;
    assert_eq!(
        err(
            "create",
            b.create_queue("q", QueueSettings::default()).await
        ),
        BrokerError::QueueExists("q".into())
    );
    let info = ok("info", b.queue_info("q").await);
    assert_eq!(info.settings.delivery_delay, 5);
    assert_eq!(info.metrics.backlog.count, 1);
}

// ---------------------------------------------------------------------------------------------
// Leasing

/// Oldest visible first, at most `max_messages` at a time.
pub async fn lease_oldest_first_up_to_max(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c", "d", "e"] {
        send_text(b, "q", body).await;
    }
    assert_eq!(bodies(&lease_n(b, "q", 2).await), ["a", "b"]);
    assert_eq!(bodies(&lease_n(b, "q", 1).await), ["c"]);
    assert_eq!(bodies(&lease_n(b, "q", 10).await), ["d", "e"]);
    assert!(lease_n(b, "q", 10).await.is_empty());
}

/// A retried message goes behind the messages already waiting (same millisecond included).
pub async fn retried_message_goes_behind_waiting_ones(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    let a = lease_n(b, "q", 1).await;
    assert_eq!(bodies(&a), ["a"]);
    settle_one(b, "q", &a[0], retry(Some(0))).await;
    let all = lease_all(b, "q").await;
    assert_eq!(bodies(&all), ["b", "c", "a"]);
    assert_eq!(attempts(&all), [1, 1, 2]);
}

/// A message under lease is not handed out again while the lease holds.
pub async fn leased_messages_are_not_leased_again(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    assert_eq!(bodies(&lease_n(b, "q", 1).await), ["a"]);
    assert_eq!(bodies(&lease_all(b, "q").await), ["b"]);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(VIS - 1);
    assert!(lease_all(b, "q").await.is_empty());
    assert_eq!(sweep(b).await.leases_expired, 0);
    assert_eq!(metrics(b, "q").await.in_flight, 2);
}

/// An expired lease is a failed attempt: the message comes back with `attempts + 1`.
pub async fn expired_lease_redelivers_with_next_attempt(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let first = lease_opts(b, "q", 1, 1_000).await;
    assert_eq!(first[0].lease_deadline_ms, ctx.now() + 1_000);
    ctx.clock.advance_ms(999);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(2);
    let second = lease_one(b, "q").await;
    assert_eq!(second.message.id, first[0].message.id);
    assert_eq!(second.message.attempts, 2);
    let m = metrics(b, "q").await;
    assert_eq!((m.retried, m.in_flight, m.backlog.count), (1, 1, 1));
}

/// `sweep` turns expired leases into failed attempts too.
pub async fn expired_lease_found_by_sweep(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    lease_opts(b, "q", 1, 1_000).await;
    ctx.clock.advance_ms(1_001);
    let r = sweep(b).await;
    assert_eq!(r.leases_expired, 1);
    let m = metrics(b, "q").await;
    assert_eq!((m.retried, m.in_flight, m.backlog.count), (1, 0, 1));
    let peek = ok("peek", b.peek("q", 10).await);
    assert_eq!(peek.len(), 1);
    assert_eq!(peek[0].attempts, 1, "one delivery so far");
    assert_eq!(lease_one(b, "q").await.message.attempts, 2);
    assert_eq!(sweep(b).await.leases_expired, 0);
}

/// A lease that expires on the last allowed attempt dead-letters (or drops) the message.
pub async fn expired_lease_on_last_attempt_dead_letters(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(1, Some("dlq"))).await;
    send_text(b, "src", "m").await;
    let first = lease_opts(b, "src", 1, 1_000).await;
    ctx.clock.advance_ms(1_001);
    let second = lease_opts(b, "src", 1, 1_000).await;
    assert_eq!(attempts(&second), [2]);
    ctx.clock.advance_ms(1_001);
    assert_eq!(sweep(b).await.leases_expired, 1);
    let src = metrics(b, "src").await;
    assert_eq!(
        (
            src.backlog.count,
            src.in_flight,
            src.retried,
            src.dead_lettered
        ),
        (0, 0, 1, 1)
    );
    let d = lease_one(b, "dlq").await;
    assert_eq!((d.message.id, d.message.attempts), (first[0].message.id, 1));

    // No DLQ: dropped, here noticed by `lease` rather than `sweep`.
    create_with(b, "plain", with_dlq(0, None)).await;
    send_text(b, "plain", "n").await;
    lease_opts(b, "plain", 1, 1_000).await;
    ctx.clock.advance_ms(1_001);
    assert!(lease_all(b, "plain").await.is_empty());
    let plain = metrics(b, "plain").await;
    assert_eq!(
        (plain.backlog.count, plain.dropped, plain.retried),
        (0, 1, 0)
    );
}

/// A late ack (its lease expired and the message was redelivered meanwhile) still deletes the
/// message, as Cloudflare documents for pull consumers: the work is done. A late retry of a
/// message a newer lease holds is left to that holder. Once the message is gone, or for a lease
/// of another queue, the decision is stale and changes nothing.
pub async fn late_ack_deletes_a_redelivered_message(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let first = lease_opts(b, "q", 1, 1_000).await.remove(0);
    ctx.clock.advance_ms(1_001);
    let second = lease_one(b, "q").await;
    assert_eq!(second.message.attempts, 2);

    assert_eq!(
        settle_one(b, "q", &first, retry(Some(0))).await,
        report(|r| r.stale = vec![first.lease])
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.acked, m.in_flight, m.backlog.count, m.retried),
        (0, 1, 1, 1)
    );

    assert_eq!(
        settle_one(b, "q", &first, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.acked, m.in_flight, m.backlog.count, m.retried),
        (1, 0, 0, 1)
    );
    // The newer lease's decision, and a second ack, find nothing.
    let r = settle(
        b,
        "q",
        vec![(second.lease, Outcome::Ack), (first.lease, Outcome::Ack)],
    )
    .await;
    assert_eq!(r, report(|r| r.stale = vec![second.lease, first.lease]));
    assert_eq!(metrics(b, "q").await.acked, 1);
    ctx.clock.advance_secs(60);
    assert!(lease_all(b, "q").await.is_empty());

    // A lease of another queue.
    create(b, "other").await;
    send_text(b, "other", "o").await;
    let o = lease_one(b, "other").await;
    assert_eq!(
        settle_one(b, "q", &o, Outcome::Ack).await,
        report(|r| r.stale = vec![o.lease])
    );
    let other = metrics(b, "other").await;
    assert_eq!(
        (other.acked, other.in_flight, other.backlog.count),
        (0, 1, 1)
    );
}

/// A decision that comes after the lease deadline, before `lease` or `sweep` noticed the
/// expiry: the expiry counts as a failed attempt first, then the late decision applies to the
/// waiting message: an ack deletes it, a retry sets when it is delivered next.
pub async fn late_settle_of_a_waiting_message_applies(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "n").await;
    send_text(b, "q", "p").await;
    let leased = lease_opts(b, "q", 2, 1_000).await;
    assert_eq!(bodies(&leased), ["n", "p"]);
    ctx.clock.advance_ms(1_001);
    let r = settle(
        b,
        "q",
        vec![
            (leased[0].lease, Outcome::Ack),
            (leased[1].lease, retry(Some(30))),
        ],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.acked = 1;
            r.retried = 1;
        })
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.acked, m.retried, m.in_flight, m.backlog.count, m.delayed),
        (1, 2, 0, 1, 1)
    );
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_secs(30);
    let again = lease_one(b, "q").await;
    assert_eq!(
        (again.message.id, again.message.attempts),
        (leased[1].message.id, 2)
    );
}

/// Lease options out of range are refused and lease nothing.
pub async fn invalid_lease_options_are_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let twelve_hours = 12 * 3_600 * 1_000;
    for (n, vis) in [(0, VIS), (101, VIS), (1, 0), (1, twelve_hours + 1)] {
        let e = err("lease", b.lease("q", LeaseOptions::new(n, vis)).await);
        assert!(
            matches!(e, BrokerError::InvalidLease(_)),
            "({n}, {vis}): {e:?}"
        );
    }
    assert_eq!(metrics(b, "q").await.in_flight, 0);
    let m = lease_opts(b, "q", 100, twelve_hours).await;
    assert_eq!(attempts(&m), [1]);
    assert_eq!(m[0].lease_deadline_ms, ctx.now() + twelve_hours);
    assert_eq!(lease_opts(b, "q", 1, 1).await.len(), 0);
}

/// `in_flight` rises on lease and falls on settle.
pub async fn in_flight_follows_lease_and_settle(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    assert_eq!(metrics(b, "q").await.in_flight, 0);
    let ab = lease_n(b, "q", 2).await;
    assert_eq!(metrics(b, "q").await.in_flight, 2);
    settle_one(b, "q", &ab[0], Outcome::Ack).await;
    assert_eq!(metrics(b, "q").await.in_flight, 1);
    settle_one(b, "q", &ab[1], retry(Some(0))).await;
    assert_eq!(metrics(b, "q").await.in_flight, 0);
    let cb = lease_all(b, "q").await;
    assert_eq!(bodies(&cb), ["c", "b"]);
    assert_eq!(metrics(b, "q").await.in_flight, 2);
    let r = settle(
        b,
        "q",
        vec![(cb[0].lease, Outcome::Ack), (cb[1].lease, retry(Some(10)))],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.acked = 1;
            r.retried = 1;
        })
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.in_flight, m.delayed, m.backlog.count, m.acked, m.retried),
        (0, 1, 1, 2, 2)
    );
}

// ---------------------------------------------------------------------------------------------
// Pause, purge, peek, replay

/// A paused queue accepts sends and delivers nothing until resumed.
pub async fn pause_and_resume(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "before").await;
    let before = lease_one(b, "q").await;

    ok("pause", b.set_paused("q", true).await);
    assert!(ok("info", b.queue_info("q").await).paused);
    assert!(ok("list", b.list_queues().await)[0].paused);
    send_text(b, "q", "m").await;
    assert_eq!(
        err("lease", b.lease("q", LeaseOptions::new(10, VIS)).await),
        BrokerError::Paused("q".into())
    );
    // Work already handed out can still be settled.
    assert_eq!(
        settle_one(b, "q", &before, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
    ctx.clock.advance_secs(60);
    assert_eq!(
        err("lease", b.lease("q", LeaseOptions::new(10, VIS)).await),
        BrokerError::Paused("q".into())
    );
    assert_eq!(count(b, "q").await, 1);

    ok("resume", b.set_paused("q", false).await);
    assert!(!ok("info", b.queue_info("q").await).paused);
    let m = lease_one(b, "q").await;
    assert_eq!(
        (body_str(&m.message.body), m.message.attempts),
        ("m".into(), 1)
    );
}

/// Purge deletes every message, delayed and in-flight ones included.
pub async fn purge_deletes_everything(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "leased-1").await;
    send_text(b, "q", "leased-2").await;
    send(b, "q", text("delayed").with_delay(60)).await;
    send_text(b, "q", "retried").await;
    let leased = lease_n(b, "q", 2).await;
    assert_eq!(bodies(&leased), ["leased-1", "leased-2"]);
    let later = lease_all(b, "q").await;
    assert_eq!(bodies(&later), ["retried"]);
    settle_one(b, "q", &later[0], retry(Some(30))).await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.in_flight, m.delayed), (4, 2, 2));

    assert_eq!(ok("purge", b.purge("q").await), 4);
    let m = metrics(b, "q").await;
    assert_eq!(m.backlog, Backlog::default());
    assert_eq!((m.in_flight, m.delayed), (0, 0));
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
    assert_eq!(
        settle_one(b, "q", &leased[0], Outcome::Ack).await,
        report(|r| r.stale = vec![leased[0].lease])
    );
    ctx.clock.advance_secs(120);
    assert!(lease_all(b, "q").await.is_empty());
    assert_eq!(sweep(b).await.leases_expired, 0);
    assert_eq!(metrics(b, "q").await.acked, 0);
    assert_eq!(ok("purge", b.purge("q").await), 0);

    send_text(b, "q", "after").await;
    assert_eq!(bodies(&lease_all(b, "q").await), ["after"]);
}

/// Peek shows messages in delivery order without leasing them; in-flight ones are left out.
pub async fn peek_does_not_lease(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send(b, "q", text("late").with_delay(10)).await;
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    let all = ok("peek", b.peek("q", 10).await);
    assert_eq!(peeked(&all), ["a", "b", "c", "late"]);
    assert!(all.iter().all(|m| m.attempts == 0));
    assert_eq!(peeked(&ok("peek", b.peek("q", 2).await)), ["a", "b"]);
    assert_eq!(metrics(b, "q").await.in_flight, 0);

    let a = lease_n(b, "q", 1).await;
    assert_eq!(bodies(&a), ["a"]);
    assert_eq!(a[0].message.attempts, 1);
    assert_eq!(a[0].message.id, all[0].id);
    assert_eq!(a[0].message.timestamp_ms, all[0].timestamp_ms);
    assert_eq!(
        peeked(&ok("peek", b.peek("q", 10).await)),
        ["b", "c", "late"]
    );

    let bc = lease_all(b, "q").await;
    assert_eq!(bodies(&bc), ["b", "c"]);
    assert_eq!(attempts(&bc), [1, 1]);
    settle_one(b, "q", &bc[0], retry(Some(0))).await;
    let now = ok("peek", b.peek("q", 10).await);
    assert_eq!(peeked(&now), ["b", "late"]);
    assert_eq!(now[0].attempts, 1);
}

/// Replay moves DLQ messages back, keeping id and timestamp, attempts starting afresh.
pub async fn replay_moves_messages_back(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(0, Some("dlq"))).await;
    let t0 = ctx.now();
    for body in ["m1", "m2", "m3"] {
        send_text(b, "src", body).await;
        ctx.clock.advance_secs(1);
    }
    for _ in 0..3 {
        let m = lease_n(b, "src", 1).await;
        settle_one(b, "src", &m[0], retry(None)).await;
    }
    assert_eq!(count(b, "dlq").await, 3);
    assert_eq!(count(b, "src").await, 0);
    let dead = ok("peek", b.peek("dlq", 10).await);
    assert_eq!(peeked(&dead), ["m1", "m2", "m3"]);

    assert_eq!(ok("replay", b.replay("dlq", "src", 2).await), 2);
    assert_eq!(count(b, "dlq").await, 1);
    let back = lease_all(b, "src").await;
    assert_eq!(bodies(&back), ["m1", "m2"]);
    assert_eq!(attempts(&back), [1, 1]);
    for (l, d) in back.iter().zip(&dead) {
        assert_eq!(
            (l.message.id, l.message.timestamp_ms),
            (d.id, d.timestamp_ms)
        );
    }
    assert_eq!(back[0].message.timestamp_ms, t0);
    assert_eq!(back[1].message.timestamp_ms, t0 + 1_000);

    // In-flight messages are not replayed.
    let m3 = lease_one(b, "dlq").await;
    assert_eq!(ok("replay", b.replay("dlq", "src", 10).await), 0);
    settle_one(b, "dlq", &m3, retry(Some(0))).await;
    assert_eq!(ok("replay", b.replay("dlq", "src", 10).await), 1);
    assert_eq!(count(b, "dlq").await, 0);
    let m3_back = lease_one(b, "src").await;
    assert_eq!(
        (m3_back.message.id, m3_back.message.attempts),
        (dead[2].id, 1)
    );
    assert_eq!(ok("replay", b.replay("dlq", "src", 10).await), 0);

    let e = err("replay", b.replay("src", "src", 10).await);
    assert!(matches!(e, BrokerError::InvalidRequest(_)), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Retention

/// Messages older than the retention period are deleted by sweep and counted.
pub async fn retention_expires_old_messages(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.message_retention_period = 60)).await;
    let t0 = ctx.now();
    send_text(b, "q", "old").await;
    ctx.clock.advance_secs(30);
    send_text(b, "q", "young").await;
    ctx.clock.advance_secs(29);
    assert_eq!(sweep(b).await.messages_expired, 0);
    ctx.clock.advance_secs(2);
    assert_eq!(sweep(b).await.messages_expired, 1);
    let m = metrics(b, "q").await;
    assert_eq!(m.expired, 1);
    assert_eq!(m.backlog.count, 1);
    assert_eq!(m.backlog.oldest_timestamp_ms, Some(t0 + 30_000));
    assert_eq!(bodies(&lease_all(b, "q").await), ["young"]);
}

/// A message past its retention is never leased, even before a sweep.
pub async fn expired_messages_are_never_leased(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.message_retention_period = 60)).await;
    send_text(b, "q", "m").await;
    send(b, "q", text("delayed").with_delay(30)).await;
    ctx.clock.advance_secs(61);
    assert!(lease_all(b, "q").await.is_empty());
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
    sweep(b).await;
    let m = metrics(b, "q").await;
    assert_eq!(m.backlog, Backlog::default());
    assert_eq!((m.expired, m.delayed), (2, 0));
}

// ---------------------------------------------------------------------------------------------
// Dedup

/// A second send with the same key inside the window is accepted but stored once.
pub async fn dedup_within_window_stores_once(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    assert_eq!(send(b, "q", text("x").with_dedup_key("k")).await.count, 1);
    ctx.clock.advance_secs(299);
    assert_eq!(send(b, "q", text("y").with_dedup_key("k")).await.count, 1);
    assert_eq!(metrics(b, "q").await.sent, 1);
    // In a batch, only the new keys are stored.
    let batch = vec![
        text("z").with_dedup_key("k"),
        text("w").with_dedup_key("k2"),
    ];
    assert_eq!(ok("batch", b.send_batch("q", batch, None).await).count, 2);
    send_text(b, "q", "no key").await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.sent), (3, 3));
    let all = lease_all(b, "q").await;
    assert_eq!(bodies(&all), ["x", "w", "no key"]);

    // The key is remembered for the window even once its message is gone.
    ack_each(b, "q", &all).await;
    send(b, "q", text("again").with_dedup_key("k")).await;
    assert_eq!(count(b, "q").await, 0);
}

/// Once the window has passed (and sweep forgot the key) the same key stores again.
pub async fn dedup_key_forgotten_after_window(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.dedup_window = 60)).await;
    send(b, "q", text("x").with_dedup_key("k")).await;
    ctx.clock.advance_secs(59);
    assert_eq!(sweep(b).await.dedup_keys_expired, 0);
    ctx.clock.advance_secs(2);
    assert_eq!(sweep(b).await.dedup_keys_expired, 1);
    send(b, "q", text("z").with_dedup_key("k")).await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.sent), (2, 2));
    assert_eq!(bodies(&lease_all(b, "q").await), ["x", "z"]);
}

/// Queues do not share dedup keys.
pub async fn dedup_is_per_queue(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "a").await;
    create(b, "b").await;
    send(b, "a", text("x").with_dedup_key("k")).await;
    send(b, "b", text("x").with_dedup_key("k")).await;
    assert_eq!(count(b, "a").await, 1);
    assert_eq!(count(b, "b").await, 1);
}

/// `dedup_window = 0` turns deduplication off.
pub async fn dedup_window_zero_disables_dedup(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.dedup_window = 0)).await;
    send(b, "q", text("x").with_dedup_key("k")).await;
    send(b, "q", text("y").with_dedup_key("k")).await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.sent), (2, 2));
}

// ---------------------------------------------------------------------------------------------
// Metrics and queue management

/// Every metric, checked as a whole after each step.
pub async fn metrics_count_every_transition(ctx: &Ctx) {
    let b = ctx.b();
    create_with(
        b,
        "q",
        settings(|s| {
            s.message_retention_period = 60;
            s.consumer.max_retries = 1;
        }),
    )
    .await;
    let t0 = ctx.now();
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    send(b, "q", text("dd").with_delay(30)).await;
    let backlog = |count, bytes, oldest| Backlog {
        count,
        bytes,
        oldest_timestamp_ms: oldest,
    };
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(4, 5, Some(t0)),
            delayed: 1,
            sent: 4,
            ..Default::default()
        }
    );

    let abc = lease_n(b, "q", 3).await;
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(4, 5, Some(t0)),
            in_flight: 3,
            delayed: 1,
            sent: 4,
            ..Default::default()
        }
    );

    let outcomes = vec![
        (abc[0].lease, Outcome::Ack),
        (abc[1].lease, retry(Some(0))),
        (abc[2].lease, retry(Some(0))),
    ];
    settle(b, "q", outcomes).await;
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(3, 4, Some(t0)),
            delayed: 1,
            sent: 4,
            acked: 1,
            retried: 2,
            ..Default::default()
        }
    );

    let bc = lease_all(b, "q").await;
    assert_eq!(attempts(&bc), [2, 2]);
    let r = settle(
        b,
        "q",
        vec![(bc[0].lease, retry(None)), (bc[1].lease, Outcome::Ack)],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.dropped = 1;
            r.acked = 1;
        })
    );
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(1, 2, Some(t0)),
            delayed: 1,
            sent: 4,
            acked: 2,
            retried: 2,
            dropped: 1,
            ..Default::default()
        }
    );

    ctx.clock.advance_secs(61);
    assert_eq!(sweep(b).await.messages_expired, 1);
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(0, 0, None),
            sent: 4,
            acked: 2,
            retried: 2,
            dropped: 1,
            expired: 1,
            ..Default::default()
        }
    );
}

/// Backlog counts every stored message (in flight and delayed too), their bytes, and the
/// oldest first-send time.
pub async fn backlog_tracks_count_bytes_and_oldest(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let t0 = ctx.now();
    send_text(b, "q", "aa").await;
    ctx.clock.advance_secs(5);
    send(b, "q", text("bbb").with_delay(100)).await;
    let expected = Backlog {
        count: 2,
        bytes: 5,
        oldest_timestamp_ms: Some(t0),
    };
    assert_eq!(metrics(b, "q").await.backlog, expected);
    let aa = lease_one(b, "q").await;
    assert_eq!(metrics(b, "q").await.backlog, expected);
    assert_eq!(
        ok("info", b.queue_info("q").await).metrics.backlog,
        expected
    );
    settle_one(b, "q", &aa, Outcome::Ack).await;
    assert_eq!(
        metrics(b, "q").await.backlog,
        Backlog {
            count: 1,
            bytes: 3,
            oldest_timestamp_ms: Some(t0 + 5_000)
        }
    );
    assert_eq!(
        send_text(b, "q", "c").await,
        Backlog {
            count: 2,
            bytes: 4,
            oldest_timestamp_ms: Some(t0 + 5_000)
        }
    );
}

/// `list_queues` is sorted by name.
pub async fn list_queues_is_sorted_by_name(ctx: &Ctx) {
    let b = ctx.b();
    assert!(ok("list", b.list_queues().await).is_empty());
    for name in ["c", "a-dlq", "b", "a", "a0"] {
        create(b, name).await;
    }
    let names = |list: Vec<QueueInfo>| list.into_iter().map(|q| q.name).collect::<Vec<_>>();
    assert_eq!(
        names(ok("list", b.list_queues().await)),
        ["a", "a-dlq", "a0", "b", "c"]
    );
    ok("delete", b.delete_queue("b").await);
    assert_eq!(
        names(ok("list", b.list_queues().await)),
        ["a", "a-dlq", "a0", "c"]
    );
}

/// `create_queue` and `queue_info` report name, settings, state and metrics.
pub async fn queue_info_reports_settings_state_and_metrics(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    let s = settings(|s| {
        s.delivery_delay = 3;
        s.message_retention_period = 7_200;
        s.dedup_window = 10;
        s.consumer.max_batch_size = 50;
        s.consumer.max_batch_timeout = 1;
        s.consumer.max_retries = 7;
        s.consumer.retry_delay = 9;
        s.consumer.dead_letter_queue = Some("dlq".into());
    });
    let expected = QueueInfo {
        name: "q".into(),
        settings: s.clone(),
        paused: false,
        metrics: QueueMetrics::default(),
    };
    assert_eq!(create_with(b, "q", s).await, expected);
    assert_eq!(ok("info", b.queue_info("q").await), expected);

    send_text(b, "q", "m").await;
    let info = ok("info", b.queue_info("q").await);
    assert_eq!(info.metrics, metrics(b, "q").await);
    assert_eq!((info.metrics.sent, info.metrics.delayed), (1, 1));
    let listed = ok("list", b.list_queues().await);
    assert_eq!(listed.iter().find(|q| q.name == "q"), Some(&info));
}

/// `configure_queue` replaces settings; stored messages and metrics stay.
pub async fn configure_queue_changes_settings_and_keeps_messages(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "kept").await;
    let new = settings(|s| {
        s.delivery_delay = 60;
        s.consumer.max_retries = 0;
    });
    let info = ok("configure", b.configure_queue("q", new.clone()).await);
    assert_eq!(info.settings, new);
    assert_eq!((info.metrics.backlog.count, info.metrics.sent), (1, 1));
    assert_eq!(ok("info", b.queue_info("q").await).settings, new);

    send_text(b, "q", "delayed by the new setting").await;
    assert_eq!(metrics(b, "q").await.delayed, 1);
    let kept = lease_one(b, "q").await;
    assert_eq!(body_str(&kept.message.body), "kept");
    // max_retries = 0 now applies: the first failure drops it.
    assert_eq!(
        settle_one(b, "q", &kept, retry(None)).await,
        report(|r| r.dropped = 1)
    );
}

/// `delete_queue` deletes the queue and all its messages; a new queue of that name is empty.
pub async fn delete_queue_deletes_its_messages(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    send(b, "q", text("c").with_delay(60)).await;
    send(b, "q", text("d").with_dedup_key("k")).await;
    let a = lease_n(b, "q", 1).await;
    assert_eq!(ok("delete", b.delete_queue("q").await), 4);
    assert_eq!(
        err("info", b.queue_info("q").await),
        BrokerError::UnknownQueue("q".into())
    );
    assert!(ok("list", b.list_queues().await).is_empty());

    let info = create(b, "q").await;
    assert_eq!(info.metrics, QueueMetrics::default());
    assert!(lease_all(b, "q").await.is_empty());
    assert_eq!(
        settle_one(b, "q", &a[0], Outcome::Ack).await,
        report(|r| r.stale = vec![a[0].lease])
    );
    ctx.clock.advance_secs(120);
    sweep(b).await;
    assert!(lease_all(b, "q").await.is_empty());
    // The dedup keys went with the old queue.
    send(b, "q", text("d").with_dedup_key("k")).await;
    assert_eq!(count(b, "q").await, 1);
}

/// A queue used as a DLQ cannot be deleted until no queue uses it.
pub async fn delete_queue_refused_while_used_as_dead_letter_queue(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(3, Some("dlq"))).await;
    send_text(b, "dlq", "m").await;
    assert_eq!(
        err("delete", b.delete_queue("dlq").await),
        BrokerError::DeadLetterInUse {
            queue: "dlq".into(),
            used_by: "src".into()
        }
    );
    assert_eq!(count(b, "dlq").await, 1);
    ok(
        "configure",
        b.configure_queue("src", QueueSettings::default()).await,
    );
    assert_eq!(ok("delete", b.delete_queue("dlq").await), 1);

    // Deleting the user first works too.
    create(b, "dlq2").await;
    create_with(b, "src2", with_dlq(3, Some("dlq2"))).await;
    assert_eq!(ok("delete", b.delete_queue("src2").await), 0);
    assert_eq!(ok("delete", b.delete_queue("dlq2").await), 0);
    let left: Vec<_> = ok("list", b.list_queues().await)
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(left, ["src"]);
}

// ---------------------------------------------------------------------------------------------
// Concurrency

/// 50 concurrent sends all succeed; concurrent leases hand each message out exactly once.
pub async fn concurrent_sends_are_each_leased_once(ctx: &Ctx) {
    create(ctx.b(), "q").await;
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let b = Arc::clone(&ctx.broker);
            tokio::spawn(async move { b.send("q", text(&format!("m{i}"))).await })
        })
        .collect();
    for s in sends {
        s.await.expect("send task").expect("send");
    }
    let m = metrics(ctx.b(), "q").await;
    assert_eq!((m.backlog.count, m.sent), (50, 50));

    let leasers: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&ctx.broker);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = ok("lease", b.lease("q", LeaseOptions::new(3, VIS)).await);
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch);
                }
            })
        })
        .collect();
    let mut leased = Vec::new();
    for l in leasers {
        leased.extend(l.await.expect("lease task"));
    }
    let mut names = bodies(&leased);
    names.sort();
    let mut expected: Vec<_> = (0..50).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(names, expected, "each message leased exactly once");
    assert!(leased.iter().all(|l| l.message.attempts == 1));
    assert_eq!(metrics(ctx.b(), "q").await.in_flight, 50);

    let settles: Vec<_> = leased
        .chunks(10)
        .map(|chunk| {
            let b = Arc::clone(&ctx.broker);
            let outcomes: Vec<_> = chunk.iter().map(|l| (l.lease, Outcome::Ack)).collect();
            tokio::spawn(async move { b.settle("q", outcomes).await })
        })
        .collect();
    for s in settles {
        assert_eq!(s.await.expect("settle task").expect("settle").acked, 10);
    }
    let m = metrics(ctx.b(), "q").await;
    assert_eq!((m.backlog.count, m.acked, m.in_flight), (0, 50, 0));
}
