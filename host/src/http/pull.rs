//! Pull consumers over HTTP, with Cloudflare's shapes: `POST /queues/{queue}/messages/pull`
//! leases messages, each with a `lease_id`; `POST /queues/{queue}/messages/ack` acks and
//! retries them by lease id. Only queues whose manifest entry has a `pull_consumer` serve them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::api::{Answer, broker_error, fail, json_error, ok};
use super::wire::PeekedMessage;
use crate::engine::{Broker, BrokerError, LeaseId, LeaseOptions, Outcome};
use crate::manifest::PullConsumerConfig;

/// Default `batch_size` of a pull.
const DEFAULT_BATCH_SIZE: u32 = 5;

/// The queues that have a pull consumer, with their settings. Cheap to clone;
/// [`PullQueues::replace`] applies a reloaded manifest.
#[derive(Clone, Default)]
pub struct PullQueues(Arc<RwLock<BTreeMap<String, PullConsumerConfig>>>);

impl PullQueues {
    /// A table holding `queues`.
    pub fn new(queues: BTreeMap<String, PullConsumerConfig>) -> Self {
        Self(Arc::new(RwLock::new(queues)))
    }

    /// Serves `queues` from now on.
    pub fn replace(&self, queues: BTreeMap<String, PullConsumerConfig>) {
        *self.0.write().expect("pull queues lock") = queues;
    }

    fn get(&self, queue: &str) -> Option<PullConsumerConfig> {
        self.0.read().expect("pull queues lock").get(queue).copied()
    }
}

/// The broker and the queues that have a pull consumer.
#[derive(Clone)]
pub(super) struct PullState {
    broker: Arc<dyn Broker>,
    queues: PullQueues,
}

/// The pull routes.
pub(super) fn routes(broker: Arc<dyn Broker>, queues: PullQueues) -> Router {
    Router::new()
        .route("/queues/{queue}/messages/pull", post(pull))
        .route("/queues/{queue}/messages/ack", post(ack))
        .with_state(PullState { broker, queues })
}

/// `POST /queues/{queue}/messages/pull`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Most messages to lease (1..=100, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// How long they stay leased (default: the queue's `visibility_timeout_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Refuses queues without a pull consumer: 404 if the queue does not exist, 409 otherwise.
async fn pull_config(state: &PullState, queue: &str) -> Result<PullConsumerConfig, Answer> {
    if let Some(config) = state.queues.get(queue) {
        return Ok(config);
    }
    match state.broker.queue_info(queue).await {
        Err(err @ BrokerError::UnknownQueue(_)) => Err(broker_error(err)),
        _ => Err(fail(
            StatusCode::CONFLICT,
            "no_pull_consumer",
            format!("queue `{queue}` has no pull_consumer in the manifest"),
        )),
    }
}

async fn pull(
    State(state): State<PullState>,
    Path(queue): Path<String>,
    body: Result<Json<PullRequest>, JsonRejection>,
) -> Answer {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return json_error(rejection),
    };
    let config = match pull_config(&state, &queue).await {
        Ok(config) => config,
        Err(answer) => return answer,
    };
    let options = LeaseOptions::new(
        request.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        request
            .visibility_timeout_ms
            .unwrap_or(config.visibility_timeout_ms),
    );
    let leased = match state.broker.lease(&queue, options).await {
        Ok(leased) => leased,
        Err(err) => return broker_error(err),
    };
    let backlog = match state.broker.metrics(&queue).await {
        Ok(metrics) => metrics.backlog.count,
        Err(err) => return broker_error(err),
    };
    let messages: Vec<PulledMessage> = leased
        .into_iter()
        .map(|m| PulledMessage {
            lease_id: m.lease.to_string(),
            message: m.message.into(),
        })
        .collect();
    ok(serde_json::json!({ "messages": messages, "message_backlog_count": backlog }))
}

async fn ack(
    State(state): State<PullState>,
    Path(queue): Path<String>,
    body: Result<Json<AckRequest>, JsonRejection>,
) -> Answer {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return json_error(rejection),
    };
    if let Err(answer) = pull_config(&state, &queue).await {
        return answer;
    }
    let mut warnings = Vec::new();
    let mut outcomes = Vec::new();
    let entries = request
        .acks
        .iter()
        .map(|a| (&a.lease_id, Outcome::Ack))
        .chain(request.retries.iter().map(|r| {
            let outcome = Outcome::Retry {
                delay_seconds: r.delay_seconds,
            };
            (&r.lease_id, outcome)
        }));
    for (lease_id, outcome) in entries {
        match lease_id.parse::<LeaseId>() {
            Ok(lease) => outcomes.push((lease, outcome)),
            Err(_) => warnings.push(format!("lease `{lease_id}` is unknown")),
        }
    }
    match state.broker.settle(&queue, outcomes).await {
        Ok(report) => {
            warnings.extend(
                report
                    .stale
                    .iter()
                    .map(|lease| format!("lease `{lease}` is unknown or expired")),
            );
            ok(serde_json::json!({
                "ack_count": report.acked,
                "retry_count": report.retried + report.dead_lettered + report.dropped,
                "dead_lettered": report.dead_lettered,
                "dropped": report.dropped,
                "warnings": warnings,
            }))
        }
        Err(err) => broker_error(err),
    }
}
