//! The compiled-component cache: machine code of every component compiled once, on disk, keyed
//! by the component's digest and the engine's compatibility hash, so that a restart or a swap
//! back to a known component does not compile it again.
//!
//! A cache file is `MAGIC`, the SHA-256 of the payload, then the payload (wasmtime's serialized
//! component). A file whose checksum does not match is deleted and rebuilt, never loaded:
//! deserializing trusts its input, so only bytes this host wrote and that arrive intact are
//! handed to wasmtime.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every cache file (bump the digit when the layout changes).
const MAGIC: &[u8; 8] = b"WASMQC01";

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache without compiling.
    Hit,
    /// Not in the cache: compiled, then stored.
    Miss,
    /// The cache file was damaged or unusable: deleted, compiled again, stored again.
    Rebuilt,
    /// No cache configured: compiled.
    Disabled,
}

/// A directory of compiled components.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: PathBuf,
}

/// The cache folder for commands that have no data folder of their own (`wasmq test`):
/// `$WASMQ_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmq/components`, else
/// `$HOME/.cache/wasmq/components`; none if none of them is set.
pub fn user_cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("WASMQ_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("wasmq/components")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/wasmq/components")))
}

/// The SHA-256 of `bytes` in lowercase hex: what the cache and the logs call a component's
/// digest, and what the dashboard's asset versions and the Cloudflare queue ids derive from
/// (so it must stay SHA-256 in hex).
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ComponentCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the compiled form of `wasm` for `engine` lives.
    pub fn path_for(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir
            .join(format!("{}-{:016x}.cwasm", digest(wasm), hasher.finish()))
    }

    /// The component from the cache, or compiled (and stored) when it is not there or its file
    /// is damaged. Failing to store is logged, not an error: the cache only saves time.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        name: &str,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let path = self.path_for(engine, wasm);
        let mut outcome = CacheOutcome::Miss;
        match std::fs::read(&path) {
            Ok(bytes) => match verified_payload(&bytes) {
                // SAFETY: the payload is a serialized component this host wrote (the checksum
                // proves it arrived intact) for an engine with the same compatibility hash;
                // wasmtime checks the rest of its header itself.
                Some(payload) => match unsafe { Component::deserialize(engine, payload) } {
                    Ok(component) => return Ok((component, CacheOutcome::Hit)),
                    Err(err) => {
                        tracing::warn!(component = name, path = %path.display(), error = %err, "cached component unusable; compiling again");
                        outcome = CacheOutcome::Rebuilt;
                    }
                },
                None => {
                    tracing::warn!(component = name, path = %path.display(), "cached component is damaged (checksum mismatch); compiling again");
                    outcome = CacheOutcome::Rebuilt;
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(component = name, path = %path.display(), error = %err, "reading the component cache failed");
                outcome = CacheOutcome::Rebuilt;
            }
        }
        if outcome == CacheOutcome::Rebuilt {
            let _ = std::fs::remove_file(&path);
        }
        let component = Component::new(engine, wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling component `{name}`"))?;
        if let Err(err) = self.store(&path, &component) {
            tracing::warn!(
                component = name,
                error = format!("{err:#}"),
                "storing the compiled component failed"
            );
        }
        Ok((component, outcome))
    }

    /// Writes `component` to `path` atomically (a temporary file renamed into place).
    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let payload = component
            .serialize()
            .map_err(anyhow::Error::from)
            .context("serializing the component")?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut file = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&Sha256::digest(&payload));
        file.extend_from_slice(&payload);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &file).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }
}

/// The payload of a cache file if its magic and checksum are right.
fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (checksum, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == checksum).then_some(payload)
}
