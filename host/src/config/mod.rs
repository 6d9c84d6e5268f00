//! The configuration layer under the manifest ([`crate::manifest`]) and the fixture files
//! ([`crate::harness`]): the tables both accept ([`raw`]), the checks both run and the
//! collector of their errors ([`check`]), how errors name a file, line, column and key
//! ([`ConfigError`]), and the units both write (`"30s"`, `"64MiB"`).
//!
//! A file is read in two steps: serde reads it into raw structs that keep every value's span
//! (refusing unknown keys and wrong types), then a checker turns those into checked values,
//! recording every problem with its place so that all of them are reported at once.

pub(crate) mod check;
mod error;
pub(crate) mod raw;
mod units;

pub use self::check::MAX_CONCURRENCY;
pub(crate) use self::error::KeyPath;
pub use self::error::{ConfigError, ConfigErrors, Position};
