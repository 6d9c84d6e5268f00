//! The HTTP surface: publish endpoints and queue information (`host run` serves it on the
//! manifest's `listen` address; the CLI is its client).

mod api;
mod operator;
mod pull;
pub mod wire;

pub use self::api::router;
pub use self::operator::{MAX_PEEK, MAX_REPLAY, prometheus_text};
pub use self::pull::{AckEntry, AckRequest, PullRequest, PulledMessage, RetryEntry};
