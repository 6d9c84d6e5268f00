//! Routes and handlers of the HTTP API.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tracing::Instrument;

use super::body::{InputError, JsonBody};
use super::consumers::{ConsumerView, QueueConsumers};
use super::producer::ProducerRoutes;
use super::wire::{ApiError, Envelope, PublishBatch, PublishMessage, QueueView, ReloadReport};
use crate::dispatch::ConsumerStats;
use crate::engine::{Backlog, Broker, BrokerError, QueueInfo};
use crate::metrics::{ComponentStats, HttpStats};

/// Largest request body accepted: a full batch (256 000 bytes) with room for JSON escaping
/// and base64. Larger requests are refused before they are read whole.
pub(super) const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// What the HTTP server serves.
pub struct ServeConfig {
    /// The queues.
    pub broker: Arc<dyn Broker>,
    /// What consumes each queue (a component or HTTP pull clients).
    pub consumers: QueueConsumers,
    /// With a token, every API route requires `Authorization: Bearer <token>` and answers 401
    /// otherwise; producer routes only when they ask for it.
    pub token: Option<String>,
    /// The producer components, matched after the API's own paths.
    pub producers: ProducerRoutes,
    /// The consumers' batch statistics, for `GET /metrics`.
    pub consumer_stats: ConsumerStats,
    /// How long each component took to load, for `GET /metrics`.
    pub component_stats: ComponentStats,
    /// What `POST /reload` does (none: the route answers 404).
    pub reloader: Option<Arc<dyn Reloader>>,
    /// Log every request on a producer route (method, path, status, duration).
    pub access_log: bool,
}

/// Reloads the manifest and the components of a running host (`POST /reload`).
#[async_trait::async_trait]
pub trait Reloader: Send + Sync + 'static {
    /// Applies the manifest as it is now on disk; returns a report of what changed, or why the
    /// manifest could not be applied at all (nothing changed then).
    async fn reload(&self) -> anyhow::Result<ReloadReport>;
}

/// The API's routes and the producer routes.
pub fn router(config: ServeConfig) -> Router {
    let token: Option<Arc<str>> = config.token.map(Into::into);
    let http_stats = HttpStats::default();
    let api = Router::new()
        .route("/queues", get(list_queues))
        .route("/queues/{queue}", get(queue_info))
        .with_state((config.broker.clone(), config.consumers.clone()))
        .route("/queues/{queue}/messages", post(publish))
        .route("/queues/{queue}/messages/batch", post(publish_batch))
        .merge(super::operator::routes())
        .with_state(config.broker.clone())
        .merge(super::operator::metrics_route(
            config.broker.clone(),
            config.consumer_stats.clone(),
            http_stats.clone(),
            config.component_stats.clone(),
        ))
        .merge(super::dashboard::api_routes(super::dashboard::Sources {
            broker: config.broker.clone(),
            consumers: config.consumers.clone(),
            consumer_stats: config.consumer_stats,
            component_stats: config.component_stats,
        }))
        .merge(super::pull::routes(
            config.broker.clone(),
            config.consumers.clone(),
        ))
        .merge(super::cloudflare::routes(config.broker, config.consumers));
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
    let api = api.method_not_allowed_fallback(|| async {
        fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not take this method",
        )
    });
    let api = match token.clone() {
        // Outermost, so an unauthenticated request is refused before anything else looks at it.
        Some(token) => api.layer(middleware::from_fn(move |request, next| {
            require_token(token.clone(), request, next)
        })),
        None => api,
    };
    // The dashboard's page asks for the token itself: it is served to anyone.
    let api = api.merge(super::dashboard::page_routes());
    let api = api.layer(middleware::from_fn_with_state(
        http_stats.clone(),
        record_request,
    ));
    api.merge(super::producer::router(
        config.producers,
        token,
        config.access_log,
        http_stats,
    ))
    .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
    .layer(middleware::from_fn(refuse_declared_oversize))
}

/// Records an API request by the route pattern that served it (producer routes record their
/// own, by their configured route), and runs it in a span so that what it logs (an operator
/// action, a refused send) names the request.
async fn record_request(State(stats): State<HttpStats>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().to_string();
    let span = tracing::info_span!("api", %method, route = route.as_deref().unwrap_or("unmatched"));
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span).await;
    if let Some(route) = route {
        stats.record(
            &route,
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}

/// True for a request to Cloudflare's API, whose refusals use Cloudflare's envelope.
fn is_cloudflare(request: &Request) -> bool {
    request.uri().path().starts_with("/client/v4")
}

/// Lets the request through only with the right bearer token.
async fn require_token(token: Arc<str>, request: Request, next: Next) -> Response {
    if authorized(&token, request.headers()) {
        next.run(request).await
    } else if is_cloudflare(&request) {
        super::cloudflare::unauthorized().into_response()
    } else {
        unauthorized().into_response()
    }
}

/// True if `headers` carry `Authorization: Bearer <token>` (the scheme in any case, as
/// RFC 9110 says).
pub(super) fn authorized(token: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, presented)| same_secret(presented.as_bytes(), token.as_bytes()))
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
        Some(length) if length > MAX_REQUEST_BYTES as u64 && is_cloudflare(&request) => {
            super::cloudflare::too_large().into_response()
        }
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
        BrokerError::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
        _ => (StatusCode::BAD_REQUEST, "invalid_request"),
    };
    fail(status, code, err.to_string())
}

/// A refused request body in wasmq's envelope.
pub(super) fn input_error(err: InputError) -> Answer {
    let code = match &err {
        InputError::Malformed(_) => "invalid_json",
        InputError::Delay(_) => "invalid_delay",
        InputError::ContentType(_) => "invalid_content_type",
        InputError::Body(_) => "invalid_body",
        InputError::Schema(_) => "invalid_request",
        InputError::TooLarge => return too_large(),
        InputError::TimedOut => {
            return fail(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                err.message(),
            );
        }
    };
    fail(StatusCode::BAD_REQUEST, code, err.message())
}

pub(super) fn respond<T: Serialize>(result: Result<T, BrokerError>) -> Answer {
    match result {
        Ok(value) => ok(value),
        Err(err) => broker_error(err),
    }
}

type Queues = State<(Arc<dyn Broker>, QueueConsumers)>;

/// A queue with its consumer as the manifest attaches it.
fn view(info: QueueInfo, consumers: &QueueConsumers) -> QueueView {
    let consumer = consumers
        .get(&info.name)
        .map(|attached| ConsumerView::new(attached, &info.settings.consumer));
    QueueView { info, consumer }
}

async fn list_queues(State((broker, consumers)): Queues) -> Answer {
    respond(broker.list_queues().await.map(|queues| {
        queues
            .into_iter()
            .map(|info| view(info, &consumers))
            .collect::<Vec<_>>()
    }))
}

async fn queue_info(State((broker, consumers)): Queues, Path(queue): Path<String>) -> Answer {
    respond(
        broker
            .queue_info(&queue)
            .await
            .map(|info| view(info, &consumers)),
    )
}

async fn publish(
    State(broker): Api,
    Path(queue): Path<String>,
    body: Result<JsonBody<PublishMessage>, InputError>,
) -> Answer {
    let request = match body.and_then(|JsonBody(message)| message.into_request()) {
        Ok(request) => request,
        Err(err) => return input_error(err),
    };
    respond::<Backlog>(broker.send(&queue, request).await)
}

async fn publish_batch(
    State(broker): Api,
    Path(queue): Path<String>,
    body: Result<JsonBody<PublishBatch>, InputError>,
) -> Answer {
    let (requests, delay) = match body.and_then(|JsonBody(batch)| batch.into_requests()) {
        Ok(parsed) => parsed,
        Err(err) => return input_error(err),
    };
    respond::<Backlog>(broker.send_batch(&queue, requests, delay).await)
}
