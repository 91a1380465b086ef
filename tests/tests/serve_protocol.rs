//! The custom-handler server, end to end over HTTP, with payloads shaped like the Functions host's
//! (MicrosoftDocs/azure-docs functions-custom-handlers.md; host `ToHttpScriptInvocationContext`).

use ade_backup_functions::context::Context;
use ade_backup_functions::handler_fn;
use ade_backup_functions::handlers::{FunctionSpec, HandlerError, HandlerOutput, Registry};
use ade_backup_functions::host::protocol::{TriggerInput, TriggerSpec};
use ade_backup_test_support::receipt::record_message_receipt;
use ade_backup_test_support::{spawn_app, spawn_app_with, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A Service Bus invocation exactly as the host sends it: the text body in `Data.message`,
/// metadata values JSON-encoded inside strings, properties as objects.
fn service_bus_payload(message_id: &str, body: &str) -> Value {
    json!({
        "Data": { "message": body },
        "Metadata": {
            "MessageId": format!("\"{message_id}\""),
            "DeliveryCount": "1",
            "CorrelationId": "\"corr-1\"",
            "ContentType": "\"application/json\"",
            "EnqueuedTimeUtc": "\"2024-05-01T09:59:58.1234567Z\"",
            "ExpiresAtUtc": "\"9999-12-31T23:59:59.9999999Z\"",
            "SequenceNumber": "17",
            "LockToken": "\"6f1c0e52-4a6b-4f1e-9d43-9b0e3f1b2c3d\"",
            "ApplicationProperties": { "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
            "UserProperties": { "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
            "sys": { "MethodName": "BackupVm", "UtcNow": "2024-05-01T10:00:00.0000001Z", "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9" }
        }
    })
}

/// The timer invocation from functions-bindings-timer.md.
fn timer_payload() -> Value {
    json!({
        "Data": { "timer": {
            "Schedule": { "AdjustForDST": true },
            "ScheduleStatus": {
                "Last": "2024-05-01T09:30:00+00:00",
                "Next": "2024-05-01T10:00:00+00:00",
                "LastUpdated": "2024-05-01T09:30:00.1234567+00:00"
            },
            "IsPastDue": false
        }},
        "Metadata": { "sys": { "MethodName": "PolicySweep", "UtcNow": "2024-05-01T10:00:00Z" } }
    })
}

async fn body_json(resp: reqwest::Response) -> Value {
    resp.json().await.expect("JSON response body")
}

fn assert_invocation_shape(v: &Value) {
    assert!(v["Outputs"].is_object(), "Outputs must be an object: {v}");
    assert!(v["Logs"].is_array(), "Logs must be an array: {v}");
    assert!(
        v.get("ReturnValue").is_some(),
        "ReturnValue must be present: {v}"
    );
}

#[tokio::test]
async fn healthz_lists_the_functions() {
    let app = spawn_app().await;
    let resp = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    assert_eq!(v["status"], "ok");
    let listed: Vec<&str> = v["functions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut expected = Registry::production().names();
    expected.sort_unstable();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "{v}");
    assert!(listed.contains(&"RedriveDeadLetters"), "{v}");
}

/// Records every message it gets (the scaffold handler), under a test-only name.
async fn receipt(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    record_message_receipt("Receipt", input, ctx).await
}

fn with_receipt() -> Registry {
    Registry::production().with(FunctionSpec {
        name: "Receipt",
        trigger: TriggerSpec::ServiceBus {
            queue: "receipt",
            binding: "message",
        },
        handler: handler_fn!(receipt),
    })
}

#[tokio::test]
async fn a_host_shaped_message_reaches_the_handler_with_its_metadata() {
    let app = spawn_app_with(with_receipt()).await;
    let id = "msg-receipt";
    let resp = app
        .invoke("Receipt", &service_bus_payload(id, r#"{"vmId":"vm-1"}"#))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    assert_invocation_shape(&v);
    assert_eq!(v["Outputs"], json!({}));
    assert_eq!(v["ReturnValue"], Value::Null);
    assert!(v["Logs"][0].as_str().is_some_and(|l| l.contains(id)), "{v}");
    let doc = app
        .state
        .json(&format!("operations/receipt/{id}.json"))
        .unwrap_or_else(|| panic!("recorded nothing; keys: {:?}", app.state.keys("")));
    assert_eq!(doc["messageId"], id);
    assert_eq!(doc["correlationId"], "corr-1");
    assert_eq!(doc["deliveryCount"], 1);
    assert_eq!(doc["input"], json!({"vmId": "vm-1"}));
}

#[tokio::test]
async fn production_workers_dead_letter_messages_that_are_not_theirs() {
    // A message in the wrong format is poison for each worker: recorded, then dead-lettered.
    let app = spawn_app().await;
    for (function, queue, reason) in [
        (
            "OnVmEncryptionEvent",
            "vm-encryption-events",
            "InvalidEvent",
        ),
        (
            "GrantKeyVaultAccess",
            "grant-key-vault-access",
            "InvalidWorkerMessage",
        ),
        ("BackupVm", "backup-vm", "InvalidWorkerMessage"),
    ] {
        let id = format!("wrong-{queue}");
        let resp = app
            .invoke(function, &service_bus_payload(&id, r#"{"vmId":"vm-1"}"#))
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{function}"
        );
        let v = body_json(resp).await;
        assert_invocation_shape(&v);
        assert_eq!(
            v["ReturnValue"]["deadLetter"]["reason"], reason,
            "{function}: {v}"
        );
        let rec = app
            .state
            .json(&format!("deadletters/{queue}/{id}.json"))
            .unwrap_or_else(|| {
                panic!(
                    "{function}: no dead-letter record; keys {:?}",
                    app.state.keys("")
                )
            });
        assert_eq!(rec["reason"], reason);
        assert_eq!(rec["correlationId"], "corr-1");
    }
}

#[tokio::test]
async fn redelivery_updates_the_same_operation_document() {
    let app = spawn_app_with(with_receipt()).await;
    let mut payload = service_bus_payload("same-id", r#"{"vmId":"vm-1"}"#);
    assert_eq!(
        app.invoke("Receipt", &payload).await.status(),
        StatusCode::OK
    );
    payload["Metadata"]["DeliveryCount"] = json!("2");
    assert_eq!(
        app.invoke("Receipt", &payload).await.status(),
        StatusCode::OK
    );
    let doc = app
        .state
        .json("operations/receipt/same-id.json")
        .expect("recorded");
    assert_eq!(doc["deliveries"], 2);
    assert_eq!(doc["deliveryCount"], 2);
}

#[tokio::test]
async fn timer_trigger_reaches_the_policy_sweep() {
    // The docs-shaped timer payload reaches the sweep; with no subscriptions configured the
    // sweep refuses to run (transient: retried on the next tick) and says which setting is missing.
    let app = spawn_app().await;
    let resp = app.invoke("PolicySweep", &timer_payload()).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v = body_json(resp).await;
    assert_invocation_shape(&v);
    assert_eq!(v["ReturnValue"], Value::Null, "not dead-lettered: {v}");
    assert!(
        v["Logs"].to_string().contains("ADE_BACKUP_SUBSCRIPTIONS"),
        "{v}"
    );
}

#[tokio::test]
async fn unknown_function_is_404_naming_it() {
    let app = spawn_app().await;
    let resp = app.invoke("NoSuchFunction", &timer_payload()).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], "FunctionNotFound");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NoSuchFunction")),
        "{v}"
    );
}

#[tokio::test]
async fn malformed_payloads_are_400_naming_the_field() {
    let app = spawn_app().await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("BackupVm", b"this is not json".to_vec(), "body"),
        ("BackupVm", br#"{"Metadata": {}}"#.to_vec(), "Data"),
        ("BackupVm", br#"{"Data": [], "Metadata": {}}"#.to_vec(), "Data"),
        (
            "BackupVm",
            br#"{"Data": {"msg": "{}"}, "Metadata": {"MessageId": "m", "DeliveryCount": 1}}"#.to_vec(),
            "Data.message",
        ),
        (
            "BackupVm",
            br#"{"Data": {"message": "{}"}, "Metadata": {"DeliveryCount": 1}}"#.to_vec(),
            "Metadata.MessageId",
        ),
        (
            "BackupVm",
            br#"{"Data": {"message": "{}"}, "Metadata": {"MessageId": "m", "DeliveryCount": "two"}}"#
                .to_vec(),
            "Metadata.DeliveryCount",
        ),
        (
            "PolicySweep",
            br#"{"Data": {"timer": {"IsPastDue": "sometimes"}}}"#.to_vec(),
            "Data.timer.IsPastDue",
        ),
    ];
    for (function, body, field) in cases {
        let resp = app.invoke_raw(function, body.clone()).await;
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "MalformedPayload");
        assert_eq!(v["error"]["field"], field, "{v}");
        assert!(v["error"]["rule"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(
            v["Logs"][0].as_str().is_some_and(|l| l.contains(field)),
            "{v}"
        );
    }
    assert!(
        app.state.keys("").is_empty(),
        "nothing recorded for malformed payloads"
    );
}

async fn always_transient(_: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    Err(HandlerError::Transient("ARM answered 503".into()))
}

/// The production functions plus `Flaky` (queue `flaky`), which always fails transiently.
async fn flaky_app() -> TestApp {
    spawn_app_with(Registry::production().with(FunctionSpec {
        name: "Flaky",
        trigger: TriggerSpec::ServiceBus {
            queue: "flaky",
            binding: "message",
        },
        handler: handler_fn!(always_transient),
    }))
    .await
}

#[tokio::test]
async fn handler_failure_is_500_with_the_error_in_logs() {
    let app = flaky_app().await;
    let resp = app.invoke("Flaky", &service_bus_payload("m-1", "{}")).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v = body_json(resp).await;
    assert_invocation_shape(&v);
    assert_eq!(
        v["ReturnValue"],
        Value::Null,
        "transient errors must not dead-letter"
    );
    assert!(
        v["Logs"][0]
            .as_str()
            .is_some_and(|l| l.contains("ARM answered 503")),
        "{v}"
    );
}

#[tokio::test]
async fn the_last_transient_delivery_records_its_error_where_dead_letters_are_kept() {
    let app = flaky_app().await;
    let delivery = |n: u32| {
        let mut p = service_bus_payload("m-last", "{}");
        p["Metadata"]["DeliveryCount"] = json!(n.to_string());
        p
    };
    app.invoke("Flaky", &delivery(9)).await;
    assert!(
        app.state.json("deadletters/flaky/m-last.json").is_none(),
        "a delivery that will be retried records nothing"
    );
    let resp = app.invoke("Flaky", &delivery(10)).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v = body_json(resp).await;
    assert_eq!(
        v["ReturnValue"],
        Value::Null,
        "still transient for the host"
    );
    let rec = app
        .state
        .json("deadletters/flaky/m-last.json")
        .expect("the last delivery's error is recorded");
    assert_eq!(rec["reason"], "MaxDeliveryCountExceeded");
    assert!(
        rec["description"]
            .as_str()
            .is_some_and(|d| d.contains("ARM answered 503") && d.contains("10 deliveries")),
        "{rec}"
    );
    assert_eq!(rec["deliveryCount"], 10);
}

#[tokio::test]
async fn poison_is_500_with_dead_letter_and_the_reason_is_recorded() {
    let app = spawn_app().await;
    let resp = app
        .invoke(
            "BackupVm",
            &service_bus_payload("poison-1", "definitely not json"),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v = body_json(resp).await;
    assert_invocation_shape(&v);
    assert_eq!(
        v["ReturnValue"]["deadLetter"]["reason"],
        "InvalidWorkerMessage"
    );
    assert!(v["ReturnValue"]["deadLetter"]["description"].is_string());
    let rec = app
        .state
        .json("deadletters/backup-vm/poison-1.json")
        .expect("poison reason recorded before answering");
    assert_eq!(rec["reason"], "InvalidWorkerMessage");
    assert_eq!(rec["function"], "BackupVm");
    assert_eq!(rec["queue"], "backup-vm");
    assert_eq!(rec["messageId"], "poison-1");
}

#[tokio::test]
async fn poison_whose_reason_cannot_be_recorded_is_retried_not_dead_lettered() {
    let app = spawn_app().await;
    app.state.fail_writes.store(true, Ordering::SeqCst);
    let resp = app
        .invoke("BackupVm", &service_bus_payload("poison-2", "not json"))
        .await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v = body_json(resp).await;
    assert_eq!(v["ReturnValue"], Value::Null, "{v}");
    assert!(
        v["Logs"][0]
            .as_str()
            .is_some_and(|l| l.contains("could not record")),
        "{v}"
    );
}

#[tokio::test]
async fn oversize_body_is_413() {
    let app = spawn_app().await;
    let big = "x".repeat(3 * 1024 * 1024);
    let resp = app
        .invoke("BackupVm", &service_bus_payload("big", &big))
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], "PayloadTooLarge");
    assert_eq!(v["error"]["field"], "body");
}

async fn panics(_: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    panic!("handler bug")
}

#[tokio::test]
async fn panicking_handler_is_500_and_the_server_keeps_serving() {
    let app = spawn_app_with(with_receipt().with(FunctionSpec {
        name: "Panics",
        trigger: TriggerSpec::ServiceBus {
            queue: "panics",
            binding: "message",
        },
        handler: handler_fn!(panics),
    }))
    .await;
    for _ in 0..2 {
        let resp = app.invoke("Panics", &service_bus_payload("p", "{}")).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let v = body_json(resp).await;
        assert_eq!(v["error"]["code"], "HandlerPanicked");
        assert!(
            !v.to_string().contains("handler bug"),
            "panic text stays in the log"
        );
    }
    let resp = app
        .invoke("Receipt", &service_bus_payload("after-panic", "{}"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!app.server.is_finished());
}

static SLOW_STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

async fn slow(_: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    SLOW_STARTED.notify_one();
    tokio::time::sleep(Duration::from_millis(700)).await;
    Ok(HandlerOutput::default().log("slow handler finished"))
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_invocations() {
    let mut app = spawn_app_with(Registry::production().with(FunctionSpec {
        name: "Slow",
        trigger: TriggerSpec::ServiceBus {
            queue: "slow",
            binding: "message",
        },
        handler: handler_fn!(slow),
    }))
    .await;
    let client = app.client.clone();
    let url = format!("{}/Slow", app.address);
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&service_bus_payload("slow-1", "{}"))
            .send()
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), SLOW_STARTED.notified())
        .await
        .expect("slow handler started");
    app.begin_shutdown();

    let resp = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request completes")
        .expect("task")
        .expect("response arrives despite shutdown");
    assert_eq!(resp.status(), StatusCode::OK);
    let v = body_json(resp).await;
    assert_eq!(v["Logs"][0], "slow handler finished");

    let server = std::mem::replace(&mut app.server, tokio::spawn(async { Ok(()) }));
    let exit = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server exits after draining")
        .expect("server task");
    assert!(exit.is_ok(), "{exit:?}");
    let after = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await;
    assert!(after.is_err(), "no longer accepting connections");
}

/// Texts an Azure error can quote: a SAS URL, a client secret, a Shared Key signature, a
/// password. None of the secrets in them may leave the process.
const SAS_URL: &str = "https://stg1.blob.core.windows.net/restore/azuredeploy.json?sv=2022-11-02&se=2030-01-01&sp=r&sig=S3cr3tSig%3D";
const SECRETS: [&str; 4] = ["S3cr3tSig", "cl13nt-s3cr3t", "U2hhcmVkS2V5U2ln", "hunter2"];

fn secret_laden_text() -> String {
    format!(
        "template {SAS_URL} unreadable; AZURE_CLIENT_SECRET=cl13nt-s3cr3t; Authorization: SharedKey stg1:U2hhcmVkS2V5U2ln; Password=hunter2"
    )
}

fn assert_redacted(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret}: {text}");
    }
    assert!(text.contains("[REDACTED]"), "{what}: {text}");
}

async fn leaky_poison(_: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    Err(HandlerError::poison(
        "TemplateUnreadable",
        secret_laden_text(),
    ))
}

async fn leaky_transient(_: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    Err(HandlerError::Transient(secret_laden_text()))
}

async fn leaky_success(_: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    Ok(HandlerOutput {
        logs: vec![secret_laden_text()],
        return_value: json!({ "detail": [secret_laden_text()] }),
    })
}

/// Runs one of the leaky handlers on message `id` in a fresh app; returns the app and the
/// answer, whose status must be `status`.
async fn invoke_leaky(function: &str, id: &str, status: StatusCode) -> (TestApp, Value) {
    let app = spawn_app_with(with_leaky_handlers()).await;
    let resp = app.invoke(function, &service_bus_payload(id, "{}")).await;
    assert_eq!(resp.status(), status, "{function}");
    let v = body_json(resp).await;
    assert_invocation_shape(&v);
    (app, v)
}

fn with_leaky_handlers() -> Registry {
    let spec = |name, handler| FunctionSpec {
        name,
        trigger: TriggerSpec::ServiceBus {
            queue: "leaky",
            binding: "message",
        },
        handler,
    };
    Registry::production()
        .with(spec("LeakyPoison", handler_fn!(leaky_poison)))
        .with(spec("LeakyTransient", handler_fn!(leaky_transient)))
        .with(spec("LeakySuccess", handler_fn!(leaky_success)))
}

#[tokio::test]
async fn a_poison_description_quoting_secrets_is_redacted_in_logs_dead_letter_and_record() {
    let (app, v) = invoke_leaky("LeakyPoison", "leak-1", StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_redacted("Logs", &v["Logs"].to_string());
    let dead_letter = &v["ReturnValue"]["deadLetter"];
    assert_eq!(dead_letter["reason"], "TemplateUnreadable", "{v}");
    let description = dead_letter["description"]
        .as_str()
        .unwrap_or_else(|| panic!("a dead-letter description: {v}"));
    assert_redacted("deadLetter.description", description);
    assert!(
        description
            .contains("https://stg1.blob.core.windows.net/restore/azuredeploy.json?[REDACTED]"),
        "the URL stays readable without its query: {description}"
    );
    assert_redacted("the response", &v.to_string());
    let rec = app
        .state
        .json("deadletters/leaky/leak-1.json")
        .expect("poison reason recorded");
    assert_eq!(rec["reason"], "TemplateUnreadable");
    assert_redacted("the dead-letter record", &rec.to_string());
}

#[tokio::test]
async fn a_transient_error_quoting_secrets_is_redacted_in_logs() {
    let (_app, v) = invoke_leaky(
        "LeakyTransient",
        "leak-2",
        StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await;
    assert_eq!(v["ReturnValue"], Value::Null, "not dead-lettered: {v}");
    assert!(v["Logs"].to_string().contains("unreadable"), "{v}");
    assert_redacted("the response", &v.to_string());
}

#[tokio::test]
async fn a_successful_output_quoting_secrets_is_redacted() {
    let (_app, v) = invoke_leaky("LeakySuccess", "leak-3", StatusCode::OK).await;
    assert_redacted("Logs", &v["Logs"].to_string());
    assert_redacted("ReturnValue", &v["ReturnValue"].to_string());
}

#[tokio::test]
async fn an_error_response_quoting_a_secret_is_redacted() {
    let app = spawn_app().await;
    let resp = app
        .invoke("sig=S3cr3tSig", &service_bus_payload("leak-4", "{}"))
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v = body_json(resp).await;
    assert_eq!(v["error"]["code"], "FunctionNotFound");
    assert_redacted("error.message", &v["error"]["message"].to_string());
    assert_redacted("the response", &v.to_string());
}
