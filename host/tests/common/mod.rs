//! What the tests that run the real `wasmq` binary share: [`HostRun`] says how to start
//! `wasmq run` (on which manifest, with what environment), [`HostProcess`] is the running child
//! (its address, its output line by line, signals, its queues over HTTP), and the example
//! guests and the manifest builder come from `wasmq-testkit`, as for the end-to-end tests.
//!
//! Each test file declares this module `pub mod common;` and uses its own part of it (public
//! items of a public module are not dead code where a file leaves some unused).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub use wasmq_testkit::guests::guest_path;
pub use wasmq_testkit::manifest::{Component, Consumer, Manifest, Queue, Table};

/// The `wasmq` binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_wasmq");

/// A line of a host's output (stderr, and stdout after the announcement) and when the test
/// read it.
pub type LogLine = (Instant, String);

/// How to start `wasmq run`: the manifest, the environment and limits. Its output is piped, its
/// colours are off, and it takes no token or storage from the test's environment.
pub struct HostRun {
    manifest: PathBuf,
    /// The manifest's folder, when the host owns it.
    dir: Option<TempDir>,
    env: Vec<(String, String)>,
    file_limit: Option<u32>,
    watch: bool,
}

impl HostRun {
    /// `wasmq run MANIFEST`, on a file the test keeps (to restart a host on the same data, say).
    pub fn new(manifest: &Path) -> Self {
        Self {
            manifest: manifest.to_owned(),
            dir: None,
            env: Vec::new(),
            file_limit: None,
            watch: false,
        }
    }

    /// `wasmq run` on `manifest`, written to a temporary folder that lives as long as the host.
    pub fn manifest(manifest: &Manifest) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = manifest.write(dir.path());
        Self {
            dir: Some(dir),
            ..Self::new(&path)
        }
    }

    /// Sets an environment variable of the host.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Lowers the host's open-file limit (soft and hard) to `files`, with `prlimit`.
    pub fn file_limit(mut self, files: u32) -> Self {
        self.file_limit = Some(files);
        self
    }

    /// `wasmq run --watch`.
    pub fn watch(mut self) -> Self {
        self.watch = true;
        self
    }

    /// The command, for tests that run it themselves (to read a failed start's output).
    pub fn command(&self) -> Command {
        let mut command = match self.file_limit {
            Some(files) => {
                let mut prlimit = Command::new("prlimit");
                prlimit
                    .arg(format!("--nofile={files}:{files}"))
                    .arg("--")
                    .arg(HOST);
                prlimit
            }
            None => Command::new(HOST),
        };
        command
            .arg("run")
            .arg(&self.manifest)
            .args(self.watch.then_some("--watch"))
            .env("NO_COLOR", "1")
            .env_remove("WASMQ_API_TOKEN")
            .env_remove("WASMQ_STORAGE");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts the host and collects its output; [`Spawned::ready`] waits until it listens and
    /// its components serve.
    pub fn spawn(self) -> Spawned {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (announce, announcements) = std::sync::mpsc::channel();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let stdout_log = log.clone();
        std::thread::spawn(move || {
            // The first line says where it listens, a later one that its components serve.
            let mut first = String::new();
            let _ = stdout.read_line(&mut first);
            let _ = announce.send(first);
            for line in stdout.lines().map_while(Result::ok) {
                if line.starts_with("wasmq host ready") {
                    let _ = announce.send(line.clone());
                }
                stdout_log.lock().unwrap().push((Instant::now(), line));
            }
        });
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let stderr_log = log.clone();
        std::thread::spawn(move || collect(stderr, &stderr_log));
        Spawned {
            child,
            announcements,
            log,
            dir: self.dir,
        }
    }

    /// Starts the host and waits (up to 60 s) until it listens and its components serve.
    pub fn start(self) -> HostProcess {
        self.spawn().ready(Duration::from_secs(60))
    }
}

/// A `wasmq run` child that has not announced its address yet (several can start at once).
pub struct Spawned {
    child: Child,
    announcements: std::sync::mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<LogLine>>>,
    dir: Option<TempDir>,
}

impl Spawned {
    /// Waits for `wasmq host listening on http://…` on stdout, then for `wasmq host ready`;
    /// panics with the host's log if they do not come within `within`.
    pub fn ready(self, within: Duration) -> HostProcess {
        let deadline = Instant::now() + within;
        let host = self.listening(within);
        let line = host
            .announcements
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        assert!(
            line.starts_with("wasmq host ready"),
            "the host's components did not start; its log:\n{}",
            host.log_text()
        );
        host
    }

    /// Waits for `wasmq host listening on http://…` on stdout (its components may still be
    /// loading); panics with the host's log if it does not come within `within`.
    pub fn listening(mut self, within: Duration) -> HostProcess {
        let line = self.announcements.recv_timeout(within).unwrap_or_default();
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .map(str::to_owned);
        let Some(url) = url else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "the host did not start (stdout {line:?}); its log:\n{}",
                text(&self.log)
            );
        };
        HostProcess {
            child: self.child,
            url,
            log: self.log,
            announcements: self.announcements,
            _dir: self.dir,
        }
    }
}

fn collect(stream: impl BufRead, log: &Mutex<Vec<LogLine>>) {
    for line in stream.lines().map_while(Result::ok) {
        log.lock().unwrap().push((Instant::now(), line));
    }
}

fn text(log: &Mutex<Vec<LogLine>>) -> String {
    let log = log.lock().unwrap();
    log.iter().map(|(_, line)| format!("{line}\n")).collect()
}

/// A running `wasmq run` child; killed when dropped, so a failed test leaves none behind.
pub struct HostProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from its announcement.
    pub url: String,
    /// Everything it logged so far.
    pub log: Arc<Mutex<Vec<LogLine>>>,
    announcements: std::sync::mpsc::Receiver<String>,
    _dir: Option<TempDir>,
}

impl HostProcess {
    /// Everything logged so far, one line each.
    pub fn log_text(&self) -> String {
        text(&self.log)
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().map(|(_, line)| line.clone()).collect()
    }

    /// Whether a line containing `needle` was read at or after `since` (any time with `None`).
    pub fn logged_since(&self, needle: &str, since: Option<Instant>) -> bool {
        let log = self.log.lock().unwrap();
        log.iter()
            .any(|(at, line)| since.is_none_or(|since| *at >= since) && line.contains(needle))
    }

    /// Waits (up to 30 s) for a line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = {
                let log = self.log.lock().unwrap();
                log.iter()
                    .find(|(_, l)| l.contains(needle))
                    .map(|(_, l)| l.clone())
            };
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` (`-INT`, `-TERM`, `-KILL`…) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGKILL, and waits for the process to be gone: no shutdown, no settling.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit (panics after `within`); returns its status once the
    /// output is collected.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the output threads drain.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the host did not exit within {within:?}; its log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` and waits (up to 20 s) for a clean exit; panics with the log otherwise.
    pub fn stop(&mut self, signal: &str) {
        self.signal(signal);
        let status = self.wait_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "exit status {status} after {signal}; the log:\n{}",
            self.log_text()
        );
    }

    /// The `wasmq` CLI pointed at this host, without a token from the test's environment.
    pub fn cli_command(&self) -> Command {
        let mut command = Command::new(HOST);
        command
            .env("WASMQ_URL", &self.url)
            .env_remove("WASMQ_API_TOKEN");
        command
    }

    /// Runs `host ARGS` against this host.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_command().args(args).output().unwrap()
    }

    /// `GET path` (`/metrics`…); the answer's body. For tests without an async runtime.
    pub fn get(&self, path: &str) -> String {
        self.http(reqwest::Method::GET, path, None)
    }

    /// `POST path` with the JSON `body`; the answer's body. For tests without an async
    /// runtime.
    pub fn post_json(&self, path: &str, body: &Value) -> String {
        self.http(reqwest::Method::POST, path, Some(body))
    }

    fn http(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let request = reqwest::Client::new().request(method, format!("{}{path}", self.url));
            let request = match body {
                Some(body) => request.json(body),
                None => request,
            };
            request.send().await.unwrap().text().await.unwrap()
        })
    }

    /// Queue `name` as `GET /queues/NAME` shows it (the envelope's `result`).
    pub fn queue(&self, name: &str) -> Value {
        let text = self.get(&format!("/queues/{name}"));
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        value["result"].clone()
    }

    /// Waits (up to 30 s) until `check` holds for queue `name`, which it `what` ("drained"…)
    /// then; returns the queue.
    pub fn wait_queue(&self, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let queue = self.queue(name);
            if check(&queue) {
                return queue;
            }
            assert!(Instant::now() < deadline, "`{name}` never {what}: {queue}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
