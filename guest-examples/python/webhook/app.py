"""`webhook` in Python: a producer that receives JSON webhooks and queues them, the same as the
Rust `webhook` example (same answers, same messages).

`POST` a JSON body to the component's route:

- a JSON array queues each element as one message (at most 100, atomically, with
  `send-batch`); any other JSON value queues one message;
- the answer is `202 Accepted` with `{"queued": <messages queued>, "backlog": <queue backlog>}`;
- a body that is not JSON gets `400` with `{"error": "invalid JSON: …"}` and queues nothing;
  another method gets `405`; a send the queue refuses gets `413` (too large) or `503`
  (storage unavailable, worth retrying);
- an `Idempotency-Key` header becomes the message's dedup key, so a provider that delivers
  the same webhook twice inside the queue's dedup window queues it once.

Messages are re-serialised compactly and sent as `json` to the queue bound to BINDING.

Build (from the repository root; scripts/build-polyglot-guests.sh does this):

    componentize-py -d wit -w http-producer componentize -p guest-examples/python/webhook app \
        -o guest-examples/target/polyglot/webhook-py.wasm
"""

import json
import sys

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import producer
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from wit_world.imports.wasmq_queues_types import (
    ContentType,
    SendError,
    SendError_BatchTooLarge,
    SendError_EmptyBatch,
    SendError_InvalidBody,
    SendError_InvalidDelay,
    SendError_MessageTooLarge,
    SendError_TooManyMessages,
    SendError_Unavailable,
    SendError_UnknownBinding,
    SendRequest,
)

# The binding the messages are sent to.
BINDING = "JOBS"

# Most messages one request may queue (the limit of `send-batch`).
MAX_MESSAGES = 100


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        status, answer = respond(request)
        reply(response_out, status, answer)
        sys.stderr.flush()


def respond(request: IncomingRequest) -> tuple[int, dict]:
    """The status and JSON answer for `request`, queueing what it carries."""
    if not isinstance(request.method(), Method_Post):
        return 405, error("use POST with a JSON body")
    try:
        value = json.loads(read_body(request).decode("utf-8"), parse_constant=_not_json)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return 400, error(f"invalid JSON: {e}")
    items = value if isinstance(value, list) else [value]
    if not items:
        return 400, error("an empty array queues nothing")
    if len(items) > MAX_MESSAGES:
        return 400, error(f"{len(items)} messages in one request; the limit is {MAX_MESSAGES}")
    requests = [
        SendRequest(
            json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode(),
            ContentType.JSON,
            None,
            None,
        )
        for item in items
    ]
    try:
        if len(requests) == 1:
            requests[0].dedup_key = header(request, "idempotency-key")
            metrics = producer.send(BINDING, requests[0])
        else:
            metrics = producer.send_batch(BINDING, requests, None)
    except Err as e:
        print(f"[webhook-py] send to {BINDING} failed: {e.value}", file=sys.stderr)
        return status_for(e.value), error(describe(e.value))
    return 202, {"queued": len(requests), "backlog": metrics.backlog_count}


def _not_json(constant: str) -> None:
    """Refuses `NaN`, `Infinity` and `-Infinity`, which Python's json accepts and JSON does not."""
    raise ValueError(f"{constant} is not JSON")


def header(request: IncomingRequest, name: str) -> str | None:
    """The first value of header `name`, if it is UTF-8."""
    for value in request.headers().get(name):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def read_body(request: IncomingRequest) -> bytes:
    """Reads the whole request body (the host caps its size)."""
    body = request.consume()
    chunks = []
    # The stream must be dropped (the `with` block) before its body is finished.
    with body.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 * 1024))
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    IncomingBody.finish(body)
    return b"".join(chunks)


def reply(response_out: ResponseOutparam, status: int, answer: dict) -> None:
    """Sends a JSON response."""
    response = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    data = json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()
    with body.write() as stream:
        # `blocking-write-and-flush` takes at most 4096 bytes per call.
        for start in range(0, len(data), 4096):
            stream.blocking_write_and_flush(data[start : start + 4096])
    OutgoingBody.finish(body, None)


def error(message: str) -> dict:
    return {"error": message}


def status_for(e: SendError) -> int:
    if isinstance(e, (SendError_MessageTooLarge, SendError_BatchTooLarge)):
        return 413
    if isinstance(e, SendError_Unavailable):
        return 503
    if isinstance(e, SendError_UnknownBinding):
        return 500
    return 400


def describe(e: SendError) -> str:
    if isinstance(e, SendError_UnknownBinding):
        return f"no queue is bound to `{e.value}`"
    if isinstance(e, SendError_MessageTooLarge):
        return f"a message is {e.value} bytes; the limit is 128000"
    if isinstance(e, SendError_BatchTooLarge):
        return f"the messages are {e.value} bytes; the limit is 256000"
    if isinstance(e, SendError_TooManyMessages):
        return f"{e.value} messages; the limit is 100"
    if isinstance(e, SendError_EmptyBatch):
        return "nothing to queue"
    if isinstance(e, SendError_InvalidDelay):
        return f"invalid delay of {e.value} seconds"
    if isinstance(e, SendError_InvalidBody):
        return f"invalid body: {e.value}"
    if isinstance(e, SendError_Unavailable):
        return f"the queue is unavailable, try again: {e.value}"
    return repr(e)
