//! The HTTP surface: publish endpoints and queue information (`host run` serves it on the
//! manifest's `listen` address; the CLI is its client).

mod api;
pub mod wire;

pub use self::api::router;
