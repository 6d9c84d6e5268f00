//! Producer routes: requests that match no API path go to the producer component whose
//! `route` matches best (an exact path, then the longest prefix), in a fresh instance.

use std::sync::{Arc, RwLock};

use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::metrics::HttpStats;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::api::{MAX_REQUEST_BYTES, authorized, fail, unauthorized};
use crate::manifest::Route;
use crate::runtime::{Failure, ProducerComponent};

/// One producer component served on its route.
#[derive(Clone)]
pub struct ProducerRoute {
    /// The paths it answers.
    pub route: Route,
    /// The component.
    pub component: ProducerComponent,
    /// Whether a request needs the API token.
    pub requires_token: bool,
    /// One permit per request in progress: a full route answers 503 at once.
    pub slots: Arc<Semaphore>,
}

/// What a client is told to wait before trying a full route again, in seconds.
const RETRY_AFTER_SECONDS: u32 = 1;

/// The producer routes being served. Cheap to clone; [`ProducerRoutes::replace`] swaps the
/// whole table at once, so a request sees either the old table or the new one.
#[derive(Clone, Default)]
pub struct ProducerRoutes(Arc<RwLock<Table>>);

#[derive(Default)]
struct Table {
    serving: Arc<[ProducerRoute]>,
    /// Routes whose component is still being built or compiled at the start, with its name:
    /// they answer 503 until it serves, rather than 404.
    starting: Arc<[(Route, String)]>,
}

impl ProducerRoutes {
    /// A table holding `routes`.
    pub fn new(routes: Vec<ProducerRoute>) -> Self {
        let table = Self::default();
        table.replace(routes);
        table
    }

    /// Serves `routes` from now on; requests already running finish on the old components.
    /// Routes marked as starting are no longer.
    pub fn replace(&self, routes: Vec<ProducerRoute>) {
        *self.0.write().expect("producer routes lock") = Table {
            serving: routes.into(),
            starting: Arc::new([]),
        };
    }

    /// Marks `routes` (with their components' names) as starting: until [`Self::replace`],
    /// a request for one answers 503 with `Retry-After`.
    pub fn starting(&self, routes: Vec<(Route, String)>) {
        self.0.write().expect("producer routes lock").starting = routes.into();
    }

    /// Whether no route is served.
    pub fn is_empty(&self) -> bool {
        self.0
            .read()
            .expect("producer routes lock")
            .serving
            .is_empty()
    }

    /// The most specific route served that answers `path`, if any.
    fn find(&self, path: &str) -> Option<ProducerRoute> {
        let serving = self.0.read().expect("producer routes lock").serving.clone();
        serving
            .iter()
            .filter(|r| r.route.matches(path))
            .max_by_key(|r| r.route.specificity())
            .cloned()
    }

    /// The component that will answer `path` once it has started, if any.
    fn starting_for(&self, path: &str) -> Option<String> {
        let starting = self
            .0
            .read()
            .expect("producer routes lock")
            .starting
            .clone();
        starting
            .iter()
            .filter(|(route, _)| route.matches(path))
            .max_by_key(|(route, _)| route.specificity())
            .map(|(_, name)| name.clone())
    }
}

#[derive(Clone)]
struct Producers {
    routes: ProducerRoutes,
    token: Option<Arc<str>>,
    access_log: bool,
    stats: HttpStats,
}

/// A router whose fallback serves `routes`; with a `token`, routes that require it answer 401
/// without it; with `access_log`, every request is logged (target `access`).
pub(super) fn router(
    routes: ProducerRoutes,
    token: Option<Arc<str>>,
    access_log: bool,
    stats: HttpStats,
) -> Router {
    Router::new().fallback(serve).with_state(Producers {
        routes,
        token,
        access_log,
        stats,
    })
}

async fn serve(State(producers): State<Producers>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(route) = producers.routes.find(&path) else {
        if let Some(name) = producers.routes.starting_for(&path) {
            return unavailable(
                "starting",
                format!(
                    "component `{name}` is starting (being built or compiled); try again shortly"
                ),
            );
        }
        return fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route or API path matches `{path}`"),
        )
        .into_response();
    };
    if route.requires_token
        && let Some(token) = &producers.token
        && !authorized(token, request.headers())
    {
        return unauthorized().into_response();
    }
    let name = route.component.name().to_owned();
    // The permit lives as long as the request (its response body included).
    let Ok(slot) = route.slots.clone().try_acquire_owned() else {
        tracing::warn!(component = %name, %path, "route at its route_max_concurrency; answered 503");
        return busy(format!(
            "component `{name}` is handling as many requests as it may; try again shortly"
        ));
    };
    // Bodies stream into the guest; one over the limit fails the guest's read.
    let request = request.map(|body| http_body_util::Limited::new(body, MAX_REQUEST_BYTES));
    let method = request.method().clone();
    // The guest's output is logged inside this span, so it can be told apart by request.
    let span = tracing::info_span!("request", component = %name, %method, %path);
    let started = std::time::Instant::now();
    let answered = route.component.handle(request).instrument(span).await;
    let status = match &answered {
        Ok(response) => response.status().as_u16(),
        Err(Failure::Timeout) => 504,
        Err(Failure::HostBusy(_)) => 503,
        Err(_) => 500,
    };
    let elapsed = started.elapsed();
    let pattern = route.route.to_string();
    producers
        .stats
        .record(&pattern, method.as_str(), status, elapsed);
    if producers.access_log {
        tracing::info!(target: "access", component = %name, %method, %path, status, duration_ms = elapsed.as_millis() as u64, "request");
    }
    match answered {
        Ok(response) => response.map(|body| {
            axum::body::Body::new(body.map_frame(move |frame| {
                let _slot = &slot;
                frame
            }))
        }),
        Err(Failure::HostBusy(why)) => {
            tracing::warn!(component = %name, %path, %why, "no instance slot free; answered 503");
            busy(format!("component `{name}`: {why}"))
        }
        Err(failure) => {
            tracing::warn!(component = %name, %path, %failure, "producer failed to answer");
            let (status, code) = match failure {
                Failure::Timeout => (StatusCode::GATEWAY_TIMEOUT, "component_timeout"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "component_failed"),
            };
            fail(status, code, format!("component `{name}`: {failure}")).into_response()
        }
    }
}

/// 503 with `Retry-After`: the host is at capacity, not failing.
fn busy(message: String) -> Response {
    unavailable("overloaded", message)
}

/// 503 with `Retry-After` and error `code`: try again shortly.
fn unavailable(code: &str, message: String) -> Response {
    let mut response = fail(StatusCode::SERVICE_UNAVAILABLE, code, message).into_response();
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    response
}
