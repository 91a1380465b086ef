//! Wire-format and fault-injection tests for `ServiceBusDeadLetters` against a wiremock server
//! standing in for the Service Bus REST endpoint (or the embedded local queue).

mod support;

use ade_backup_shared::credential::{TokenSource, SERVICE_BUS_SCOPE};
use ade_backup_shared::messaging::dead_letters::DeadLetterOptions;
use ade_backup_shared::messaging::{
    Broker, DeadLetterReceiver, DeadLetteredMessage, MessagingError, ServiceBusDeadLetters,
    DEAD_LETTER_DESCRIPTION, DEAD_LETTER_REASON,
};
use chrono::{TimeZone, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::wire::{header_str, single_request, RecordingToken, TOKEN};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const QUEUE: &str = "protect-vm";
const LOCK: &str = "7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547";
const SEQ: i64 = 1_234_567;
const HEAD_PATH: &str = "/protect-vm/$DeadLetterQueue/messages/head";

fn lock_path() -> String {
    format!("/{QUEUE}/$DeadLetterQueue/messages/{SEQ}/{LOCK}")
}

fn client(server: &MockServer, token: Arc<dyn TokenSource>) -> ServiceBusDeadLetters {
    client_with(server, token, DeadLetterOptions::default())
}

fn client_with(
    server: &MockServer,
    token: Arc<dyn TokenSource>,
    options: DeadLetterOptions,
) -> ServiceBusDeadLetters {
    let endpoint = url::Url::parse(&format!("{}/", server.uri())).expect("endpoint url");
    ServiceBusDeadLetters::new(endpoint, token, options).expect("client")
}

fn broker_properties() -> serde_json::Value {
    serde_json::json!({
        "DeliveryCount": 10,
        "EnqueuedSequenceNumber": 0,
        "EnqueuedTimeUtc": "Tue, 02 Jan 2024 03:04:05 GMT",
        "Label": "protect",
        "LockToken": LOCK,
        "LockedUntilUtc": "Tue, 02 Jan 2024 04:05:06 GMT",
        "MessageId": "protect:sub1:rg1:vm1:2024-01-02",
        "CorrelationId": "ticket-42",
        "SequenceNumber": SEQ,
        "State": "Active",
        "TimeToLive": 1209600,
    })
}

/// A `201` as Service Bus answers a peek-lock on a dead-letter sub-queue.
fn locked_message_response(broker: &serde_json::Value, location: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_raw(br#"{"vm":"vm1"}"#.to_vec(), "application/json")
        .insert_header("BrokerProperties", broker.to_string().as_str())
        .insert_header("Location", location)
        .insert_header("Strict-Transport-Security", "max-age=31536000")
        .insert_header("x-ms-request-id", "5b1ed0cb-1d2d-4b45-8f3a-7c4bc09cbc19")
        .insert_header("Server", "Microsoft-HTTPAPI/2.0")
        .insert_header(DEAD_LETTER_REASON, "\"MaxDeliveryCountExceeded\"")
        .insert_header(
            DEAD_LETTER_DESCRIPTION,
            "\"Message could not be consumed after 10 delivery attempts.\"",
        )
        .insert_header("ticket", "\"T-42\"")
        .insert_header("attempt", "3")
        .insert_header("urgent", "true")
        .insert_header("note", "bare text")
}

fn sample_message() -> DeadLetteredMessage {
    DeadLetteredMessage {
        queue: QUEUE.to_string(),
        message_id: "m-1".to_string(),
        sequence_number: SEQ,
        lock_token: LOCK.to_string(),
        delivery_count: 10,
        correlation_id: None,
        content_type: None,
        enqueued_time: None,
        body: Vec::new(),
        properties: BTreeMap::new(),
    }
}

#[tokio::test]
async fn receive_peek_locks_the_head_and_parses_every_field() {
    let server = MockServer::start().await;
    let location = format!("{}{}", server.uri(), lock_path());
    Mock::given(method("POST"))
        .and(path(HEAD_PATH))
        .and(query_param("timeout", "0"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(locked_message_response(&broker_properties(), &location))
        .expect(1)
        .mount(&server)
        .await;
    let token = RecordingToken::ok();

    let message = client(&server, token.clone())
        .receive(QUEUE)
        .await
        .expect("201 is a message")
        .expect("Some");

    assert_eq!(token.scopes(), vec![SERVICE_BUS_SCOPE.to_string()]);
    let req = single_request(&server).await;
    assert_eq!(req.method.as_str(), "POST");
    assert_eq!(req.url.path(), HEAD_PATH, "the $ is sent unencoded");
    assert_eq!(req.url.query(), Some("timeout=0"));
    assert!(req.body.is_empty());
    // Service Bus answers a POST without a length with 411 Length Required.
    assert_eq!(header_str(&req, "content-length"), Some("0"));
    assert_eq!(req.headers.get_all("content-length").iter().count(), 1);

    let expected = DeadLetteredMessage {
        queue: QUEUE.to_string(),
        message_id: "protect:sub1:rg1:vm1:2024-01-02".to_string(),
        sequence_number: SEQ,
        lock_token: LOCK.to_string(),
        delivery_count: 10,
        correlation_id: Some("ticket-42".to_string()),
        content_type: Some("application/json".to_string()),
        enqueued_time: Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single(),
        body: br#"{"vm":"vm1"}"#.to_vec(),
        properties: BTreeMap::from(
            [
                ("deadletterreason", "MaxDeliveryCountExceeded"),
                (
                    "deadlettererrordescription",
                    "Message could not be consumed after 10 delivery attempts.",
                ),
                ("ticket", "T-42"),
                ("attempt", "3"),
                ("urgent", "true"),
                ("note", "bare text"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        ),
    };
    assert_eq!(message, expected);
    assert_eq!(message.reason(), Some("MaxDeliveryCountExceeded"));
    assert_eq!(
        message.description(),
        Some("Message could not be consumed after 10 delivery attempts.")
    );
    assert_eq!(message.property("Ticket"), Some("T-42"));
}

#[tokio::test]
async fn receive_no_content_is_none() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HEAD_PATH))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;

    let received = client(&server, RecordingToken::ok())
        .receive(QUEUE)
        .await
        .expect("204 is not an error");
    assert_eq!(received, None);
}

#[tokio::test]
async fn complete_deletes_at_the_lock_url() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(lock_path()))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let token = RecordingToken::ok();

    client(&server, token.clone())
        .complete(&sample_message())
        .await
        .expect("200 is success");

    assert_eq!(token.scopes(), vec![SERVICE_BUS_SCOPE.to_string()]);
    let req = single_request(&server).await;
    assert_eq!(req.method.as_str(), "DELETE");
    assert_eq!(req.url.path(), lock_path());
    assert_eq!(req.url.query(), None);
}

#[tokio::test]
async fn unlock_puts_at_the_lock_url() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(lock_path()))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    client(&server, RecordingToken::ok())
        .unlock(&sample_message())
        .await
        .expect("200 is success");

    let req = single_request(&server).await;
    assert_eq!(req.method.as_str(), "PUT");
    assert_eq!(req.url.path(), lock_path());
    assert!(req.body.is_empty());
}

#[tokio::test]
async fn settling_a_lost_lock_is_lock_lost() {
    for status in [404u16, 410] {
        for settle_method in ["DELETE", "PUT"] {
            let server = MockServer::start().await;
            Mock::given(method(settle_method))
                .and(path(lock_path()))
                .respond_with(ResponseTemplate::new(status).set_body_string(
                    "<Error><Code>404</Code><Detail>The lock supplied is invalid. TrackingId:t1</Detail></Error>",
                ))
                .expect(1)
                .mount(&server)
                .await;
            let c = client(&server, RecordingToken::ok());
            let message = sample_message();
            let err = if settle_method == "DELETE" {
                c.complete(&message).await
            } else {
                c.unlock(&message).await
            }
            .expect_err("lock gone");
            match err {
                MessagingError::LockLost {
                    broker: Broker::ServiceBus,
                    detail,
                } => {
                    assert!(detail.contains(&status.to_string()), "{detail}");
                    assert!(detail.contains("The lock supplied is invalid"), "{detail}");
                }
                other => panic!("{settle_method} {status}: expected LockLost, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn server_errors_and_throttling_are_transient_and_not_retried() {
    for status in [500u16, 503, 429] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string("Server busy"))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("DELETE"))
            .respond_with(ResponseTemplate::new(status).set_body_string("Server busy"))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(status).set_body_string("Server busy"))
            .expect(1)
            .mount(&server)
            .await;
        let errors = errors_of_every_call(&client(&server, RecordingToken::ok())).await;
        for err in errors {
            match err {
                MessagingError::Transient {
                    broker: Broker::ServiceBus,
                    detail,
                    ..
                } => {
                    assert!(detail.contains(&status.to_string()), "{detail}");
                    assert!(detail.contains("Server busy"), "{detail}");
                }
                other => panic!("{status}: expected Transient, got {other:?}"),
            }
        }
        // `.expect(1)` on drop proves the client did not retry by itself.
    }
}

/// The error of each call (receive, complete, unlock) against a server that fails them all.
async fn errors_of_every_call(c: &ServiceBusDeadLetters) -> [MessagingError; 3] {
    let message = sample_message();
    [
        c.receive(QUEUE).await.map(|_| ()).expect_err("receive"),
        c.complete(&message).await.expect_err("complete"),
        c.unlock(&message).await.expect_err("unlock"),
    ]
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_auth_without_the_token() {
    for status in [401u16, 403] {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(status).set_body_string(format!(
                "<Error><Code>{status}</Code><Detail>echo Bearer {TOKEN}</Detail></Error>"
            )))
            .mount(&server)
            .await;
        let errors = errors_of_every_call(&client(&server, RecordingToken::ok())).await;
        for err in errors {
            assert!(
                matches!(
                    &err,
                    MessagingError::Auth { broker: Broker::ServiceBus, detail, .. }
                        if detail.contains(&status.to_string())
                ),
                "{status}: expected Auth, got {err:?}"
            );
            assert!(!err.to_string().contains(TOKEN), "{err}");
            assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
        }
    }
}

#[tokio::test]
async fn receive_from_a_missing_queue_is_rejected_not_lock_lost() {
    for status in [404u16, 410, 400] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string(
                "<Error><Code>410</Code><Detail>The messaging entity could not be found.</Detail></Error>",
            ))
            .mount(&server)
            .await;
        let err = client(&server, RecordingToken::ok())
            .receive(QUEUE)
            .await
            .expect_err("fails");
        match err {
            MessagingError::Rejected {
                broker: Broker::ServiceBus,
                status: s,
                body,
                ..
            } => {
                assert_eq!(s, status);
                assert_eq!(body, "The messaging entity could not be found.");
            }
            other => panic!("{status}: expected Rejected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn receive_without_a_lock_token_is_an_error_naming_it() {
    let mut broker = broker_properties();
    broker.as_object_mut().expect("object").remove("LockToken");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(locked_message_response(&broker, "http://127.0.0.1:1/x"))
        .mount(&server)
        .await;

    let err = client(&server, RecordingToken::ok())
        .receive(QUEUE)
        .await
        .expect_err("no lock token");

    match &err {
        MessagingError::Rejected {
            broker: Broker::ServiceBus,
            status: 201,
            body,
            ..
        } => assert!(body.contains("lacks LockToken"), "{body}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(err.to_string().contains("LockToken"), "{err}");
}

#[tokio::test]
async fn receive_without_broker_properties_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("payload"))
        .mount(&server)
        .await;

    let err = client(&server, RecordingToken::ok())
        .receive(QUEUE)
        .await
        .expect_err("no BrokerProperties");
    assert!(
        matches!(&err, MessagingError::Rejected { status: 201, body, .. } if body.contains("BrokerProperties")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_tampered_location_header_is_ignored() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let tampered = format!(
        "{}/steal/$DeadLetterQueue/messages/{SEQ}/{LOCK}",
        elsewhere.uri()
    );
    Mock::given(method("POST"))
        .and(path(HEAD_PATH))
        .respond_with(locked_message_response(&broker_properties(), &tampered))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(lock_path()))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(lock_path()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, RecordingToken::ok());

    let message = c.receive(QUEUE).await.expect("received").expect("Some");
    c.unlock(&message).await.expect("unlocked at the endpoint");
    c.complete(&message)
        .await
        .expect("completed at the endpoint");

    assert!(elsewhere
        .received_requests()
        .await
        .expect("recording")
        .is_empty());
    let methods: Vec<String> = server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path()))
        .collect();
    assert_eq!(
        methods,
        vec![
            format!("POST {HEAD_PATH}"),
            format!("PUT {}", lock_path()),
            format!("DELETE {}", lock_path()),
        ]
    );
}

#[tokio::test]
async fn invalid_lock_tokens_and_queues_fail_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let token = RecordingToken::ok();
    let c = client(&server, token.clone());

    for lock in ["", "not-a-uuid", "../../../other-queue/messages/1", "a%2Fb"] {
        let mut message = sample_message();
        message.lock_token = lock.to_string();
        assert!(
            matches!(c.complete(&message).await, Err(MessagingError::Encode(_))),
            "{lock:?}"
        );
        assert!(
            matches!(c.unlock(&message).await, Err(MessagingError::Encode(_))),
            "{lock:?}"
        );
    }
    let mut message = sample_message();
    message.queue = "../$management".to_string();
    assert!(matches!(
        c.complete(&message).await,
        Err(MessagingError::InvalidQueue { .. })
    ));
    assert!(matches!(
        c.receive("a/b").await,
        Err(MessagingError::InvalidQueue { .. })
    ));
    assert!(token.scopes().is_empty(), "no token requested");
}

#[tokio::test]
async fn timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let options = DeadLetterOptions {
        request_timeout: Duration::from_millis(200),
        ..DeadLetterOptions::default()
    };

    let started = std::time::Instant::now();
    let err = client_with(&server, RecordingToken::ok(), options)
        .receive(QUEUE)
        .await
        .expect_err("times out");

    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timeout honoured"
    );
    match err {
        MessagingError::Transient { detail, .. } => {
            assert!(detail.contains("no response within"), "{detail}")
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let err = ServiceBusDeadLetters::new(
        url::Url::parse("http://ns.servicebus.windows.net/").expect("url"),
        RecordingToken::ok(),
        DeadLetterOptions::default(),
    )
    .expect_err("http off loopback");
    assert!(err.to_string().contains("plain http"), "{err}");
}
