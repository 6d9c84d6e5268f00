//! `scripted`: a test consumer whose message bodies say what it should do, so end-to-end
//! tests can drive every path of the host (acks, retries, failures, traps, timeouts, memory
//! limits, fan-out sends and their errors, outbound HTTP) with nothing but the messages they
//! send.
//!
//! # Bodies
//!
//! A body is a script: UTF-8 text made of commands separated by `;`. If the body (ignoring
//! surrounding whitespace) is a JSON string literal such as `"ack;print:hi"`, its decoded value
//! is the script; this is how a `json` message carries one. A `json` body that is not a string,
//! or a body that is not UTF-8, runs no command (a warning is printed).
//!
//! For each message, in batch order, `handle` first prints
//!
//! ```text
//! [scripted] <id> attempt <n>: <body>
//! ```
//!
//! to stdout (the body as text, control characters escaped), then runs the message's commands
//! in order. Whitespace around a command is ignored; command names are case-sensitive; an
//! argument is everything after the name's `:` (the last argument may itself contain `:`, no
//! argument can contain `;`).
//!
//! # Commands
//!
//! | command | effect |
//! |---|---|
//! | `ack` | `batch.ack(<this id>)` |
//! | `ack-times:N` | `batch.ack(<this id>)` N times (a call flood) |
//! | `retry` / `retry:N` | `batch.retry(<this id>, none / some(N))` |
//! | `ack-all` | `batch.ack-all()` |
//! | `retry-all` / `retry-all:N` | `batch.retry-all(none / some(N))` |
//! | `fail` / `fail:TEXT` | after every message has run, `handle` returns `err("fail" / TEXT)` |
//! | `trap` / `trap:TEXT` | panic at once (a Wasm trap); later commands and messages do not run |
//! | `loop` | busy loop forever: the host's time limit must interrupt it |
//! | `oom` | allocate and touch 1 MiB blocks until allocation fails, then panic: the host's memory limit must stop it |
//! | `send:BINDING:TEXT` | `producer.send(BINDING, TEXT as a text message)` |
//! | `send-batch:BINDING:N:TEXT` | `producer.send-batch(BINDING, N text messages, none)`; `{i}` in TEXT becomes the message's index `0..N` |
//! | `print:TEXT` | print TEXT on a line of stdout |
//! | `print-flood:BYTES` | write BYTES `x` characters to stdout with no newline (an output flood) |
//! | `sleep:MS` | `std::thread::sleep` for MS milliseconds |
//! | `count` | add one to a global counter and print `count <n>`: how many times this instance counted (a warm instance keeps its globals) |
//! | `hold:MIB` | allocate MIB mebibytes, touch them and keep them in a global (memory a warm instance keeps) |
//! | `noop`, empty | nothing |
//!
//! Extensions for the send paths the commands above cannot reach (large bodies, JSON bodies,
//! delays, dedup keys):
//!
//! | command | effect |
//! |---|---|
//! | `send-json:BINDING:JSON` | send JSON (not checked by the guest) with content type `json` |
//! | `send-delay:BINDING:SECONDS:TEXT` | send TEXT with `delay-seconds: some(SECONDS)` |
//! | `send-dedup:BINDING:KEY:TEXT` | send TEXT with `dedup-key: some(KEY)` |
//! | `send-size:BINDING:BYTES` | send a text body of BYTES `x` characters |
//! | `send-batch-size:BINDING:N:BYTES` | send-batch of N text bodies of BYTES `x` characters each |
//!
//! Outbound HTTP, through `wasi:http/outgoing-handler` (the `wasi` crate's bindings):
//!
//! | command | effect |
//! |---|---|
//! | `http-get:URL` | GET `URL` (`http://` or `https://`, e.g. `http-get:http://127.0.0.1:8080/hook?x=1`), wait for the whole response and print `http-get <status> <body>` on a line of stdout (body as text, control characters escaped) |
//!
//! Anything else (an unknown name, a number that does not parse, a missing argument) prints a
//! warning to stderr and is ignored.
//!
//! When a send returns an error, the error is printed to stderr, the script goes on, and
//! `handle` returns `err("send failed: <error as Debug>")` at the end, e.g.
//! `send failed: SendError::UnknownBinding("NOPE")`. A failed `http-get` (a URL it cannot
//! parse, a request the host refuses, a connection or protocol error, a body that breaks off)
//! likewise prints the error to stderr and makes `handle` return
//! `err("http failed: <error>")`, e.g. `http failed: ErrorCode::HttpRequestDenied` for an
//! origin the manifest does not allow; a response of any status, 4xx and 5xx included, is a
//! success. When several commands ask for a failure (`fail`, failed sends or requests), the
//! first one gives the error text.
//!
//! Example: a batch of two messages with bodies `ack;fail:boom` and `retry:30` ends with the
//! first message acked, the second retried after 30 s, and `handle` returning `err("boom")`.

wit_bindgen::generate!({
    world: "consumer",
    path: "../../wit",
});

use std::hint::black_box;
use std::time::Duration;

use exports::wasmq::queues::handler::Guest;
use wasmq::queues::batch::MessageBatch;
use wasmq::queues::producer;
use wasmq::queues::types::{ContentType, SendRequest};

struct Scripted;

impl Guest for Scripted {
    fn handle(batch: &MessageBatch) -> Result<(), String> {
        let mut failure: Option<String> = None;
        for message in batch.messages() {
            println!(
                "[scripted] {} attempt {}: {}",
                message.id,
                message.attempts,
                escape(&String::from_utf8_lossy(&message.body))
            );
            let script = match script(message.content_type, &message.body) {
                Ok(script) => script,
                Err(why) => {
                    eprintln!("[scripted] warning: {}: {why}; no command run", message.id);
                    continue;
                }
            };
            for text in script.split(';') {
                match parse(text) {
                    Ok(command) => {
                        if let Err(e) = run(batch, &message.id, command) {
                            failure.get_or_insert(e);
                        }
                    }
                    Err(why) => eprintln!("[scripted] warning: {}: {why}; ignored", message.id),
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

export!(Scripted);

/// What `count` counted in this instance.
static COUNTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// What `hold` allocated in this instance.
static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// One command of a script.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    Ack,
    PrintFlood(u32),
    AckTimes(u32),
    Retry(Option<u32>),
    AckAll,
    RetryAll(Option<u32>),
    Fail(&'a str),
    Trap(&'a str),
    Loop,
    Oom,
    Send(&'a str, Body<'a>, Option<u32>, Option<&'a str>),
    SendBatch(&'a str, u32, Body<'a>),
    Print(&'a str),
    Sleep(u64),
    Count,
    Hold(u32),
    HttpGet(&'a str),
    Noop,
}

/// The body a send command builds.
#[derive(Debug, PartialEq, Eq)]
enum Body<'a> {
    /// Text; in a batch, `{i}` is replaced by the message's index.
    Text(&'a str),
    /// JSON, as written.
    Json(&'a str),
    /// This many `x` characters, as text.
    Size(usize),
}

impl Body<'_> {
    fn request(&self, index: u32, delay: Option<u32>, dedup: Option<&str>) -> SendRequest {
        let (body, content_type) = match *self {
            Body::Text(text) if text.contains("{i}") => (
                text.replace("{i}", &index.to_string()).into_bytes(),
                ContentType::Text,
            ),
            Body::Text(text) => (text.as_bytes().to_vec(), ContentType::Text),
            Body::Json(json) => (json.as_bytes().to_vec(), ContentType::Json),
            Body::Size(n) => (vec![b'x'; n], ContentType::Text),
        };
        SendRequest {
            body,
            content_type,
            delay_seconds: delay,
            dedup_key: dedup.map(str::to_string),
        }
    }
}

/// The script a body carries: its text, or the value of a JSON string literal.
fn script(content_type: ContentType, body: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not UTF-8".to_string())?;
    let trimmed = text.trim();
    if trimmed.starts_with('"')
        && let Some(value) = json_string(trimmed)
    {
        return Ok(value);
    }
    if content_type == ContentType::Json {
        return Err("json body is not a JSON string".to_string());
    }
    Ok(text.to_string())
}

/// Decodes a complete JSON string literal (`"..."` with JSON escapes), or `None`.
fn json_string(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None, // an unescaped quote inside: not one literal
            c if (c as u32) < 0x20 => return None,
            '\\' => match chars.next()? {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                '/' => out.push('/'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let high = hex4(&mut chars)?;
                    let code = if (0xD800..0xDC00).contains(&high) {
                        if chars.next()? != '\\' || chars.next()? != 'u' {
                            return None;
                        }
                        let low = hex4(&mut chars)?;
                        if !(0xDC00..0xE000).contains(&low) {
                            return None;
                        }
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        high
                    };
                    out.push(char::from_u32(code)?);
                }
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut value = 0;
    for _ in 0..4 {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    Some(value)
}

/// Parses one command; `Err` is the warning for something it does not understand.
fn parse(text: &str) -> Result<Command<'_>, String> {
    let text = text.trim();
    let (name, arg) = match text.split_once(':') {
        Some((name, arg)) => (name, Some(arg)),
        None => (text, None),
    };
    let unknown = || format!("unknown command `{text}`");
    let number = |s: &str| -> Result<u32, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{s}` is not a number"))
    };
    let command = match (name, arg) {
        ("" | "noop", None) => Command::Noop,
        ("ack", None) => Command::Ack,
        ("ack-times", Some(n)) => Command::AckTimes(number(n)?),
        ("retry", None) => Command::Retry(None),
        ("retry", Some(n)) => Command::Retry(Some(number(n)?)),
        ("ack-all", None) => Command::AckAll,
        ("retry-all", None) => Command::RetryAll(None),
        ("retry-all", Some(n)) => Command::RetryAll(Some(number(n)?)),
        ("fail", None) => Command::Fail("fail"),
        ("fail", Some(t)) => Command::Fail(if t.is_empty() { "fail" } else { t }),
        ("trap", None) => Command::Trap("trap"),
        ("trap", Some(t)) => Command::Trap(t),
        ("loop", None) => Command::Loop,
        ("oom", None) => Command::Oom,
        ("print", t) => Command::Print(t.unwrap_or("")),
        ("print-flood", Some(n)) => Command::PrintFlood(number(n)?),
        ("count", None) => Command::Count,
        ("hold", Some(mib)) => Command::Hold(number(mib)?),
        ("sleep", Some(ms)) => Command::Sleep(
            ms.trim()
                .parse()
                .map_err(|_| format!("`{text}`: `{ms}` is not a number"))?,
        ),
        ("send", Some(rest)) => {
            let (binding, body) = rest.split_once(':').ok_or_else(unknown)?;
            Command::Send(binding, Body::Text(body), None, None)
        }
        ("send-json", Some(rest)) => {
            let (binding, body) = rest.split_once(':').ok_or_else(unknown)?;
            Command::Send(binding, Body::Json(body), None, None)
        }
        ("send-size", Some(rest)) => {
            let (binding, bytes) = rest.split_once(':').ok_or_else(unknown)?;
            Command::Send(binding, Body::Size(number(bytes)? as usize), None, None)
        }
        ("send-delay", Some(rest)) => {
            let (binding, seconds, body) = split3(rest).ok_or_else(unknown)?;
            Command::Send(binding, Body::Text(body), Some(number(seconds)?), None)
        }
        ("send-dedup", Some(rest)) => {
            let (binding, key, body) = split3(rest).ok_or_else(unknown)?;
            Command::Send(binding, Body::Text(body), None, Some(key))
        }
        ("send-batch", Some(rest)) => {
            let (binding, n, body) = split3(rest).ok_or_else(unknown)?;
            Command::SendBatch(binding, number(n)?, Body::Text(body))
        }
        ("send-batch-size", Some(rest)) => {
            let (binding, n, bytes) = split3(rest).ok_or_else(unknown)?;
            Command::SendBatch(binding, number(n)?, Body::Size(number(bytes)? as usize))
        }
        ("http-get", Some(url)) if !url.trim().is_empty() => Command::HttpGet(url.trim()),
        _ => return Err(unknown()),
    };
    Ok(command)
}

/// Writes `bytes` `x` characters to stdout, 64 KiB at a time, with no newline.
fn print_flood(mut bytes: usize) {
    use std::io::Write;
    let chunk = [b'x'; 64 * 1024];
    let mut out = std::io::stdout().lock();
    while bytes > 0 {
        let n = bytes.min(chunk.len());
        if out.write_all(&chunk[..n]).is_err() {
            return;
        }
        bytes -= n;
    }
    let _ = out.flush();
}

/// `A:B:REST` → `(A, B, REST)`; REST may contain `:`.
fn split3(s: &str) -> Option<(&str, &str, &str)> {
    let (a, rest) = s.split_once(':')?;
    let (b, c) = rest.split_once(':')?;
    Some((a, b, c))
}

/// Runs one command for message `id`; `Err` is the error `handle` will return at the end.
fn run(batch: &MessageBatch, id: &str, command: Command<'_>) -> Result<(), String> {
    match command {
        Command::Noop => {}
        Command::Ack => batch.ack(id),
        Command::AckTimes(n) => (0..n).for_each(|_| batch.ack(id)),
        Command::Retry(delay) => batch.retry(id, delay),
        Command::AckAll => batch.ack_all(),
        Command::RetryAll(delay) => batch.retry_all(delay),
        Command::Fail(text) => return Err(text.to_string()),
        Command::Trap(text) => panic!("[scripted] {id}: {text}"),
        Command::Loop => busy_loop(),
        Command::Oom => exhaust_memory(id),
        Command::Print(text) => println!("{text}"),
        Command::PrintFlood(bytes) => print_flood(bytes as usize),
        Command::Sleep(ms) => std::thread::sleep(Duration::from_millis(ms)),
        Command::Count => {
            let n = COUNTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            println!("count {n}");
        }
        Command::Hold(mib) => HELD
            .lock()
            .map_err(|_| "the held memory's lock is poisoned".to_string())?
            .push(vec![1u8; (mib as usize) << 20]),
        Command::Send(binding, body, delay, dedup) => {
            let request = body.request(0, delay, dedup);
            if let Err(e) = producer::send(binding, &request) {
                eprintln!("[scripted] {id}: send to `{binding}` failed: {e:?}");
                return Err(format!("send failed: {e:?}"));
            }
        }
        Command::SendBatch(binding, n, body) => {
            let requests: Vec<SendRequest> = (0..n).map(|i| body.request(i, None, None)).collect();
            if let Err(e) = producer::send_batch(binding, &requests, None) {
                eprintln!("[scripted] {id}: send-batch to `{binding}` failed: {e:?}");
                return Err(format!("send failed: {e:?}"));
            }
        }
        Command::HttpGet(url) => match http_get(url) {
            Ok((status, body)) => println!(
                "http-get {status} {}",
                escape(&String::from_utf8_lossy(&body))
            ),
            Err(e) => {
                eprintln!("[scripted] {id}: http-get {url} failed: {e}");
                return Err(format!("http failed: {e}"));
            }
        },
    }
    Ok(())
}

/// A URL split into what `wasi:http` asks for: scheme, authority, path with query.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    scheme: &'a str,
    authority: &'a str,
    path_with_query: String,
}

/// Splits `scheme://authority[/path][?query]` (a fragment is dropped).
fn split_url(url: &str) -> Result<Url<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL like http://host/path"))?;
    let rest = rest.split('#').next().unwrap_or_default();
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if scheme.is_empty() || authority.is_empty() {
        return Err(format!("`{url}` is not a URL like http://host/path"));
    }
    let path_with_query = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    Ok(Url {
        scheme,
        authority,
        path_with_query,
    })
}

/// GETs `url` through `wasi:http/outgoing-handler` and reads the whole response: its status
/// and body, or the error as text (`ErrorCode`s in their `Debug` form).
fn http_get(url: &str) -> Result<(u16, Vec<u8>), String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, Method, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    let parts = split_url(url)?;
    let scheme = match parts.scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&Method::Get)
        .map_err(|()| "invalid method".to_string())?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| format!("invalid scheme `{}`", parts.scheme))?;
    request
        .set_authority(Some(parts.authority))
        .map_err(|()| format!("invalid authority `{}`", parts.authority))?;
    request
        .set_path_with_query(Some(&parts.path_with_query))
        .map_err(|()| format!("invalid path `{}`", parts.path_with_query))?;

    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response after waiting for it")?
        .map_err(|()| "response already taken")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| "response body already taken")?;
    let stream = body.stream().map_err(|()| "body stream already taken")?;
    let mut bytes = Vec::new();
    let read = loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break Ok(()),
            Err(StreamError::LastOperationFailed(e)) => break Err(e.to_debug_string()),
        }
    };
    // Children before parents: the stream, then the body, then the response.
    drop(stream);
    drop(body);
    drop(response);
    read.map(|()| (status, bytes))
}

/// Spins forever without calling the host: only the host's time limit (epoch interruption or
/// fuel) ends it.
fn busy_loop() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 MiB blocks, writing every byte, and keeps them all until an allocation fails,
/// then panics. With a host memory limit, `memory.grow` fails (or traps) long before the 4 GiB
/// of a 32-bit memory are used.
fn exhaust_memory(id: &str) -> ! {
    const BLOCK: usize = 1 << 20;
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(4096);
    loop {
        let mut block: Vec<u8> = Vec::new();
        if block.try_reserve_exact(BLOCK).is_err() {
            panic!("[scripted] {id}: out of memory after {} MiB", blocks.len());
        }
        block.resize(BLOCK, (blocks.len() as u8) | 1);
        blocks.push(black_box(block));
    }
}

/// `text` on one line: control characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands() {
        assert_eq!(parse("ack"), Ok(Command::Ack));
        assert_eq!(parse("count"), Ok(Command::Count));
        assert_eq!(parse("hold:3"), Ok(Command::Hold(3)));
        assert_eq!(parse("ack-times:3"), Ok(Command::AckTimes(3)));
        assert_eq!(parse(" retry "), Ok(Command::Retry(None)));
        assert_eq!(parse("retry:5"), Ok(Command::Retry(Some(5))));
        assert_eq!(parse("ack-all"), Ok(Command::AckAll));
        assert_eq!(parse("retry-all"), Ok(Command::RetryAll(None)));
        assert_eq!(parse("retry-all:0"), Ok(Command::RetryAll(Some(0))));
        assert_eq!(parse("fail"), Ok(Command::Fail("fail")));
        assert_eq!(parse("fail:boom: bang"), Ok(Command::Fail("boom: bang")));
        assert_eq!(parse("trap"), Ok(Command::Trap("trap")));
        assert_eq!(parse("loop"), Ok(Command::Loop));
        assert_eq!(parse("oom"), Ok(Command::Oom));
        assert_eq!(
            parse("send:OUT:hello: world"),
            Ok(Command::Send("OUT", Body::Text("hello: world"), None, None))
        );
        assert_eq!(
            parse("send:OUT:"),
            Ok(Command::Send("OUT", Body::Text(""), None, None))
        );
        assert_eq!(
            parse("send-batch:OUT:3:m{i}"),
            Ok(Command::SendBatch("OUT", 3, Body::Text("m{i}")))
        );
        assert_eq!(
            parse("send-json:OUT:{\"a\":1}"),
            Ok(Command::Send("OUT", Body::Json("{\"a\":1}"), None, None))
        );
        assert_eq!(
            parse("send-delay:OUT:60:later"),
            Ok(Command::Send("OUT", Body::Text("later"), Some(60), None))
        );
        assert_eq!(
            parse("send-dedup:OUT:k1:x"),
            Ok(Command::Send("OUT", Body::Text("x"), None, Some("k1")))
        );
        assert_eq!(
            parse("send-size:OUT:128001"),
            Ok(Command::Send("OUT", Body::Size(128001), None, None))
        );
        assert_eq!(
            parse("send-batch-size:OUT:3:100000"),
            Ok(Command::SendBatch("OUT", 3, Body::Size(100000)))
        );
        assert_eq!(parse("print:a b"), Ok(Command::Print("a b")));
        assert_eq!(parse("sleep:250"), Ok(Command::Sleep(250)));
        assert_eq!(
            parse("http-get:http://127.0.0.1:8080/a?b=c"),
            Ok(Command::HttpGet("http://127.0.0.1:8080/a?b=c"))
        );
        assert_eq!(parse("noop"), Ok(Command::Noop));
        assert_eq!(parse(""), Ok(Command::Noop));
        assert_eq!(parse("  "), Ok(Command::Noop));
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        for bad in [
            "ACK",
            "ack:x",
            "retry:x",
            "retry:-1",
            "sleep",
            "sleep:x",
            "send",
            "send:OUT",
            "send-batch:OUT:x:t",
            "send-batch:OUT:3",
            "explode",
            "loop:1",
            "noop:1",
            "http-get",
            "http-get: ",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn reads_scripts_from_text_and_json_strings() {
        assert_eq!(
            script(ContentType::Text, b"ack;retry").unwrap(),
            "ack;retry"
        );
        assert_eq!(
            script(ContentType::Json, b" \"ack;print:\\\"hi\\\"\" ").unwrap(),
            "ack;print:\"hi\""
        );
        assert_eq!(script(ContentType::Text, b"\"ack\"").unwrap(), "ack");
        assert_eq!(script(ContentType::Bytes, b"ack").unwrap(), "ack");
        assert_eq!(
            script(ContentType::Json, b"\"\\u00e9\\ud83d\\ude00\"").unwrap(),
            "é😀"
        );
        assert!(script(ContentType::Json, b"{\"a\":1}").is_err());
        assert!(script(ContentType::Bytes, &[0xff, 0xfe]).is_err());
        assert_eq!(json_string("\"a\"b\""), None);
    }

    #[test]
    fn builds_requests() {
        let r = Body::Text("m{i}").request(7, None, None);
        assert_eq!(r.body, b"m7");
        assert!(r.content_type == ContentType::Text);
        let r = Body::Size(5).request(0, Some(3), Some("k"));
        assert_eq!(r.body, b"xxxxx");
        assert_eq!(r.delay_seconds, Some(3));
        assert_eq!(r.dedup_key.as_deref(), Some("k"));
        assert!(Body::Json("1").request(0, None, None).content_type == ContentType::Json);
    }

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/hook?x=1#top"),
            Ok(Url {
                scheme: "http",
                authority: "127.0.0.1:8080",
                path_with_query: "/hook?x=1".into()
            })
        );
        assert_eq!(
            split_url("https://api.example.com")
                .unwrap()
                .path_with_query,
            "/"
        );
        assert_eq!(
            split_url("https://api.example.com?q")
                .unwrap()
                .path_with_query,
            "/?q"
        );
        assert_eq!(
            split_url("http://[::1]:3000/x").unwrap().authority,
            "[::1]:3000"
        );
        for bad in ["127.0.0.1:8080/x", "http://", "http:///x", "://host/"] {
            assert!(split_url(bad).is_err(), "{bad} should not split");
        }
    }

    #[test]
    fn escapes_control_characters() {
        assert_eq!(escape("a\nb"), "a\\nb");
    }
}
