//! The HTTP surface on the manifest's `listen` address: the API (publish, queue information,
//! pull consumers, operator routes, metrics; the CLI is its client) and the producer
//! components' routes.

mod api;
mod operator;
mod producer;
mod pull;
pub mod wire;

pub use self::api::{Reloader, ServeConfig, router};
pub use self::operator::{MAX_PEEK, MAX_REPLAY, prometheus_text};
pub use self::producer::{ProducerRoute, ProducerRoutes};
pub use self::pull::{AckEntry, AckRequest, PullQueues, PullRequest, PulledMessage, RetryEntry};
