//! The web dashboard in a real browser: the real `host` binary serves it, headless Chromium
//! (Debian's `chromium` and `chromium-driver`, driven over WebDriver by `fantoccini`) loads it,
//! and what the page shows and does is checked against the API. Screenshots of every step are
//! kept under `target/dashboard-screenshots/` (`$CARGO_TARGET_DIR/…` when that is set).
//!
//! Without Chromium or chromedriver these tests fail, saying what to install:
//! `scripts/test.sh` installs both.

pub mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::{Component, Consumer, HOST, HostProcess, HostRun, Manifest, Queue, Table, guest_path};

/// One browser at a time: the machine has two cores.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a page may take to show what is expected.
const PATIENCE: Duration = Duration::from_secs(20);

const TOKEN: &str = "dash-token-5e1f";

/// `path` from `variable`, or Debian's path; fails the test (never skips it) when missing.
fn tool(variable: &str, debian: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(debian), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: the dashboard tests need headless Chromium and chromedriver \
         (`apt-get install chromium chromium-driver`; scripts/test.sh installs them), or \
         {variable} naming another binary",
        path.display()
    );
    path
}

/// Where screenshots go: `<target>/dashboard-screenshots`, next to the `host` binary's
/// profile folder.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(HOST)
        .parent()
        .and_then(Path::parent)
        .expect("the host binary is in target/<profile>/");
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Headless Chromium behind chromedriver, both in a process group of their own that is killed
/// when this is dropped.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
    test: &'static str,
}

impl Browser {
    async fn start(test: &'static str) -> Self {
        let chromium = tool("WASMQ_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("WASMQ_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().unwrap_or_else(|e| {
            panic!("starting {}: {e}", chromedriver.display());
        });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session through chromedriver");
        Self {
            client,
            driver,
            _profile: profile,
            shots: screenshot_dir(),
            test,
        }
    }

    /// Saves a screenshot as `<test>-<name>.png`.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let path = self.shots.join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).unwrap();
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.wait(&format!("an element `{css}`"), || async {
            self.client.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.unwrap();
    }

    /// The text of `css`, if it is there.
    async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    async fn displayed(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Waits until the text of `css` satisfies `check`; returns it.
    async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        self.wait(&format!("`{css}` to show {what}"), || async {
            self.text(css).await.filter(|text| check(text))
        })
        .await
    }

    /// Polls `probe` until it answers; on timeout, saves a screenshot and fails naming `what`.
    async fn wait<T, F, Fut>(&self, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if Instant::now() > deadline {
                self.shot("timeout").await;
                let page = self
                    .client
                    .source()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(4000)
                    .collect::<String>();
                panic!("waited {PATIENCE:?} for {what}; the page:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share the group chromedriver leads.
        let group = self.driver.id() as i32;
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

/// The host's API, with or without the token.
struct Api {
    base: String,
    token: Option<&'static str>,
    http: reqwest::Client,
}

impl Api {
    fn new(base: &str, token: Option<&'static str>) -> Self {
        Self {
            base: base.to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn status(&self, path: &str) -> u16 {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The `result` of a successful call.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer["result"].clone()
    }

    async fn queue(&self, name: &str) -> Value {
        self.call(reqwest::Method::GET, &format!("/queues/{name}"), None)
            .await
    }

    async fn backlog(&self, name: &str) -> u64 {
        self.queue(name).await["metrics"]["backlog"]["count"]
            .as_u64()
            .unwrap()
    }

    async fn send(&self, queue: &str, message: Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/queues/{queue}/messages"),
            Some(message),
        )
        .await;
    }
}

/// A host with a consumer component (`worker` on `jobs`, loaded from a copy in `dir`), a pull
/// queue with a dead-letter queue (`orders`, `orders-dlq`) and an API token.
fn start_host(dir: &Path) -> HostProcess {
    let worker = dir.join("worker.wasm");
    std::fs::copy(guest_path("worker"), &worker).unwrap();
    let manifest = Manifest::new()
        .host("api_token", TOKEN)
        .queue("jobs")
        .queue("jobs-dlq")
        .queue(
            Queue::new("orders").pull_consumer(Table::new().set("dead_letter_queue", "orders-dlq")),
        )
        .queue("orders-dlq")
        .component(
            Component::new("worker", &worker).consumer(
                Consumer::on("jobs")
                    .max_batch_timeout(0)
                    .dead_letter_queue("jobs-dlq"),
            ),
        );
    HostRun::new(&manifest.write(dir)).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one walk through the dashboard, step by step, each checked against the API"
)]
async fn the_dashboard_shows_the_queues_and_operates_them_with_the_token() {
    let _one_browser = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path());
    let api = Api::new(&host.url, Some(TOKEN));
    let anonymous = Api::new(&host.url, None);

    // Without the token: the page loads (it holds no data), the data does not.
    assert_eq!(anonymous.status("/").await, 200);
    assert_eq!(anonymous.status("/dashboard/api/summary").await, 401);
    assert_eq!(anonymous.status("/dashboard/api/components").await, 401);
    assert_eq!(anonymous.status("/dashboard/api/queues/orders").await, 401);
    assert_eq!(anonymous.status("/queues").await, 401);

    let browser = Browser::start("operate").await;
    browser.client.goto(&host.url).await.unwrap();
    browser
        .wait("the token prompt", || async {
            browser.displayed("#token-prompt").await.then_some(())
        })
        .await;
    assert_eq!(browser.count("#queue-rows tr").await, 0);
    let status: Value = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/dashboard/api/summary').then((r) => done(r.status));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, 401, "the page's own request without the token");
    browser.shot("01-token-prompt").await;

    // A wrong token is refused and asked for again.
    browser.type_into("#token-input", "not-the-token").await;
    browser.click("#token-submit").await;
    browser
        .wait_text("#token-error", "the refusal", |t| t.contains("refused"))
        .await;
    assert!(browser.displayed("#token-prompt").await);

    // The right one opens the queues page; it is kept in the tab, never in the URL.
    browser.type_into("#token-input", TOKEN).await;
    browser.click("#token-submit").await;
    let backlog = r#"tr[data-queue="orders"] td.backlog"#;
    browser.wait_text(backlog, "0", |t| t == "0").await;
    assert!(!browser.displayed("#token-prompt").await);
    let url = browser.client.current_url().await.unwrap();
    assert!(!url.as_str().contains(TOKEN), "{url}");
    let kept = browser
        .client
        .execute("return sessionStorage.getItem('wasmq.api-token')", vec![])
        .await
        .unwrap();
    assert_eq!(kept, TOKEN);
    assert_eq!(browser.count("#queue-rows tr").await, 4);
    let consumer = browser
        .text(r#"tr[data-queue="jobs"] td.consumer"#)
        .await
        .unwrap();
    assert_eq!(consumer, "worker");

    // Sends show up in the backlog, live.
    api.send("orders", json!({ "body": { "order": 1 } })).await;
    api.send(
        "orders",
        json!({ "body": "plain text", "content_type": "text" }),
    )
    .await;
    api.send(
        "orders",
        json!({ "body": "aGVsbG8gd29ybGQhAAEC", "content_type": "bytes" }),
    )
    .await;
    browser.wait_text(backlog, "3", |t| t == "3").await;
    let oldest = browser
        .text(r#"tr[data-queue="orders"] td.oldest"#)
        .await
        .unwrap();
    assert!(oldest.ends_with(" s"), "oldest message age: {oldest}");

    // Messages the worker consumes show as rates.
    let batch: Vec<Value> = (0..50).map(|i| json!({ "body": { "n": i } })).collect();
    api.call(
        reqwest::Method::POST,
        "/queues/jobs/messages/batch",
        Some(json!({ "messages": batch })),
    )
    .await;
    let acked = browser
        .wait_text(
            r#"tr[data-queue="jobs"] td.rate-acked"#,
            "a rate above 0",
            |t| t.parse::<f64>().is_ok_and(|r| r > 0.0),
        )
        .await;
    // Per second over the interval between two samples (at least 1.5 s), not a count.
    assert!(acked.parse::<f64>().unwrap() <= 50.0 / 1.5, "{acked}");
    browser.shot("02-queues").await;

    // One queue's page: pause, checked through the API, then resume.
    browser.click(r#"tr[data-queue="orders"] td.name a"#).await;
    browser
        .wait_text("#queue-name", "orders", |t| t == "orders")
        .await;
    browser
        .wait_text("#backlog .value", "3", |t| t == "3")
        .await;
    browser.click("#pause").await;
    browser
        .wait_text("#queue-state", "paused", |t| t == "paused")
        .await;
    assert_eq!(api.queue("orders").await["paused"], true);
    let refused = api
        .request(reqwest::Method::POST, "/queues/orders/messages/pull")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409, "a paused queue hands out nothing");
    browser.shot("03-paused").await;
    browser.click("#resume").await;
    browser
        .wait_text("#queue-state", "active", |t| t == "active")
        .await;
    assert_eq!(api.queue("orders").await["paused"], false);

    // Peek: each body as its content type says.
    browser.click("#peek").await;
    browser
        .wait("three peeked messages", || async {
            (browser.count("li.message").await == 3).then_some(())
        })
        .await;
    let json_body = browser.text("pre.body.json").await.unwrap();
    assert_eq!(json_body, "{\n  \"order\": 1\n}");
    assert_eq!(browser.text("pre.body.text").await.unwrap(), "plain text");
    let hex = browser.text("pre.body.hex").await.unwrap();
    assert!(
        hex.starts_with("00000000  68 65 6c 6c 6f 20 77 6f 72 6c 64 21 00 01 02"),
        "{hex}"
    );
    assert!(hex.ends_with("hello world!..."), "{hex}");
    browser.shot("04-peek").await;

    // Replay from the dead-letter queue: the messages really move.
    for n in 0..2 {
        api.send("orders-dlq", json!({ "body": { "dead": n } }))
            .await;
    }
    browser
        .wait_text("#replay-dlq", "the DLQ", |t| t == "Replay from orders-dlq")
        .await;
    browser.click("#replay-dlq").await;
    browser
        .wait_text("#action-result", "the count moved", |t| {
            t.starts_with("Moved 2 messages from orders-dlq to orders")
        })
        .await;
    assert_eq!(api.backlog("orders-dlq").await, 0);
    assert_eq!(api.backlog("orders").await, 5);
    browser
        .wait_text("#backlog .value", "5", |t| t == "5")
        .await;

    // Purge asks for the queue's name first.
    browser.click("#purge").await;
    assert!(browser.displayed("#purge-dialog").await);
    browser.type_into("#purge-confirm", "order").await;
    let go = browser.find("#purge-go").await;
    assert!(
        !go.is_enabled().await.unwrap(),
        "enabled before the full name"
    );
    browser.shot("05-purge-confirm").await;
    go.click().await.ok();
    assert_eq!(api.backlog("orders").await, 5, "nothing purged yet");
    browser.type_into("#purge-confirm", "s").await;
    assert!(go.is_enabled().await.unwrap());
    go.click().await.unwrap();
    browser
        .wait_text("#action-result", "the count purged", |t| {
            t == "Purged 5 messages from orders."
        })
        .await;
    assert_eq!(api.backlog("orders").await, 0);
    browser
        .wait_text("#backlog .value", "0", |t| t == "0")
        .await;
    browser.shot("06-purged").await;

    // The dead-letter queue's page offers the way back.
    browser
        .client
        .goto(&format!("{}/#/queue/orders-dlq", host.url))
        .await
        .unwrap();
    browser
        .wait_text(r#"button.replay-to[data-to="orders"]"#, "the source", |t| {
            t == "Replay to orders"
        })
        .await;

    // The consumer: its component's digest, batches and their time.
    let wasm = std::fs::read(guest_path("worker")).unwrap();
    let digest = hex::encode(Sha256::digest(&wasm));
    browser
        .client
        .goto(&format!("{}/#/queue/jobs", host.url))
        .await
        .unwrap();
    let table = browser
        .wait_text("#consumer-table", "the batches", |t| {
            t.contains(" ok, 0 failed")
        })
        .await;
    assert!(table.contains(&digest[..12]), "{table}");
    assert!(table.contains("p50 ") && table.contains(" ms"), "{table}");
    assert!(!table.contains("p50 –"), "{table}");
    browser.shot("07-consumer").await;

    // Components: the loaded version and its load.
    browser.click("#nav-components").await;
    let shown = browser
        .wait_text(
            r#"tr[data-component="worker"] td.digest"#,
            "the digest",
            |t| t.len() == 64,
        )
        .await;
    assert_eq!(shown, digest);
    let row = browser
        .text(r#"tr[data-component="worker"]"#)
        .await
        .unwrap();
    assert!(row.contains("consumer of jobs"), "{row}");
    assert!(
        row.contains("(compiled)") || row.contains("(cache)"),
        "{row}"
    );
    assert!(
        browser
            .text("#last-reload")
            .await
            .unwrap()
            .contains("No reload")
    );
    browser.click("#reload").await;
    browser
        .wait_text("#reload-result", "the report", |t| {
            t.contains("unchanged: worker")
        })
        .await;
    browser
        .wait_text("#last-reload", "the last reload", |t| {
            t.contains("unchanged: worker")
        })
        .await;

    // A reload whose component does not load: its error shows, the old version keeps serving.
    std::fs::write(dir.path().join("worker.wasm"), b"not a component").unwrap();
    browser.click("#reload").await;
    browser
        .wait_text("#reload-result", "the failure", |t| {
            t.contains("failed: worker")
        })
        .await;
    let error = browser
        .wait_text(
            r#"tr[data-component="worker"] td.error-cell"#,
            "the load error",
            |t| !t.is_empty(),
        )
        .await;
    assert!(error.contains("worker"), "{error}");
    let listed = browser
        .wait_text("#reload-errors", "the reload's errors", |t| {
            t.starts_with("worker: ")
        })
        .await;
    assert!(listed.contains(&error), "{listed} / {error}");
    assert_eq!(
        browser
            .text(r#"tr[data-component="worker"] td.digest"#)
            .await
            .unwrap(),
        digest
    );
    browser.shot("08-components").await;

    // Forgetting the token brings the prompt back.
    browser.click("#forget-token").await;
    browser
        .wait("the token prompt again", || async {
            browser.displayed("#token-prompt").await.then_some(())
        })
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_have_content_types_and_cache_headers() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(dir.path());
    let http = reqwest::Client::new();
    let page = http.get(&host.url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-frame-options"], "DENY");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );

    let again = http
        .get(&host.url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    for (name, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
    ] {
        let start = html.find(&format!("/dashboard/{name}?v=")).unwrap();
        let end = start + html[start..].find('"').unwrap();
        let url = format!("{}{}", host.url, &html[start..end]);
        let asset = http.get(&url).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{url}");
        assert_eq!(asset.headers()["content-type"], content_type);
        assert_eq!(
            asset.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let stale = http
            .get(format!("{}/dashboard/{name}?v=old", host.url))
            .send()
            .await
            .unwrap();
        assert_eq!(stale.headers()["cache-control"], "no-cache", "{name}");
    }

    let api = Api::new(&host.url, Some(TOKEN));
    let summary = api
        .request(reqwest::Method::GET, "/dashboard/api/summary")
        .send()
        .await
        .unwrap();
    assert_eq!(summary.headers()["content-type"], "application/json");
    assert_eq!(summary.headers()["cache-control"], "no-store");
    let summary: Value = summary.json().await.unwrap();
    assert_eq!(summary["result"]["totals"]["queues"], 4);
    let missing = api
        .request(reqwest::Method::GET, "/dashboard/api/queues/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_queues_stay_usable() {
    let _one_browser = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = (0..1000).fold(Manifest::new(), |manifest, i| {
        manifest.queue(format!("q{i:04}").as_str())
    });
    let host = HostRun::new(&manifest.write(dir.path())).start();
    let api = Api::new(&host.url, None);
    api.send("q0500", json!({ "body": "x", "content_type": "text" }))
        .await;

    // The summary of every queue, and when its sample was taken.
    let summary = || async {
        let body = api
            .request(reqwest::Method::GET, "/dashboard/api/summary")
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let at_ms = serde_json::from_slice::<Value>(&body).unwrap()["result"]["at_ms"]
            .as_u64()
            .unwrap();
        (body, at_ms)
    };
    // Its size and time, each time from a fresh sample.
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (body, _) = summary().await;
        sizes.push((body.len(), started.elapsed()));
        tokio::time::sleep(Duration::from_millis(1600)).await;
    }
    println!("summary of 1000 queues: {sizes:?} (bytes, time)");
    for (bytes, took) in &sizes {
        assert!(*bytes < 400_000, "{bytes} bytes");
        assert!(*took < Duration::from_secs(2), "{took:?}");
    }
    // Pollers share one sample: a second request right after the first gets the same bytes,
    // unless the first got a sample about to expire (then the second's is ~1.5 s newer).
    let (first, first_at) = summary().await;
    let (second, second_at) = summary().await;
    assert!(
        first == second || second_at >= first_at + 1400,
        "two samples {first_at} and {second_at} ms within one sampling period"
    );

    let browser = Browser::start("thousand").await;
    let started = Instant::now();
    browser.client.goto(&host.url).await.unwrap();
    browser
        .wait("1000 rows", || async {
            (browser.count("#queue-rows tr").await == 1000).then_some(())
        })
        .await;
    println!(
        "1000 queues rendered {:?} after navigation",
        started.elapsed()
    );
    browser
        .wait_text(r#"tr[data-queue="q0500"] td.backlog"#, "1", |t| t == "1")
        .await;
    browser.shot("01-all").await;
    browser.type_into("#filter", "q0999").await;
    browser
        .wait("one row", || async {
            (browser.count("#queue-rows tr").await == 1).then_some(())
        })
        .await;
    let note = browser.text("#rows-note").await.unwrap();
    assert_eq!(note, "1 of 1000 queues");
    // Sorting by backlog puts the only queue with messages first.
    browser.find("#filter").await.clear().await.unwrap();
    browser.click(r#"th[data-key="backlog"]"#).await;
    browser
        .wait_text("#queue-rows tr:first-child td.name", "q0500", |t| {
            t == "q0500"
        })
        .await;
    browser.shot("02-sorted").await;
    browser.close().await;
}
