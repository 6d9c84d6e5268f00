//! Host manifests for tests, built in code: a test names the queues, components and `[host]`
//! keys it needs, and the TOML is written one way for every test that starts a host. Tests
//! whose subject is the manifest's text itself (its errors and the lines they name) write the
//! text by hand instead.
//!
//! This is text only (no `wasmq-host` types), so both the host's tests and the end-to-end
//! tests can use it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A TOML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A basic string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
    /// An array.
    Array(Vec<Value>),
    /// An inline table.
    Table(Table),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Self::String(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Self::String(value)
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Self::Integer(value.into())
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Self::Integer(i64::try_from(value).expect("a TOML integer"))
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<Table> for Value {
    fn from(value: Table) -> Self {
        Self::Table(value)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(values: Vec<T>) -> Self {
        Self::Array(values.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(text) => write_string(f, text),
            Value::Integer(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Array(values) => {
                f.write_str("[")?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str("]")
            }
            Value::Table(table) => write!(f, "{table}"),
        }
    }
}

/// A TOML basic string, escaped.
fn write_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c if c.is_control() => write!(f, "\\u{:04X}", u32::from(c))?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// A key, bare where TOML allows it.
fn write_key(f: &mut fmt::Formatter<'_>, key: &str) -> fmt::Result {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        f.write_str(key)
    } else {
        write_string(f, key)
    }
}

/// Keys and values in the order they were set; shown as an inline table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table(Vec<(String, Value)>);

impl Table {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (in place if it was set before).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value.into());
        self
    }

    fn insert(&mut self, key: &str, value: Value) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// Writes the keys one a line, as the body of a `[table]`.
    fn write_lines(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, value) in &self.0 {
            write_key(f, key)?;
            writeln!(f, " = {value}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("{}");
        }
        f.write_str("{ ")?;
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write_key(f, key)?;
            write!(f, " = {value}")?;
        }
        f.write_str(" }")
    }
}

/// A `[queues.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    name: String,
    keys: Table,
}

impl Queue {
    /// Queue `name` with the default settings.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            keys: Table::new(),
        }
    }

    /// Sets one of the queue's keys (`dedup_window`, `delivery_delay`…).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.insert(key, value.into());
        self
    }

    /// Makes it a pull queue with `settings` (`visibility_timeout_ms`, `max_retries`…).
    pub fn pull_consumer(self, settings: Table) -> Self {
        self.set("pull_consumer", settings)
    }
}

impl From<&str> for Queue {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// A component's `consumer = { queue = …, … }` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Consumer(Table);

impl Consumer {
    /// Consumes `queue` with the default batching.
    pub fn on(queue: &str) -> Self {
        Self(Table::new().set("queue", queue))
    }

    /// Most messages in a batch.
    pub fn max_batch_size(self, messages: u32) -> Self {
        self.set("max_batch_size", messages)
    }

    /// Seconds a batch waits to fill.
    pub fn max_batch_timeout(self, seconds: u32) -> Self {
        self.set("max_batch_timeout", seconds)
    }

    /// Most batches in flight at once.
    pub fn max_concurrency(self, batches: u32) -> Self {
        self.set("max_concurrency", batches)
    }

    /// Redeliveries before a message is dead-lettered or dropped.
    pub fn max_retries(self, retries: u32) -> Self {
        self.set("max_retries", retries)
    }

    /// Where messages go when their retries are exhausted.
    pub fn dead_letter_queue(self, queue: &str) -> Self {
        self.set("dead_letter_queue", queue)
    }

    /// Sets any other key of the table.
    pub fn set(self, key: &str, value: impl Into<Value>) -> Self {
        Self(self.0.set(key, value))
    }
}

/// A `[components.NAME]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    name: String,
    keys: Table,
    producers: Table,
    limits: Table,
}

impl Component {
    /// Component `name` loaded from `source` (relative paths are read from the manifest's
    /// folder).
    pub fn new(name: &str, source: impl AsRef<Path>) -> Self {
        Self {
            name: name.to_owned(),
            keys: Table::new().set("source", source.as_ref().display().to_string()),
            producers: Table::new(),
            limits: Table::new(),
        }
    }

    /// Makes it the push consumer of `consumer`'s queue.
    pub fn consumer(self, consumer: Consumer) -> Self {
        self.set("consumer", consumer.0)
    }

    /// Binds `binding` to `queue` (its `producers` table).
    pub fn producer(mut self, binding: &str, queue: &str) -> Self {
        self.producers.insert(binding, queue.into());
        self
    }

    /// Serves HTTP requests on `route`.
    pub fn route(self, route: &str) -> Self {
        self.set("route", route)
    }

    /// Sets one of its limits (`timeout = "60s"`, `memory = "1MiB"`).
    pub fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.insert(key, value.into());
        self
    }

    /// Sets any other key (`route_requires_token`, `allowed_outbound_hosts`…).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys.insert(key, value.into());
        self
    }
}

/// A whole manifest: a `[host]` table (storing under `data` next to the manifest and listening
/// on a free loopback port unless told otherwise), queues and components.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    host: Table,
    queues: Vec<Queue>,
    components: Vec<Component>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            host: Table::new()
                .set("data_dir", "data")
                .set("listen", "127.0.0.1:0"),
            queues: Vec::new(),
            components: Vec::new(),
        }
    }
}

impl Manifest {
    /// A manifest with no queue and no component.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key of the `[host]` table (`storage`, `api_token`, `shutdown_timeout`…).
    pub fn host(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.host.insert(key, value.into());
        self
    }

    /// Declares a queue (a name, or a [`Queue`] with settings).
    pub fn queue(mut self, queue: impl Into<Queue>) -> Self {
        self.queues.push(queue.into());
        self
    }

    /// Declares a component.
    pub fn component(mut self, component: Component) -> Self {
        self.components.push(component);
        self
    }

    /// Writes it to `dir/manifest.toml` (replacing the file at once, as an editor would, for
    /// hosts that reload it) and returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("manifest.toml");
        let partial = dir.join("manifest.toml.partial");
        std::fs::write(&partial, self.to_string())
            .unwrap_or_else(|e| panic!("{}: {e}", partial.display()));
        std::fs::rename(&partial, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[host]")?;
        self.host.write_lines(f)?;
        for queue in &self.queues {
            f.write_str("\n[queues.")?;
            write_key(f, &queue.name)?;
            writeln!(f, "]")?;
            queue.keys.write_lines(f)?;
        }
        for component in &self.components {
            f.write_str("\n[components.")?;
            write_key(f, &component.name)?;
            writeln!(f, "]")?;
            component.keys.write_lines(f)?;
            if !component.producers.0.is_empty() {
                writeln!(f, "producers = {}", component.producers)?;
            }
            if !component.limits.0.is_empty() {
                writeln!(f, "limits = {}", component.limits)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_is_written_as_toml_tables() {
        let manifest = Manifest::new()
            .host("api_token", "s3\"cret")
            .queue("jobs")
            .queue(Queue::new("pulled").pull_consumer(Table::new().set("max_retries", 1u32)))
            .component(
                Component::new("worker", "w.wasm")
                    .consumer(Consumer::on("jobs").max_batch_timeout(0))
                    .producer("OUT", "pulled")
                    .limit("timeout", "60s")
                    .set("allowed_outbound_hosts", vec!["http://a:1"]),
            );
        assert_eq!(
            manifest.to_string(),
            r#"[host]
data_dir = "data"
listen = "127.0.0.1:0"
api_token = "s3\"cret"

[queues.jobs]

[queues.pulled]
pull_consumer = { max_retries = 1 }

[components.worker]
source = "w.wasm"
consumer = { queue = "jobs", max_batch_timeout = 0 }
allowed_outbound_hosts = ["http://a:1"]
producers = { OUT = "pulled" }
limits = { timeout = "60s" }
"#
        );
    }

    #[test]
    fn a_key_set_twice_keeps_its_place_and_the_last_value() {
        let table = Table::new().set("a", 1u32).set("b", true).set("a", "x");
        assert_eq!(table.to_string(), r#"{ a = "x", b = true }"#);
        assert_eq!(Table::new().to_string(), "{}");
        let odd = Table::new().set("two words", "tab\there");
        assert_eq!(odd.to_string(), r#"{ "two words" = "tab\u0009here" }"#);
    }
}
