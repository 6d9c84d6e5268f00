//! The HTTP surface on the manifest's `listen` address: wasmq's own API (publish, queue
//! information, pull consumers, operator routes, metrics; the CLI is its client), Cloudflare's
//! Queues REST API under `/client/v4` (so Cloudflare's SDKs work unchanged), the web dashboard
//! at `/`, and the producer components' routes.

mod api;
mod body;
mod cloudflare;
mod consumers;
mod dashboard;
mod operator;
mod producer;
mod pull;
mod server;
pub mod wire;

pub use self::api::{Reloader, ServeConfig, router};
pub use self::consumers::{Attached, ConsumerView, QueueConsumers, Wiring};
pub use self::operator::{MAX_PEEK, MAX_REPLAY, prometheus_text};
pub use self::producer::{ProducerRoute, ProducerRoutes};
pub use self::pull::{AckEntry, AckRequest, PullRequest, PulledMessage, RetryEntry};
pub use self::server::{connection_cap, raise_open_file_limit, serve};
