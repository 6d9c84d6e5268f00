//! The live web dashboard on the API listener: a page at `/` (hand-written HTML, CSS and
//! JavaScript compiled into the binary) and the JSON it reads under `/dashboard/api/`.
//!
//! The page and its files are public — they hold no data — and ask for the API token when the
//! host has one (kept in the tab's `sessionStorage`, sent as `Authorization: Bearer`); the JSON
//! routes sit behind the token like the rest of the API. Operator actions (pause, resume,
//! purge, replay, peek) go through the API's existing routes: the dashboard only adds what no
//! route gave — one summary of every queue with rates, a queue's rate history and consumer
//! statistics, and the components' loads.

mod assets;
mod sampler;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

use self::sampler::{History, Sampler};
use super::api::{broker_error, ok};
use super::consumers::QueueConsumers;
use crate::dispatch::{ConsumerSnapshot, ConsumerStats};
use crate::engine::Broker;
use crate::metrics::{ComponentRecord, ComponentStats, ReloadRecord};

/// What the dashboard's JSON routes read.
pub(super) struct Sources {
    /// The queues.
    pub(super) broker: Arc<dyn Broker>,
    /// What consumes each queue.
    pub(super) consumers: QueueConsumers,
    /// The consumers' batch statistics.
    pub(super) consumer_stats: ConsumerStats,
    /// The components' loads.
    pub(super) component_stats: ComponentStats,
}

struct Dashboard {
    sources: Sources,
    sampler: Sampler,
}

/// The JSON routes (behind the API token when there is one).
pub(super) fn api_routes(sources: Sources) -> Router {
    let sampler = Sampler::new(sources.broker.clone(), sources.consumers.clone());
    Router::new()
        .route("/dashboard/api/summary", get(summary))
        .route("/dashboard/api/queues/{queue}", get(queue))
        .route("/dashboard/api/components", get(components))
        .with_state(Arc::new(Dashboard { sources, sampler }))
}

/// The page and its files (public: they hold no data).
pub(super) fn page_routes() -> Router {
    Router::new()
        .route("/", get(assets::page))
        .route("/dashboard", get(|| async { Redirect::permanent("/") }))
        .route("/dashboard/app.js", get(assets::script))
        .route("/dashboard/app.css", get(assets::style))
}

type Shared = State<Arc<Dashboard>>;

/// `GET /dashboard/api/summary`: every queue's gauges and rates, and the host-wide rates over
/// the last minutes. The same bytes are served to every poller until the next sample.
async fn summary(State(dashboard): Shared) -> Response {
    match dashboard.sampler.current().await {
        Ok(snapshot) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            snapshot.summary.clone(),
        )
            .into_response(),
        Err(err) => broker_error(err).into_response(),
    }
}

/// `GET /dashboard/api/queues/{queue}`.
#[derive(Serialize)]
struct QueueDetail {
    /// The queue's rates over the last minutes.
    history: History,
    /// The consumer component's statistics (none for a pull queue or no consumer).
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer_stats: Option<ConsumerSnapshot>,
    /// The consumer component's load (digest, when, how long).
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<ComponentRecord>,
    /// The queues whose dead-letter queue this is.
    dead_letter_of: Vec<String>,
}

/// What the queue page needs besides `GET /queues/{queue}`.
async fn queue(State(dashboard): Shared, Path(queue): Path<String>) -> Response {
    let snapshot = match dashboard.sampler.current().await {
        Ok(snapshot) => snapshot,
        Err(err) => return broker_error(err).into_response(),
    };
    if !snapshot.queues.iter().any(|q| q.name == queue) {
        // Created since the sample, or unknown.
        if let Err(err) = dashboard.sources.broker.queue_info(&queue).await {
            return broker_error(err).into_response();
        }
    }
    let dead_letter_of = snapshot
        .queues
        .iter()
        .filter(|q| q.settings.consumer.dead_letter_queue.as_deref() == Some(queue.as_str()))
        .map(|q| q.name.clone())
        .collect();
    let component = dashboard
        .sources
        .consumers
        .get(&queue)
        .and_then(|attached| attached.component().map(str::to_owned));
    let detail = QueueDetail {
        history: dashboard.sampler.history(&queue).await,
        consumer_stats: component
            .as_ref()
            .and_then(|name| dashboard.sources.consumer_stats.snapshot(name, &queue)),
        component: component.and_then(|name| dashboard.sources.component_stats.get(&name)),
        dead_letter_of,
    };
    ok(detail).into_response()
}

/// `GET /dashboard/api/components`.
#[derive(Serialize)]
struct Components {
    components: Vec<ComponentRecord>,
    /// The last reload since the start, if any.
    last_reload: Option<ReloadRecord>,
}

async fn components(State(dashboard): Shared) -> Response {
    let (components, last_reload) = dashboard.sources.component_stats.snapshot();
    ok(Components {
        components,
        last_reload,
    })
    .into_response()
}
