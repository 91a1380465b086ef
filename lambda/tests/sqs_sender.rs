//! `SqsSender` against moto: a follow-up due in 20 minutes waits the 15-minute maximum and
//! carries its due time (the next hop happens on receipt, see `lambda_binary`), FIFO queues
//! deduplicate by the deterministic id and refuse per-message delays, and a queue outside the
//! map is a typed error; SQS's own failures name SQS and keep the SDK's error as their source.

use ade_backup_lambda::queues::QueueMap;
use ade_backup_lambda::sqs_sender::{attr, SqsSender};
use ade_backup_shared::messaging::{Broker, MessageSender, MessagingError, OutboundMessage};
use ade_backup_test_support::moto::Moto;
use ade_backup_test_support::sqs_event_source::{receive, sqs_client};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::Utc;
use serde_json::json;

async fn queue_counts(client: &aws_sdk_sqs::Client, url: &str) -> (String, String) {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let attrs = out.attributes().expect("attributes");
    let get = |k: QueueAttributeName| attrs.get(&k).cloned().unwrap_or_default();
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    )
}

#[tokio::test]
async fn long_delays_wait_fifteen_minutes_and_fifo_queues_deduplicate() {
    let moto = Moto::start();
    let client = sqs_client(&moto);
    let standard = client
        .create_queue()
        .queue_name("backup-vm")
        .send()
        .await
        .expect("queue")
        .queue_url()
        .expect("url")
        .to_string();
    let fifo = client
        .create_queue()
        .queue_name("events.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("fifo queue")
        .queue_url()
        .expect("url")
        .to_string();
    let map =
        QueueMap::parse(&json!({"backup-vm": standard, "vm-encryption-events": fifo}).to_string())
            .expect("map");
    let sender = SqsSender::new(client.clone(), map);

    // 20 minutes ahead: sent now with the 15-minute maximum delay, due time attached.
    let due = Utc::now() + chrono::Duration::minutes(20);
    let later = OutboundMessage::json("backup-vm", "poll-1", &json!({"n": 1}))
        .expect("json")
        .scheduled_at(due);
    sender.send(later).await.expect("send the delayed message");
    assert_eq!(
        queue_counts(&client, &standard).await,
        ("0".to_string(), "1".to_string()),
        "the message is delayed, not visible"
    );

    // FIFO: the same logical message twice is one message.
    for _ in 0..2 {
        let m =
            OutboundMessage::json("vm-encryption-events", "evt-1", &json!({"e": 1})).expect("json");
        sender.send(m).await.expect("send to FIFO");
    }
    let got = receive(&client, &fifo, 1).await;
    assert_eq!(got.len(), 1, "deduplicated by MessageDeduplicationId");
    let id = got[0]
        .message_attributes()
        .and_then(|a| a.get(attr::MESSAGE_ID))
        .and_then(|v| v.string_value());
    assert_eq!(id, Some("evt-1"));

    // FIFO queues take no per-message delay: refused before anything is sent.
    let scheduled = OutboundMessage::json("vm-encryption-events", "evt-2", &json!({}))
        .expect("json")
        .scheduled_at(due);
    match sender.send(scheduled).await {
        Err(MessagingError::InvalidQueue { queue, rule }) => {
            assert_eq!(queue, "vm-encryption-events");
            assert!(rule.contains("FIFO"), "{rule}");
        }
        other => panic!("expected InvalidQueue, got {other:?}"),
    }
    let unknown = OutboundMessage::json("elsewhere", "x", &json!({})).expect("json");
    assert!(matches!(
        sender.send(unknown).await,
        Err(MessagingError::InvalidQueue { .. })
    ));
}

/// The error names SQS (never Service Bus), says what was sent where, and keeps the SDK's error.
fn assert_sqs_error(err: &MessagingError) {
    assert_eq!(err.broker(), Some(Broker::Sqs), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("SQS "), "{text}");
    assert!(text.contains("SendMessage to backup-vm"), "{text}");
    assert!(!text.contains("Service Bus"), "{text}");
    assert!(std::error::Error::source(err).is_some(), "{err:?}");
}

#[tokio::test]
async fn sqs_failures_name_sqs_and_keep_their_source() {
    let moto = Moto::start();
    let client = sqs_client(&moto);
    // A mapped queue that does not exist: SQS answers with a client error.
    let missing = format!("{}/123456789012/no-such-queue", moto.endpoint());
    let map = QueueMap::parse(&json!({ "backup-vm": missing }).to_string()).expect("map");
    let message = || OutboundMessage::json("backup-vm", "m-1", &json!({})).expect("json");
    let err = SqsSender::new(client.clone(), map.clone())
        .send(message())
        .await
        .expect_err("no such queue");
    assert!(
        matches!(err, MessagingError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert_sqs_error(&err);

    // Nothing listening: a dispatch failure, transient.
    let unreachable = aws_sdk_sqs::Client::from_conf(
        client
            .config()
            .to_builder()
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let err = SqsSender::new(unreachable, map)
        .send(message())
        .await
        .expect_err("unreachable");
    assert!(matches!(err, MessagingError::Transient { .. }), "{err:?}");
    assert_sqs_error(&err);
}
