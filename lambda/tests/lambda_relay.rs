//! The Event Grid → SQS relay: the real `ade-backup-lambda` process in relay mode
//! (`ADE_BACKUP_LAMBDA_MODE=relay`) behind the local Lambda Runtime API, invoked with Lambda
//! function URL requests as Event Grid's webhook deliveries arrive, its shared secret in moto's
//! Secrets Manager and the events queue in moto's SQS.

use ade_backup_lambda::relay::KEY_HEADER;
use ade_backup_lambda::sqs_sender::attr;
use ade_backup_test_support::lambda_runtime_api::InvocationResult;
use ade_backup_test_support::lambda_stack::{function_url_request, LambdaStack};
use ade_backup_test_support::serve_process::irrelevant_event;
use ade_backup_test_support::sqs_event_source::receive;
use serde_json::{json, Value};
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup-lambda");
const SECRET: &str = "relay-shared-secret-0123456789abcdef";
const QUEUE: &str = "vm-encryption-events";
const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn ade_event(id: &str) -> Value {
    let ext = format!("/subscriptions/{S1}/resourceGroups/rg-app-web/providers/Microsoft.Compute/virtualMachines/web-lnx-02/extensions/AzureDiskEncryptionForLinux");
    json!({
        "id": id, "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z", "dataVersion": "", "metadataVersion": "1",
        "topic": format!("/subscriptions/{S1}"),
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
    })
}

/// One function URL invocation; the response's status and parsed JSON body (Null if none).
async fn call(
    stack: &mut LambdaStack,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (i64, Value, Value) {
    match stack
        .invoke(function_url_request(method, headers, body))
        .await
    {
        InvocationResult::Response(r) => {
            let status = r["statusCode"].as_i64().expect("statusCode");
            let body = r["body"]
                .as_str()
                .map(|b| serde_json::from_str(b).expect("a JSON body"))
                .unwrap_or(Value::Null);
            (status, body, r["headers"].clone())
        }
        other => panic!("expected a function URL response, got {other:?}"),
    }
}

async fn queued(stack: &LambdaStack, wait: i32) -> Vec<aws_sdk_sqs::types::Message> {
    receive(&stack.sqs, stack.url(QUEUE), wait).await
}

fn attribute<'a>(m: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_both_validation_handshakes() {
    let mut stack = LambdaStack::start_relay(Path::new(BIN), SECRET).await;
    let validation = json!([{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": format!("/subscriptions/{S1}"),
        "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-12-02T06:00:00Z", "metadataVersion": "1", "dataVersion": "1",
        "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                 "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x/validate?id=y"}
    }])
    .to_string();
    let (status, body, _) = call(
        &mut stack,
        "POST",
        &[
            (KEY_HEADER, SECRET),
            ("aeg-event-type", "SubscriptionValidation"),
        ],
        Some(&validation),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    );

    let (status, _, headers) = call(
        &mut stack,
        "OPTIONS",
        &[
            (KEY_HEADER, SECRET),
            ("WebHook-Request-Origin", "eventgrid.azure.net"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["webhook-allowed-origin"], "eventgrid.azure.net");

    // Without the secret neither handshake succeeds.
    let (status, _, _) = call(&mut stack, "POST", &[], Some(&validation)).await;
    assert_eq!(status, 401);
    let (status, _, headers) = call(
        &mut stack,
        "OPTIONS",
        &[("WebHook-Request-Origin", "eventgrid.azure.net")],
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers.get("webhook-allowed-origin").is_none(), "{headers}");
    assert!(
        queued(&stack, 1).await.is_empty(),
        "a handshake enqueues nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_secret_is_401_and_nothing_is_enqueued() {
    let mut stack = LambdaStack::start_relay(Path::new(BIN), SECRET).await;
    let batch = json!([ade_event("evt-unauth")]).to_string();
    let wrong = "wrong-secret-value-0123456789abcdef";
    for headers in [
        vec![],
        vec![(KEY_HEADER, wrong)],
        vec![(KEY_HEADER, &SECRET[..SECRET.len() - 1])],
        vec![("x-other-header", SECRET)],
    ] {
        let (status, body, _) = call(&mut stack, "POST", &headers, Some(&batch)).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert!(!body.to_string().contains(SECRET), "{body}");
    }
    assert!(queued(&stack, 1).await.is_empty(), "nothing enqueued");
    let log = stack.process.log();
    assert!(!log.contains(SECRET) && !log.contains(wrong), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_rejects_the_whole_batch_naming_the_field() {
    let mut stack = LambdaStack::start_relay(Path::new(BIN), SECRET).await;
    let key = [(KEY_HEADER, SECRET)];
    let mut bad_data = ade_event("evt-bad");
    bad_data["data"] = json!("not an object");
    let mut no_id = ade_event("x");
    no_id.as_object_mut().expect("object").remove("id");
    let cases = [
        (
            json!([ade_event("evt-good"), bad_data]).to_string(),
            "[1].data",
        ),
        (json!([no_id]).to_string(), "[0].id"),
        (json!([ade_event("evt-good"), 7]).to_string(), "[1]"),
        (json!([]).to_string(), "must not be empty"),
        ("{not json".to_string(), "body"),
        (json!("a string").to_string(), "an event object or an array"),
    ];
    for (body, field) in cases {
        let (status, answer, _) = call(&mut stack, "POST", &key, Some(&body)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().expect("error text");
        assert!(error.contains(field), "{body}: {error}");
    }
    let (status, answer, _) = call(&mut stack, "GET", &key, None).await;
    assert_eq!(status, 405, "{answer}");
    let huge =
        json!([{"id": "big", "eventType": "x", "data": "a".repeat(1024 * 1024)}]).to_string();
    let (status, answer, _) = call(&mut stack, "POST", &key, Some(&huge)).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        queued(&stack, 1).await.is_empty(),
        "nothing of a refused batch is enqueued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_ade_event_becomes_one_sqs_message_with_its_event_id() {
    let mut stack = LambdaStack::start_relay(Path::new(BIN), SECRET).await;
    let event = ade_event("evt-relayed-1");
    let other: Value =
        serde_json::from_str::<Value>(&irrelevant_event("evt-other")).expect("json")[0].clone();
    let batch = json!([event, other]).to_string();
    let (status, body, _) = call(
        &mut stack,
        "POST",
        &[(KEY_HEADER, SECRET), ("traceparent", TRACEPARENT)],
        Some(&batch),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"enqueued": 1, "ignored": 1}));

    let got = queued(&stack, 2).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(attribute(&got[0], attr::MESSAGE_ID), Some("evt-relayed-1"));
    assert_eq!(attribute(&got[0], attr::TRACEPARENT), Some(TRACEPARENT));
    let queued_event: Value = serde_json::from_str(got[0].body().expect("body")).expect("json");
    assert_eq!(queued_event, event, "the event travels unchanged");
    // What the queue consumer parses: the same event, about the same VM.
    let hints =
        ade_backup_functions::domain::events::parse(got[0].body().expect("body").as_bytes())
            .expect("the consumer accepts it");
    assert!(
        matches!(&hints[..], [ade_backup_functions::domain::events::EventHint::CheckVm { event_id, .. }] if event_id == "evt-relayed-1"),
        "{hints:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_failure_is_a_5xx_so_event_grid_retries() {
    let mut stack = LambdaStack::start_relay(Path::new(BIN), SECRET).await;
    stack
        .sqs
        .delete_queue()
        .queue_url(stack.url(QUEUE))
        .send()
        .await
        .expect("delete the events queue");
    let batch = json!([ade_event("evt-unsent")]).to_string();
    let (status, body, _) = call(&mut stack, "POST", &[(KEY_HEADER, SECRET)], Some(&batch)).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("evt-unsent")),
        "{body}"
    );
}
