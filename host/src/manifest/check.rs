//! From the manifest as written ([`RawManifest`]) to a checked [`Manifest`]: ranges, names,
//! references between tables, and paths.
//!
//! Every check runs and records its error; the one earliest in the file is returned, so that
//! fixing errors top to bottom works.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::KeyPath;
use super::raw::{
    RawComponent, RawConsumer, RawHost, RawLimits, RawManifest, RawPullConsumer, RawQueue, value_or,
};
use super::units::{format_duration, parse_duration, parse_size};
use super::{
    AllowedHost, ComponentConfig, ConsumerConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
    DEFAULT_VISIBILITY_TIMEOUT_MS, HostConfig, Limits, MAX_CONCURRENCY, Manifest, ManifestError,
    Position, PullConsumerConfig, Route, Storage,
};
use crate::engine::limits::{MAX_VISIBILITY_TIMEOUT_MS, check_queue_name};
use crate::engine::{BrokerError, ConsumerSettings, QueueSettings};

/// Checks `raw`, read from `text` in the file `path`.
pub(super) fn check(raw: RawManifest, text: &str, path: &Path) -> Result<Manifest, ManifestError> {
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .ok_or_else(|| {
            ManifestError::whole_file(path, "cannot tell which folder this file is in")
        })?;
    let mut checker = Checker {
        text,
        file: path,
        dir,
        errors: Vec::new(),
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
            checker.position(component.source.span()),
        );
        components.insert(name.get_ref().clone(), config);
    }

    if let Some(first) = checker.errors.into_iter().min_by_key(|e| e.position) {
        return Err(first);
    }
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
    let source_name = source.display();
    match std::fs::metadata(source) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(format!("`{source_name}` is not a file")),
        Err(e) if e.kind() == ErrorKind::NotFound && built => Err(format!(
            "`{source_name}` does not exist after running the build command"
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!(
            "`{source_name}` does not exist (build it first, or give a `build` command)"
        )),
        Err(e) => Err(format!("cannot read `{source_name}`: {e}")),
    }
}

/// The state of one check: what was found so far.
struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    /// The manifest's folder.
    dir: PathBuf,
    errors: Vec<ManifestError>,
    /// Every declared queue.
    queues: BTreeSet<String>,
    /// Each route, with the component that took it first and where.
    routes: HashMap<Route, (String, Position)>,
    /// Each consumed queue, with its consumer (`component `x`` or `a pull_consumer`) and where.
    consumers: BTreeMap<String, (String, Position)>,
}

impl Checker<'_> {
    fn position(&self, span: Range<usize>) -> Position {
        Position::of(self.text, span.start)
    }

    /// Records an error about `key`, whose key or value is at `span`.
    fn report(&mut self, key: &KeyPath, span: Range<usize>, message: impl Into<String>) {
        self.errors.push(ManifestError {
            file: self.file.to_path_buf(),
            position: Some(self.position(span)),
            key: Some(key.to_string()),
            message: message.into(),
        });
    }

    /// Records an error from a settings `validate()`, blaming the setting it names.
    fn report_setting(
        &mut self,
        table: &KeyPath,
        error: BrokerError,
        span_of: impl Fn(&str) -> Option<Range<usize>>,
        table_span: Range<usize>,
    ) {
        match error {
            BrokerError::InvalidSetting {
                key,
                value,
                min,
                max,
            } => self.report(
                &table.child(key),
                span_of(key).unwrap_or(table_span),
                format!("{value} is out of range ({min}..={max})"),
            ),
            other => self.report(table, table_span, other.to_string()),
        }
    }

    /// Checks that `queue` is declared; records an error about `key` if not.
    fn check_declared(&mut self, key: &KeyPath, queue: &Spanned<String>) -> bool {
        let name = queue.get_ref();
        let declared = self.queues.contains(name);
        if !declared {
            self.report(
                key,
                queue.span(),
                format!("queue `{name}` is not declared (add a `[queues.{name}]` table)"),
            );
        }
        declared
    }

    fn host(&mut self, raw: &RawHost) -> HostConfig {
        let key = KeyPath::root("host");
        let data_dir = match &raw.data_dir {
            Some(dir) if dir.get_ref().trim().is_empty() => {
                self.report(&key.child("data_dir"), dir.span(), "it is empty");
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
                self.report(&key.child("listen"), listen.span(), message);
                default_listen
            }),
            None => default_listen,
        };
        let api_token = raw.api_token.as_ref().map(|token| {
            if token.get_ref().is_empty() {
                self.report(
                    &key.child("api_token"),
                    token.span(),
                    "it is empty (leave it out to run the API without a token)",
                );
            }
            token.get_ref().clone()
        });
        let max_batches_in_flight = match &raw.max_batches_in_flight {
            Some(n) if !(1..=HostConfig::MAX_BATCHES_IN_FLIGHT).contains(n.get_ref()) => {
                let message = format!(
                    "{} is out of range (1..={})",
                    n.get_ref(),
                    HostConfig::MAX_BATCHES_IN_FLIGHT
                );
                self.report(&key.child("max_batches_in_flight"), n.span(), message);
                HostConfig::DEFAULT_MAX_BATCHES_IN_FLIGHT
            }
            Some(n) => *n.get_ref(),
            None => HostConfig::DEFAULT_MAX_BATCHES_IN_FLIGHT,
        };
        let max_connections = match &raw.max_connections {
            Some(n) if !(1..=HostConfig::MAX_CONNECTIONS).contains(n.get_ref()) => {
                let message = format!(
                    "{} is out of range (1..={})",
                    n.get_ref(),
                    HostConfig::MAX_CONNECTIONS
                );
                self.report(&key.child("max_connections"), n.span(), message);
                HostConfig::DEFAULT_MAX_CONNECTIONS
            }
            Some(n) => *n.get_ref(),
            None => HostConfig::DEFAULT_MAX_CONNECTIONS,
        };
        let shutdown_timeout = match &raw.shutdown_timeout {
            Some(text) => match parse_duration(text.get_ref()) {
                Ok(timeout) if timeout <= Duration::from_secs(3600) => timeout,
                Ok(_) => {
                    let message = format!("`{}` is out of range (0s..=1h)", text.get_ref());
                    self.report(&key.child("shutdown_timeout"), text.span(), message);
                    HostConfig::DEFAULT_SHUTDOWN_TIMEOUT
                }
                Err(message) => {
                    self.report(&key.child("shutdown_timeout"), text.span(), message);
                    HostConfig::DEFAULT_SHUTDOWN_TIMEOUT
                }
            },
            None => HostConfig::DEFAULT_SHUTDOWN_TIMEOUT,
        };
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
                        Some(span) => self.report(&key.child("storage"), span, message),
                        // From the environment: no line to point at.
                        None => self.errors.push(ManifestError {
                            file: self.file.to_path_buf(),
                            position: None,
                            key: Some("WASMQ_STORAGE".into()),
                            message,
                        }),
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
            self.report(&key, name.span(), e.to_string());
        }
        let defaults = QueueSettings::default();
        let settings = QueueSettings {
            delivery_delay: value_or(&raw.delivery_delay, defaults.delivery_delay),
            message_retention_period: value_or(
                &raw.message_retention_period,
                defaults.message_retention_period,
            ),
            dedup_window: value_or(&raw.dedup_window, defaults.dedup_window),
            consumer: defaults.consumer,
        };
        if let Err(e) = settings.validate() {
            self.report_setting(&key, e, |k| raw.span_of(k), name.span());
        }
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
        let at = self.position(raw.span());
        self.consumers
            .insert(queue.get_ref().clone(), ("a pull_consumer".to_owned(), at));

        let defaults = ConsumerSettings::default();
        let settings = ConsumerSettings {
            max_retries: value_or(&pull.max_retries, defaults.max_retries),
            retry_delay: value_or(&pull.retry_delay, defaults.retry_delay),
            dead_letter_queue: pull.dead_letter_queue.as_ref().map(|d| d.get_ref().clone()),
            ..defaults
        };
        if let Err(e) = settings.validate() {
            self.report_setting(&key, e, |k| pull.span_of(k), raw.span());
        }
        if let Some(dlq) = &pull.dead_letter_queue {
            let dlq_key = key.child("dead_letter_queue");
            if dlq.get_ref() == queue.get_ref() {
                let message = format!(
                    "queue `{}` cannot be its own dead_letter_queue",
                    dlq.get_ref()
                );
                self.report(&dlq_key, dlq.span(), message);
            } else {
                self.check_declared(&dlq_key, dlq);
            }
        }
        let visibility_timeout_ms =
            value_or(&pull.visibility_timeout_ms, DEFAULT_VISIBILITY_TIMEOUT_MS);
        if !(1..=MAX_VISIBILITY_TIMEOUT_MS).contains(&visibility_timeout_ms) {
            self.report(
                &key.child("visibility_timeout_ms"),
                pull.span_of("visibility_timeout_ms").unwrap_or(raw.span()),
                format!(
                    "{visibility_timeout_ms} is out of range (1..={MAX_VISIBILITY_TIMEOUT_MS})"
                ),
            );
        }
        (
            settings,
            PullConsumerConfig {
                visibility_timeout_ms,
            },
        )
    }

    fn component(&mut self, name: &Spanned<String>, raw: &RawComponent) -> ComponentConfig {
        let key = KeyPath::root("components").child(name.get_ref());

        let build = raw.build.as_ref().map(|build| {
            if build.get_ref().trim().is_empty() {
                self.report(&key.child("build"), build.span(), "the command is empty");
            }
            build.get_ref().clone()
        });

        let source = self.dir.join(raw.source.get_ref());
        if raw.source.get_ref().trim().is_empty() {
            self.report(&key.child("source"), raw.source.span(), "it is empty");
        } else if build.is_none()
            && let Err(message) = source_file(&source, false)
        {
            self.report(&key.child("source"), raw.source.span(), message);
        }

        let route = raw
            .route
            .as_ref()
            .and_then(|route| self.route(&key, name.get_ref(), route));
        if let Some(flag) = &raw.route_requires_token
            && raw.route.is_none()
        {
            self.report(
                &key.child("route_requires_token"),
                flag.span(),
                "only a component with a `route` can require the API token on it",
            );
        }
        let route_max_concurrency = match &raw.route_max_concurrency {
            Some(n) if raw.route.is_none() => {
                self.report(
                    &key.child("route_max_concurrency"),
                    n.span(),
                    "only a component with a `route` has requests to limit",
                );
                ComponentConfig::DEFAULT_ROUTE_MAX_CONCURRENCY
            }
            Some(n) if !(1..=ComponentConfig::MAX_ROUTE_CONCURRENCY).contains(n.get_ref()) => {
                let message = format!(
                    "{} is out of range (1..={})",
                    n.get_ref(),
                    ComponentConfig::MAX_ROUTE_CONCURRENCY
                );
                self.report(&key.child("route_max_concurrency"), n.span(), message);
                ComponentConfig::DEFAULT_ROUTE_MAX_CONCURRENCY
            }
            Some(n) => *n.get_ref(),
            None => ComponentConfig::DEFAULT_ROUTE_MAX_CONCURRENCY,
        };

        let mut bindings = BTreeMap::new();
        for (binding, queue) in &raw.producers {
            let binding_key = key.child("producers").child(binding.get_ref());
            if !is_binding_name(binding.get_ref()) {
                self.report(
                    &binding_key,
                    binding.span(),
                    format!(
                        "`{}` is not a binding name: use letters, digits and `_` only",
                        binding.get_ref()
                    ),
                );
            }
            self.check_declared(&binding_key, queue);
            bindings.insert(binding.get_ref().clone(), queue.get_ref().clone());
        }

        let consumer = raw
            .consumer
            .as_ref()
            .map(|consumer| self.consumer(&key, name.get_ref(), consumer));

        if let (Some(consumer), Some(_)) = (&raw.consumer, &raw.route) {
            self.report(
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
            self.report(
                &key,
                name.span(),
                format!(
                    "component `{}` does nothing: give it a `consumer` or a `route`",
                    name.get_ref()
                ),
            );
        }

        let limits = self.limits(&key.child("limits"), &raw.limits);

        let hosts_key = key.child("allowed_outbound_hosts");
        let mut allowed_outbound_hosts = Vec::new();
        for (i, host) in raw.allowed_outbound_hosts.iter().enumerate() {
            match host.get_ref().parse::<AllowedHost>() {
                Ok(host) => allowed_outbound_hosts.push(host),
                Err(message) => self.report(&hosts_key.index(i), host.span(), message),
            }
        }

        let mut env = BTreeMap::new();
        for (variable, value) in &raw.env {
            if !is_env_name(variable.get_ref()) {
                self.report(
                    &key.child("env").child(variable.get_ref()),
                    variable.span(),
                    format!(
                        "`{}` is not an environment variable name: use letters, digits and `_`, \
                         not starting with a digit",
                        variable.get_ref()
                    ),
                );
            }
            env.insert(variable.get_ref().clone(), value.get_ref().clone());
        }

        ComponentConfig {
            name: name.get_ref().clone(),
            source,
            build,
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
                self.report(&key, raw.span(), message);
                return None;
            }
        };
        if let Some((other, at)) = self.routes.get(&route) {
            let message = format!(
                "route `{route}` is already taken by component `{other}` (line {})",
                at.line
            );
            self.report(&key, raw.span(), message);
        } else {
            let at = self.position(raw.span());
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
        let queue = consumer.queue.get_ref();

        let queue_key = key.child("queue");
        if self.check_declared(&queue_key, &consumer.queue) {
            if let Some((other, at)) = self.consumers.get(queue) {
                let message = format!(
                    "queue `{queue}` is already consumed by {other} (line {}); \
                     a queue has one consumer",
                    at.line
                );
                self.report(&queue_key, consumer.queue.span(), message);
            } else {
                let at = self.position(consumer.queue.span());
                self.consumers
                    .insert(queue.clone(), (format!("component `{component}`"), at));
            }
        }

        let defaults = ConsumerSettings::default();
        let settings = ConsumerSettings {
            max_batch_size: value_or(&consumer.max_batch_size, defaults.max_batch_size),
            max_batch_timeout: value_or(&consumer.max_batch_timeout, defaults.max_batch_timeout),
            max_retries: value_or(&consumer.max_retries, defaults.max_retries),
            retry_delay: value_or(&consumer.retry_delay, defaults.retry_delay),
            dead_letter_queue: consumer
                .dead_letter_queue
                .as_ref()
                .map(|dlq| dlq.get_ref().clone()),
        };
        if let Err(e) = settings.validate() {
            self.report_setting(&key, e, |k| consumer.span_of(k), raw.span());
        }

        if let Some(dlq) = &consumer.dead_letter_queue {
            let dlq_key = key.child("dead_letter_queue");
            if dlq.get_ref() == queue {
                let message = format!("queue `{queue}` cannot be its own dead_letter_queue");
                self.report(&dlq_key, dlq.span(), message);
            } else {
                self.check_declared(&dlq_key, dlq);
            }
        }

        let max_concurrency = consumer.max_concurrency.as_ref().map(|value| {
            let n = *value.get_ref();
            if !(1..=MAX_CONCURRENCY).contains(&n) {
                self.report(
                    &key.child("max_concurrency"),
                    value.span(),
                    format!("{n} is out of range (1..={MAX_CONCURRENCY})"),
                );
            }
            n
        });

        ConsumerConfig {
            queue: queue.clone(),
            settings,
            max_concurrency,
        }
    }

    fn limits(&mut self, key: &KeyPath, raw: &RawLimits) -> Limits {
        let mut limits = Limits::default();
        if let Some(timeout) = &raw.timeout {
            let text = timeout.get_ref();
            let range = Limits::MIN_TIMEOUT..=Limits::MAX_TIMEOUT;
            match parse_duration(text) {
                Ok(duration) if range.contains(&duration) => limits.timeout = duration,
                Ok(_) => {
                    let message = format!(
                        "`{text}` is out of range ({}..={})",
                        format_duration(Limits::MIN_TIMEOUT),
                        format_duration(Limits::MAX_TIMEOUT)
                    );
                    self.report(&key.child("timeout"), timeout.span(), message);
                }
                Err(message) => self.report(&key.child("timeout"), timeout.span(), message),
            }
        }
        if let Some(memory) = &raw.memory {
            let text = memory.get_ref();
            let range = Limits::MIN_MEMORY_BYTES..=Limits::MAX_MEMORY_BYTES;
            match parse_size(text) {
                Ok(bytes) if range.contains(&bytes) => limits.memory_bytes = bytes,
                Ok(_) => {
                    let message = format!("`{text}` is out of range (1MiB..=4GiB)");
                    self.report(&key.child("memory"), memory.span(), message);
                }
                Err(message) => self.report(&key.child("memory"), memory.span(), message),
            }
        }
        let counts = [
            (
                "table_elements",
                &raw.table_elements,
                &mut limits.table_elements,
                Limits::MAX_TABLE_ELEMENTS,
            ),
            (
                "instances",
                &raw.instances,
                &mut limits.instances,
                Limits::MAX_COUNT,
            ),
            ("tables", &raw.tables, &mut limits.tables, Limits::MAX_COUNT),
            (
                "memories",
                &raw.memories,
                &mut limits.memories,
                Limits::MAX_COUNT,
            ),
        ];
        for (name, value, limit, max) in counts {
            match value {
                Some(n) if (1..=max).contains(n.get_ref()) => *limit = *n.get_ref(),
                Some(n) => {
                    let message = format!("{} is out of range (1..={max})", n.get_ref());
                    self.report(&key.child(name), n.span(), message);
                }
                None => {}
            }
        }
        limits
    }
}

/// Binding names (`producers = { JOBS = "jobs" }`): letters, digits and `_`.
pub(crate) fn is_binding_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Environment variable names: letters, digits and `_`, not starting with a digit.
pub(crate) fn is_env_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
