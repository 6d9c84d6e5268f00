"""`worker` in Python: the simplest wasmq consumer, the same as the Rust `worker` example.

For every message of the batch it prints one line to stdout,

    [worker-py] <queue> <id> attempt <n>: <body as text, truncated>

and then returns normally, which is `ok` and acks every message (the implicit ack of
DESIGN.md §2). The body is shown as UTF-8 (invalid bytes replaced), with control characters
escaped so a message is always exactly one line, and cut after MAX_BODY_CHARS characters.

Build (from the repository root; scripts/build-polyglot-guests.sh does this):

    pip install componentize-py==0.25.1
    componentize-py -d wit -w consumer componentize -p guest-examples/python/worker app \
        -o guest-examples/target/polyglot/worker-py.wasm

The bindings (`wit_world`, `componentize_py_types`) are generated at build time; to look at
them: `componentize-py -d wit -w consumer bindings /tmp/bindings`. Raising
`componentize_py_types.Err("why")` from `handle` would return `err("why")` and fail the batch.
"""

import sys

from wit_world import exports
from wit_world.imports.batch import MessageBatch

# Characters of a body shown before it is cut with `…`.
MAX_BODY_CHARS = 200

# The escapes Rust's `char::escape_default` uses for the control characters that have one.
_SHORT_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _escape(c: str) -> str:
    """A control character the way Rust's `char::escape_default` writes it."""
    return _SHORT_ESCAPES.get(c) or "\\u{%x}" % ord(c)


def _is_control(c: str) -> bool:
    """Unicode general category Cc, like Rust's `char::is_control`."""
    code = ord(c)
    return code < 0x20 or 0x7F <= code <= 0x9F


def preview(body: bytes, limit: int = MAX_BODY_CHARS) -> str:
    """The body as one line of text: lossy UTF-8, control characters escaped, at most `limit`
    characters of the body followed by `…` when it was cut."""
    text = body.decode("utf-8", errors="replace")
    # Fast path: nothing to cut, and nothing to escape (control characters are not printable;
    # some other characters are not either, and take the slow path for nothing).
    if len(text) <= limit and text.isprintable():
        return text
    cut = len(text) > limit
    shown = text[:limit]
    out = "".join(_escape(c) if _is_control(c) else c for c in shown)
    return out + "…" if cut else out


class Handler(exports.Handler):
    def handle(self, batch: MessageBatch) -> None:
        queue = batch.queue()
        lines = [
            f"[worker-py] {queue} {m.id} attempt {m.attempts}: {preview(m.body)}\n"
            for m in batch.messages()
        ]
        # One write and an explicit flush: the store (and Python's stdout buffer with it) is
        # dropped when the batch ends.
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
