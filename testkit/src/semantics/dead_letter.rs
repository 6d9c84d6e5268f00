//! Retries exhausted and dead-letter queues: after `1 + max_retries` failed attempts a message
//! moves to its dead-letter queue (same id and timestamp, attempts from 1) or is dropped; a
//! dead-letter queue is an ordinary queue; a queue cannot be its own dead-letter queue, an
//! unknown one is refused, and cycles through two queues are allowed. These decide whether a
//! poison message is kept or lost.

use wasmq_engine::{Backlog, BrokerError, ContentType, QueueSettings};

use super::{
    Ctx, count, create, create_with, err, lease_all, lease_one, metrics, ok, report, retry,
    send_text, settings, settle_one, sweep, with_dlq,
};

/// After `1 + max_retries` failed attempts the message moves to the DLQ, keeping id and
/// timestamp; its attempts start again at 1 there.
pub async fn retries_exhausted_move_to_dead_letter_queue(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(2, Some("dlq"))).await;
    let t0 = ctx.now();
    send_text(b, "src", "m").await;
    ctx.clock.advance_secs(10);

    let mut id = None;
    for attempt in 1..=3 {
        let m = lease_one(b, "src").await;
        assert_eq!(m.message.attempts, attempt);
        id = Some(m.message.id);
        let r = settle_one(b, "src", &m, retry(None)).await;
        if attempt < 3 {
            assert_eq!(r, report(|r| r.retried = 1), "attempt {attempt}");
        } else {
            assert_eq!(r, report(|r| r.dead_lettered = 1), "attempt {attempt}");
        }
    }
    assert!(lease_all(b, "src").await.is_empty());
    let src = metrics(b, "src").await;
    assert_eq!(src.backlog, Backlog::default());
    assert_eq!(
        (
            src.sent,
            src.retried,
            src.dead_lettered,
            src.dropped,
            src.in_flight
        ),
        (1, 2, 1, 0, 0)
    );
    assert_eq!(
        metrics(b, "dlq").await.backlog,
        Backlog {
            count: 1,
            bytes: 1,
            oldest_timestamp_ms: Some(t0)
        }
    );

    let d = lease_one(b, "dlq").await;
    assert_eq!(Some(d.message.id), id);
    assert_eq!(d.message.timestamp_ms, t0);
    assert_eq!(d.message.attempts, 1);
    assert_eq!(d.message.body, b"m");
    assert_eq!(d.message.content_type, ContentType::Text);
}

/// Without a DLQ an exhausted message is deleted and counted as dropped.
pub async fn retries_exhausted_without_dead_letter_queue_drop(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", with_dlq(2, None)).await;
    send_text(b, "q", "m").await;
    for attempt in 1..=3 {
        let m = lease_one(b, "q").await;
        assert_eq!(m.message.attempts, attempt);
        let r = settle_one(b, "q", &m, retry(Some(0))).await;
        if attempt < 3 {
            assert_eq!(r, report(|r| r.retried = 1));
        } else {
            assert_eq!(r, report(|r| r.dropped = 1));
        }
    }
    let m = metrics(b, "q").await;
    assert_eq!(m.backlog, Backlog::default());
    assert_eq!((m.retried, m.dropped, m.dead_lettered), (2, 1, 0));
    assert!(lease_all(b, "q").await.is_empty());
}

/// `max_retries = 0`: the first failure dead-letters.
pub async fn max_retries_zero_dead_letters_on_first_failure(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(0, Some("dlq"))).await;
    send_text(b, "src", "m").await;
    let m = lease_one(b, "src").await;
    assert_eq!(
        settle_one(b, "src", &m, retry(Some(0))).await,
        report(|r| r.dead_lettered = 1)
    );
    assert_eq!(count(b, "src").await, 0);
    assert_eq!(metrics(b, "src").await.retried, 0);
    let d = lease_one(b, "dlq").await;
    assert_eq!((d.message.id, d.message.attempts), (m.message.id, 1));
}

/// A DLQ nobody consumes keeps its messages until their retention runs out.
pub async fn dead_letter_queue_without_consumer_keeps_messages_until_retention(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "dlq", settings(|s| s.message_retention_period = 3_600)).await;
    create_with(b, "src", with_dlq(0, Some("dlq"))).await;
    send_text(b, "src", "m").await;
    let m = lease_one(b, "src").await;
    settle_one(b, "src", &m, retry(None)).await;
    assert_eq!(count(b, "dlq").await, 1);

    ctx.clock.advance_secs(3_000);
    assert_eq!(sweep(b).await.messages_expired, 0);
    assert_eq!(count(b, "dlq").await, 1);
    ctx.clock.advance_secs(599);
    assert_eq!(sweep(b).await.messages_expired, 0);
    assert_eq!(count(b, "dlq").await, 1);

    ctx.clock.advance_secs(2);
    assert_eq!(sweep(b).await.messages_expired, 1);
    let dlq = metrics(b, "dlq").await;
    assert_eq!(dlq.backlog, Backlog::default());
    assert_eq!(dlq.expired, 1);
    assert_eq!(metrics(b, "src").await.expired, 0);
}

/// A queue may not be its own DLQ, neither at creation nor later.
pub async fn queue_cannot_be_its_own_dead_letter_queue(ctx: &Ctx) {
    let b = ctx.b();
    let e = err("create", b.create_queue("a", with_dlq(3, Some("a"))).await);
    assert_eq!(e, BrokerError::SelfDeadLetter("a".into()));
    assert_eq!(
        err("queue_info", b.queue_info("a").await),
        BrokerError::UnknownQueue("a".into())
    );

    create(b, "a").await;
    let e = err(
        "configure",
        b.configure_queue("a", with_dlq(3, Some("a"))).await,
    );
    assert_eq!(e, BrokerError::SelfDeadLetter("a".into()));
    let info = ok("queue_info", b.queue_info("a").await);
    assert_eq!(info.settings, QueueSettings::default());
}

/// A DLQ that does not exist is refused on create and configure.
pub async fn unknown_dead_letter_queue_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    let expected = BrokerError::UnknownDeadLetterQueue {
        queue: "a".into(),
        dead_letter_queue: "missing".into(),
    };
    let e = err(
        "create",
        b.create_queue("a", with_dlq(3, Some("missing"))).await,
    );
    assert_eq!(e, expected);
    assert!(ok("list", b.list_queues().await).is_empty());

    create(b, "a").await;
    let e = err(
        "configure",
        b.configure_queue("a", with_dlq(3, Some("missing"))).await,
    );
    assert_eq!(e, expected);
    let info = ok("queue_info", b.queue_info("a").await);
    assert_eq!(info.settings.consumer.dead_letter_queue, None);
}

/// Two queues may be each other's DLQ; messages travel round the cycle.
pub async fn dead_letter_cycle_through_two_queues_is_allowed(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "a", with_dlq(0, None)).await;
    create_with(b, "b", with_dlq(0, Some("a"))).await;
    let info = ok(
        "configure a",
        b.configure_queue("a", with_dlq(0, Some("b"))).await,
    );
    assert_eq!(
        info.settings.consumer.dead_letter_queue.as_deref(),
        Some("b")
    );

    let t0 = ctx.now();
    send_text(b, "a", "m").await;
    let m = lease_one(b, "a").await;
    settle_one(b, "a", &m, retry(None)).await;
    let in_b = lease_one(b, "b").await;
    assert_eq!(
        (
            in_b.message.id,
            in_b.message.attempts,
            in_b.message.timestamp_ms
        ),
        (m.message.id, 1, t0)
    );
    assert_eq!(
        settle_one(b, "b", &in_b, retry(None)).await,
        report(|r| r.dead_lettered = 1)
    );
    let back = lease_one(b, "a").await;
    assert_eq!((back.message.id, back.message.attempts), (m.message.id, 1));
    assert_eq!(metrics(b, "a").await.dead_lettered, 1);
    assert_eq!(metrics(b, "b").await.dead_lettered, 1);
}
