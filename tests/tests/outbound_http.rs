//! Outbound HTTP from consumer components (`wasi:http/outgoing-handler`): denied by default,
//! allowed per component by its `allowed_outbound_hosts`, bounded by its time limit. The
//! scripted guest (build it with `scripts/build-guests.sh`) makes the requests (`http-get:URL`)
//! to a small HTTP server on the loopback interface started by each test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wasmq_host::dispatch::Delivery;
use wasmq_host::engine::{LeaseOptions, SendRequest};
use wasmq_host::runtime::AllowedHost;
use wasmq_host::runtime::{ComponentLimits, ComponentOptions, ConsumerComponent, Failure, Runtime};
use wasmq_tests::manifest::{Component, Consumer, Manifest};
use wasmq_tests::{TestConsumer, TestHost, guest, guest_path, start_host};

const BODY: &str = "hello from the test server";

/// How the test server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `200 OK` with [`BODY`].
    Body,
    /// Nothing at all.
    Nothing,
    /// The response head announcing [`BODY`], then nothing.
    HeadOnly,
}

/// A loopback HTTP/1.1 server that records the request line of every request it receives.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    seen.lock().unwrap().push(line);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        BODY.len()
                    );
                    match answer {
                        Answer::Body => {
                            let _ = socket.write_all(format!("{head}{BODY}").as_bytes()).await;
                            let _ = socket.shutdown().await;
                            return;
                        }
                        Answer::HeadOnly => {
                            let _ = socket.write_all(head.as_bytes()).await;
                        }
                        Answer::Nothing => {}
                    }
                    // Keep the connection open, sending nothing more, until the client leaves.
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn allowed(&self) -> AllowedHost {
        self.origin().parse().unwrap()
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A queue `jobs` consumed by the scripted guest, which may reach `allowed_outbound_hosts`.
async fn setup(allowed_outbound_hosts: Vec<AllowedHost>, limits: ComponentLimits) -> TestHost {
    let scripted = TestConsumer::guest("scripted")
        .limits(limits)
        .allow_outbound(allowed_outbound_hosts);
    TestHost::builder().consumer("jobs", scripted).build().await
}

/// Sends `script` to `jobs` and delivers it.
async fn run(s: &TestHost, script: &str) -> Delivery {
    s.send_texts("jobs", &[script]).await;
    s.deliver("jobs").await
}

fn error_text(delivery: &Delivery) -> String {
    match &delivery.run.failure {
        Some(Failure::Error(text)) => text.clone(),
        other => panic!(
            "expected an error from handle, got {other:?}; output: {:?}",
            delivery.run.output
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_is_reached() {
    let server = TestServer::start(Answer::Body).await;
    let s = setup(vec![server.allowed()], ComponentLimits::default()).await;
    let d = run(&s, &format!("http-get:{}/hook?n=1;ack", server.origin())).await;
    assert_eq!(d.run.failure, None, "{:?}", d.run.output);
    assert!(
        d.run.output.contains(&format!("http-get 200 {BODY}")),
        "{:?}",
        d.run.output
    );
    assert_eq!(server.requests(), ["GET /hook?n=1 HTTP/1.1"]);
    assert_eq!((d.report.acked, d.report.retried), (1, 0));

    // The same component (a fresh store per batch) does it again.
    let d = run(&s, &format!("http-get:{}/again", server.origin())).await;
    assert_eq!(d.run.failure, None, "{:?}", d.run.output);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allowed_hosts_every_request_is_denied() {
    let server = TestServer::start(Answer::Body).await;
    let s = setup(Vec::new(), ComponentLimits::default()).await;
    let d = run(
        &s,
        &format!("http-get:{}/hook;print:after", server.origin()),
    )
    .await;
    let error = error_text(&d);
    assert!(error.contains("HttpRequestDenied"), "{error}");
    assert!(error.starts_with("http failed: "), "{error}");
    // The guest got the error and went on with its script.
    assert!(
        d.run.output.iter().any(|l| l == "after"),
        "{:?}",
        d.run.output
    );
    assert_eq!(d.report.retried, 1);
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_on_another_port_or_scheme_is_denied() {
    let server = TestServer::start(Answer::Body).await;
    let other = TestServer::start(Answer::Body).await;
    let https_same_port: AllowedHost = format!("https://{}", server.addr).parse().unwrap();
    let s = setup(
        vec![other.allowed(), https_same_port],
        ComponentLimits::default(),
    )
    .await;
    let d = run(&s, &format!("http-get:{}/hook", server.origin())).await;
    let error = error_text(&d);
    assert!(error.contains("HttpRequestDenied"), "{error}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(other.requests().is_empty(), "{:?}", other.requests());

    // `localhost` is another origin than `127.0.0.1`, even where it resolves to it.
    let d = run(
        &s,
        &format!("http-get:http://localhost:{}/", server.addr.port()),
    )
    .await;
    assert!(error_text(&d).contains("HttpRequestDenied"));
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_importing_wasi_http_loads_with_nothing_allowed() {
    let wasm = guest("scripted");
    let imports_http = wasm
        .windows(b"wasi:http/outgoing-handler".len())
        .any(|w| w == b"wasi:http/outgoing-handler");
    assert!(imports_http, "scripted.wasm should import wasi:http");
    let runtime = Runtime::new().unwrap();
    ConsumerComponent::new(&runtime, "scripted", &wasm, ComponentOptions::default())
        .expect("a component importing wasi:http loads");
    // And runs when it makes no request.
    let s = setup(Vec::new(), ComponentLimits::default()).await;
    let d = run(&s, "print:no request").await;
    assert_eq!(d.run.failure, None, "{:?}", d.run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_holds_while_waiting_for_a_response() {
    // Epoch interruption cannot stop a guest blocked in a host call: the request itself must
    // give up at the batch's deadline, whether the response head or its body is late.
    for answer in [Answer::Nothing, Answer::HeadOnly] {
        let server = TestServer::start(answer).await;
        let limits = ComponentLimits {
            timeout: Duration::from_millis(500),
            ..ComponentLimits::default()
        };
        let s = setup(vec![server.allowed()], limits).await;
        let started = Instant::now();
        let d = run(&s, &format!("http-get:{}/slow", server.origin())).await;
        assert_eq!(d.run.failure, Some(Failure::Timeout), "{:?}", d.run.output);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(server.requests(), ["GET /slow HTTP/1.1"]);
        assert_eq!(d.report.retried, 1);
    }
}

/// `wasmq run` wiring: the manifest's `allowed_outbound_hosts` reaches the component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_allows_per_component() {
    let server = TestServer::start(Answer::Body).await;
    let dir = TempDir::new().unwrap();
    let source = guest_path("scripted");
    let manifest = Manifest::new()
        .queue("allowed")
        .queue("denied")
        .queue("dead")
        .component(
            Component::new("allowed", &source)
                .consumer(Consumer::on("allowed").max_batch_size(1))
                .set("allowed_outbound_hosts", vec![server.origin()]),
        )
        .component(
            Component::new("denied", &source).consumer(
                Consumer::on("denied")
                    .max_batch_size(1)
                    .max_retries(0)
                    .dead_letter_queue("dead"),
            ),
        );
    let host = start_host(&manifest.write(dir.path())).await;
    let broker = host.broker();
    let script = |path: &str| SendRequest::text(format!("http-get:{}/{path}", server.origin()));
    broker
        .send_batch("denied", vec![script("denied")], None)
        .await
        .unwrap();
    broker
        .send_batch("allowed", vec![script("allowed")], None)
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dead = broker.metrics("dead").await.unwrap().backlog.count;
        let allowed = broker.metrics("allowed").await.unwrap().backlog.count;
        if dead == 1 && allowed == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead {dead}, allowed {allowed}, requests {:?}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only the allowed component's request reached the server; the other one's message failed
    // and went to the dead-letter queue.
    assert_eq!(server.requests(), ["GET /allowed HTTP/1.1"]);
    let dead = broker
        .lease("dead", LeaseOptions::new(10, 60_000))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(String::from_utf8_lossy(&dead[0].message.body).ends_with("/denied"));
    host.shutdown().await.unwrap();
}
