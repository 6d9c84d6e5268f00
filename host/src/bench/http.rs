//! `host bench http`: publishing through the real HTTP API over loopback keep-alive
//! connections, batches of 100, durable, and pull / ack throughput.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::{histogram, print_latency, tempdir};
use crate::engine::{Broker, QueueSettings, RedbBroker, RedbOptions};
use crate::http;
use crate::manifest::PullConsumerConfig;

/// What to measure.
#[derive(Debug, Clone)]
pub struct HttpBench {
    /// Messages to publish.
    pub messages: u64,
    /// Concurrent keep-alive connections.
    pub connections: u64,
}

/// Serves the API on a loopback port and drives it with `connections` clients.
pub async fn run_http(bench: &HttpBench) -> Result<()> {
    let dir = tempdir()?;
    let path = dir.join("http.redb");
    let _ = std::fs::remove_file(&path);
    let broker: Arc<dyn Broker> = Arc::new(RedbBroker::open(&path, RedbOptions::default())?);
    broker
        .create_queue("bench", QueueSettings::default())
        .await?;
    let pull = BTreeMap::from([(
        "bench".to_owned(),
        PullConsumerConfig {
            visibility_timeout_ms: 60_000,
        },
    )]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = http::router(http::ServeConfig {
        broker: broker.clone(),
        pull_queues: http::PullQueues::new(pull),
        token: None,
        producers: Default::default(),
        consumer_stats: Default::default(),
        reloader: None,
    });
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    println!(
        "wasmq HTTP bench: {} messages in batches of 100 over {} keep-alive connections, durable",
        bench.messages, bench.connections
    );

    let batches = bench.messages.div_ceil(100);
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..bench.connections {
        let base = base.clone();
        let connections = bench.connections;
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut h = histogram();
            let mut b = c;
            while b < batches {
                let messages: Vec<Value> = (0..100)
                    .map(|i| json!({ "body": { "n": b * 100 + i }, "content_type": "json" }))
                    .collect();
                let t = Instant::now();
                let response = client
                    .post(format!("{base}/queues/bench/messages/batch"))
                    .json(&json!({ "messages": messages }))
                    .send()
                    .await?;
                ensure!(
                    response.status().is_success(),
                    "publish failed: {}",
                    response.status()
                );
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                b += connections;
            }
            anyhow::Ok(h)
        }));
    }
    let mut h = histogram();
    for client in clients {
        h.add(client.await??)?;
    }
    let elapsed = started.elapsed();
    let sent = broker.metrics("bench").await?.sent;
    println!(
        "HTTP publish: {:.0} msgs/s ({sent} messages in {:.2} s)",
        sent as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    print_latency("batch publish", &h);

    // Pull 100 and ack them, until the queue is empty.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut acked = 0u64;
    loop {
        let pulled: Value = client
            .post(format!("{base}/queues/bench/messages/pull"))
            .json(&json!({ "batch_size": 100 }))
            .send()
            .await?
            .json()
            .await?;
        let leases: Vec<Value> = pulled["result"]["messages"]
            .as_array()
            .context("a pull answer without messages")?
            .iter()
            .map(|m| json!({ "lease_id": m["lease_id"] }))
            .collect();
        if leases.is_empty() {
            break;
        }
        let answer: Value = client
            .post(format!("{base}/queues/bench/messages/ack"))
            .json(&json!({ "acks": leases }))
            .send()
            .await?
            .json()
            .await?;
        acked += answer["result"]["ack_count"].as_u64().unwrap_or(0);
    }
    let elapsed = started.elapsed();
    ensure!(acked == sent, "pulled and acked {acked} of {sent}");
    println!(
        "HTTP pull + ack (batches of 100, one client): {:.0} msgs/s ({acked} messages in {:.2} s)",
        acked as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
