//! Retention: a message older than the queue's `message_retention_period` is deleted by sweep
//! and counted as expired, and never leased even before a sweep noticed it.

use wasmq_engine::Backlog;

use super::{
    Ctx, bodies, create_with, lease_all, metrics, ok, send, send_text, settings, sweep, text,
};

/// Messages older than the retention period are deleted by sweep and counted.
pub async fn retention_expires_old_messages(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.message_retention_period = 60)).await;
    let t0 = ctx.now();
    send_text(b, "q", "old").await;
    ctx.clock.advance_secs(30);
    send_text(b, "q", "young").await;
    ctx.clock.advance_secs(29);
    assert_eq!(sweep(b).await.messages_expired, 0);
    ctx.clock.advance_secs(2);
    assert_eq!(sweep(b).await.messages_expired, 1);
    let m = metrics(b, "q").await;
    assert_eq!(m.expired, 1);
    assert_eq!(m.backlog.count, 1);
    assert_eq!(m.backlog.oldest_timestamp_ms, Some(t0 + 30_000));
    assert_eq!(bodies(&lease_all(b, "q").await), ["young"]);
}

/// A message past its retention is never leased, even before a sweep.
pub async fn expired_messages_are_never_leased(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.message_retention_period = 60)).await;
    send_text(b, "q", "m").await;
    send(b, "q", text("delayed").with_delay(30)).await;
    ctx.clock.advance_secs(61);
    assert!(lease_all(b, "q").await.is_empty());
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
    sweep(b).await;
    let m = metrics(b, "q").await;
    assert_eq!(m.backlog, Backlog::default());
    assert_eq!((m.expired, m.delayed), (2, 0));
}
