//! The tables that manifests and fixture files share, exactly as written: a consumer's
//! settings and a component's limits, with the span of every value that is checked
//! afterwards.

use toml::Spanned;

/// A consumer table: `components.NAME.consumer` in a manifest, `[consumer]` (and a case's
/// `consumer`) in a fixture file. The manifest requires `queue`; a fixture has a default.
#[derive(Debug, Default, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Consumer")]
pub(crate) struct RawConsumer {
    /// The queue consumed (required in a manifest).
    #[schemars(with = "Option<String>")]
    pub queue: Option<Spanned<String>>,
    /// Most messages in one batch (1..=100). Default 10.
    #[schemars(with = "Option<u32>")]
    pub max_batch_size: Option<Spanned<u32>>,
    /// Seconds to wait for a batch to fill (0..=60). Default 5.
    #[schemars(with = "Option<u32>")]
    pub max_batch_timeout: Option<Spanned<u32>>,
    /// Redeliveries after the first failed attempt (0..=100). Default 3.
    #[schemars(with = "Option<u32>")]
    pub max_retries: Option<Spanned<u32>>,
    /// Seconds before a retried message is visible again (0..=86400). Default 0.
    #[schemars(with = "Option<u32>")]
    pub retry_delay: Option<Spanned<u32>>,
    /// Where messages go once their retries are exhausted (dropped if unset).
    #[schemars(with = "Option<String>")]
    pub dead_letter_queue: Option<Spanned<String>>,
    /// Most batches handled at once (1..=250); unset lets the host scale.
    #[schemars(with = "Option<u32>")]
    pub max_concurrency: Option<Spanned<u32>>,
    /// Run every batch in a fresh instance (default false: an instance runs batch after
    /// batch, its globals persisting, until it fails or is recycled).
    #[schemars(with = "Option<bool>")]
    pub fresh_instance: Option<Spanned<bool>>,
    /// Batches one instance runs before it is replaced (1..=1000000). Default 1000.
    #[schemars(with = "Option<u32>")]
    pub max_batches_per_instance: Option<Spanned<u32>>,
}

/// A limits table: `components.NAME.limits` in a manifest, `[limits]` (and a case's `limits`)
/// in a fixture file.
#[derive(Debug, Default, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Limits")]
pub(crate) struct RawLimits {
    /// Wall-clock time of one call, e.g. "30s" (1ms..=15m). Default 30s.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// Linear memory, all memories together, e.g. "64MiB" (1MiB..=4GiB). Default 64MiB.
    #[schemars(with = "Option<String>")]
    pub memory: Option<Spanned<String>>,
    /// Table elements, all tables together (1..=10000000). Default 1000000.
    #[schemars(with = "Option<u32>")]
    pub table_elements: Option<Spanned<u32>>,
    /// Instances the component may create (1..=10000). Default 100.
    #[schemars(with = "Option<u32>")]
    pub instances: Option<Spanned<u32>>,
    /// Tables the component may create (1..=10000). Default 100.
    #[schemars(with = "Option<u32>")]
    pub tables: Option<Spanned<u32>>,
    /// Linear memories the component may create (1..=10000). Default 16.
    #[schemars(with = "Option<u32>")]
    pub memories: Option<Spanned<u32>>,
}
