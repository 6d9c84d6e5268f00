//! Sending and delivering: what a send stores and a lease hands out (every message field, the
//! backlog a send answers with), and the two settle outcomes everything else builds on: an ack
//! deletes the message for good, a retry redelivers the same message with its attempt count
//! raised. The "Delivery" rules of `docs/semantics.md`.

use std::collections::HashSet;

use wasmq_engine::{Backlog, ContentType, LeaseId, Outcome, SendRequest};

use super::{
    Ctx, create, lease_all, lease_one, lease_opts, metrics, ok, report, retry, send, send_text,
    settle_one, sweep,
};

fn is_lower_hex_32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Message fields survive the round trip; sends answer the backlog after the send.
pub async fn send_then_lease(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let t0 = ctx.now();

    let json = SendRequest::new(br#"{"n":1}"#.to_vec(), ContentType::Json);
    let backlog = send(b, "q", json).await;
    assert_eq!(
        backlog,
        Backlog {
            count: 1,
            bytes: 7,
            oldest_timestamp_ms: Some(t0)
        }
    );

    ctx.clock.advance_secs(2);
    let raw = SendRequest::new(vec![0u8, 255, 1], ContentType::Bytes);
    let backlog = send(b, "q", raw).await;
    assert_eq!(
        backlog,
        Backlog {
            count: 2,
            bytes: 10,
            oldest_timestamp_ms: Some(t0)
        }
    );
    let backlog = send_text(b, "q", "héllo").await;
    assert_eq!(backlog.count, 3);
    assert_eq!(backlog.bytes, 16);

    ctx.clock.advance_secs(1);
    let leased = lease_opts(b, "q", 10, 5_000).await;
    assert_eq!(leased.len(), 3);
    let ids: HashSet<String> = leased.iter().map(|l| l.message.id.to_string()).collect();
    assert_eq!(ids.len(), 3, "ids are unique");
    for l in &leased {
        let id = l.message.id.to_string();
        assert!(is_lower_hex_32(&id), "id `{id}` is not 32 lowercase hex");
        assert!(is_lower_hex_32(&l.lease.to_string()));
        assert_eq!(l.message.attempts, 1);
        assert_eq!(l.lease_deadline_ms, ctx.now() + 5_000);
    }
    let leases: HashSet<LeaseId> = leased.iter().map(|l| l.lease).collect();
    assert_eq!(leases.len(), 3, "lease ids are unique");

    let m = &leased[0].message;
    assert_eq!(
        (m.timestamp_ms, m.content_type, m.body.as_slice()),
        (t0, ContentType::Json, br#"{"n":1}"#.as_slice())
    );
    let m = &leased[1].message;
    assert_eq!(
        (m.timestamp_ms, m.content_type, m.body.as_slice()),
        (t0 + 2_000, ContentType::Bytes, [0u8, 255, 1].as_slice())
    );
    let m = &leased[2].message;
    assert_eq!(
        (m.timestamp_ms, m.content_type, m.body.as_slice()),
        (t0 + 2_000, ContentType::Text, "héllo".as_bytes())
    );
}

/// An ack deletes the message for good.
pub async fn ack_deletes(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    assert_eq!(
        settle_one(b, "q", &m, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
    let after = metrics(b, "q").await;
    assert_eq!(after.backlog, Backlog::default());
    assert_eq!((after.acked, after.in_flight, after.retried), (1, 0, 0));
    ctx.clock.advance_secs(3600);
    sweep(b).await;
    assert!(lease_all(b, "q").await.is_empty());
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
}

/// A retry redelivers the same message with its attempt count raised.
pub async fn retry_redelivers_with_next_attempt(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let t0 = ctx.now();
    send_text(b, "q", "m").await;
    let first = lease_one(b, "q").await;
    assert_eq!(
        settle_one(b, "q", &first, retry(None)).await,
        report(|r| r.retried = 1)
    );
    let second = lease_one(b, "q").await;
    assert_eq!(second.message.id, first.message.id);
    assert_eq!(second.message.timestamp_ms, t0);
    assert_eq!(second.message.attempts, 2);
    assert_ne!(second.lease, first.lease);
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.retried, m.acked, m.in_flight, m.backlog.count),
        (1, 0, 1, 1)
    );
}
