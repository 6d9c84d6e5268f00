//! The example guests of `guest-examples/`, as the host's tests and the end-to-end tests find
//! them: one place knows where the build scripts put them and how to say that one is missing.
//! Paths and bytes only, so this kit stays free of wasmtime.

use std::path::{Path, PathBuf};

/// `guest-examples/target`, where both build scripts put their components.
fn target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/target")
}

/// `path`, after checking that it exists; panics naming `script` (which builds it) otherwise.
fn built(path: PathBuf, script: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: run {script}", path.display());
    path
}

/// The path of Rust example component `name` (`worker`, `fanout`, `webhook`, `scripted`), built
/// by `scripts/build-guests.sh`; panics with how to build it when it is missing.
pub fn guest_path(name: &str) -> PathBuf {
    let path = target()
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    built(path, "scripts/build-guests.sh")
}

/// The bytes of Rust example component `name` (see [`guest_path`]).
pub fn guest(name: &str) -> Vec<u8> {
    read(&guest_path(name))
}

/// The path of polyglot example component `name` (`worker-py`, `worker-js`, `webhook-py`,
/// `webhook-js`), built by `scripts/build-polyglot-guests.sh`; panics with how to build it when
/// it is missing.
pub fn polyglot_guest_path(name: &str) -> PathBuf {
    let path = target().join("polyglot").join(format!("{name}.wasm"));
    built(path, "scripts/build-polyglot-guests.sh")
}

/// The bytes of polyglot example component `name` (see [`polyglot_guest_path`]).
pub fn polyglot_guest(name: &str) -> Vec<u8> {
    read(&polyglot_guest_path(name))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
