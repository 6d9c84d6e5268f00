#!/usr/bin/env bash
# The demo: builds the guests and the host, starts `wasmq run examples/manifest.toml`, posts a
# webhook to the producer and sends a few messages with `wasmq send`, shows them consumed,
# prints the queues, and stops the host.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/build-guests.sh >/dev/null
cargo build --release --locked -p wasmq
host=./target/release/wasmq
export WASMQ_URL=http://127.0.0.1:8787

"$host" run examples/manifest.toml &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    "$host" queues list >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "the host did not start" >&2; exit 1; }
    sleep 0.1
done

echo "POST /webhook → $(curl -s -d '{"event": "signup", "user": 7}' http://127.0.0.1:8787/webhook)"
"$host" send incoming "hello from the demo"
"$host" send incoming '{"order": 42}' --content-type json
"$host" send jobs "straight to the worker" --delay 1
sleep 3
"$host" queues list
kill -INT "$pid"
wait "$pid"
trap - EXIT
