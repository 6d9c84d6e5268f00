//! The end-to-end tests' kit: [`TestHost`] (a broker with dispatchers, for tests that drive
//! components without a whole host), [`start_host`] (a whole host in this process), and what
//! they share with the host's own tests and the engine's suites (re-exported from
//! `wasmq-testkit`): the example guests, host manifests and PostgreSQL.

use std::path::Path;

use wasmq_host::engine::{ContentType, Message, MessageId};
use wasmq_host::run::{self, RunningHost};
use wasmq_host::runtime::BatchInput;

pub mod test_host;

pub use test_host::{RunningDispatcher, TestConsumer, TestHost, TestHostBuilder};
pub use wasmq_testkit::guests::{guest, guest_path, polyglot_guest, polyglot_guest_path};
pub use wasmq_testkit::{Ctx, START_MS, manifest, postgres};

/// Loads the manifest at `path` and starts a host on it in this process (as `wasmq run` does);
/// panics with the error when either fails.
pub async fn start_host(path: &Path) -> RunningHost {
    let manifest = wasmq_host::manifest::load(path).unwrap_or_else(|e| panic!("{e}"));
    run::start(&manifest)
        .await
        .unwrap_or_else(|e| panic!("starting a host: {e:#}"))
}

/// A batch of queue `jobs` holding one text message with `body` (a fixed id, timestamp 0,
/// first attempt), for tests that run a component's `run_batch` themselves.
pub fn one_message_batch(body: &[u8]) -> BatchInput {
    let message = Message {
        id: MessageId([7; 16]),
        timestamp_ms: 0,
        content_type: ContentType::Text,
        body: body.to_vec(),
        attempts: 1,
    };
    BatchInput {
        queue: "jobs".into(),
        messages: vec![message],
        backlog: Default::default(),
    }
}

/// Sends `request` and returns the answer's status and JSON body; panics, with the text, on
/// an answer that is not JSON.
pub async fn fetch_json(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text:?}"));
    (status, value)
}
