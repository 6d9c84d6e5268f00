//! Routes and handlers of the HTTP API.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::producer::ProducerRoutes;
use super::pull::PullQueues;
use super::wire::{ApiError, Envelope, PublishBatch, PublishMessage};
use crate::dispatch::ConsumerStats;
use crate::engine::{Backlog, Broker, BrokerError, QueueInfo};

/// Largest request body accepted: a full batch (256 000 bytes) with room for JSON escaping
/// and base64. Larger requests are refused before they are read whole.
pub(super) const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// What the HTTP server serves.
pub struct ServeConfig {
    /// The queues.
    pub broker: Arc<dyn Broker>,
    /// The queues consumed over HTTP, with their pull settings.
    pub pull_queues: PullQueues,
    /// With a token, every API route requires `Authorization: Bearer <token>` and answers 401
    /// otherwise; producer routes only when they ask for it.
    pub token: Option<String>,
    /// The producer components, matched after the API's own paths.
    pub producers: ProducerRoutes,
    /// The consumers' batch statistics, for `GET /metrics`.
    pub consumer_stats: ConsumerStats,
    /// What `POST /reload` does (none: the route answers 404).
    pub reloader: Option<Arc<dyn Reloader>>,
}

/// Reloads the manifest and the components of a running host (`POST /reload`).
#[async_trait::async_trait]
pub trait Reloader: Send + Sync + 'static {
    /// Applies the manifest as it is now on disk; returns a report of what changed, or why the
    /// manifest could not be applied at all (nothing changed then).
    async fn reload(&self) -> anyhow::Result<serde_json::Value>;
}

/// The API's routes and the producer routes.
pub fn router(config: ServeConfig) -> Router {
    let token: Option<Arc<str>> = config.token.map(Into::into);
    let api = Router::new()
        .route("/queues", get(list_queues))
        .route("/queues/{queue}", get(queue_info))
        .route("/queues/{queue}/messages", post(publish))
        .route("/queues/{queue}/messages/batch", post(publish_batch))
        .merge(super::operator::routes())
        .with_state(config.broker.clone())
        .merge(super::operator::metrics_route(
            config.broker.clone(),
            config.consumer_stats,
        ))
        .merge(super::pull::routes(config.broker, config.pull_queues));
    let api = match config.reloader {
        Some(reloader) => api.route(
            "/reload",
            post(move || async move {
                match reloader.reload().await {
                    Ok(report) => ok(report),
                    Err(err) => fail(StatusCode::BAD_REQUEST, "reload_failed", format!("{err:#}")),
                }
            }),
        ),
        None => api,
    };
    let api = match token.clone() {
        // Outermost, so an unauthenticated request is refused before anything else looks at it.
        Some(token) => api.layer(middleware::from_fn(move |request, next| {
            require_token(token.clone(), request, next)
        })),
        None => api,
    };
    api.merge(super::producer::router(config.producers, token))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(refuse_declared_oversize))
}

/// Lets the request through only with the right bearer token.
async fn require_token(token: Arc<str>, request: Request, next: Next) -> Response {
    if authorized(&token, request.headers()) {
        next.run(request).await
    } else {
        unauthorized().into_response()
    }
}

/// True if `headers` carry `Authorization: Bearer <token>`.
pub(super) fn authorized(token: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| same_secret(presented.as_bytes(), token.as_bytes()))
}

pub(super) fn unauthorized() -> Answer {
    fail(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this API needs `Authorization: Bearer <token>` with the host's API token",
    )
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Refuses a request whose declared length is over the limit at once, without reading its
/// body (chunked bodies are cut off by `DefaultBodyLimit` as they stream).
async fn refuse_declared_oversize(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > MAX_REQUEST_BYTES as u64 => too_large().into_response(),
        _ => next.run(request).await,
    }
}

fn too_large() -> Answer {
    fail(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("the request body is over {MAX_REQUEST_BYTES} bytes"),
    )
}

pub(super) type Api = State<Arc<dyn Broker>>;

/// An answer with its status.
pub(super) struct Answer(StatusCode, serde_json::Value);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

pub(super) fn ok<T: Serialize>(result: T) -> Answer {
    let envelope = Envelope {
        success: true,
        errors: vec![],
        result: Some(result),
    };
    Answer(
        StatusCode::OK,
        serde_json::to_value(envelope).expect("serializable"),
    )
}

pub(super) fn fail(status: StatusCode, code: &str, message: impl Into<String>) -> Answer {
    let envelope = Envelope::<()> {
        success: false,
        errors: vec![ApiError {
            code: code.to_owned(),
            message: message.into(),
        }],
        result: None,
    };
    Answer(
        status,
        serde_json::to_value(envelope).expect("serializable"),
    )
}

pub(super) fn broker_error(err: BrokerError) -> Answer {
    let (status, code) = match &err {
        BrokerError::UnknownQueue(_) => (StatusCode::NOT_FOUND, "unknown_queue"),
        BrokerError::MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "message_too_large"),
        BrokerError::BatchTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
        BrokerError::TooManyMessages { .. } => (StatusCode::BAD_REQUEST, "too_many_messages"),
        BrokerError::EmptyBatch => (StatusCode::BAD_REQUEST, "empty_batch"),
        BrokerError::InvalidDelay { .. } => (StatusCode::BAD_REQUEST, "invalid_delay"),
        BrokerError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
        BrokerError::InvalidDedupKey(_) => (StatusCode::BAD_REQUEST, "invalid_dedup_key"),
        BrokerError::Paused(_) => (StatusCode::CONFLICT, "queue_paused"),
        BrokerError::InvalidLease(_) => (StatusCode::BAD_REQUEST, "invalid_lease"),
        BrokerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::BAD_REQUEST, "invalid_request"),
    };
    fail(status, code, err.to_string())
}

pub(super) fn json_error(rejection: JsonRejection) -> Answer {
    match rejection {
        JsonRejection::BytesRejection(_) => too_large(),
        JsonRejection::MissingJsonContentType(_) => fail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_json",
            "send the request with `content-type: application/json`",
        ),
        other => fail(StatusCode::BAD_REQUEST, "invalid_json", other.body_text()),
    }
}

pub(super) fn respond<T: Serialize>(result: Result<T, BrokerError>) -> Answer {
    match result {
        Ok(value) => ok(value),
        Err(err) => broker_error(err),
    }
}

async fn list_queues(State(broker): Api) -> Answer {
    respond::<Vec<QueueInfo>>(broker.list_queues().await)
}

async fn queue_info(State(broker): Api, Path(queue): Path<String>) -> Answer {
    respond(broker.queue_info(&queue).await)
}

async fn publish(
    State(broker): Api,
    Path(queue): Path<String>,
    body: Result<Json<PublishMessage>, JsonRejection>,
) -> Answer {
    let message = match body {
        Ok(Json(message)) => message,
        Err(rejection) => return json_error(rejection),
    };
    match message.into_request() {
        Ok(request) => respond::<Backlog>(broker.send(&queue, request).await),
        Err(why) => fail(StatusCode::BAD_REQUEST, "invalid_body", why),
    }
}

async fn publish_batch(
    State(broker): Api,
    Path(queue): Path<String>,
    body: Result<Json<PublishBatch>, JsonRejection>,
) -> Answer {
    let batch = match body {
        Ok(Json(batch)) => batch,
        Err(rejection) => return json_error(rejection),
    };
    let requests: Result<Vec<_>, _> = batch
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            m.into_request()
                .map_err(|why| format!("message {i}: {why}"))
        })
        .collect();
    match requests {
        Ok(requests) => respond::<Backlog>(
            broker
                .send_batch(&queue, requests, batch.delay_seconds)
                .await,
        ),
        Err(why) => fail(StatusCode::BAD_REQUEST, "invalid_body", why),
    }
}
