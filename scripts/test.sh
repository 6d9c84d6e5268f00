#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need, checks
# formatting and lints, then runs the unit, semantic, bad-input and crash suites.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
