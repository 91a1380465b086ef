//! Restores driven end to end: the real handlers, the real simulator, an in-test queue pump.

use ade_backup_functions::records::{restore_key, RestoreOperation, RestoreStep};
use ade_backup_functions::status;
use ade_backup_shared::ids::{ResourceId, TicketId};
use ade_backup_sim::WriteStats;
use ade_backup_test_support::sim_stack::*;
use serde_json::{json, Value};

fn request(ticket: &str, vm: &str, extra: Value) -> Vec<u8> {
    serde_json::to_vec(&restore_request(ticket, vm, extra)).expect("json")
}

fn doc(stack: &SimStack, ticket: &str) -> RestoreOperation {
    let t = TicketId::parse(ticket).expect("ticket");
    serde_json::from_value(
        stack
            .state
            .json(&restore_key(&t))
            .expect("restore document"),
    )
    .expect("a restore document")
}

async fn submit(stack: &SimStack, id: &str, body: Vec<u8>) {
    stack.pump.enqueue("restore-requests", id, body);
    stack.pump(2000).await;
}

async fn disk_codes(stack: &SimStack, vm: &str) -> Vec<String> {
    let vm = stack
        .ctx
        .arm
        .get_virtual_machine(&ResourceId::parse(vm).expect("id"))
        .await
        .expect("restored VM");
    vm.properties
        .instance_view
        .expect("instance view")
        .disks
        .iter()
        .flat_map(|d| d.statuses.iter().filter_map(|s| s.code.clone()))
        .filter(|c| c.starts_with("EncryptionState/"))
        .collect()
}

/// Restores, deployments and extension PUTs the simulator accepted since `before`.
fn restore_writes_since(stack: &SimStack, before: &WriteStats) -> (u64, u64, u64) {
    let w = stack.sim.stats().writes;
    (
        w.restores - before.restores,
        w.deployments - before.deployments,
        w.extension_puts - before.extension_puts,
    )
}

#[tokio::test]
async fn linux_bek_restore_reinstalls_ade_and_unlocks_the_data_disks() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let rec = stack.protect(&vm).await;
    assert_eq!(rec["status"], "protected", "{rec}");
    let before = stack.sim.stats().writes;
    submit(
        &stack,
        "req-1",
        request("INC-1001", &vm, json!({"targetVmName": "web-lnx-01-r"})),
    )
    .await;

    let op = doc(&stack, "INC-1001");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert_eq!(
        stack.ticket_statuses("INC-1001"),
        [
            "accepted",
            "restoring-disks",
            "disks-restored",
            "deploying",
            "reinstalling-ade",
            "completed"
        ]
    );
    // Status messages: CorrelationId = ticket, MessageId = {ticket}-{sequence}-{status}, and the
    // same updates are the document's history.
    let replies = stack.replies(REPLY_QUEUE);
    for (i, (m, u)) in replies.iter().enumerate() {
        assert_eq!(m.correlation_id.as_deref(), Some("INC-1001"));
        assert_eq!(m.message_id, format!("INC-1001-{}-{}", i + 1, u.status));
        assert_eq!(u.sequence as usize, i + 1);
        assert_eq!(&op.history[i], u);
    }
    let new_vm = vm_id(S1, "rg-restore", "web-lnx-01-r");
    assert_eq!(op.azure.restored_vm_id.as_deref(), Some(new_vm.as_str()));
    let template = op.azure.template_blob_uri.clone().expect("template");
    assert!(template.starts_with("https://stadebkpweu.blob.core.windows.net/"));
    assert!(!template.contains('?'), "no SAS stored: {template}");
    assert!(!op.azure.restored_disk_ids.is_empty());

    assert_ade_reinstalled_for_data_disks(&stack, &new_vm).await;

    assert_eq!(restore_writes_since(&stack, &before), (1, 1, 1));

    assert_status_cli_reads(&stack).await;
}

/// The restored Linux VM's data disks are encrypted again by a reinstalled ADE extension
/// (`VolumeType` Data: the OS disk stays as it was).
async fn assert_ade_reinstalled_for_data_disks(stack: &SimStack, new_vm: &str) {
    let codes = disk_codes(stack, new_vm).await;
    assert_eq!(codes.len(), 3, "{codes:?}");
    assert_eq!(
        codes[0], "EncryptionState/notEncrypted",
        "VolumeType Data leaves the OS disk"
    );
    assert!(
        codes[1..].iter().all(|c| c == "EncryptionState/encrypted"),
        "{codes:?}"
    );
    let ext = stack
        .ctx
        .arm
        .get_vm_extension(
            &ResourceId::parse(new_vm).expect("id"),
            "AzureDiskEncryptionForLinux",
        )
        .await
        .expect("ADE extension");
    let settings = ext.properties.settings.expect("settings");
    assert_eq!(settings["EncryptionOperation"], "EnableEncryption");
    assert_eq!(settings["VolumeType"], "Data");
    assert!(settings["KeyVaultResourceId"]
        .as_str()
        .is_some_and(|s| s.ends_with("/kv-ade-ap-weu")));
}

/// The status CLI's material: INC-1001 is found and rendered, an unknown ticket is not.
async fn assert_status_cli_reads(stack: &SimStack) {
    let found = status::ticket_status(
        stack.state.as_ref(),
        &TicketId::parse("INC-1001").expect("ticket"),
    )
    .await
    .expect("read")
    .expect("found");
    let text = status::render_text(&found);
    assert!(
        text.contains("reinstalling-ade") && text.contains("completed"),
        "{text}"
    );
    assert!(status::ticket_status(
        stack.state.as_ref(),
        &TicketId::parse("INC-none").expect("ticket")
    )
    .await
    .expect("read")
    .is_none());
}

#[tokio::test]
async fn linux_kek_restore_reinstalls_ade_with_the_kek() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-db", "db-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    submit(&stack, "req-kek", request("INC-KEK", &vm, json!({}))).await;
    let op = doc(&stack, "INC-KEK");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    let new_vm = vm_id(S1, "rg-restore", "db-lnx-01-restored");
    let ext = stack
        .ctx
        .arm
        .get_vm_extension(
            &ResourceId::parse(&new_vm).expect("id"),
            "AzureDiskEncryptionForLinux",
        )
        .await
        .expect("ADE extension");
    let settings = ext.properties.settings.expect("settings");
    assert!(settings["KeyEncryptionKeyURL"]
        .as_str()
        .is_some_and(|s| s.contains("/keys/kek-weu")));
    assert!(settings["KekVaultResourceId"].is_string());
    let codes = disk_codes(&stack, &new_vm).await;
    assert!(
        codes[1..].iter().all(|c| c == "EncryptionState/encrypted"),
        "{codes:?}"
    );
}

#[tokio::test]
async fn windows_restore_needs_no_reinstall_and_reports_the_power_state() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let puts = stack.sim.stats().writes.extension_puts;
    submit(&stack, "req-win", request("INC-WIN", &vm, json!({}))).await;
    let op = doc(&stack, "INC-WIN");
    assert_eq!(
        stack.ticket_statuses("INC-WIN"),
        [
            "accepted",
            "restoring-disks",
            "disks-restored",
            "deploying",
            "completed"
        ]
    );
    let last = op.history.last().expect("history");
    assert!(
        last.message.contains("power state running"),
        "{}",
        last.message
    );
    assert!(
        last.message.contains("no ADE reinstall"),
        "{}",
        last.message
    );
    assert_eq!(stack.sim.stats().writes.extension_puts, puts);
}

#[tokio::test]
async fn point_in_time_takes_the_newest_point_strictly_before() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    stack.protect(&vm).await;
    let points = stack
        .ctx
        .arm
        .list_recovery_points(
            &ResourceId::parse(RSV_WEU).expect("vault"),
            &ResourceId::parse(&vm).expect("vm"),
        )
        .await
        .expect("points");
    let mut times: Vec<_> = points
        .iter()
        .filter_map(|p| {
            p.properties
                .recovery_point_time
                .map(|t| (t, p.name.clone()))
        })
        .collect();
    times.sort();
    assert!(times.len() >= 3, "{times:?}");
    // exactly at the second-newest point: "strictly before" must take the third-newest
    let (at, _) = times[times.len() - 2];
    let (_, expected) = times[times.len() - 3].clone();
    submit(
        &stack,
        "req-pit",
        request(
            "INC-PIT",
            &vm,
            json!({"recoveryPoint": {"before": at.to_rfc3339()}, "targetVmName": "web-win-01-pit"}),
        ),
    )
    .await;
    let op = doc(&stack, "INC-PIT");
    assert_eq!(op.azure.recovery_point_id, expected);
    assert_eq!(op.status, "completed", "{:#?}", op.history);
}

#[tokio::test]
async fn duplicate_submissions_and_redeliveries_do_not_restore_twice() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    stack.protect(&vm).await;
    let before = stack.sim.stats().writes;
    let body = request("INC-DUP", &vm, json!({}));
    // The same request twice at once (different MessageIds: two submissions), then once more
    // after completion.
    stack
        .pump
        .enqueue("restore-requests", "dup-a", body.clone());
    stack
        .pump
        .enqueue("restore-requests", "dup-b", body.clone());
    stack.pump(2000).await;
    assert_eq!(doc(&stack, "INC-DUP").status, "completed");
    let n = stack.replies(REPLY_QUEUE).len();
    submit(&stack, "dup-c", body).await;
    let replies = stack.replies(REPLY_QUEUE);
    assert_eq!(replies.len(), n + 1);
    let (m, u) = replies.last().expect("reply");
    assert_eq!(u.status, "completed");
    assert_eq!(
        m.message_id,
        format!("INC-DUP-{}-completed", u.sequence),
        "the latest status again, with its own id"
    );

    // Every worker message delivered again (a redelivery after a lost lock): nothing new.
    let again: Vec<_> = stack
        .pump
        .sent()
        .into_iter()
        .filter(|m| m.queue == "restore-vm" || m.queue == "redeploy-vm")
        .collect();
    assert!(!again.is_empty());
    for m in &again {
        stack.deliver(m, 2).await;
    }
    stack.pump(2000).await;
    assert_eq!(restore_writes_since(&stack, &before), (1, 1, 1));
    let op = doc(&stack, "INC-DUP");
    assert_eq!(op.status, "completed");
    assert_eq!(op.history.len(), 6, "{:#?}", op.history);
}

#[tokio::test]
async fn a_crash_between_the_restore_trigger_and_its_record_adopts_the_job() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    stack.protect(&vm).await;
    let before = stack.sim.stats().writes.restores;
    stack.pump.enqueue(
        "restore-requests",
        "crash-1",
        request("INC-CRASH", &vm, json!({})),
    );
    assert_eq!(stack.pump(1).await, 1, "the request alone");
    // RestoreVm: the claim is written (and renewed right before the call), the restore is
    // triggered, then the process "dies" before recording it.
    stack.store.fail_after_writes(2);
    assert_eq!(stack.pump(1).await, 1);
    stack.store.heal();
    assert_eq!(stack.sim.stats().writes.restores - before, 1);
    assert!(matches!(
        stack.pump.deliveries().last().map(|d| &d.outcome),
        Some(ade_backup_functions::handlers::Outcome::Failed {
            dead_letter: None,
            ..
        })
    ));
    stack.pump(2000).await;
    let op = doc(&stack, "INC-CRASH");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert_eq!(
        stack.sim.stats().writes.restores - before,
        1,
        "no second restore job"
    );
    assert_eq!(
        op.steps.get(RestoreStep::RestoreDisks).map(|s| s.attempts),
        Some(2),
        "the second attempt adopted the job"
    );
}

#[tokio::test]
async fn a_failed_deployment_is_reported_failed_with_a_next_action() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    stack.protect(&vm).await;
    // The target name is free when the request is validated; someone creates a VM with that
    // name while the disks are restored: ARM refuses the deployment.
    let body = request("INC-FAIL", &vm, json!({"targetVmName": "web-lnx-01-taken"}));
    stack.pump.enqueue("restore-requests", "req-fail", body);
    stack.pump_until(2000, |m| m.queue == "redeploy-vm").await;
    let taken: ade_backup_sim::fleet::Vm = serde_json::from_value(json!({
        "subscription": S1, "resourceGroup": "rg-restore", "name": "web-lnx-01-taken",
        "location": "westeurope", "osType": "Linux"
    }))
    .expect("a fleet VM");
    stack.sim.add_vm(&taken);
    stack.pump(2000).await;
    let op = doc(&stack, "INC-FAIL");
    assert_eq!(op.status, "failed");
    let last = op.history.last().expect("history");
    assert_eq!(last.step.map(|s| s.as_str()), Some("deploy"));
    assert_eq!(last.reason.as_deref(), Some("Conflict"));
    assert!(last
        .next_action
        .as_deref()
        .is_some_and(|n| n.contains("kept")));
    let err = op.last_error.expect("the Azure error is recorded");
    assert!(err.message.contains("already exists"), "{}", err.message);
    assert_eq!(
        stack.ticket_statuses("INC-FAIL").last().map(String::as_str),
        Some("failed")
    );
    // Nothing cleaned up: the template and job stay recorded.
    assert!(op.azure.template_blob_uri.is_some() && op.azure.restore_job_id.is_some());
}

#[tokio::test]
async fn a_vm_protected_before_ade_backup_is_adopted_and_restored() {
    // web-lnx-01 was protected by Azure Backup before ade-backup existed: no VM record. The
    // request records its ADE settings from the live VM and restores it.
    let stack = SimStack::start().await;
    restore_web_lnx_01(&stack, "INC-ADOPT", "web-lnx-01-a").await;
}

#[tokio::test]
async fn a_vm_the_sweep_recorded_is_restorable_after_it_is_deleted() {
    // web-lnx-01 was protected before ade-backup existed. The scheduled sweep records its ADE
    // settings from Resource Graph (adopting it when healthy; in the sample fleet its recovery
    // point is stale, so the repair it starts records them); the VM is then deleted — the usual
    // reason for a restore — and nothing is left to read the settings from.
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let summary = match ade_backup_functions::workflows::sweep::run(&stack.ctx)
        .await
        .expect("sweep")
    {
        ade_backup_functions::workflows::sweep::SweepOutcome::Completed(s) => s,
        other => panic!("sweep skipped: {other:?}"),
    };
    assert!(!summary.outcomes.is_empty(), "{:?}", summary.outcomes);
    let key = ade_backup_functions::records::vm_record_key(&ResourceId::parse(&vm).expect("id"));
    let rec = stack.state.json(&key).expect("the sweep recorded the VM");
    assert!(rec["ade"]["keyVaultUrl"].is_string(), "{rec}");
    // the work the sweep started finishes
    stack.pump(2_000).await;
    let rec = stack.state.json(&key).expect("record");
    assert_eq!(rec["status"], "protected", "{rec}");
    stack.sim.delete_vm(&vm).expect("delete the VM");
    restore_web_lnx_01(&stack, "INC-DELETED", "web-lnx-01-r").await;
}

/// Restores web-lnx-01 (Linux, ADE on kv-ade-ap-weu) under `ticket` and checks the restore
/// completed with the recorded ADE settings and one ADE reinstall.
async fn restore_web_lnx_01(stack: &SimStack, ticket: &str, target_name: &str) {
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    submit(
        stack,
        &format!("req-{ticket}"),
        request(ticket, &vm, json!({"targetVmName": target_name})),
    )
    .await;
    let op = doc(stack, ticket);
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert!(op
        .ade
        .as_ref()
        .is_some_and(|a| a.key_vault_url.contains("kv-ade-ap-weu")));
    assert_eq!(
        stack.sim.stats().writes.extension_puts,
        1,
        "ADE reinstalled on the Linux VM"
    );
}
