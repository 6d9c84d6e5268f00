//! `host bench consumer --dashboard-pollers N`: what serving the dashboard costs the consumer
//! path. The throughput run is repeated with the HTTP API serving the broker and N clients
//! asking for `/dashboard/api/summary` at the page's refresh rate (as N open browsers on the
//! queues page would), alternating with runs without them, in the same process on the same
//! kind of store; the report gives the ratio of the two throughputs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Served;
use crate::engine::{Broker, QueueSettings};

/// The dashboard load to measure.
#[derive(Debug, Clone)]
pub struct DashboardLoad {
    /// Clients polling the summary at once.
    pub pollers: u32,
    /// How often each asks (the page asks every 2 s).
    pub interval: Duration,
    /// Idle queues added next to the benchmark's, so that the summary has rows to build.
    pub queues: u32,
    /// Pairs of runs (without, then with) per `max_concurrency`.
    pub rounds: u32,
}

/// The API served on a loopback port with pollers asking for the summary.
pub(super) struct Serving {
    stop_pollers: watch::Sender<bool>,
    served: Served,
    pollers: Vec<JoinHandle<Result<(u64, u64)>>>,
}

/// Creates `load.queues` idle queues in `broker` (in every run, with or without pollers, so
/// that both measure the same store).
async fn add_idle_queues(broker: &dyn Broker, load: &DashboardLoad) -> Result<()> {
    for i in 0..load.queues {
        broker
            .create_queue(&format!("idle-{i:05}"), QueueSettings::default())
            .await?;
    }
    Ok(())
}

/// Prepares a run's store for `dashboard` (the idle queues) and, when `serve`, starts
/// serving the API to the pollers.
pub(super) async fn prepare(
    broker: &Arc<dyn Broker>,
    dashboard: Option<(&DashboardLoad, bool)>,
) -> Result<Option<Serving>> {
    let Some((load, serve)) = dashboard else {
        return Ok(None);
    };
    add_idle_queues(&**broker, load).await?;
    Ok(if serve {
        Some(Serving::start(broker.clone(), load).await?)
    } else {
        None
    })
}

impl Serving {
    /// Serves the API for `broker` and starts `load.pollers` pollers, spread over the interval
    /// as independent browsers would be.
    async fn start(broker: Arc<dyn Broker>, load: &DashboardLoad) -> Result<Self> {
        let served = Served::start(broker, Default::default(), Default::default(), 1024).await?;
        let url = format!("{}/dashboard/api/summary", served.base);
        let (stop_pollers, pollers_stopped) = watch::channel(false);
        let pollers = (0..load.pollers)
            .map(|i| {
                let offset = load.interval * i / load.pollers.max(1);
                tokio::spawn(poll(
                    url.clone(),
                    offset,
                    load.interval,
                    pollers_stopped.clone(),
                ))
            })
            .collect();
        Ok(Self {
            stop_pollers,
            served,
            pollers,
        })
    }

    /// Stops the pollers (each after its request in progress), then the server; returns the
    /// requests made and the bytes received.
    pub(super) async fn stop(self) -> Result<(u64, u64)> {
        self.stop_pollers.send(true)?;
        let mut total = (0, 0);
        for poller in self.pollers {
            let (requests, bytes) = poller.await??;
            total = (total.0 + requests, total.1 + bytes);
        }
        self.served.stop().await;
        Ok(total)
    }
}

/// Asks for `url` every `interval` (first after `offset`) until stopped.
async fn poll(
    url: String,
    offset: Duration,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) -> Result<(u64, u64)> {
    let client = reqwest::Client::new();
    let mut next = tokio::time::Instant::now() + offset;
    let (mut requests, mut bytes) = (0, 0);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            _ = stopped.wait_for(|stop| *stop) => return Ok((requests, bytes)),
        }
        let response = client
            .get(&url)
            .send()
            .await
            .context("polling the summary")?;
        ensure!(
            response.status().is_success(),
            "the summary answered {}",
            response.status()
        );
        bytes += response.bytes().await?.len() as u64;
        requests += 1;
        next += interval;
    }
}
