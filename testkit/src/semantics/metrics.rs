//! Metrics: every counter and the backlog (count, bytes, oldest first-send time) after each
//! transition, compared as a whole so that a counter nobody looked at cannot drift.

use wasmq_engine::{Backlog, Outcome, QueueMetrics};

use super::{
    Ctx, attempts, create, create_with, lease_all, lease_n, lease_one, metrics, ok, report, retry,
    send, send_text, settings, settle, settle_one, sweep, text,
};

/// Every metric, checked as a whole after each step.
pub async fn metrics_count_every_transition(ctx: &Ctx) {
    let b = ctx.b();
    create_with(
        b,
        "q",
        settings(|s| {
            s.message_retention_period = 60;
            s.consumer.max_retries = 1;
        }),
    )
    .await;
    let t0 = ctx.now();
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    send(b, "q", text("dd").with_delay(30)).await;
    let backlog = |count, bytes, oldest| Backlog {
        count,
        bytes,
        oldest_timestamp_ms: oldest,
    };
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(4, 5, Some(t0)),
            delayed: 1,
            sent: 4,
            ..Default::default()
        }
    );

    let abc = lease_n(b, "q", 3).await;
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(4, 5, Some(t0)),
            in_flight: 3,
            delayed: 1,
            sent: 4,
            ..Default::default()
        }
    );

    let outcomes = vec![
        (abc[0].lease, Outcome::Ack),
        (abc[1].lease, retry(Some(0))),
        (abc[2].lease, retry(Some(0))),
    ];
    settle(b, "q", outcomes).await;
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(3, 4, Some(t0)),
            delayed: 1,
            sent: 4,
            acked: 1,
            retried: 2,
            ..Default::default()
        }
    );

    let bc = lease_all(b, "q").await;
    assert_eq!(attempts(&bc), [2, 2]);
    let r = settle(
        b,
        "q",
        vec![(bc[0].lease, retry(None)), (bc[1].lease, Outcome::Ack)],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.dropped = 1;
            r.acked = 1;
        })
    );
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(1, 2, Some(t0)),
            delayed: 1,
            sent: 4,
            acked: 2,
            retried: 2,
            dropped: 1,
            ..Default::default()
        }
    );

    ctx.clock.advance_secs(61);
    assert_eq!(sweep(b).await.messages_expired, 1);
    assert_eq!(
        metrics(b, "q").await,
        QueueMetrics {
            backlog: backlog(0, 0, None),
            sent: 4,
            acked: 2,
            retried: 2,
            dropped: 1,
            expired: 1,
            ..Default::default()
        }
    );
}

/// Backlog counts every stored message (in flight and delayed too), their bytes, and the
/// oldest first-send time.
pub async fn backlog_tracks_count_bytes_and_oldest(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let t0 = ctx.now();
    send_text(b, "q", "aa").await;
    ctx.clock.advance_secs(5);
    send(b, "q", text("bbb").with_delay(100)).await;
    let expected = Backlog {
        count: 2,
        bytes: 5,
        oldest_timestamp_ms: Some(t0),
    };
    assert_eq!(metrics(b, "q").await.backlog, expected);
    let aa = lease_one(b, "q").await;
    assert_eq!(metrics(b, "q").await.backlog, expected);
    assert_eq!(
        ok("info", b.queue_info("q").await).metrics.backlog,
        expected
    );
    settle_one(b, "q", &aa, Outcome::Ack).await;
    assert_eq!(
        metrics(b, "q").await.backlog,
        Backlog {
            count: 1,
            bytes: 3,
            oldest_timestamp_ms: Some(t0 + 5_000)
        }
    );
    assert_eq!(
        send_text(b, "q", "c").await,
        Backlog {
            count: 2,
            bytes: 4,
            oldest_timestamp_ms: Some(t0 + 5_000)
        }
    );
}
