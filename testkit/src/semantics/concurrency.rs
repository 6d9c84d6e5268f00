//! Concurrency: concurrent sends, leases and settles on one broker hand each message out exactly
//! once. The other cases run one call at a time; this one makes the backend's locking or
//! transactions matter.

use std::sync::Arc;

use wasmq_engine::{LeaseOptions, Outcome};

use super::{Ctx, VIS, bodies, create, metrics, ok, text};

/// 50 concurrent sends all succeed; concurrent leases hand each message out exactly once.
pub async fn concurrent_sends_are_each_leased_once(ctx: &Ctx) {
    create(ctx.b(), "q").await;
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let b = Arc::clone(&ctx.broker);
            tokio::spawn(async move { b.send("q", text(&format!("m{i}"))).await })
        })
        .collect();
    for s in sends {
        s.await.expect("send task").expect("send");
    }
    let m = metrics(ctx.b(), "q").await;
    assert_eq!((m.backlog.count, m.sent), (50, 50));

    let leasers: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&ctx.broker);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = ok("lease", b.lease("q", LeaseOptions::new(3, VIS)).await);
                    if batch.is_empty() {
                        return got;
                    }
                    got.extend(batch);
                }
            })
        })
        .collect();
    let mut leased = Vec::new();
    for l in leasers {
        leased.extend(l.await.expect("lease task"));
    }
    let mut names = bodies(&leased);
    names.sort();
    let mut expected: Vec<_> = (0..50).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(names, expected, "each message leased exactly once");
    assert!(leased.iter().all(|l| l.message.attempts == 1));
    assert_eq!(metrics(ctx.b(), "q").await.in_flight, 50);

    let settles: Vec<_> = leased
        .chunks(10)
        .map(|chunk| {
            let b = Arc::clone(&ctx.broker);
            let outcomes: Vec<_> = chunk.iter().map(|l| (l.lease, Outcome::Ack)).collect();
            tokio::spawn(async move { b.settle("q", outcomes).await })
        })
        .collect();
    for s in settles {
        assert_eq!(s.await.expect("settle task").expect("settle").acked, 10);
    }
    let m = metrics(ctx.b(), "q").await;
    assert_eq!((m.backlog.count, m.acked, m.in_flight), (0, 50, 0));
}
