//! What the applied manifest wires to each queue: its consumer, a component (a push consumer,
//! Cloudflare's `worker` consumer) or HTTP pull clients (`http_pull`), and the components that
//! may send to it. The pull routes serve only queues with a pull consumer, and both APIs show
//! a queue's consumer with its own settings (a pull queue's lease, not push batching
//! defaults).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use crate::engine::ConsumerSettings;
use crate::manifest::{Manifest, PullConsumerConfig};

/// The consumer attached to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attached {
    /// A consumer component.
    Component {
        /// The component's name in the manifest.
        name: String,
        /// Its `max_concurrency`, if the manifest sets one.
        max_concurrency: Option<u32>,
    },
    /// Consumed over HTTP pull.
    Pull(PullConsumerConfig),
}

impl Attached {
    /// The consumer component's name, if a component consumes the queue.
    pub fn component(&self) -> Option<&str> {
        match self {
            Attached::Component { name, .. } => Some(name),
            Attached::Pull(_) => None,
        }
    }
}

/// What the applied manifest wires to the queues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    /// Queue → its consumer.
    pub consumers: BTreeMap<String, Attached>,
    /// Queue → the components bound to it (they may send to it), by name.
    pub producers: BTreeMap<String, Vec<String>>,
    /// When the manifest was applied.
    pub applied_at: Option<SystemTime>,
}

impl Wiring {
    /// What `manifest` wires, applied now.
    pub fn of(manifest: &Manifest) -> Self {
        let components = manifest.components.values().filter_map(|c| {
            let consumer = c.consumer.as_ref()?;
            let attached = Attached::Component {
                name: c.name.clone(),
                max_concurrency: consumer.max_concurrency,
            };
            Some((consumer.queue.clone(), attached))
        });
        let pulls = manifest
            .pull_consumers
            .iter()
            .map(|(queue, config)| (queue.clone(), Attached::Pull(*config)));
        let mut producers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in manifest.components.values() {
            for queue in c.bindings.values() {
                producers
                    .entry(queue.clone())
                    .or_default()
                    .push(c.name.clone());
            }
        }
        for names in producers.values_mut() {
            names.dedup();
        }
        Self {
            consumers: components.chain(pulls).collect(),
            producers,
            applied_at: Some(SystemTime::now()),
        }
    }
}

/// The [`Wiring`] being served. Cheap to clone; [`QueueConsumers::replace`] applies a reloaded
/// manifest.
#[derive(Clone, Default)]
pub struct QueueConsumers(Arc<RwLock<Wiring>>);

impl QueueConsumers {
    /// A table holding `wiring`.
    pub fn new(wiring: Wiring) -> Self {
        Self(Arc::new(RwLock::new(wiring)))
    }

    /// Serves `wiring` from now on.
    pub fn replace(&self, wiring: Wiring) {
        *self.0.write().expect("queue consumers lock") = wiring;
    }

    /// A copy of what is served now.
    pub fn wiring(&self) -> Wiring {
        self.0.read().expect("queue consumers lock").clone()
    }

    /// The consumer of `queue`, if it has one.
    pub fn get(&self, queue: &str) -> Option<Attached> {
        self.0
            .read()
            .expect("queue consumers lock")
            .consumers
            .get(queue)
            .cloned()
    }

    /// The pull settings of `queue`, if it is consumed over HTTP.
    pub fn pull(&self, queue: &str) -> Option<PullConsumerConfig> {
        match self.get(queue)? {
            Attached::Pull(config) => Some(config),
            Attached::Component { .. } => None,
        }
    }
}

/// A queue's consumer as wasmq's own API shows it (`consumer` in `GET /queues/{queue}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConsumerView {
    /// A consumer component, with its batching and retry settings.
    Worker {
        /// The component.
        component: String,
        /// Most messages in one batch.
        max_batch_size: u32,
        /// Seconds to wait for a batch to fill.
        max_batch_timeout: u32,
        /// Redeliveries before dead-lettering.
        max_retries: u32,
        /// Default retry delay in seconds.
        retry_delay: u32,
        /// Where exhausted messages go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dead_letter_queue: Option<String>,
        /// Most batches at once, if set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_concurrency: Option<u32>,
    },
    /// HTTP pull clients, with their lease and retry settings.
    HttpPull {
        /// How long a pulled message stays leased unless the pull says otherwise (ms).
        visibility_timeout_ms: u64,
        /// Redeliveries before dead-lettering.
        max_retries: u32,
        /// Default retry delay in seconds.
        retry_delay: u32,
        /// Where exhausted messages go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dead_letter_queue: Option<String>,
    },
}

impl ConsumerView {
    /// The view of `attached`, whose retry settings are the queue's `settings`.
    pub fn new(attached: Attached, settings: &ConsumerSettings) -> Self {
        match attached {
            Attached::Component {
                name,
                max_concurrency,
            } => ConsumerView::Worker {
                component: name,
                max_batch_size: settings.max_batch_size,
                max_batch_timeout: settings.max_batch_timeout,
                max_retries: settings.max_retries,
                retry_delay: settings.retry_delay,
                dead_letter_queue: settings.dead_letter_queue.clone(),
                max_concurrency,
            },
            Attached::Pull(pull) => ConsumerView::HttpPull {
                visibility_timeout_ms: pull.visibility_timeout_ms,
                max_retries: settings.max_retries,
                retry_delay: settings.retry_delay,
                dead_letter_queue: settings.dead_letter_queue.clone(),
            },
        }
    }
}
