//! The tables that manifests and fixture files share, exactly as written: a consumer's
//! settings and a component's limits, with the span of every value that is checked
//! afterwards.

use toml::Spanned;

/// A consumer table: `components.NAME.consumer` in a manifest, `[consumer]` (and a case's
/// `consumer`) in a fixture file. The manifest requires `queue`; a fixture has a default.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsumer {
    pub queue: Option<Spanned<String>>,
    pub max_batch_size: Option<Spanned<u32>>,
    pub max_batch_timeout: Option<Spanned<u32>>,
    pub max_retries: Option<Spanned<u32>>,
    pub retry_delay: Option<Spanned<u32>>,
    pub dead_letter_queue: Option<Spanned<String>>,
    pub max_concurrency: Option<Spanned<u32>>,
}

/// A limits table: `components.NAME.limits` in a manifest, `[limits]` (and a case's `limits`)
/// in a fixture file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub timeout: Option<Spanned<String>>,
    pub memory: Option<Spanned<String>>,
    pub table_elements: Option<Spanned<u32>>,
    pub instances: Option<Spanned<u32>>,
    pub tables: Option<Spanned<u32>>,
    pub memories: Option<Spanned<u32>>,
}
