//! The real `ade-backup` binary as the Functions host runs it: `FUNCTIONS_CUSTOMHANDLER_PORT` set,
//! `serve` (or no subcommand), stopped with SIGTERM.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Running {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let child = Command::new(BIN)
        .args(args)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("ADE_BACKUP_STATE", format!("fs:{}", dir.path().display()))
        .env(
            "ADE_BACKUP_SERVICEBUS_ENDPOINT",
            "https://test.servicebus.windows.net/",
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ade-backup");
    Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) -> Value {
    // The host gives a custom handler 60 s to start; a debug build needs far less.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(resp) = client.get(format!("{base}/healthz")).send().await {
            assert_eq!(resp.status(), 200);
            return resp.json().await.expect("healthz JSON");
        }
        assert!(
            Instant::now() < deadline,
            "server did not come up at {base}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serve_binary_answers_health_and_invocations_then_stops_on_sigterm() {
    let mut app = spawn(&["serve"]);
    let client = client();
    let health = wait_healthy(&client, &app.base).await;
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
    let recorded = app._dir.path().join("deadletters/backup-vm/m-1.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&recorded).expect("dead-letter record"))
        .expect("record JSON");
    assert_eq!(doc["reason"], "InvalidWorkerMessage");

    sigterm(&app.child);
    let status = wait_exit(&mut app.child);
    assert!(status.success(), "graceful exit, got {status:?}");
}

#[tokio::test]
async fn no_subcommand_with_the_port_variable_also_serves() {
    let mut app = spawn(&[]);
    let health = wait_healthy(&client(), &app.base).await;
    assert_eq!(health["status"], "ok");
    sigterm(&app.child);
    assert!(wait_exit(&mut app.child).success());
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
