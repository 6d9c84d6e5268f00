//! Cloudflare's Queues REST API (v4) under `/client/v4/accounts/{account_id}/queues`, with
//! Cloudflare's request and response bodies, so Cloudflare's SDKs and existing HTTP pull
//! consumers work against a local host by changing only their base URL.
//!
//! The routes translate; the work is shared with wasmq's own API: request bodies are read by
//! `body.rs`, pulls and acks are `pull::lease` and `pull::settle`, and the broker checks every
//! limit. What differs is only the rendering:
//!
//! - every answer is Cloudflare's envelope, `{"success", "errors", "messages", "result"}`, with
//!   Cloudflare's numeric error codes (10104 queue not found, 10203 invalid content type or
//!   delay, 10204–10206 size and count limits, 10207/10208 bad request bodies, 7003 no route);
//! - `account_id` is accepted as any string; `queue_id` is the queue's name or the stable id
//!   that list and get return ([`queue_id`]);
//! - pulled bodies are encoded as Cloudflare's reference says: `text` as the string, `json` and
//!   `bytes` as base64, the content type in `metadata["CF-Content-Type"]`;
//! - a 409 carries `x-should-retry: false`, so Cloudflare's SDKs do not repeat it.
//!
//! Queues are declared in the manifest, so the routes that create, update or delete queues and
//! consumers are not served (7003).

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::{InputError, JsonBody};
use super::consumers::{Attached, QueueConsumers, Wiring};
use super::pull::{self, AckRequest, PullError, PullRequest, PullState};
use super::wire::{PublishBatch, PublishMessage};
use crate::engine::{Backlog, Broker, BrokerError, ContentType, Message, QueueInfo};
use crate::runtime::digest;

/// Where the routes live.
const BASE: &str = "/client/v4/accounts/{account_id}/queues";

/// The stable Cloudflare-style id of a queue: 32 lowercase hex characters derived from its
/// name, the same on every host and across restarts.
pub(super) fn queue_id(name: &str) -> String {
    let mut id = digest(format!("wasmq queue {name}").as_bytes());
    id.truncate(32);
    id
}

/// The routes, with their own fallbacks so an unknown path or method under `/client/v4` gets
/// Cloudflare's envelope.
pub(super) fn routes(broker: Arc<dyn Broker>, consumers: QueueConsumers) -> Router {
    let state = PullState { broker, consumers };
    let at = |tail: &str| format!("{BASE}{tail}");
    Router::new()
        .route(BASE, refuse_others(get(list)))
        .route(&at("/{queue_id}"), refuse_others(get(info)))
        .route(&at("/{queue_id}/messages"), refuse_others(post(push)))
        .route(
            &at("/{queue_id}/messages/batch"),
            refuse_others(post(bulk_push)),
        )
        .route(&at("/{queue_id}/messages/pull"), refuse_others(post(pull)))
        .route(&at("/{queue_id}/messages/ack"), refuse_others(post(ack)))
        .route(&at("/{queue_id}/messages/peek"), refuse_others(post(peek)))
        .route(
            &at("/{queue_id}/purge"),
            refuse_others(post(purge).get(purge_status)),
        )
        .route("/client/v4", any(no_route))
        .route("/client/v4/{*rest}", any(no_route))
        .with_state(state)
}

fn refuse_others(route: MethodRouter<PullState>) -> MethodRouter<PullState> {
    route.fallback(no_route)
}

async fn no_route() -> Answer {
    Answer::error(StatusCode::NOT_FOUND, 7003, "No route for the URI")
}

/// An answer in Cloudflare's envelope.
pub(super) struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn ok(result: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body: json!({ "success": true, "errors": [], "messages": [], "result": result }),
        }
    }

    fn list(result: Vec<Value>) -> Self {
        let count = result.len();
        let mut answer = Self::ok(Value::Array(result));
        answer.body["result_info"] = json!({
            "page": 1, "per_page": count, "count": count, "total_count": count, "total_pages": 1,
        });
        answer
    }

    pub(super) fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status,
            body: json!({
                "success": false,
                "errors": [{ "code": code, "message": message }],
                "messages": [],
                "result": null,
            }),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::CONFLICT {
            // Cloudflare's SDKs retry a 409 unless told not to; nothing here changes by waiting.
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// 401 in Cloudflare's envelope (its code for an authentication error).
pub(super) fn unauthorized() -> Answer {
    Answer::error(
        StatusCode::UNAUTHORIZED,
        10000,
        "Authentication error: send `Authorization: Bearer <token>` with the host's API token",
    )
}

/// 413 in Cloudflare's envelope.
pub(super) fn too_large() -> Answer {
    Answer::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        10205,
        InputError::TooLarge.message(),
    )
}

fn input_error(err: InputError) -> Answer {
    let code = match &err {
        InputError::Malformed(_) => 10208,
        InputError::Delay(_) | InputError::ContentType(_) => 10203,
        InputError::Body(_) | InputError::Schema(_) => 10207,
        InputError::TooLarge => return too_large(),
        InputError::TimedOut => {
            return Answer::error(StatusCode::REQUEST_TIMEOUT, 10201, err.message());
        }
    };
    Answer::error(StatusCode::BAD_REQUEST, code, err.message())
}

fn broker_error(err: BrokerError) -> Answer {
    let (status, code) = match &err {
        BrokerError::UnknownQueue(_) => (StatusCode::NOT_FOUND, 10104),
        BrokerError::MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 10204),
        BrokerError::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, 10205),
        BrokerError::TooManyMessages { .. } | BrokerError::EmptyBatch => {
            (StatusCode::BAD_REQUEST, 10206)
        }
        BrokerError::InvalidDelay { .. } => (StatusCode::BAD_REQUEST, 10203),
        BrokerError::Paused(_) => (StatusCode::CONFLICT, 10252),
        BrokerError::Unavailable(_) | BrokerError::OutcomeUnknown(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, 15000)
        }
        _ => (StatusCode::BAD_REQUEST, 10207),
    };
    Answer::error(status, code, err.to_string())
}

fn pull_error(err: PullError) -> Answer {
    match err {
        PullError::NoPullConsumer(why) => Answer::error(StatusCode::CONFLICT, 10252, why),
        PullError::Broker(err) => broker_error(err),
    }
}

/// The path's `{account_id}` (any string) and `{queue_id}`.
#[derive(Deserialize)]
struct QueuePath {
    #[serde(rename = "account_id")]
    _account_id: String,
    queue_id: String,
}

/// The queue `queue_id` names: by name, else by its [`queue_id`].
async fn resolve(broker: &dyn Broker, queue_id: &str) -> Result<QueueInfo, Answer> {
    match broker.queue_info(queue_id).await {
        Ok(info) => return Ok(info),
        Err(BrokerError::UnknownQueue(_)) => {}
        Err(err) => return Err(broker_error(err)),
    }
    let queues = broker.list_queues().await.map_err(broker_error)?;
    queues
        .into_iter()
        .find(|q| self::queue_id(&q.name) == queue_id)
        .ok_or_else(|| {
            Answer::error(
                StatusCode::NOT_FOUND,
                10104,
                format!("Queue does not exist: `{queue_id}` is neither a queue's name nor its id"),
            )
        })
}

fn rfc3339(at: Option<SystemTime>) -> String {
    humantime::format_rfc3339_seconds(at.unwrap_or(SystemTime::UNIX_EPOCH)).to_string()
}

/// Cloudflare's queue object. `created_on` / `modified_on` are when this host applied the
/// manifest: wasmq does not record when a queue was first created.
fn queue_object(info: &QueueInfo, wiring: &Wiring) -> Value {
    let name = &info.name;
    let id = queue_id(name);
    let at = rfc3339(wiring.applied_at);
    let producers: Vec<Value> = wiring
        .producers
        .get(name)
        .into_iter()
        .flatten()
        .map(|script| json!({ "type": "worker", "script": script }))
        .collect();
    let consumer = &info.settings.consumer;
    let dead_letter_queue = consumer.dead_letter_queue.clone().unwrap_or_default();
    let consumers: Vec<Value> = wiring
        .consumers
        .get(name)
        .map(|attached| {
            // Both SDK generations' field names: `queue_name`/`script_name` and
            // `queue_id`/`script`.
            let mut object = json!({
                "consumer_id": queue_id(&format!("{name} consumer")),
                "created_on": at,
                "queue_id": id,
                "queue_name": name,
                "dead_letter_queue": dead_letter_queue,
            });
            match attached {
                Attached::Component {
                    name: script,
                    max_concurrency,
                } => {
                    object["type"] = json!("worker");
                    object["script"] = json!(script);
                    object["script_name"] = json!(script);
                    object["settings"] = json!({
                        "batch_size": consumer.max_batch_size,
                        "max_concurrency": max_concurrency,
                        "max_retries": consumer.max_retries,
                        "max_wait_time_ms": u64::from(consumer.max_batch_timeout) * 1000,
                        "retry_delay": consumer.retry_delay,
                    });
                }
                Attached::Pull(config) => {
                    object["type"] = json!("http_pull");
                    object["settings"] = json!({
                        "batch_size": pull::DEFAULT_BATCH_SIZE,
                        "max_retries": consumer.max_retries,
                        "retry_delay": consumer.retry_delay,
                        "visibility_timeout_ms": config.visibility_timeout_ms,
                    });
                }
            }
            object
        })
        .into_iter()
        .collect();
    json!({
        "queue_id": id,
        "queue_name": name,
        "created_on": at,
        "modified_on": at,
        "producers_total_count": producers.len(),
        "producers": producers,
        "consumers_total_count": consumers.len(),
        "consumers": consumers,
        "settings": {
            "delivery_delay": info.settings.delivery_delay,
            "delivery_paused": info.paused,
            "message_retention_period": info.settings.message_retention_period,
        },
    })
}

fn metrics(backlog: Backlog) -> Value {
    json!({
        "backlog_count": backlog.count,
        "backlog_bytes": backlog.bytes,
        "oldest_message_timestamp_ms": backlog.oldest_timestamp_ms.unwrap_or(0),
    })
}

/// A message as Cloudflare's pull and peek show it: `text` bodies as the string, `json` and
/// `bytes` as base64 of the stored bytes.
fn message_object(message: Message) -> Value {
    let content_type = message.content_type.as_str();
    let body = match message.content_type {
        ContentType::Text => String::from_utf8_lossy(&message.body).into_owned(),
        ContentType::Json | ContentType::Bytes => {
            base64::engine::general_purpose::STANDARD.encode(&message.body)
        }
    };
    json!({
        "id": message.id.to_string(),
        "body": body,
        "attempts": message.attempts,
        "timestamp_ms": message.timestamp_ms,
        "metadata": { "CF-Content-Type": content_type },
    })
}

/// A handler's answer: `Err` is a refusal, also in Cloudflare's envelope.
type Handled = Result<Answer, Answer>;

/// The queue a request names and its parsed body, or the refusal of either (an unknown queue
/// first, as Cloudflare checks the path before the body).
async fn target<T>(
    state: &PullState,
    path: &QueuePath,
    body: Result<JsonBody<T>, InputError>,
) -> Result<(QueueInfo, T), Answer> {
    let info = resolve(&*state.broker, &path.queue_id).await?;
    let JsonBody(request) = body.map_err(input_error)?;
    Ok((info, request))
}

fn pushed(backlog: Backlog) -> Answer {
    Answer::ok(json!({ "metadata": { "metrics": metrics(backlog) } }))
}

async fn list(State(state): State<PullState>) -> Handled {
    let wiring = state.consumers.wiring();
    let queues = state.broker.list_queues().await.map_err(broker_error)?;
    Ok(Answer::list(
        queues.iter().map(|q| queue_object(q, &wiring)).collect(),
    ))
}

async fn info(State(state): State<PullState>, Path(path): Path<QueuePath>) -> Handled {
    let info = resolve(&*state.broker, &path.queue_id).await?;
    Ok(Answer::ok(queue_object(&info, &state.consumers.wiring())))
}

/// A push: wasmq's message shape (without `dedup_key`, which Cloudflare does not have).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushMessage {
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    content_type: Option<ContentType>,
    #[serde(default)]
    delay_seconds: Option<u32>,
}

impl From<PushMessage> for PublishMessage {
    fn from(m: PushMessage) -> Self {
        PublishMessage {
            body: m.body,
            // Cloudflare's default content type, as in a Worker's `send`.
            content_type: m.content_type.unwrap_or(ContentType::Json),
            delay_seconds: m.delay_seconds,
            dedup_key: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkPush {
    #[serde(default)]
    messages: Vec<PushMessage>,
    #[serde(default)]
    delay_seconds: Option<u32>,
}

async fn push(
    State(state): State<PullState>,
    Path(path): Path<QueuePath>,
    body: Result<JsonBody<PushMessage>, InputError>,
) -> Handled {
    let (info, message) = target(&state, &path, body).await?;
    let request = PublishMessage::from(message)
        .into_request()
        .map_err(input_error)?;
    let backlog = state
        .broker
        .send(&info.name, request)
        .await
        .map_err(broker_error)?;
    Ok(pushed(backlog))
}

async fn bulk_push(
    State(state): State<PullState>,
    Path(path): Path<QueuePath>,
    body: Result<JsonBody<BulkPush>, InputError>,
) -> Handled {
    let (info, bulk) = target(&state, &path, body).await?;
    let (requests, delay) = PublishBatch {
        messages: bulk
            .messages
            .into_iter()
            .map(PublishMessage::from)
            .collect(),
        delay_seconds: bulk.delay_seconds,
    }
    .into_requests()
    .map_err(input_error)?;
    let backlog = state
        .broker
        .send_batch(&info.name, requests, delay)
        .await
        .map_err(broker_error)?;
    Ok(pushed(backlog))
}

async fn pull(
    State(state): State<PullState>,
    Path(path): Path<QueuePath>,
    body: Result<JsonBody<PullRequest>, InputError>,
) -> Handled {
    let (info, request) = target(&state, &path, body).await?;
    let pulled = pull::lease(&state, &info.name, request)
        .await
        .map_err(pull_error)?;
    let messages: Vec<Value> = pulled
        .messages
        .into_iter()
        .map(|leased| {
            let mut object = message_object(leased.message);
            object["lease_id"] = json!(leased.lease.to_string());
            object
        })
        .collect();
    Ok(Answer::ok(json!({
        "message_backlog_count": pulled.backlog.count,
        "messages": messages,
        "metadata": { "metrics": metrics(pulled.backlog) },
    })))
}

async fn ack(
    State(state): State<PullState>,
    Path(path): Path<QueuePath>,
    body: Result<JsonBody<AckRequest>, InputError>,
) -> Handled {
    let (info, request) = target(&state, &path, body).await?;
    let acked = pull::settle(&state, &info.name, request)
        .await
        .map_err(pull_error)?;
    let report = acked.report;
    let warnings: serde_json::Map<String, Value> = acked
        .warnings
        .into_iter()
        .map(|(lease, why)| (lease, Value::String(why)))
        .collect();
    Ok(Answer::ok(json!({
        "ackCount": report.acked,
        "retryCount": report.retries(),
        "warnings": warnings,
    })))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeekRequest {
    #[serde(default)]
    batch_size: Option<u32>,
}

async fn peek(
    State(state): State<PullState>,
    Path(path): Path<QueuePath>,
    body: Result<JsonBody<PeekRequest>, InputError>,
) -> Handled {
    let (info, request) = target(&state, &path, body).await?;
    let limit = request.batch_size.unwrap_or(pull::DEFAULT_BATCH_SIZE);
    super::operator::check_peek_limit("batch_size", limit)
        .map_err(|why| Answer::error(StatusCode::BAD_REQUEST, 10207, why))?;
    let messages = state
        .broker
        .peek(&info.name, limit)
        .await
        .map_err(broker_error)?;
    let messages: Vec<Value> = messages
        .into_iter()
        .map(|message| {
            let reference = message.id.to_string();
            let mut object = message_object(message);
            object["ref"] = json!(reference);
            object
        })
        .collect();
    Ok(Answer::ok(json!({ "messages": messages })))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    delete_messages_permanently: bool,
}

async fn purge(
    State(state): State<PullState>,
    Path(path): Path<QueuePath>,
    body: Result<JsonBody<PurgeRequest>, InputError>,
) -> Handled {
    let (info, request) = target(&state, &path, body).await?;
    if !request.delete_messages_permanently {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            10207,
            "a purge deletes every message for good: confirm with \
             `\"delete_messages_permanently\": true`",
        ));
    }
    let count = state.broker.purge(&info.name).await.map_err(broker_error)?;
    tracing::info!(queue = %info.name, messages = count, "purged through the Cloudflare API");
    let info = state
        .broker
        .queue_info(&info.name)
        .await
        .map_err(broker_error)?;
    Ok(Answer::ok(queue_object(&info, &state.consumers.wiring())))
}

/// A purge here finishes before its request is answered, so it is always complete.
async fn purge_status(State(state): State<PullState>, Path(path): Path<QueuePath>) -> Handled {
    resolve(&*state.broker, &path.queue_id).await?;
    Ok(Answer::ok(json!({ "completed": "true" })))
}

#[cfg(test)]
mod tests {
    use super::queue_id;

    /// Clients keep queue ids: they must not change between versions of the host.
    #[test]
    fn queue_ids_are_stable() {
        assert_eq!(queue_id("jobs"), "2ab0b5f339da807b1093eccf18d30c71");
        assert_ne!(queue_id("jobs"), queue_id("jobs-dlq"));
    }
}
