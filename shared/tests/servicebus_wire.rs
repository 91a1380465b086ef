//! Wire-format and fault-injection tests for `ServiceBusSender` against a wiremock server
//! standing in for the Service Bus REST endpoint (or the embedded local queue).

mod support;

use ade_backup_shared::credential::{
    AccessToken, CredentialError, StaticToken, TokenSource, SERVICE_BUS_SCOPE,
};
use ade_backup_shared::messaging::{
    Broker, MessageSender, MessagingError, OutboundMessage, ServiceBusSender,
    ServiceBusSenderOptions,
};
use ade_backup_shared::telemetry::{self, invocation_span, TelemetryOptions};
use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::wire::{header_str, single_request, RecordingToken, TOKEN};
use tracing::Instrument;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn sender(server: &MockServer, token: Arc<dyn TokenSource>) -> ServiceBusSender {
    sender_with(server, token, ServiceBusSenderOptions::default())
}

fn sender_with(
    server: &MockServer,
    token: Arc<dyn TokenSource>,
    options: ServiceBusSenderOptions,
) -> ServiceBusSender {
    let endpoint = url::Url::parse(&format!("{}/", server.uri())).expect("endpoint url");
    ServiceBusSender::new(endpoint, token, options).expect("sender")
}

fn sample_message() -> OutboundMessage {
    OutboundMessage::json(
        "protect-vm",
        "protect:sub1:rg1:vm1:2024-01-02",
        &serde_json::json!({"vm": "vm1", "attempt": 1}),
    )
    .expect("json message")
    .with_correlation_id("ticket-42")
    .scheduled_at(
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .single()
            .expect("date"),
    )
    .with_property("ticket", "T-42")
    .with_property("kind", "say \"hi\"")
}

#[tokio::test]
async fn send_uses_the_documented_wire_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/protect-vm/messages"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let token = RecordingToken::ok();
    let message = sample_message();
    let expected_body = message.body.clone();

    sender(&server, token.clone())
        .send(message)
        .await
        .expect("201 is success");

    assert_eq!(token.scopes(), vec![SERVICE_BUS_SCOPE.to_string()]);
    let req = single_request(&server).await;
    assert_eq!(req.method.as_str(), "POST");
    assert_eq!(req.url.path(), "/protect-vm/messages");
    assert_eq!(req.url.query(), None);
    assert_eq!(
        header_str(&req, "authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(header_str(&req, "content-type"), Some("application/json"));
    assert_eq!(req.body, expected_body);

    let broker: serde_json::Value =
        serde_json::from_str(header_str(&req, "brokerproperties").expect("BrokerProperties"))
            .expect("BrokerProperties is JSON");
    assert_eq!(
        broker,
        serde_json::json!({
            "MessageId": "protect:sub1:rg1:vm1:2024-01-02",
            "CorrelationId": "ticket-42",
            "ScheduledEnqueueTimeUtc": "Tue, 02 Jan 2024 03:04:05 GMT",
        })
    );

    // Application properties: one header each, value a JSON string literal.
    assert_eq!(header_str(&req, "ticket"), Some("\"T-42\""));
    assert_eq!(header_str(&req, "kind"), Some(r#""say \"hi\"""#));
    let traceparent = header_str(&req, "traceparent").expect("traceparent added");
    let unquoted: String =
        serde_json::from_str(traceparent).expect("traceparent is a JSON string literal");
    let parts: Vec<&str> = unquoted.split('-').collect();
    assert_eq!(parts.len(), 4, "{unquoted}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_eq!(parts[2].len(), 16);
    assert_eq!(parts[3], "01");
    assert!(unquoted
        .bytes()
        .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_ne!(parts[1], "0".repeat(32));
}

#[tokio::test]
async fn minimal_message_omits_optional_broker_properties() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let mut message = OutboundMessage::json("q1", "m-1", &"x").expect("message");
    message.content_type = "text/plain; charset=utf-8".to_string();
    message.body = b"raw bytes \x00\xff".to_vec();

    sender(&server, RecordingToken::ok())
        .send(message)
        .await
        .expect("sent");

    let req = single_request(&server).await;
    let broker: serde_json::Value =
        serde_json::from_str(header_str(&req, "brokerproperties").expect("BrokerProperties"))
            .expect("JSON");
    assert_eq!(broker, serde_json::json!({"MessageId": "m-1"}));
    assert_eq!(
        header_str(&req, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(req.body, b"raw bytes \x00\xff".to_vec());
}

#[tokio::test]
async fn existing_traceparent_is_kept_as_is() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let message = OutboundMessage::json("q1", "m-1", &1)
        .expect("message")
        .with_property("traceparent", tp);

    sender(&server, RecordingToken::ok())
        .send(message)
        .await
        .expect("sent");

    let req = single_request(&server).await;
    let values: Vec<_> = req.headers.get_all("traceparent").iter().collect();
    assert_eq!(values.len(), 1, "no second traceparent");
    assert_eq!(values[0].to_str().ok(), Some(format!("\"{tp}\"").as_str()));
}

#[tokio::test]
async fn traceparent_continues_the_invocation_trace() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let subscriber = telemetry::subscriber_with_writer(&TelemetryOptions::default(), std::io::sink)
        .expect("subscriber");
    let _guard = tracing::subscriber::set_default(subscriber);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let inbound = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let sender = sender(&server, RecordingToken::ok());
    let span = invocation_span("protect", "m-0", 1);
    telemetry::continue_trace(&span, |k| (k == "traceparent").then(|| inbound.clone()));

    sender
        .send(OutboundMessage::json("q1", "m-1", &1).expect("message"))
        .instrument(span)
        .await
        .expect("sent");

    let req = single_request(&server).await;
    let tp: String = serde_json::from_str(header_str(&req, "traceparent").expect("traceparent"))
        .expect("quoted");
    assert!(
        tp.starts_with(&format!("00-{trace_id}-")) && tp.ends_with("-01"),
        "{tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the message names the producer span, not the inbound parent: {tp}"
    );
}

#[tokio::test]
async fn unauthorized_maps_to_auth_without_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_string(
            "<Error><Code>401</Code><Detail>InvalidSignature: The token has an invalid signature.</Detail></Error>",
        ))
        .mount(&server)
        .await;

    let err = sender(&server, RecordingToken::ok())
        .send(sample_message())
        .await
        .expect_err("401 fails");

    match &err {
        MessagingError::Auth {
            broker: Broker::ServiceBus,
            detail: msg,
            ..
        } => {
            assert!(msg.contains("401"), "{msg}");
            assert!(msg.contains("InvalidSignature"), "{msg}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert!(!err.to_string().contains(TOKEN));
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[tokio::test]
async fn bad_request_maps_to_rejected_with_status_and_detail() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            "<Error><Code>400</Code><Detail>The value of BrokerProperties is invalid. TrackingId:abc</Detail></Error>",
        ))
        .mount(&server)
        .await;

    let err = sender(&server, RecordingToken::ok())
        .send(sample_message())
        .await
        .expect_err("400 fails");

    match &err {
        MessagingError::Rejected {
            broker: Broker::ServiceBus,
            status,
            body,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(
                body,
                "The value of BrokerProperties is invalid. TrackingId:abc"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.to_string().contains(TOKEN));
}

#[tokio::test]
async fn not_found_and_too_large_are_rejected() {
    for status in [404u16, 410, 413] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let err = sender(&server, RecordingToken::ok())
            .send(sample_message())
            .await
            .expect_err("fails");
        assert!(
            matches!(err, MessagingError::Rejected { status: s, .. } if s == status),
            "{status}: {err:?}"
        );
    }
}

#[tokio::test]
async fn server_busy_and_throttling_are_transient() {
    for status in [503u16, 500, 429] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string("Server busy"))
            .expect(1)
            .mount(&server)
            .await;
        let err = sender(&server, RecordingToken::ok())
            .send(sample_message())
            .await
            .expect_err("fails");
        match err {
            MessagingError::Transient {
                broker: Broker::ServiceBus,
                detail: msg,
                ..
            } => {
                assert!(msg.contains(&status.to_string()), "{msg}");
                assert!(msg.contains("Server busy"), "{msg}");
            }
            other => panic!("{status}: expected Transient, got {other:?}"),
        }
        // `.expect(1)` on drop proves the sender did not retry by itself.
    }
}

#[tokio::test]
async fn timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let options = ServiceBusSenderOptions {
        request_timeout: Duration::from_millis(200),
        ..ServiceBusSenderOptions::default()
    };

    let started = std::time::Instant::now();
    let err = sender_with(&server, RecordingToken::ok(), options)
        .send(sample_message())
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

#[tokio::test]
async fn connection_refused_is_transient() {
    // A socket bound but never listening holds a loopback port that refuses connections for
    // the whole test (a dropped listener's port could be taken by a parallel test's server).
    let holder = tokio::net::TcpSocket::new_v4().expect("socket");
    holder
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let endpoint = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let sender = ServiceBusSender::new(
        endpoint,
        Arc::new(StaticToken(AccessToken::new(TOKEN))),
        ServiceBusSenderOptions::default(),
    )
    .expect("sender");

    let err = sender
        .send(sample_message())
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, MessagingError::Transient { .. }), "{err:?}");
    drop(holder);
}

#[tokio::test]
async fn invalid_queue_names_fail_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&server)
        .await;
    let token = RecordingToken::ok();
    let sender = sender(&server, token.clone());

    for queue in [
        "",
        "../$management",
        "a/b",
        "q?x=1",
        "q#frag",
        "q%2Fx",
        "-leading",
        "trailing.",
        "sp ace",
    ] {
        let mut message = sample_message();
        message.queue = queue.to_string();
        let err = sender.send(message).await.expect_err("invalid queue");
        match err {
            MessagingError::InvalidQueue { queue: q, rule } => {
                assert_eq!(q, queue);
                assert!(!rule.is_empty());
            }
            other => panic!("{queue:?}: expected InvalidQueue, got {other:?}"),
        }
    }
    assert!(token.scopes().is_empty(), "no token requested");
    assert!(server
        .received_requests()
        .await
        .expect("recording")
        .is_empty());
}

#[tokio::test]
async fn token_failure_is_auth_with_a_clear_message_and_no_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .expect(0)
        .mount(&server)
        .await;

    let err = sender(&server, RecordingToken::failing())
        .send(sample_message())
        .await
        .expect_err("no token");

    assert!(
        matches!(err, MessagingError::Auth { .. }),
        "expected Auth, got {err:?}"
    );
    // The message says which broker and what failed; the credential's error is the source.
    let msg = error_chain(&err);
    assert!(
        msg.starts_with("Service Bus authentication failed: no Entra ID token"),
        "{msg}"
    );
    assert!(msg.contains(SERVICE_BUS_SCOPE), "{msg}");
    assert!(msg.contains("no IMDS endpoint"), "{msg}");
    assert!(std::error::Error::source(&err).is_some(), "{err:?}");
}

/// `outer: source: …` (the whole chain, as the handler boundary logs it).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(err), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

#[tokio::test]
async fn each_send_asks_for_a_token() {
    // A cached/refreshing credential is the token source's job; the sender must not hold on to
    // a token that may have expired.
    struct Counting(AtomicUsize);
    #[async_trait]
    impl TokenSource for Counting {
        async fn token(&self, _scope: &str) -> Result<AccessToken, CredentialError> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Ok(AccessToken::new(format!("tok-{n}")))
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer tok-0"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let sender = sender(&server, Arc::new(Counting(AtomicUsize::new(0))));
    sender.send(sample_message()).await.expect("first");
    sender.send(sample_message()).await.expect("second");
}
