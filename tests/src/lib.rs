//! Tests for wasmq that do not belong to one crate.
//!
//! [`semantics`] is the backend-independent executable form of `docs/semantics.md`: every case is written
//! against the [`Broker`](wasmq_host::engine::Broker) trait only, and
//! [`semantic_suite!`] turns the whole list into one `#[tokio::test]` per case for a given
//! backend factory.

pub mod guests;
pub mod postgres;
pub mod power_loss;
pub mod semantics;

pub use guests::{guest, guest_path};
pub use semantics::{Ctx, START_MS};
