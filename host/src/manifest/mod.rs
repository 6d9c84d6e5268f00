//! The manifest: one `manifest.toml` that declares the host's settings, its queues and the
//! components that produce to and consume from them.
//!
//! ```toml
//! [host]
//! data_dir = ".wasmq"          # redb lives here (relative to this file)
//! listen = "127.0.0.1:8787"    # producer routes and the HTTP API
//!
//! [queues.jobs]
//! delivery_delay = 0
//! [queues.jobs-dlq]
//!
//! [components.webhook]
//! source = "target/wasm32-wasip2/release/webhook.wasm"
//! build = "cargo build --release --target wasm32-wasip2 -p webhook"
//! route = "/webhook"
//! producers = { JOBS = "jobs" }
//!
//! [components.worker]
//! source = "target/wasm32-wasip2/release/worker.wasm"
//! consumer = { queue = "jobs", max_batch_size = 10, dead_letter_queue = "jobs-dlq" }
//! limits = { timeout = "30s", memory = "64MiB" }
//! allowed_outbound_hosts = ["https://api.example.com"]
//! env = { LOG_LEVEL = "debug" }
//! ```
//!
//! [`load`] reads and checks the whole file: unknown keys, wrong types, out-of-range values,
//! invalid names and references to undeclared queues are all refused, every one of them at
//! once, each [`ConfigError`] naming the file, the line and column, and the dotted key.

mod check;
mod raw;
mod route;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::engine::{ConsumerSettings, QueueSettings};

pub use self::route::Route;
use crate::config::{ConfigError, ConfigErrors, KeyPath, Position};
use crate::runtime::{AllowedHost, ComponentLimits, InstanceReuse};

/// `host.data_dir` when the manifest gives none.
pub const DEFAULT_DATA_DIR: &str = ".wasmq";
/// `host.listen` when the manifest gives none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// A checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file, as given to [`load`].
    pub path: PathBuf,
    /// The absolute folder holding the manifest; relative paths in it are resolved against
    /// this folder, and `build` commands are meant to run in it.
    pub dir: PathBuf,
    /// `[host]`.
    pub host: HostConfig,
    /// Every declared queue with its settings. A queue's `consumer` settings come from the
    /// component that consumes it (the defaults if none does).
    pub queues: BTreeMap<String, QueueSettings>,
    /// Every component, by name.
    pub components: BTreeMap<String, ComponentConfig>,
    /// The queues consumed over HTTP (`pull_consumer`), by name. Their retry settings are in
    /// `queues`.
    pub pull_consumers: BTreeMap<String, PullConsumerConfig>,
    /// Where each component's `source` is written, for [`Manifest::check_sources`].
    source_positions: BTreeMap<String, Position>,
}

/// The `[host]` table.
#[derive(Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Where the queues are stored (default `.wasmq`, resolved against the manifest's folder).
    pub data_dir: PathBuf,
    /// Address of the HTTP server for producer routes and the API (default `127.0.0.1:8787`).
    pub listen: SocketAddr,
    /// Bearer token required by the HTTP API, if set.
    pub api_token: Option<String>,
    /// Whether compiled components are cached in `data_dir/cache` (default true).
    pub component_cache: bool,
    /// Whether to use wasmtime's pooling allocator where the machine allows (default true).
    pub pooling_allocator: bool,
    /// Batches in flight across all consumers at once (default 64).
    pub max_batches_in_flight: u32,
    /// HTTP connections open at once (default 1024; lowered to fit the open-file limit).
    pub max_connections: u32,
    /// Log every request on a producer route (default false).
    pub access_log: bool,
    /// How long a shutdown waits for running batches before exiting anyway (default 30 s).
    pub shutdown_timeout: Duration,
    /// Where the queues live (default: redb in `data_dir`; `WASMQ_STORAGE` when unset here).
    pub storage: Storage,
}

/// Where a host keeps its queues.
#[derive(Clone, PartialEq, Eq)]
pub enum Storage {
    /// The embedded redb file `data_dir/queues.redb`, owned by this host alone.
    Redb,
    /// A PostgreSQL database shared by any number of hosts (`postgres://…` URL or libpq
    /// key=value string).
    Postgres(String),
}

impl Storage {
    /// Reads `redb` or a `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "redb" {
            Ok(Storage::Redb)
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Storage::Postgres(text.to_owned()))
        } else {
            Err(format!(
                "`{}` is not a storage: use \"redb\" or a \"postgres://user@host/db\" URL",
                redact(text)
            ))
        }
    }
}

/// `text` with the password of a URL (`scheme://user:password@…`) replaced by `***`.
fn redact(text: &str) -> String {
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => {
            let credentials = &text[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &text[..scheme + 3], &text[at..]),
                None => text.to_owned(),
            }
        }
        _ => text.to_owned(),
    }
}

impl fmt::Debug for Storage {
    /// Never prints a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Redb => f.write_str("Redb"),
            Storage::Postgres(url) => write!(f, "Postgres({})", redact(url)),
        }
    }
}

impl HostConfig {
    /// Default of `max_batches_in_flight`.
    pub const DEFAULT_MAX_BATCHES_IN_FLIGHT: u32 = 64;
    /// Upper bound of `max_batches_in_flight` (half the consumers' pool of instance slots).
    pub const MAX_BATCHES_IN_FLIGHT: u32 = 500;
    /// Default of `shutdown_timeout`.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    /// Upper bound of `shutdown_timeout`.
    pub const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3600);
    /// Default of `max_connections`.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
    /// Upper bound of `max_connections`.
    pub const MAX_CONNECTIONS: u32 = 65_536;
}

impl fmt::Debug for HostConfig {
    /// Like a derived `Debug`, without printing the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("component_cache", &self.component_cache)
            .field("pooling_allocator", &self.pooling_allocator)
            .field("max_batches_in_flight", &self.max_batches_in_flight)
            .field("max_connections", &self.max_connections)
            .field("access_log", &self.access_log)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("storage", &self.storage)
            .finish()
    }
}

/// One `[components.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentConfig {
    /// The component's name (the `NAME` of its table).
    pub name: String,
    /// The `.wasm` file, resolved against the manifest's folder.
    pub source: PathBuf,
    /// A shell command that builds `source`, run by the host before loading it.
    pub build: Option<String>,
    /// Files whose changes make `run --watch` run `build` again, as globs relative to the
    /// manifest's folder (`["src/**/*.rs", "Cargo.toml"]`); empty: no rebuilds.
    pub watch: Vec<String>,
    /// The HTTP path this component answers (producers).
    pub route: Option<Route>,
    /// Whether requests on `route` need the API token, like the API (default: public).
    pub route_requires_token: bool,
    /// Requests on `route` handled at once; more are answered 503 with `Retry-After`
    /// (default [`ComponentConfig::DEFAULT_ROUTE_MAX_CONCURRENCY`]).
    pub route_max_concurrency: u32,
    /// The queues this component may send to, by binding name (`producers = { JOBS = "jobs" }`
    /// gives `JOBS` → `jobs`).
    pub bindings: BTreeMap<String, String>,
    /// The queue this component consumes, if any.
    pub consumer: Option<ConsumerConfig>,
    /// Time and memory limits of one invocation.
    pub limits: ComponentLimits,
    /// Origins the component may send HTTP requests to; empty denies all outbound requests.
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    /// Environment variables the component sees (none unless listed).
    pub env: BTreeMap<String, String>,
}

impl ComponentConfig {
    /// Default of `route_max_concurrency`.
    pub const DEFAULT_ROUTE_MAX_CONCURRENCY: u32 = 100;
    /// Upper bound of `route_max_concurrency` (the producers' instance pool holds 1000).
    pub const MAX_ROUTE_CONCURRENCY: u32 = 1000;
}

/// A queue's `pull_consumer` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullConsumerConfig {
    /// How long a pulled message stays leased when the pull does not say (ms, default 30 000).
    pub visibility_timeout_ms: u64,
}

/// Default of `pull_consumer.visibility_timeout_ms`.
pub const DEFAULT_VISIBILITY_TIMEOUT_MS: u64 = 30_000;

/// A component's `consumer` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The queue it consumes.
    pub queue: String,
    /// Batching, retries and dead-lettering (wrangler's names); also copied onto the queue's
    /// [`QueueSettings::consumer`].
    pub settings: ConsumerSettings,
    /// Most batches handled at once (1..=250); `None` lets the host decide.
    pub max_concurrency: Option<u32>,
    /// How many batches one instance runs (`fresh_instance`, `max_batches_per_instance`).
    pub reuse: InstanceReuse,
}

/// The JSON Schema of a manifest, derived from the types that read it (so it cannot drift from
/// what the host accepts). Editors that understand a `#:schema` line (Taplo, Even Better TOML)
/// use it to complete keys and flag unknown ones; ranges and cross-references are checked
/// only by the host.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(raw::RawManifest);
    schema.insert("title".into(), "wasmq manifest".into());
    schema.to_value()
}

/// Reads and checks the manifest at `path`.
///
/// The `source` of every component without a `build` command must exist; call
/// [`Manifest::check_sources`] after running the build commands for the others.
pub fn load(path: &Path) -> Result<Manifest, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::whole_file(path, format!("cannot read the manifest: {e}")))?;
    parse(&text, path)
}

/// Checks the manifest `text`, read from `path` (used to resolve relative paths and to name
/// the file in errors).
pub fn parse(text: &str, path: &Path) -> Result<Manifest, ConfigErrors> {
    let document =
        toml::de::DeTable::parse(text).map_err(|e| ConfigError::from_toml(path, text, None, &e))?;
    let raw = <raw::RawManifest as serde::Deserialize>::deserialize(toml::Deserializer::from(
        document.clone(),
    ))
    .map_err(|e| ConfigError::from_toml(path, text, Some(document.get_ref()), &e))?;
    check::check(raw, text, path)
}

impl Manifest {
    /// Checks that the `source` of every component is a file; meant for after the `build`
    /// commands have run.
    pub fn check_sources(&self) -> Result<(), ConfigErrors> {
        let errors = self
            .components
            .values()
            .filter_map(|component| {
                check::source_file(&component.source, component.build.is_some())
                    .err()
                    .map(|message| self.source_error(&component.name, message))
            })
            .collect();
        ConfigErrors::new(errors).map_or(Ok(()), Err)
    }

    /// An error about what component `name`'s `source` holds (it is not a component, not of
    /// its world…), placed at its `source` key.
    pub fn source_error(&self, name: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            position: self.source_positions.get(name).copied(),
            key: Some(
                KeyPath::root("components")
                    .child(name)
                    .child("source")
                    .to_string(),
            ),
            message: message.into(),
            source_line: None,
        }
    }

    /// The component that consumes `queue`, if any.
    pub fn consumer_of(&self, queue: &str) -> Option<&ComponentConfig> {
        self.components.values().find(|c| {
            c.consumer
                .as_ref()
                .is_some_and(|consumer| consumer.queue == queue)
        })
    }
}
