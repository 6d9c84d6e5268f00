//! Leasing: oldest visible first up to the batch size, a retried message behind the waiting ones,
//! no second lease while one holds, expiry as a failed attempt (noticed by `lease` or `sweep`,
//! dead-lettering on the last attempt), late acks and retries, lease options in range, and the
//! `in_flight` count. The at-least-once contract of pull and push consumers rests on these.

use wasmq_engine::{BrokerError, LeaseOptions, Outcome};

use super::{
    Ctx, VIS, attempts, bodies, create, create_with, err, lease_all, lease_n, lease_one,
    lease_opts, metrics, ok, report, retry, send_text, settle, settle_one, sweep, with_dlq,
};

/// Oldest visible first, at most `max_messages` at a time.
pub async fn lease_oldest_first_up_to_max(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c", "d", "e"] {
        send_text(b, "q", body).await;
    }
    assert_eq!(bodies(&lease_n(b, "q", 2).await), ["a", "b"]);
    assert_eq!(bodies(&lease_n(b, "q", 1).await), ["c"]);
    assert_eq!(bodies(&lease_n(b, "q", 10).await), ["d", "e"]);
    assert!(lease_n(b, "q", 10).await.is_empty());
}

/// A retried message goes behind the messages already waiting (same millisecond included).
pub async fn retried_message_goes_behind_waiting_ones(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    let a = lease_n(b, "q", 1).await;
    assert_eq!(bodies(&a), ["a"]);
    settle_one(b, "q", &a[0], retry(Some(0))).await;
    let all = lease_all(b, "q").await;
    assert_eq!(bodies(&all), ["b", "c", "a"]);
    assert_eq!(attempts(&all), [1, 1, 2]);
}

/// A message under lease is not handed out again while the lease holds.
pub async fn leased_messages_are_not_leased_again(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    assert_eq!(bodies(&lease_n(b, "q", 1).await), ["a"]);
    assert_eq!(bodies(&lease_all(b, "q").await), ["b"]);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(VIS - 1);
    assert!(lease_all(b, "q").await.is_empty());
    assert_eq!(sweep(b).await.leases_expired, 0);
    assert_eq!(metrics(b, "q").await.in_flight, 2);
}

/// An expired lease is a failed attempt: the message comes back with `attempts + 1`.
pub async fn expired_lease_redelivers_with_next_attempt(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let first = lease_opts(b, "q", 1, 1_000).await;
    assert_eq!(first[0].lease_deadline_ms, ctx.now() + 1_000);
    ctx.clock.advance_ms(999);
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_ms(2);
    let second = lease_one(b, "q").await;
    assert_eq!(second.message.id, first[0].message.id);
    assert_eq!(second.message.attempts, 2);
    let m = metrics(b, "q").await;
    assert_eq!((m.retried, m.in_flight, m.backlog.count), (1, 1, 1));
}

/// `sweep` turns expired leases into failed attempts too.
pub async fn expired_lease_found_by_sweep(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    lease_opts(b, "q", 1, 1_000).await;
    ctx.clock.advance_ms(1_001);
    let r = sweep(b).await;
    assert_eq!(r.leases_expired, 1);
    let m = metrics(b, "q").await;
    assert_eq!((m.retried, m.in_flight, m.backlog.count), (1, 0, 1));
    let peek = ok("peek", b.peek("q", 10).await);
    assert_eq!(peek.len(), 1);
    assert_eq!(peek[0].attempts, 1, "one delivery so far");
    assert_eq!(lease_one(b, "q").await.message.attempts, 2);
    assert_eq!(sweep(b).await.leases_expired, 0);
}

/// A lease that expires on the last allowed attempt dead-letters (or drops) the message.
pub async fn expired_lease_on_last_attempt_dead_letters(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(1, Some("dlq"))).await;
    send_text(b, "src", "m").await;
    let first = lease_opts(b, "src", 1, 1_000).await;
    ctx.clock.advance_ms(1_001);
    let second = lease_opts(b, "src", 1, 1_000).await;
    assert_eq!(attempts(&second), [2]);
    ctx.clock.advance_ms(1_001);
    assert_eq!(sweep(b).await.leases_expired, 1);
    let src = metrics(b, "src").await;
    assert_eq!(
        (
            src.backlog.count,
            src.in_flight,
            src.retried,
            src.dead_lettered
        ),
        (0, 0, 1, 1)
    );
    let d = lease_one(b, "dlq").await;
    assert_eq!((d.message.id, d.message.attempts), (first[0].message.id, 1));

    // No DLQ: dropped, here noticed by `lease` rather than `sweep`.
    create_with(b, "plain", with_dlq(0, None)).await;
    send_text(b, "plain", "n").await;
    lease_opts(b, "plain", 1, 1_000).await;
    ctx.clock.advance_ms(1_001);
    assert!(lease_all(b, "plain").await.is_empty());
    let plain = metrics(b, "plain").await;
    assert_eq!(
        (plain.backlog.count, plain.dropped, plain.retried),
        (0, 1, 0)
    );
}

/// A late ack (its lease expired and the message was redelivered meanwhile) still deletes the
/// message, as Cloudflare documents for pull consumers: the work is done. A late retry of a
/// message a newer lease holds is left to that holder. Once the message is gone, or for a lease
/// of another queue, the decision is stale and changes nothing.
pub async fn late_ack_deletes_a_redelivered_message(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let first = lease_opts(b, "q", 1, 1_000).await.remove(0);
    ctx.clock.advance_ms(1_001);
    let second = lease_one(b, "q").await;
    assert_eq!(second.message.attempts, 2);

    assert_eq!(
        settle_one(b, "q", &first, retry(Some(0))).await,
        report(|r| r.stale = vec![first.lease])
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.acked, m.in_flight, m.backlog.count, m.retried),
        (0, 1, 1, 1)
    );

    assert_eq!(
        settle_one(b, "q", &first, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.acked, m.in_flight, m.backlog.count, m.retried),
        (1, 0, 0, 1)
    );
    // The newer lease's decision, and a second ack, find nothing.
    let r = settle(
        b,
        "q",
        vec![(second.lease, Outcome::Ack), (first.lease, Outcome::Ack)],
    )
    .await;
    assert_eq!(r, report(|r| r.stale = vec![second.lease, first.lease]));
    assert_eq!(metrics(b, "q").await.acked, 1);
    ctx.clock.advance_secs(60);
    assert!(lease_all(b, "q").await.is_empty());

    // A lease of another queue.
    create(b, "other").await;
    send_text(b, "other", "o").await;
    let o = lease_one(b, "other").await;
    assert_eq!(
        settle_one(b, "q", &o, Outcome::Ack).await,
        report(|r| r.stale = vec![o.lease])
    );
    let other = metrics(b, "other").await;
    assert_eq!(
        (other.acked, other.in_flight, other.backlog.count),
        (0, 1, 1)
    );
}

/// A decision that comes after the lease deadline, before `lease` or `sweep` noticed the
/// expiry: the expiry counts as a failed attempt first, then the late decision applies to the
/// waiting message: an ack deletes it, a retry sets when it is delivered next.
pub async fn late_settle_of_a_waiting_message_applies(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "n").await;
    send_text(b, "q", "p").await;
    let leased = lease_opts(b, "q", 2, 1_000).await;
    assert_eq!(bodies(&leased), ["n", "p"]);
    ctx.clock.advance_ms(1_001);
    let r = settle(
        b,
        "q",
        vec![
            (leased[0].lease, Outcome::Ack),
            (leased[1].lease, retry(Some(30))),
        ],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.acked = 1;
            r.retried = 1;
        })
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.acked, m.retried, m.in_flight, m.backlog.count, m.delayed),
        (1, 2, 0, 1, 1)
    );
    assert!(lease_all(b, "q").await.is_empty());
    ctx.clock.advance_secs(30);
    let again = lease_one(b, "q").await;
    assert_eq!(
        (again.message.id, again.message.attempts),
        (leased[1].message.id, 2)
    );
}

/// Lease options out of range are refused and lease nothing.
pub async fn invalid_lease_options_are_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "m").await;
    let twelve_hours = 12 * 3_600 * 1_000;
    for (n, vis) in [(0, VIS), (101, VIS), (1, 0), (1, twelve_hours + 1)] {
        let e = err("lease", b.lease("q", LeaseOptions::new(n, vis)).await);
        assert!(
            matches!(e, BrokerError::InvalidLease(_)),
            "({n}, {vis}): {e:?}"
        );
    }
    assert_eq!(metrics(b, "q").await.in_flight, 0);
    let m = lease_opts(b, "q", 100, twelve_hours).await;
    assert_eq!(attempts(&m), [1]);
    assert_eq!(m[0].lease_deadline_ms, ctx.now() + twelve_hours);
    assert_eq!(lease_opts(b, "q", 1, 1).await.len(), 0);
}

/// `in_flight` rises on lease and falls on settle.
pub async fn in_flight_follows_lease_and_settle(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c"] {
        send_text(b, "q", body).await;
    }
    assert_eq!(metrics(b, "q").await.in_flight, 0);
    let ab = lease_n(b, "q", 2).await;
    assert_eq!(metrics(b, "q").await.in_flight, 2);
    settle_one(b, "q", &ab[0], Outcome::Ack).await;
    assert_eq!(metrics(b, "q").await.in_flight, 1);
    settle_one(b, "q", &ab[1], retry(Some(0))).await;
    assert_eq!(metrics(b, "q").await.in_flight, 0);
    let cb = lease_all(b, "q").await;
    assert_eq!(bodies(&cb), ["c", "b"]);
    assert_eq!(metrics(b, "q").await.in_flight, 2);
    let r = settle(
        b,
        "q",
        vec![(cb[0].lease, Outcome::Ack), (cb[1].lease, retry(Some(10)))],
    )
    .await;
    assert_eq!(
        r,
        report(|r| {
            r.acked = 1;
            r.retried = 1;
        })
    );
    let m = metrics(b, "q").await;
    assert_eq!(
        (m.in_flight, m.delayed, m.backlog.count, m.acked, m.retried),
        (0, 1, 1, 2, 2)
    );
}

/// `settle_and_lease` applies the outcomes, then leases (a retried message goes behind the
/// waiting ones, as after a separate settle), and reports the backlog as the transaction left
/// it (in-flight messages count); a paused queue still takes the outcomes and leases nothing.
pub async fn settle_and_lease_is_settle_then_lease(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for body in ["a", "b", "c", "d"] {
        send_text(b, "q", body).await;
    }
    let fused = |outcomes, n| b.settle_and_lease("q", outcomes, LeaseOptions::new(n, VIS));
    let (r, first) = ok("settle_and_lease", fused(Vec::new(), 2).await);
    assert_eq!(r, report(|_| {}));
    assert_eq!(bodies(&first.messages), ["a", "b"]);
    assert_eq!(first.backlog.count, 4);
    let outcomes = vec![
        (first.messages[0].lease, Outcome::Ack),
        (first.messages[1].lease, retry(Some(0))),
    ];
    let (r, second) = ok("settle_and_lease", fused(outcomes, 10).await);
    assert_eq!(
        r,
        report(|r| {
            r.acked = 1;
            r.retried = 1;
        })
    );
    assert_eq!(bodies(&second.messages), ["c", "d", "b"]);
    assert_eq!(attempts(&second.messages), [1, 1, 2]);
    assert_eq!(second.backlog.count, 3);
    assert_eq!(metrics(b, "q").await.in_flight, 3);

    ok("pause", b.set_paused("q", true).await);
    send_text(b, "q", "e").await;
    let outcomes = second
        .messages
        .iter()
        .map(|m| (m.lease, Outcome::Ack))
        .collect();
    let (r, paused) = ok("settle_and_lease", fused(outcomes, 10).await);
    assert_eq!(r.acked, 3);
    assert!(paused.messages.is_empty());
    assert_eq!(paused.backlog.count, 1);
    let m = metrics(b, "q").await;
    assert_eq!((m.in_flight, m.acked), (0, 4));
}

/// Bad input to `settle_and_lease` (lease options or a retry delay out of range, an unknown
/// queue) is refused and changes nothing: the outcomes are not applied either.
pub async fn settle_and_lease_refuses_bad_input_whole(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    let a = lease_n(b, "q", 1).await;
    let ack = vec![(a[0].lease, Outcome::Ack)];
    let e = err(
        "settle_and_lease",
        b.settle_and_lease("q", ack.clone(), LeaseOptions::new(101, VIS))
            .await,
    );
    assert!(matches!(e, BrokerError::InvalidLease(_)), "{e:?}");
    let too_late = vec![
        (a[0].lease, Outcome::Ack),
        (a[0].lease, retry(Some(86_401))),
    ];
    let e = err(
        "settle_and_lease",
        b.settle_and_lease("q", too_late, LeaseOptions::new(1, VIS))
            .await,
    );
    assert!(matches!(e, BrokerError::InvalidDelay { .. }), "{e:?}");
    let e = err(
        "settle_and_lease",
        b.settle_and_lease("nope", ack, LeaseOptions::new(1, VIS))
            .await,
    );
    assert!(matches!(e, BrokerError::UnknownQueue(_)), "{e:?}");
    let m = metrics(b, "q").await;
    assert_eq!((m.in_flight, m.acked, m.backlog.count), (1, 0, 2));
}
