//! The manifest exactly as written: what serde reads from the TOML, with the span of every
//! value that is checked afterwards.
//!
//! Unknown keys and wrong types are refused here (`deny_unknown_fields`, typed fields); ranges,
//! names and references are checked in [`super::check`]. The consumer and limits tables are
//! the ones fixture files use too ([`crate::config::raw`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::config::raw::{RawConsumer, RawLimits};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    #[serde(default)]
    pub host: RawHost,
    #[serde(default)]
    pub queues: BTreeMap<Spanned<String>, RawQueue>,
    #[serde(default)]
    pub components: BTreeMap<Spanned<String>, RawComponent>,
}

/// `[host]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub data_dir: Option<Spanned<String>>,
    pub listen: Option<Spanned<String>>,
    pub api_token: Option<Spanned<String>>,
    pub component_cache: Option<Spanned<bool>>,
    pub pooling_allocator: Option<Spanned<bool>>,
    pub max_batches_in_flight: Option<Spanned<u32>>,
    pub max_connections: Option<Spanned<u32>>,
    pub access_log: Option<Spanned<bool>>,
    pub shutdown_timeout: Option<Spanned<String>>,
    pub storage: Option<Spanned<String>>,
}

/// `[queues.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    pub delivery_delay: Option<Spanned<u32>>,
    pub message_retention_period: Option<Spanned<u32>>,
    pub dedup_window: Option<Spanned<u32>>,
    pub pull_consumer: Option<Spanned<RawPullConsumer>>,
}

/// `queues.NAME.pull_consumer`: the queue is consumed over HTTP, not by a component.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPullConsumer {
    pub visibility_timeout_ms: Option<Spanned<u64>>,
    pub max_retries: Option<Spanned<u32>>,
    pub retry_delay: Option<Spanned<u32>>,
    pub dead_letter_queue: Option<Spanned<String>>,
}

/// `[components.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub source: Spanned<String>,
    pub build: Option<Spanned<String>>,
    pub route: Option<Spanned<String>>,
    pub route_requires_token: Option<Spanned<bool>>,
    pub route_max_concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    pub producers: BTreeMap<Spanned<String>, Spanned<String>>,
    pub consumer: Option<Spanned<RawConsumer>>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// The value of an optional setting, or its default.
pub(super) fn value_or<T: Copy>(value: &Option<Spanned<T>>, default: T) -> T {
    value.as_ref().map_or(default, |v| *v.get_ref())
}
