//! The checks manifests and fixture files share, and the collector of their errors.
//!
//! A [`Checker`] records every problem it finds instead of stopping at the first, so a file
//! with several mistakes is reported whole. The ranges come from where they are enforced: the
//! engine's `validate` for queue and consumer settings, [`ComponentLimits`] for limits; this
//! module only says which written value broke them.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, KeyPath, Position, line_of};
use super::raw::{RawConsumer, RawLimits};
use super::units::{format_duration, format_size, parse_duration, parse_size};
use crate::engine::{BrokerError, BrokerResult, ConsumerSettings};
use crate::runtime::{ComponentLimits, InstanceReuse};

/// Largest `max_concurrency` of a consumer.
pub const MAX_CONCURRENCY: u32 = 250;

/// A number of a settings table: its key, its value if written, and how to set it.
pub(crate) type Number<'a, S> = (&'a str, &'a Option<Spanned<u32>>, fn(&mut S, u32));

/// The errors found so far in one file.
pub(crate) struct Checker<'a> {
    text: &'a str,
    file: &'a Path,
    errors: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    /// A checker of `text`, read from `file`.
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        Self {
            text,
            file,
            errors: Vec::new(),
        }
    }

    /// The file being checked.
    pub(crate) fn file(&self) -> &Path {
        self.file
    }

    /// Where `span` starts.
    pub(crate) fn position(&self, span: Range<usize>) -> Position {
        Position::of(self.text, span.start)
    }

    /// Records an error about `key`, whose key or value is at `span`.
    pub(crate) fn report(&mut self, key: &KeyPath, span: Range<usize>, message: impl Into<String>) {
        let position = self.position(span);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position: Some(position),
            key: Some(key.to_string()),
            message: message.into(),
            source_line: line_of(self.text, position),
        });
    }

    /// Records an error about `key` with no place in the file (a required key is missing).
    pub(crate) fn report_unplaced(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position: None,
            key: Some(key.to_owned()),
            message: message.into(),
            source_line: None,
        });
    }

    /// Every error recorded, or `Ok` if there is none.
    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        ConfigErrors::new(self.errors).map_or(Ok(()), Err)
    }

    /// Applies each number written in `table` (its name, its value if written, how to set
    /// it) to `settings`, and blames the ones `validate` (the engine's own ranges) refuses.
    /// Each value is checked on its own, against defaults, so each bad value is reported
    /// once, at its own line.
    pub(crate) fn settings<S: Default>(
        &mut self,
        table: &KeyPath,
        numbers: &[Number<'_, S>],
        settings: &mut S,
        validate: fn(&S) -> BrokerResult<()>,
    ) {
        for &(name, value, set) in numbers {
            let Some(value) = value else { continue };
            let n = *value.get_ref();
            let mut probe = S::default();
            set(&mut probe, n);
            match validate(&probe) {
                Ok(()) => {}
                Err(BrokerError::InvalidSetting { min, max, .. }) => self.report(
                    &table.child(name),
                    value.span(),
                    format!("{n} is out of range ({min}..={max})"),
                ),
                Err(other) => self.report(&table.child(name), value.span(), other.to_string()),
            }
            set(settings, n);
        }
    }

    /// The batching and retry numbers of a consumer table applied over `base`. The queue
    /// and the dead-letter queue are the caller's: what they may name differs.
    pub(crate) fn consumer_settings(
        &mut self,
        table: &KeyPath,
        raw: &RawConsumer,
        mut base: ConsumerSettings,
    ) -> ConsumerSettings {
        let numbers: [Number<'_, ConsumerSettings>; 4] = [
            ("max_batch_size", &raw.max_batch_size, |s, n| {
                s.max_batch_size = n
            }),
            ("max_batch_timeout", &raw.max_batch_timeout, |s, n| {
                s.max_batch_timeout = n
            }),
            ("max_retries", &raw.max_retries, |s, n| s.max_retries = n),
            ("retry_delay", &raw.retry_delay, |s, n| s.retry_delay = n),
        ];
        self.settings(table, &numbers, &mut base, ConsumerSettings::validate);
        base
    }

    /// A consumer table's `max_concurrency`, if written.
    pub(crate) fn max_concurrency(&mut self, table: &KeyPath, raw: &RawConsumer) -> Option<u32> {
        let value = raw.max_concurrency.as_ref()?;
        let n = *value.get_ref();
        self.in_range(table, "max_concurrency", value, 1..=MAX_CONCURRENCY);
        Some(n)
    }

    /// A consumer table's `fresh_instance` and `max_batches_per_instance` (not both).
    pub(crate) fn instance_reuse(&mut self, table: &KeyPath, raw: &RawConsumer) -> InstanceReuse {
        let max_batches = self.number_or(
            table,
            "max_batches_per_instance",
            &raw.max_batches_per_instance,
            1..=InstanceReuse::MAX_BATCHES,
            InstanceReuse::DEFAULT_MAX_BATCHES,
        );
        match (&raw.fresh_instance, &raw.max_batches_per_instance) {
            (Some(fresh), Some(_)) if *fresh.get_ref() => {
                let message = "set fresh_instance or max_batches_per_instance, not both";
                self.report(&table.child("fresh_instance"), fresh.span(), message);
                InstanceReuse::FRESH
            }
            (Some(fresh), _) if *fresh.get_ref() => InstanceReuse::FRESH,
            _ => InstanceReuse { max_batches },
        }
    }

    /// Blames `value` at `table.name` if it is outside `range`.
    pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
        &mut self,
        table: &KeyPath,
        name: &str,
        value: &Spanned<T>,
        range: RangeInclusive<T>,
    ) -> bool {
        let inside = range.contains(value.get_ref());
        if !inside {
            let message = format!(
                "{} is out of range ({}..={})",
                value.get_ref(),
                range.start(),
                range.end()
            );
            self.report(&table.child(name), value.span(), message);
        }
        inside
    }

    /// The number written at `table.name`, if it is in `range`; else `default` (blaming an
    /// out-of-range value).
    pub(crate) fn number_or<T: Copy + PartialOrd + std::fmt::Display>(
        &mut self,
        table: &KeyPath,
        name: &str,
        value: &Option<Spanned<T>>,
        range: RangeInclusive<T>,
        default: T,
    ) -> T {
        match value {
            Some(value) if self.in_range(table, name, value, range) => *value.get_ref(),
            _ => default,
        }
    }

    /// The duration written at `table.name` (such as `"30s"`), if it reads as one within
    /// `range`; else `None`, blaming the value.
    pub(crate) fn duration(
        &mut self,
        table: &KeyPath,
        name: &str,
        value: &Spanned<String>,
        range: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let text = value.get_ref();
        let message = match parse_duration(text) {
            Ok(duration) if range.contains(&duration) => return Some(duration),
            Ok(_) => format!(
                "`{text}` is out of range ({}..={})",
                format_duration(*range.start()),
                format_duration(*range.end())
            ),
            Err(message) => message,
        };
        self.report(&table.child(name), value.span(), message);
        None
    }

    /// Blames `dlq`, the dead-letter queue written at `key` for a consumer of `queue`, if it
    /// is `queue` itself; says whether it did.
    pub(crate) fn own_dead_letter_queue(
        &mut self,
        key: &KeyPath,
        dlq: &Spanned<String>,
        queue: &str,
    ) -> bool {
        let own = dlq.get_ref() == queue;
        if own {
            let message = format!("queue `{queue}` cannot be its own dead_letter_queue");
            self.report(key, dlq.span(), message);
        }
        own
    }

    /// A limits table applied over `base`.
    pub(crate) fn limits(
        &mut self,
        table: &KeyPath,
        raw: &RawLimits,
        mut base: ComponentLimits,
    ) -> ComponentLimits {
        if let Some(timeout) = &raw.timeout
            && let Some(duration) = self.duration(
                table,
                "timeout",
                timeout,
                ComponentLimits::MIN_TIMEOUT..=ComponentLimits::MAX_TIMEOUT,
            )
        {
            base.timeout = duration;
        }
        if let Some(memory) = &raw.memory {
            let text = memory.get_ref();
            let range = ComponentLimits::MIN_MEMORY_BYTES..=ComponentLimits::MAX_MEMORY_BYTES;
            match parse_size(text).map(usize::try_from) {
                Ok(Ok(bytes)) if range.contains(&bytes) => base.memory_bytes = bytes,
                Ok(_) => {
                    let message = format!(
                        "`{text}` is out of range ({}..={})",
                        format_size(*range.start() as u64),
                        format_size(*range.end() as u64)
                    );
                    self.report(&table.child("memory"), memory.span(), message);
                }
                Err(message) => self.report(&table.child("memory"), memory.span(), message),
            }
        }
        type Slot = fn(&mut ComponentLimits) -> &mut usize;
        let counts: [(&str, &Option<Spanned<u32>>, Slot, u32); 4] = [
            (
                "table_elements",
                &raw.table_elements,
                |l| &mut l.table_elements,
                ComponentLimits::MAX_TABLE_ELEMENTS,
            ),
            (
                "instances",
                &raw.instances,
                |l| &mut l.instances,
                ComponentLimits::MAX_COUNT,
            ),
            (
                "tables",
                &raw.tables,
                |l| &mut l.tables,
                ComponentLimits::MAX_COUNT,
            ),
            (
                "memories",
                &raw.memories,
                |l| &mut l.memories,
                ComponentLimits::MAX_COUNT,
            ),
        ];
        for (name, value, slot, max) in counts {
            if let Some(value) = value
                && self.in_range(table, name, value, 1..=max)
            {
                *slot(&mut base) = *value.get_ref() as usize;
            }
        }
        base
    }

    /// Blames `name`, written at `key`, if it is not a binding name (letters, digits and
    /// `_`), as in `producers = { JOBS = "jobs" }`.
    pub(crate) fn binding_name(&mut self, key: &KeyPath, name: &Spanned<String>) {
        let text = name.get_ref();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let message =
                format!("`{text}` is not a binding name: use letters, digits and `_` only");
            self.report(key, name.span(), message);
        }
    }

    /// Blames `name`, written at `key`, if it is not an environment variable name (letters,
    /// digits and `_`, not starting with a digit).
    pub(crate) fn env_name(&mut self, key: &KeyPath, name: &Spanned<String>) {
        let text = name.get_ref();
        let valid = text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            let message = format!(
                "`{text}` is not an environment variable name: use letters, digits and `_`, \
                 not starting with a digit"
            );
            self.report(key, name.span(), message);
        }
    }
}

/// Why `path` is not a readable file, if it is not; `when_missing` ends the message when it
/// does not exist (how to make it).
pub(crate) fn file_problem(path: &Path, when_missing: &str) -> Result<(), String> {
    let name = path.display();
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => Ok(()),
        Ok(_) => Err(format!("`{name}` is not a file")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("`{name}` does not exist{when_missing}"))
        }
        Err(e) => Err(format!("cannot read `{name}`: {e}")),
    }
}
