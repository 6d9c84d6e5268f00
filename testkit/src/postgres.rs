//! A real PostgreSQL server for the tests of the PostgreSQL backend.
//!
//! [`url`] answers `WASMQ_TEST_POSTGRES_URL` when it is set; otherwise it starts ONE throwaway
//! cluster for the whole test binary: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port (as the `postgres` user when running as root, since PostgreSQL refuses to
//! run as root). A watchdog process stops the cluster and deletes its directory once the test
//! process has exited, however it exits. Without the PostgreSQL server binaries (and without
//! `WASMQ_TEST_POSTGRES_URL`) the tests fail with a message saying how to get them: they are
//! never skipped silently.
//!
//! Each test gets its own schema ([`fresh_schema`]), dropped again by [`SchemaGuard`], so tests
//! sharing one server never see each other's queues.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Environment variable naming an existing server to test against instead of a throwaway
/// cluster (for example `postgres://postgres@127.0.0.1:5432/postgres`).
pub const URL_ENV: &str = "WASMQ_TEST_POSTGRES_URL";
/// Environment variable naming the directory of `initdb` and `pg_ctl`, when they are not on
/// `PATH` or in `/usr/lib/postgresql/*/bin`.
pub const BINDIR_ENV: &str = "WASMQ_PG_BINDIR";

/// The URL of the server the tests use: `WASMQ_TEST_POSTGRES_URL`, or the test binary's
/// throwaway cluster, started on first use. Panics with instructions when neither is possible.
pub fn url() -> String {
    if let Ok(url) = std::env::var(URL_ENV)
        && !url.trim().is_empty()
    {
        return url;
    }
    static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    match SHARED.get_or_init(PgCluster::start) {
        Ok(cluster) => cluster.url(),
        Err(err) => panic!("{err}"),
    }
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// Drops its schema (and everything in it) when dropped.
#[derive(Debug)]
pub struct SchemaGuard {
    url: String,
    schema: String,
}

impl SchemaGuard {
    /// Guards `schema` on the server at `url`.
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: schema.into(),
        }
    }
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        if let Err(err) = run_sql(&self.url, &sql) {
            eprintln!("could not drop test schema {}: {err}", self.schema);
        }
    }
}

/// `url` with its database replaced by `database` (a `postgres://` URL; its query, if any,
/// is kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Creates a database no other test uses on the server at `url` (a `postgres://` URL);
/// returns its URL and a guard that drops it. Hosts started with that URL have their own
/// `wasmq` schema and notification channel, untouched by other tests.
pub fn fresh_database(url: &str) -> (String, DatabaseGuard) {
    let name = format!("wasmq_t_{:016x}", rand::random::<u64>());
    if let Err(err) = run_sql(url, &format!("CREATE DATABASE {name}")) {
        panic!("creating test database {name}: {err}");
    }
    let guard = DatabaseGuard {
        url: url.to_owned(),
        name: name.clone(),
    };
    (with_database(url, &name), guard)
}

/// Drops its database (disconnecting whoever still uses it) when dropped.
#[derive(Debug)]
pub struct DatabaseGuard {
    url: String,
    name: String,
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(err) = run_sql(&self.url, &sql) {
            eprintln!("could not drop test database {}: {err}", self.name);
        }
    }
}

/// Runs `sql` (one or more statements, outside a transaction) on its own connection to `url`,
/// from a thread of its own (so it works inside and outside a Tokio runtime).
pub fn run_sql(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let result = client
                .batch_execute(&sql)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => e.to_string(),
                });
            drop(client);
            let _ = driver.await;
            result
        })
    })
    .join()
    .map_err(|_| "the SQL thread panicked".to_owned())?
}

/// A throwaway PostgreSQL cluster on a loopback port.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bindir: PathBuf,
    as_postgres: bool,
}

impl PgCluster {
    /// Creates and starts a cluster in a new temporary directory.
    pub fn start() -> Result<Self, String> {
        let bindir = find_bindir()?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("wasmq-pg-")
            .tempdir()
            .map_err(|e| format!("creating a directory for a test PostgreSQL cluster: {e}"))?
            .keep();
        let cluster = Self {
            dir,
            port: 0,
            bindir,
            as_postgres,
        };
        cluster.watch_for_exit()?;
        if as_postgres {
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cluster.dir))?;
        }
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data())
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync"))?;
        let mut cluster = cluster;
        let mut last_err = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(err) => last_err = format!("{err}\nserver log:\n{}", server_log(&cluster)),
            }
        }
        Err(format!(
            "could not start a test PostgreSQL cluster: {last_err}"
        ))
    }

    /// The URL of its `postgres` database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: clients are disconnected); [`PgCluster::restart`]
    /// starts it again on the same port.
    pub fn stop(&self) -> Result<(), String> {
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"]))
    }

    /// Starts the server again after [`PgCluster::stop`].
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl_start()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let server_options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 \
             -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &server_options, "start"]))
    }

    /// `program` from the server binaries, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// Starts a detached shell that waits for this process to end, then stops the cluster
    /// and deletes its directory.
    fn watch_for_exit(&self) -> Result<(), String> {
        let as_user = if self.as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {as_user}'{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bindir.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C of the tests must not kill the watchdog.
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| format!("starting the test cluster's watchdog: {e}"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = run(self.command("pg_ctl").arg("-D").arg(self.data()).args([
            "-m",
            "immediate",
            "stop",
        ]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Where `initdb` and `pg_ctl` are.
fn find_bindir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{BINDIR_ENV}={} has no initdb in it",
                dir.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "the PostgreSQL tests need a PostgreSQL server, and none was found: no initdb on \
             PATH or in /usr/lib/postgresql/*/bin. Install one with `scripts/postgres.sh \
             install` (Debian's postgresql package), set {BINDIR_ENV} to the directory holding \
             initdb and pg_ctl, or set {URL_ENV} to the URL of a server to test against."
        )
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Runs a command to completion; its output is in the error when it fails.
fn run(command: &mut Command) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The server log of a cluster, for failure messages.
fn server_log(cluster: &PgCluster) -> String {
    std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default()
}
