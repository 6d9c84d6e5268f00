//! The one place that chooses a backend.
//!
//! Callers describe where the queues live ([`Storage`]) and get a [`Broker`] back; nothing
//! outside this crate names a backend type, so adding one, or changing how one is opened,
//! touches this file only. Every backend comes back behind the input checks of
//! [`crate::checked`].

use std::path::PathBuf;
use std::sync::Arc;

use redb::StorageBackend;
use redb::backends::InMemoryBackend;

use crate::Broker;
use crate::checked::Checked;
use crate::postgres::{PostgresBroker, PostgresOptions};
use crate::redb::{RedbBroker, RedbOptions};

/// Opens redb on a storage backend chosen by the caller.
type OpenRedb = Box<dyn FnOnce() -> anyhow::Result<RedbBroker> + Send>;

/// Where the queues are kept, and how to open them.
pub struct Storage(Kind);

enum Kind {
    RedbFile(PathBuf, RedbOptions),
    RedbOn(OpenRedb),
    Postgres(String, PostgresOptions),
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::RedbFile(path, _) => f.debug_tuple("Redb").field(path).finish(),
            Kind::RedbOn(..) => f.write_str("RedbOnBackend"),
            Kind::Postgres(_, options) => f.debug_tuple("Postgres").field(&options.schema).finish(),
        }
    }
}

impl Storage {
    /// Every queue in one redb file at `path`, created if missing (the embedded default).
    pub fn redb(path: impl Into<PathBuf>, options: RedbOptions) -> Self {
        Self(Kind::RedbFile(path.into(), options))
    }

    /// A redb database on any storage backend (the power-loss tests use a disk that keeps
    /// only synced bytes).
    pub fn redb_on(backend: impl StorageBackend, options: RedbOptions) -> Self {
        Self(Kind::RedbOn(Box::new(move || {
            RedbBroker::open_with_backend(backend, options)
        })))
    }

    /// A redb database in memory, gone when the broker closes (the fixture harness).
    pub fn in_memory(options: RedbOptions) -> Self {
        Self::redb_on(InMemoryBackend::new(), options)
    }

    /// Queues shared by every host connected to the same PostgreSQL database and schema.
    ///
    /// `url` is a libpq-style connection string, either a URL
    /// (`postgres://user:password@host:5432/dbname?connect_timeout=5`) or key/value pairs
    /// (`host=127.0.0.1 port=5432 user=wasmq dbname=queues`). TLS is not supported: connect
    /// over a trusted network or a Unix socket (`host=/var/run/postgresql`).
    pub fn postgres(url: impl Into<String>, options: PostgresOptions) -> Self {
        Self(Kind::Postgres(url.into(), options))
    }
}

/// Opens the queues kept in `storage`.
///
/// redb: the file is created if missing, and leases held when the previous process stopped
/// are expired at once and count as failed attempts. PostgreSQL: the schema is created or
/// migrated, and leases held by other hosts are left alone (they may be alive). Close the
/// broker with [`Broker::close`] to finish queued writes and release the storage.
pub async fn open(storage: Storage) -> anyhow::Result<Arc<dyn Broker>> {
    Ok(match storage.0 {
        Kind::RedbFile(path, options) => checked(RedbBroker::open(path, options)?),
        Kind::RedbOn(open) => checked(open()?),
        Kind::Postgres(url, options) => checked(PostgresBroker::connect(&url, options).await?),
    })
}

/// Puts `backend` behind the input checks, as the handle callers get.
fn checked(backend: impl Broker) -> Arc<dyn Broker> {
    Arc::new(Checked(backend))
}
