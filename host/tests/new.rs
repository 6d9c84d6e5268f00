//! `wasmq new` end to end through the real binary: each of the six templates (a consumer and a
//! producer, in Rust, Python and JavaScript) is created in a temporary folder and started with
//! `wasmq run`, which builds it with the `build` command of its own manifest. A consumer then
//! gets a message from `wasmq send`, logs and acks it, and passes its fixtures with `wasmq test`.
//! A producer answers requests on its route and its queue holds what was posted: `wasmq test`
//! runs consumers only, so this smoke check is a producer's test. Bad names and folders that
//! are not empty are refused.
//!
//! The builds use what the machine has, as `scripts/test.sh` sets it up: the `wasm32-wasip2`
//! target, componentize-py (installed by `scripts/build-polyglot-guests.sh`), and npm's cache
//! for `npm ci` (the packages of `guest-examples/js`, which that script installs). Every
//! project builds into its own folder, whatever `CARGO_TARGET_DIR` says.

pub mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{HOST, HostProcess, HostRun};

/// How long `wasmq run` may take to build and compile a project before it listens: a
/// JavaScript build (`npm ci`, componentize-js) and compiling its 12 MB component take about a
/// minute on 2 cores, more while other tests run.
const START_WITHIN: Duration = Duration::from_secs(600);

/// A project created by `wasmq new` in a temporary folder.
struct Project {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Runs `wasmq new KIND NAME --lang LANG --dir TMP/NAME`, checks what it printed and makes the
/// manifest listen on a free port.
fn create(kind: &str, name: &str, lang: &str) -> Project {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    let out = host(&["new", kind, name, "--lang", lang, "--dir"], Some(&dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.starts_with(&format!("created {}: a {kind} in ", dir.display())),
        "{printed}"
    );
    assert!(printed.contains("  wasmq run "), "{printed}");
    let manifest = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let listen = "listen = \"127.0.0.1:8787\"";
    assert!(text.contains(listen), "{text}");
    std::fs::write(&manifest, text.replace(listen, "listen = \"127.0.0.1:0\"")).unwrap();
    if lang == "rust" {
        share_rust_build_output(&dir);
    }
    Project { dir, _tmp: tmp }
}

/// Makes the Rust project's `target` folder (its build command says `--target-dir target`) a
/// link to one cache folder for all of them, kept between runs: the `wit-bindgen` macro and
/// its dependencies, three quarters of a minute on 2 cores, are then built once, not per
/// project and run. The folder is wasmq's own, never the host workspace's `CARGO_TARGET_DIR`.
fn share_rust_build_output(project: &Path) {
    let Some(cache) = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
    else {
        return;
    };
    let shared = cache.join("wasmq/new-rust-target");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();
}

/// `host ARGS [PATH]`.
fn host(args: &[&str], path: Option<&Path>) -> Output {
    let mut command = Command::new(HOST);
    command.args(args);
    if let Some(path) = path {
        command.arg(path);
    }
    command.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

impl Project {
    /// Starts `wasmq run` on the project (which builds it first) with the build tools on the
    /// path and npm taking packages from its cache when it has them
    /// (`npm_config_prefer_offline`), and returns it listening, with how long that took.
    fn run(&self) -> (HostProcess, Duration) {
        let started = Instant::now();
        let host = HostRun::new(&self.dir.join("manifest.toml"))
            .env("PATH", &build_tools_path())
            .env("npm_config_prefer_offline", "true")
            .spawn()
            .ready(START_WITHIN);
        (host, started.elapsed())
    }
}

/// `host ARGS` against the running `host`, which must succeed.
fn cli(host: &HostProcess, args: &[&str]) -> Output {
    let out = host.cli(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

/// `host ARGS --json` against the running `host`, parsed.
fn cli_json(host: &HostProcess, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    serde_json::from_slice(&cli(host, &args).stdout).unwrap()
}

/// The `PATH` the builds need: this one with the Python's script folder on it (where pip puts
/// `componentize-py`, whether or not a shim for it exists).
fn build_tools_path() -> String {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    let mut path: Vec<PathBuf> = scripts.into_iter().map(PathBuf::from).collect();
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).unwrap();
    path.to_string_lossy().into_owned()
}

/// Creates, builds and runs a consumer project; sends it a message and waits until it is
/// logged and acked; then runs the project's fixtures with `wasmq test`.
fn consumer_builds_consumes_and_passes_its_fixtures(name: &str, lang: &str) {
    let project = create("consumer", name, lang);
    let (mut host, started) = project.run();

    let body = format!("hello from {lang}");
    let out = cli(&host, &["send", "jobs", &body]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sent to jobs;"));
    let line = host.wait_log(&format!("[{name}] "));
    assert!(line.contains(&format!("attempt 1: {body}")), "{line}");
    host.wait_queue("jobs", "acked it", |info| {
        info["metrics"]["acked"] == 1 && info["metrics"]["backlog"]["count"] == 0
    });
    host.stop("-INT");

    // The fixtures run against what `wasmq run` built; the compiled code `wasmq run` cached is
    // reused rather than compiled again.
    let tested = Instant::now();
    let out = Command::new(HOST)
        .arg("test")
        .current_dir(&project.dir)
        .env("WASMQ_CACHE_DIR", project.dir.join(".wasmq/cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.contains(&format!("fixtures/{name}.toml\n  PASS ")),
        "{stdout}"
    );
    assert!(stdout.ends_with("\n1 passed, 0 failed\n"), "{stdout}");
    eprintln!(
        "consumer in {lang}: built and listening after {:.1} s, `wasmq test` {:.1} s",
        started.as_secs_f64(),
        tested.elapsed().as_secs_f64()
    );
}

/// Creates, builds and runs a producer project; posts text, JSON and a GET to its route and
/// checks the answers and what its queue holds.
fn producer_builds_and_queues_what_is_posted(name: &str, lang: &str) {
    let project = create("producer", name, lang);
    let (mut host, started) = project.run();
    let url = format!("{}/{name}", host.url);

    let answers = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = reqwest::Client::new();
            let text = client.post(&url).body("hello").send().await.unwrap();
            let json = client
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"order": 42}"#)
                .send()
                .await
                .unwrap();
            let get = client.get(&url).send().await.unwrap();
            let mut answers = Vec::new();
            for response in [text, json, get] {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                answers.push((status, body));
            }
            answers
        });
    assert_eq!(
        answers,
        [
            (202, json!({"queued": 1, "backlog": 1})),
            (202, json!({"queued": 1, "backlog": 2})),
            (405, json!({"error": "use POST"})),
        ]
    );
    let peeked = cli_json(&host, &["messages", "peek", "jobs"]);
    let messages: Vec<(Value, Value)> = peeked
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["content_type"].clone(), m["body"].clone()))
        .collect();
    assert_eq!(
        messages,
        [
            (json!("text"), json!("hello")),
            (json!("json"), json!({"order": 42})),
        ]
    );
    host.wait_log(&format!("[{name}] queued 5 bytes as text"));
    host.stop("-INT");
    eprintln!(
        "producer in {lang}: built and listening after {:.1} s",
        started.as_secs_f64()
    );
}

#[test]
fn a_rust_consumer_builds_consumes_and_passes_its_fixtures() {
    consumer_builds_consumes_and_passes_its_fixtures("rusty-consumer", "rust");
}

#[test]
fn a_python_consumer_builds_consumes_and_passes_its_fixtures() {
    consumer_builds_consumes_and_passes_its_fixtures("py-consumer", "python");
}

#[test]
fn a_js_consumer_builds_consumes_and_passes_its_fixtures() {
    consumer_builds_consumes_and_passes_its_fixtures("js-consumer", "js");
}

#[test]
fn a_rust_producer_builds_and_queues_what_is_posted() {
    producer_builds_and_queues_what_is_posted("rusty-producer", "rust");
}

#[test]
fn a_python_producer_builds_and_queues_what_is_posted() {
    producer_builds_and_queues_what_is_posted("py-producer", "python");
}

#[test]
fn a_js_producer_builds_and_queues_what_is_posted() {
    producer_builds_and_queues_what_is_posted("js-producer", "js");
}

#[test]
fn bad_names_and_folders_in_use_are_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["My-App", "my_app", "9lives", "trailing-", "a/b"] {
        let dir = tmp.path().join("never");
        let out = host(
            &["new", "consumer", bad, "--lang", "rust", "--dir"],
            Some(&dir),
        );
        assert!(!out.status.success(), "{bad}");
        assert!(
            stderr(&out).contains(&format!("`{bad}` is not a project name")),
            "{bad}: {}",
            stderr(&out)
        );
        assert!(!dir.exists(), "{bad}");
    }

    let used = tmp.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("manifest.toml"), "# mine\n").unwrap();
    let out = host(
        &["new", "producer", "used", "--lang", "js", "--dir"],
        Some(&used),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("exists and is not empty"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(used.join("manifest.toml")).unwrap(),
        "# mine\n"
    );
    assert_eq!(std::fs::read_dir(&used).unwrap().count(), 1);

    // Without --dir the folder is NAME in the current folder: refused there too.
    let out = Command::new(HOST)
        .args(["new", "consumer", "used", "--lang", "python"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("used exists and is not empty"),
        "{}",
        stderr(&out)
    );

    // An unknown language is clap's error, with the choices.
    let out = host(&["new", "consumer", "ok", "--lang", "go"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("[possible values: rust, python, js]"),
        "{}",
        stderr(&out)
    );
}
