//! The local Service Bus endpoint speaks the REST "Send Message" wire format.

use ade_backup_functions::local::queue::{LocalQueue, LocalQueueOptions};
use ade_backup_functions::local::sb_endpoint;

async fn start() -> (tempfile::TempDir, LocalQueue, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = LocalQueue::open(dir.path(), LocalQueueOptions::default()).expect("open");
    let (url, _task) = sb_endpoint::serve(queue.clone(), 0).await.expect("serve");
    (dir, queue, url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

#[tokio::test]
async fn send_parses_broker_properties_and_custom_properties() {
    let (_dir, queue, url) = start().await;
    let resp = client()
        .post(format!("{url}backup-vm/messages?timeout=60&api-version=2015-01"))
        .header("Authorization", "Bearer any-token")
        .header("Content-Type", "application/json")
        .header(
            "BrokerProperties",
            r#"{"MessageId":"op-1","CorrelationId":"ticket-9","Label":"M1","TimeToLive":10,"ScheduledEnqueueTimeUtc":"Sun, 06 Nov 2044 08:49:37 GMT"}"#,
        )
        .header("traceparent", r#""00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01""#)
        .header("Priority", "High")
        .header("Attempt", "3")
        .body(r#"{"vm":"x"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 201);

    let messages = queue.messages("backup-vm").expect("list");
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.message_id, "op-1");
    assert_eq!(m.correlation_id.as_deref(), Some("ticket-9"));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.body, br#"{"vm":"x"}"#.to_vec());
    assert_eq!(
        m.scheduled_enqueue_time.map(|t| t.to_rfc3339()),
        Some("2044-11-06T08:49:37+00:00".to_string())
    );
    assert_eq!(
        m.properties.get("traceparent").map(String::as_str),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        "JSON-quoted string values are unquoted"
    );
    assert_eq!(
        m.properties.get("priority").map(String::as_str),
        Some("High")
    );
    assert_eq!(m.properties.get("attempt").map(String::as_str), Some("3"));
    assert!(!m.properties.contains_key("authorization"));
    assert!(!m.properties.contains_key("brokerproperties"));
    assert!(!m.properties.contains_key("content-type"));
    // Scheduled in 2044: not visible yet.
    assert!(queue.receive("backup-vm").expect("receive").is_none());
}

#[tokio::test]
async fn duplicate_message_id_is_accepted_and_dropped() {
    let (_dir, queue, url) = start().await;
    for _ in 0..2 {
        let resp = client()
            .post(format!("{url}work/messages"))
            .header("Authorization", "Bearer t")
            .header("BrokerProperties", r#"{"MessageId":"same"}"#)
            .body("x")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 201);
    }
    assert_eq!(queue.messages("work").expect("list").len(), 1);
}

#[tokio::test]
async fn missing_or_foreign_authorization_is_401() {
    let (_dir, queue, url) = start().await;
    let no_auth = client()
        .post(format!("{url}work/messages"))
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(no_auth.status(), 401);
    let basic = client()
        .post(format!("{url}work/messages"))
        .header("Authorization", "Basic dXNlcjpwdw==")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(basic.status(), 401);
    let sas = client()
        .post(format!("{url}work/messages"))
        .header(
            "Authorization",
            "SharedAccessSignature sr=ns&sig=s&se=1&skn=k",
        )
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(sas.status(), 201);
    assert_eq!(queue.messages("work").expect("list").len(), 1);
}

#[tokio::test]
async fn invalid_queue_name_is_400_naming_the_rule() {
    let (_dir, queue, url) = start().await;
    let resp = client()
        .post(format!("{url}-bad/messages"))
        .header("Authorization", "Bearer t")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.expect("body");
    assert!(
        text.contains("must start and end with a letter or digit"),
        "{text}"
    );
    let resp = client()
        .post(format!("{url}bad%20name/messages"))
        .header("Authorization", "Bearer t")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    assert!(resp
        .text()
        .await
        .expect("body")
        .contains("only letters, digits, periods, hyphens and underscores"));
    assert!(queue.queue_names().is_empty());
}

#[tokio::test]
async fn bad_broker_properties_are_400_naming_the_field() {
    let (_dir, _queue, url) = start().await;
    for (header, expected) in [
        ("not json", "not valid JSON"),
        (r#"["a"]"#, "must be a JSON object"),
        (r#"{"MessageId":5}"#, "MessageId must be a string"),
        (
            r#"{"ScheduledEnqueueTimeUtc":"2044-11-06T08:49:37Z"}"#,
            "ScheduledEnqueueTimeUtc",
        ),
    ] {
        let resp = client()
            .post(format!("{url}work/messages"))
            .header("Authorization", "Bearer t")
            .header("BrokerProperties", header)
            .body("x")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400, "{header}");
        let text = resp.text().await.expect("body");
        assert!(text.contains(expected), "{header}: {text}");
    }
}

#[tokio::test]
async fn oversized_message_is_rejected_like_standard_tier() {
    let (_dir, queue, url) = start().await;
    let resp = client()
        .post(format!("{url}work/messages"))
        .header("Authorization", "Bearer t")
        .body(vec![b'a'; sb_endpoint::MAX_MESSAGE_BYTES + 1])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 403);
    assert!(queue.messages("work").expect("list").is_empty());
}
