#!/usr/bin/env bash
# Miniflare (Cloudflare's local simulator, the real workerd runtime) and `wasmq run` doing the
# same job on this machine in the same run: MESSAGES messages of 64 bytes published over HTTP in
# batches of 100 by 4 publishers, consumed in batches of up to 100 and acked. Prints the ratio of
# wasmq's end-to-end msgs/s to Miniflare's per round. See bench/miniflare/bench.mjs for what
# Miniflare cannot do alike (its queue is in memory, and it runs one batch at a time).
# Usage: scripts/bench-miniflare.sh [MESSAGES]   (default 10000; WASMQ=path picks the binary)
set -euo pipefail

messages="${1:-10000}"
wasmq="${WASMQ:-${CARGO_TARGET_DIR:-target}/release/wasmq}"
# Checked before anything runs, so a missing build fails in a second, not after a round.
if [[ ! -x "$wasmq" ]]; then
  echo "bench-miniflare: no wasmq binary at $wasmq; run \`cargo build --release -p wasmq\` first (or set WASMQ)" >&2
  exit 1
fi
wasmq="$(realpath "$wasmq")"
# From the repository root: wasmq's bench finds its consumer component by a path relative to it.
cd "$(dirname "$0")/.."

# `npm ci` installs exactly what package-lock.json pins; skipped once installed.
if [[ ! -d bench/miniflare/node_modules/miniflare ]]; then
  (cd bench/miniflare && npm ci --no-audit --no-fund)
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
# Alternating rounds, so a change in the machine's load (two shared cores) hits both alike.
for round in 1 2; do
  mf_line="$(node bench/miniflare/bench.mjs --messages "$messages")"
  echo "$mf_line"
  mf_rate="$(sed -nE 's/^miniflare: .*: ([0-9]+) msgs\/s$/\1/p' <<<"$mf_line")"
  # tee: wasmq's bench takes a while, so its lines show as they come.
  "$wasmq" bench binary --messages "$messages" --concurrency 1,4 | tee "$out"
  rates="$(sed -nE 's/^end to end, `wasmq run`, max_batch_size 100, max_concurrency ([0-9]+): ([0-9]+) msgs\/s.*/\1 \2/p' "$out")"
  if [[ -z "$mf_rate" || -z "$rates" ]]; then
    echo "bench-miniflare: could not read the msgs/s lines in round $round" >&2
    exit 1
  fi
  while read -r concurrency rate; do
    awk -v r="$round" -v c="$concurrency" -v w="$rate" -v m="$mf_rate" 'BEGIN {
      printf "round %d: wasmq end to end (max_concurrency %d) %d msgs/s / miniflare %d msgs/s = %.2f\n", r, c, w, m, w / m }'
  done <<<"$rates"
done
