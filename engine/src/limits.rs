//! The limits and setting ranges of `docs/semantics.md`, and the checks that enforce them.
//!
//! Every check runs before anything is written, so a refused request stores nothing.

use super::error::{BrokerError, BrokerResult};
use super::types::{ContentType, SendRequest};

/// Largest message body in bytes.
pub const MAX_MESSAGE_BYTES: u64 = 128_000;
/// Largest total body size of one `send_batch`, in bytes.
pub const MAX_BATCH_BYTES: u64 = 256_000;
/// Most messages in one `send_batch`.
pub const MAX_BATCH_MESSAGES: u32 = 100;
/// Longest send or retry delay, in seconds (24 h).
pub const MAX_DELAY_SECONDS: u32 = 86_400;
/// Longest dedup key, in bytes.
pub const MAX_DEDUP_KEY_BYTES: usize = 256;
/// Most messages one lease may hand out.
pub const MAX_LEASE_MESSAGES: u32 = 100;
/// Longest lease (visibility timeout), in milliseconds (12 h).
pub const MAX_VISIBILITY_TIMEOUT_MS: u64 = 12 * 3600 * 1000;
/// Longest queue name.
pub const MAX_QUEUE_NAME_LEN: usize = 63;

/// Checks a queue name: 1 to 63 characters, lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn check_queue_name(name: &str) -> BrokerResult<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_QUEUE_NAME_LEN {
        Some("it is longer than 63 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        Some("use lowercase letters, digits, `-` and `_` only")
    } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
        Some("it must start with a letter or a digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BrokerError::InvalidQueueName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks that `value` lies in `min..=max`, naming `key` otherwise.
pub fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> BrokerResult<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(BrokerError::InvalidSetting {
            key,
            value,
            min,
            max,
        })
    }
}

/// Checks a send or retry delay.
pub fn check_delay(delay: u32) -> BrokerResult<()> {
    if delay > MAX_DELAY_SECONDS {
        Err(BrokerError::InvalidDelay {
            delay,
            max: MAX_DELAY_SECONDS,
        })
    } else {
        Ok(())
    }
}

/// Checks one message: size, body against its content type, delay and dedup key.
pub fn check_message(request: &SendRequest) -> BrokerResult<()> {
    let size = request.body.len() as u64;
    if size > MAX_MESSAGE_BYTES {
        return Err(BrokerError::MessageTooLarge {
            size,
            limit: MAX_MESSAGE_BYTES,
        });
    }
    match request.content_type {
        ContentType::Json => {
            serde_json::from_slice::<serde::de::IgnoredAny>(&request.body).map_err(|e| {
                BrokerError::InvalidBody(format!("content type is json but the body is not: {e}"))
            })?;
        }
        ContentType::Text => {
            std::str::from_utf8(&request.body).map_err(|e| {
                BrokerError::InvalidBody(format!(
                    "content type is text but the body is not UTF-8: {e}"
                ))
            })?;
        }
        ContentType::Bytes => {}
    }
    if let Some(delay) = request.delay_seconds {
        check_delay(delay)?;
    }
    if let Some(key) = &request.dedup_key {
        if key.is_empty() {
            return Err(BrokerError::InvalidDedupKey("it is empty".into()));
        }
        if key.len() > MAX_DEDUP_KEY_BYTES {
            return Err(BrokerError::InvalidDedupKey(format!(
                "it is {} bytes; the limit is {MAX_DEDUP_KEY_BYTES}",
                key.len()
            )));
        }
    }
    Ok(())
}

/// Checks a whole batch: count, total size, the batch delay and every message.
pub fn check_batch(requests: &[SendRequest], batch_delay: Option<u32>) -> BrokerResult<()> {
    if requests.is_empty() {
        return Err(BrokerError::EmptyBatch);
    }
    if requests.len() > MAX_BATCH_MESSAGES as usize {
        return Err(BrokerError::TooManyMessages {
            count: u32::try_from(requests.len()).unwrap_or(u32::MAX),
            limit: MAX_BATCH_MESSAGES,
        });
    }
    if let Some(delay) = batch_delay {
        check_delay(delay)?;
    }
    let total: u64 = requests.iter().map(|r| r.body.len() as u64).sum();
    for request in requests {
        check_message(request)?;
    }
    if total > MAX_BATCH_BYTES {
        return Err(BrokerError::BatchTooLarge {
            size: total,
            limit: MAX_BATCH_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body: &[u8], content_type: ContentType) -> SendRequest {
        SendRequest::new(body.to_vec(), content_type)
    }

    #[test]
    fn queue_names() {
        for ok in ["jobs", "jobs-dlq", "a", "q_1", &"x".repeat(63)] {
            check_queue_name(ok).unwrap();
        }
        for bad in ["", "Jobs", "-jobs", "jobs/x", "jöbs", &"x".repeat(64)] {
            assert!(matches!(
                check_queue_name(bad),
                Err(BrokerError::InvalidQueueName { .. })
            ));
        }
    }

    #[test]
    fn message_size_limit_is_inclusive() {
        check_message(&msg(&vec![b'a'; 128_000], ContentType::Bytes)).unwrap();
        let err = check_message(&msg(&vec![b'a'; 128_001], ContentType::Bytes)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "message body is 128001 bytes; the limit is 128000"
        );
    }

    #[test]
    fn bodies_must_match_their_content_type() {
        check_message(&msg(br#"{"a":1}"#, ContentType::Json)).unwrap();
        check_message(&msg(b"caf\xc3\xa9", ContentType::Text)).unwrap();
        check_message(&msg(b"\xff\xfe", ContentType::Bytes)).unwrap();
        assert!(matches!(
            check_message(&msg(b"{nope", ContentType::Json)),
            Err(BrokerError::InvalidBody(_))
        ));
        assert!(matches!(
            check_message(&msg(b"\xff\xfe", ContentType::Text)),
            Err(BrokerError::InvalidBody(_))
        ));
    }

    #[test]
    fn batch_limits() {
        assert_eq!(check_batch(&[], None), Err(BrokerError::EmptyBatch));
        let hundred: Vec<_> = (0..100).map(|_| msg(b"x", ContentType::Bytes)).collect();
        check_batch(&hundred, None).unwrap();
        let mut over = hundred.clone();
        over.push(msg(b"x", ContentType::Bytes));
        assert_eq!(
            check_batch(&over, None),
            Err(BrokerError::TooManyMessages {
                count: 101,
                limit: 100
            })
        );
        let big = vec![
            msg(&vec![0; 128_000], ContentType::Bytes),
            msg(&vec![0; 128_000], ContentType::Bytes),
            msg(b"x", ContentType::Bytes),
        ];
        assert_eq!(
            check_batch(&big, None),
            Err(BrokerError::BatchTooLarge {
                size: 256_001,
                limit: 256_000
            })
        );
        assert_eq!(
            check_batch(&hundred, Some(86_401)),
            Err(BrokerError::InvalidDelay {
                delay: 86_401,
                max: 86_400
            })
        );
    }

    #[test]
    fn delays_and_dedup_keys() {
        let mut m = msg(b"x", ContentType::Bytes);
        m.delay_seconds = Some(86_400);
        check_message(&m).unwrap();
        m.delay_seconds = Some(86_401);
        assert!(matches!(
            check_message(&m),
            Err(BrokerError::InvalidDelay { .. })
        ));
        m.delay_seconds = None;
        m.dedup_key = Some(String::new());
        assert!(matches!(
            check_message(&m),
            Err(BrokerError::InvalidDedupKey(_))
        ));
        m.dedup_key = Some("k".repeat(257));
        assert!(matches!(
            check_message(&m),
            Err(BrokerError::InvalidDedupKey(_))
        ));
    }
}
