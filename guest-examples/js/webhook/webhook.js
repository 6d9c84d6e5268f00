// `webhook` in JavaScript: a producer that receives JSON webhooks and queues them, the same as
// the Rust `webhook` example (same answers, same messages).
//
// `POST` a JSON body to the component's route:
//
// - a JSON array queues each element as one message (at most 100, atomically, with
//   `send-batch`); any other JSON value queues one message;
// - the answer is `202 Accepted` with `{"queued": <messages queued>, "backlog": <queue backlog>}`;
// - a body that is not JSON gets `400` with `{"error": "invalid JSON: …"}` and queues nothing;
//   another method gets `405`; a send the queue refuses gets `413` (too large) or `503`
//   (storage unavailable, worth retrying);
// - an `Idempotency-Key` header becomes the message's dedup key, so a provider that delivers
//   the same webhook twice inside the queue's dedup window queues it once.
//
// Messages are re-serialised compactly and sent as `json` to the queue bound to BINDING.
//
// Build: `npm ci && node build.mjs` in guest-examples/js (or scripts/build-polyglot-guests.sh).
// The component exports wasi:http/incoming-handler itself (`incomingHandler` below, with the
// wasi:http resources of the WIT): componentize-js's `fetch-event` serves another version of
// that interface, so build.mjs leaves it out. A failed WIT call throws an error whose
// `payload` is the WIT error, e.g. `{ tag: "message-too-large", val: 130002n }`.

import { send, sendBatch } from "wasmq:queues/producer@0.1.0";
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

/** The binding the messages are sent to. */
const BINDING = "JOBS";

/** Most messages one request may queue (the limit of `send-batch`). */
const MAX_MESSAGES = 100;

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

export const incomingHandler = {
  handle(request, responseOut) {
    const [status, answer] = respond(request);
    reply(responseOut, status, answer);
  },
};

/** The status and JSON answer for `request`, queueing what it carries. */
function respond(request) {
  if (request.method().tag !== "post") {
    return [405, error("use POST with a JSON body")];
  }
  let value;
  try {
    value = JSON.parse(utf8.decode(readBody(request)));
  } catch (e) {
    return [400, error(`invalid JSON: ${e.message}`)];
  }
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0) {
    return [400, error("an empty array queues nothing")];
  }
  if (items.length > MAX_MESSAGES) {
    return [400, error(`${items.length} messages in one request; the limit is ${MAX_MESSAGES}`)];
  }
  const requests = items.map((item) => ({
    body: encoder.encode(JSON.stringify(item)),
    contentType: "json",
  }));
  let metrics;
  try {
    if (requests.length === 1) {
      const dedupKey = header(request, "idempotency-key");
      metrics = send(BINDING, { ...requests[0], dedupKey });
    } else {
      metrics = sendBatch(BINDING, requests, undefined);
    }
  } catch (e) {
    if (e.payload === undefined) throw e;
    console.error(`[webhook-js] send to ${BINDING} failed: ${e.payload.tag} ${e.payload.val ?? ""}`);
    return [statusFor(e.payload), error(describe(e.payload))];
  }
  return [202, { queued: requests.length, backlog: Number(metrics.backlogCount) }];
}

/** The first value of header `name`, if it is UTF-8. */
function header(request, name) {
  const [value] = request.headers().get(name);
  if (value === undefined) return undefined;
  try {
    return utf8.decode(value);
  } catch {
    return undefined;
  }
}

/** Reads the whole request body (the host caps its size). */
function readBody(request) {
  const body = request.consume();
  const stream = body.stream();
  const chunks = [];
  for (;;) {
    try {
      chunks.push(stream.blockingRead(65536n));
    } catch (e) {
      if (e.payload?.tag === "closed") break;
      throw e;
    }
  }
  // The stream must be dropped before its body is finished.
  stream[Symbol.dispose]();
  IncomingBody.finish(body);
  const bytes = new Uint8Array(chunks.reduce((size, chunk) => size + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

/** Sends a JSON response. */
function reply(responseOut, status, answer) {
  const response = new OutgoingResponse(
    Fields.fromList([["content-type", encoder.encode("application/json")]]),
  );
  response.setStatusCode(status);
  const body = response.body();
  ResponseOutparam.set(responseOut, { tag: "ok", val: response });
  const stream = body.write();
  const bytes = encoder.encode(JSON.stringify(answer));
  // `blocking-write-and-flush` takes at most 4096 bytes per call.
  for (let start = 0; start < bytes.length; start += 4096) {
    stream.blockingWriteAndFlush(bytes.subarray(start, start + 4096));
  }
  stream[Symbol.dispose]();
  OutgoingBody.finish(body, undefined);
}

function error(message) {
  return { error: message };
}

function statusFor({ tag }) {
  switch (tag) {
    case "message-too-large":
    case "batch-too-large":
      return 413;
    case "unavailable":
      return 503;
    case "unknown-binding":
      return 500;
    default:
      return 400;
  }
}

function describe({ tag, val }) {
  switch (tag) {
    case "unknown-binding":
      return `no queue is bound to \`${val}\``;
    case "message-too-large":
      return `a message is ${val} bytes; the limit is 128000`;
    case "batch-too-large":
      return `the messages are ${val} bytes; the limit is 256000`;
    case "too-many-messages":
      return `${val} messages; the limit is 100`;
    case "empty-batch":
      return "nothing to queue";
    case "invalid-delay":
      return `invalid delay of ${val} seconds`;
    case "invalid-body":
      return `invalid body: ${val}`;
    case "unavailable":
      return `the queue is unavailable, try again: ${val}`;
    default:
      return `${tag} ${val ?? ""}`;
  }
}
