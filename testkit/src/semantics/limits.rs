//! Limits and refused input: body, batch and delay sizes, content types, dedup keys, retry
//! delays and unknown queues. Every refusal answers a typed error and stores (or settles)
//! nothing, a batch being all or nothing, so a caller told "refused" can safely resend.

use wasmq_engine::{
    Backlog, Broker, BrokerError, ContentType, LeaseOptions, Outcome, QueueSettings, SendRequest,
};

use super::{
    Ctx, VIS, bodies, count, create, err, lease_all, lease_one, metrics, ok, report, retry, send,
    send_text, settle, settle_one, text,
};

async fn assert_nothing_stored(b: &dyn Broker, q: &str) {
    let m = metrics(b, q).await;
    assert_eq!(m.backlog, Backlog::default(), "nothing may be stored");
    assert_eq!(m.sent, 0, "nothing may be counted as sent");
}

/// Bodies over 128 000 bytes are refused; 128 000 is accepted.
pub async fn message_size_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let big = SendRequest::new(vec![b'a'; 128_001], ContentType::Bytes);
    let e = err("send", b.send("q", big.clone()).await);
    assert_eq!(
        e,
        BrokerError::MessageTooLarge {
            size: 128_001,
            limit: 128_000
        }
    );
    assert_eq!(
        e.to_string(),
        "message body is 128001 bytes; the limit is 128000"
    );
    let e = err("send_batch", b.send_batch("q", vec![big], None).await);
    assert!(matches!(
        e,
        BrokerError::MessageTooLarge { size: 128_001, .. }
    ));
    assert_nothing_stored(b, "q").await;

    let max = SendRequest::new(vec![b'a'; 128_000], ContentType::Bytes);
    assert_eq!(send(b, "q", max).await.bytes, 128_000);
    assert_eq!(lease_one(b, "q").await.message.body.len(), 128_000);
}

/// At most 100 messages per batch.
pub async fn batch_count_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let batch = |n: usize| (0..n).map(|i| text(&i.to_string())).collect::<Vec<_>>();
    let e = err("send_batch", b.send_batch("q", batch(101), None).await);
    assert_eq!(
        e,
        BrokerError::TooManyMessages {
            count: 101,
            limit: 100
        }
    );
    assert_nothing_stored(b, "q").await;
    let backlog = ok("send_batch", b.send_batch("q", batch(100), None).await);
    assert_eq!(backlog.count, 100);
    assert_eq!(metrics(b, "q").await.sent, 100);
}

/// At most 256 000 body bytes per batch.
pub async fn batch_size_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let blob = |n: usize| SendRequest::new(vec![7u8; n], ContentType::Bytes);
    let over = vec![blob(128_000), blob(128_000), blob(1)];
    let e = err("send_batch", b.send_batch("q", over, None).await);
    assert_eq!(
        e,
        BrokerError::BatchTooLarge {
            size: 256_001,
            limit: 256_000
        }
    );
    assert_nothing_stored(b, "q").await;
    let full = vec![blob(128_000), blob(128_000)];
    let backlog = ok("send_batch", b.send_batch("q", full, None).await);
    assert_eq!((backlog.count, backlog.bytes), (2, 256_000));
}

/// An empty batch is an error.
pub async fn empty_batch_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    assert_eq!(
        err("send_batch", b.send_batch("q", vec![], None).await),
        BrokerError::EmptyBatch
    );
    assert_eq!(
        err("send_batch", b.send_batch("q", vec![], Some(5)).await),
        BrokerError::EmptyBatch
    );
    assert_nothing_stored(b, "q").await;
}

/// Delays are limited to 86 400 s, per message and per batch.
pub async fn delay_limit(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let invalid = BrokerError::InvalidDelay {
        delay: 86_401,
        max: 86_400,
    };
    let e = err("send", b.send("q", text("m").with_delay(86_401)).await);
    assert_eq!(e, invalid);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b")], Some(86_401))
            .await,
    );
    assert_eq!(e, invalid);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b").with_delay(86_401)], None)
            .await,
    );
    assert_eq!(e, invalid);
    assert_nothing_stored(b, "q").await;

    send(b, "q", text("m").with_delay(86_400)).await;
    ok(
        "send_batch",
        b.send_batch("q", vec![text("a")], Some(86_400)).await,
    );
    assert_eq!(metrics(b, "q").await.delayed, 2);
    ctx.clock.advance_secs(86_400);
    assert_eq!(bodies(&lease_all(b, "q").await), ["m", "a"]);
}

/// A retry delay over 86 400 s refuses the whole settle; nothing changes.
pub async fn retry_delay_over_limit_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    let ab = lease_all(b, "q").await;
    let e = err(
        "settle",
        b.settle(
            "q",
            vec![
                (ab[0].lease, Outcome::Ack),
                (ab[1].lease, retry(Some(86_401))),
            ],
        )
        .await,
    );
    assert_eq!(
        e,
        BrokerError::InvalidDelay {
            delay: 86_401,
            max: 86_400
        }
    );
    let m = metrics(b, "q").await;
    assert_eq!((m.in_flight, m.acked, m.retried), (2, 0, 0));
    let r = settle(
        b,
        "q",
        vec![
            (ab[0].lease, Outcome::Ack),
            (ab[1].lease, retry(Some(86_400))),
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
}

/// json bodies must be JSON and text bodies UTF-8; bytes are anything.
pub async fn body_must_match_content_type(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let bad_json = SendRequest::new(b"{nope".to_vec(), ContentType::Json);
    let bad_text = SendRequest::new(vec![0xff, 0xfe], ContentType::Text);
    for bad in [bad_json, bad_text] {
        let e = err("send", b.send("q", bad.clone()).await);
        assert!(matches!(e, BrokerError::InvalidBody(_)), "{bad:?}: {e:?}");
    }
    assert_nothing_stored(b, "q").await;

    send(
        b,
        "q",
        SendRequest::new(br#"{"a":[1,2]}"#.to_vec(), ContentType::Json),
    )
    .await;
    send(b, "q", text("café")).await;
    send(
        b,
        "q",
        SendRequest::new(vec![0xff, 0xfe], ContentType::Bytes),
    )
    .await;
    let leased = lease_all(b, "q").await;
    let types: Vec<_> = leased.iter().map(|l| l.message.content_type).collect();
    assert_eq!(
        types,
        [ContentType::Json, ContentType::Text, ContentType::Bytes]
    );
    assert_eq!(leased[2].message.body, [0xff, 0xfe]);
}

/// Dedup keys must be 1..=256 bytes.
pub async fn invalid_dedup_key_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    for key in [String::new(), "k".repeat(257)] {
        let e = err("send", b.send("q", text("m").with_dedup_key(key)).await);
        assert!(matches!(e, BrokerError::InvalidDedupKey(_)), "{e:?}");
    }
    assert_nothing_stored(b, "q").await;
    send(b, "q", text("m").with_dedup_key("k".repeat(256))).await;
    assert_eq!(count(b, "q").await, 1);
}

/// A batch is all or nothing.
pub async fn batch_with_one_bad_message_stores_nothing(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    let bad_json = SendRequest::new(b"{".to_vec(), ContentType::Json);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b"), bad_json], None)
            .await,
    );
    assert!(matches!(e, BrokerError::InvalidBody(_)), "{e:?}");
    let too_big = SendRequest::new(vec![0; 128_001], ContentType::Bytes);
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), too_big], None).await,
    );
    assert!(matches!(e, BrokerError::MessageTooLarge { .. }), "{e:?}");
    let e = err(
        "send_batch",
        b.send_batch("q", vec![text("a"), text("b").with_dedup_key("")], None)
            .await,
    );
    assert!(matches!(e, BrokerError::InvalidDedupKey(_)), "{e:?}");
    assert_nothing_stored(b, "q").await;
    assert!(lease_all(b, "q").await.is_empty());
    assert!(ok("peek", b.peek("q", 10).await).is_empty());
}

/// Every operation naming a missing queue answers `UnknownQueue` and changes nothing.
pub async fn unknown_queue_is_refused_everywhere(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "real").await;
    send_text(b, "real", "m").await;
    let m = lease_one(b, "real").await;
    let unknown = BrokerError::UnknownQueue("nope".into());

    assert_eq!(err("send", b.send("nope", text("m")).await), unknown);
    assert_eq!(
        err(
            "send_batch",
            b.send_batch("nope", vec![text("m")], None).await
        ),
        unknown
    );
    assert_eq!(
        err("lease", b.lease("nope", LeaseOptions::new(1, VIS)).await),
        unknown
    );
    assert_eq!(
        err(
            "settle",
            b.settle("nope", vec![(m.lease, Outcome::Ack)]).await
        ),
        unknown
    );
    assert_eq!(err("metrics", b.metrics("nope").await), unknown);
    assert_eq!(err("queue_info", b.queue_info("nope").await), unknown);
    assert_eq!(
        err(
            "configure",
            b.configure_queue("nope", QueueSettings::default()).await
        ),
        unknown
    );
    assert_eq!(err("delete", b.delete_queue("nope").await), unknown);
    assert_eq!(err("set_paused", b.set_paused("nope", true).await), unknown);
    assert_eq!(err("purge", b.purge("nope").await), unknown);
    assert_eq!(err("peek", b.peek("nope", 1).await), unknown);
    assert_eq!(err("replay", b.replay("nope", "real", 1).await), unknown);
    assert_eq!(err("replay", b.replay("real", "nope", 1).await), unknown);

    assert_eq!(ok("list", b.list_queues().await).len(), 1);
    let real = metrics(b, "real").await;
    assert_eq!((real.backlog.count, real.in_flight, real.acked), (1, 1, 0));
    assert_eq!(
        settle_one(b, "real", &m, Outcome::Ack).await,
        report(|r| r.acked = 1)
    );
}
