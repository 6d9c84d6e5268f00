//! Producer routes: requests that match no API path go to the producer component whose
//! `route` matches best (an exact path, then the longest prefix), in a fresh instance.

use std::sync::{Arc, RwLock};

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
}

/// The producer routes being served. Cheap to clone; [`ProducerRoutes::replace`] swaps the
/// whole table at once, so a request sees either the old table or the new one.
#[derive(Clone, Default)]
pub struct ProducerRoutes(Arc<RwLock<Arc<[ProducerRoute]>>>);

impl ProducerRoutes {
    /// A table holding `routes`.
    pub fn new(routes: Vec<ProducerRoute>) -> Self {
        Self(Arc::new(RwLock::new(routes.into())))
    }

    /// Serves `routes` from now on; requests already running finish on the old components.
    pub fn replace(&self, routes: Vec<ProducerRoute>) {
        *self.0.write().expect("producer routes lock") = routes.into();
    }

    /// Whether no route is served.
    pub fn is_empty(&self) -> bool {
        self.0.read().expect("producer routes lock").is_empty()
    }

    /// The route that answers `path`, if any.
    fn find(&self, path: &str) -> Option<ProducerRoute> {
        let routes = self.0.read().expect("producer routes lock").clone();
        routes
            .iter()
            .filter(|r| r.route.matches(path))
            .max_by_key(|r| r.route.specificity())
            .cloned()
    }
}

#[derive(Clone)]
struct Producers {
    routes: ProducerRoutes,
    token: Option<Arc<str>>,
}

/// A router whose fallback serves `routes`; with a `token`, routes that require it answer 401
/// without it.
pub(super) fn router(routes: ProducerRoutes, token: Option<Arc<str>>) -> Router {
    Router::new()
        .fallback(serve)
        .with_state(Producers { routes, token })
}

async fn serve(State(producers): State<Producers>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(route) = producers.routes.find(&path) else {
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
    // Bodies stream into the guest; one over the limit fails the guest's read.
    let request = request.map(|body| http_body_util::Limited::new(body, MAX_REQUEST_BYTES));
    let name = route.component.name().to_owned();
    match route.component.handle(request).await {
        Ok(response) => response.map(axum::body::Body::new),
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
