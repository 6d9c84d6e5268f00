// {{name}}: a wasmq producer.
//
// The host calls it for every HTTP request on its manifest `route` (`manifest.toml`). A
// `POST` queues its body as one message in the queue bound to BINDING and answers `202` with
// `{"queued":1,"backlog":<messages in the queue>}`. The message is `json` when the request
// says `content-type: application/json`, `text` when the body is UTF-8, else `bytes`. Other
// methods get `405`; a message the queue refuses gets `400`, `413` or `503` with
// `{"error":"…"}`.
//
// The contract is `wit/queues.wit`, world `http-producer`: it exports the standard
// `wasi:http/incoming-handler` (the object `incomingHandler` below) and imports wasmq's
// `producer`. A failed WIT call throws an error whose `payload` is the WIT error, e.g.
// `{ tag: "invalid-body", val: "…" }`.

import { send } from "wasmq:queues/producer@0.1.0";
import {
  Fields,
  IncomingBody,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "wasi:http/types@0.2.12";

/** The binding (`producers` in the manifest) the messages are sent to. */
const BINDING = "JOBS";

const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

export const incomingHandler = {
  handle(request, responseOut) {
    const [status, answer] = respond(request);
    reply(responseOut, status, answer);
  },
};

/** The status and JSON answer for `request`, queueing its body. */
function respond(request) {
  if (request.method().tag !== "post") {
    return [405, { error: "use POST" }];
  }
  const body = readBody(request);
  const json = request
    .headers()
    .get("content-type")
    .some((value) => new TextDecoder().decode(value).startsWith("application/json"));
  const contentType = json ? "json" : isUtf8(body) ? "text" : "bytes";
  let metrics;
  try {
    metrics = send(BINDING, { body, contentType });
  } catch (e) {
    if (e.payload === undefined) throw e;
    console.error(`[{{name}}] send to ${BINDING} failed: ${e.payload.tag} ${e.payload.val ?? ""}`);
    return refusal(e.payload);
  }
  console.log(`[{{name}}] queued ${body.length} bytes as ${contentType}`);
  return [202, { queued: 1, backlog: Number(metrics.backlogCount) }];
}

/** The status and JSON answer for a send the queue refused. */
function refusal({ tag, val }) {
  switch (tag) {
    case "message-too-large":
      return [413, { error: `the body is ${val} bytes; the limit is 128000` }];
    case "invalid-body":
      return [400, { error: `invalid body: ${val}` }];
    case "unavailable":
      return [503, { error: `try again: ${val}` }];
    case "unknown-binding":
      return [500, { error: `no queue is bound to ${val}` }];
    default:
      return [400, { error: `${tag} ${val ?? ""}` }];
  }
}

function isUtf8(bytes) {
  try {
    utf8.decode(bytes);
    return true;
  } catch {
    return false;
  }
}

/** The whole request body (the host caps its size at 2 MiB). */
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

/** Sends `answer` as a JSON response. */
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
