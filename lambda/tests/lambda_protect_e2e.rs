//! End to end on AWS: an ADE event put on the SQS queue is received by the SQS event source,
//! handled by the real `ade-backup-lambda` process (through the local Lambda Runtime API), and
//! the protection workflow runs to completion against the simulated Azure: the follow-ups travel
//! through SQS (delayed sends), state lives in S3 (moto), and the VM ends up protected with one
//! protection write and one backup. The second test starts at Event Grid's webhook delivery to the
//! relay process instead of at the queue.

use ade_backup_lambda::relay::KEY_HEADER;
use ade_backup_lambda::sqs_sender::attr;
use ade_backup_sim::{Fleet, SimOptions};
use ade_backup_test_support::lambda_runtime_api::InvocationResult;
use ade_backup_test_support::lambda_stack::{function_url_request, LambdaStack};
use ade_backup_test_support::sim_stack::{RSV_WEU, S1};
use ade_backup_test_support::simulator::{quick_durations, spawn_simulator};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup-lambda");

/// The simulator with the sample fleet (ADE extension finished) and the router's settings for it.
async fn simulated_azure() -> (
    ade_backup_sim::Simulator,
    Vec<(&'static str, String)>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (sim, url, stop) = spawn_simulator(
        Fleet::sample(),
        SimOptions {
            throttling: false,
            varied_casing: true,
            // One real second is one simulated minute: jobs of a few simulated seconds finish
            // between two follow-ups.
            time_scale: 60.0,
            durations: quick_durations(),
            ..SimOptions::default()
        },
    )
    .await;
    // The ADE extension finishes (as in the crash tests' encrypted stack).
    sim.advance(Duration::from_secs(60));
    let base = url.to_string();
    let rules = json!({"rules": [
        {"name": "s1", "match": {"subscription": S1}, "vaultId": RSV_WEU, "policy": "DefaultPolicy"}
    ]})
    .to_string();
    let env = [
        ("ADE_BACKUP_ARM_ENDPOINT", base.clone()),
        ("ADE_BACKUP_GRAPH_ENDPOINT", base.clone()),
        ("ADE_BACKUP_BLOB_ENDPOINT", format!("{base}_blob/")),
        (
            "ADE_BACKUP_BMS_OBJECT_ID",
            sim.backup_management_object_id(),
        ),
        ("ADE_BACKUP_SUBSCRIPTIONS", S1.to_string()),
        ("ADE_BACKUP_PROTECTION_RULES", rules),
        ("ADE_BACKUP_POLL_INTERVAL_MS", "1000".into()),
        ("ADE_BACKUP_RECHECK_DELAY_MS", "1000".into()),
        ("ADE_BACKUP_ARM_RETRY_BUDGET_MS", "5000".into()),
    ];
    (sim, env.to_vec(), stop)
}

fn ade_event(id: &str) -> serde_json::Value {
    let ext = format!("/subscriptions/{S1}/resourceGroups/rg-app-web/providers/Microsoft.Compute/virtualMachines/web-lnx-02/extensions/AzureDiskEncryptionForLinux");
    json!({
        "id": id, "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
    })
}

/// The VM ends protected with one protection write and one first backup, and the router's log
/// names `handled` (what shows the router, not something else, did it).
async fn protected_once(stack: &LambdaStack, sim: &ade_backup_sim::Simulator, handled: &str) {
    let record = until_protected(stack).await;
    assert_eq!(record["status"], "protected", "{record}");
    let stats = sim.stats();
    assert_eq!(stats.writes.protection_puts, 1, "one protection write");
    assert_eq!(stats.writes.backup_now_calls, 1, "one first backup");
    assert!(
        stack.process.log().contains(handled),
        "the router handled it: no {handled:?} in its log"
    );
}

/// Runs the event source until the VM's record says protected; the record.
async fn until_protected(stack: &LambdaStack) -> serde_json::Value {
    let key = format!("vms/{S1}/rg-app-web/web-lnx-02.json");
    let status = || async {
        stack
            .state_json(&key)
            .await
            .and_then(|r| r["status"].as_str().map(str::to_string))
    };
    stack
        .source
        .run_until(&stack.api, Duration::from_secs(180), || async {
            status().await.as_deref() == Some("protected")
        })
        .await;
    stack.state_json(&key).await.expect("the VM record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ade_event_on_sqs_protects_the_vm_through_the_lambda() {
    let (sim, env, _stop) = simulated_azure().await;
    let stack = LambdaStack::start(Path::new(BIN), &env).await;
    stack
        .send(
            "vm-encryption-events",
            &ade_event("evt-e2e").to_string(),
            &[(attr::MESSAGE_ID, "evt-e2e")],
        )
        .await;

    protected_once(&stack, &sim, "OnVmEncryptionEvent").await;
}

/// The whole AWS path from Event Grid: the webhook delivery (a function URL request) to the relay
/// process, its SQS message, the router process, the protected VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_grid_delivery_through_the_relay_protects_the_vm() {
    const SECRET: &str = "e2e-relay-shared-secret-0123456789";
    let (sim, env, _stop) = simulated_azure().await;
    let stack = LambdaStack::start(Path::new(BIN), &env).await;
    let (relay_api, relay_process) = stack.start_relay_beside(Path::new(BIN), SECRET).await;
    let delivery = json!([ade_event("evt-relay-e2e")]).to_string();
    let request = function_url_request("POST", &[(KEY_HEADER, SECRET)], Some(&delivery));
    match relay_api.invoke(request, Duration::from_secs(60)).await {
        InvocationResult::Response(r) => assert_eq!(r["statusCode"], 200, "{r}"),
        other => panic!(
            "the relay did not answer: {other:?}\n{}",
            relay_process.log()
        ),
    }

    protected_once(&stack, &sim, "evt-relay-e2e").await;
}
