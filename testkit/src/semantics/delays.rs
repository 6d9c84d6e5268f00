//! When a message becomes visible: the send delay (per message > per batch > the queue's
//! `delivery_delay` > 0) and the retry delay (explicit > the consumer's `retry_delay` > 0), an
//! explicit 0 overriding a default in both. Pinned to the millisecond with the manual clock,
//! since an off-by-one here silently delivers early or late.

use super::{
    Ctx, bodies, create, create_with, lease_all, lease_one, lease_opts, metrics, ok, retry, send,
    send_text, settings, settle_one, text,
};

/// One hour in ms: a lease that outlives a case's clock steps.
const HOUR: u64 = 3_600_000;

/// Per message > per batch > queue `delivery_delay` > 0; an explicit 0 overrides.
pub async fn send_delay_precedence(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.delivery_delay = 100)).await;
    let t0 = ctx.now();
    let batch = vec![
        text("message-10").with_delay(10),
        text("batch-50"),
        text("zero-in-batch").with_delay(0),
    ];
    ok("send_batch", b.send_batch("q", batch, Some(50)).await);
    ok(
        "send_batch",
        b.send_batch("q", vec![text("queue-100-batch")], None).await,
    );
    send_text(b, "q", "queue-100").await;
    send(b, "q", text("zero").with_delay(0)).await;

    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.delayed, m.sent), (6, 4, 6));
    assert_eq!(
        bodies(&lease_opts(b, "q", 100, HOUR).await),
        ["zero-in-batch", "zero"]
    );
    assert_eq!(metrics(b, "q").await.delayed, 4);

    let steps: [(u64, &[&str]); 3] = [
        (10_000, &["message-10"]),
        (50_000, &["batch-50"]),
        (100_000, &["queue-100-batch", "queue-100"]),
    ];
    let mut delayed = 4;
    for (at, expected) in steps {
        ctx.clock.set_ms(t0 + at - 1);
        assert!(
            lease_opts(b, "q", 100, HOUR).await.is_empty(),
            "nothing due before {at} ms"
        );
        ctx.clock.set_ms(t0 + at);
        assert_eq!(
            bodies(&lease_opts(b, "q", 100, HOUR).await),
            expected,
            "due at {at} ms"
        );
        delayed -= expected.len() as u64;
        assert_eq!(metrics(b, "q").await.delayed, delayed);
    }
    let m = metrics(b, "q").await;
    assert_eq!((m.in_flight, m.delayed, m.backlog.count), (6, 0, 6));
}

/// `Retry { Some(30) }` hides the message for exactly 30 s.
pub async fn retry_explicit_delay(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    settle_one(b, "q", &m, retry(Some(30))).await;
    assert_eq!(metrics(b, "q").await.delayed, 1);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(29_999);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(1);
    let again = lease_one(b, "q").await;
    assert_eq!(again.message.attempts, 2);
    assert_eq!(metrics(b, "q").await.delayed, 0);
}

/// `Retry { None }` uses the consumer's `retry_delay`.
pub async fn retry_without_delay_uses_consumer_retry_delay(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.consumer.retry_delay = 20)).await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    settle_one(b, "q", &m, retry(None)).await;
    ctx.clock.advance_ms(19_999);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(1);
    assert_eq!(lease_one(b, "q").await.message.attempts, 2);

    // An explicit delay beats the consumer's.
    send_text(b, "q", "n").await;
    let n = lease_one(b, "q").await;
    settle_one(b, "q", &n, retry(Some(5))).await;
    ctx.clock.advance_secs(5);
    assert_eq!(bodies(&lease_all(b, "q").await), ["n"]);
}

/// An explicit `Some(0)` overrides a non-zero `retry_delay`.
pub async fn retry_explicit_zero_overrides_retry_delay(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.consumer.retry_delay = 60)).await;
    send_text(b, "q", "m").await;
    let m = lease_one(b, "q").await;
    settle_one(b, "q", &m, retry(Some(0))).await;
    let again = lease_one(b, "q").await;
    assert_eq!(again.message.id, m.message.id);
    assert_eq!(again.message.attempts, 2);
}
