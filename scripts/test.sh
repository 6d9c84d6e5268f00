#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need (the
# wasm32-wasip2 target via build-guests.sh; componentize-py from PyPI and componentize-js from
# npm via build-polyglot-guests.sh), builds the example guests, checks formatting and lints,
# then runs the unit, semantic, crash and end-to-end suites.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
./scripts/build-guests.sh --locked
./scripts/build-polyglot-guests.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The PostgreSQL backend's tests start throwaway clusters: they need the server binaries.
./scripts/postgres.sh install
cargo test --workspace --locked
