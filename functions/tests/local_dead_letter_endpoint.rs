//! The local Service Bus endpoint serves the REST runtime API on dead-letter sub-queues
//! (`{queue}/$DeadLetterQueue`): peek-lock the head, delete, unlock.

use ade_backup_functions::local::queue::{LocalQueue, LocalQueueOptions, NewMessage};
use ade_backup_functions::local::sb_endpoint::{self, parse_rfc1123};
use reqwest::{Client, Response};
use serde_json::Value;
use std::collections::BTreeMap;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

async fn start() -> (tempfile::TempDir, LocalQueue, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LocalQueueOptions {
        max_delivery_count: 1,
        ..LocalQueueOptions::default()
    };
    let queue = LocalQueue::open(dir.path(), options).expect("open");
    let (url, _task) = sb_endpoint::serve(queue.clone(), 0).await.expect("serve");
    (dir, queue, url)
}

fn client() -> Client {
    Client::builder().no_proxy().build().expect("client")
}

/// One delivery, abandoned: with a max delivery count of 1, the broker dead-letters it.
fn exhaust(queue: &LocalQueue, name: &str) {
    let r = queue.receive(name).expect("receive").expect("a message");
    queue.abandon(name, r.lock_token).expect("abandon");
}

async fn receive_head(url: &str, path: &str) -> Response {
    client()
        .post(format!("{url}{path}/messages/head?timeout=60"))
        .header("Authorization", "Bearer local")
        .send()
        .await
        .expect("peek-lock")
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().expect("ASCII"))
}

fn broker_properties(resp: &Response) -> Value {
    serde_json::from_str(header(resp, "BrokerProperties").expect("BrokerProperties"))
        .expect("BrokerProperties is JSON")
}

async fn settle(method: reqwest::Method, location: &str) -> u16 {
    client()
        .request(method, location)
        .header("Authorization", "Bearer local")
        .send()
        .await
        .expect("settle")
        .status()
        .as_u16()
}

#[tokio::test]
async fn dead_letter_is_peek_locked_unlocked_and_deleted_over_http() {
    let (_dir, queue, url) = start().await;
    let sent = client()
        .post(format!("{url}work/messages"))
        .header("Authorization", "Bearer local")
        .header("Content-Type", "application/json")
        .header(
            "BrokerProperties",
            r#"{"MessageId":"op-1","CorrelationId":"ticket-9"}"#,
        )
        .header("traceparent", format!("\"{TRACEPARENT}\""))
        .body(r#"{"vm":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(sent.status(), 201);
    exhaust(&queue, "work");

    let resp = receive_head(&url, "work/$DeadLetterQueue").await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(
        header(&resp, "traceparent"),
        Some(format!("\"{TRACEPARENT}\"").as_str())
    );
    assert_eq!(
        header(&resp, "DeadLetterReason"),
        Some(r#""MaxDeliveryCountExceeded""#)
    );
    let description: String =
        serde_json::from_str(header(&resp, "DeadLetterErrorDescription").expect("description"))
            .expect("JSON string");
    assert!(description.contains("1 delivery attempts"), "{description}");
    let broker = broker_properties(&resp);
    assert_eq!(broker["MessageId"], "op-1");
    assert_eq!(broker["CorrelationId"], "ticket-9");
    assert_eq!(broker["SequenceNumber"], 1);
    assert_eq!(broker["DeliveryCount"], 1);
    let token = broker["LockToken"].as_str().expect("LockToken").to_string();
    assert!(uuid::Uuid::parse_str(&token).is_ok(), "{token}");
    let locked_until = parse_rfc1123(broker["LockedUntilUtc"].as_str().expect("LockedUntilUtc"))
        .expect("RFC 1123");
    assert!(locked_until > chrono::Utc::now());
    assert!(parse_rfc1123(broker["EnqueuedTimeUtc"].as_str().expect("EnqueuedTimeUtc")).is_some());
    let location = header(&resp, "Location").expect("Location").to_string();
    assert_eq!(
        location,
        format!("{url}work/$DeadLetterQueue/messages/1/{token}")
    );
    assert_eq!(
        resp.bytes().await.expect("body"),
        r#"{"vm":"x"}"#.as_bytes()
    );

    // Locked: nothing else to hand out.
    assert_eq!(
        receive_head(&url, "work/$DeadLetterQueue").await.status(),
        204
    );

    // Unlock: it stays, marked as left by a receiver, and comes back with a new lock.
    assert_eq!(settle(reqwest::Method::PUT, &location).await, 200);
    assert!(queue.dead_letters("work").expect("dl")[0].left_by_receiver);
    let again = receive_head(&url, "work/$DeadLetterQueue").await;
    assert_eq!(again.status(), 201);
    let broker = broker_properties(&again);
    assert_eq!(broker["DeliveryCount"], 2);
    let location_again = header(&again, "Location").expect("Location").to_string();
    assert_ne!(location_again, location);

    // The stale lock settles nothing; the current one deletes it.
    assert_eq!(settle(reqwest::Method::DELETE, &location).await, 404);
    assert_eq!(settle(reqwest::Method::DELETE, &location_again).await, 200);
    assert!(queue.dead_letters("work").expect("dl").is_empty());
    assert_eq!(
        receive_head(&url, "work/$DeadLetterQueue").await.status(),
        204
    );
    assert_eq!(settle(reqwest::Method::PUT, &location_again).await, 404);
}

#[tokio::test]
async fn properties_become_json_string_headers_and_unusable_names_are_skipped() {
    let (_dir, queue, url) = start().await;
    let properties = BTreeMap::from([
        ("Note".to_string(), "été \"quoted\"".to_string()),
        ("bad name".to_string(), "skipped".to_string()),
        ("content-length".to_string(), "999".to_string()),
    ]);
    queue
        .send(
            "work",
            NewMessage {
                message_id: Some("m1".into()),
                body: b"payload".to_vec(),
                properties,
                ..NewMessage::default()
            },
        )
        .expect("send");
    let r = queue.receive("work").expect("rx").expect("msg");
    queue
        .dead_letter("work", r.lock_token, "InvalidPayload", "field vmId missing")
        .expect("dead-letter");

    let resp = receive_head(&url, "work/$DeadLetterQueue").await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "content-type"), None);
    let note: String =
        serde_json::from_str(header(&resp, "note").expect("note")).expect("JSON string");
    assert_eq!(note, "été \"quoted\"");
    assert!(header(&resp, "bad name").is_none());
    assert_eq!(header(&resp, "content-length"), Some("7"));
    assert_eq!(
        header(&resp, "deadletterreason"),
        Some(r#""InvalidPayload""#)
    );
    assert_eq!(
        header(&resp, "deadlettererrordescription"),
        Some(r#""field vmId missing""#)
    );
    assert!(broker_properties(&resp).get("CorrelationId").is_none());
    assert_eq!(resp.bytes().await.expect("body"), b"payload".as_slice());
}

#[tokio::test]
async fn sub_queue_segment_is_matched_in_any_case_or_encoding() {
    let (_dir, queue, url) = start().await;
    for id in ["a", "b"] {
        queue
            .send(
                "work",
                NewMessage {
                    message_id: Some(id.into()),
                    ..NewMessage::default()
                },
            )
            .expect("send");
        exhaust(&queue, "work");
    }
    assert_eq!(
        receive_head(&url, "Work/$deadletterqueue").await.status(),
        201
    );
    assert_eq!(
        receive_head(&url, "work/%24DeadLetterQueue").await.status(),
        201
    );
    assert_eq!(
        receive_head(&url, "work/$DeadLetterQueue").await.status(),
        204
    );
    assert_eq!(receive_head(&url, "work/$Transfer").await.status(), 404);
    // A queue that was never used has an empty dead-letter sub-queue.
    assert_eq!(
        receive_head(&url, "other/$DeadLetterQueue").await.status(),
        204
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_right_status() {
    let (_dir, queue, url) = start().await;
    queue.send("work", NewMessage::default()).expect("send");
    exhaust(&queue, "work");
    let token = uuid::Uuid::new_v4();
    let path = format!("{url}work/$DeadLetterQueue/messages/1/{token}");

    // No or foreign authorization: 401 before anything else.
    let head = format!("{url}work/$DeadLetterQueue/messages/head");
    for (method, target) in [
        (reqwest::Method::POST, head.as_str()),
        (reqwest::Method::DELETE, path.as_str()),
        (reqwest::Method::PUT, path.as_str()),
    ] {
        let resp = client()
            .request(method.clone(), target)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401, "{method} {target}");
        let resp = client()
            .request(method.clone(), target)
            .header("Authorization", "Basic dXNlcjpwdw==")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401, "{method} {target} with Basic");
    }
    let sas = client()
        .post(&head)
        .header(
            "Authorization",
            "SharedAccessSignature sr=ns&sig=s&se=1&skn=k",
        )
        .send()
        .await
        .expect("request");
    assert_eq!(sas.status(), 201);

    // Not the lock: 404. Not a sequence number / lock token / queue name: 400.
    assert_eq!(settle(reqwest::Method::DELETE, &path).await, 404);
    assert_eq!(settle(reqwest::Method::PUT, &path).await, 404);
    let bad_seq = format!("{url}work/$DeadLetterQueue/messages/op-1/{token}");
    assert_eq!(settle(reqwest::Method::DELETE, &bad_seq).await, 400);
    let bad_token = format!("{url}work/$DeadLetterQueue/messages/1/not-a-uuid");
    assert_eq!(settle(reqwest::Method::PUT, &bad_token).await, 400);
    let bad_queue = format!("{url}-bad/$DeadLetterQueue/messages/1/{token}");
    assert_eq!(settle(reqwest::Method::DELETE, &bad_queue).await, 400);
    assert_eq!(
        receive_head(&url, "-bad/$DeadLetterQueue").await.status(),
        400
    );
    assert_eq!(queue.dead_letters("work").expect("dl").len(), 1);
}
