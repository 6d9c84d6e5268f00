//! The JSON shapes of the HTTP API, shared by the server and the CLI client. They follow
//! Cloudflare's Queues HTTP API: an envelope with `success`, `errors` and `result`, and
//! messages as `{ "body": …, "content_type": "json" | "text" | "bytes", "delay_seconds": … }`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::body::InputError;
use super::consumers::ConsumerView;
use crate::engine::{ContentType, QueueInfo, SendRequest};

/// One message in a publish request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishMessage {
    /// `json`: any JSON value; `text`: a JSON string; `bytes`: a base64 string. Required (an
    /// `Option` only so that a missing body is named as such).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// How to store the body (default `json`).
    #[serde(default = "default_content_type")]
    pub content_type: ContentType,
    /// Seconds before the message can be delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
    /// Deduplication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
}

fn default_content_type() -> ContentType {
    ContentType::Json
}

/// `POST /queues/{queue}/messages/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBatch {
    /// The messages (1..=100).
    pub messages: Vec<PublishMessage>,
    /// Delay for messages that set none of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_seconds: Option<u32>,
}

impl PublishBatch {
    /// The engine requests and the batch delay, or why a message is malformed (naming it).
    pub fn into_requests(self) -> Result<(Vec<SendRequest>, Option<u32>), InputError> {
        let requests = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.into_request().map_err(|err| match err {
                    InputError::Body(why) => InputError::Body(format!("messages[{i}]: {why}")),
                    other => other,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((requests, self.delay_seconds))
    }
}

impl PublishMessage {
    /// The engine request this message stands for, or why its body is malformed.
    pub fn into_request(self) -> Result<SendRequest, InputError> {
        let Some(body) = self.body else {
            return Err(InputError::Body("the message has no `body`".into()));
        };
        let body = match (self.content_type, body) {
            (ContentType::Json, value) => {
                serde_json::to_vec(&value).expect("a JSON value serializes")
            }
            (ContentType::Text, serde_json::Value::String(text)) => text.into_bytes(),
            (ContentType::Text, _) => {
                return Err(InputError::Body(
                    "a `text` message needs a string `body`".into(),
                ));
            }
            (ContentType::Bytes, serde_json::Value::String(encoded)) => {
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|e| InputError::Body(format!("a `bytes` body must be base64: {e}")))?
            }
            (ContentType::Bytes, _) => {
                return Err(InputError::Body(
                    "a `bytes` message needs a base64 string `body`".into(),
                ));
            }
        };
        Ok(SendRequest {
            body,
            content_type: self.content_type,
            delay_seconds: self.delay_seconds,
            dedup_key: self.dedup_key,
        })
    }

    /// A message carrying `body` bytes as `content_type` (the CLI's side of
    /// [`Self::into_request`]).
    pub fn from_bytes(body: &[u8], content_type: ContentType) -> Result<Self, String> {
        let body = match content_type {
            ContentType::Json => serde_json::from_slice(body)
                .map_err(|e| format!("the body is not valid JSON: {e}"))?,
            ContentType::Text => serde_json::Value::String(
                String::from_utf8(body.to_vec())
                    .map_err(|_| "a text body must be UTF-8".to_owned())?,
            ),
            ContentType::Bytes => {
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(body))
            }
        };
        Ok(Self {
            body: Some(body),
            content_type,
            delay_seconds: None,
            dedup_key: None,
        })
    }
}

/// One error in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable code (`unknown_queue`, `message_too_large`…).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// The envelope of every API answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// True when the request did what it asked.
    pub success: bool,
    /// Why not, when `success` is false.
    #[serde(default)]
    pub errors: Vec<ApiError>,
    /// The answer.
    pub result: Option<T>,
}

/// A message as `GET /queues/{queue}/messages` (peek) shows it: the body as JSON for `json`,
/// a string for `text`, base64 for `bytes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeekedMessage {
    /// The message id.
    pub id: String,
    /// First send, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// How the body is encoded.
    pub content_type: ContentType,
    /// The body.
    pub body: serde_json::Value,
    /// Deliveries so far (0 if never delivered).
    pub attempts: u32,
}

impl From<crate::engine::Message> for PeekedMessage {
    fn from(message: crate::engine::Message) -> Self {
        let body = match message.content_type {
            ContentType::Json => {
                serde_json::from_slice(&message.body).unwrap_or_else(|_| lossy_text(&message.body))
            }
            ContentType::Text => lossy_text(&message.body),
            ContentType::Bytes => serde_json::Value::String(
                base64::engine::general_purpose::STANDARD.encode(&message.body),
            ),
        };
        Self {
            id: message.id.to_string(),
            timestamp_ms: message.timestamp_ms,
            content_type: message.content_type,
            body,
            attempts: message.attempts,
        }
    }
}

fn lossy_text(bytes: &[u8]) -> serde_json::Value {
    serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// `POST /queues/{queue}/replay`: move messages from this queue (usually a dead-letter queue)
/// back to `to`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The queue to move them to.
    pub to: String,
    /// At most this many, oldest first (default and maximum 10 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// A queue as `GET /queues` and `GET /queues/{queue}` show it: its name, settings, state and
/// metrics, and its consumer if the manifest attaches one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueView {
    /// The queue.
    #[serde(flatten)]
    pub info: QueueInfo,
    /// What consumes it: a component, with its batching, or pull clients, with their lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<ConsumerView>,
}

/// What one application of a manifest changed: the answer of `POST /reload`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Queues created.
    pub queues_created: Vec<String>,
    /// Components started (new consumers, new producers).
    pub started: Vec<String>,
    /// Components replaced by a new version or new settings.
    pub swapped: Vec<String>,
    /// Consumers stopped (after their running batches) and producers no longer served.
    pub stopped: Vec<String>,
    /// Components left as they were.
    pub unchanged: Vec<String>,
    /// Components that failed to load; their previous version (if any) keeps serving.
    pub failed: Vec<FailedComponent>,
}

/// A component that could not be loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedComponent {
    /// The component's name.
    pub component: String,
    /// Why.
    pub error: String,
}
