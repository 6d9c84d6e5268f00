//! The manifest: a full file parses to the expected values, and every rule refuses a bad file
//! with an error naming the key and the line.

use std::fs;
use std::path::Path;
use std::time::Duration;

use wasmq_host::config::{ConfigError, Position};
use wasmq_host::engine::{ConsumerSettings, QueueSettings};
use wasmq_host::manifest::{self, Manifest, Storage};
use wasmq_host::runtime::{AllowedHost, ComponentLimits, InstanceReuse};

/// Parses `text` as if read from `manifest.toml` in the current folder; an error is the
/// first of the file's problems.
fn parse(text: &str) -> Result<Manifest, ConfigError> {
    manifest::parse(text, Path::new("manifest.toml")).map_err(|e| e.first().clone())
}

/// The error for `text`, checked to be about `key` at `line`.
#[track_caller]
fn error_at(text: &str, key: &str, line: usize) -> ConfigError {
    let error = match parse(text) {
        Ok(_) => panic!("the manifest was accepted:\n{text}"),
        Err(error) => error,
    };
    assert_eq!(error.key(), key, "wrong key in `{error}`");
    assert_eq!(error.line(), Some(line), "wrong line in `{error}`");
    assert_eq!(error.file, Path::new("manifest.toml"));
    assert!(error.column().is_some());
    error
}

/// Checks that the error's message contains `part`.
#[track_caller]
fn assert_says(error: &ConfigError, part: &str) {
    assert!(
        error.message.contains(part),
        "`{error}` does not say `{part}`"
    );
}

// Components in the error tests have a `build` command so that their `source` need not exist.

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one assertion per key of the full manifest, in file order"
)]
fn a_full_manifest_parses_to_the_expected_values() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("wasm")).unwrap();
    fs::write(dir.path().join("wasm/worker.wasm"), b"\0asm").unwrap();
    let path = dir.path().join("manifest.toml");
    fs::write(
        &path,
        r#"
[host]
data_dir = "state"
listen = "0.0.0.0:9000"
api_token = "s3cret"

[queues.jobs]
delivery_delay = 5
message_retention_period = 3600
dedup_window = 0

[queues.jobs-dlq]

[queues.audit]

[components.webhook]
source = "wasm/webhook.wasm"
build = "cargo build --release"
route = "/webhook"
producers = { JOBS = "jobs", AUDIT = "audit" }
allowed_outbound_hosts = ["http://127.0.0.1:8080", "https://api.example.com"]
env = { LOG_LEVEL = "debug" }

[components.worker]
source = "wasm/worker.wasm"
consumer = { queue = "jobs", max_batch_size = 50, max_batch_timeout = 2, max_retries = 5, retry_delay = 30, dead_letter_queue = "jobs-dlq", max_concurrency = 4 }
limits = { timeout = "2m", memory = "128MiB" }
"#,
    )
    .unwrap();

    let m = manifest::load(&path).unwrap();
    let dir = std::path::absolute(dir.path()).unwrap();
    assert_eq!(m.path, path);
    assert_eq!(m.dir, dir);

    assert_eq!(m.host.data_dir, dir.join("state"));
    assert_eq!(m.host.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(m.host.api_token.as_deref(), Some("s3cret"));
    assert!(!format!("{:?}", m.host).contains("s3cret"));

    let worker_settings = ConsumerSettings {
        max_batch_size: 50,
        max_batch_timeout: 2,
        max_retries: 5,
        retry_delay: 30,
        dead_letter_queue: Some("jobs-dlq".into()),
    };
    assert_eq!(
        m.queues.keys().collect::<Vec<_>>(),
        ["audit", "jobs", "jobs-dlq"]
    );
    assert_eq!(
        m.queues["jobs"],
        QueueSettings {
            delivery_delay: 5,
            message_retention_period: 3600,
            dedup_window: 0,
            consumer: worker_settings.clone(),
        }
    );
    // Queues nobody consumes keep the defaults.
    assert_eq!(m.queues["jobs-dlq"], QueueSettings::default());
    assert_eq!(m.queues["audit"], QueueSettings::default());

    let webhook = &m.components["webhook"];
    assert_eq!(webhook.name, "webhook");
    assert_eq!(webhook.source, dir.join("wasm/webhook.wasm"));
    assert_eq!(webhook.build.as_deref(), Some("cargo build --release"));
    assert_eq!(
        webhook.route.as_ref().map(ToString::to_string).as_deref(),
        Some("/webhook")
    );
    assert!(!webhook.route_requires_token);
    assert_eq!(
        webhook
            .bindings
            .iter()
            .map(|(b, q)| (b.as_str(), q.as_str()))
            .collect::<Vec<_>>(),
        [("AUDIT", "audit"), ("JOBS", "jobs")]
    );
    assert_eq!(webhook.consumer, None);
    assert_eq!(webhook.limits, ComponentLimits::default());
    assert_eq!(webhook.limits.timeout, Duration::from_secs(30));
    assert_eq!(webhook.limits.memory_bytes, 64 * 1024 * 1024);
    assert_eq!(
        webhook.allowed_outbound_hosts,
        [
            AllowedHost {
                scheme: "http".into(),
                host: "127.0.0.1".into(),
                port: 8080
            },
            AllowedHost {
                scheme: "https".into(),
                host: "api.example.com".into(),
                port: 443
            },
        ]
    );
    assert_eq!(webhook.env["LOG_LEVEL"], "debug");
    assert_eq!(webhook.env.len(), 1);

    let worker = &m.components["worker"];
    assert_eq!(worker.source, dir.join("wasm/worker.wasm"));
    assert_eq!(worker.build, None);
    assert_eq!(worker.route, None);
    assert!(worker.bindings.is_empty());
    let consumer = worker.consumer.as_ref().unwrap();
    assert_eq!(consumer.queue, "jobs");
    assert_eq!(consumer.settings, worker_settings);
    assert_eq!(consumer.max_concurrency, Some(4));
    assert_eq!(
        worker.limits,
        ComponentLimits {
            timeout: Duration::from_secs(120),
            memory_bytes: 128 * 1024 * 1024,
            ..ComponentLimits::default()
        }
    );
    assert!(worker.allowed_outbound_hosts.is_empty());
    assert!(worker.env.is_empty());
    assert_eq!(m.consumer_of("jobs").unwrap().name, "worker");
    assert!(m.consumer_of("audit").is_none());
}

#[test]
fn defaults_fill_what_is_left_out() {
    let m = parse(
        r#"
[queues.jobs]

[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs" }
"#,
    )
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(m.dir, cwd);
    assert_eq!(m.host.data_dir, cwd.join(".wasmq"));
    assert_eq!(m.host.listen, "127.0.0.1:8787".parse().unwrap());
    assert_eq!(m.host.api_token, None);
    assert_eq!(m.queues["jobs"], QueueSettings::default());
    let worker = &m.components["worker"];
    assert_eq!(worker.consumer.as_ref().unwrap().max_concurrency, None);
    assert_eq!(
        worker.consumer.as_ref().unwrap().settings,
        ConsumerSettings::default()
    );
    assert_eq!(worker.limits, ComponentLimits::default());
    assert!(worker.allowed_outbound_hosts.is_empty());
    assert!(worker.env.is_empty());
}

#[test]
fn relative_paths_are_resolved_against_the_manifest_folder() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    fs::create_dir_all(app.join("build")).unwrap();
    fs::write(dir.path().join("shared.wasm"), b"").unwrap();
    fs::write(app.join("build/local.wasm"), b"").unwrap();
    let absolute = dir.path().join("shared.wasm");
    let path = app.join("manifest.toml");
    fs::write(
        &path,
        format!(
            r#"
[host]
data_dir = "../data"
[queues.jobs]
[components.up]
source = "../shared.wasm"
consumer = {{ queue = "jobs" }}
[components.local]
source = "./build/local.wasm"
route = "/local"
[components.absolute]
source = {absolute:?}
route = "/absolute"
"#
        ),
    )
    .unwrap();
    let m = manifest::load(&path).unwrap();
    assert_eq!(m.dir, app);
    assert_eq!(m.host.data_dir, app.join("../data"));
    assert_eq!(m.components["up"].source, app.join("../shared.wasm"));
    assert_eq!(m.components["local"].source, app.join("build/local.wasm"));
    assert_eq!(m.components["absolute"].source, absolute);
    m.check_sources().unwrap();
}

#[test]
fn the_error_format_names_file_line_column_and_key() {
    let error = error_at(
        r#"
[queues.jobs]

[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs", max_batch_size = 101 }
"#,
        "components.worker.consumer.max_batch_size",
        7,
    );
    assert_eq!(
        error.position,
        Some(Position {
            line: 7,
            column: 47
        })
    );
    assert_eq!(
        error.to_string(),
        "manifest.toml:7:47: components.worker.consumer.max_batch_size: 101 is out of range (1..=100)"
    );
}

#[test]
fn the_earliest_error_in_the_file_is_reported() {
    error_at(
        r#"
[queues.b]
dedup_window = 100000
[queues.a]
delivery_delay = 100000
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "a" }
"#,
        "queues.b.dedup_window",
        3,
    );
}

// ---- syntax, types and unknown keys ----

#[test]
fn a_toml_syntax_error_gives_its_line() {
    let error =
        parse("[queues.jobs]\ndelivery_delay = 5\n[components.worker\nsource = 'x'\n").unwrap_err();
    assert_eq!(error.line(), Some(3));
    assert_eq!(error.key, None);
    assert!(error.to_string().starts_with("manifest.toml:3:"), "{error}");
}

#[test]
fn a_duplicate_key_is_a_syntax_error_with_its_line() {
    let error = parse("[queues.jobs]\ndelivery_delay = 5\ndelivery_delay = 6\n").unwrap_err();
    assert_eq!(error.line(), Some(3), "{error}");
}

#[test]
fn wrong_types_are_refused() {
    let e = error_at(
        r#"
[queues.jobs]
delivery_delay = "5s"
"#,
        "queues.jobs.delivery_delay",
        3,
    );
    assert_says(&e, "invalid type");
    error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs", max_retries = -1 }
"#,
        "components.worker.consumer.max_retries",
        6,
    );
    error_at(
        r#"
[queues.jobs]
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
producers = { JOBS = 1 }
"#,
        "components.web.producers.JOBS",
        7,
    );
    error_at(
        r#"
[queues.jobs]
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
allowed_outbound_hosts = "https://api.example.com"
"#,
        "components.web.allowed_outbound_hosts",
        7,
    );
    error_at("queues = 3\n", "queues", 1);
}

#[test]
fn an_unknown_top_level_key_is_refused() {
    let e = error_at("[queues.jobs]\n[consumers.jobs]\n", "consumers", 2);
    assert_says(&e, "unknown field `consumers`");
}

#[test]
fn an_unknown_key_in_host_is_refused() {
    error_at(
        "[host]\nlisten = \"127.0.0.1:1\"\nport = 1\n",
        "host.port",
        3,
    );
}

#[test]
fn an_unknown_key_in_a_queue_is_refused() {
    let e = error_at(
        "[queues.jobs]\ndelivery_delay = 1\nmax_batch_size = 10\n",
        "queues.jobs.max_batch_size",
        3,
    );
    assert_says(&e, "unknown field `max_batch_size`");
}

#[test]
fn an_unknown_key_in_a_component_is_refused() {
    error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs" }
timeout = "10s"
"#,
        "components.worker.timeout",
        7,
    );
}

#[test]
fn an_unknown_key_in_a_consumer_is_refused() {
    let e = error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs", batch_size = 5 }
"#,
        "components.worker.consumer.batch_size",
        6,
    );
    assert_eq!(e.column(), Some(30));
}

#[test]
fn an_unknown_key_in_a_consumer_table_is_refused() {
    error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"

[components.worker.consumer]
queue = "jobs"
max_wait = 5
"#,
        "components.worker.consumer.max_wait",
        9,
    );
}

#[test]
fn an_unknown_key_in_limits_is_refused() {
    error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs" }
limits = { timeout = "1s", fuel = 100 }
"#,
        "components.worker.limits.fuel",
        7,
    );
}

#[test]
fn a_missing_required_key_names_its_table() {
    let e = error_at(
        r#"
[queues.jobs]
[components.worker]
build = "make"
consumer = { queue = "jobs" }
"#,
        "components.worker",
        3,
    );
    assert_says(&e, "missing field `source`");
    let e = error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { max_retries = 1 }
"#,
        "components.worker.consumer",
        6,
    );
    assert_says(&e, "missing field `queue`");
}

/// Every problem of a file is reported in one run, in file order, one per line.
#[test]
fn every_error_of_a_manifest_is_reported_at_once() {
    let text = r#"
[queues.jobs]
delivery_delay = 86401
dedup_window = 86401

[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs", max_batch_size = 0, max_retries = 101, dead_letter_queue = "nope" }
limits = { timeout = "20m", memory = "lots" }
env = { "1BAD" = "x" }
"#;
    let errors = manifest::parse(text, Path::new("manifest.toml")).unwrap_err();
    let found: Vec<(usize, &str)> = errors
        .iter()
        .map(|e| (e.line().unwrap(), e.key()))
        .collect();
    assert_eq!(
        found,
        [
            (3, "queues.jobs.delivery_delay"),
            (4, "queues.jobs.dedup_window"),
            (9, "components.worker.consumer.max_batch_size"),
            (9, "components.worker.consumer.max_retries"),
            (9, "components.worker.consumer.dead_letter_queue"),
            (10, "components.worker.limits.timeout"),
            (10, "components.worker.limits.memory"),
            (11, "components.worker.env.1BAD"),
        ]
    );
    // Each error, then its line of the file with a caret under the column.
    let shown = errors.to_string();
    assert_eq!(shown.lines().count(), 8 * 3, "{shown}");
    assert!(
        shown.contains("\n    3 | delivery_delay = 86401\n      |                  ^\n"),
        "{shown}"
    );
    assert!(
        shown.starts_with(
            "manifest.toml:3:18: queues.jobs.delivery_delay: 86401 is out of range (0..=86400)"
        ),
        "{shown}"
    );
}

// ---- ranges ----

#[test]
fn queue_settings_out_of_range_are_refused() {
    let e = error_at(
        "[queues.jobs]\nmessage_retention_period = 59\n",
        "queues.jobs.message_retention_period",
        2,
    );
    assert_eq!(e.message, "59 is out of range (60..=1209600)");
    error_at(
        "[queues.jobs]\ndelivery_delay = 86401\n",
        "queues.jobs.delivery_delay",
        2,
    );
    error_at(
        "[queues.jobs]\ndedup_window = 86401\n",
        "queues.jobs.dedup_window",
        2,
    );
}

/// A one-consumer manifest whose consumer table ends with `extra`; the consumer is on line 6.
fn with_consumer(extra: &str) -> String {
    format!(
        r#"
[queues.jobs]
[queues.dlq]
[components.worker]
source = "worker.wasm"
consumer = {{ queue = "jobs"{extra} }}
build = "make"
"#
    )
}

#[test]
fn consumer_settings_out_of_range_are_refused() {
    for (extra, key, message) in [
        (
            ", max_batch_size = 0",
            "max_batch_size",
            "0 is out of range (1..=100)",
        ),
        (
            ", max_batch_timeout = 61",
            "max_batch_timeout",
            "61 is out of range (0..=60)",
        ),
        (
            ", max_retries = 101",
            "max_retries",
            "101 is out of range (0..=100)",
        ),
        (
            ", retry_delay = 86401",
            "retry_delay",
            "86401 is out of range (0..=86400)",
        ),
        (
            ", max_concurrency = 0",
            "max_concurrency",
            "0 is out of range (1..=250)",
        ),
        (
            ", max_concurrency = 251",
            "max_concurrency",
            "251 is out of range (1..=250)",
        ),
    ] {
        let e = error_at(
            &with_consumer(extra),
            &format!("components.worker.consumer.{key}"),
            6,
        );
        assert_eq!(e.message, message);
    }
    // The edges are allowed.
    parse(&with_consumer(
        ", max_batch_size = 100, max_batch_timeout = 0, max_retries = 0, retry_delay = 86400, max_concurrency = 250",
    ))
    .unwrap();
}

/// A consumer's instance is reused for 1000 batches unless the manifest says otherwise;
/// `fresh_instance` and `max_batches_per_instance` are checked and cannot be combined.
#[test]
fn instance_reuse_is_read_and_checked() {
    let reuse = |extra: &str| {
        let manifest = parse(&with_consumer(extra)).unwrap();
        manifest.components["worker"]
            .consumer
            .as_ref()
            .unwrap()
            .reuse
    };
    assert_eq!(reuse(""), InstanceReuse { max_batches: 1000 });
    assert_eq!(reuse(", fresh_instance = true"), InstanceReuse::FRESH);
    assert_eq!(reuse(", fresh_instance = false"), InstanceReuse::default());
    assert_eq!(
        reuse(", max_batches_per_instance = 7"),
        InstanceReuse { max_batches: 7 }
    );
    for (extra, key, message) in [
        (
            ", max_batches_per_instance = 0",
            "max_batches_per_instance",
            "0 is out of range (1..=1000000)",
        ),
        (
            ", fresh_instance = true, max_batches_per_instance = 5",
            "fresh_instance",
            "set fresh_instance or max_batches_per_instance, not both",
        ),
    ] {
        let e = error_at(
            &with_consumer(extra),
            &format!("components.worker.consumer.{key}"),
            6,
        );
        assert_eq!(e.message, message);
    }
}

/// A one-consumer manifest whose `limits` are `limits`, on line 7.
fn with_limits(limits: &str) -> String {
    format!(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = {{ queue = "jobs" }}
limits = {limits}
"#
    )
}

#[test]
fn limits_out_of_range_or_malformed_are_refused() {
    for (limits, key, part) in [
        (
            r#"{ timeout = "16m" }"#,
            "timeout",
            "out of range (1ms..=15m)",
        ),
        (r#"{ timeout = "0s" }"#, "timeout", "out of range"),
        (r#"{ timeout = "soon" }"#, "timeout", "not a duration"),
        (r#"{ timeout = "30" }"#, "timeout", "not a duration"),
        (
            r#"{ memory = "5GiB" }"#,
            "memory",
            "out of range (1MiB..=4GiB)",
        ),
        (r#"{ memory = "512KiB" }"#, "memory", "out of range"),
        (r#"{ memory = "64" }"#, "memory", "not a size"),
        (r#"{ memory = "64 megs" }"#, "memory", "not a size"),
        (
            r#"{ table_elements = 0 }"#,
            "table_elements",
            "out of range (1..=10000000)",
        ),
        (r#"{ instances = 10001 }"#, "instances", "out of range"),
        (r#"{ tables = 0 }"#, "tables", "out of range"),
        (r#"{ memories = 0 }"#, "memories", "out of range"),
    ] {
        let e = error_at(
            &with_limits(limits),
            &format!("components.worker.limits.{key}"),
            7,
        );
        assert_says(&e, part);
    }
    let m = parse(&with_limits(r#"{ timeout = "15m", memory = "4GiB" }"#)).unwrap();
    assert_eq!(
        m.components["worker"].limits,
        ComponentLimits {
            timeout: Duration::from_secs(900),
            memory_bytes: 4 << 30,
            ..ComponentLimits::default()
        }
    );
    let m = parse(&with_limits(
        r#"{ table_elements = 5000, instances = 7, tables = 3, memories = 2 }"#,
    ))
    .unwrap();
    let limits = m.components["worker"].limits;
    assert_eq!(
        (
            limits.table_elements,
            limits.instances,
            limits.tables,
            limits.memories
        ),
        (5000, 7, 3, 2)
    );
    let m = parse(&with_limits(r#"{ timeout = "1ms", memory = "1MiB" }"#)).unwrap();
    assert_eq!(m.components["worker"].limits.memory_bytes, 1 << 20);
}

#[test]
fn host_values_are_checked() {
    let e = error_at("[host]\nlisten = \"localhost\"\n", "host.listen", 2);
    assert_says(&e, "not an address");
    error_at("[host]\ndata_dir = \"\"\n", "host.data_dir", 2);
    error_at("[host]\napi_token = \"\"\n", "host.api_token", 2);
    let e = error_at(
        "[host]\nmax_batches_in_flight = 0\n",
        "host.max_batches_in_flight",
        2,
    );
    assert_says(&e, "out of range (1..=500)");
    let e = error_at(
        "[host]\nshutdown_timeout = \"2h\"\n",
        "host.shutdown_timeout",
        2,
    );
    assert_says(&e, "out of range (0s..=1h)");
    error_at(
        "[host]\nshutdown_timeout = \"soon\"\n",
        "host.shutdown_timeout",
        2,
    );
    let e = error_at(
        "[host]\nstorage = \"mysql://root:hunter2@db/q\"\n",
        "host.storage",
        2,
    );
    assert_says(&e, "use \"redb\" or a \"postgres://user@host/db\" URL");
    assert!(!e.message.contains("hunter2"), "{}", e.message);
}

#[test]
fn host_runtime_settings_have_defaults_and_can_be_set() {
    let m = parse("").unwrap();
    assert!(m.host.component_cache && m.host.pooling_allocator);
    assert_eq!(m.host.max_batches_in_flight, 64);
    assert_eq!(m.host.shutdown_timeout, std::time::Duration::from_secs(30));
    let m = parse(
        r#"
[host]
component_cache = false
pooling_allocator = false
max_batches_in_flight = 8
shutdown_timeout = "5s"
storage = "postgres://wasmq:secret@db.internal:5432/queues"
"#,
    )
    .unwrap();
    assert!(!m.host.component_cache && !m.host.pooling_allocator);
    assert_eq!(m.host.max_batches_in_flight, 8);
    assert_eq!(m.host.shutdown_timeout, std::time::Duration::from_secs(5));
    assert_eq!(
        m.host.storage,
        Storage::Postgres("postgres://wasmq:secret@db.internal:5432/queues".into())
    );
    assert!(!format!("{:?}", m.host).contains("secret"));
}

// ---- names and references ----

#[test]
fn an_invalid_queue_name_is_refused() {
    let e = error_at("[queues.ok]\n[queues.Jobs]\n", "queues.Jobs", 2);
    assert_eq!(e.column(), Some(9));
    assert_says(&e, "lowercase");
    error_at("[queues.\"-jobs\"]\n", "queues.-jobs", 1);
}

#[test]
fn a_queue_cannot_be_its_own_dead_letter_queue() {
    let e = error_at(
        &with_consumer(r#", dead_letter_queue = "jobs""#),
        "components.worker.consumer.dead_letter_queue",
        6,
    );
    assert_eq!(
        e.message,
        "queue `jobs` cannot be its own dead_letter_queue"
    );
}

#[test]
fn a_dead_letter_queue_must_be_declared() {
    let e = error_at(
        &with_consumer(r#", dead_letter_queue = "jobs-dlq""#),
        "components.worker.consumer.dead_letter_queue",
        6,
    );
    assert_says(&e, "queue `jobs-dlq` is not declared");
    // Declared, it is accepted.
    let m = parse(&with_consumer(r#", dead_letter_queue = "dlq""#)).unwrap();
    assert_eq!(
        m.queues["jobs"].consumer.dead_letter_queue.as_deref(),
        Some("dlq")
    );
}

#[test]
fn a_consumed_queue_must_be_declared() {
    let e = error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "job" }
"#,
        "components.worker.consumer.queue",
        6,
    );
    assert_says(&e, "add a `[queues.job]` table");
}

#[test]
fn a_producer_binding_must_name_a_declared_queue() {
    error_at(
        r#"
[queues.jobs]
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
producers = { JOBS = "jobs", AUDIT = "audit" }
"#,
        "components.web.producers.AUDIT",
        7,
    );
}

#[test]
fn a_binding_name_uses_letters_digits_and_underscores() {
    let e = error_at(
        r#"
[queues.jobs]
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
producers = { "MY-JOBS" = "jobs" }
"#,
        "components.web.producers.MY-JOBS",
        7,
    );
    assert_says(&e, "not a binding name");
}

#[test]
fn two_components_cannot_consume_the_same_queue() {
    // Blamed on the second one in the file, whatever the names' order.
    let e = error_at(
        r#"
[queues.jobs]
[components.b]
source = "b.wasm"
build = "make"
consumer = { queue = "jobs" }
[components.a]
source = "a.wasm"
build = "make"
consumer = { queue = "jobs" }
"#,
        "components.a.consumer.queue",
        10,
    );
    assert_eq!(
        e.message,
        "queue `jobs` is already consumed by component `b` (line 6); a queue has one consumer"
    );
}

#[test]
fn a_component_must_have_a_consumer_or_a_route() {
    let e = error_at(
        r#"
[queues.jobs]
[components.idle]
source = "idle.wasm"
build = "make"
producers = { JOBS = "jobs" }
"#,
        "components.idle",
        3,
    );
    assert_eq!(
        e.message,
        "component `idle` does nothing: give it a `consumer` or a `route`"
    );
}

#[test]
fn two_components_cannot_share_a_route() {
    let e = error_at(
        r#"
[components.one]
source = "one.wasm"
build = "make"
route = "/hook"
[components.two]
source = "two.wasm"
build = "make"
route = "/hook"
"#,
        "components.two.route",
        9,
    );
    assert_says(&e, "already taken by component `one` (line 5)");
}

#[test]
fn a_route_starts_with_a_slash() {
    let e = error_at(
        r#"
[components.web]
source = "web.wasm"
build = "make"
route = "hook"
"#,
        "components.web.route",
        5,
    );
    assert_says(&e, "must start with `/`");
}

#[test]
fn a_route_may_not_take_the_api_paths() {
    let e = error_at(
        r#"
[components.web]
source = "web.wasm"
build = "make"
route = "/queues/..."
"#,
        "components.web.route",
        5,
    );
    assert_says(&e, "overlaps the host's own API at `/queues`");
}

#[test]
fn a_component_is_a_consumer_or_a_producer_not_both() {
    let e = error_at(
        r#"
[queues.jobs]
[components.both]
source = "both.wasm"
build = "make"
route = "/both"
consumer = { queue = "jobs" }
"#,
        "components.both.consumer",
        7,
    );
    assert_says(&e, "has both a `consumer` and a `route`");
}

#[test]
fn only_a_route_can_require_the_token() {
    let e = error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs" }
route_requires_token = true
"#,
        "components.worker.route_requires_token",
        7,
    );
    assert_says(&e, "only a component with a `route`");
}

#[test]
fn route_max_concurrency_needs_a_route_and_a_range() {
    let e = error_at(
        r#"
[queues.jobs]
[components.worker]
source = "worker.wasm"
build = "make"
consumer = { queue = "jobs" }
route_max_concurrency = 5
"#,
        "components.worker.route_max_concurrency",
        7,
    );
    assert_says(&e, "only a component with a `route`");
    let e = error_at(
        r#"
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
route_max_concurrency = 0
"#,
        "components.web.route_max_concurrency",
        6,
    );
    assert_says(&e, "0 is out of range (1..=1000)");
}

#[test]
fn allowed_outbound_hosts_must_be_origins() {
    for bad in [
        "api.example.com",
        "ftp://example.com",
        "https://example.com/v1",
        "https://example.com:99999",
        "https://",
    ] {
        let e = error_at(
            &format!(
                r#"
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
allowed_outbound_hosts = [
  "https://api.example.com",
  "{bad}",
]
"#
            ),
            "components.web.allowed_outbound_hosts[1]",
            8,
        );
        assert_eq!(e.column(), Some(3), "{e}");
    }
}

#[test]
fn env_names_are_checked() {
    error_at(
        r#"
[components.web]
source = "web.wasm"
build = "make"
route = "/web"
env = { OK = "1", "1BAD" = "2" }
"#,
        "components.web.env.1BAD",
        6,
    );
}

// ---- source files ----

#[test]
fn a_missing_source_without_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.toml");
    fs::write(
        &path,
        "[queues.jobs]\n[components.worker]\nsource = \"worker.wasm\"\nconsumer = { queue = \"jobs\" }\n",
    )
    .unwrap();
    let e = manifest::load(&path).unwrap_err().first().clone();
    assert_eq!(e.key(), "components.worker.source");
    assert_eq!(
        e.position,
        Some(Position {
            line: 3,
            column: 10
        })
    );
    assert_eq!(e.file, path);
    assert_says(&e, "worker.wasm` does not exist");

    // Once the file is there, the manifest is accepted.
    fs::write(dir.path().join("worker.wasm"), b"").unwrap();
    manifest::load(&path).unwrap();

    // A folder is not a source.
    fs::remove_file(dir.path().join("worker.wasm")).unwrap();
    fs::create_dir(dir.path().join("worker.wasm")).unwrap();
    let e = manifest::load(&path).unwrap_err().first().clone();
    assert_says(&e, "is not a file");
}

#[test]
fn a_source_with_build_is_checked_after_building() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.toml");
    fs::write(
        &path,
        "[queues.jobs]\n[components.worker]\nbuild = \"make\"\nsource = \"out/worker.wasm\"\nconsumer = { queue = \"jobs\" }\n",
    )
    .unwrap();
    let m = manifest::load(&path).unwrap();
    let e = m.check_sources().unwrap_err().first().clone();
    assert_eq!(e.key(), "components.worker.source");
    assert_eq!(e.line(), Some(4));
    assert_says(&e, "does not exist after running the build command");

    fs::create_dir(dir.path().join("out")).unwrap();
    fs::write(dir.path().join("out/worker.wasm"), b"").unwrap();
    m.check_sources().unwrap();
}

#[test]
fn an_unreadable_manifest_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let e = manifest::load(&path).unwrap_err().first().clone();
    assert_eq!(e.position, None);
    assert_eq!(e.key, None);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read the manifest", path.display())),
        "{e}"
    );
}

#[test]
fn a_pull_consumer_sets_the_queue_retry_settings_and_its_lease() {
    let m = parse(
        r#"
[queues.pulled]
pull_consumer = { visibility_timeout_ms = 5000, max_retries = 1, retry_delay = 7, dead_letter_queue = "dlq" }
[queues.dlq]
[queues.plain]
pull_consumer = {}
"#,
    )
    .unwrap();
    let pulled = &m.queues["pulled"].consumer;
    assert_eq!(
        (
            pulled.max_retries,
            pulled.retry_delay,
            pulled.dead_letter_queue.as_deref()
        ),
        (1, 7, Some("dlq"))
    );
    assert_eq!(m.pull_consumers["pulled"].visibility_timeout_ms, 5000);
    assert_eq!(
        m.pull_consumers["plain"].visibility_timeout_ms,
        manifest::DEFAULT_VISIBILITY_TIMEOUT_MS
    );
    assert!(!m.pull_consumers.contains_key("dlq"));
}

#[test]
fn a_pull_queue_cannot_also_have_a_component_consumer() {
    let e = error_at(
        r#"
[queues.jobs]
pull_consumer = {}
[components.a]
source = "a.wasm"
build = "make"
consumer = { queue = "jobs" }
"#,
        "components.a.consumer.queue",
        7,
    );
    assert_says(&e, "already consumed by a pull_consumer (line 3)");
}

#[test]
fn pull_consumer_settings_are_checked() {
    let e = error_at(
        "[queues.jobs]\npull_consumer = { visibility_timeout_ms = 0 }\n",
        "queues.jobs.pull_consumer.visibility_timeout_ms",
        2,
    );
    assert_says(&e, "out of range");
    let e = error_at(
        "[queues.jobs]\npull_consumer = { dead_letter_queue = \"jobs\" }\n",
        "queues.jobs.pull_consumer.dead_letter_queue",
        2,
    );
    assert_says(&e, "cannot be its own dead_letter_queue");
    error_at(
        "[queues.jobs]\npull_consumer = { max_retries = 101 }\n",
        "queues.jobs.pull_consumer.max_retries",
        2,
    );
    error_at(
        "[queues.jobs]\npull_consumer = { batch_size = 5 }\n",
        "queues.jobs.pull_consumer.batch_size",
        2,
    );
}
