//! The tables in PostgreSQL and the migrations that create them.
//!
//! Every table lives in the broker's own schema (`wasmq` unless configured otherwise); the
//! connections put that schema first on their `search_path`, so the statements elsewhere name
//! tables unqualified.
//!
//! Migrations are numbered and recorded in `schema_migrations`. A host applies the ones it
//! is missing at start, each in its own transaction that first takes a transaction-scoped
//! advisory lock, so several hosts starting together apply each migration exactly once. A
//! database migrated by a newer host (one with migrations this host does not know) is refused.
//!
//! Layout (migration 1):
//!
//! - `queues`: one row per queue: name, settings (JSON, the same shape as the manifest's) and
//!   the paused flag.
//! - `messages`: one row per stored message. The immutable part (id, content type, body) and
//!   the mutable state (attempts, placement) share the row: bodies above ~2 kB are kept
//!   out of line by PostgreSQL (TOAST) and are not rewritten when the state changes, so a
//!   separate body table would only add a join. A message waits for delivery when
//!   `visible_at` is set (ordered by `(visible_at, ticket)`) and is held by a lease when
//!   `lease_deadline` is set (`ticket` then names the lease); exactly one of the two is set.
//! - `message_seq`: the one sequence behind message seqs, ready tickets and lease tickets. A
//!   value is never handed out twice, so a retried message (fresh ticket) goes behind those
//!   already waiting, and a lease id is useless once its message was redelivered.
//! - `counters`: exact per-queue totals, split into shards so that concurrent transactions on
//!   one queue rarely wait for each other's counter row; a queue's value is the sum of its
//!   shards. Every transaction adds its deltas to one shard before it commits.
//! - `dedup`: dedup keys per queue with the end of their window.

use anyhow::{Context, bail};
use tokio_postgres::Client;

/// Advisory lock key (first half) taken by every migration transaction: "wasm" in ASCII.
const MIGRATION_LOCK: i32 = 0x7761_736d;

/// The migrations, in order; the version of each is its position plus one. Never edit one
/// that has shipped: add a new one.
const MIGRATIONS: &[(&str, &str)] = &[(
    "queues, messages, counters and dedup keys",
    r#"
CREATE TABLE queues (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name     TEXT COLLATE "C" NOT NULL UNIQUE,
    settings JSONB NOT NULL,
    paused   BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE SEQUENCE message_seq;

CREATE TABLE messages (
    seq            BIGINT PRIMARY KEY,
    queue_id       BIGINT NOT NULL,
    message_id     BYTEA NOT NULL,
    content_type   SMALLINT NOT NULL,
    body           BYTEA NOT NULL,
    size           INTEGER NOT NULL,
    timestamp_ms   BIGINT NOT NULL,
    attempts       INTEGER NOT NULL,
    ticket         BIGINT NOT NULL,
    visible_at     BIGINT,
    lease_deadline BIGINT,
    CONSTRAINT messages_one_placement CHECK ((visible_at IS NULL) <> (lease_deadline IS NULL))
);
CREATE INDEX messages_ready ON messages (queue_id, visible_at, ticket)
    WHERE lease_deadline IS NULL;
CREATE INDEX messages_leased ON messages (queue_id, lease_deadline, seq)
    WHERE lease_deadline IS NOT NULL;
CREATE INDEX messages_age ON messages (queue_id, timestamp_ms, seq);

CREATE TABLE counters (
    queue_id      BIGINT NOT NULL,
    shard         SMALLINT NOT NULL,
    backlog_count BIGINT NOT NULL DEFAULT 0,
    backlog_bytes BIGINT NOT NULL DEFAULT 0,
    in_flight     BIGINT NOT NULL DEFAULT 0,
    sent          BIGINT NOT NULL DEFAULT 0,
    acked         BIGINT NOT NULL DEFAULT 0,
    retried       BIGINT NOT NULL DEFAULT 0,
    dead_lettered BIGINT NOT NULL DEFAULT 0,
    dropped       BIGINT NOT NULL DEFAULT 0,
    expired       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, shard)
);

CREATE TABLE dedup (
    queue_id  BIGINT NOT NULL,
    dedup_key BYTEA NOT NULL,
    until_ms  BIGINT NOT NULL,
    PRIMARY KEY (queue_id, dedup_key)
);
CREATE INDEX dedup_expiry ON dedup (until_ms);
"#,
)];

/// The newest schema version this host understands.
pub(super) const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Creates `schema` if missing and applies the migrations it lacks. `now_ms` is recorded with
/// each migration applied.
pub(super) async fn migrate(client: &mut Client, schema: &str, now_ms: u64) -> anyhow::Result<()> {
    loop {
        let txn = client
            .transaction()
            .await
            .context("starting a migration transaction")?;
        txn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&MIGRATION_LOCK, &schema],
        )
        .await
        .context("taking the migration lock")?;
        txn.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_ms BIGINT NOT NULL
             );"
        ))
        .await
        .with_context(|| format!("creating schema `{schema}`"))?;
        let current: i32 = txn
            .query_one(
                &format!("SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"),
                &[],
            )
            .await
            .context("reading the schema version")?
            .get(0);
        if current > SCHEMA_VERSION {
            bail!(
                "schema `{schema}` is at version {current}, newer than this host understands \
                 ({SCHEMA_VERSION}); upgrade the host"
            );
        }
        if current == SCHEMA_VERSION {
            txn.commit().await.context("ending the migration check")?;
            return Ok(());
        }
        let (name, sql) = MIGRATIONS[current as usize];
        let version = current + 1;
        txn.batch_execute(&format!("SET LOCAL search_path TO {schema}; {sql}"))
            .await
            .with_context(|| format!("applying migration {version} ({name})"))?;
        txn.execute(
            &format!(
                "INSERT INTO {schema}.schema_migrations (version, name, applied_ms) \
                 VALUES ($1, $2, $3)"
            ),
            &[&version, &name, &super::ms(now_ms)],
        )
        .await
        .with_context(|| format!("recording migration {version}"))?;
        txn.commit()
            .await
            .with_context(|| format!("committing migration {version} ({name})"))?;
        tracing::info!(schema, version, name, "applied database migration");
    }
}

/// Checks a schema name: 1 to 40 characters, lowercase ASCII letters, digits and `_`,
/// starting with a letter (so it needs no quoting and the notification channel built from it
/// fits PostgreSQL's 63-byte identifiers).
pub(super) fn check_schema_name(schema: &str) -> anyhow::Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 40
        && schema.as_bytes()[0].is_ascii_lowercase()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.starts_with("pg_");
    if !ok {
        bail!(
            "invalid PostgreSQL schema name `{schema}`: use 1 to 40 lowercase letters, digits \
             and `_`, starting with a letter (and not `pg_`)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["wasmq", "t_0123abcd", "a"] {
            check_schema_name(ok).unwrap();
        }
        for bad in ["", "Wasmq", "1abc", "a-b", "pg_x", "a\"b", &"x".repeat(41)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}
