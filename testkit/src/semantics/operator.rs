//! Operator actions: pause and resume, purge, peek and replay from a dead-letter queue. They act
//! on stored messages outside the consumer's lease cycle, so each is checked against in-flight
//! and delayed messages and the leases still held on them.

use wasmq_engine::{Backlog, BrokerError, LeaseOptions, Message, Outcome};

use super::{
    Ctx, VIS, attempts, bodies, body_str, count, create, create_with, err, lease_all, lease_n,
    lease_one, metrics, ok, report, retry, send, send_text, settle_one, sweep, text, with_dlq,
};

fn peeked(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| body_str(&m.body)).collect()
}

/// A paused queue accepts sends and delivers nothing until resumed.
pub async fn pause_and_resume(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "before").await;
    let before = lease_one(b, "q").await;

    ok("pause", b.set_paused("q", true).await);
    assert!(ok("info", b.queue_info("q").await).paused);
    assert!(ok("list", b.list_queues().await)[0].paused);
    send_text(b, "q", "m").await;
    assert_eq!(
        err("lease", b.lease("q", LeaseOptions::new(10, VIS)).await),
        BrokerError::Paused("q".into())
    );
    // Work already handed out can still be settled.
    assert_eq!(
        settle_one(b, "q", &before, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
    ctx.clock.advance_secs(60);
    assert_eq!(
        err("lease", b.lease("q", LeaseOptions::new(10, VIS)).await),
        BrokerError::Paused("q".into())
    );
    assert_eq!(count(b, "q").await, 1);

    ok("resume", b.set_paused("q", false).await);
    assert!(!ok("info", b.queue_info("q").await).paused);
    let m = lease_one(b, "q").await;
    assert_eq!(
        (body_str(&m.message.body), m.message.attempts),
        ("m".into(), 1)
    );
}

/// Purge deletes every message, delayed and in-flight ones included.
pub async fn purge_deletes_everything(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "leased-1").await;
    send_text(b, "q", "leased-2").await;
    send(b, "q", text("delayed").with_delay(60)).await;
    send_text(b, "q", "retried").await;
    let leased = lease_n(b, "q", 2).await;
    assert_eq!(bodies(&leased), ["leased-1", "leased-2"]);
    let later = lease_all(b, "q").await;
    assert_eq!(bodies(&later), ["retried"]);
    settle_one(b, "q", &later[0], retry(Some(30))).await;
    let m = metrics(b, "q").await;
    assert_eq!((m.backlog.count, m.in_flight, m.delayed), (4, 2, 2));

    assert_eq!(ok("purge", b.purge("q").await), 4);
    let m = metrics(b, "q").await;
    assert_eq!(m.backlog, Backlog::default());
    assert_eq!((m.in_flight, m.delayed), (0, 0));
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
    assert_eq!(
        settle_one(b, "q", &leased[0], Outcome::Ack).await,
        report(|r| r.stale = vec![leased[0].lease])
    );
    ctx.clock.advance_secs(120);
    assert!(lease_all(b, "q").await.is_empty());
    assert_eq!(sweep(b).await.leases_expired, 0);
    assert_eq!(metrics(b, "q").await.acked, 0);
    assert_eq!(ok("purge", b.purge("q").await), 0);

    send_text(b, "q", "after").await;
    assert_eq!(bodies(&lease_all(b, "q").await), ["after"]);
}

/// Peek shows messages in delivery order without leasing them; in-flight ones are left out.
pub async fn peek_does_not_lease(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send(b, "q", text("late").with_delay(10)).await;
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    let all = ok("peek", b.peek("q", 10).await);
    assert_eq!(peeked(&all), ["a", "b", "c", "late"]);
    assert!(all.iter().all(|m| m.attempts == 0));
    assert_eq!(peeked(&ok("peek", b.peek("q", 2).await)), ["a", "b"]);
    assert_eq!(metrics(b, "q").await.in_flight, 0);

    let a = lease_n(b, "q", 1).await;
    assert_eq!(bodies(&a), ["a"]);
    assert_eq!(a[0].message.attempts, 1);
    assert_eq!(a[0].message.id, all[0].id);
    assert_eq!(a[0].message.timestamp_ms, all[0].timestamp_ms);
    assert_eq!(
        peeked(&ok("peek", b.peek("q", 10).await)),
        ["b", "c", "late"]
    );

    let bc = lease_all(b, "q").await;
    assert_eq!(bodies(&bc), ["b", "c"]);
    assert_eq!(attempts(&bc), [1, 1]);
    settle_one(b, "q", &bc[0], retry(Some(0))).await;
    let now = ok("peek", b.peek("q", 10).await);
    assert_eq!(peeked(&now), ["b", "late"]);
    assert_eq!(now[0].attempts, 1);
}

/// Replay moves DLQ messages back, keeping id and timestamp, attempts starting afresh.
pub async fn replay_moves_messages_back(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(0, Some("dlq"))).await;
    let t0 = ctx.now();
    for body in ["m1", "m2", "m3"] {
        send_text(b, "src", body).await;
        ctx.clock.advance_secs(1);
    }
    for _ in 0..3 {
        let m = lease_n(b, "src", 1).await;
        settle_one(b, "src", &m[0], retry(None)).await;
    }
    assert_eq!(count(b, "dlq").await, 3);
    assert_eq!(count(b, "src").await, 0);
    let dead = ok("peek", b.peek("dlq", 10).await);
    assert_eq!(peeked(&dead), ["m1", "m2", "m3"]);

    assert_eq!(ok("replay", b.replay("dlq", "src", 2).await), 2);
    assert_eq!(count(b, "dlq").await, 1);
    let back = lease_all(b, "src").await;
    assert_eq!(bodies(&back), ["m1", "m2"]);
    assert_eq!(attempts(&back), [1, 1]);
    for (l, d) in back.iter().zip(&dead) {
        assert_eq!(
            (l.message.id, l.message.timestamp_ms),
            (d.id, d.timestamp_ms)
        );
    }
    assert_eq!(back[0].message.timestamp_ms, t0);
    assert_eq!(back[1].message.timestamp_ms, t0 + 1_000);

    // In-flight messages are not replayed.
    let m3 = lease_one(b, "dlq").await;
    assert_eq!(ok("replay", b.replay("dlq", "src", 10).await), 0);
    settle_one(b, "dlq", &m3, retry(Some(0))).await;
    assert_eq!(ok("replay", b.replay("dlq", "src", 10).await), 1);
    assert_eq!(count(b, "dlq").await, 0);
    let m3_back = lease_one(b, "src").await;
    assert_eq!(
        (m3_back.message.id, m3_back.message.attempts),
        (dead[2].id, 1)
    );
    assert_eq!(ok("replay", b.replay("dlq", "src", 10).await), 0);

    let e = err("replay", b.replay("src", "src", 10).await);
    assert!(matches!(e, BrokerError::InvalidRequest(_)), "{e:?}");
}
