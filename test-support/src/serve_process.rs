//! The real `ade-backup serve` process, started the way the Functions host starts it
//! (`FUNCTIONS_CUSTOMHANDLER_PORT`, app settings in the environment) and stopped with SIGTERM,
//! plus invocation payloads shaped like the host's. For tests and benchmarks that need a whole
//! process (its own global telemetry, its own exporter threads); the caller passes the binary
//! (`env!("CARGO_BIN_EXE_ade-backup")`).

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `serve` process; killed when dropped if it was not stopped.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:{port}`
    pub base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl ServeProcess {
    /// Starts `bin serve` with a filesystem state directory, a Service Bus endpoint nothing
    /// listens on, and `env` on top.
    pub fn spawn(bin: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_args(bin, &["serve"], env)
    }

    /// Like [`ServeProcess::spawn`] with other arguments (e.g. none: the Functions host may start
    /// the handler without a subcommand, with only `FUNCTIONS_CUSTOMHANDLER_PORT` set).
    pub fn spawn_args(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
            .env("ADE_BACKUP_STATE", format!("fs:{}", dir.path().display()))
            .env(
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "https://test.servicebus.windows.net/",
            )
            .env("RUST_LOG", "warn")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("APPLICATIONINSIGHTS_CONNECTION_STRING")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ade-backup serve");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The process id (to read its /proc status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The filesystem state directory the process writes to.
    pub fn state_dir(&self) -> &Path {
        self._dir.path()
    }

    /// Waits until `/healthz` answers (at most 30 s; the host gives a custom handler 60 s) and
    /// returns its JSON.
    pub async fn wait_healthy(&self, client: &reqwest::Client) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = client.get(format!("{}/healthz", self.base)).send().await {
                if resp.status().is_success() {
                    return resp.json().await.expect("healthz JSON");
                }
            }
            assert!(
                Instant::now() < deadline,
                "serve did not come up at {}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (what the Functions host sends), then waits for the exit (at most 20 s).
    pub fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Service Bus invocation as the Functions host sends it: metadata values JSON-encoded inside
/// strings, application properties as an object in both `ApplicationProperties` and
/// `UserProperties` (Service Bus extension 5.x binding contract).
pub fn service_bus_invocation(message_id: &str, body: &str, properties: Value) -> Value {
    json!({
        "Data": { "message": body },
        "Metadata": {
            "MessageId": format!("\"{message_id}\""),
            "DeliveryCount": "1",
            "ContentType": "\"application/json\"",
            "ApplicationProperties": properties.clone(),
            "UserProperties": properties,
        }
    })
}

/// An Event Grid event `OnVmEncryptionEvent` acknowledges without any Azure call (a delete is
/// not a write).
pub fn irrelevant_event(id: &str) -> String {
    json!([{
        "id": id,
        "eventType": "Microsoft.Resources.ResourceDeleteSuccess",
        "subject": "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {},
        "dataVersion": "2.0",
        "metadataVersion": "1"
    }])
    .to_string()
}
