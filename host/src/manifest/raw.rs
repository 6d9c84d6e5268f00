//! The manifest exactly as written: what serde reads from the TOML, with the span of every
//! value that is checked afterwards.
//!
//! Unknown keys and wrong types are refused here (`deny_unknown_fields`, typed fields); ranges,
//! names and references are checked in [`super::check`]. The consumer and limits tables are
//! the ones fixture files use too ([`crate::config::raw`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;

use crate::config::raw::{RawConsumer, RawLimits};

/// The whole file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Manifest")]
pub(super) struct RawManifest {
    /// The host process: where it keeps queues, where it listens, its limits.
    #[serde(default)]
    pub host: RawHost,
    /// Every queue, by name (1 to 63 lowercase letters, digits, `-` and `_`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawQueue>")]
    pub queues: BTreeMap<Spanned<String>, RawQueue>,
    /// Every component, by name: a producer (`route`) or a consumer (`consumer`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawComponent>")]
    pub components: BTreeMap<Spanned<String>, RawComponent>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Host")]
pub(super) struct RawHost {
    /// Where the queues (redb) and the compiled-component cache live, relative to this file. Default `.wasmq`.
    #[schemars(with = "Option<String>")]
    pub data_dir: Option<Spanned<String>>,
    /// Address of the HTTP server (producer routes, the API). Default `127.0.0.1:8787`.
    #[schemars(with = "Option<String>")]
    pub listen: Option<Spanned<String>>,
    /// Bearer token the HTTP API requires (none by default).
    #[schemars(with = "Option<String>")]
    pub api_token: Option<Spanned<String>>,
    /// Cache compiled components in `data_dir/cache`. Default true.
    #[schemars(with = "Option<bool>")]
    pub component_cache: Option<Spanned<bool>>,
    /// Use wasmtime's pooling allocator where the machine allows. Default true.
    #[schemars(with = "Option<bool>")]
    pub pooling_allocator: Option<Spanned<bool>>,
    /// Batches in flight across all consumers (1..=500). Default 64.
    #[schemars(with = "Option<u32>")]
    pub max_batches_in_flight: Option<Spanned<u32>>,
    /// HTTP connections open at once (1..=65536). Default 1024.
    #[schemars(with = "Option<u32>")]
    pub max_connections: Option<Spanned<u32>>,
    /// Log every request on a producer route. Default false.
    #[schemars(with = "Option<bool>")]
    pub access_log: Option<Spanned<bool>>,
    /// How long a shutdown waits for running batches, e.g. "30s" (0s..=1h).
    #[schemars(with = "Option<String>")]
    pub shutdown_timeout: Option<Spanned<String>>,
    /// `redb` (default) or a `postgres://` URL shared by several hosts.
    #[schemars(with = "Option<String>")]
    pub storage: Option<Spanned<String>>,
}

/// `[queues.NAME]`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Queue")]
pub(super) struct RawQueue {
    /// Seconds before a sent message can be delivered (0..=86400). Default 0.
    #[schemars(with = "Option<u32>")]
    pub delivery_delay: Option<Spanned<u32>>,
    /// Seconds a message is kept (60..=1209600). Default 345600 (4 days).
    #[schemars(with = "Option<u32>")]
    pub message_retention_period: Option<Spanned<u32>>,
    /// Seconds a dedup key is remembered (0..=86400; 0 turns it off). Default 300.
    #[schemars(with = "Option<u32>")]
    pub dedup_window: Option<Spanned<u32>>,
    /// Consume this queue over HTTP (pull) instead of with a component.
    #[schemars(with = "Option<RawPullConsumer>")]
    pub pull_consumer: Option<Spanned<RawPullConsumer>>,
}

/// `queues.NAME.pull_consumer`: the queue is consumed over HTTP, not by a component.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PullConsumer")]
pub(super) struct RawPullConsumer {
    /// How long a pulled message stays leased when the pull does not say (ms). Default 30000.
    #[schemars(with = "Option<u64>")]
    pub visibility_timeout_ms: Option<Spanned<u64>>,
    /// Redeliveries after the first failed attempt (0..=100). Default 3.
    #[schemars(with = "Option<u32>")]
    pub max_retries: Option<Spanned<u32>>,
    /// Seconds before a retried message is visible again (0..=86400). Default 0.
    #[schemars(with = "Option<u32>")]
    pub retry_delay: Option<Spanned<u32>>,
    /// Where messages go once their retries are exhausted (dropped if unset).
    #[schemars(with = "Option<String>")]
    pub dead_letter_queue: Option<Spanned<String>>,
}

/// `[components.NAME]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Component")]
pub(super) struct RawComponent {
    /// The component `.wasm` file, relative to this file.
    #[schemars(with = "String")]
    pub source: Spanned<String>,
    /// Shell command that builds `source`, run in this folder before loading it.
    #[schemars(with = "Option<String>")]
    pub build: Option<Spanned<String>>,
    /// Globs (relative to this file) whose changes make `run --watch` rebuild the component:
    /// `["src/**/*.rs", "Cargo.toml"]`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub watch: Vec<Spanned<String>>,
    /// HTTP path this producer answers: exact (`/hook`) or a prefix (`/hooks/...`).
    #[schemars(with = "Option<String>")]
    pub route: Option<Spanned<String>>,
    /// Requests on `route` need the API token. Default false.
    #[schemars(with = "Option<bool>")]
    pub route_requires_token: Option<Spanned<bool>>,
    /// Requests on `route` handled at once (1..=1000); more get 503. Default 100.
    #[schemars(with = "Option<u32>")]
    pub route_max_concurrency: Option<Spanned<u32>>,
    /// Queues this component may send to, by binding name: `{ JOBS = "jobs" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub producers: BTreeMap<Spanned<String>, Spanned<String>>,
    /// The queue this component consumes, and how.
    #[schemars(with = "Option<RawConsumer>")]
    pub consumer: Option<Spanned<RawConsumer>>,
    /// Time and memory limits of one call (a batch, a request).
    #[serde(default)]
    pub limits: RawLimits,
    /// Origins (`https://api.example.com`) the component may send HTTP requests to.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allowed_outbound_hosts: Vec<Spanned<String>>,
    /// Environment variables the component sees.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
}
