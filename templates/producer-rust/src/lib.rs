//! `{{name}}`: a wasmq producer.
//!
//! The host calls it for every HTTP request on its manifest `route` (`manifest.toml`). A
//! `POST` queues its body as one message in the queue bound to [`BINDING`] and answers `202`
//! with `{"queued":1,"backlog":<messages in the queue>}`. The message is `json` when the
//! request says `content-type: application/json`, `text` when the body is UTF-8, else
//! `bytes`. Other methods get `405`; a message the queue refuses gets `400`, `413` or `503`
//! with `{"error":"…"}`.
//!
//! The contract is `wit/queues.wit`, world `http-producer`: it exports the standard
//! `wasi:http/incoming-handler` and imports wasmq's `producer`.

wit_bindgen::generate!({ world: "http-producer", path: "wit", generate_all });

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;
use wasmq::queues::producer;
use wasmq::queues::types::{ContentType, SendError, SendRequest};

/// The binding (`producers` in the manifest) the messages are sent to.
const BINDING: &str = "JOBS";

struct Producer;

impl Guest for Producer {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let (status, body) = answer(&request);
        reply(response_out, status, &body);
    }
}

/// The status and JSON body for `request`, queueing its body.
fn answer(request: &IncomingRequest) -> (u16, String) {
    if !matches!(request.method(), Method::Post) {
        return (405, error("use POST"));
    }
    let body = match read_body(request) {
        Ok(body) => body,
        Err(why) => return (400, error(&why)),
    };
    let (content_type, kind) = if is_json(request) {
        (ContentType::Json, "json")
    } else if std::str::from_utf8(&body).is_ok() {
        (ContentType::Text, "text")
    } else {
        (ContentType::Bytes, "bytes")
    };
    let size = body.len();
    let message = SendRequest {
        body,
        content_type,
        delay_seconds: None,
        dedup_key: None,
    };
    match producer::send(BINDING, &message) {
        Ok(metrics) => {
            println!("[{{name}}] queued {size} bytes as {kind}");
            let backlog = metrics.backlog_count;
            (202, format!(r#"{{"queued":1,"backlog":{backlog}}}"#))
        }
        Err(e) => {
            eprintln!("[{{name}}] send to {BINDING} failed: {e:?}");
            refusal(&e)
        }
    }
}

/// The status and JSON body for a send the queue refused.
fn refusal(e: &SendError) -> (u16, String) {
    match e {
        SendError::MessageTooLarge(size) => (
            413,
            error(&format!("the body is {size} bytes; the limit is 128000")),
        ),
        SendError::InvalidBody(why) => (400, error(&format!("invalid body: {why}"))),
        SendError::Unavailable(why) => (503, error(&format!("try again: {why}"))),
        SendError::UnknownBinding(name) => (500, error(&format!("no queue is bound to {name}"))),
        other => (400, error(&format!("{other:?}"))),
    }
}

/// Whether the request's `content-type` is JSON.
fn is_json(request: &IncomingRequest) -> bool {
    request
        .headers()
        .get("content-type")
        .iter()
        .any(|value| value.starts_with(b"application/json"))
}

/// Reads the whole request body (the host caps its size at 2 MiB).
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
    // The stream must be dropped before its body is finished.
    drop(stream);
    let _trailers = IncomingBody::finish(body);
    Ok(bytes)
}

/// Sends a JSON response.
fn reply(out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::from_list(&[("content-type".to_owned(), b"application/json".to_vec())])
        .expect("a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body of a new response");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the body stream of a new response");
    // `blocking-write-and-flush` takes at most 4096 bytes per call.
    for chunk in body.as_bytes().chunks(4096) {
        if let Err(e) = stream.blocking_write_and_flush(chunk) {
            eprintln!("[{{name}}] writing the response failed: {e:?}");
            return;
        }
    }
    drop(stream);
    if let Err(e) = OutgoingBody::finish(outgoing, None) {
        eprintln!("[{{name}}] finishing the response failed: {e:?}");
    }
}

/// `{"error":"<message>"}`, the message escaped for JSON.
fn error(message: &str) -> String {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    format!(r#"{{"error":"{escaped}"}}"#)
}

export!(Producer);
