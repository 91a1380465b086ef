//! Automatic protection survives crashes between any two steps: state is tampered with exactly as
//! a crash would leave it (a step claimed, its Azure call made, nothing recorded), the message is
//! redelivered, and the work resumes without repeating what Azure already did.

use ade_backup_sim::Fleet;
use ade_backup_tests::pump::{Queued, Stack};
use serde_json::{json, Value};
use std::time::Duration;

const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";

fn vm_id(name: &str) -> String {
    format!("/subscriptions/{S1}/resourceGroups/rg-app-plain/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// The Event Grid event for an ADE extension write, as a queued message.
fn ade_event(name: &str, message_id: &str) -> Queued {
    let ext = format!("{}/extensions/AzureDiskEncryptionForLinux", vm_id(name));
    let body = json!({
        "id": message_id, "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
    });
    Queued {
        message: ade_backup_shared::messaging::OutboundMessage::json(
            "vm-encryption-events",
            message_id,
            &body,
        )
        .expect("json"),
        delivery_count: 1,
    }
}

async fn encrypted_stack() -> Stack {
    // web-lnx-02: Linux, BEK+KEK on an access-policy vault, not protected in the sample fleet.
    let stack = Stack::start(Fleet::sample()).await;
    stack.sim.advance(Duration::from_secs(60));
    stack
}

fn op_key(stack: &Stack) -> String {
    let rec = stack.doc(&vm_key()).expect("vm record");
    let op = rec["operationId"]
        .as_str()
        .expect("operation id")
        .to_string();
    format!("operations/protect/{op}.json")
}

fn vm_key() -> String {
    format!("vms/{S1}/rg-app-web/web-lnx-02.json")
}

fn web_lnx_02_event(id: &str) -> Queued {
    let ext = format!("/subscriptions/{S1}/resourceGroups/rg-app-web/providers/Microsoft.Compute/virtualMachines/web-lnx-02/extensions/AzureDiskEncryptionForLinux");
    let body = json!({
        "id": id, "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "data": {"resourceUri": ext, "status": "Succeeded"}
    });
    Queued {
        message: ade_backup_shared::messaging::OutboundMessage::json(
            "vm-encryption-events",
            id,
            &body,
        )
        .expect("json"),
        delivery_count: 1,
    }
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
    stack.deliver(web_lnx_02_event("evt-1")).await;
    // Deliver the grant (it writes the access policy), but stop before BackupVm runs.
    let grant = stack.queue.pop().expect("grant message");
    assert_eq!(grant.message.queue, "grant-key-vault-access");
    stack.deliver(grant.clone()).await;
    assert_eq!(stack.sim.stats().writes.access_policy_writes, 1);
    // The crash: the write happened, the step was never recorded as done.
    let key = op_key(&stack);
    let mut doc = stack.doc(&key).expect("operation");
    crash_inside(&mut doc, "grant-key-vault-access");
    stack.write_doc(&key, &doc);
    // Service Bus redelivers the grant message (delivery 2).
    stack
        .deliver(Queued {
            delivery_count: 2,
            ..grant
        })
        .await;
    stack.pump().await;
    let s = stack.sim.stats();
    assert_eq!(
        s.writes.access_policy_writes, 1,
        "access already in place: no second write"
    );
    assert_eq!(s.writes.protection_puts, 1);
    assert_eq!(s.writes.backup_now_calls, 1);
    let rec = stack.doc(&vm_key()).expect("vm record");
    assert_eq!(rec["status"], "protected", "{rec}");
}

#[tokio::test]
async fn crash_after_backup_now_adopts_the_running_job() {
    let stack = encrypted_stack().await;
    stack.deliver(web_lnx_02_event("evt-2")).await;
    // Run until the backup-now step is recorded, then stop before tracking the job.
    stack
        .pump_until(100, Duration::from_secs(60), |q| {
            String::from_utf8_lossy(&q.message.body).contains("\"track\"")
        })
        .await;
    assert_eq!(stack.sim.stats().writes.backup_now_calls, 1);
    let key = op_key(&stack);
    let mut doc = stack.doc(&key).expect("operation");
    let claimed_at = doc["steps"]["backup-now"]["state"]["at"].clone();
    assert!(claimed_at.is_string(), "backup-now was done: {doc}");
    // The crash: the POST went out, nothing of it was recorded.
    doc["steps"]["backup-now"] = json!({
        "state": {"status": "claimed", "by": "crashed#1", "at": claimed_at, "until": "2020-01-01T00:00:00Z"},
        "attempts": 1
    });
    doc["azure"]["backupJobId"] = Value::Null;
    stack.write_doc(&key, &doc);
    // The crashed invocation never sent its follow-up; its own message is redelivered.
    stack.queue.lose_all();
    let generation = doc["generation"].as_u64().unwrap_or(0);
    let op_id = doc["operationId"].as_str().expect("id").to_string();
    let body =
        json!({"operationId": op_id, "generation": generation, "phase": "backup-now", "poll": 0});
    let redelivered = Queued {
        message: ade_backup_shared::messaging::OutboundMessage::json(
            "backup-vm",
            format!("{op_id}-g{generation}-backup-now-0"),
            &body,
        )
        .expect("json"),
        delivery_count: 2,
    };
    stack.deliver(redelivered).await;
    stack.pump().await;
    let s = stack.sim.stats();
    assert_eq!(
        s.writes.backup_now_calls, 1,
        "the running job is adopted, not started twice"
    );
    let rec = stack.doc(&vm_key()).expect("vm record");
    assert_eq!(
        rec["status"],
        "protected",
        "{rec}\n{}",
        stack.doc(&key).unwrap_or_default()
    );
    assert!(rec["azure"]["recoveryPointId"].is_string(), "{rec}");
}

#[tokio::test]
async fn crash_before_the_fan_out_is_repaired_by_redelivery() {
    let stack = encrypted_stack().await;
    let event = web_lnx_02_event("evt-3");
    stack.deliver(event.clone()).await;
    // The crash: the operation was written, the grant message was never sent.
    assert_eq!(stack.queue.lose_all(), 1);
    stack
        .deliver(Queued {
            delivery_count: 2,
            ..event
        })
        .await;
    assert_eq!(stack.queue.len(), 1, "the grant is sent again");
    stack.pump().await;
    let s = stack.sim.stats();
    assert_eq!(
        (s.writes.protection_puts, s.writes.backup_now_calls),
        (1, 1)
    );
    assert_eq!(stack.doc(&vm_key()).expect("record")["status"], "protected");
}

#[tokio::test]
async fn unknown_vm_event_is_acknowledged_without_azure_writes() {
    let stack = encrypted_stack().await;
    stack.deliver(ade_event("does-not-exist", "evt-4")).await;
    stack.pump().await;
    let s = stack.sim.stats();
    assert_eq!(s.writes.protection_puts + s.writes.access_policy_writes, 0);
    assert!(stack.dead_letters.lock().expect("lock").is_empty());
}
