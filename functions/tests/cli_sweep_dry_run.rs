//! `ade-backup sweep --dry-run` against `ade-backup sim`: both real binaries, talking ARM over
//! HTTP. The plan is printed as JSON and nothing in (simulated) Azure changes.

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let port = free_port();
    let _sim = Killed(
        Command::new(BIN)
            .args(["sim", "--no-throttle", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    while http.get(format!("{base}/_sim/stats")).send().await.is_err() {
        assert!(Instant::now() < deadline, "simulator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = tempfile::tempdir().expect("tempdir");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/local/protection-rules.json");
    let out = Command::new(BIN)
        .args(["sweep", "--dry-run", "--output", "json"])
        .env("ADE_BACKUP_CREDENTIAL", "static")
        .env("ADE_BACKUP_STATIC_TOKEN", "t")
        .env("ADE_BACKUP_ARM_ENDPOINT", &base)
        .env("ADE_BACKUP_GRAPH_ENDPOINT", &base)
        .env(
            "ADE_BACKUP_SUBSCRIPTIONS",
            "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011,9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22",
        )
        .env(
            "ADE_BACKUP_PROTECTION_RULES",
            format!("@{}", rules.display()),
        )
        .env("ADE_BACKUP_STATE", format!("fs:{}", state.path().display()))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sweep");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let plans = report["plans"].as_array().expect("plans");
    assert!(plans.len() >= 10, "{report}");
    assert!(
        plans.iter().any(|p| p["vmId"]
            .as_str()
            .is_some_and(|v| v.ends_with("/web-win-02"))
            && p["actions"].to_string().contains("protect")),
        "{report}"
    );
    let stats: Value = http
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    for (kind, n) in stats["writes"].as_object().expect("writes") {
        assert_eq!(n, 0, "dry run wrote {kind}: {stats}");
    }
    // and no state document was written
    assert_eq!(
        std::fs::read_dir(state.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}
