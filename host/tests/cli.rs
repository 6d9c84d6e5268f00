//! End-to-end through the real `wasmq` binary: `wasmq run` on a manifest with real guest
//! components, `wasmq send` and `wasmq queues` against it over loopback HTTP, raw HTTP calls for
//! the API's error cases, and Ctrl-C.

pub mod common;

use std::io::Read;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::{Value, json};

use common::{Component, Consumer, HOST, HostProcess, HostRun, Manifest, Queue, Table, guest_path};

/// Queues `incoming`, `jobs`, `jobs-dlq` and the pull queue `pulled`; `fanout` forwards
/// `incoming` to `jobs`, which `worker` consumes.
fn manifest() -> Manifest {
    let pulled = Table::new()
        .set("visibility_timeout_ms", 400u32)
        .set("max_retries", 1u32)
        .set("dead_letter_queue", "jobs-dlq");
    Manifest::new()
        .queue("incoming")
        .queue("jobs")
        .queue("jobs-dlq")
        .queue(Queue::new("pulled").pull_consumer(pulled))
        .component(
            Component::new("fanout", guest_path("fanout"))
                .producer("OUT", "jobs")
                .consumer(Consumer::on("incoming").max_batch_timeout(0)),
        )
        .component(
            Component::new("worker", guest_path("worker")).consumer(
                Consumer::on("jobs")
                    .max_batch_timeout(0)
                    .dead_letter_queue("jobs-dlq"),
            ),
        )
}

/// A `wasmq run` child on [`manifest`].
fn start() -> HostProcess {
    HostRun::manifest(&manifest()).start()
}

/// Queue `name` as `wasmq queues info NAME --json` shows it.
fn queue_info(host: &HostProcess, name: &str) -> Value {
    let out = host.cli(&["queues", "info", name, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Ctrl-C, for tests that do not check how the host exits; the exit status (within 30 s).
fn interrupt(mut host: HostProcess) -> ExitStatus {
    host.signal("-INT");
    host.wait_exit(Duration::from_secs(30))
}

#[test]
fn a_message_goes_from_host_send_through_fanout_to_the_worker() {
    let mut host = start();
    let out = host.cli(&["send", "incoming", "hello wasmq"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent to incoming"));

    let line = host.wait_log("hello wasmq");
    assert!(line.contains("worker"), "{line}");
    host.wait_queue("jobs", "acked", |q| q["metrics"]["acked"] == 1);
    assert_eq!(queue_info(&host, "incoming")["metrics"]["acked"], 1);
    assert_eq!(queue_info(&host, "jobs")["metrics"]["backlog"]["count"], 0);

    let list = host.cli(&["queues", "list"]);
    let table = String::from_utf8_lossy(&list.stdout);
    for queue in ["incoming", "jobs", "jobs-dlq"] {
        assert!(table.contains(queue), "{table}");
    }
    // Ctrl-C must stop the host cleanly.
    host.stop("-INT");
}

#[test]
fn cli_errors_are_one_clear_line_and_a_non_zero_exit() {
    let host = start();
    let out = host.cli(&["send", "nope", "x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("queue `nope` does not exist (unknown_queue)"),
        "{stderr}"
    );

    let out = host.cli(&["send", "jobs", "{not json", "--content-type", "json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));

    let out = host.cli(&["send", "jobs", "x", "--delay", "86401"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_delay"));
    assert_eq!(
        queue_info(&host, "jobs")["metrics"]["sent"],
        0,
        "refused sends store nothing"
    );
    interrupt(host);
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one request and its expected code per kind of bad input"
)]
async fn http_api_publishes_and_refuses_bad_input_with_stable_codes() {
    let host = start();
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", host.url))
            .json(&body)
            .send()
    };

    // A delayed message so the consumers leave it in the queue.
    let r = post(
        "/queues/jobs-dlq/messages",
        json!({"body": {"n": 1}, "content_type": "json", "delay_seconds": 600}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], true);
    assert_eq!(v["result"]["count"], 1);

    let batch = json!({"messages": [
        {"body": "text", "content_type": "text"},
        {"body": "aGVsbG8=", "content_type": "bytes"},
    ], "delay_seconds": 600});
    let r = post("/queues/jobs-dlq/messages/batch", batch)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let cases = [
        (
            "/queues/nope/messages",
            json!({"body": 1}),
            404,
            "unknown_queue",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": "x".repeat(128_001), "content_type": "text"}),
            413,
            "message_too_large",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": 1, "content_type": "text"}),
            400,
            "invalid_body",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": 1, "delay_seconds": 86_401}),
            400,
            "invalid_delay",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"bdy": 1}),
            400,
            "invalid_request",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"content_type": "text"}),
            400,
            "invalid_body",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": 1, "delay_seconds": -1}),
            400,
            "invalid_delay",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": 1, "delay_seconds": 2.5}),
            400,
            "invalid_delay",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": 1, "delay_seconds": "5"}),
            400,
            "invalid_delay",
        ),
        (
            "/queues/jobs-dlq/messages",
            json!({"body": 1, "content_type": "xml"}),
            400,
            "invalid_content_type",
        ),
        (
            "/queues/jobs-dlq/messages/batch",
            json!({"messages": []}),
            400,
            "empty_batch",
        ),
        (
            "/queues/jobs-dlq/messages/batch",
            json!({"messages": vec![json!({"body": 1}); 101]}),
            400,
            "too_many_messages",
        ),
    ];
    for (path, body, status, code) in cases {
        let r = post(path, body).await.unwrap();
        assert_eq!(r.status(), status, "{path} {code}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["errors"][0]["code"], code, "{v}");
    }
    // Over the request limit: refused from the declared length, before the body is read.
    let (status, body) = raw_post_head(&host.url, "/queues/jobs-dlq/messages", 3 << 20);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request_too_large"), "{body}");

    let info: Value = client
        .get(format!("{}/queues/jobs-dlq", host.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["result"]["metrics"]["backlog"]["count"], 3,
        "only good sends are stored"
    );
    assert_eq!(info["result"]["metrics"]["delayed"], 3);
    interrupt(host);
}

#[test]
fn a_bad_manifest_names_the_file_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.toml");
    std::fs::write(
        &manifest,
        "[queues.jobs]\n\n[components.worker]\nsource = \"w.wasm\"\nconsumer = { queue = \"jobs\", max_batch_size = 101 }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("w.wasm"), b"\0asm").unwrap();
    let out = HostRun::new(&manifest).command().output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manifest.toml:5:"), "{stderr}");
    assert!(
        stderr.contains("components.worker.consumer.max_batch_size"),
        "{stderr}"
    );
    // The error's line, then the manifest's line with a caret under the value.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert_eq!(
        lines[1],
        "    5 | consumer = { queue = \"jobs\", max_batch_size = 101 }"
    );
    assert_eq!(lines[2].find('^'), lines[1].find("101"), "{stderr}");
}

/// A read command whose output is cut short (`| head -c0`) stops quietly, as Unix tools do:
/// no panic, no exit status 101.
#[test]
fn a_closed_pipe_stops_a_read_command_quietly() {
    let host = start();
    for command in [
        "queues list",
        "queues list --json",
        "queues info jobs",
        "queues info jobs --json",
        "messages peek jobs",
        "messages peek jobs --json",
        "schema",
        "completions bash",
        "--help",
    ] {
        let script = format!(
            "set -o pipefail; \"$HOST\" {command} | head -c0; echo \"status ${{PIPESTATUS[0]}}\""
        );
        let out = Command::new("bash")
            .args(["-c", &script])
            .env("HOST", HOST)
            .env("WASMQ_URL", &host.url)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
        assert!(
            stdout.contains("status 0") || stdout.contains("status 141"),
            "{command}: {stdout} {stderr}"
        );
    }
}

/// The log says what each batch did (one line per batch), warns for every dead-letter move
/// naming the message, groups guest output under its batch, and can be JSON for machines.
#[test]
fn the_log_tells_each_batch_and_each_dead_letter_move_in_json() {
    let scripted = Consumer::on("jobs")
        .max_batch_timeout(0)
        .max_retries(0)
        .dead_letter_queue("jobs-dlq");
    let manifest = Manifest::new()
        .queue("jobs")
        .queue("jobs-dlq")
        .component(Component::new("scripted", guest_path("scripted")).consumer(scripted));
    let host = HostRun::manifest(&manifest)
        .env("WASMQ_LOG_FORMAT", "json")
        .start();
    let out = host.cli(&["send", "jobs", "print:hello;fail", "--content-type", "text"]);
    assert!(out.status.success(), "{out:?}");
    host.wait_log("moved to the dead-letter queue");
    host.wait_log("\"message\":\"batch\"");
    // Guests' lines reach the log through a thread of their own, a few milliseconds later than
    // the host's events.
    host.wait_log("\"message\":\"hello\"");
    let lines: Vec<Value> = host
        .log_text()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let batch = lines
        .iter()
        .find(|l| l["fields"]["message"] == "batch")
        .expect("a batch line");
    assert_eq!(batch["level"], "INFO");
    assert_eq!(
        (
            &batch["fields"]["queue"],
            &batch["fields"]["messages"],
            &batch["fields"]["dead_lettered"]
        ),
        (&json!("jobs"), &json!(1), &json!(1)),
        "{batch}"
    );
    let moved = lines
        .iter()
        .find(|l| l["fields"]["message"] == "retries exhausted; moved to the dead-letter queue")
        .expect("a dead-letter line");
    assert_eq!(moved["level"], "WARN");
    assert_eq!(moved["fields"]["message_id"].as_str().unwrap().len(), 32);
    let hello = lines
        .iter()
        .find(|l| l["fields"]["message"] == "hello")
        .expect("the guest's output");
    assert_eq!(hello["span"]["name"], "batch", "{hello}");
    assert_eq!(hello["span"]["queue"], "jobs", "{hello}");
}

/// A component that is not wasm, or of the wrong world, stops the start with an error that
/// names the manifest's line and key and the file.
#[test]
fn a_bad_component_stops_the_start_with_where_and_why() {
    for (source, says) in [
        (guest_path("webhook"), "is not a consumer"),
        (std::path::PathBuf::from("not-wasm.txt"), "not-wasm.txt"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("not-wasm.txt"), "hello").unwrap();
        let manifest = dir.path().join("manifest.toml");
        std::fs::write(
            &manifest,
            format!(
                "[host]\ndata_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n\n[queues.jobs]\n\n[components.worker]\nsource = \"{}\"\nconsumer = {{ queue = \"jobs\" }}\n",
                source.display()
            ),
        )
        .unwrap();
        let out = HostRun::new(&manifest).command().output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("manifest.toml:8:10: components.worker.source: "),
            "{stderr}"
        );
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// The API listens before the components are built and compiled: a send is accepted at once,
/// a producer route answers 503 `starting` meanwhile, and when the build fails the host exits
/// non-zero without losing what it accepted — the next start consumes it.
#[test]
fn sends_are_accepted_while_components_build_and_outlive_a_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |build: Option<&str>| {
        let mut worker =
            Component::new("worker", guest_path("worker")).consumer(Consumer::on("jobs"));
        if let Some(build) = build {
            worker = worker.set("build", build);
        }
        Manifest::new()
            .host("data_dir", "data")
            .queue("jobs")
            .component(
                Component::new("hook", guest_path("webhook"))
                    .route("/hook")
                    .producer("JOBS", "jobs"),
            )
            .component(worker)
            .write(dir.path())
    };
    // The build waits for the test's `go` (or for the folder to go, should the test fail
    // first), then fails.
    let path = manifest(Some(
        "while [ ! -f go ] && [ -f manifest.toml ]; do sleep 0.05; done; echo broken; false",
    ));
    let mut host = HostRun::new(&path)
        .spawn()
        .listening(Duration::from_secs(30));
    let out = host.cli(&["send", "jobs", "print:kept while starting"]);
    assert!(out.status.success(), "{out:?}");
    // The route answers before reading the body.
    let (status, answer) = raw_post_head(&host.url, "/hook", 100);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"starting\""), "{answer}");
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert!(!host.wait_exit(Duration::from_secs(60)).success());
    let log = host.log_text();
    assert!(log.contains("broken"), "{log}");
    assert!(!log.contains("wasmq host ready"), "{log}");

    let host = HostRun::new(&manifest(None)).start();
    host.wait_log("kept while starting");
    let answer: Value =
        serde_json::from_str(&host.post_json("/hook", &json!("print:then served"))).unwrap();
    assert_eq!(answer["queued"], 1, "{answer}");
    host.wait_log("then served");
}

/// With `--watch`, a start whose build fails keeps the host up (and what it accepts) and loads
/// the component once a watched source changes and the build succeeds.
#[test]
fn with_watch_a_failed_build_at_start_is_loaded_once_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let build = format!(
        "test -f fixed && cp {} worker.wasm",
        guest_path("worker").display()
    );
    let path = Manifest::new()
        .host("data_dir", "data")
        .queue("jobs")
        .component(
            Component::new("worker", dir.path().join("worker.wasm"))
                .consumer(Consumer::on("jobs"))
                .set("build", build)
                .set("watch", vec!["fixed"]),
        )
        .write(dir.path());
    let host = HostRun::new(&path)
        .watch()
        .spawn()
        .listening(Duration::from_secs(30));
    host.wait_log("still running: --watch loads the component once it is fixed");
    let out = host.cli(&["send", "jobs", "print:waited for the fix"]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(dir.path().join("fixed"), "").unwrap();
    host.wait_log("waited for the fix");
}

/// Sends only the head of a POST declaring `length` body bytes, plus a few of them, and reads
/// the answer: the server must answer without waiting for the rest.
fn raw_post_head(url: &str, path: &str, length: usize) -> (u16, String) {
    use std::io::Write;
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{{\"body\": \"xxxx"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one operator session told in order, each step checked through the CLI"
)]
fn operators_pause_purge_peek_replay_and_read_metrics() {
    let mut host = start();
    let ok = |args: &[&str]| {
        let out = host.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // Three messages wait (delayed) in the dead-letter queue, which has no consumer.
    for n in 0..3 {
        ok(&["send", "jobs-dlq", &format!("dead {n}"), "--delay", "600"]);
    }
    let peeked: Vec<Value> =
        serde_json::from_str(&ok(&["messages", "peek", "jobs-dlq", "--json"])).unwrap();
    let bodies: Vec<_> = peeked.iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["dead 0", "dead 1", "dead 2"]);
    assert!(peeked.iter().all(|m| m["attempts"] == 0));
    assert_eq!(
        queue_info(&host, "jobs-dlq")["metrics"]["backlog"]["count"],
        3,
        "peek leases nothing"
    );

    // Replay moves them to `incoming`, visible at once: fanout forwards them, worker acks them.
    assert!(ok(&["dlq", "replay", "jobs-dlq", "--to", "incoming"]).contains("replayed 3"));
    host.wait_queue("jobs", "acked 3", |q| q["metrics"]["acked"] == 3);
    assert_eq!(
        queue_info(&host, "jobs-dlq")["metrics"]["backlog"]["count"],
        0
    );

    // A paused queue accepts messages and delivers none until resumed.
    ok(&["queues", "pause", "jobs"]);
    assert_eq!(queue_info(&host, "jobs")["paused"], true);
    ok(&["send", "incoming", "while paused"]);
    host.wait_queue("incoming", "acked 4", |q| q["metrics"]["acked"] == 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(queue_info(&host, "jobs")["metrics"]["backlog"]["count"], 1);
    assert_eq!(queue_info(&host, "jobs")["metrics"]["acked"], 3);
    ok(&["queues", "resume", "jobs"]);
    host.wait_queue("jobs", "acked 4", |q| q["metrics"]["acked"] == 4);

    // Purge asks first (and refuses without a terminal), then deletes delayed messages too.
    ok(&["send", "jobs-dlq", "a", "--delay", "600"]);
    ok(&["send", "jobs-dlq", "b", "--delay", "600"]);
    let refused = host.cli(&["queues", "purge", "jobs-dlq"]);
    assert!(!refused.status.success());
    assert_eq!(
        queue_info(&host, "jobs-dlq")["metrics"]["backlog"]["count"],
        2
    );
    assert!(ok(&["queues", "purge", "jobs-dlq", "--force"]).contains("purged 2"));
    assert_eq!(
        queue_info(&host, "jobs-dlq")["metrics"]["backlog"]["count"],
        0
    );

    let out = host.cli(&["messages", "peek", "jobs", "--limit", "101"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_limit"));

    let metrics = host.get("/metrics");
    for line in [
        "# TYPE wasmq_messages_acked_total counter",
        "wasmq_messages_acked_total{queue=\"jobs\"} 4",
        "wasmq_messages_sent_total{queue=\"jobs-dlq\"} 5",
        "wasmq_queue_backlog_messages{queue=\"jobs-dlq\"} 0",
        "wasmq_queue_paused{queue=\"jobs\"} 0",
        "wasmq_queue_oldest_message_age_seconds{queue=\"jobs-dlq\"} 0.000",
        "# TYPE wasmq_consumer_failures_total counter",
        "# TYPE wasmq_consumer_batch_duration_seconds histogram",
        "wasmq_consumer_batches_total{component=\"worker\",queue=\"jobs\",result=\"failed\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    // Requests by route pattern (never the raw path) and status; the components' load times.
    for prefix in [
        "wasmq_http_request_duration_seconds_count{route=\"/queues/{queue}\",method=\"GET\",status=\"200\"} ",
        "wasmq_component_load_seconds{component=\"worker\"} ",
        "wasmq_component_load_seconds{component=\"fanout\"} ",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(prefix)),
            "missing {prefix:?} in\n{metrics}"
        );
    }
    // The worker's batches (at least one, at most one per acked message) are all counted.
    let value = |prefix: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(prefix));
        let line = line.unwrap_or_else(|| panic!("no {prefix:?} in\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let labels = "component=\"worker\",queue=\"jobs\"";
    let batches = value(&format!(
        "wasmq_consumer_batch_duration_seconds_count{{{labels}}} "
    ));
    assert!((1..=4).contains(&batches), "{batches} batches");
    assert_eq!(
        value(&format!(
            "wasmq_consumer_batches_total{{{labels},result=\"ok\"}} "
        )),
        batches
    );
    assert_eq!(
        value(&format!(
            "wasmq_consumer_batch_duration_seconds_bucket{{{labels},le=\"+Inf\"}} "
        )),
        batches
    );
    host.stop("-INT");
}

#[test]
fn with_an_api_token_every_route_requires_it() {
    let host = HostRun::manifest(&manifest().host("api_token", "s3cret")).start();
    let out = host.cli(&["queues", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("(unauthorized)"));
    let out = host.cli(&["send", "jobs", "x", "--token", "wrong"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("(unauthorized)"));

    let with_token = |args: &[&str]| {
        host.cli_command()
            .env("WASMQ_API_TOKEN", "s3cret")
            .args(args)
            .output()
            .unwrap()
    };
    let out = with_token(&["send", "jobs-dlq", "x", "--delay", "600"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = with_token(&["queues", "info", "jobs-dlq", "--json"]);
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["metrics"]["sent"], 1,
        "only the authorised send was stored"
    );

    let metrics = host.get("/metrics");
    assert!(metrics.contains("\"unauthorized\""), "{metrics}");
    interrupt(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one pull consumer's session told in order: lease, ack, retry, expiry, late ack"
)]
async fn pull_consumers_lease_ack_retry_and_expire_over_http() {
    let host = start();
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = client.post(format!("{}{path}", host.url)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let pull = |batch_size: u32, visibility: Option<u64>| {
        let mut body = json!({ "batch_size": batch_size });
        if let Some(ms) = visibility {
            body["visibility_timeout_ms"] = json!(ms);
        }
        post("/queues/pulled/messages/pull".into(), body)
    };
    let bodies = |v: &Value| -> Vec<(String, u64)> {
        v["result"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["body"].as_str().unwrap().to_owned(),
                    m["attempts"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let lease = |v: &Value, i: usize| {
        v["result"]["messages"][i]["lease_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let batch = json!({"messages": [
        {"body": "a", "content_type": "text"},
        {"body": "b", "content_type": "text"},
        {"body": "c", "content_type": "text"},
    ]});
    assert_eq!(
        post("/queues/pulled/messages/batch".into(), batch).await.0,
        200
    );

    let (status, first) = pull(2, Some(60_000)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(bodies(&first), [("a".into(), 1), ("b".into(), 1)]);
    assert_eq!(first["result"]["message_backlog_count"], 3);
    assert_eq!(lease(&first, 0).len(), 32);

    let settle = json!({
        "acks": [{"lease_id": lease(&first, 0)}],
        "retries": [{"lease_id": lease(&first, 1), "delay_seconds": 0}],
    });
    let (status, acked) = post("/queues/pulled/messages/ack".into(), settle).await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(
        (
            acked["result"]["ack_count"].as_u64(),
            acked["result"]["retry_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(acked["result"]["warnings"], json!([]));

    // The retried message goes behind the one already waiting, with its attempt counted.
    let (_, second) = pull(10, Some(60_000)).await;
    assert_eq!(bodies(&second), [("c".into(), 1), ("b".into(), 2)]);
    let settle = json!({"acks": [{"lease_id": lease(&second, 0)}, {"lease_id": "nonsense"}]});
    let (_, acked) = post("/queues/pulled/messages/ack".into(), settle).await;
    assert_eq!(acked["result"]["ack_count"], 1);
    assert!(
        acked["result"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("nonsense")
    );

    // An expired lease makes the message visible again with attempts + 1; a late ack still
    // deletes it (as Cloudflare documents), and the newer lease then finds it gone.
    let send_d = json!({"body": "d", "content_type": "text"});
    assert_eq!(post("/queues/pulled/messages".into(), send_d).await.0, 200);
    let (_, third) = pull(10, None).await; // the queue's visibility_timeout_ms: 400
    assert_eq!(bodies(&third), [("d".into(), 1)]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, fourth) = pull(10, Some(60_000)).await;
    assert_eq!(bodies(&fourth), [("d".into(), 2)]);
    let late = json!({"acks": [{"lease_id": lease(&third, 0)}]});
    let (_, acked) = post("/queues/pulled/messages/ack".into(), late).await;
    assert_eq!(
        (&acked["result"]["ack_count"], &acked["result"]["warnings"]),
        (&json!(1), &json!([]))
    );
    let newer = json!({"acks": [{"lease_id": lease(&fourth, 0)}]});
    let (_, acked) = post("/queues/pulled/messages/ack".into(), newer).await;
    assert_eq!(acked["result"]["ack_count"], 0);
    assert!(
        acked["result"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("no longer in the queue")
    );

    let (status, bad) = pull(101, None).await;
    assert_eq!(
        (status, bad["errors"][0]["code"].as_str()),
        (400, Some("invalid_lease"))
    );
    let (status, other) = post("/queues/jobs/messages/pull".into(), json!({})).await;
    assert_eq!(
        (status, other["errors"][0]["code"].as_str()),
        (409, Some("no_pull_consumer"))
    );
    let (status, _) = post("/queues/nope/messages/pull".into(), json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(post("/queues/pulled/pause".into(), json!({})).await.0, 200);
    let (status, paused) = pull(1, None).await;
    assert_eq!(
        (status, paused["errors"][0]["code"].as_str()),
        (409, Some("queue_paused"))
    );
    interrupt(host);
}

/// `wasmq compact` refuses the file of a running host, compacts a stopped host's file, and what
/// was stored is there on the next start; before any start it says there is nothing yet.
#[test]
fn compact_works_on_a_stopped_hosts_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest().write(dir.path());
    let compact = || {
        Command::new(HOST)
            .arg("compact")
            .arg(&path)
            .output()
            .unwrap()
    };
    let before_start = compact();
    assert!(!before_start.status.success());
    let stderr = String::from_utf8_lossy(&before_start.stderr);
    assert!(stderr.contains("the host has not run yet"), "{stderr}");

    let host = HostRun::new(&path).start();
    let sent = host.cli(&["send", "pulled", "kept"]);
    assert!(sent.status.success(), "{sent:?}");
    let refused = compact();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is a host running on it?"), "{stderr}");
    assert!(interrupt(host).success());

    let compacted = compact();
    let stdout = String::from_utf8_lossy(&compacted.stdout);
    assert!(compacted.status.success(), "{compacted:?}");
    assert!(stdout.starts_with("compacted "), "{stdout}");
    let host = HostRun::new(&path).start();
    assert_eq!(
        queue_info(&host, "pulled")["metrics"]["backlog"]["count"],
        1
    );
}
