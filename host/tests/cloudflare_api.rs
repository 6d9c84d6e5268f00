//! Cloudflare's Queues REST API on a real `wasmq run`: the official Cloudflare Python SDK against
//! it (`cloudflare_sdk.py`, its responses validated strictly against the SDK's typed models),
//! and raw HTTP for the shapes and refusals the SDK does not show. Bad input stores nothing.
//!
//! The SDK's Python comes from `WASMQ_CLOUDFLARE_PYTHON` (`scripts/test.sh` makes a venv with
//! the pinned SDK and sets it), else `python3`, which must be able to `import cloudflare`.

pub mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use common::{Component, Consumer, HostProcess, HostRun, Manifest, Queue, Table, guest_path};

const TOKEN: &str = "local-test-token";

/// A host with a token, the pull queue `jobs` and the queue `worked` consumed by `worker`.
fn start() -> HostProcess {
    let manifest = Manifest::new()
        .host("api_token", TOKEN)
        .queue(Queue::new("jobs").pull_consumer(Table::new().set("max_retries", 5u32)))
        .queue("worked")
        .component(Component::new("worker", guest_path("worker")).consumer(Consumer::on("worked")));
    HostRun::manifest(&manifest).start()
}

fn python() -> String {
    std::env::var("WASMQ_CLOUDFLARE_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn the_official_cloudflare_sdk_works_against_the_host() {
    let host = start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cloudflare_sdk.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&host.url)
        .arg(TOKEN)
        .output()
        .expect(
            "run the Cloudflare SDK script (set WASMQ_CLOUDFLARE_PYTHON or run scripts/test.sh)",
        );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed\n{stdout}\n{stderr}\nhost log:\n{}",
        host.log_text()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

/// One raw request: method, path (under the host), optional JSON text, and the headers.
async fn call(
    client: &reqwest::Client,
    host: &HostProcess,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client.request(method, format!("{}{path}", host.url));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    if let Some(body) = body {
        // No content-type header: the body is read as JSON anyway.
        request = request.body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::too_many_lines,
    reason = "one request and its expected answer per refusal code, in the order of the API reference"
)]
async fn raw_requests_get_cloudflares_shapes_and_precise_refusals() {
    let host = start();
    let client = reqwest::Client::new();
    let bearer = format!("bearer {TOKEN}"); // the scheme in lower case is accepted
    let base = "/client/v4/accounts/acc/queues";
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    // Refusals, each in Cloudflare's envelope with its code; none stores anything.
    let cases: &[(&str, &str, u16, u64)] = &[
        (
            "/jobs/messages",
            r#"{"body": "x", "delay_seconds": -1}"#,
            400,
            10203,
        ),
        (
            "/jobs/messages",
            r#"{"body": "x", "delay_seconds": 1.5}"#,
            400,
            10203,
        ),
        (
            "/jobs/messages",
            r#"{"body": "x", "delay_seconds": "5"}"#,
            400,
            10203,
        ),
        (
            "/jobs/messages",
            r#"{"body": "x", "delay_seconds": 86401}"#,
            400,
            10203,
        ),
        (
            "/jobs/messages",
            r#"{"body": "x", "content_type": "v8"}"#,
            400,
            10203,
        ),
        ("/jobs/messages", r#"{"content_type": "text"}"#, 400, 10207),
        (
            "/jobs/messages",
            r#"{"body": 1, "content_type": "text"}"#,
            400,
            10207,
        ),
        ("/jobs/messages", r#"{"body": "#, 400, 10208),
        (
            "/jobs/messages",
            &format!(
                r#"{{"body": "{}", "content_type": "text"}}"#,
                "x".repeat(128_001)
            ),
            413,
            10204,
        ),
        ("/jobs/messages/batch", r#"{"messages": []}"#, 400, 10206),
        ("/nope/messages", r#"{"body": 1}"#, 404, 10104),
        ("/worked/messages/pull", "", 409, 10252),
        ("/jobs/purge", "{}", 400, 10207),
        ("/jobs/nothing-here", "{}", 404, 7003),
    ];
    for &(tail, body, status, code) in cases {
        let (got, value, headers) = call(
            &client,
            &host,
            post.clone(),
            &format!("{base}{tail}"),
            Some(body),
            Some(&bearer),
        )
        .await;
        assert_eq!(
            (got, &value["errors"][0]["code"]),
            (status, &json!(code)),
            "{tail} {body}: {value}"
        );
        assert_eq!(
            (&value["success"], &value["result"]),
            (&json!(false), &Value::Null)
        );
        if got == 409 {
            assert_eq!(headers["x-should-retry"], "false");
        }
    }
    let (_, jobs, _) = call(
        &client,
        &host,
        get.clone(),
        &format!("{base}/jobs"),
        None,
        Some(&bearer),
    )
    .await;
    assert_eq!(jobs["result"]["queue_name"], "jobs");
    let id = jobs["result"]["queue_id"].as_str().unwrap().to_owned();
    let (_, peeked, _) = call(
        &client,
        &host,
        post.clone(),
        &format!("{base}/{id}/messages/peek"),
        Some(""),
        Some(&bearer),
    )
    .await;
    assert_eq!(
        peeked["result"]["messages"],
        json!([]),
        "a refused request stored something"
    );

    // Without a token, or with another one: 401 in Cloudflare's envelope.
    for auth in [None, Some("Bearer nope"), Some("Basic bG9jYWw=")] {
        let (status, value, _) = call(&client, &host, get.clone(), base, None, auth).await;
        assert_eq!(
            (status, &value["errors"][0]["code"]),
            (401, &json!(10000)),
            "{auth:?}"
        );
    }

    // A push with no content-type header and no content type: JSON, as in a Worker; an empty
    // pull body takes the defaults (5 messages, the queue's visibility timeout).
    let (status, pushed, _) = call(
        &client,
        &host,
        post.clone(),
        &format!("{base}/{id}/messages/batch"),
        Some(r#"{"messages": [{"body": {"n": 1}}, {"body": "t", "content_type": "text"}], "delay_seconds": 0}"#),
        Some(&bearer),
    )
    .await;
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["result"]["metadata"]["metrics"]["backlog_count"], 2);
    let (_, pulled, _) = call(
        &client,
        &host,
        post.clone(),
        &format!("{base}/jobs/messages/pull"),
        Some(""),
        Some(&bearer),
    )
    .await;
    let messages = pulled["result"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{pulled}");
    assert_eq!(messages[0]["metadata"]["CF-Content-Type"], "json");
    assert_eq!(
        messages[0]["body"], "eyJuIjoxfQ==",
        "json bodies are base64 of the JSON text"
    );
    assert_eq!(messages[1]["metadata"]["CF-Content-Type"], "text");
    assert_eq!(messages[1]["body"], "t");

    // wasmq's own API shows the pull queue's own consumer settings, not push defaults.
    let (_, own, _) = call(
        &client,
        &host,
        get.clone(),
        "/queues/jobs",
        None,
        Some(&bearer),
    )
    .await;
    assert_eq!(
        own["result"]["consumer"],
        json!({"type": "http_pull", "visibility_timeout_ms": 30000, "max_retries": 5, "retry_delay": 0})
    );
}
