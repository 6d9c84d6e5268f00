//! Durations such as `"30s"` and sizes such as `"64MiB"`, as written in `limits`.

use std::time::Duration;

/// Parses a duration such as `"30s"`, `"500ms"` or `"1m 30s"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like \"30s\" or \"500ms\" ({e})"))
}

/// Writes a duration the way [`parse_duration`] reads it.
pub(crate) fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

/// Units of [`parse_size`], with their size in bytes.
const SIZE_UNITS: [(&str, u64); 7] = [
    ("B", 1),
    ("KB", 1000),
    ("MB", 1000 * 1000),
    ("GB", 1000 * 1000 * 1000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
];

/// Parses a size such as `"64MiB"`, `"512 KiB"` or `"1GB"` into bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("`{text}` is not a size like \"64MiB\" (units: B, KB, MB, GB, KiB, MiB, GiB)");
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let (_, unit_bytes) = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit.trim_start())
        .ok_or_else(invalid)?;
    number
        .checked_mul(*unit_bytes)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Writes a size the way [`parse_size`] reads it, in the largest binary unit that divides it
/// exactly: `"4GiB"`, `"1MiB"`, `"1536KiB"`, `"100B"`.
pub(crate) fn format_size(bytes: u64) -> String {
    SIZE_UNITS
        .iter()
        .rev()
        .filter(|(name, _)| name.ends_with("iB"))
        .find(|&&(_, unit_bytes)| bytes != 0 && bytes.is_multiple_of(unit_bytes))
        .map_or_else(
            || format!("{bytes}B"),
            |&(name, unit_bytes)| format!("{}{name}", bytes / unit_bytes),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("100B"), Ok(100));
        for bad in ["", "64", "MiB", "64 mb", "64MiBs", "-1MiB", "1.5GiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn formatted_sizes() {
        assert_eq!(format_size(1 << 20), "1MiB");
        assert_eq!(format_size(4 << 30), "4GiB");
        assert_eq!(format_size(1536 << 10), "1536KiB");
        assert_eq!(format_size(100), "100B");
        assert_eq!(format_size(0), "0B");
        // The memory range of `limits`, as its error message writes it.
        let range = format!(
            "{}..={}",
            format_size(crate::runtime::ComponentLimits::MIN_MEMORY_BYTES as u64),
            format_size(crate::runtime::ComponentLimits::MAX_MEMORY_BYTES as u64)
        );
        assert_eq!(range, "1MiB..=4GiB");
        for bytes in [1 << 20, 4 << 30, 1536 << 10, 100, 3 * (1 << 30) + 1] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_duration(Duration::from_secs(15 * 60)), "15m");
        assert_eq!(format_duration(Duration::from_millis(1)), "1ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
