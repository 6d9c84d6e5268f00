#!/usr/bin/env bash
# Builds the example guests (guest-examples/, their own cargo workspace) as WebAssembly
# components for wasm32-wasip2 in release mode, then prints each component's path and size.
# Works from any directory; exits non-zero if anything fails. Extra arguments go to
# `cargo build` (e.g. `-p scripted`, `--locked`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guests="$root/guest-examples"
target=wasm32-wasip2

if ! rustup target list --installed | grep -qx "$target"; then
    echo "installing the $target target" >&2
    rustup target add "$target"
fi

cd "$guests"
start=$SECONDS
# The guests always build into their own folder, whatever CARGO_TARGET_DIR says: the tests
# and manifests find them there.
CARGO_TARGET_DIR="$guests/target" cargo build --release --target "$target" "$@"
echo "built in $((SECONDS - start)) s"

out="$guests/target/$target/release"
# One component per crate folder; the file is named after the package (`-` becomes `_`).
names=()
for manifest in "$guests"/*/Cargo.toml; do
    names+=("$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -n 1)")
done

status=0
for name in "${names[@]}"; do
    wasm="$out/${name//-/_}.wasm"
    if [ -f "$wasm" ]; then
        printf '%8d bytes  %s\n' "$(wc -c <"$wasm")" "$wasm"
    else
        echo "missing: $wasm" >&2
        status=1
    fi
done
exit $status
