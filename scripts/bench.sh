#!/usr/bin/env bash
# Builds the host in release mode and runs the engine benchmark on a real, durable redb file.
# Flags pass through, e.g. `--backlog 0` to skip the 1 000 000-message backlog run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p wasmq
exec ./target/release/wasmq bench engine "$@"
