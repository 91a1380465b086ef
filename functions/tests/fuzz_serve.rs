//! Fuzzing through the real `ade-backup serve` process (issue 15, scenario 5, the reduced run
//! over HTTP): mutated messages for every queue in host-shaped invocations, posted to the
//! custom handler's endpoints, with the simulator as Azure. Every answer must come within 10 s
//! and be the host contract (200, or 500 with a dead-letter reason or the error in `Logs`), the
//! process must stay up, and its resident memory must stay flat: RSS after the run is compared
//! with RSS after a warm-up of the same size. `ADE_BACKUP_FUZZ_SERVE_MESSAGES` sets the count
//! per queue (default 100).

use ade_backup_functions::host::protocol::build;
use ade_backup_test_support::fuzz::Fuzzer;
use ade_backup_test_support::serve_process::ServeProcess;
use ade_backup_test_support::sim_stack::{restore_request, S1, S2};
use ade_backup_test_support::simulator::{spawn_simulator, vm_id};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");

fn count() -> usize {
    std::env::var("ADE_BACKUP_FUZZ_SERVE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// (function, seed body) for every queue-triggered function.
fn seeds() -> Vec<(&'static str, Value)> {
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let ext = format!("{vm}/extensions/AzureDiskEncryptionForLinux");
    let op = "protect-1eb0ca0c-3924-5127-bd9e-38f0b279ce7e";
    vec![
        (
            "OnVmEncryptionEvent",
            json!({"id": "e-1", "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
                   "eventTime": "2026-11-28T10:00:00Z", "dataVersion": "2", "metadataVersion": "1",
                   "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}}),
        ),
        ("OnRestoreRequest", restore_request("INC-1", &vm, json!({}))),
        (
            "GrantKeyVaultAccess",
            json!({"operationId": op, "generation": 1}),
        ),
        (
            "BackupVm",
            json!({"operationId": op, "generation": 1, "phase": "protect", "poll": 0}),
        ),
        (
            "RestoreVm",
            json!({"ticketId": "INC-1", "phase": "trigger", "poll": 0}),
        ),
        (
            "RedeployVm",
            json!({"ticketId": "INC-1", "phase": "deploy", "poll": 0}),
        ),
    ]
}

/// Posts `n` mutants of every seed; checks each answer; returns how many were dead-lettered.
async fn round(
    http: &reqwest::Client,
    base: &str,
    fuzzer: &mut Fuzzer,
    n: usize,
    tag: &str,
) -> usize {
    let mut dead = 0;
    for (function, seed) in seeds() {
        for i in 0..n {
            let m = fuzzer.mutate(&seed);
            let id = format!("{tag}-{function}-{i}");
            let payload = build::service_bus_request(
                "message",
                &m.body,
                &build::Delivery {
                    message_id: &id,
                    delivery_count: 1,
                    ..Default::default()
                },
            );
            let resp = tokio::time::timeout(
                Duration::from_secs(10),
                http.post(format!("{base}/{function}"))
                    .json(&payload)
                    .send(),
            )
            .await
            .unwrap_or_else(|_| panic!("{function} #{i} ({}): no answer in 10 s", m.what))
            .unwrap_or_else(|e| panic!("{function} #{i} ({}): {e}", m.what));
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(
                status == 200 || status == 500,
                "{function} #{i} ({}): HTTP {status} {body}",
                m.what
            );
            if let Some(reason) = body["ReturnValue"]["deadLetter"]["reason"].as_str() {
                assert!(!reason.is_empty(), "{body}");
                dead += 1;
            } else if status == 500 {
                assert!(
                    body["Logs"].as_array().is_some_and(|l| !l.is_empty()),
                    "{body}"
                );
            }
        }
    }
    dead
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_mutated_messages_with_flat_memory() {
    let (sim, url, _stop) = spawn_simulator(
        ade_backup_sim::Fleet::sample(),
        ade_backup_sim::SimOptions {
            throttling: false,
            ..Default::default()
        },
    )
    .await;
    let base_url = url.to_string();
    let bms = sim.backup_management_object_id();
    let subs = format!("{S1},{S2}");
    let serve = ServeProcess::spawn(
        Path::new(BIN),
        &[
            ("ADE_BACKUP_CREDENTIAL", "static"),
            ("ADE_BACKUP_STATIC_TOKEN", "t"),
            ("ADE_BACKUP_ARM_ENDPOINT", &base_url),
            ("ADE_BACKUP_GRAPH_ENDPOINT", &base_url),
            ("ADE_BACKUP_BMS_OBJECT_ID", &bms),
            ("ADE_BACKUP_SUBSCRIPTIONS", &subs),
            // Follow-ups cannot be sent (nothing listens): a valid message fails transiently.
            ("ADE_BACKUP_SERVICEBUS_ENDPOINT", "http://127.0.0.1:9/"),
        ],
    );
    let http = reqwest::Client::new();
    serve.wait_healthy(&http).await;
    let pid = serve.pid();
    let n = count();
    let mut fuzzer = Fuzzer::new(17);
    let before_warm_up = rss_kib(pid);
    round(&http, &serve.base, &mut fuzzer, n, "warm").await;
    let warm = rss_kib(pid);
    let dead = round(&http, &serve.base, &mut fuzzer, n, "run").await;
    let after = rss_kib(pid);
    serve.wait_healthy(&http).await;
    let sent = n * seeds().len();
    println!(
        "serve: {sent} mutated messages after a warm-up of {sent}: {dead} dead-lettered; RSS {} KiB at start, {warm} KiB after the warm-up, {after} KiB after the run ({:+} KiB)",
        before_warm_up,
        after as i64 - warm as i64
    );
    assert!(dead > sent / 4, "{dead} of {sent} dead-lettered");
    // Flat: the second round of as many messages grows the process by less than 8 MiB.
    assert!(
        after < warm + 8 * 1024,
        "RSS grew from {warm} KiB to {after} KiB"
    );
}
