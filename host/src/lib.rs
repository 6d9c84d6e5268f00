//! wasmq's host: durable queues ([`engine`]) and the WebAssembly components that produce and
//! consume them ([`runtime`], [`dispatch`]).
//!
//! - [`engine`]: the queue engine behind the [`engine::Broker`] trait, redb by default (the
//!   `wasmq-engine` crate, re-exported: it knows nothing of WebAssembly, and the compiler
//!   holds it to that).
//! - [`runtime`]: wasmtime, the WIT contract in `wit/`, one store per batch with limits.
//! - [`dispatch`]: batch assembly and settlement for push consumers.
//! - [`bench`]: `wasmq bench`.

pub mod bench;
pub mod cli;
pub mod config;
pub mod dispatch;
pub use wasmq_engine as engine;
pub mod harness;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod run;
pub mod runtime;
