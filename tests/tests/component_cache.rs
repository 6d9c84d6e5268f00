//! The compiled-component cache: a second runtime (a restart) loads what the first compiled
//! without compiling; a damaged cache file is detected, deleted and rebuilt, never loaded; and
//! a component loaded from the cache behaves like a freshly compiled one.

use std::path::{Path, PathBuf};

use wasmq_host::runtime::{
    CacheOutcome, ComponentOptions, ConsumerComponent, Runtime, RuntimeConfig,
};
use wasmq_tests::{guest, one_message_batch};

fn runtime(cache: &Path) -> Runtime {
    Runtime::with_config(&RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        pooling_allocator: true,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Runs the worker on one message and returns its output.
fn run_worker(runtime: &Runtime, wasm: &[u8]) -> Vec<String> {
    let worker =
        ConsumerComponent::new(runtime, "worker", wasm, ComponentOptions::default()).unwrap();
    let batch = worker.run_batch(one_message_batch(b"cached hello"));
    let run = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(batch);
    assert_eq!(run.failure, None);
    run.output
}

#[test]
fn a_restart_loads_from_the_cache_and_damaged_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let wasm = guest("worker");

    let first = runtime(&cache);
    assert_eq!(first.load("worker", &wasm).unwrap().1, CacheOutcome::Miss);
    assert_eq!(first.load("worker", &wasm).unwrap().1, CacheOutcome::Hit);
    let files = cache_files(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let expected = run_worker(&first, &wasm);
    assert!(expected[0].contains("cached hello"), "{expected:?}");

    // A new runtime, as after a restart: no compile, same behaviour.
    let restarted = runtime(&cache);
    assert_eq!(
        restarted.load("worker", &wasm).unwrap().1,
        CacheOutcome::Hit
    );
    assert_eq!(run_worker(&restarted, &wasm), expected);

    // A flipped byte in the machine code: detected, rebuilt, never loaded.
    let path = &files[0];
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(path, &bytes).unwrap();
    assert_eq!(
        restarted.load("worker", &wasm).unwrap().1,
        CacheOutcome::Rebuilt
    );
    assert_eq!(
        restarted.load("worker", &wasm).unwrap().1,
        CacheOutcome::Hit
    );
    assert_eq!(run_worker(&restarted, &wasm), expected);

    // A truncated file and a file of garbage: the same.
    let length = std::fs::metadata(path).unwrap().len();
    std::fs::write(path, &std::fs::read(path).unwrap()[..(length / 3) as usize]).unwrap();
    assert_eq!(
        restarted.load("worker", &wasm).unwrap().1,
        CacheOutcome::Rebuilt
    );
    std::fs::write(path, b"not a cache file").unwrap();
    assert_eq!(
        restarted.load("worker", &wasm).unwrap().1,
        CacheOutcome::Rebuilt
    );
    assert_eq!(
        restarted.load("worker", &wasm).unwrap().1,
        CacheOutcome::Hit
    );

    // Another component gets its own entry.
    assert_eq!(
        restarted.load("fanout", &guest("fanout")).unwrap().1,
        CacheOutcome::Miss
    );
    assert_eq!(cache_files(&cache).len(), 2);
}

#[test]
fn without_a_cache_every_load_compiles() {
    let runtime = Runtime::new().unwrap();
    let wasm = guest("worker");
    assert_eq!(
        runtime.load("worker", &wasm).unwrap().1,
        CacheOutcome::Disabled
    );
    assert!(!runtime.pooling());
}
