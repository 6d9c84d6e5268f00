//! [`ConfigError`]: what is wrong with a manifest or a fixture file, and where;
//! [`ConfigErrors`]: every such problem of one file.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

/// One problem with a manifest or a fixture file, located in it.
///
/// Displayed as `FILE:LINE:COLUMN: KEY: MESSAGE`, for example
/// `manifest.toml:14:18: components.worker.consumer.max_batch_size: 101 is out of range (1..=100)`.
/// The position and the key are left out when they are not known (an unreadable file has
/// neither; a TOML syntax error has a position but no key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as it was given to the function that read it.
    pub file: PathBuf,
    /// Where in the file the offending key or value is.
    pub position: Option<Position>,
    /// The dotted path of the offending key, such as `components.worker.consumer.queue`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The line of the file the position is on, shown under the error with a caret.
    pub source_line: Option<String>,
}

impl ConfigError {
    /// The 1-based line of the offending key or value, if the error has a place in the file.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }

    /// The 1-based column (in characters) of the offending key or value, if the error has a
    /// place in the file.
    pub fn column(&self) -> Option<usize> {
        self.position.map(|p| p.column)
    }

    /// The dotted path of the offending key, or `""` if the error is not about one key.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }

    /// An error about the file as a whole (it cannot be read, say).
    pub(crate) fn whole_file(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            position: None,
            key: None,
            message: message.into(),
            source_line: None,
        }
    }

    /// Turns an error from the `toml` crate into one that names the key it is about, found by
    /// looking up the error's span in the parsed document (`None` for syntax errors).
    pub(crate) fn from_toml(
        file: impl Into<PathBuf>,
        text: &str,
        document: Option<&DeTable<'_>>,
        error: &toml::de::Error,
    ) -> Self {
        let span = error.span();
        let key = match (document, &span) {
            (Some(document), Some(span)) => key_at(document, span),
            _ => None,
        };
        // Syntax errors come as "description, expected x, y"; some carry a second line.
        let message = error.message().trim().replace('\n', "; ");
        let position = span.map(|span| Position::of(text, span.start));
        Self {
            file: file.into(),
            source_line: position.and_then(|p| line_of(text, p)),
            position,
            key,
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(Position { line, column }) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file, in the order they appear in it (never empty).
///
/// Displayed one problem per line, so a user fixes them all in one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, sorted by position (whole-file problems first); `None` if there are
    /// none.
    pub(crate) fn new(mut errors: Vec<ConfigError>) -> Option<Self> {
        errors.sort_by_key(|e| e.position);
        (!errors.is_empty()).then_some(Self(errors))
    }

    /// The problem earliest in the file.
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }

    /// Every problem, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

/// Each problem on its line, then the line of the file it is on with a caret under the
/// column, as compilers show them:
///
/// ```text
/// manifest.toml:3:18: queues.jobs.delivery_delay: 86401 is out of range (0..=86400)
///     3 | delivery_delay = 86401
///       |                  ^
/// ```
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
            if let (Some(line), Some(position)) = (&error.source_line, error.position) {
                let number = position.line.to_string();
                let gutter = " ".repeat(number.len());
                let caret = " ".repeat(position.column.saturating_sub(1));
                write!(f, "\n    {number} | {line}\n    {gutter} | {caret}^")?;
            }
        }
        Ok(())
    }
}

/// Line `position.line` of `text`, without its line break (tabs shown as spaces, so that the
/// caret lines up).
pub(crate) fn line_of(text: &str, position: Position) -> Option<String> {
    let line = text.lines().nth(position.line.checked_sub(1)?)?;
    Some(line.replace('\t', " "))
}

/// A place in a file, both numbers starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The line.
    pub line: usize,
    /// The column, counted in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text`.
    pub fn of(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A dotted key path such as `components.worker.consumer`, quoting segments that are not bare
/// TOML keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(String);

impl KeyPath {
    /// A top-level key.
    pub(crate) fn root(key: &str) -> Self {
        Self::default().child(key)
    }

    /// The path of `key` inside this one.
    pub(crate) fn child(&self, key: &str) -> Self {
        let bare = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let segment = if bare {
            key.to_owned()
        } else {
            format!("{key:?}")
        };
        if self.0.is_empty() {
            Self(segment)
        } else {
            Self(format!("{}.{segment}", self.0))
        }
    }

    /// The path of element `index` of the array at this path.
    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The path of the key or value of `document` that most tightly encloses `span`.
fn key_at(document: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    let mut best: Option<(usize, KeyPath)> = None;
    visit_table(document, &KeyPath::default(), span, &mut best);
    best.map(|(_, path)| path.to_string())
}

fn visit_table(
    table: &DeTable<'_>,
    path: &KeyPath,
    span: &Range<usize>,
    best: &mut Option<(usize, KeyPath)>,
) {
    for (key, value) in table {
        let path = path.child(key.get_ref());
        consider(key.span(), &path, span, best);
        consider(value.span(), &path, span, best);
        visit_value(value.get_ref(), &path, span, best);
    }
}

fn visit_value(
    value: &DeValue<'_>,
    path: &KeyPath,
    span: &Range<usize>,
    best: &mut Option<(usize, KeyPath)>,
) {
    match value {
        DeValue::Table(table) => visit_table(table, path, span, best),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                let path = path.index(i);
                consider(item.span(), &path, span, best);
                visit_value(item.get_ref(), &path, span, best);
            }
        }
        _ => {}
    }
}

/// Keeps `path` if `candidate` encloses `span` more tightly than the best so far (on a tie, the
/// deeper path, visited later, wins).
fn consider(
    candidate: Range<usize>,
    path: &KeyPath,
    span: &Range<usize>,
    best: &mut Option<(usize, KeyPath)>,
) {
    let encloses = candidate.start <= span.start && span.end <= candidate.end;
    let size = candidate.end - candidate.start;
    if encloses
        && best
            .as_ref()
            .is_none_or(|(best_size, _)| size <= *best_size)
    {
        *best = Some((size, path.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(Position::of(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::of(text, 6), Position { line: 2, column: 1 });
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(Position::of(text, 12), Position { line: 2, column: 6 });
        assert_eq!(Position::of(text, 999), Position { line: 3, column: 1 });
    }

    #[test]
    fn key_paths_quote_what_is_not_bare() {
        let path = KeyPath::root("components").child("my.worker").child("env");
        assert_eq!(path.to_string(), r#"components."my.worker".env"#);
        assert_eq!(
            KeyPath::root("hosts").index(2).to_string(),
            "hosts[2]".to_owned()
        );
    }
}
