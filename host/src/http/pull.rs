//! Pull consumers over HTTP: `POST /queues/{queue}/messages/pull` leases messages, each with a
//! `lease_id`; `POST /queues/{queue}/messages/ack` acks and retries them by lease id. Only
//! queues whose manifest entry has a `pull_consumer` serve them. [`lease`] and [`settle`] do
//! the work for wasmq's routes here and for Cloudflare's (`cloudflare.rs`), which only render
//! the results differently.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use super::api::{Answer, broker_error, fail, input_error, ok};
use super::body::{InputError, JsonBody};
use super::consumers::QueueConsumers;
use super::wire::PeekedMessage;
use crate::engine::{
    Backlog, Broker, BrokerError, LeaseId, LeaseOptions, LeasedMessage, Outcome, SettleReport,
};

/// Default `batch_size` of a pull.
pub(super) const DEFAULT_BATCH_SIZE: u32 = 5;

/// The broker and what consumes each queue.
#[derive(Clone)]
pub(super) struct PullState {
    pub broker: Arc<dyn Broker>,
    pub consumers: QueueConsumers,
}

/// The pull routes.
pub(super) fn routes(broker: Arc<dyn Broker>, consumers: QueueConsumers) -> Router {
    Router::new()
        .route("/queues/{queue}/messages/pull", post(pull))
        .route("/queues/{queue}/messages/ack", post(ack))
        .with_state(PullState { broker, consumers })
}

/// `POST /queues/{queue}/messages/pull`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Most messages to lease (1..=100, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// How long they stay leased (default: the queue's `visibility_timeout_ms`).
    /// `visibility_timeout`, the name in Cloudflare's older docs, is accepted too.
    #[serde(
        default,
        alias = "visibility_timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub visibility_timeout_ms: Option<u64>,
}

/// A pulled message: what peek shows, plus the lease to ack or retry it with.
#[derive(Debug, Serialize, Deserialize)]
pub struct PulledMessage {
    /// The message.
    #[serde(flatten)]
    pub message: PeekedMessage,
    /// Ack or retry with this.
    pub lease_id: String,
}

/// `POST /queues/{queue}/messages/ack`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Leases to ack.
    #[serde(default)]
    pub acks: Vec<AckEntry>,
    /// Leases to retry.
    #[serde(default)]
    pub retries: Vec<RetryEntry>,
}

/// One ack.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckEntry {
    /// The lease.
    pub lease_id: String,
}

/// One retry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryEntry {
    /// The lease.
    pub lease_id: String,
    /// Seconds before redelivery (default: the queue's `retry_delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
}

/// Why a pull or an ack was refused.
pub(super) enum PullError {
    /// The queue has no pull consumer (it exists).
    NoPullConsumer(String),
    /// The broker refused (unknown queue, paused, bad lease options…).
    Broker(BrokerError),
}

/// What a pull handed out.
pub(super) struct Pulled {
    /// The leased messages.
    pub messages: Vec<LeasedMessage>,
    /// The queue's backlog after the lease.
    pub backlog: Backlog,
}

/// What an ack did, and the leases it could not take, with why.
pub(super) struct Acked {
    /// The broker's report.
    pub report: SettleReport,
    /// Lease id (as sent) → why it was not applied.
    pub warnings: Vec<(String, String)>,
}

/// Refuses queues without a pull consumer.
async fn pull_config(
    state: &PullState,
    queue: &str,
) -> Result<crate::manifest::PullConsumerConfig, PullError> {
    if let Some(config) = state.consumers.pull(queue) {
        return Ok(config);
    }
    match state.broker.queue_info(queue).await {
        Err(err) => Err(PullError::Broker(err)),
        Ok(_) => Err(PullError::NoPullConsumer(format!(
            "queue `{queue}` has no pull_consumer in the manifest"
        ))),
    }
}

/// Leases messages of `queue` for an HTTP pull client.
pub(super) async fn lease(
    state: &PullState,
    queue: &str,
    request: PullRequest,
) -> Result<Pulled, PullError> {
    let config = pull_config(state, queue).await?;
    let options = LeaseOptions::new(
        request.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        request
            .visibility_timeout_ms
            .unwrap_or(config.visibility_timeout_ms),
    );
    let messages = state
        .broker
        .lease(queue, options)
        .await
        .map_err(PullError::Broker)?;
    let backlog = state
        .broker
        .metrics(queue)
        .await
        .map_err(PullError::Broker)?
        .backlog;
    Ok(Pulled { messages, backlog })
}

/// Applies an HTTP pull client's acks and retries. A lease id that does not parse, or whose
/// message has left the queue, is a warning, not an error: the others still apply.
pub(super) async fn settle(
    state: &PullState,
    queue: &str,
    request: AckRequest,
) -> Result<Acked, PullError> {
    pull_config(state, queue).await?;
    let mut warnings = Vec::new();
    let mut outcomes = Vec::new();
    let entries = request
        .acks
        .into_iter()
        .map(|a| (a.lease_id, Outcome::Ack))
        .chain(request.retries.into_iter().map(|r| {
            let outcome = Outcome::Retry {
                delay_seconds: r.delay_seconds,
            };
            (r.lease_id, outcome)
        }));
    for (lease_id, outcome) in entries {
        match lease_id.parse::<LeaseId>() {
            Ok(lease) => outcomes.push((lease, outcome)),
            Err(_) => warnings.push((lease_id, "not a lease id".to_owned())),
        }
    }
    let report = state
        .broker
        .settle(queue, outcomes)
        .await
        .map_err(PullError::Broker)?;
    tracing::debug!(
        queue,
        acked = report.acked,
        retried = report.retried,
        "pull client settled"
    );
    warnings.extend(report.stale.iter().map(|lease| {
        let why = "the message is no longer in the queue, or a newer lease holds it";
        (lease.to_string(), why.to_owned())
    }));
    Ok(Acked { report, warnings })
}

fn pull_error(err: PullError) -> Answer {
    match err {
        PullError::NoPullConsumer(why) => fail(StatusCode::CONFLICT, "no_pull_consumer", why),
        PullError::Broker(err) => broker_error(err),
    }
}

async fn pull(
    State(state): State<PullState>,
    Path(queue): Path<String>,
    body: Result<JsonBody<PullRequest>, InputError>,
) -> Result<Answer, Answer> {
    let JsonBody(request) = body.map_err(input_error)?;
    let pulled = lease(&state, &queue, request).await.map_err(pull_error)?;
    let messages: Vec<PulledMessage> = pulled
        .messages
        .into_iter()
        .map(|m| PulledMessage {
            lease_id: m.lease.to_string(),
            message: m.message.into(),
        })
        .collect();
    Ok(ok(serde_json::json!({
        "messages": messages,
        "message_backlog_count": pulled.backlog.count,
    })))
}

async fn ack(
    State(state): State<PullState>,
    Path(queue): Path<String>,
    body: Result<JsonBody<AckRequest>, InputError>,
) -> Result<Answer, Answer> {
    let JsonBody(request) = body.map_err(input_error)?;
    let Acked { report, warnings } = settle(&state, &queue, request).await.map_err(pull_error)?;
    Ok(ok(serde_json::json!({
        "ack_count": report.acked,
        "retry_count": report.retries(),
        "dead_lettered": report.dead_lettered,
        "dropped": report.dropped,
        "warnings": warnings
            .into_iter()
            .map(|(lease, why)| format!("lease `{lease}`: {why}"))
            .collect::<Vec<_>>(),
    })))
}
