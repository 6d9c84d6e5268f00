// `worker` in JavaScript: the simplest wasmq consumer, the same as the Rust `worker` example.
//
// For every message of the batch it prints one line to stdout,
//
//     [worker-js] <queue> <id> attempt <n>: <body as text, truncated>
//
// and then returns normally, which is `ok` and acks every message (the implicit ack of
// DESIGN.md §2). The body is shown as UTF-8 (invalid bytes replaced), with control characters
// escaped so a message is always exactly one line, and cut after MAX_BODY_CHARS characters.
//
// Build: `npm ci && node build.mjs` in guest-examples/js (or scripts/build-polyglot-guests.sh).
// componentize-js maps the WIT to JavaScript: the exported interface `handler` is the object
// `handler` below, the borrowed `message-batch` is an object with methods (`queue()`,
// `messages()`, `ack(id)`, `retryAll(delaySeconds)`, ...), a message is
// `{ id, timestampMs, contentType, body: Uint8Array, attempts }`, and throwing from `handle`
// returns `err(...)` (fails the batch).

/** Characters of a body shown before it is cut with `…`. */
const MAX_BODY_CHARS = 200;

const decoder = new TextDecoder("utf-8", { fatal: false });

/** The escapes Rust's `char::escape_default` uses for the control characters that have one. */
const SHORT_ESCAPES = { "\t": "\\t", "\r": "\\r", "\n": "\\n" };

/** Any character of Unicode general category Cc. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Unicode general category Cc, like Rust's `char::is_control`. */
function isControl(code) {
  return code < 0x20 || (code >= 0x7f && code <= 0x9f);
}

/**
 * The body as one line of text: lossy UTF-8, control characters escaped, at most `max`
 * characters (code points) of the body followed by `…` when it was cut.
 */
export function preview(body, max = MAX_BODY_CHARS) {
  const text = decoder.decode(body);
  // Fast path (the interpreter is slow per character): short enough that it cannot be cut
  // (UTF-16 units >= characters) and nothing to escape.
  if (text.length <= max && !CONTROL.test(text)) {
    return text;
  }
  let out = "";
  let count = 0;
  for (const c of text) {
    if (count === max) {
      return out + "…";
    }
    count += 1;
    const code = c.codePointAt(0);
    out += isControl(code) ? SHORT_ESCAPES[c] ?? `\\u{${code.toString(16)}}` : c;
  }
  return out;
}

export const handler = {
  handle(batch) {
    const queue = batch.queue();
    let lines = "";
    for (const m of batch.messages()) {
      lines += `[worker-js] ${queue} ${m.id} attempt ${m.attempts}: ${preview(m.body)}\n`;
    }
    // console.log adds the last newline.
    if (lines) {
      console.log(lines.slice(0, -1));
    }
  },
};
