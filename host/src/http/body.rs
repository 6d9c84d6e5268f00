//! Reading JSON request bodies, once for both APIs, with errors that name what is wrong.
//!
//! A body is read as JSON whatever its `content-type` (so `curl -d '{…}'` works), an empty
//! body stands for `{}` where every field is optional (a pull with no options), and a body
//! that does not fit is refused with the field it failed on: a bad `delay_seconds` is an
//! [`InputError::Delay`], an unknown `content_type` an [`InputError::ContentType`], and so on.
//! Each API renders these in its own envelope (wasmq's string codes, Cloudflare's numbers).
//! A body that does not arrive within [`BODY_READ_TIMEOUT`] is refused with 408, so a client
//! that stalls mid-body does not hold its connection.

use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// Why a request body was refused. Nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The body is not JSON at all.
    Malformed(String),
    /// A `delay_seconds` is not a whole number of seconds.
    Delay(String),
    /// A `content_type` is not one the host knows.
    ContentType(String),
    /// A message body is missing or does not match its content type.
    Body(String),
    /// Anything else: an unknown field, a value of the wrong type.
    Schema(String),
    /// The body is over the request size limit.
    TooLarge,
    /// The body did not arrive within [`BODY_READ_TIMEOUT`].
    TimedOut,
}

/// How long a client may take to send an API request's body.
pub(super) const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl InputError {
    /// What went wrong, for people.
    pub fn message(&self) -> String {
        match self {
            InputError::Malformed(text)
            | InputError::Delay(text)
            | InputError::ContentType(text)
            | InputError::Body(text)
            | InputError::Schema(text) => text.clone(),
            InputError::TooLarge => format!(
                "the request body is over {} bytes",
                super::api::MAX_REQUEST_BYTES
            ),
            InputError::TimedOut => format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        }
    }

    /// Sorts a deserialization error by the field it happened on.
    fn classify(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let field = err
            .path()
            .iter()
            .next_back()
            .map(|segment| segment.to_string());
        let inner = err.inner();
        if inner.is_syntax() || inner.is_eof() {
            return InputError::Malformed(format!("the request body is not valid JSON: {inner}"));
        }
        let text = match err.path().to_string().as_str() {
            "." => inner.to_string(),
            path => format!("{path}: {inner}"),
        };
        match field.as_deref() {
            Some("delay_seconds") => InputError::Delay(format!(
                "{text} (a delay is a whole number of seconds, 0 to 86400)"
            )),
            Some("content_type") => InputError::ContentType(format!(
                "{text} (a content type is `json`, `text` or `bytes`)"
            )),
            Some("body") => InputError::Body(text),
            _ => InputError::Schema(text),
        }
    }
}

/// Handlers take `Result<JsonBody<T>, InputError>` and render the error in their API's
/// envelope; this rendering (wasmq's) is only the extractor's required default.
impl IntoResponse for InputError {
    fn into_response(self) -> Response {
        super::api::input_error(self).into_response()
    }
}

/// Parses `bytes` as a `T`; an empty body is `{}`.
pub(super) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, InputError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(InputError::classify)?;
    json.end()
        .map_err(|e| InputError::Malformed(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// An extractor for a JSON body of type `T`, read as described in the module docs.
pub(super) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = InputError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, state))
            .await
            .map_err(|_| InputError::TimedOut)?
            .map_err(|_| InputError::TooLarge)?;
        parse(&bytes).map(JsonBody)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Message {
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        content_type: Option<crate::engine::ContentType>,
        #[serde(default)]
        delay_seconds: Option<u32>,
    }

    fn error(json: &str) -> InputError {
        parse::<Message>(json.as_bytes()).expect_err(json)
    }

    #[test]
    fn errors_name_the_field_they_happened_on() {
        for bad in [
            r#"{"delay_seconds": -1}"#,
            r#"{"delay_seconds": 1.5}"#,
            r#"{"delay_seconds": "5"}"#,
        ] {
            assert!(matches!(error(bad), InputError::Delay(_)), "{bad}");
        }
        assert!(matches!(
            error(r#"{"content_type": "xml"}"#),
            InputError::ContentType(_)
        ));
        assert!(matches!(error(r#"{"body": 5}"#), InputError::Body(_)));
        assert!(matches!(error(r#"{"extra": 1}"#), InputError::Schema(_)));
        assert!(matches!(error(r#"{"body": "#), InputError::Malformed(_)));
        assert!(matches!(error(r#"{} {}"#), InputError::Malformed(_)));
        assert!(matches!(error("[1]"), InputError::Schema(_)));
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        let m: Message = parse(b"").unwrap();
        assert_eq!((m.body, m.delay_seconds), (None, None));
        let m: Message = parse(b"  \n").unwrap();
        assert_eq!(m.content_type, None);
    }
}
