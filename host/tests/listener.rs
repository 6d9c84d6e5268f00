//! The real `host` binary's HTTP listener against clients that hold connections without using
//! them, and the JSON envelope on every refusal.

pub mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::{HostProcess, HostRun, Manifest};

/// `wasmq run` on a manifest with one queue, `jobs`, with its open-file limit (soft and hard)
/// lowered to `files`.
fn host_with_file_limit(files: u32) -> HostProcess {
    HostRun::manifest(&Manifest::new().queue("jobs"))
        .file_limit(files)
        .start()
}

/// 1000 connections that never send a byte, against a host allowed 512 open files (so at most
/// 256 connections): the API still answers at once, because the listener closes the idle
/// connections that have waited longest to make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_do_not_lock_the_api_out() {
    let host = host_with_file_limit(512);
    let addr = host.url.trim_start_matches("http://").to_owned();

    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/queues", host.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the API did not answer: {e}\n{}", host.log_text()));
    assert_eq!(response.status(), 200);
    let answered = started.elapsed();
    assert!(
        answered < Duration::from_secs(3),
        "answered after {answered:?}"
    );
    assert!(
        host.log_text().contains("connection limit reached"),
        "{}",
        host.log_text()
    );
    // The oldest idle connections were closed to make room.
    let mut first = idle.remove(0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut first, &mut byte),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the oldest idle connection is still open: {read:?}"
    );
}

/// Refusals that axum would answer in plain text (a wrong method, a malformed query) come in
/// the JSON envelope too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_json_envelope() {
    let host = host_with_file_limit(4096);
    let client = reqwest::Client::new();
    let cases = [
        (
            reqwest::Method::DELETE,
            "/queues",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::PUT,
            "/queues/jobs/pause",
            405,
            "method_not_allowed",
        ),
        (
            reqwest::Method::GET,
            "/queues/jobs/messages?limit=lots",
            400,
            "invalid_limit",
        ),
        (reqwest::Method::GET, "/no/such/path", 404, "not_found"),
    ];
    for (method, path, status, code) in cases {
        let response = client
            .request(method.clone(), format!("{}{path}", host.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON: {e}"));
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["errors"][0]["code"], code, "{method} {path}: {body}");
    }
}
