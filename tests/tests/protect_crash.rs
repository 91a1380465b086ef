//! Automatic protection survives crashes between any two steps: state is tampered with exactly as
//! a crash would leave it (a step claimed, its Azure call made, nothing recorded), the message is
//! redelivered, and the work resumes without repeating what Azure already did.

use ade_backup_functions::handlers::Outcome;
use ade_backup_shared::messaging::OutboundMessage;
use ade_backup_test_support::sim_stack::{SimStack, S1};
use serde_json::{json, Value};
use std::time::Duration;

/// The Event Grid event for an ADE extension write on a VM of the sample fleet.
fn ade_event(rg: &str, name: &str, message_id: &str) -> OutboundMessage {
    let ext = format!("/subscriptions/{S1}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/extensions/AzureDiskEncryptionForLinux");
    let body = json!({
        "id": message_id, "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
    });
    OutboundMessage::json("vm-encryption-events", message_id, &body).expect("json")
}

/// web-lnx-02: Linux, BEK+KEK on an access-policy vault, not protected in the sample fleet.
fn web_lnx_02_event(id: &str) -> OutboundMessage {
    ade_event("rg-app-web", "web-lnx-02", id)
}

async fn encrypted_stack() -> SimStack {
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    stack
}

fn vm_key() -> String {
    format!("vms/{S1}/rg-app-web/web-lnx-02.json")
}

fn op_key(stack: &SimStack) -> String {
    let rec = stack.state.json(&vm_key()).expect("vm record");
    let op = rec["operationId"]
        .as_str()
        .expect("operation id")
        .to_string();
    format!("operations/protect/{op}.json")
}

/// Marks `step` as claimed by a crashed invocation whose lease has expired.
fn crash_inside(doc: &mut Value, step: &str) {
    doc["steps"][step]["state"] = json!({
        "status": "claimed", "by": "crashed#1",
        "at": "2020-01-01T00:00:00Z", "until": "2020-01-01T00:02:00Z"
    });
}

#[tokio::test]
async fn crash_after_the_access_policy_write_does_not_write_it_again() {
    let stack = encrypted_stack().await;
    stack.deliver(&web_lnx_02_event("evt-1"), 1).await;
    // Deliver the grant (it writes the access policy), but stop before BackupVm runs.
    let grant = stack.pump.take_next().expect("grant message");
    assert_eq!(grant.queue, "grant-key-vault-access");
    stack.deliver(&grant, 1).await;
    assert_eq!(stack.sim.stats().writes.access_policy_writes, 1);
    stack.pump.lose_pending();
    // The crash: the write happened, the step was never recorded as done.
    let key = op_key(&stack);
    let mut doc = stack.state.json(&key).expect("operation");
    crash_inside(&mut doc, "grant-key-vault-access");
    stack.state.put_json(&key, &doc);
    // Service Bus redelivers the grant message (delivery 2).
    stack.deliver(&grant, 2).await;
    stack.pump(200).await;
    let s = stack.sim.stats();
    assert_eq!(
        s.writes.access_policy_writes, 1,
        "access already in place: no second write"
    );
    assert_eq!(s.writes.protection_puts, 1);
    assert_eq!(s.writes.backup_now_calls, 1);
    let rec = stack.state.json(&vm_key()).expect("vm record");
    assert_eq!(rec["status"], "protected", "{rec}");
}

#[tokio::test]
async fn crash_after_backup_now_adopts_the_running_job() {
    let stack = encrypted_stack().await;
    stack.deliver(&web_lnx_02_event("evt-2"), 1).await;
    // Run until the backup-now step is recorded, then stop before tracking the job.
    stack
        .pump_until(100, |m| {
            String::from_utf8_lossy(&m.body).contains("\"track\"")
        })
        .await;
    assert_eq!(stack.sim.stats().writes.backup_now_calls, 1);
    let key = op_key(&stack);
    let mut doc = stack.state.json(&key).expect("operation");
    let claimed_at = doc["steps"]["backup-now"]["state"]["at"].clone();
    assert!(claimed_at.is_string(), "backup-now was done: {doc}");
    // The crash: the POST went out, nothing of it was recorded.
    doc["steps"]["backup-now"] = json!({
        "state": {"status": "claimed", "by": "crashed#1", "at": claimed_at, "until": "2020-01-01T00:00:00Z"},
        "attempts": 1
    });
    doc["azure"]["backupJobId"] = Value::Null;
    stack.state.put_json(&key, &doc);
    // The crashed invocation never sent its follow-up; its own message is redelivered.
    stack.pump.lose_pending();
    let generation = doc["generation"].as_u64().unwrap_or(0);
    let op_id = doc["operationId"].as_str().expect("id").to_string();
    let body =
        json!({"operationId": op_id, "generation": generation, "phase": "backup-now", "poll": 0});
    let redelivered = OutboundMessage::json(
        "backup-vm",
        format!("{op_id}-g{generation}-backup-now-0"),
        &body,
    )
    .expect("json");
    stack.deliver(&redelivered, 2).await;
    stack.pump(200).await;
    let s = stack.sim.stats();
    assert_eq!(
        s.writes.backup_now_calls, 1,
        "the running job is adopted, not started twice"
    );
    let rec = stack.state.json(&vm_key()).expect("vm record");
    assert_eq!(
        rec["status"],
        "protected",
        "{rec}\n{}",
        stack.state.json(&key).unwrap_or_default()
    );
    assert!(rec["azure"]["recoveryPointId"].is_string(), "{rec}");
}

#[tokio::test]
async fn crash_before_the_fan_out_is_repaired_by_redelivery() {
    let stack = encrypted_stack().await;
    let event = web_lnx_02_event("evt-3");
    stack.deliver(&event, 1).await;
    // The crash: the operation was written, the grant message was never sent.
    assert_eq!(stack.pump.lose_pending(), 1);
    stack.deliver(&event, 2).await;
    assert_eq!(stack.pump.pending(), 1, "the grant is sent again");
    stack.pump(200).await;
    let s = stack.sim.stats();
    assert_eq!(
        (s.writes.protection_puts, s.writes.backup_now_calls),
        (1, 1)
    );
    assert_eq!(
        stack.state.json(&vm_key()).expect("record")["status"],
        "protected"
    );
}

#[tokio::test]
async fn unknown_vm_event_is_acknowledged_without_azure_writes() {
    let stack = encrypted_stack().await;
    stack
        .deliver(&ade_event("rg-app-plain", "does-not-exist", "evt-4"), 1)
        .await;
    stack.pump(200).await;
    let s = stack.sim.stats();
    assert_eq!(s.writes.protection_puts + s.writes.access_policy_writes, 0);
    assert!(stack.pump.dead_lettered().is_empty());
}

/// Takes the next queued message, running everything before it, once it is `phase`.
async fn run_until_phase(stack: &SimStack, phase: &str) -> OutboundMessage {
    let wanted = format!("\"phase\":\"{phase}\"");
    stack
        .pump_until(100, |m| String::from_utf8_lossy(&m.body).contains(&wanted))
        .await;
    stack.pump.take_next().expect("the phase's message")
}

/// Without Service Bus duplicate detection, one follow-up can reach two invocations at once (a
/// step found done sends what follows again, with the same `MessageId`). Each step is taken by
/// one copy; the other copy is dropped or finds it done: one protected-item PUT, one backup-now.
#[tokio::test]
async fn the_same_follow_up_delivered_twice_at_once_writes_once() {
    let stack = encrypted_stack().await;
    stack.deliver(&web_lnx_02_event("evt-5"), 1).await;
    for phase in ["protect", "backup-now"] {
        let m = run_until_phase(&stack, phase).await;
        let (a, b) = tokio::join!(stack.deliver(&m, 1), stack.deliver(&m, 1));
        for outcome in [a, b] {
            assert!(
                matches!(outcome, Outcome::Completed(_)),
                "{phase}: {outcome:?}"
            );
        }
    }
    stack.pump(200).await;
    let s = stack.sim.stats();
    assert_eq!(
        (s.writes.protection_puts, s.writes.backup_now_calls),
        (1, 1),
        "{}",
        stack.state.json(&op_key(&stack)).unwrap_or_default()
    );
    let rec = stack.state.json(&vm_key()).expect("vm record");
    assert_eq!(rec["status"], "protected", "{rec}");
    assert!(stack.pump.dead_lettered().is_empty());
}

/// A backup of the VM already running when ade-backup asks for the first one (an operator's, a
/// schedule's, or another instance's): Azure Backup refuses the second with
/// `UserErrorBackupOperationInProgress`, and ade-backup adopts the running job instead of
/// failing the protection.
#[tokio::test]
async fn backup_now_refused_as_in_progress_adopts_the_running_job() {
    use ade_backup_shared::arm::recovery_services::{BackupJobFilter, JobOperation};
    use ade_backup_shared::ids::ResourceId;
    let stack = encrypted_stack().await;
    stack.deliver(&web_lnx_02_event("evt-6"), 1).await;
    let m = run_until_phase(&stack, "backup-now").await;
    let doc = stack.state.json(&op_key(&stack)).expect("operation");
    let vault: ResourceId = doc["target"]["target"]["vaultId"]
        .as_str()
        .expect("the operation's vault")
        .parse()
        .expect("a vault id");
    let vm: ResourceId = doc["vmId"].as_str().expect("vm").parse().expect("vm id");
    // An operator's backup, started just before ade-backup's.
    stack
        .ctx
        .arm
        .begin_backup_now(&vault, &vm, None)
        .await
        .expect("the operator's backup starts");
    stack.deliver(&m, 1).await;
    stack.pump(200).await;
    let rec = stack.state.json(&vm_key()).expect("vm record");
    let doc = stack.state.json(&op_key(&stack)).expect("operation");
    assert_eq!(rec["status"], "protected", "{rec}\n{doc}");
    let filter = BackupJobFilter {
        operation: Some(JobOperation::Backup),
        status: None,
        start_time: None,
        end_time: None,
    };
    let jobs: Vec<String> = (stack.ctx.arm.list_backup_jobs(&vault, &filter).await)
        .expect("jobs")
        .into_iter()
        .filter(|j| j.is_for_vm(&vm))
        .filter_map(|j| j.name)
        .collect();
    assert_eq!(jobs.len(), 1, "only the operator's backup ran: {jobs:?}");
    assert_eq!(doc["azure"]["backupJobId"], jobs[0].as_str(), "{doc}");
    assert!(stack.pump.dead_lettered().is_empty());
}
