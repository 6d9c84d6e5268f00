//! Deduplication (beyond Cloudflare): a second send with the same `dedup-key` inside the queue's
//! `dedup_window` is accepted but stored once; the key is forgotten after the window, is per
//! queue, and a window of 0 turns dedup off.

use wasmq_engine::{Broker, LeasedMessage, Outcome, SettleReport};

use super::{
    Ctx, bodies, count, create, create_with, lease_all, metrics, ok, send, send_text, settings,
    settle, sweep, text,
};

async fn ack_each(b: &dyn Broker, q: &str, leased: &[LeasedMessage]) -> SettleReport {
    settle(
        b,
        q,
        leased.iter().map(|l| (l.lease, Outcome::Ack)).collect(),
    )
    .await
}

/// A second send with the same key inside the window is accepted but stored once.
pub async fn dedup_within_window_stores_once(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    assert_eq!(send(b, "q", text("x").with_dedup_key("k")).await.count, 1);
    ctx.clock.advance_secs(299);
    assert_eq!(send(b, "q", text("y").with_dedup_key("k")).await.count, 1);
    assert_eq!(metrics(b, "q").await.sent, 1);
    // In a batch, only the new keys are stored.
    let batch = vec![
        text("z").with_dedup_key("k"),
        text("w").with_dedup_key("k2"),
    ];
    assert_eq!(ok("batch", b.send_batch("q", batch, None).await).count, 2);
    send_text(b, "q", "no key").await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.sent), (3, 3));
    let all = lease_all(b, "q").await;
    assert_eq!(bodies(&all), ["x", "w", "no key"]);

    // The key is remembered for the window even once its message is gone.
    ack_each(b, "q", &all).await;
    send(b, "q", text("again").with_dedup_key("k")).await;
    assert_eq!(count(b, "q").await, 0);
}

/// Once the window has passed (and sweep forgot the key) the same key stores again.
pub async fn dedup_key_forgotten_after_window(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.dedup_window = 60)).await;
    send(b, "q", text("x").with_dedup_key("k")).await;
    ctx.clock.advance_secs(59);
    assert_eq!(sweep(b).await.dedup_keys_expired, 0);
    ctx.clock.advance_secs(2);
    assert_eq!(sweep(b).await.dedup_keys_expired, 1);
    send(b, "q", text("z").with_dedup_key("k")).await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.sent), (2, 2));
    assert_eq!(bodies(&lease_all(b, "q").await), ["x", "z"]);
}

/// Queues do not share dedup keys.
pub async fn dedup_is_per_queue(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "a").await;
    create(b, "b").await;
    send(b, "a", text("x").with_dedup_key("k")).await;
    send(b, "b", text("x").with_dedup_key("k")).await;
    assert_eq!(count(b, "a").await, 1);
    assert_eq!(count(b, "b").await, 1);
}

/// `dedup_window = 0` turns deduplication off.
pub async fn dedup_window_zero_disables_dedup(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.dedup_window = 0)).await;
    send(b, "q", text("x").with_dedup_key("k")).await;
    send(b, "q", text("y").with_dedup_key("k")).await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.sent), (2, 2));
}
