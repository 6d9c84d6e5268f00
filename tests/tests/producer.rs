//! Producer components over real HTTP on loopback: `wasmq run`'s server (started in process
//! with `run::start`) hands requests on a component's route to the `webhook` example guest,
//! which queues them; a consumer component and the pull API then see exactly what was queued.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use wasmq_host::run::{self, RunningHost};
use wasmq_tests::manifest::{Component, Consumer, Manifest, Queue, Table};
use wasmq_tests::{fetch_json, guest_path, postgres, start_host};

const TOKEN: &str = "s3cret-token";

/// A host started in process, with a client for its HTTP server.
struct Host {
    host: RunningHost,
    url: String,
    client: reqwest::Client,
    _dir: TempDir,
}

/// The `webhook` producer on `/webhook` (queueing into `incoming`), and `fanout` moving
/// `incoming` to the pull queue `jobs`; a pull queue `other` besides.
fn pipeline() -> Manifest {
    Manifest::new()
        .queue(Queue::new("incoming").set("dedup_window", 60u32))
        .queue(Queue::new("jobs").pull_consumer(Table::new()))
        .queue(Queue::new("other").pull_consumer(Table::new()))
        .component(
            Component::new("webhook", guest_path("webhook"))
                .route("/webhook")
                .producer("JOBS", "incoming"),
        )
        .component(
            Component::new("fanout", guest_path("fanout"))
                .producer("OUT", "jobs")
                .consumer(Consumer::on("incoming").max_batch_timeout(0)),
        )
}

async fn start(manifest: Manifest) -> Host {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(&manifest.write(dir.path())).await;
    Host {
        url: format!("http://{}", host.addr()),
        host,
        client: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Host {
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        self.send(self.client.post(format!("{}{path}", self.url)).body(body))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        fetch_json(request).await
    }

    /// The queue's metrics, read from the broker.
    async fn metrics(&self, queue: &str) -> wasmq_host::engine::QueueMetrics {
        self.host.broker().metrics(queue).await.unwrap()
    }

    /// Waits until `queue` holds `count` messages.
    async fn wait_backlog(&self, queue: &str, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let backlog = self.metrics(queue).await.backlog.count;
            if backlog == count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{queue}` holds {backlog} messages, not {count}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Pulls up to 100 messages of `queue` (with the token) and returns their JSON bodies.
    async fn pull_bodies(&self, queue: &str) -> Vec<Value> {
        let (status, answer) = self
            .send(
                self.client
                    .post(format!("{}/queues/{queue}/messages/pull", self.url))
                    .bearer_auth(TOKEN)
                    .json(&json!({ "batch_size": 100 })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["result"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["content_type"], "json");
                m["body"].clone()
            })
            .collect()
    }
}

/// Sends only the head of a POST announcing `length` body bytes and returns the answer.
async fn head_only_post(addr: std::net::SocketAddr, path: &str, length: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A client that sends the head of a POST announcing 100 body bytes, then 10 of them, then
/// nothing: the answer, and how long after the stall it came.
async fn stalled_body_post(addr: std::net::SocketAddr, path: &str) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"order": "#).await.unwrap();
    let stalled = Instant::now();
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    answer.truncate(n);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        stalled.elapsed(),
    )
}

/// A client that stalls mid-body does not hold the component past its time limit: the guest,
/// blocked reading the body, is cut off at its deadline and the client gets 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_ends_at_the_time_limit() {
    let slowhook = Component::new("slowhook", guest_path("webhook"))
        .route("/slow")
        .producer("JOBS", "incoming")
        .limit("timeout", "500ms");
    let host = start(pipeline().component(slowhook)).await;
    let (answer, waited) = stalled_body_post(host.host.addr(), "/slow").await;
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("component_timeout"), "{answer}");
    // The limit holds within 10 % + 100 ms.
    assert!(
        waited <= Duration::from_millis(650),
        "answered after {waited:?}"
    );
    assert_eq!(host.metrics("incoming").await.backlog.count, 0);
    host.host.shutdown().await.unwrap();
}

/// A route at its `route_max_concurrency` answers 503 with `Retry-After` at once, while the
/// host's other routes and its consumers carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_route_answers_503_and_the_rest_of_the_host_carries_on() {
    let slowhook = Component::new("slowhook", guest_path("webhook"))
        .route("/slow")
        .set("route_max_concurrency", 2u32)
        .producer("JOBS", "incoming")
        .limit("timeout", "3s");
    let host = start(pipeline().component(slowhook)).await;
    let addr = host.host.addr();
    // Two clients stall mid-body: both of the route's slots are taken until the time limit.
    let stalled: Vec<_> = (0..2)
        .map(|_| tokio::spawn(stalled_body_post(addr, "/slow")))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let response = host
        .client
        .post(format!("{}/slow", host.url))
        .body(r#"{"order": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(1));
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["errors"][0]["code"], "overloaded", "{answer}");

    // Another route and the consumers are not affected.
    let (status, answer) = host.post("/webhook", r#"{"order": 2}"#).await;
    assert_eq!(status, 202, "{answer}");
    host.wait_backlog("jobs", 1).await;
    for client in stalled {
        let (answer, _) = client.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    }
    host.host.shutdown().await.unwrap();
}

fn sorted(mut values: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = values.drain(..).map(|v| v.to_string()).collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_queues_json_that_a_consumer_then_sees() {
    webhook_pipeline(pipeline()).await;
}

/// The same pipeline with the queues in PostgreSQL instead of redb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_pipeline_runs_the_same_on_postgresql() {
    let (url, _database) = postgres::fresh_database(&postgres::url());
    webhook_pipeline(pipeline().host("storage", url)).await;
}

/// Webhook → `incoming` → fanout → pull queue `jobs`, on a host started from `manifest` (a
/// [`pipeline`]).
async fn webhook_pipeline(manifest: Manifest) {
    let host = start(manifest).await;

    let (status, answer) = host.post("/webhook", r#"{"order": 42}"#).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["queued"], 1);
    assert!(answer["backlog"].as_u64().unwrap() >= 1, "{answer}");

    let (status, answer) = host.post("/webhook", r#"[1, "two", {"three": 3}]"#).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["queued"], 3);

    // `fanout` (a consumer component) moves them on to the pull queue `jobs`.
    host.wait_backlog("jobs", 4).await;
    host.wait_backlog("incoming", 0).await;
    assert_eq!(host.metrics("incoming").await.acked, 4);
    let bodies = host.pull_bodies("jobs").await;
    assert_eq!(
        sorted(bodies),
        sorted(vec![
            json!({"order": 42}),
            json!(1),
            json!("two"),
            json!({"three": 3})
        ])
    );
    host.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_answers_and_store_nothing() {
    let host = start(pipeline()).await;

    let (status, answer) = host.post("/webhook", "{not json").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON"),
        "{answer}"
    );

    let (status, answer) = host.post("/webhook", "[]").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("an empty array queues nothing"))
    );

    let many = Value::Array((0..101).map(|i| json!(i)).collect()).to_string();
    let (status, answer) = host.post("/webhook", many).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("101 messages"),
        "{answer}"
    );

    // One message over 128 000 bytes: the queue refuses it with a typed error.
    let huge = json!("x".repeat(130_000)).to_string();
    let (status, answer) = host.post("/webhook", huge).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("limit is 128000"),
        "{answer}"
    );

    // Over the host's request limit: refused from the declared length, before the body is
    // sent or the guest runs.
    let answer = head_only_post(host.host.addr(), "/webhook", 3 << 20).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");

    let (status, _) = host
        .send(host.client.get(format!("{}/webhook", host.url)))
        .await;
    assert_eq!(status, 405);

    let (status, answer) = host.post("/nowhere", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(answer["errors"][0]["code"], "not_found");

    let metrics = host.metrics("incoming").await;
    assert_eq!((metrics.sent, metrics.backlog.count), (0, 0));
    host.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_queues_a_webhook_once() {
    let direct = Queue::new("incoming-direct")
        .set("dedup_window", 60u32)
        .pull_consumer(Table::new());
    let host = start(
        pipeline().queue(direct).component(
            Component::new("direct", guest_path("webhook"))
                .route("/direct")
                .producer("JOBS", "incoming-direct"),
        ),
    )
    .await;
    let post = |key: &'static str| {
        host.send(
            host.client
                .post(format!("{}/direct", host.url))
                .header("idempotency-key", key)
                .body(r#"{"event": "push"}"#),
        )
    };
    assert_eq!(post("delivery-1").await.0, 202);
    assert_eq!(post("delivery-1").await.0, 202);
    assert_eq!(host.metrics("incoming-direct").await.backlog.count, 1);
    assert_eq!(post("delivery-2").await.0, 202);
    assert_eq!(host.metrics("incoming-direct").await.backlog.count, 2);
    host.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_exact_then_longest_prefix_and_can_require_the_token() {
    let webhook = guest_path("webhook");
    let manifest = pipeline()
        .host("api_token", TOKEN)
        .component(
            Component::new("hooks", &webhook)
                .route("/hooks/...")
                .producer("JOBS", "jobs"),
        )
        .component(
            Component::new("special", &webhook)
                .route("/hooks/special")
                .set("route_requires_token", true)
                .producer("JOBS", "other"),
        );
    let host = start(manifest).await;

    // Producer routes are public unless they say otherwise; the API is not.
    assert_eq!(host.post("/hooks/github", r#"{"n": 1}"#).await.0, 202);
    assert_eq!(host.post("/hooks", r#"{"n": 2}"#).await.0, 202);
    let (status, answer) = host.post("/hooks/special", r#"{"n": 3}"#).await;
    assert_eq!(
        (status, &answer["errors"][0]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, _) = host
        .send(
            host.client
                .post(format!("{}/hooks/special", host.url))
                .bearer_auth(TOKEN)
                .body(r#"{"n": 4}"#),
        )
        .await;
    assert_eq!(status, 202);
    let (status, _) = host
        .send(host.client.get(format!("{}/queues", host.url)))
        .await;
    assert_eq!(status, 401);

    assert_eq!(
        sorted(host.pull_bodies("jobs").await),
        sorted(vec![json!({"n": 1}), json!({"n": 2})])
    );
    assert_eq!(host.pull_bodies("other").await, vec![json!({"n": 4})]);
    host.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_producer_answers_500_and_the_host_keeps_serving() {
    // 1 MiB of memory is less than the guest's initial memory: every instantiation fails.
    let starved = Component::new("starved", guest_path("webhook"))
        .route("/starved")
        .producer("JOBS", "jobs")
        .limit("memory", "1MiB");
    let host = start(pipeline().component(starved)).await;
    let (status, answer) = host.post("/starved", "{}").await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["errors"][0]["code"], "component_failed");
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("component `starved`"),
        "{answer}"
    );
    assert_eq!(host.post("/webhook", "{}").await.0, 202);
    host.host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_component_on_a_route_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = Manifest::new()
        .queue("jobs")
        .component(
            Component::new("worker", guest_path("worker"))
                .route("/worker")
                .producer("JOBS", "jobs"),
        )
        .write(dir.path());
    let manifest = wasmq_host::manifest::load(&path).unwrap();
    let err = match run::start(&manifest).await {
        Ok(_) => panic!("a consumer served as a producer"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        err.contains("component `worker` is not a producer"),
        "{err}"
    );
}
