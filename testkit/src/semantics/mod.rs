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
//!
//! This file holds the [`Ctx`], the macro and the helpers the cases share; the cases live in one
//! file per area (delivery, delays, dead-letter queues, limits, queue management, leasing,
//! operator actions, retention, dedup, metrics, concurrency) and are re-exported here, so that
//! `semantics::NAME` names every case whatever its file.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use wasmq_engine::{
    Backlog, Broker, BrokerError, Clock, LeaseId, LeaseOptions, LeasedMessage, ManualClock,
    Outcome, QueueInfo, QueueMetrics, QueueSettings, SendRequest, SettleReport, SweepReport,
};

mod concurrency;
mod dead_letter;
mod dedup;
mod delays;
mod delivery;
mod lease;
mod limits;
mod metrics;
mod operator;
mod queues;
mod retention;

pub use self::concurrency::*;
pub use self::dead_letter::*;
pub use self::dedup::*;
pub use self::delays::*;
pub use self::delivery::*;
pub use self::lease::*;
pub use self::limits::*;
pub use self::metrics::*;
pub use self::operator::*;
pub use self::queues::*;
pub use self::retention::*;

/// Where the clock of a fresh [`Ctx`] should stand (ms since the Unix epoch).
pub const START_MS: u64 = 1_700_000_000_000;

/// The visibility timeout of leases taken by the helpers (ms).
const VIS: u64 = 30_000;

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
            // delivery.rs
            send_then_lease,
            ack_deletes,
            retry_redelivers_with_next_attempt,
            // delays.rs
            send_delay_precedence,
            retry_explicit_delay,
            retry_without_delay_uses_consumer_retry_delay,
            retry_explicit_zero_overrides_retry_delay,
            // dead_letter.rs
            retries_exhausted_move_to_dead_letter_queue,
            retries_exhausted_without_dead_letter_queue_drop,
            max_retries_zero_dead_letters_on_first_failure,
            dead_letter_queue_without_consumer_keeps_messages_until_retention,
            queue_cannot_be_its_own_dead_letter_queue,
            unknown_dead_letter_queue_is_refused,
            dead_letter_cycle_through_two_queues_is_allowed,
            // limits.rs
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
            // queues.rs
            settings_out_of_range_are_refused,
            settings_at_range_bounds_are_accepted,
            invalid_queue_names_are_refused,
            duplicate_queue_is_refused,
            list_queues_is_sorted_by_name,
            queue_info_reports_settings_state_and_metrics,
            configure_queue_changes_settings_and_keeps_messages,
            delete_queue_deletes_its_messages,
            delete_queue_refused_while_used_as_dead_letter_queue,
            // lease.rs
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
            settle_and_lease_is_settle_then_lease,
            settle_and_lease_refuses_bad_input_whole,
            // operator.rs
            pause_and_resume,
            purge_deletes_everything,
            peek_does_not_lease,
            replay_moves_messages_back,
            // retention.rs
            retention_expires_old_messages,
            expired_messages_are_never_leased,
            // dedup.rs
            dedup_within_window_stores_once,
            dedup_key_forgotten_after_window,
            dedup_is_per_queue,
            dedup_window_zero_disables_dedup,
            // metrics.rs
            metrics_count_every_transition,
            backlog_tracks_count_bytes_and_oldest,
            // concurrency.rs
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

fn attempts(leased: &[LeasedMessage]) -> Vec<u32> {
    leased.iter().map(|l| l.message.attempts).collect()
}

async fn settle(b: &dyn Broker, q: &str, outcomes: Vec<(LeaseId, Outcome)>) -> SettleReport {
    ok(&format!("settle({q})"), b.settle(q, outcomes).await)
}

async fn settle_one(b: &dyn Broker, q: &str, m: &LeasedMessage, o: Outcome) -> SettleReport {
    settle(b, q, vec![(m.lease, o)]).await
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
