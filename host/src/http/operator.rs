//! Operator routes: pause / resume delivery, purge, peek, DLQ replay, and `GET /metrics` in the
//! Prometheus text format.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::{Answer, Api, broker_error, fail, input_error, ok, respond};
use super::body::{InputError, JsonBody};
use super::wire::{PeekedMessage, ReplayRequest};
use crate::dispatch::ConsumerStats;
use crate::engine::{Broker, Clock, QueueInfo, SystemClock};
use crate::metrics::{ComponentStats, HttpStats, family};

/// Most messages one peek returns.
pub const MAX_PEEK: u32 = 100;
/// Most messages one replay call moves (the CLI repeats calls for more).
pub const MAX_REPLAY: u64 = 10_000;

/// The operator routes (state: the broker).
pub(super) fn routes() -> Router<Arc<dyn Broker>> {
    Router::new()
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/queues/{queue}/purge", post(purge))
        .route("/queues/{queue}/messages", get(peek))
        .route("/queues/{queue}/replay", post(replay))
}

/// `GET /metrics`: the queues' gauges and counters, and the consumers' batch statistics.
pub(super) fn metrics_route(
    broker: Arc<dyn Broker>,
    consumers: ConsumerStats,
    http: HttpStats,
    components: ComponentStats,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Stats {
            broker,
            consumers,
            http,
            components,
        }))
}

/// What `GET /metrics` reports.
struct Stats {
    broker: Arc<dyn Broker>,
    consumers: ConsumerStats,
    http: HttpStats,
    components: ComponentStats,
}

async fn set_paused(broker: &dyn Broker, queue: &str, paused: bool) -> Answer {
    match broker.set_paused(queue, paused).await {
        Ok(()) => {
            let action = if paused { "paused" } else { "resumed" };
            tracing::info!(queue, "queue {action}");
            respond::<QueueInfo>(broker.queue_info(queue).await)
        }
        Err(err) => broker_error(err),
    }
}

async fn pause(State(broker): Api, Path(queue): Path<String>) -> Answer {
    set_paused(&*broker, &queue, true).await
}

async fn resume(State(broker): Api, Path(queue): Path<String>) -> Answer {
    set_paused(&*broker, &queue, false).await
}

async fn purge(State(broker): Api, Path(queue): Path<String>) -> Answer {
    match broker.purge(&queue).await {
        Ok(purged) => {
            tracing::info!(%queue, messages = purged, "queue purged");
            ok(serde_json::json!({ "purged": purged }))
        }
        Err(err) => broker_error(err),
    }
}

/// Refuses a peek of more than [`MAX_PEEK`] messages (or none); `name` is the parameter's.
pub(super) fn check_peek_limit(name: &str, limit: u32) -> Result<(), String> {
    if (1..=MAX_PEEK).contains(&limit) {
        Ok(())
    } else {
        Err(format!(
            "{name} is {limit}; it must be between 1 and {MAX_PEEK}"
        ))
    }
}

/// `?limit=N` of a peek.
#[derive(Debug, Deserialize)]
struct PeekQuery {
    #[serde(default = "default_peek")]
    limit: u32,
}

fn default_peek() -> u32 {
    10
}

async fn peek(
    State(broker): Api,
    Path(queue): Path<String>,
    query: Result<Query<PeekQuery>, QueryRejection>,
) -> Answer {
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid_limit",
                rejection.body_text(),
            );
        }
    };
    if let Err(why) = check_peek_limit("limit", query.limit) {
        return fail(StatusCode::BAD_REQUEST, "invalid_limit", why);
    }
    match broker.peek(&queue, query.limit).await {
        Ok(messages) => ok(messages
            .into_iter()
            .map(PeekedMessage::from)
            .collect::<Vec<_>>()),
        Err(err) => broker_error(err),
    }
}

async fn replay(
    State(broker): Api,
    Path(queue): Path<String>,
    body: Result<JsonBody<ReplayRequest>, InputError>,
) -> Answer {
    let request = match body {
        Ok(JsonBody(request)) => request,
        Err(err) => return input_error(err),
    };
    let limit = request.limit.unwrap_or(MAX_REPLAY);
    if !(1..=MAX_REPLAY).contains(&limit) {
        return fail(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            format!("limit is {limit}; it must be between 1 and {MAX_REPLAY}"),
        );
    }
    match broker.replay(&queue, &request.to, limit).await {
        Ok(moved) => {
            tracing::info!(from = %queue, to = %request.to, messages = moved, "messages replayed");
            ok(serde_json::json!({ "moved": moved }))
        }
        Err(err) => broker_error(err),
    }
}

/// Every queue's gauges and counters and every consumer's batch statistics in the Prometheus
/// text exposition format.
async fn metrics(State(stats): State<Arc<Stats>>) -> Response {
    match stats.broker.list_queues().await {
        Ok(queues) => {
            let mut text = prometheus_text(&queues);
            stats.consumers.write_prometheus(&mut text);
            stats.http.write_prometheus(&mut text);
            stats.components.write_prometheus(&mut text);
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
        Err(err) => broker_error(err).into_response(),
    }
}

/// Renders the metrics of `queues`. Queue names need no escaping: they are `[a-z0-9_-]`.
pub fn prometheus_text(queues: &[QueueInfo]) -> String {
    type Read = fn(&QueueInfo) -> u64;
    let families: [(&str, &str, &str, Read); 11] = [
        (
            "wasmq_queue_backlog_messages",
            "gauge",
            "Messages stored (visible, delayed and in flight).",
            |q| q.metrics.backlog.count,
        ),
        (
            "wasmq_queue_backlog_bytes",
            "gauge",
            "Body bytes stored.",
            |q| q.metrics.backlog.bytes,
        ),
        (
            "wasmq_queue_in_flight_messages",
            "gauge",
            "Messages leased and not yet settled.",
            |q| q.metrics.in_flight,
        ),
        (
            "wasmq_queue_delayed_messages",
            "gauge",
            "Messages waiting for a delay.",
            |q| q.metrics.delayed,
        ),
        (
            "wasmq_messages_sent_total",
            "counter",
            "Messages accepted by sends.",
            |q| q.metrics.sent,
        ),
        (
            "wasmq_messages_acked_total",
            "counter",
            "Messages acked.",
            |q| q.metrics.acked,
        ),
        (
            "wasmq_messages_retried_total",
            "counter",
            "Failed attempts that led to a redelivery.",
            |q| q.metrics.retried,
        ),
        (
            "wasmq_messages_dead_lettered_total",
            "counter",
            "Messages moved to the dead-letter queue.",
            |q| q.metrics.dead_lettered,
        ),
        (
            "wasmq_messages_dropped_total",
            "counter",
            "Messages dropped after their retries, with no dead-letter queue.",
            |q| q.metrics.dropped,
        ),
        (
            "wasmq_messages_expired_total",
            "counter",
            "Messages deleted when their retention ran out.",
            |q| q.metrics.expired,
        ),
        (
            "wasmq_queue_paused",
            "gauge",
            "1 while delivery is paused.",
            |q| u64::from(q.paused),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, read) in families {
        family(&mut out, name, kind, help);
        for queue in queues {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", queue.name, read(queue));
        }
    }
    // What SQS users alarm on: how long the oldest stored message has waited (0 when empty).
    let name = "wasmq_queue_oldest_message_age_seconds";
    family(
        &mut out,
        name,
        "gauge",
        "Seconds since the oldest stored message was first sent (0: none).",
    );
    let now_ms = SystemClock.now_ms();
    for queue in queues {
        let age_ms = queue
            .metrics
            .backlog
            .oldest_timestamp_ms
            .map_or(0, |oldest| now_ms.saturating_sub(oldest));
        let _ = writeln!(
            out,
            "{name}{{queue=\"{}\"}} {:.3}",
            queue.name,
            age_ms as f64 / 1000.0
        );
    }
    out
}
