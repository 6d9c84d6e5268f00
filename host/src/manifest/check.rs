//! From the manifest as written ([`RawManifest`]) to a checked [`Manifest`]: ranges, names,
//! references between tables, and paths.
//!
//! Every check runs and records its error in the shared [`config::check::Checker`], so a
//! manifest's problems are all reported at once, in file order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawComponent, RawHost, RawManifest, RawPullConsumer, RawQueue};
use super::{
    ComponentConfig, ConsumerConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
    DEFAULT_VISIBILITY_TIMEOUT_MS, HostConfig, Manifest, Position, PullConsumerConfig, Route,
    Storage,
};
use crate::config::check::{Number, file_problem};
use crate::config::raw::RawConsumer;
use crate::config::{self, ConfigError, ConfigErrors, KeyPath};
use crate::engine::limits::{MAX_VISIBILITY_TIMEOUT_MS, check_queue_name};
use crate::engine::{ConsumerSettings, QueueSettings};
use crate::runtime::{AllowedHost, ComponentLimits};

/// Checks `raw`, read from `text` in the file `path`.
pub(super) fn check(raw: RawManifest, text: &str, path: &Path) -> Result<Manifest, ConfigErrors> {
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| ConfigError::whole_file(path, "cannot tell which folder this file is in"))?;
    let mut checker = Checker {
        base: config::check::Checker::new(text, path),
        dir,
        queues: raw
            .queues
            .keys()
            .map(|name| name.get_ref().clone())
            .collect(),
        routes: HashMap::new(),
        consumers: BTreeMap::new(),
    };

    let host = checker.host(&raw.host);
    let mut pull_consumers = BTreeMap::new();
    let mut queues: BTreeMap<String, QueueSettings> = BTreeMap::new();
    for (name, queue) in &raw.queues {
        let mut settings = checker.queue(name, queue);
        if let Some(pull) = &queue.pull_consumer {
            let (consumer, config) = checker.pull_consumer(name, pull);
            settings.consumer = consumer;
            pull_consumers.insert(name.get_ref().clone(), config);
        }
        queues.insert(name.get_ref().clone(), settings);
    }

    // In file order, so that a duplicate route or consumer is blamed on the later component.
    let mut raw_components: Vec<_> = raw.components.iter().collect();
    raw_components.sort_by_key(|(name, _)| name.span().start);
    let mut components = BTreeMap::new();
    let mut source_positions = BTreeMap::new();
    for (name, component) in raw_components {
        let config = checker.component(name, component);
        if let Some(consumer) = &config.consumer
            && let Some(queue) = queues.get_mut(&consumer.queue)
        {
            queue.consumer = consumer.settings.clone();
        }
        source_positions.insert(
            name.get_ref().clone(),
            checker.base.position(component.source.span()),
        );
        components.insert(name.get_ref().clone(), config);
    }

    checker.base.finish()?;
    Ok(Manifest {
        path: path.to_path_buf(),
        dir: checker.dir,
        host,
        queues,
        components,
        pull_consumers,
        source_positions,
    })
}

/// Checks that `source` is a file; `built` says whether a build command ran before.
pub(super) fn source_file(source: &Path, built: bool) -> Result<(), String> {
    let when_missing = if built {
        " after running the build command"
    } else {
        " (build it first, or give a `build` command)"
    };
    file_problem(source, when_missing)
}

/// The state of one check: what was found so far.
struct Checker<'a> {
    /// The errors, and the checks manifests share with fixture files.
    base: config::check::Checker<'a>,
    /// The manifest's folder.
    dir: PathBuf,
    /// Every declared queue.
    queues: BTreeSet<String>,
    /// Each route, with the component that took it first and where.
    routes: HashMap<Route, (String, Position)>,
    /// Each consumed queue, with its consumer (`component `x`` or `a pull_consumer`) and where.
    consumers: BTreeMap<String, (String, Position)>,
}

impl Checker<'_> {
    /// Checks that `queue` is declared; records an error about `key` if not.
    fn check_declared(&mut self, key: &KeyPath, queue: &Spanned<String>) -> bool {
        let name = queue.get_ref();
        let declared = self.queues.contains(name);
        if !declared {
            self.base.report(
                key,
                queue.span(),
                format!("queue `{name}` is not declared (add a `[queues.{name}]` table)"),
            );
        }
        declared
    }

    /// Records `component` as the consumer of `queue`, written at `key`; refuses an
    /// undeclared queue or one that already has a consumer.
    fn take_queue(&mut self, key: &KeyPath, queue: &Spanned<String>, component: &str) {
        if !self.check_declared(key, queue) {
            return;
        }
        let name = queue.get_ref();
        if let Some((other, at)) = self.consumers.get(name) {
            let message = format!(
                "queue `{name}` is already consumed by {other} (line {}); a queue has one consumer",
                at.line
            );
            self.base.report(key, queue.span(), message);
        } else {
            let at = self.base.position(queue.span());
            self.consumers
                .insert(name.clone(), (format!("component `{component}`"), at));
        }
    }

    fn host(&mut self, raw: &RawHost) -> HostConfig {
        let key = KeyPath::root("host");
        let data_dir = match &raw.data_dir {
            Some(dir) if dir.get_ref().trim().is_empty() => {
                self.base
                    .report(&key.child("data_dir"), dir.span(), "it is empty");
                PathBuf::new()
            }
            Some(dir) => self.dir.join(dir.get_ref()),
            None => self.dir.join(DEFAULT_DATA_DIR),
        };
        let default_listen: SocketAddr = DEFAULT_LISTEN.parse().expect("a valid address");
        let listen = match &raw.listen {
            Some(listen) => listen.get_ref().parse().unwrap_or_else(|e| {
                let message = format!(
                    "`{}` is not an address like \"{DEFAULT_LISTEN}\" ({e})",
                    listen.get_ref()
                );
                self.base
                    .report(&key.child("listen"), listen.span(), message);
                default_listen
            }),
            None => default_listen,
        };
        let api_token = raw.api_token.as_ref().map(|token| {
            if token.get_ref().is_empty() {
                self.base.report(
                    &key.child("api_token"),
                    token.span(),
                    "it is empty (leave it out to run the API without a token)",
                );
            }
            token.get_ref().clone()
        });
        let max_batches_in_flight = self.base.number_or(
            &key,
            "max_batches_in_flight",
            &raw.max_batches_in_flight,
            1..=HostConfig::MAX_BATCHES_IN_FLIGHT,
            HostConfig::DEFAULT_MAX_BATCHES_IN_FLIGHT,
        );
        let max_connections = self.base.number_or(
            &key,
            "max_connections",
            &raw.max_connections,
            1..=HostConfig::MAX_CONNECTIONS,
            HostConfig::DEFAULT_MAX_CONNECTIONS,
        );
        let shutdown_timeout = raw
            .shutdown_timeout
            .as_ref()
            .and_then(|text| {
                self.base.duration(
                    &key,
                    "shutdown_timeout",
                    text,
                    Duration::ZERO..=HostConfig::MAX_SHUTDOWN_TIMEOUT,
                )
            })
            .unwrap_or(HostConfig::DEFAULT_SHUTDOWN_TIMEOUT);
        let storage_text = raw
            .storage
            .as_ref()
            .map(|s| (s.get_ref().clone(), Some(s.span())))
            .or_else(|| {
                std::env::var("WASMQ_STORAGE")
                    .ok()
                    .filter(|s| !s.is_empty())
                    .map(|s| (s, None))
            });
        let storage = match storage_text {
            None => Storage::Redb,
            Some((text, span)) => match Storage::parse(&text) {
                Ok(storage) => storage,
                Err(message) => {
                    match span {
                        Some(span) => self.base.report(&key.child("storage"), span, message),
                        // From the environment: no line to point at.
                        None => self.base.report_unplaced("WASMQ_STORAGE", message),
                    }
                    Storage::Redb
                }
            },
        };
        HostConfig {
            data_dir,
            listen,
            api_token,
            storage,
            component_cache: raw.component_cache.as_ref().is_none_or(|v| *v.get_ref()),
            pooling_allocator: raw.pooling_allocator.as_ref().is_none_or(|v| *v.get_ref()),
            max_batches_in_flight,
            max_connections,
            access_log: raw.access_log.as_ref().is_some_and(|v| *v.get_ref()),
            shutdown_timeout,
        }
    }

    fn queue(&mut self, name: &Spanned<String>, raw: &RawQueue) -> QueueSettings {
        let key = KeyPath::root("queues").child(name.get_ref());
        if let Err(e) = check_queue_name(name.get_ref()) {
            self.base.report(&key, name.span(), e.to_string());
        }
        let mut settings = QueueSettings::default();
        let numbers: [Number<'_, QueueSettings>; 3] = [
            ("delivery_delay", &raw.delivery_delay, |s, n| {
                s.delivery_delay = n
            }),
            (
                "message_retention_period",
                &raw.message_retention_period,
                |s, n| s.message_retention_period = n,
            ),
            ("dedup_window", &raw.dedup_window, |s, n| s.dedup_window = n),
        ];
        self.base
            .settings(&key, &numbers, &mut settings, QueueSettings::validate);
        settings
    }

    /// A queue's `pull_consumer`: its retry settings and its default lease.
    fn pull_consumer(
        &mut self,
        queue: &Spanned<String>,
        raw: &Spanned<RawPullConsumer>,
    ) -> (ConsumerSettings, PullConsumerConfig) {
        let key = KeyPath::root("queues")
            .child(queue.get_ref())
            .child("pull_consumer");
        let pull = raw.get_ref();
        let at = self.base.position(raw.span());
        self.consumers
            .insert(queue.get_ref().clone(), ("a pull_consumer".to_owned(), at));

        let mut settings = ConsumerSettings {
            dead_letter_queue: pull.dead_letter_queue.as_ref().map(|d| d.get_ref().clone()),
            ..ConsumerSettings::default()
        };
        let numbers: [Number<'_, ConsumerSettings>; 2] = [
            ("max_retries", &pull.max_retries, |s, n| s.max_retries = n),
            ("retry_delay", &pull.retry_delay, |s, n| s.retry_delay = n),
        ];
        self.base
            .settings(&key, &numbers, &mut settings, ConsumerSettings::validate);
        if let Some(dlq) = &pull.dead_letter_queue {
            let dlq_key = key.child("dead_letter_queue");
            if !self
                .base
                .own_dead_letter_queue(&dlq_key, dlq, queue.get_ref())
            {
                self.check_declared(&dlq_key, dlq);
            }
        }
        let visibility_timeout_ms = self.base.number_or(
            &key,
            "visibility_timeout_ms",
            &pull.visibility_timeout_ms,
            1..=MAX_VISIBILITY_TIMEOUT_MS,
            DEFAULT_VISIBILITY_TIMEOUT_MS,
        );
        (
            settings,
            PullConsumerConfig {
                visibility_timeout_ms,
            },
        )
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one check per component key, in the order the README lists them"
    )]
    fn component(&mut self, name: &Spanned<String>, raw: &RawComponent) -> ComponentConfig {
        let key = KeyPath::root("components").child(name.get_ref());

        let build = raw.build.as_ref().map(|build| {
            if build.get_ref().trim().is_empty() {
                self.base
                    .report(&key.child("build"), build.span(), "the command is empty");
            }
            build.get_ref().clone()
        });
        let mut watch = Vec::new();
        for (i, glob) in raw.watch.iter().enumerate() {
            let glob_key = key.child("watch").index(i);
            if let Err(e) = globset::Glob::new(glob.get_ref()) {
                self.base
                    .report(&glob_key, glob.span(), format!("not a glob: {e}"));
            } else if build.is_none() {
                let message = "only a component with a `build` command can be rebuilt";
                self.base.report(&glob_key, glob.span(), message);
            }
            watch.push(glob.get_ref().clone());
        }

        let source = self.dir.join(raw.source.get_ref());
        if raw.source.get_ref().trim().is_empty() {
            self.base
                .report(&key.child("source"), raw.source.span(), "it is empty");
        } else if build.is_none()
            && let Err(message) = source_file(&source, false)
        {
            self.base
                .report(&key.child("source"), raw.source.span(), message);
        }

        let route = raw
            .route
            .as_ref()
            .and_then(|route| self.route(&key, name.get_ref(), route));
        if let Some(flag) = &raw.route_requires_token
            && raw.route.is_none()
        {
            self.base.report(
                &key.child("route_requires_token"),
                flag.span(),
                "only a component with a `route` can require the API token on it",
            );
        }
        if let (Some(n), None) = (&raw.route_max_concurrency, &raw.route) {
            self.base.report(
                &key.child("route_max_concurrency"),
                n.span(),
                "only a component with a `route` has requests to limit",
            );
        }
        let route_max_concurrency = self.base.number_or(
            &key,
            "route_max_concurrency",
            &raw.route_max_concurrency,
            1..=ComponentConfig::MAX_ROUTE_CONCURRENCY,
            ComponentConfig::DEFAULT_ROUTE_MAX_CONCURRENCY,
        );

        let mut bindings = BTreeMap::new();
        for (binding, queue) in &raw.producers {
            let binding_key = key.child("producers").child(binding.get_ref());
            self.base.binding_name(&binding_key, binding);
            self.check_declared(&binding_key, queue);
            bindings.insert(binding.get_ref().clone(), queue.get_ref().clone());
        }

        let consumer = raw
            .consumer
            .as_ref()
            .map(|consumer| self.consumer(&key, name.get_ref(), consumer));

        if let (Some(consumer), Some(_)) = (&raw.consumer, &raw.route) {
            self.base.report(
                &key.child("consumer"),
                consumer.span(),
                format!(
                    "component `{}` has both a `consumer` and a `route`: a component is a \
                     consumer or a producer; split it in two",
                    name.get_ref()
                ),
            );
        }
        if raw.consumer.is_none() && raw.route.is_none() {
            self.base.report(
                &key,
                name.span(),
                format!(
                    "component `{}` does nothing: give it a `consumer` or a `route`",
                    name.get_ref()
                ),
            );
        }

        let limits = self.base.limits(
            &key.child("limits"),
            &raw.limits,
            ComponentLimits::default(),
        );

        let hosts_key = key.child("allowed_outbound_hosts");
        let mut allowed_outbound_hosts = Vec::new();
        for (i, host) in raw.allowed_outbound_hosts.iter().enumerate() {
            match host.get_ref().parse::<AllowedHost>() {
                Ok(host) => allowed_outbound_hosts.push(host),
                Err(message) => self.base.report(&hosts_key.index(i), host.span(), message),
            }
        }

        let mut env = BTreeMap::new();
        for (variable, value) in &raw.env {
            self.base
                .env_name(&key.child("env").child(variable.get_ref()), variable);
            env.insert(variable.get_ref().clone(), value.get_ref().clone());
        }

        ComponentConfig {
            name: name.get_ref().clone(),
            source,
            build,
            watch,
            route,
            route_requires_token: raw
                .route_requires_token
                .as_ref()
                .is_some_and(|flag| *flag.get_ref()),
            route_max_concurrency,
            bindings,
            consumer,
            limits,
            allowed_outbound_hosts,
            env,
        }
    }

    fn route(
        &mut self,
        component_key: &KeyPath,
        component: &str,
        raw: &Spanned<String>,
    ) -> Option<Route> {
        let key = component_key.child("route");
        let route = match raw.get_ref().parse::<Route>() {
            Ok(route) => route,
            Err(message) => {
                self.base.report(&key, raw.span(), message);
                return None;
            }
        };
        if let Some((other, at)) = self.routes.get(&route) {
            let message = format!(
                "route `{route}` is already taken by component `{other}` (line {})",
                at.line
            );
            self.base.report(&key, raw.span(), message);
        } else {
            let at = self.base.position(raw.span());
            self.routes
                .insert(route.clone(), (component.to_owned(), at));
        }
        Some(route)
    }

    fn consumer(
        &mut self,
        component_key: &KeyPath,
        component: &str,
        raw: &Spanned<RawConsumer>,
    ) -> ConsumerConfig {
        let key = component_key.child("consumer");
        let consumer = raw.get_ref();
        let queue = match &consumer.queue {
            Some(queue) => {
                self.take_queue(&key.child("queue"), queue, component);
                queue.get_ref().clone()
            }
            None => {
                self.base.report(
                    &key,
                    raw.span(),
                    "missing field `queue`: the queue it consumes",
                );
                String::new()
            }
        };

        let mut settings = self
            .base
            .consumer_settings(&key, consumer, ConsumerSettings::default());
        settings.dead_letter_queue = consumer
            .dead_letter_queue
            .as_ref()
            .map(|dlq| dlq.get_ref().clone());

        if let Some(dlq) = &consumer.dead_letter_queue {
            let dlq_key = key.child("dead_letter_queue");
            if !self.base.own_dead_letter_queue(&dlq_key, dlq, &queue) {
                self.check_declared(&dlq_key, dlq);
            }
        }

        let max_concurrency = self.base.max_concurrency(&key, consumer);
        let reuse = self.base.instance_reuse(&key, consumer);

        ConsumerConfig {
            queue,
            settings,
            max_concurrency,
            reuse,
        }
    }
}
