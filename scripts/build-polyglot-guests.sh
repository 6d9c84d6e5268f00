#!/usr/bin/env bash
# Builds the Python and JavaScript example guests into WebAssembly components:
#
#   guest-examples/python/worker/app.py    -> guest-examples/target/polyglot/worker-py.wasm
#   guest-examples/python/webhook/app.py   -> guest-examples/target/polyglot/webhook-py.wasm
#   guest-examples/js/worker/worker.js     -> guest-examples/target/polyglot/worker-js.wasm
#   guest-examples/js/webhook/webhook.js   -> guest-examples/target/polyglot/webhook-js.wasm
#
# Installs what is missing first: componentize-py 0.25.1 (pip, into the Python that
# `$PYTHON`, default `python3`, names) and the pinned npm packages of guest-examples/js
# (`npm ci`, componentize-js). Both tools work offline once installed.
#
# A component is rebuilt only when its inputs (the WIT, its sources, the tool's version or
# lock file) changed since it was last built; `--force` rebuilds them all. Works from any
# directory; exits non-zero if anything fails (a failed build leaves no component, not even
# the previous one, behind).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
guests="$root/guest-examples"
out="$guests/target/polyglot"
python="${PYTHON:-python3}"
componentize_py_version=0.25.1

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (expected --force)" >&2
            exit 2
            ;;
    esac
done

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "error: \`$1\` is not installed; $2" >&2
        exit 1
    fi
}

# digest EXTRA PATH...: a digest of the files under the paths (relative to the repository
# root; caches left out) and of EXTRA (tool versions).
digest() {
    local extra="$1"
    shift
    {
        echo "$extra"
        (cd "$root" && find "$@" -type f -not -path '*/__pycache__/*' -not -path '*/node_modules/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -d' ' -f1
}

# up_to_date WASM DIGEST: the component exists and was built from inputs with this digest.
up_to_date() {
    [ "$force" = 0 ] && [ -f "$1" ] && [ -f "$1.inputs" ] && [ "$(cat "$1.inputs")" = "$2" ]
}

report() {
    printf '%10d bytes  %s  (%s)\n' "$(wc -c <"$1")" "$1" "$2"
}

mkdir -p "$out"
# Scratch space next to the components (so a finished build is moved into place, never left
# half-written), removed on exit.
scratch="$(mktemp -d "$out/.build.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# --- Python -----------------------------------------------------------------------------
need "$python" "install Python 3 (or set PYTHON)"
py_tool_version() {
    "$python" -c 'import importlib.metadata as m; print(m.version("componentize-py"))' 2>/dev/null || true
}
if [ "$(py_tool_version)" != "$componentize_py_version" ]; then
    echo "installing componentize-py $componentize_py_version" >&2
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check \
        "componentize-py==$componentize_py_version"
    if [ "$(py_tool_version)" != "$componentize_py_version" ]; then
        echo "error: componentize-py $componentize_py_version did not install into $python" >&2
        exit 1
    fi
fi
# Run through the interpreter, so it works whether or not pip's script folder is on PATH.
componentize_py() {
    "$python" -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' "$@"
}

# Each Python guest: its folder under guest-examples/python, and its WIT world.
for guest in worker:consumer webhook:http-producer; do
    folder="${guest%%:*}"
    world="${guest#*:}"
    py_wasm="$out/$folder-py.wasm"
    py_inputs="$(digest "componentize-py $componentize_py_version" wit "guest-examples/python/$folder")"
    if up_to_date "$py_wasm" "$py_inputs"; then
        report "$py_wasm" "up to date"
        continue
    fi
    rm -f "$py_wasm" "$py_wasm.inputs"
    start=$SECONDS
    # Built from a copy: the Python inside componentize-py leaves a __pycache__ beside the
    # sources it compiles.
    mkdir "$scratch/$folder"
    cp -R "$guests/python/$folder/." "$scratch/$folder/"
    rm -rf "$scratch/$folder/__pycache__"
    (cd "$root" && componentize_py -d wit -w "$world" componentize \
        -p "$scratch/$folder" app -o "$scratch/$folder-py.wasm") >&2
    mv "$scratch/$folder-py.wasm" "$py_wasm"
    echo "$py_inputs" >"$py_wasm.inputs"
    report "$py_wasm" "built in $((SECONDS - start)) s"
done

# --- JavaScript -------------------------------------------------------------------------
need node "install Node.js (18 or newer) and npm"
need npm "install npm"
js="$guests/js"
lock_digest="$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)"
stamp="$js/node_modules/.wasmq-lock-digest"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_digest" ]; then
    echo "installing the npm packages of guest-examples/js (npm ci)" >&2
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error) >&2
    echo "$lock_digest" >"$stamp"
fi

# Each JavaScript guest is named after its folder under guest-examples/js; build.mjs builds
# the stale ones in one run.
stale=()
for folder in worker webhook; do
    js_wasm="$out/$folder-js.wasm"
    js_inputs="$(digest "node $(node --version)" wit "guest-examples/js/$folder" \
        guest-examples/js/build.mjs guest-examples/js/package-lock.json)"
    if up_to_date "$js_wasm" "$js_inputs"; then
        report "$js_wasm" "up to date"
    else
        rm -f "$js_wasm" "$js_wasm.inputs"
        echo "$js_inputs" >"$scratch/$folder-js.inputs"
        stale+=("$folder-js")
    fi
done
if [ "${#stale[@]}" -gt 0 ]; then
    start=$SECONDS
    (cd "$js" && node build.mjs "$scratch" "${stale[@]}") >&2
    for name in "${stale[@]}"; do
        mv "$scratch/$name.wasm" "$out/$name.wasm"
        mv "$scratch/$name.inputs" "$out/$name.wasm.inputs"
        report "$out/$name.wasm" "built; ${#stale[@]} in $((SECONDS - start)) s"
    done
fi
