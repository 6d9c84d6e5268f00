//! Queue management: settings ranges (both ends accepted, out of range refused naming the key),
//! queue names, create, list, info, configure and delete, including a dead-letter queue that
//! cannot be deleted while used. The operator's view of a queue must match what is stored.

use wasmq_engine::{BrokerError, Outcome, QueueInfo, QueueMetrics, QueueSettings};

use super::{
    Ctx, body_str, count, create, create_with, err, lease_all, lease_n, lease_one, metrics, ok,
    report, retry, send, send_text, settings, settle_one, sweep, text, with_dlq,
};

type Edit = fn(&mut QueueSettings);

const OUT_OF_RANGE: [(&str, u64, Edit); 10] = [
    ("max_batch_size", 0, |s| s.consumer.max_batch_size = 0),
    ("max_batch_size", 101, |s| s.consumer.max_batch_size = 101),
    ("max_batch_timeout", 61, |s| {
        s.consumer.max_batch_timeout = 61
    }),
    ("max_retries", 101, |s| s.consumer.max_retries = 101),
    ("retry_delay", 86_401, |s| s.consumer.retry_delay = 86_401),
    ("message_retention_period", 59, |s| {
        s.message_retention_period = 59
    }),
    ("message_retention_period", 1_209_601, |s| {
        s.message_retention_period = 1_209_601
    }),
    ("delivery_delay", 86_401, |s| s.delivery_delay = 86_401),
    ("dedup_window", 86_401, |s| s.dedup_window = 86_401),
    ("max_retries", 1_000, |s| s.consumer.max_retries = 1_000),
];

/// Out-of-range settings are refused with `InvalidSetting` naming the key.
pub async fn settings_out_of_range_are_refused(ctx: &Ctx) {
    let b = ctx.b();
    for (key, value, edit) in OUT_OF_RANGE {
        match err(key, b.create_queue("q", settings(edit)).await) {
            BrokerError::InvalidSetting {
                key: k, value: v, ..
            } => {
                assert_eq!((k, v), (key, value));
            }
            other => panic!("create with {key} = {value}: expected InvalidSetting, got {other:?}"),
        }
    }
    assert!(ok("list", b.list_queues().await).is_empty());

    create(b, "q").await;
    for (key, value, edit) in OUT_OF_RANGE {
        match err(key, b.configure_queue("q", settings(edit)).await) {
            BrokerError::InvalidSetting {
                key: k, value: v, ..
            } => {
                assert_eq!((k, v), (key, value));
            }
            other => {
                panic!("configure with {key} = {value}: expected InvalidSetting, got {other:?}")
            }
        }
    }
    let info = ok("queue_info", b.queue_info("q").await);
    assert_eq!(info.settings, QueueSettings::default());
}

/// Both ends of every range are accepted.
pub async fn settings_at_range_bounds_are_accepted(ctx: &Ctx) {
    let b = ctx.b();
    let high = settings(|s| {
        s.delivery_delay = 86_400;
        s.message_retention_period = 1_209_600;
        s.dedup_window = 86_400;
        s.consumer.max_batch_size = 100;
        s.consumer.max_batch_timeout = 60;
        s.consumer.max_retries = 100;
        s.consumer.retry_delay = 86_400;
    });
    let low = settings(|s| {
        s.delivery_delay = 0;
        s.message_retention_period = 60;
        s.dedup_window = 0;
        s.consumer.max_batch_size = 1;
        s.consumer.max_batch_timeout = 0;
        s.consumer.max_retries = 0;
        s.consumer.retry_delay = 0;
    });
    assert_eq!(create_with(b, "high", high.clone()).await.settings, high);
    assert_eq!(create_with(b, "low", low.clone()).await.settings, low);
    assert_eq!(ok("info", b.queue_info("high").await).settings, high);
    assert_eq!(ok("info", b.queue_info("low").await).settings, low);
}

/// Queue names: 1..=63 of `[a-z0-9_-]`, starting with a letter or digit.
pub async fn invalid_queue_names_are_refused(ctx: &Ctx) {
    let b = ctx.b();
    let long = "x".repeat(64);
    for name in ["", "Jobs", "-jobs", "_jobs", "jobs/x", "jöbs", "a b", &long] {
        match err(name, b.create_queue(name, QueueSettings::default()).await) {
            BrokerError::InvalidQueueName { name: n, .. } => assert_eq!(n, name),
            other => panic!("name {name:?}: expected InvalidQueueName, got {other:?}"),
        }
    }
    assert!(ok("list", b.list_queues().await).is_empty());
    for name in ["a", "9", "jobs-dlq", "q_1", &"x".repeat(63)] {
        create(b, name).await;
    }
    assert_eq!(ok("list", b.list_queues().await).len(), 5);
}

/// Creating a queue twice is refused and leaves the first one alone.
pub async fn duplicate_queue_is_refused(ctx: &Ctx) {
    let b = ctx.b();
    create_with(b, "q", settings(|s| s.delivery_delay = 5)).await;
    send_text(b, "q", "m").await;
    assert_eq!(
        err(
            "create",
            b.create_queue("q", QueueSettings::default()).await
        ),
        BrokerError::QueueExists("q".into())
    );
    let info = ok("info", b.queue_info("q").await);
    assert_eq!(info.settings.delivery_delay, 5);
    assert_eq!(info.metrics.backlog.count, 1);
}

/// `list_queues` is sorted by name.
pub async fn list_queues_is_sorted_by_name(ctx: &Ctx) {
    let b = ctx.b();
    assert!(ok("list", b.list_queues().await).is_empty());
    for name in ["c", "a-dlq", "b", "a", "a0"] {
        create(b, name).await;
    }
    let names = |list: Vec<QueueInfo>| list.into_iter().map(|q| q.name).collect::<Vec<_>>();
    assert_eq!(
        names(ok("list", b.list_queues().await)),
        ["a", "a-dlq", "a0", "b", "c"]
    );
    ok("delete", b.delete_queue("b").await);
    assert_eq!(
        names(ok("list", b.list_queues().await)),
        ["a", "a-dlq", "a0", "c"]
    );
}

/// `create_queue` and `queue_info` report name, settings, state and metrics.
pub async fn queue_info_reports_settings_state_and_metrics(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    let s = settings(|s| {
        s.delivery_delay = 3;
        s.message_retention_period = 7_200;
        s.dedup_window = 10;
        s.consumer.max_batch_size = 50;
        s.consumer.max_batch_timeout = 1;
        s.consumer.max_retries = 7;
        s.consumer.retry_delay = 9;
        s.consumer.dead_letter_queue = Some("dlq".into());
    });
    let expected = QueueInfo {
        name: "q".into(),
        settings: s.clone(),
        paused: false,
        metrics: QueueMetrics::default(),
    };
    assert_eq!(create_with(b, "q", s).await, expected);
    assert_eq!(ok("info", b.queue_info("q").await), expected);

    send_text(b, "q", "m").await;
    let info = ok("info", b.queue_info("q").await);
    assert_eq!(info.metrics, metrics(b, "q").await);
    assert_eq!((info.metrics.sent, info.metrics.delayed), (1, 1));
    let listed = ok("list", b.list_queues().await);
    assert_eq!(listed.iter().find(|q| q.name == "q"), Some(&info));
}

/// `configure_queue` replaces settings; stored messages and metrics stay.
pub async fn configure_queue_changes_settings_and_keeps_messages(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "kept").await;
    let new = settings(|s| {
        s.delivery_delay = 60;
        s.consumer.max_retries = 0;
    });
    let info = ok("configure", b.configure_queue("q", new.clone()).await);
    assert_eq!(info.settings, new);
    assert_eq!((info.metrics.backlog.count, info.metrics.sent), (1, 1));
    assert_eq!(ok("info", b.queue_info("q").await).settings, new);

    send_text(b, "q", "delayed by the new setting").await;
    assert_eq!(metrics(b, "q").await.delayed, 1);
    let kept = lease_one(b, "q").await;
    assert_eq!(body_str(&kept.message.body), "kept");
    // max_retries = 0 now applies: the first failure drops it.
    assert_eq!(
        settle_one(b, "q", &kept, retry(None)).await,
        report(|r| r.dropped = 1)
    );
}

/// `delete_queue` deletes the queue and all its messages; a new queue of that name is empty.
pub async fn delete_queue_deletes_its_messages(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "q").await;
    send_text(b, "q", "a").await;
    send_text(b, "q", "b").await;
    send(b, "q", text("c").with_delay(60)).await;
    send(b, "q", text("d").with_dedup_key("k")).await;
    let a = lease_n(b, "q", 1).await;
    assert_eq!(ok("delete", b.delete_queue("q").await), 4);
    assert_eq!(
        err("info", b.queue_info("q").await),
        BrokerError::UnknownQueue("q".into())
    );
    assert!(ok("list", b.list_queues().await).is_empty());

    let info = create(b, "q").await;
    assert_eq!(info.metrics, QueueMetrics::default());
    assert!(lease_all(b, "q").await.is_empty());
    assert_eq!(
        settle_one(b, "q", &a[0], Outcome::Ack).await,
        report(|r| r.stale = vec![a[0].lease])
    );
    ctx.clock.advance_secs(120);
    sweep(b).await;
    assert!(lease_all(b, "q").await.is_empty());
    // The dedup keys went with the old queue.
    send(b, "q", text("d").with_dedup_key("k")).await;
    assert_eq!(count(b, "q").await, 1);
}

/// A queue used as a DLQ cannot be deleted until no queue uses it.
pub async fn delete_queue_refused_while_used_as_dead_letter_queue(ctx: &Ctx) {
    let b = ctx.b();
    create(b, "dlq").await;
    create_with(b, "src", with_dlq(3, Some("dlq"))).await;
    send_text(b, "dlq", "m").await;
    assert_eq!(
        err("delete", b.delete_queue("dlq").await),
        BrokerError::DeadLetterInUse {
            queue: "dlq".into(),
            used_by: "src".into()
        }
    );
    assert_eq!(count(b, "dlq").await, 1);
    ok(
        "configure",
        b.configure_queue("src", QueueSettings::default()).await,
    );
    assert_eq!(ok("delete", b.delete_queue("dlq").await), 1);

    // Deleting the user first works too.
    create(b, "dlq2").await;
    create_with(b, "src2", with_dlq(3, Some("dlq2"))).await;
    assert_eq!(ok("delete", b.delete_queue("src2").await), 0);
    assert_eq!(ok("delete", b.delete_queue("dlq2").await), 0);
    let left: Vec<_> = ok("list", b.list_queues().await)
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(left, ["src"]);
}
