//! What wasmq's test suites share, with no WebAssembly in it, so that the engine's suites
//! build without wasmtime.
//!
//! [`semantics`] is the backend-independent executable form of `docs/semantics.md`: every case
//! is written against the [`Broker`](wasmq_engine::Broker) trait only, and
//! [`semantic_suite!`] turns the whole list into one `#[tokio::test]` per case for a given
//! backend factory. [`postgres`] starts throwaway PostgreSQL clusters; [`power_loss`] is a
//! disk that loses what was not synced. For the tests that run a host: [`guests`] finds the
//! built example components and [`manifest`] writes host manifests.

pub mod guests;
pub mod manifest;
pub mod postgres;
pub mod power_loss;
pub mod semantics;

pub use semantics::{Ctx, START_MS};
