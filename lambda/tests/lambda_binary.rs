//! The real `ade-backup-lambda` process behind a local Lambda Runtime API, with moto for SQS and
//! S3: partial batch failures, poison messages (recorded in state and sent to the DLQ with the
//! reason), delay-chain hops, events that are neither SQS nor a schedule, and the Entra
//! credential read from Secrets Manager at start-up.

use ade_backup_lambda::sqs_sender::attr;
use ade_backup_test_support::lambda_runtime_api::InvocationResult;
use ade_backup_test_support::lambda_stack::LambdaStack;
use ade_backup_test_support::serve_process::irrelevant_event;
use ade_backup_test_support::sqs_event_source::receive;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup-lambda");
const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";

fn ade_event(id: &str) -> String {
    let ext = format!("/subscriptions/{S1}/resourceGroups/rg-app-web/providers/Microsoft.Compute/virtualMachines/web-lnx-02/extensions/AzureDiskEncryptionForLinux");
    json!({
        "id": id, "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
    })
    .to_string()
}

fn attribute<'a>(m: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_record_does_not_redeliver_the_batch() {
    let stack = LambdaStack::start(Path::new(BIN), &[]).await;
    let q = "vm-encryption-events";
    stack
        .send(
            q,
            &irrelevant_event("evt-ok"),
            &[(attr::MESSAGE_ID, "evt-ok")],
        )
        .await;
    stack
        .send(q, "not json", &[(attr::MESSAGE_ID, "evt-poison")])
        .await;
    // A relevant event: the handler reads the VM from Azure, which is unreachable here.
    let transient = stack
        .send(
            q,
            &ade_event("evt-transient"),
            &[(attr::MESSAGE_ID, "evt-transient")],
        )
        .await;

    let round = stack.source.poll_once(&stack.api).await;
    assert_eq!(round.delivered, 3, "one batch of three: {round:?}");
    assert_eq!(
        round.retried,
        vec![transient.clone()],
        "only the transient record is retried"
    );

    // The poison record: reason recorded in state, message in the DLQ with the reason.
    let record = stack
        .state_json("deadletters/vm-encryption-events/evt-poison.json")
        .await
        .expect("the poison reason is recorded");
    let reason = record["reason"].as_str().expect("reason").to_string();
    assert!(!reason.is_empty(), "{record}");
    let dlq = receive(&stack.sqs, &stack.dead_letter_queues[q], 5).await;
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0].body(), Some("not json"));
    assert_eq!(
        attribute(&dlq[0], "DeadLetterReason"),
        Some(reason.as_str())
    );
    assert_eq!(attribute(&dlq[0], attr::MESSAGE_ID), Some("evt-poison"));
    assert!(
        stack
            .state_json("deadletters/vm-encryption-events/evt-ok.json")
            .await
            .is_none(),
        "the completed record is not dead-lettered"
    );

    // Only the transient record comes back, on its second receive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = receive(&stack.sqs, stack.url(q), 5).await;
    let ids: Vec<_> = again.iter().filter_map(|m| m.message_id()).collect();
    assert_eq!(ids, vec![transient.as_str()]);
    let count = again[0]
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .map(String::as_str);
    assert_eq!(count, Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_record_is_sent_on_with_the_rest_of_its_delay() {
    let stack = LambdaStack::start(Path::new(BIN), &[]).await;
    let due = chrono::Utc::now() + chrono::Duration::seconds(4);
    let due_text = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = r#"{"not":"handled yet"}"#;
    stack
        .send(
            "backup-vm",
            body,
            &[(attr::MESSAGE_ID, "m-later"), (attr::DUE_AT, &due_text)],
        )
        .await;
    let round = stack.source.poll_once(&stack.api).await;
    assert_eq!((round.delivered, round.retried.len()), (1, 0), "{round:?}");
    assert!(
        stack
            .state_json("deadletters/backup-vm/m-later.json")
            .await
            .is_none(),
        "the handler did not run on the early record"
    );
    let started = Instant::now();
    let mut got = Vec::new();
    while got.is_empty() && started.elapsed() < Duration::from_secs(20) {
        got = receive(&stack.sqs, stack.url("backup-vm"), 2).await;
    }
    assert_eq!(got.len(), 1, "the record came back");
    assert!(
        chrono::Utc::now() >= due - chrono::Duration::seconds(1),
        "it came back at its due time, not before"
    );
    assert_eq!(got[0].body(), Some(body));
    assert_eq!(attribute(&got[0], attr::MESSAGE_ID), Some("m-later"));
    assert_eq!(attribute(&got[0], attr::DUE_AT), Some(due_text.as_str()));
    assert!(attribute(&got[0], attr::TRACEPARENT).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_events_are_invocation_errors_and_the_runtime_goes_on() {
    let mut stack = LambdaStack::start(Path::new(BIN), &[]).await;
    match stack.invoke(json!({"hello": "world"})).await {
        InvocationResult::Error(e) => {
            assert!(e.to_string().contains("neither an SQS batch"), "{e}")
        }
        other => panic!("expected an invocation error, got {other:?}"),
    }
    match stack.invoke(json!({"Records": []})).await {
        InvocationResult::Response(r) => assert_eq!(r, json!({"batchItemFailures": []})),
        other => panic!("expected an empty batch response, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entra_credential_comes_from_secrets_manager() {
    let secret = json!({
        "tenantId": "5b6f0c7e-3d1a-4c2b-9e8f-0a1b2c3d4e5f",
        "clientId": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "clientSecret": "s3cr3t-never-logged"
    })
    .to_string();
    let mut stack = LambdaStack::start_with_secret(Path::new(BIN), &[], Some(&secret)).await;
    match stack.invoke(json!({"Records": []})).await {
        InvocationResult::Response(r) => assert_eq!(r, json!({"batchItemFailures": []})),
        other => panic!("the runtime did not start with the secret: {other:?}"),
    }
    assert!(!stack.process.log().contains("s3cr3t-never-logged"));

    // A malformed secret stops the start-up, naming the rule, never the value.
    let bad = json!({"tenantId": "s3cr3t-never-logged", "clientId": "x", "clientSecret": "y"})
        .to_string();
    let mut stack = LambdaStack::start_with_secret(Path::new(BIN), &[], Some(&bad)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.process.running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!stack.process.running(), "start-up must fail");
    let log = stack.process.log();
    assert!(log.contains("tenantId must be a GUID"), "{log}");
    assert!(!log.contains("s3cr3t-never-logged"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_secret_starts_and_a_malformed_one_stops_start_up() {
    const TENANT: &str = "5b6f0c7e-3d1a-4c2b-9e8f-0a1b2c3d4e5f";
    const CLIENT: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let pem = include_str!("fixtures/entra-cert.pem");
    let secret = json!({"tenantId": TENANT, "clientId": CLIENT, "clientCertificate": pem});
    let mut stack =
        LambdaStack::start_with_secret(Path::new(BIN), &[], Some(&secret.to_string())).await;
    match stack.invoke(json!({"Records": []})).await {
        InvocationResult::Response(r) => assert_eq!(r, json!({"batchItemFailures": []})),
        other => panic!("the runtime did not start with the certificate: {other:?}"),
    }
    assert!(!stack.process.log().contains("PRIVATE KEY"));

    // A PEM whose base64 is broken: start-up fails naming the field, not showing the text.
    let broken = pem.replacen("MII", "M!I", 1);
    let secret = json!({"tenantId": TENANT, "clientId": CLIENT, "clientCertificate": broken});
    let mut stack =
        LambdaStack::start_with_secret(Path::new(BIN), &[], Some(&secret.to_string())).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.process.running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!stack.process.running(), "start-up must fail");
    let log = stack.process.log();
    assert!(log.contains("clientCertificate is not valid PEM"), "{log}");
    assert!(
        !log.contains("M!I") && !log.contains("PRIVATE KEY"),
        "{log}"
    );
}
