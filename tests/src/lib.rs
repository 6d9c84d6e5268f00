//! The end-to-end tests' kit: the example guests, and what they share with the engine's
//! suites (re-exported from `wasmq-testkit`).

pub mod guests;

pub use guests::{guest, guest_path};
pub use wasmq_testkit::{Ctx, START_MS, postgres};
