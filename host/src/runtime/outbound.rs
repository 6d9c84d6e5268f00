//! Outbound HTTP for guests (`wasi:http/outgoing-handler`): denied unless the request's origin
//! is in the component's `allowed_outbound_hosts`, and bounded by the batch's time limit.
//!
//! A refused request fails inside the guest with `error-code::HTTP-request-denied` (and a
//! warning in the host's log naming the component and the URL). An allowed one goes out through
//! wasmtime-wasi-http's own client (hyper; rustls with the webpki roots for `https`).
//!
//! The guest's time limit is epoch interruption, which only fires while guest code runs: a
//! guest blocked in `wasi:io/poll` waiting for a response does not run. So the request (up to
//! the response head) and the connection (which carries the response body) both stop at the
//! batch's deadline with a timeout error; the batch is then reported as timed out whatever the
//! guest does next.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ::http::{Request, Response};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::hosts::AllowedHost;

/// The boxed future types of [`WasiHttpHooks::send_request`].
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture = Box<dyn Future<Output = Result<(Response<WasiBody>, IoFuture), Error>> + Send>;

/// The `wasi:http` hooks of one store: which origins the component may reach, and until when.
pub(super) struct OutboundHttp {
    component: Arc<str>,
    allowed: Arc<[AllowedHost]>,
    deadline: Instant,
    deadline_hit: Arc<AtomicBool>,
}

impl OutboundHttp {
    pub(super) fn new(component: Arc<str>, allowed: Arc<[AllowedHost]>, deadline: Instant) -> Self {
        Self {
            component,
            allowed,
            deadline,
            deadline_hit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Bounds the next call's requests by `deadline` (a warm instance's next batch); a request
    /// of an earlier call cut off later does not count against this one.
    pub(super) fn renew(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.deadline_hit = Arc::new(AtomicBool::new(false));
    }

    /// True once a request or response of this store was cut off by the deadline.
    pub(super) fn deadline_hit(&self) -> bool {
        self.deadline_hit.load(Ordering::Relaxed)
    }

    fn allows(&self, uri: &::http::Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        self.allowed
            .iter()
            .any(|origin| origin.allows(scheme, host, uri.port_u16()))
    }
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        // Like the default hook: request-body errors are not reported back separately.
        drop(fut);
        if !self.allows(request.uri()) {
            tracing::warn!(
                component = %self.component,
                url = %display_url(request.uri()),
                method = %request.method(),
                "outbound HTTP request denied: its origin is not in the component's allowed_outbound_hosts"
            );
            return Box::new(std::future::ready(Err(Error::HttpRequestDenied)));
        }
        tracing::debug!(
            component = %self.component,
            url = %display_url(request.uri()),
            method = %request.method(),
            "outbound HTTP request"
        );
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let hit = self.deadline_hit.clone();
        Box::new(async move {
            let sent = tokio::time::timeout_at(
                deadline,
                wasmtime_wasi_http::default_send_request(request, options),
            )
            .await;
            let (response, io) = match sent {
                Ok(sent) => sent?,
                Err(_elapsed) => {
                    hit.store(true, Ordering::Relaxed);
                    return Err(Error::HttpResponseTimeout);
                }
            };
            let response = response.map(BodyExt::boxed_unsync);
            // The connection's task, which reads the response body, stops at the deadline too:
            // the body then ends with an error.
            let io = async move {
                match tokio::time::timeout_at(deadline, io).await {
                    Ok(result) => result,
                    Err(_elapsed) => {
                        hit.store(true, Ordering::Relaxed);
                        Err(Error::HttpResponseTimeout)
                    }
                }
            };
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// The URL for the log: scheme, authority and path, without the query (which often carries
/// tokens).
fn display_url(uri: &::http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or(""),
        uri.path()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(allowed: &[&str]) -> OutboundHttp {
        let allowed: Vec<AllowedHost> = allowed.iter().map(|a| a.parse().unwrap()).collect();
        OutboundHttp::new("test".into(), allowed.into(), Instant::now())
    }

    fn uri(text: &str) -> ::http::Uri {
        text.parse().unwrap()
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let none = hooks(&[]);
        assert!(!none.allows(&uri("http://127.0.0.1:8080/")));

        let some = hooks(&[
            "http://127.0.0.1:8080",
            "https://api.example.com",
            "http://[::1]",
        ]);
        assert!(some.allows(&uri("http://127.0.0.1:8080/hook?x=1")));
        assert!(!some.allows(&uri("http://127.0.0.1:8081/")));
        assert!(!some.allows(&uri("https://127.0.0.1:8080/")));
        assert!(some.allows(&uri("https://API.example.com/v1")));
        assert!(some.allows(&uri("https://api.example.com:443/v1")));
        assert!(!some.allows(&uri("http://api.example.com/v1")));
        assert!(!some.allows(&uri("https://evil.example.com/")));
        assert!(some.allows(&uri("http://[::1]/")));
        assert!(!some.allows(&uri("http://[::1]:81/")));
        assert!(!some.allows(&uri("/relative")));
    }

    #[test]
    fn logged_urls_leave_out_the_query() {
        assert_eq!(
            display_url(&uri("https://api.example.com/v1/hook?token=secret")),
            "https://api.example.com/v1/hook"
        );
    }
}
