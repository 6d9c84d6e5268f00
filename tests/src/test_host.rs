//! One setup for the tests that drive components through the real dispatcher, without a whole
//! `wasmq run`: a redb broker in a temporary folder, the queues a test names, and a dispatcher
//! per consumer, its component loaded on one runtime. A test states what differs (batching,
//! limits, bindings, the runtime) and nothing else.

use std::collections::BTreeMap;
use std::sync::Arc;

use tempfile::TempDir;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmq_host::dispatch::{BatchStarted, Delivery, Dispatcher};
use wasmq_host::engine::{
    self, Broker, ConsumerSettings, LeaseOptions, Outcome, QueueSettings, RedbOptions, SendRequest,
    Storage,
};
use wasmq_host::runtime::AllowedHost;
use wasmq_host::runtime::{
    ComponentLimits, ComponentOptions, ConsumerComponent, Runtime, RuntimeConfig, SendTarget,
};

use crate::guest;

/// Where a consumer's component comes from.
enum Source {
    /// Compiled by the builder, with the consumer's limits, bindings and outbound hosts.
    Wasm { name: String, wasm: Vec<u8> },
    /// Loaded by the test, with the options it chose.
    Loaded(Box<ConsumerComponent>),
}

/// A queue's consumer for [`TestHostBuilder::consumer`]: its component and batching.
pub struct TestConsumer {
    source: Source,
    settings: ConsumerSettings,
    limits: ComponentLimits,
    bindings: BTreeMap<String, String>,
    allowed_outbound_hosts: Vec<AllowedHost>,
    observed: bool,
}

impl TestConsumer {
    fn new(source: Source) -> Self {
        Self {
            source,
            settings: ConsumerSettings::default(),
            limits: ComponentLimits::default(),
            bindings: BTreeMap::new(),
            allowed_outbound_hosts: Vec::new(),
            observed: false,
        }
    }

    /// Example guest `name` (see [`guest`]), as a component of that name.
    pub fn guest(name: &str) -> Self {
        Self::wasm(name, guest(name))
    }

    /// The component `wasm`, named `name`.
    pub fn wasm(name: &str, wasm: Vec<u8>) -> Self {
        Self::new(Source::Wasm {
            name: name.to_owned(),
            wasm,
        })
    }

    /// A component the test loaded itself (shared between tests, or on a runtime of its own);
    /// the limits, bindings and outbound hosts set here do not apply to it.
    pub fn loaded(component: ConsumerComponent) -> Self {
        Self::new(Source::Loaded(Box::new(component)))
    }

    /// Batching, retries and dead-letter queue, for the dispatcher and the queue alike
    /// (default: [`ConsumerSettings::default`]).
    pub fn settings(mut self, settings: ConsumerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Time and memory limits (default: [`ComponentLimits::default`]).
    pub fn limits(mut self, limits: ComponentLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Lets the component send to `queue` as `binding` (none by default: every send fails
    /// with `unknown-binding`).
    pub fn bind(mut self, binding: &str, queue: &str) -> Self {
        self.bindings.insert(binding.to_owned(), queue.to_owned());
        self
    }

    /// The origins the component may reach over `wasi:http` (none by default).
    pub fn allow_outbound(mut self, hosts: Vec<AllowedHost>) -> Self {
        self.allowed_outbound_hosts = hosts;
        self
    }

    /// Reports every batch's start; read them with [`TestHost::started`].
    pub fn observed(mut self) -> Self {
        self.observed = true;
        self
    }
}

/// Builds a [`TestHost`]; start with [`TestHost::builder`].
#[derive(Default)]
pub struct TestHostBuilder {
    runtime: RuntimeConfig,
    queues: Vec<(String, QueueSettings)>,
    consumers: Vec<(String, TestConsumer)>,
}

impl TestHostBuilder {
    /// Loads the components on a runtime set up as `config` says (default: on-demand
    /// allocation, no cache).
    pub fn runtime(mut self, config: RuntimeConfig) -> Self {
        self.runtime = config;
        self
    }

    /// A queue with the default settings and no consumer.
    pub fn queue(mut self, name: &str) -> Self {
        self.queues
            .push((name.to_owned(), QueueSettings::default()));
        self
    }

    /// A queue whose settings carry `consumer`'s, consumed by `consumer` through a dispatcher.
    pub fn consumer(mut self, queue: &str, consumer: TestConsumer) -> Self {
        let settings = QueueSettings {
            consumer: consumer.settings.clone(),
            ..QueueSettings::default()
        };
        self.queues.push((queue.to_owned(), settings));
        self.consumers.push((queue.to_owned(), consumer));
        self
    }

    /// Opens the broker, creates the queues and loads the components.
    pub async fn build(self) -> TestHost {
        let dir = TempDir::new().unwrap();
        let storage = Storage::redb(dir.path().join("q.redb"), RedbOptions::default());
        let broker = engine::open(storage).await.unwrap();
        for (name, settings) in self.queues {
            broker.create_queue(&name, settings).await.unwrap();
        }
        let mut runtime = None;
        let mut consumers = BTreeMap::new();
        for (queue, consumer) in self.consumers {
            let component = match consumer.source {
                Source::Loaded(component) => *component,
                Source::Wasm { name, wasm } => {
                    let runtime =
                        runtime.get_or_insert_with(|| Runtime::with_config(&self.runtime).unwrap());
                    let options = ComponentOptions {
                        limits: consumer.limits,
                        send_target: Some(SendTarget {
                            publisher: Arc::new(broker.clone()),
                            bindings: Arc::new(consumer.bindings),
                        }),
                        allowed_outbound_hosts: consumer.allowed_outbound_hosts,
                        ..ComponentOptions::default()
                    };
                    ConsumerComponent::new(runtime, &name, &wasm, options)
                        .unwrap_or_else(|e| panic!("loading `{name}`: {e:#}"))
                }
            };
            let mut dispatcher =
                Dispatcher::new(broker.clone(), &queue, consumer.settings, component);
            let mut started = None;
            if consumer.observed {
                let (observer, receiver) = unbounded_channel();
                dispatcher = dispatcher.observe(observer);
                started = Some(receiver);
            }
            consumers.insert(
                queue,
                Consumed {
                    dispatcher: Some(dispatcher),
                    started,
                },
            );
        }
        TestHost {
            broker,
            consumers,
            _dir: dir,
        }
    }
}

/// A queue's dispatcher, until a test takes it to run it.
struct Consumed {
    dispatcher: Option<Dispatcher>,
    started: Option<UnboundedReceiver<BatchStarted>>,
}

/// A broker with queues and their dispatchers (see the module comment).
pub struct TestHost {
    /// The broker: redb in a temporary folder that lives as long as this.
    pub broker: Arc<dyn Broker>,
    consumers: BTreeMap<String, Consumed>,
    _dir: TempDir,
}

impl TestHost {
    /// Starts describing one.
    pub fn builder() -> TestHostBuilder {
        TestHostBuilder::default()
    }

    fn consumed(&mut self, queue: &str) -> &mut Consumed {
        self.consumers
            .get_mut(queue)
            .unwrap_or_else(|| panic!("queue `{queue}` has no consumer"))
    }

    /// The dispatcher of `queue`.
    pub fn dispatcher(&self, queue: &str) -> &Dispatcher {
        self.consumers
            .get(queue)
            .and_then(|c| c.dispatcher.as_ref())
            .unwrap_or_else(|| panic!("queue `{queue}` has no dispatcher (or it was taken)"))
    }

    /// Takes the dispatcher of `queue`, to configure it further or run it.
    pub fn take_dispatcher(&mut self, queue: &str) -> Dispatcher {
        self.consumed(queue)
            .dispatcher
            .take()
            .unwrap_or_else(|| panic!("the dispatcher of `{queue}` was taken already"))
    }

    /// The batch starts of `queue`'s dispatcher, when its consumer is
    /// [observed](TestConsumer::observed).
    pub fn started(&mut self, queue: &str) -> &mut UnboundedReceiver<BatchStarted> {
        self.consumed(queue)
            .started
            .as_mut()
            .unwrap_or_else(|| panic!("the consumer of `{queue}` is not observed"))
    }

    /// Sends `requests` to `queue` in one batch.
    pub async fn send(&self, queue: &str, requests: Vec<SendRequest>) {
        self.broker.send_batch(queue, requests, None).await.unwrap();
    }

    /// Sends text messages with `bodies` to `queue` in one batch.
    pub async fn send_texts(&self, queue: &str, bodies: &[&str]) {
        let requests = bodies.iter().map(|b| SendRequest::text(*b)).collect();
        self.send(queue, requests).await;
    }

    /// Delivers one batch of `queue` through its dispatcher; panics when none was visible.
    pub async fn deliver(&self, queue: &str) -> Delivery {
        self.dispatcher(queue)
            .deliver_one()
            .await
            .unwrap()
            .expect("a batch")
    }

    /// Leases every visible message of `queue` (up to 100) and retries it at once, so it waits
    /// again with its attempt counted; returns the bodies and the attempts they were leased
    /// with.
    pub async fn lease_and_retry(&self, queue: &str) -> Vec<(String, u32)> {
        let leased = self
            .broker
            .lease(queue, LeaseOptions::new(100, 60_000))
            .await
            .unwrap();
        let retry = Outcome::Retry {
            delay_seconds: Some(0),
        };
        let retries = leased.iter().map(|m| (m.lease, retry)).collect();
        self.broker.settle(queue, retries).await.unwrap();
        leased
            .into_iter()
            .map(|m| {
                (
                    String::from_utf8(m.message.body).unwrap(),
                    m.message.attempts,
                )
            })
            .collect()
    }
}

/// A dispatcher running in a task of its own until [stopped](RunningDispatcher::stop).
pub struct RunningDispatcher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningDispatcher {
    /// Runs `dispatcher` (see [`Dispatcher::run`]).
    pub fn start(dispatcher: Dispatcher) -> Self {
        let (stop, stopped) = watch::channel(false);
        Self {
            stop,
            task: tokio::spawn(dispatcher.run(stopped)),
        }
    }

    /// Tells it to stop and waits until the batches it was running are settled.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap();
    }
}
