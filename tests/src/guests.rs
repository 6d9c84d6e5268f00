//! The example guests of `guest-examples/`, built by `scripts/build-guests.sh`.

use std::path::PathBuf;

/// The path of example component `name` (whether or not it is built).
pub fn guest_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-examples/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
}

/// The bytes of example component `name`; panics with how to build it when it is missing.
pub fn guest(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests with scripts/build-guests.sh",
            path.display()
        )
    })
}
