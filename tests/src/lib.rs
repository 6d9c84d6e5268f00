//! The end-to-end tests' kit: [`TestHost`] (a broker with dispatchers, for tests that drive
//! components without a whole host), [`start_host`] (a whole host in this process), and what
//! they share with the host's own tests and the engine's suites (re-exported from
//! `wasmq-testkit`): the example guests, host manifests and PostgreSQL.

use std::path::Path;

use wasmq_host::run::{self, RunningHost};

pub mod test_host;

pub use test_host::{RunningDispatcher, TestConsumer, TestHost, TestHostBuilder};
pub use wasmq_testkit::guests::{guest, guest_path, polyglot_guest};
pub use wasmq_testkit::{Ctx, START_MS, manifest, postgres};

/// Loads the manifest at `path` and starts a host on it in this process (as `wasmq run` does);
/// panics with the error when either fails.
pub async fn start_host(path: &Path) -> RunningHost {
    let manifest = wasmq_host::manifest::load(path).unwrap_or_else(|e| panic!("{e}"));
    run::start(&manifest)
        .await
        .unwrap_or_else(|e| panic!("starting a host: {e:#}"))
}
