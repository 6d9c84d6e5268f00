//! What the tests that run the real `host` binary share: the example guests, and `host run`
//! child processes whose output is collected line by line.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `host` binary under test.
pub const HOST: &str = env!("CARGO_BIN_EXE_host");

/// The path of example component `name`; panics with how to build it when it is missing.
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-examples/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-guests.sh",
        path.display()
    );
    path
}

/// Writes `dir/manifest.toml`: a `[host]` table with `data_dir = "data"` and a free loopback
/// port, followed by `rest` (more `[host]` keys first, if any, then other tables).
pub fn write_manifest(dir: &Path, rest: &str) -> PathBuf {
    let path = dir.join("manifest.toml");
    let text = format!("[host]\ndata_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n{rest}");
    std::fs::write(&path, text).unwrap();
    path
}

/// A line of a host's output (stderr, and stdout after the announcement) and when the test
/// read it.
pub type LogLine = (Instant, String);

/// A `host run` child that has not announced its address yet.
pub struct Spawned {
    child: Child,
    announcement: std::sync::mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<LogLine>>>,
}

/// A running `host run` child; killed when dropped, so a failed test leaves none behind.
pub struct HostProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`, from its announcement.
    pub url: String,
    /// Everything it logged so far.
    pub log: Arc<Mutex<Vec<LogLine>>>,
}

/// `host run MANIFEST` with its output piped and no token or storage from this environment.
pub fn host_run(manifest: &Path) -> Command {
    let mut command = Command::new(HOST);
    command
        .arg("run")
        .arg(manifest)
        .env("NO_COLOR", "1")
        .env_remove("WASMQ_API_TOKEN")
        .env_remove("WASMQ_STORAGE");
    command
}

impl Spawned {
    /// Starts `command` (a [`host_run`]) and collects its output.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (announce, announcement) = std::sync::mpsc::channel();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let stdout_log = log.clone();
        std::thread::spawn(move || {
            let mut first = String::new();
            let _ = stdout.read_line(&mut first);
            let _ = announce.send(first);
            collect(stdout, &stdout_log);
        });
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let stderr_log = log.clone();
        std::thread::spawn(move || collect(stderr, &stderr_log));
        Self {
            child,
            announcement,
            log,
        }
    }

    /// Waits for `wasmq host listening on http://…` on stdout; panics with the host's log if
    /// it does not come within `within`.
    pub fn ready(mut self, within: Duration) -> HostProcess {
        let line = self.announcement.recv_timeout(within).unwrap_or_default();
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

impl HostProcess {
    /// Starts `command` and waits (up to 60 s) until the host listens.
    pub fn start(command: Command) -> Self {
        Spawned::spawn(command).ready(Duration::from_secs(60))
    }

    /// Everything logged so far, one line each.
    pub fn log_text(&self) -> String {
        text(&self.log)
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
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
