//! `webhook`: a producer that receives JSON webhooks and queues them.
//!
//! `POST` a JSON body to the component's route:
//!
//! - a JSON array queues each element as one message (at most 100, atomically, with
//!   `send-batch`); any other JSON value queues one message;
//! - the answer is `202 Accepted` with `{"queued": <messages queued>, "backlog": <queue backlog>}`;
//! - a body that is not JSON gets `400` with `{"error": "invalid JSON: …"}` and queues nothing;
//!   another method gets `405`; a send the queue refuses gets `413` (too large) or `503`
//!   (storage unavailable, worth retrying);
//! - an `Idempotency-Key` header becomes the message's dedup key, so a provider that delivers
//!   the same webhook twice inside the queue's dedup window queues it once.
//!
//! Messages are re-serialised compactly and sent as `json` to the queue bound to [`BINDING`].
//!
//! Manifest example:
//!
//! ```toml
//! [components.webhook]
//! source = "guest-examples/target/wasm32-wasip2/release/webhook.wasm"
//! route = "/webhook"
//! producers = { JOBS = "jobs" }
//! ```

wit_bindgen::generate!({
    world: "http-producer",
    path: "../../wit",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use serde_json::{Value, json};
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;
use wasmq::queues::producer;
use wasmq::queues::types::{ContentType, SendError, SendRequest};

/// The binding the messages are sent to.
pub const BINDING: &str = "JOBS";

/// Most messages one request may queue (the limit of `send-batch`).
const MAX_MESSAGES: usize = 100;

struct Webhook;

impl Guest for Webhook {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = answer(&request);
        reply(response_out, status, body.to_string().as_bytes());
    }
}

/// The status and JSON body for `request`, queueing what it carries.
fn answer(request: &IncomingRequest) -> (u16, Value) {
    if !matches!(request.method(), Method::Post) {
        return (405, error("use POST with a JSON body"));
    }
    let bytes = match read_body(request) {
        Ok(bytes) => bytes,
        Err(why) => return (400, error(&why)),
    };
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => return (400, error(&format!("invalid JSON: {e}"))),
    };
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    if items.is_empty() {
        return (400, error("an empty array queues nothing"));
    }
    if items.len() > MAX_MESSAGES {
        return (
            400,
            error(&format!(
                "{} messages in one request; the limit is {MAX_MESSAGES}",
                items.len()
            )),
        );
    }
    let dedup_key = header(request, "idempotency-key");
    let requests: Vec<SendRequest> = items
        .iter()
        .map(|item| SendRequest {
            body: item.to_string().into_bytes(),
            content_type: ContentType::Json,
            delay_seconds: None,
            dedup_key: None,
        })
        .collect();
    let sent = match (requests.as_slice(), dedup_key) {
        ([one], dedup_key) => producer::send(
            BINDING,
            &SendRequest {
                dedup_key,
                ..one.clone()
            },
        ),
        (many, _) => producer::send_batch(BINDING, many, None),
    };
    match sent {
        Ok(metrics) => (
            202,
            json!({ "queued": requests.len(), "backlog": metrics.backlog_count }),
        ),
        Err(e) => {
            eprintln!("[webhook] send to {BINDING} failed: {e:?}");
            (status_for(&e), error(&describe(&e)))
        }
    }
}

/// The first value of header `name`, if it is UTF-8.
fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    values
        .into_iter()
        .next()
        .and_then(|v| String::from_utf8(v).ok())
}

/// Reads the whole request body (the host caps its size).
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "the request body was already read".to_owned())?;
    let stream = body
        .stream()
        .map_err(|()| "the request body has no stream".to_owned())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the request body: {}", e.to_debug_string()));
            }
        }
    }
    drop(stream);
    let _trailers = IncomingBody::finish(body);
    Ok(bytes)
}

/// Sends a JSON response.
fn reply(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_owned(), b"application/json".to_vec())])
        .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body of a new response");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the body stream of a new response");
    // `blocking-write-and-flush` takes at most 4096 bytes per call.
    for chunk in body.chunks(4096) {
        if let Err(e) = stream.blocking_write_and_flush(chunk) {
            eprintln!("[webhook] writing the response failed: {e:?}");
            return;
        }
    }
    drop(stream);
    if let Err(e) = OutgoingBody::finish(outgoing, None) {
        eprintln!("[webhook] finishing the response failed: {e:?}");
    }
}

fn error(message: &str) -> Value {
    json!({ "error": message })
}

fn status_for(e: &SendError) -> u16 {
    match e {
        SendError::MessageTooLarge(_) | SendError::BatchTooLarge(_) => 413,
        SendError::Unavailable(_) => 503,
        SendError::UnknownBinding(_) => 500,
        _ => 400,
    }
}

fn describe(e: &SendError) -> String {
    match e {
        SendError::UnknownBinding(name) => format!("no queue is bound to `{name}`"),
        SendError::MessageTooLarge(size) => {
            format!("a message is {size} bytes; the limit is 128000")
        }
        SendError::BatchTooLarge(size) => {
            format!("the messages are {size} bytes; the limit is 256000")
        }
        SendError::TooManyMessages(count) => format!("{count} messages; the limit is 100"),
        SendError::EmptyBatch => "nothing to queue".to_owned(),
        SendError::InvalidDelay(delay) => format!("invalid delay of {delay} seconds"),
        SendError::InvalidBody(why) => format!("invalid body: {why}"),
        SendError::Unavailable(why) => format!("the queue is unavailable, try again: {why}"),
    }
}

export!(Webhook);
