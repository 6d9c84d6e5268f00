#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the tests need (the
# wasm32-wasip2 target via build-guests.sh; componentize-py from PyPI and componentize-js from
# npm via build-polyglot-guests.sh; PostgreSQL from Debian; the Cloudflare Python SDK from
# PyPI; headless Chromium and chromedriver from Debian), builds the example guests, checks
# formatting and lints, then runs the unit, semantic, crash and end-to-end suites.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
./scripts/build-guests.sh --locked
./scripts/build-polyglot-guests.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The PostgreSQL backend's tests start throwaway clusters: they need the server binaries.
./scripts/postgres.sh install
# The Cloudflare API tests drive the host with the official Cloudflare Python SDK, pinned, in a
# venv of its own outside the repository.
sdk="${XDG_CACHE_HOME:-$HOME/.cache}/wasmq/cloudflare-sdk-5.9.0"
if ! "$sdk/bin/python" -c 'import cloudflare' >/dev/null 2>&1; then
    python3 -m venv "$sdk"
    "$sdk/bin/pip" install --quiet --disable-pip-version-check cloudflare==5.9.0
fi
export WASMQ_CLOUDFLARE_PYTHON="$sdk/bin/python"
# The dashboard's tests drive headless Chromium through chromedriver (host/tests/dashboard.rs);
# they fail, rather than skip, without them.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi
cargo test --workspace --locked
