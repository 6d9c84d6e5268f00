//! `wasmq bench http`: publishing through the real HTTP API over loopback keep-alive
//! connections, batches of 100, durable; pull / ack throughput; and single webhooks through
//! the `webhook` producer component on a route.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::{Served, histogram, print_latency, publish_over_http, tempdir};
use crate::engine::{self, Broker, QueueSettings, RedbOptions, Storage};
use crate::http::{self, ProducerRoute, ProducerRoutes};
use crate::manifest::PullConsumerConfig;
use crate::runtime::{ComponentOptions, ProducerComponent, Runtime, SendTarget};

/// The `webhook` component on `/hook`, queueing into `hooks`; no route if it is not built.
fn webhook_route(bench: &HttpBench, broker: &Arc<dyn Broker>) -> Result<ProducerRoutes> {
    let Ok(wasm) = std::fs::read(&bench.webhook) else {
        println!(
            "({} not built: no producer-route run)",
            bench.webhook.display()
        );
        return Ok(ProducerRoutes::default());
    };
    let options = ComponentOptions {
        send_target: Some(SendTarget {
            publisher: Arc::new(broker.clone()),
            bindings: Arc::new(BTreeMap::from([("JOBS".to_owned(), "hooks".to_owned())])),
        }),
        ..ComponentOptions::default()
    };
    let component = ProducerComponent::new(&Runtime::new()?, "webhook", &wasm, options)?;
    Ok(ProducerRoutes::new(vec![ProducerRoute {
        route: "/hook".parse().map_err(anyhow::Error::msg)?,
        component,
        requires_token: false,
        slots: Arc::new(tokio::sync::Semaphore::new(1000)),
    }]))
}

/// Posts `webhook_requests` single JSON webhooks to `/hook` over the bench's connections.
async fn webhooks(bench: &HttpBench, base: &str, broker: &Arc<dyn Broker>) -> Result<()> {
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..bench.connections {
        let url = format!("{base}/hook");
        let (requests, connections) = (bench.webhook_requests, bench.connections);
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut h = histogram();
            let mut n = c;
            while n < requests {
                let t = Instant::now();
                let response = client
                    .post(&url)
                    .body(json!({ "event": "push", "n": n }).to_string())
                    .send()
                    .await?;
                ensure!(
                    response.status().as_u16() == 202,
                    "webhook answered {}",
                    response.status()
                );
                // The whole answer, as a webhook sender reads it.
                response.bytes().await?;
                h.record(t.elapsed().as_micros().max(1) as u64)?;
                n += connections;
            }
            anyhow::Ok(h)
        }));
    }
    let mut h = histogram();
    for client in clients {
        h.add(client.await??)?;
    }
    let elapsed = started.elapsed();
    let sent = broker.metrics("hooks").await?.sent;
    ensure!(
        sent == bench.webhook_requests,
        "{sent} of {} queued",
        bench.webhook_requests
    );
    println!(
        "producer route (webhook component, a fresh instance per request, one durable message each): {:.0} requests/s ({sent} in {:.2} s)",
        sent as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    print_latency("webhook request", &h);
    Ok(())
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct HttpBench {
    /// Messages to publish.
    pub messages: u64,
    /// Concurrent keep-alive connections.
    pub connections: u64,
    /// The `webhook` producer component (skipped if the file is missing).
    pub webhook: PathBuf,
    /// Webhook requests (one JSON message each).
    pub webhook_requests: u64,
}

/// Serves the API on a loopback port and drives it with `connections` clients.
pub async fn run_http(bench: &HttpBench) -> Result<()> {
    let dir = tempdir()?;
    let path = dir.join("http.redb");
    let _ = std::fs::remove_file(&path);
    let broker = engine::open(Storage::redb(&path, RedbOptions::default())).await?;
    for queue in ["bench", "hooks"] {
        broker.create_queue(queue, QueueSettings::default()).await?;
    }
    let producers = webhook_route(bench, &broker)?;
    let wiring = http::Wiring {
        consumers: BTreeMap::from([(
            "bench".to_owned(),
            http::Attached::Pull(PullConsumerConfig {
                visibility_timeout_ms: 60_000,
            }),
        )]),
        ..http::Wiring::default()
    };
    let served = Served::start(
        broker.clone(),
        http::QueueConsumers::new(wiring),
        producers.clone(),
        10_000,
    )
    .await?;
    let base = served.base.clone();
    println!(
        "wasmq HTTP bench: {} messages in batches of 100 over {} keep-alive connections, durable",
        bench.messages, bench.connections
    );

    let started = Instant::now();
    let h = publish_over_http(&base, "bench", bench.messages, bench.connections).await?;
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
    if !producers.is_empty() {
        webhooks(bench, &base, &broker).await?;
    }
    served.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
