//! End-to-end: the Python and JavaScript `webhook` producers (`guest-examples/python/webhook`,
//! `guest-examples/js/webhook`, built into `guest-examples/target/polyglot/` by
//! `scripts/build-polyglot-guests.sh`) served by `wasmq run`'s server on a route over real HTTP,
//! queueing into a real redb file. Each must answer every request exactly as the Rust
//! `webhook` does (which runs the same checks here, as the reference) and queue the same
//! messages. `wasmq test` runs consumers only, so this is the producers' test.
//!
//! Each test starts its own host with one component: the Python and JavaScript components take
//! seconds to compile, and the tests run in parallel.

use std::path::Path;

use serde_json::{Value, json};
use tempfile::TempDir;
use wasmq_host::run::RunningHost;
use wasmq_tests::manifest::{Component, Manifest, Queue};
use wasmq_tests::{fetch_json, guest_path, polyglot_guest_path, start_host};

/// A host serving one webhook component on `/webhook`, queueing into `incoming`.
struct Host {
    _host: RunningHost,
    url: String,
    client: reqwest::Client,
    _dir: TempDir,
}

/// Starts a host serving the webhook component at `source`.
async fn start(source: &Path) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::new()
        .queue(Queue::new("incoming").set("dedup_window", 60u32))
        .component(
            Component::new("webhook", source)
                .route("/webhook")
                .producer("JOBS", "incoming"),
        );
    let host = start_host(&manifest.write(dir.path())).await;
    Host {
        url: format!("http://{}", host.addr()),
        _host: host,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Host {
    /// POSTs `body` to the route (with an `Idempotency-Key` if given): status and JSON answer.
    async fn post(&self, body: impl Into<reqwest::Body>, key: Option<&str>) -> (u16, Value) {
        let mut request = self.client.post(format!("{}/webhook", self.url)).body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        fetch_json(request).await
    }

    /// The messages of `incoming`, oldest first, as (content type, body).
    async fn queued(&self) -> Vec<(Value, Value)> {
        let (status, answer) = fetch_json(
            self.client
                .get(format!("{}/queues/incoming/messages?limit=100", self.url)),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        answer["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["content_type"].clone(), m["body"].clone()))
            .collect()
    }
}

/// Every answer of the Rust `webhook`, and the messages it queues, from the webhook at `source`.
async fn answers_and_queues_like_the_rust_webhook(source: &Path) {
    let host = start(source).await;
    let signup = json!({"event": "signup", "user": 7, "name": "Zoë"});

    // One value: one message. An array: one message per element, in one batch.
    assert_eq!(
        host.post(signup.to_string(), None).await,
        (202, json!({"queued": 1, "backlog": 1}))
    );
    assert_eq!(
        host.post(r#"[1, "two", {"three": [3]}]"#, None).await,
        (202, json!({"queued": 3, "backlog": 4}))
    );
    // The same Idempotency-Key twice: accepted twice, queued once.
    for _ in 0..2 {
        assert_eq!(
            host.post(r#"{"n": 1}"#, Some("delivery-1")).await,
            (202, json!({"queued": 1, "backlog": 5}))
        );
    }

    // Refused, queueing nothing.
    let (status, answer) = host.post("{nope", None).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.starts_with("invalid JSON: "), "{error}");
    let (status, answer) = host.post("NaN", None).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        host.post("[]", None).await,
        (400, json!({"error": "an empty array queues nothing"}))
    );
    let many = serde_json::to_string(&vec![0; 101]).unwrap();
    assert_eq!(
        host.post(many, None).await,
        (
            400,
            json!({"error": "101 messages in one request; the limit is 100"})
        )
    );
    let large = Value::String("a".repeat(130_000)).to_string();
    assert_eq!(
        host.post(large, None).await,
        (
            413,
            json!({"error": "a message is 130002 bytes; the limit is 128000"})
        )
    );
    let parts = Value::String("b".repeat(100_000));
    let batch = Value::Array(vec![parts.clone(), parts.clone(), parts]).to_string();
    assert_eq!(
        host.post(batch, None).await,
        (
            413,
            json!({"error": "the messages are 300006 bytes; the limit is 256000"})
        )
    );
    let get = fetch_json(host.client.get(format!("{}/webhook", host.url))).await;
    assert_eq!(get, (405, json!({"error": "use POST with a JSON body"})));

    let json_type = json!("json");
    assert_eq!(
        host.queued().await,
        [
            (json_type.clone(), signup),
            (json_type.clone(), json!(1)),
            (json_type.clone(), json!("two")),
            (json_type.clone(), json!({"three": [3]})),
            (json_type, json!({"n": 1})),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_webhook_answers_and_queues_like_the_rust_one() {
    answers_and_queues_like_the_rust_webhook(&polyglot_guest_path("webhook-py")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_webhook_answers_and_queues_like_the_rust_one() {
    answers_and_queues_like_the_rust_webhook(&polyglot_guest_path("webhook-js")).await;
}

/// The reference: the Rust original passes the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_webhook_answers_and_queues_as_described() {
    answers_and_queues_like_the_rust_webhook(&guest_path("webhook")).await;
}
