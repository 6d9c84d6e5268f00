#!/usr/bin/env bash
# The demo: builds the host in release mode and runs the queue engine benchmark on a real,
# durable redb file (pass extra flags through, e.g. `--backlog 0` to skip the 1M backlog run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p wasmq-host
exec ./target/release/host bench engine "$@"
