//! The local queue's unit tests: peek-lock, delivery counts, dead-lettering, scheduling,
//! duplicate detection and persistence across processes.

use super::*;

fn options(max: u32) -> LocalQueueOptions {
    LocalQueueOptions {
        lock_duration: Duration::from_secs(60),
        max_delivery_count: max,
        duplicate_detection_window: Duration::from_secs(600),
    }
}

fn msg(id: &str) -> NewMessage {
    NewMessage {
        message_id: Some(id.to_string()),
        correlation_id: Some("corr".into()),
        content_type: Some("application/json".into()),
        body: br#"{"a":1}"#.to_vec(),
        properties: BTreeMap::from([("traceparent".to_string(), "00-x".to_string())]),
        scheduled_enqueue_time: None,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

#[test]
fn peek_lock_hides_message_and_counts_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    q.send_at("work", msg("m1"), t0()).expect("send");
    let r = q
        .receive_at("work", t0())
        .expect("receive")
        .expect("a message");
    assert_eq!(r.message.message_id, "m1");
    assert_eq!(r.message.delivery_count, 1);
    assert_eq!(r.message.body, br#"{"a":1}"#.to_vec());
    assert_eq!(r.message.correlation_id.as_deref(), Some("corr"));
    assert_eq!(r.locked_until, t0() + secs(60));
    assert!(q
        .receive_at("work", t0() + secs(1))
        .expect("receive")
        .is_none());
    q.complete_at("work", r.lock_token, t0() + secs(2))
        .expect("complete");
    assert!(q.messages("work").expect("list").is_empty());
    assert!(matches!(
        q.complete_at("work", r.lock_token, t0() + secs(3)),
        Err(LocalQueueError::LockLost { .. })
    ));
}

#[test]
fn abandon_makes_visible_again_and_counts_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    q.send_at("work", msg("m1"), t0()).expect("send");
    let r1 = q.receive_at("work", t0()).expect("rx").expect("msg");
    assert_eq!(
        q.abandon_at("work", r1.lock_token, t0()).expect("abandon"),
        AbandonOutcome::Requeued
    );
    let r2 = q.receive_at("work", t0()).expect("rx").expect("msg again");
    assert_eq!(r2.message.delivery_count, 2);
    assert_ne!(r1.lock_token, r2.lock_token);
    // The stale token no longer settles anything.
    assert!(q.complete_at("work", r1.lock_token, t0()).is_err());
}

#[test]
fn dead_letters_after_max_deliveries_with_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(3)).expect("open");
    q.send_at("work", msg("m1"), t0()).expect("send");
    for n in 1..=3 {
        let r = q.receive_at("work", t0()).expect("rx").expect("msg");
        assert_eq!(r.message.delivery_count, n);
        let outcome = q.abandon_at("work", r.lock_token, t0()).expect("abandon");
        let expected = if n == 3 {
            AbandonOutcome::DeadLettered
        } else {
            AbandonOutcome::Requeued
        };
        assert_eq!(outcome, expected);
    }
    assert!(q.receive_at("work", t0()).expect("rx").is_none());
    let dl = q.dead_letters("work").expect("dl");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
    assert_eq!(dl[0].message.delivery_count, 3);
    assert!(dl[0].description.contains('3'));
}

#[test]
fn explicit_dead_letter_keeps_reason_and_description() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    q.send("work", msg("poison")).expect("send");
    let r = q.receive("work").expect("rx").expect("msg");
    q.dead_letter("work", r.lock_token, "InvalidPayload", "field vmId missing")
        .expect("dead-letter");
    let dl = q.dead_letters("work").expect("dl");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, "InvalidPayload");
    assert_eq!(dl[0].description, "field vmId missing");
    assert_eq!(dl[0].message.message_id, "poison");
    assert_eq!(q.stats("work").expect("stats").dead_lettered, 1);
}

#[test]
fn scheduled_message_is_invisible_until_its_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    let mut m = msg("later");
    m.scheduled_enqueue_time = Some(t0() + secs(30));
    q.send_at("work", m, t0()).expect("send");
    q.send_at("work", msg("now"), t0()).expect("send");
    let stats = q.stats_at("work", t0()).expect("stats");
    assert_eq!((stats.active, stats.scheduled), (1, 1));
    assert_eq!(stats.next_visible_at, Some(t0() + secs(30)));
    let first = q.receive_at("work", t0()).expect("rx").expect("msg");
    assert_eq!(first.message.message_id, "now");
    q.complete_at("work", first.lock_token, t0())
        .expect("complete");
    assert!(q.receive_at("work", t0() + secs(29)).expect("rx").is_none());
    let later = q
        .receive_at("work", t0() + secs(30))
        .expect("rx")
        .expect("scheduled message due");
    assert_eq!(later.message.message_id, "later");
}

#[test]
fn duplicate_message_id_is_dropped_within_window_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    assert!(matches!(
        q.send_at("work", msg("same"), t0()).expect("send"),
        SendOutcome::Enqueued { .. }
    ));
    // Still a duplicate after the first copy was consumed: detection is by history, not presence.
    let r = q.receive_at("work", t0()).expect("rx").expect("msg");
    q.complete_at("work", r.lock_token, t0()).expect("complete");
    assert_eq!(
        q.send_at("work", msg("same"), t0() + secs(599))
            .expect("send"),
        SendOutcome::Duplicate
    );
    assert_eq!(q.messages("work").expect("list").len(), 0);
    assert!(matches!(
        q.send_at("work", msg("same"), t0() + secs(601))
            .expect("send"),
        SendOutcome::Enqueued { .. }
    ));
    // Other queues have their own history.
    assert!(matches!(
        q.send_at("other", msg("same"), t0() + secs(1))
            .expect("send"),
        SendOutcome::Enqueued { .. }
    ));
}

#[test]
fn expired_lock_makes_message_visible_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    q.send_at("work", msg("m1"), t0()).expect("send");
    let r1 = q.receive_at("work", t0()).expect("rx").expect("msg");
    assert!(q.receive_at("work", t0() + secs(59)).expect("rx").is_none());
    let r2 = q
        .receive_at("work", t0() + secs(60))
        .expect("rx")
        .expect("visible after lock expiry");
    assert_eq!(r2.message.delivery_count, 2);
    assert!(matches!(
        q.complete_at("work", r1.lock_token, t0() + secs(61)),
        Err(LocalQueueError::LockLost { .. })
    ));
}

#[test]
fn expired_lock_on_last_delivery_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(1)).expect("open");
    q.send_at("work", msg("m1"), t0()).expect("send");
    let _r = q.receive_at("work", t0()).expect("rx").expect("msg");
    assert!(q.receive_at("work", t0() + secs(61)).expect("rx").is_none());
    let stats = q.stats_at("work", t0() + secs(61)).expect("stats");
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(stats.active + stats.locked + stats.scheduled, 0);
}

#[test]
fn persists_across_reopen_and_releases_locks_held_at_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = LocalQueue::open(dir.path(), options(10)).expect("open");
        q.send_at("work", msg("m1"), t0()).expect("send");
        q.send_at("work", msg("m2"), t0()).expect("send");
        let r = q.receive_at("work", t0()).expect("rx").expect("msg");
        assert_eq!(r.message.message_id, "m1");
        let r2 = q.receive_at("work", t0()).expect("rx").expect("msg");
        q.dead_letter_at("work", r2.lock_token, "Bad", "why", t0())
            .expect("dead-letter");
        // Dropped while m1 is locked: the "crash".
    }
    let q = LocalQueue::open(dir.path(), options(10)).expect("reopen");
    assert_eq!(q.queue_names(), vec!["work".to_string()]);
    let r = q
        .receive_at("work", t0() + secs(1))
        .expect("rx")
        .expect("m1 visible again after restart");
    assert_eq!(r.message.message_id, "m1");
    assert_eq!(r.message.delivery_count, 2, "the crashed attempt counts");
    assert_eq!(
        r.message.properties.get("traceparent").map(String::as_str),
        Some("00-x")
    );
    let dl = q.dead_letters("work").expect("dl");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, "Bad");
    // Duplicate history survives too.
    assert_eq!(
        q.send_at("work", msg("m1"), t0() + secs(2)).expect("send"),
        SendOutcome::Duplicate
    );
    // Sequence numbers keep increasing.
    let SendOutcome::Enqueued { sequence_number } =
        q.send_at("work", msg("m3"), t0() + secs(2)).expect("send")
    else {
        panic!("m3 should be enqueued");
    };
    assert_eq!(sequence_number, 3);
}

#[test]
fn reopen_dead_letters_messages_whose_count_is_spent() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = LocalQueue::open(dir.path(), options(1)).expect("open");
        q.send_at("work", msg("m1"), t0()).expect("send");
        let _ = q.receive_at("work", t0()).expect("rx").expect("msg");
    }
    let q = LocalQueue::open(dir.path(), options(1)).expect("reopen");
    assert!(q.receive("work").expect("rx").is_none());
    let dl = q.dead_letters("work").expect("dl");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
}

#[test]
fn queue_names_follow_service_bus_rules() {
    assert_eq!(validate_queue_name("Backup-VM").expect("ok"), "backup-vm");
    assert!(validate_queue_name("a.b_c-1").is_ok());
    for (bad, rule_part) in [
        ("", "1 to 260"),
        ("-x", "start and end"),
        ("x_", "start and end"),
        ("a/b", "only letters"),
        ("a b", "only letters"),
    ] {
        let err = validate_queue_name(bad).expect_err(bad).to_string();
        assert!(err.contains(rule_part), "{bad:?}: {err}");
    }
    assert!(validate_queue_name(&"a".repeat(261)).is_err());
}

#[test]
fn sending_with_invalid_queue_name_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(10)).expect("open");
    assert!(matches!(
        q.send("bad name", msg("m")),
        Err(LocalQueueError::InvalidQueueName { .. })
    ));
}

#[test]
fn renew_extends_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(
        dir.path(),
        LocalQueueOptions {
            lock_duration: Duration::from_millis(300),
            ..options(10)
        },
    )
    .expect("open");
    q.send("work", msg("m1")).expect("send");
    let r = q.receive("work").expect("rx").expect("msg");
    let until = q.renew_lock("work", r.lock_token).expect("renew");
    assert!(until >= r.locked_until);
    std::thread::sleep(Duration::from_millis(350));
    assert!(q.renew_lock("work", r.lock_token).is_err());
}

/// Sends `ids` and moves each to the dead-letter list in that order: `exhaust` ones by abandoning
/// them past the max delivery count of 1, the others with reason "Bad".
fn dead_lettered(ids: &[(&str, bool)]) -> (tempfile::TempDir, LocalQueue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = LocalQueue::open(dir.path(), options(1)).expect("open");
    for (id, exhaust) in ids {
        q.send_at("work", msg(id), t0()).expect("send");
        let r = q.receive_at("work", t0()).expect("rx").expect("msg");
        if *exhaust {
            let outcome = q.abandon_at("work", r.lock_token, t0()).expect("abandon");
            assert_eq!(outcome, AbandonOutcome::DeadLettered);
        } else {
            q.dead_letter_at("work", r.lock_token, "Bad", "why", t0())
                .expect("dead-letter");
        }
    }
    (dir, q)
}

#[test]
fn dead_letter_receive_takes_oldest_unlocked_and_counts() {
    let (_dir, q) = dead_lettered(&[("m1", true), ("m2", false)]);
    let r1 = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m1");
    assert_eq!(r1.dead_letter.message.message_id, "m1");
    assert_eq!(r1.dead_letter.reason, MAX_DELIVERY_COUNT_EXCEEDED);
    assert_eq!(r1.dead_letter.receive_count, 1);
    assert!(!r1.dead_letter.left_by_receiver);
    assert_eq!(r1.locked_until, t0() + secs(60));
    // m1 is locked: skipped.
    let r2 = q
        .receive_dead_letter_at("work", t0() + secs(1))
        .expect("rx")
        .expect("m2");
    assert_eq!(r2.dead_letter.message.message_id, "m2");
    assert_eq!(r2.dead_letter.reason, "Bad");
    assert!(q
        .receive_dead_letter_at("work", t0() + secs(2))
        .expect("rx")
        .is_none());
    assert_eq!(q.dead_letters("work").expect("dl")[0].receive_count, 1);
    // An unknown queue has no dead letters.
    assert!(q.receive_dead_letter("nothing").expect("rx").is_none());
}

#[test]
fn complete_dead_letter_removes_it_and_needs_the_lock() {
    let (_dir, q) = dead_lettered(&[("m1", true), ("m2", true)]);
    let r = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m1");
    let seq = r.dead_letter.message.sequence_number;
    let lock_lost =
        |res: Result<(), LocalQueueError>| matches!(res, Err(LocalQueueError::LockLost { .. }));
    assert!(lock_lost(q.complete_dead_letter_at(
        "work",
        seq,
        Uuid::new_v4(),
        t0()
    )));
    assert!(lock_lost(q.complete_dead_letter_at(
        "work",
        seq + 1,
        r.lock_token,
        t0()
    )));
    q.complete_dead_letter_at("work", seq, r.lock_token, t0() + secs(1))
        .expect("complete");
    let left = q.dead_letters("work").expect("dl");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message.message_id, "m2");
    // Gone: the same token no longer settles anything.
    assert!(lock_lost(q.complete_dead_letter_at(
        "work",
        seq,
        r.lock_token,
        t0() + secs(2)
    )));
    assert!(lock_lost(q.unlock_dead_letter_at(
        "work",
        seq,
        r.lock_token,
        t0() + secs(2)
    )));
}

#[test]
fn unlock_dead_letter_keeps_it_marked_and_available() {
    let (_dir, q) = dead_lettered(&[("m1", true)]);
    let r = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m1");
    let seq = r.dead_letter.message.sequence_number;
    q.unlock_dead_letter_at("work", seq, r.lock_token, t0() + secs(1))
        .expect("unlock");
    assert!(matches!(
        q.unlock_dead_letter_at("work", seq, r.lock_token, t0() + secs(1)),
        Err(LocalQueueError::LockLost { .. })
    ));
    let dl = q.dead_letters("work").expect("dl");
    assert_eq!(dl.len(), 1);
    assert!(dl[0].left_by_receiver);
    let again = q
        .receive_dead_letter_at("work", t0() + secs(2))
        .expect("rx")
        .expect("m1 again");
    assert_eq!(again.dead_letter.receive_count, 2);
    assert!(again.dead_letter.left_by_receiver);
    assert_ne!(again.lock_token, r.lock_token);
}

#[test]
fn expired_dead_letter_lock_makes_it_available_unmarked() {
    let (_dir, q) = dead_lettered(&[("m1", true)]);
    let r = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m1");
    let seq = r.dead_letter.message.sequence_number;
    assert!(q
        .receive_dead_letter_at("work", t0() + secs(59))
        .expect("rx")
        .is_none());
    let again = q
        .receive_dead_letter_at("work", t0() + secs(60))
        .expect("rx")
        .expect("visible after lock expiry");
    assert_eq!(again.dead_letter.receive_count, 2);
    assert!(!again.dead_letter.left_by_receiver, "expiry is no decision");
    assert!(matches!(
        q.unlock_dead_letter_at("work", seq, r.lock_token, t0() + secs(61)),
        Err(LocalQueueError::LockLost { .. })
    ));
    assert!(!q.dead_letters("work").expect("dl")[0].left_by_receiver);
}

#[test]
fn dead_letter_settlement_persists_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let q = LocalQueue::open(dir.path(), options(1)).expect("open");
        for id in ["m1", "m2", "m3"] {
            q.send_at("work", msg(id), t0()).expect("send");
            let r = q.receive_at("work", t0()).expect("rx").expect("msg");
            q.abandon_at("work", r.lock_token, t0()).expect("abandon");
        }
        let r1 = q
            .receive_dead_letter_at("work", t0())
            .expect("rx")
            .expect("m1");
        let r2 = q
            .receive_dead_letter_at("work", t0())
            .expect("rx")
            .expect("m2");
        let _r3 = q
            .receive_dead_letter_at("work", t0())
            .expect("rx")
            .expect("m3");
        q.complete_dead_letter_at(
            "work",
            r1.dead_letter.message.sequence_number,
            r1.lock_token,
            t0(),
        )
        .expect("complete");
        q.unlock_dead_letter_at(
            "work",
            r2.dead_letter.message.sequence_number,
            r2.lock_token,
            t0(),
        )
        .expect("unlock");
        // Dropped while m3 is locked.
    }
    let q = LocalQueue::open(dir.path(), options(1)).expect("reopen");
    let dl = q.dead_letters("work").expect("dl");
    let summary: Vec<(&str, u32, bool)> = dl
        .iter()
        .map(|d| {
            (
                d.message.message_id.as_str(),
                d.receive_count,
                d.left_by_receiver,
            )
        })
        .collect();
    assert_eq!(summary, vec![("m2", 1, true), ("m3", 1, false)]);
    // The lock on m3 died with the process.
    let r = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m2");
    assert_eq!(r.dead_letter.receive_count, 2);
    let r = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m3");
    assert_eq!(r.dead_letter.receive_count, 2);
}

#[test]
fn snapshot_without_dead_letter_receiver_fields_loads_with_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (old, q) = dead_lettered(&[("m1", true)]);
        drop(q);
        let file = old.path().join("work.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&fs::read(&file).expect("read")).expect("json");
        let dl = v["dead_letters"][0].as_object_mut().expect("dead letter");
        assert!(dl.remove("receive_count").is_some());
        assert!(dl.remove("left_by_receiver").is_some());
        fs::write(dir.path().join("work.json"), v.to_string()).expect("write");
    }
    let q = LocalQueue::open(dir.path(), options(1)).expect("open old snapshot");
    let dl = q.dead_letters("work").expect("dl");
    assert_eq!((dl[0].receive_count, dl[0].left_by_receiver), (0, false));
}

#[test]
fn stats_count_dead_letters_awaiting_redrive() {
    let (_dir, q) = dead_lettered(&[("m1", true), ("poison", false), ("m2", true)]);
    let awaiting = |at| {
        q.stats_at("work", at)
            .expect("stats")
            .dead_letters_awaiting_redrive
    };
    // "poison" was dead-lettered by the app: nothing to redrive.
    assert_eq!(awaiting(t0()), 2);
    let r1 = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m1");
    assert_eq!(awaiting(t0()), 2, "locked now: a decision is pending");
    q.unlock_dead_letter_at(
        "work",
        r1.dead_letter.message.sequence_number,
        r1.lock_token,
        t0(),
    )
    .expect("unlock");
    assert_eq!(awaiting(t0()), 1, "m1 left on purpose");
    // m1 again (locked although left before), then poison, then m2.
    let r1 = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m1");
    assert_eq!(r1.dead_letter.message.message_id, "m1");
    assert_eq!(awaiting(t0()), 2);
    let _poison = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("poison");
    let r2 = q
        .receive_dead_letter_at("work", t0())
        .expect("rx")
        .expect("m2");
    q.complete_dead_letter_at(
        "work",
        r2.dead_letter.message.sequence_number,
        r2.lock_token,
        t0(),
    )
    .expect("complete");
    assert_eq!(awaiting(t0()), 1, "m1 still locked");
    // m1's lock expires: left_by_receiver from the earlier unlock still holds.
    assert_eq!(awaiting(t0() + secs(60)), 0);
    let stats = q.stats_at("work", t0() + secs(60)).expect("stats");
    assert_eq!(stats.dead_lettered, 2);
}
