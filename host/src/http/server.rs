//! The HTTP listener, hardened against clients that hold connections without using them:
//!
//! - a connection must send a request's headers within [`HEADER_READ_TIMEOUT`], and an idle
//!   keep-alive connection is closed after the same time (hyper starts that timer whenever it
//!   waits for a request head);
//! - at most `max_connections` are open at once; when all are taken, the listener closes the
//!   connection that has been idle longest (no request in progress: a keep-alive connection
//!   between requests, or one still dribbling its first head) to make room, so a flood of idle
//!   connections cannot lock the API out; if every connection is busy, new clients wait in the
//!   kernel's backlog. Both are logged, once per episode;
//! - running out of file descriptors (`EMFILE`) makes the listener pause briefly and log,
//!   instead of spinning; [`raise_open_file_limit`] lifts the soft limit to the hard one at
//!   start, and the connection cap leaves room below it for the storage and the guests;
//! - Nagle's algorithm is off on every connection: a producer's response is written in pieces
//!   (head, then the body as the component streams it), and with Nagle on each piece after the
//!   first waits for the client's delayed ACK (~40 ms).
//!
//! Request bodies of the API have their own read deadline (`body.rs`); producer routes are
//! bounded by their component's time limit.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection is kept.
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// File descriptors kept free for everything but connections (the store, guests' outbound
/// requests, compiled-component files, PostgreSQL connections).
const RESERVED_FILES: usize = 256;

/// How long the listener pauses when accepting fails (out of file descriptors, say), or
/// before it looks again for an idle connection to close when every one is busy.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long the listener waits for an idle connection it asked to close.
const EVICTION_WAIT: Duration = Duration::from_millis(20);

/// Raises the soft open-file limit to the hard limit and returns the soft limit now in force
/// (`None` where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes a `rlimit` into the valid struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `setrlimit` only reads the valid struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

/// The connection cap in force: `wanted`, lowered to leave [`RESERVED_FILES`] descriptors
/// under the open-file limit.
pub fn connection_cap(wanted: usize, open_file_limit: Option<u64>) -> usize {
    let room = open_file_limit
        .map(|limit| usize::try_from(limit).unwrap_or(usize::MAX))
        .map_or(usize::MAX, |limit| limit.saturating_sub(RESERVED_FILES));
    wanted.min(room).max(1)
}

/// One open connection, as the listener sees it.
#[derive(Default)]
struct Connection {
    /// Requests in progress (their response bodies included).
    in_flight: AtomicUsize,
    /// Set when the listener wants the connection closed to make room.
    evict: Notify,
}

/// Counts a request in progress on its connection until dropped.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn enter(connection: &Arc<Connection>) -> Self {
        connection.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(connection.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted until it is sent (or dropped).
struct Counted {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The router as one connection's service, counting its requests.
struct Service {
    router: TowerToHyperService<Router>,
    connection: Arc<Connection>,
}

impl hyper::service::Service<Request<Incoming>> for Service {
    type Response = Response<Counted>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::enter(&self.connection);
        let answer = self.router.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Counted {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    next: u64,
    connections: BTreeMap<u64, Arc<Connection>>,
}

impl Open {
    /// Asks the oldest connection with no request in progress to close; false if every
    /// connection is busy.
    fn evict_oldest_idle(&self) -> bool {
        let idle = self
            .connections
            .values()
            .find(|c| c.in_flight.load(Ordering::SeqCst) == 0);
        idle.inspect(|c| c.evict.notify_one()).is_some()
    }
}

/// Serves `router` on `listener` with at most `max_connections` open at once, until `stop`
/// turns true; then stops accepting and waits for open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let open = Arc::new(Mutex::new(Open::default()));
    let graceful = GracefulShutdown::new();
    let mut full = false;
    loop {
        let slot = loop {
            if let Ok(slot) = slots.clone().try_acquire_owned() {
                full = false;
                break slot;
            }
            let evicted = open
                .lock()
                .expect("open connections lock")
                .evict_oldest_idle();
            if !full {
                tracing::warn!(
                    max_connections,
                    "connection limit reached: closing idle connections to make room, \
                     or holding new ones back while every connection is busy"
                );
                full = true;
            }
            let wait = if evicted {
                EVICTION_WAIT
            } else {
                ACCEPT_BACKOFF
            };
            tokio::select! {
                slot = tokio::time::timeout(wait, slots.clone().acquire_owned()) => {
                    if let Ok(Ok(slot)) = slot {
                        break slot;
                    }
                }
                () = stopped(&mut stop) => return finish(listener, graceful).await,
            }
        };
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not turn Nagle's algorithm off");
        }
        let connection = Arc::new(Connection::default());
        let id = {
            let mut open = open.lock().expect("open connections lock");
            open.next += 1;
            let id = open.next;
            open.connections.insert(id, connection.clone());
            id
        };
        let service = Service {
            router: TowerToHyperService::new(router.clone()),
            connection: connection.clone(),
        };
        let serving = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(tcp), service);
        let serving = graceful.watch(serving);
        let open = open.clone();
        tokio::spawn(async move {
            let mut serving = std::pin::pin!(serving);
            loop {
                tokio::select! {
                    result = &mut serving => {
                        if let Err(err) = result {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        break;
                    }
                    () = connection.evict.notified() => {
                        // A request may have started since the listener looked.
                        if connection.in_flight.load(Ordering::SeqCst) == 0 {
                            tracing::debug!("closed an idle connection to make room");
                            break;
                        }
                    }
                }
            }
            open.lock()
                .expect("open connections lock")
                .connections
                .remove(&id);
            drop(slot);
        });
    }
    finish(listener, graceful).await;
}

/// Stops accepting and waits for the open connections' requests to finish.
async fn finish(listener: TcpListener, graceful: GracefulShutdown) {
    drop(listener);
    graceful.shutdown().await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_under_the_open_file_limit() {
        assert_eq!(connection_cap(1024, Some(20_000)), 1024);
        assert_eq!(connection_cap(1024, Some(512)), 256);
        assert_eq!(connection_cap(1024, Some(100)), 1);
        assert_eq!(connection_cap(1024, None), 1024);
    }
}
