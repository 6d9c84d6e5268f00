//! The HTTP surface on the manifest's `listen` address: wasmq's own API (publish, queue
//! information, pull consumers, operator routes, metrics; the CLI is its client), Cloudflare's
//! Queues REST API under `/client/v4` (so Cloudflare's SDKs work unchanged), and the producer
//! components' routes.

mod api;
mod body;
mod cloudflare;
mod consumers;
mod operator;
mod producer;
mod pull;
pub mod wire;

pub use self::api::{Reloader, ServeConfig, router};
pub use self::body::InputError;
pub use self::cloudflare::queue_id;
pub use self::consumers::{Attached, ConsumerView, QueueConsumers, Wiring};
pub use self::operator::{MAX_PEEK, MAX_REPLAY, prometheus_text};
pub use self::producer::{ProducerRoute, ProducerRoutes};
pub use self::pull::{AckEntry, AckRequest, PullRequest, PulledMessage, RetryEntry};

/// `listener` with Nagle's algorithm off on every connection: a producer's response is written
/// in pieces (head, then the body as the component streams it), and with Nagle on each piece
/// after the first waits for the client's delayed ACK (~40 ms).
pub fn without_nagle(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not turn Nagle's algorithm off");
        }
    })
}
