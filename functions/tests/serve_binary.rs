//! The real `ade-backup` binary as the Functions host runs it: `FUNCTIONS_CUSTOMHANDLER_PORT` set,
//! `serve` (or no subcommand), stopped with SIGTERM.

use ade_backup_test_support::serve_process::ServeProcess;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

#[tokio::test]
async fn serve_binary_answers_health_and_invocations_then_stops_on_sigterm() {
    let app = ServeProcess::spawn(Path::new(BIN), &[]);
    let client = client();
    let health = app.wait_healthy(&client).await;
    assert_eq!(health["status"], "ok");
    assert!(health["functions"]
        .as_array()
        .is_some_and(|f| f.iter().any(|n| n == "BackupVm")));

    let resp = client
        .post(format!("{}/Nope", app.base))
        .json(&json!({"Data": {}}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);

    let resp = client
        .post(format!("{}/BackupVm", app.base))
        .json(&json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": "m"}}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["field"], "Metadata.DeliveryCount");

    // A well-formed invocation runs the real handler against the real (filesystem) state store:
    // a body that is not a BackupVm worker message is poison — recorded, then answered with the
    // dead-letter reason so the host dead-letters it.
    let resp = client
        .post(format!("{}/BackupVm", app.base))
        .header(
            "X-Azure-Functions-InvocationId",
            "3f1b0d1e-0000-4000-8000-000000000001",
        )
        .json(&json!({
            "Data": {"message": "{\"vmId\":\"vm-1\"}"},
            "Metadata": {"MessageId": "\"m-1\"", "DeliveryCount": "1"}
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(
        v["ReturnValue"]["deadLetter"]["reason"], "InvalidWorkerMessage",
        "{v}"
    );
    let recorded = app.state_dir().join("deadletters/backup-vm/m-1.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&recorded).expect("dead-letter record"))
        .expect("record JSON");
    assert_eq!(doc["reason"], "InvalidWorkerMessage");

    let status = app.stop();
    assert!(status.success(), "graceful exit, got {status:?}");
}

#[tokio::test]
async fn no_subcommand_with_the_port_variable_also_serves() {
    let app = ServeProcess::spawn_args(Path::new(BIN), &[], &[]);
    let health = app.wait_healthy(&client()).await;
    assert_eq!(health["status"], "ok");
    assert!(app.stop().success());
}

#[test]
fn missing_settings_fail_fast_naming_the_variable() {
    let out = Command::new(BIN)
        .arg("serve")
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", free_port().to_string())
        .env_remove("ADE_BACKUP_STATE")
        .env(
            "ADE_BACKUP_SERVICEBUS_ENDPOINT",
            "https://test.servicebus.windows.net/",
        )
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ADE_BACKUP_STATE"), "{stderr}");
}

#[test]
fn no_subcommand_and_no_port_is_a_usage_error() {
    let out = Command::new(BIN)
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FUNCTIONS_CUSTOMHANDLER_PORT"), "{stderr}");
}
