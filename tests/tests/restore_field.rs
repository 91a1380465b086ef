//! Restore-side field failures (issue 14), end to end through the real handlers and the
//! simulator with its `fieldFault` switches: the daily restore limit defers a ticket, numeric
//! recovery-point tiers, deleted key material and a Key Vault changed after protection reject a
//! ticket before any restore job, and a Windows VM whose agent never gets ready needs attention.

use ade_backup_functions::records::RestoreOperation;
use ade_backup_shared::ids::ResourceId;
use ade_backup_sim::field::FieldFault;
use ade_backup_test_support::sim_stack::*;
use serde_json::json;

async fn submit(stack: &SimStack, ticket: &str, vm: &str, extra: serde_json::Value) {
    stack
        .submit(
            &format!("req-{ticket}"),
            &restore_request(ticket, vm, extra),
        )
        .await;
    stack.pump(2000).await;
}

fn doc(stack: &SimStack, ticket: &str) -> RestoreOperation {
    stack.restore_doc(ticket).expect("a restore document")
}

fn fault(stack: &SimStack, f: FieldFault) {
    stack.sim.field_fault(&f).expect("fault applies");
}

/// A ticket refused at protection-independent checks: the reason, and no restore job started.
async fn assert_rejected_before_any_restore(stack: &SimStack, ticket: &str, reason: &str) {
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let restores = stack.sim.stats().writes.restores;
    submit(stack, ticket, &vm, json!({})).await;
    let op = doc(stack, ticket);
    assert_eq!(op.status, "rejected", "{:#?}", op.history);
    let last = op.history.last().expect("history");
    assert_eq!(last.reason.as_deref(), Some(reason), "{last:#?}");
    assert!(last.next_action.is_some(), "{last:#?}");
    assert_eq!(
        stack.sim.stats().writes.restores,
        restores,
        "no restore job"
    );
}

#[tokio::test]
async fn daily_restore_limit_defers_the_ticket_and_restores_when_the_window_allows() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    fault(&stack, FieldFault::RestoreLimit { per_day: Some(0) });
    let body = restore_request("INC-DOS", &vm, json!({"targetVmName": "web-lnx-01-dos"}));
    let body = serde_json::to_vec(&body).expect("json");
    stack.pump.enqueue("restore-requests", "req-dos", body);
    // Stop before the deferred trigger (its id carries the deferral number).
    stack
        .pump_until(2000, |m| m.message_id == "INC-DOS-restore-trigger-1")
        .await;
    assert_eq!(stack.ticket_statuses("INC-DOS"), ["accepted", "deferred"]);
    let op = doc(&stack, "INC-DOS");
    let deferred = op.history.last().expect("history");
    assert_eq!(
        deferred.reason.as_deref(),
        Some("CloudDosAbsoluteLimitReached")
    );
    let until = op
        .steps
        .detail(ade_backup_functions::records::RestoreStep::RestoreDisks)
        .deferred_until
        .expect("deferred until");
    assert!(
        deferred.message.contains(&until.to_rfc3339()),
        "{deferred:#?}"
    );
    assert!((until - stack.sim.now()).num_hours() >= 23, "{until}");
    let next = stack
        .pump
        .sent()
        .into_iter()
        .find(|m| m.message_id == "INC-DOS-restore-trigger-1")
        .expect("a scheduled follow-up");
    assert!(next.scheduled_enqueue_time.is_some_and(|t| t >= until));
    // The window passes (the pump moves the clock to the follow-up) and the limit allows again.
    fault(&stack, FieldFault::RestoreLimit { per_day: Some(10) });
    stack.pump(2000).await;
    assert_eq!(
        stack.ticket_statuses("INC-DOS"),
        [
            "accepted",
            "deferred",
            "restoring-disks",
            "disks-restored",
            "deploying",
            "reinstalling-ade",
            "completed"
        ]
    );
}

#[tokio::test]
async fn the_limit_that_never_lifts_fails_the_ticket_after_bounded_deferrals() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    fault(&stack, FieldFault::RestoreLimit { per_day: Some(0) });
    submit(&stack, "INC-DOS2", &vm, json!({})).await;
    let s = stack.ticket_statuses("INC-DOS2");
    assert_eq!(s.iter().filter(|s| *s == "deferred").count(), 3, "{s:?}");
    assert_eq!(s.last().map(String::as_str), Some("failed"), "{s:?}");
    let op = doc(&stack, "INC-DOS2");
    assert_eq!(
        op.history.last().and_then(|u| u.reason.as_deref()),
        Some("CloudDosAbsoluteLimitReached")
    );
}

#[tokio::test]
async fn recovery_point_tiers_read_the_same_as_numbers_and_as_strings() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let (vault, vm_rid) = (
        ResourceId::parse(RSV_WEU).expect("vault"),
        ResourceId::parse(&vm).expect("vm"),
    );
    let tiers = |pts: &[ade_backup_shared::arm::RecoveryPoint]| -> Vec<(bool, bool)> {
        pts.iter()
            .map(|p| (p.has_snapshot_tier(), p.has_vault_tier()))
            .collect()
    };
    let as_strings = stack
        .ctx
        .arm
        .list_recovery_points(&vault, &vm_rid)
        .await
        .expect("points");
    fault(&stack, FieldFault::NumericTiers { on: true });
    let as_numbers = stack
        .ctx
        .arm
        .list_recovery_points(&vault, &vm_rid)
        .await
        .expect("points");
    assert!(!as_strings.is_empty());
    assert!(
        tiers(&as_strings).iter().any(|(_, vault)| *vault),
        "{as_strings:#?}"
    );
    assert_eq!(tiers(&as_numbers), tiers(&as_strings));
}

#[tokio::test]
async fn deleted_bek_secret_rejects_the_ticket_with_key_material_missing() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let what = "secrets".to_string();
    let key_vault = "kv-ade-ap-weu".to_string();
    fault(&stack, FieldFault::DeleteKeyMaterial { key_vault, what });
    assert_rejected_before_any_restore(&stack, "INC-NOKEY", "key-material-missing").await;
    let last = doc(&stack, "INC-NOKEY").history.pop().expect("history");
    assert!(last.message.contains("BEK secret"), "{}", last.message);
    assert!(
        last.next_action
            .as_deref()
            .is_some_and(|n| n.contains("Encryption Info Blob Name")),
        "{last:#?}"
    );
}

#[tokio::test]
async fn key_vault_changed_after_protection_is_checked_before_any_restore_job() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let change = |e: Option<bool>, l: Option<&str>| FieldFault::ChangeKeyVault {
        key_vault: "kv-ade-ap-weu".into(),
        enabled_for_disk_encryption: e,
        location: l.map(str::to_string),
    };
    fault(&stack, change(Some(false), None));
    let reason = "key-vault-not-enabled-for-disk-encryption";
    assert_rejected_before_any_restore(&stack, "INC-KV1", reason).await;
    fault(&stack, change(Some(true), Some("northeurope")));
    assert_rejected_before_any_restore(&stack, "INC-KV2", "key-vault-region").await;
}

#[tokio::test]
async fn windows_vm_whose_agent_never_gets_ready_is_completed_needs_attention() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let vm_name = "web-win-01-bl".to_string();
    fault(&stack, FieldFault::AgentNeverReady { vm_name });
    submit(
        &stack,
        "INC-BL",
        &vm,
        json!({"targetVmName": "web-win-01-bl"}),
    )
    .await;
    assert_eq!(
        stack.ticket_statuses("INC-BL"),
        [
            "accepted",
            "restoring-disks",
            "disks-restored",
            "deploying",
            "completed-needs-attention"
        ]
    );
    let op = doc(&stack, "INC-BL");
    let last = op.history.last().expect("history");
    assert_eq!(last.reason.as_deref(), Some("vm-agent-not-ready"));
    assert!(
        last.next_action
            .as_deref()
            .is_some_and(|n| n.contains("BitLocker recovery")),
        "{last:#?}"
    );
    let restored = vm_id(S1, "rg-restore", "web-win-01-bl");
    assert_eq!(op.azure.restored_vm_id.as_deref(), Some(restored.as_str()));
}

#[tokio::test]
async fn snapshot_tier_failure_is_retried_once_from_the_nearest_vault_tier_point() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    // The fleet's points of web-win-01: 20 h and 44 h (both tiers), 68 h (vault tier only).
    let vm_name = "web-win-01".to_string();
    fault(&stack, FieldFault::StaleSnapshotKeys { vm: vm_name });
    let restores = stack.sim.stats().writes.restores;
    let extra = json!({"targetVmName": "web-win-01-tier"});
    submit(&stack, "INC-TIER", &vm, extra).await;
    assert_eq!(
        stack.ticket_statuses("INC-TIER"),
        [
            "accepted",
            "restoring-disks",
            "restoring-disks",
            "restoring-disks",
            "disks-restored",
            "deploying",
            "completed"
        ]
    );
    assert_eq!(stack.sim.stats().writes.restores, restores + 2, "one retry");
    let op = doc(&stack, "INC-TIER");
    let step = ade_backup_functions::records::RestoreStep::RestoreDisks;
    let retry = op
        .steps
        .detail(step)
        .tier_retry
        .expect("the retry recorded");
    assert_eq!(retry.code, "UserErrorSnapshotKeyMismatch");
    assert_ne!(retry.point, retry.failed_point);
    assert_eq!(
        op.azure.recovery_point_id.as_deref(),
        Some(retry.point.as_str())
    );
    let age = stack.sim.now() - retry.point_time.expect("the point's time");
    assert!((68..72).contains(&age.num_hours()), "{age}");
    let notice = &op.history[2];
    assert_eq!(
        notice.reason.as_deref(),
        Some("UserErrorSnapshotKeyMismatch")
    );
    assert!(notice.message.contains(&retry.point), "{}", notice.message);
    assert!(notice.message.contains("vault tier"), "{}", notice.message);
    // A redelivered retry trigger starts no second restore job.
    let trigger = stack
        .pump
        .sent()
        .into_iter()
        .find(|m| m.message_id == "INC-TIER-restore-trigger-100")
        .expect("the retry's trigger");
    stack
        .pump
        .enqueue("restore-vm", "redelivered-retry", trigger.body);
    stack.pump(500).await;
    assert_eq!(stack.sim.stats().writes.restores, restores + 2);
    assert_eq!(doc(&stack, "INC-TIER").status, "completed");
}

#[tokio::test]
async fn snapshot_tier_failure_without_a_vault_only_point_fails_saying_so() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    // web-lnx-01's only fleet point is 22 h old: its snapshot tier is still valid.
    let vm_name = "web-lnx-01".to_string();
    fault(&stack, FieldFault::StaleSnapshotKeys { vm: vm_name });
    let restores = stack.sim.stats().writes.restores;
    submit(&stack, "INC-TIER2", &vm, json!({})).await;
    assert_eq!(
        stack.ticket_statuses("INC-TIER2"),
        ["accepted", "restoring-disks", "failed"]
    );
    assert_eq!(stack.sim.stats().writes.restores, restores + 1, "no retry");
    let op = doc(&stack, "INC-TIER2");
    let last = op.history.last().expect("history");
    assert_eq!(last.reason.as_deref(), Some("UserErrorSnapshotKeyMismatch"));
    assert!(
        last.message.contains("no automatic retry"),
        "{}",
        last.message
    );
    assert!(
        last.next_action
            .as_deref()
            .is_some_and(|n| n.contains("vault-tier copy")),
        "{last:#?}"
    );
}

const AAD_CLIENT: &str = "8f6c2e1a-0b3d-4c5e-9a7b-1d2e3f4a5b6c";

#[tokio::test]
async fn dual_pass_vm_is_classified_at_protection_and_its_restore_stops_before_a_half_reinstall() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let dual = FieldFault::DualPassAde {
        vm: "web-lnx-01".into(),
        aad_client_id: AAD_CLIENT.into(),
    };
    fault(&stack, dual);
    let record = stack.protect(&vm).await;
    assert_eq!(record["status"], "protected", "{record:#}");
    assert_eq!(record["ade"]["dualPass"], true, "{record:#}");
    assert_eq!(record["ade"]["aadClientId"], AAD_CLIENT, "{record:#}");
    assert_eq!(record["ade"]["typeHandlerVersion"], "0.1", "{record:#}");
    let extra = json!({"targetVmName": "web-lnx-01-aad"});
    submit(&stack, "INC-AAD", &vm, extra).await;
    assert_eq!(
        stack.ticket_statuses("INC-AAD"),
        [
            "accepted",
            "restoring-disks",
            "disks-restored",
            "deploying",
            "failed"
        ]
    );
    let op = doc(&stack, "INC-AAD");
    assert!(
        op.warnings
            .iter()
            .any(|w| w.starts_with("reinstall-needs-aad-credentials")),
        "warned at acceptance: {:?}",
        op.warnings
    );
    let last = op.history.last().expect("history");
    assert_eq!(
        last.reason.as_deref(),
        Some("reinstall-needs-aad-credentials")
    );
    assert_eq!(
        last.step,
        Some(ade_backup_functions::records::RestoreStep::ReinstallAde)
    );
    assert!(last.message.contains(AAD_CLIENT), "{}", last.message);
    let next = last.next_action.as_deref().unwrap_or_default();
    for part in [
        "Set-AzVMDiskEncryptionExtension",
        "-VMName web-lnx-01-aad",
        &format!("-AadClientID {AAD_CLIENT}"),
        "-AadClientSecret <secret>",
    ] {
        assert!(next.contains(part), "{part}: {next}");
    }
    // The VM is deployed and kept; no ADE extension was put on it.
    let restored = vm_id(S1, "rg-restore", "web-lnx-01-aad");
    assert_eq!(op.azure.restored_vm_id.as_deref(), Some(restored.as_str()));
    assert_eq!(op.azure.ade_extension_id, None);
    let restored = ResourceId::parse(&restored).expect("id");
    stack
        .ctx
        .arm
        .get_virtual_machine(&restored)
        .await
        .expect("the restored VM exists");
    let ext = stack
        .ctx
        .arm
        .get_vm_extension(&restored, "AzureDiskEncryptionForLinux")
        .await;
    assert!(ext.as_ref().is_err_and(|e| e.is_not_found()), "{ext:?}");
}

#[tokio::test]
async fn single_pass_vm_is_not_dual_pass() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let record = stack.protect(&vm).await;
    assert_eq!(record["status"], "protected");
    assert!(record["ade"].get("dualPass").is_none(), "{record:#}");
    assert!(record["ade"].get("aadClientId").is_none(), "{record:#}");
}

#[tokio::test]
async fn a_redelivered_failure_after_the_retry_was_recorded_starts_no_second_job() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let vm_name = "web-win-01".to_string();
    fault(&stack, FieldFault::StaleSnapshotKeys { vm: vm_name });
    let restores = stack.sim.stats().writes.restores;
    let body = restore_request("INC-TIER3", &vm, json!({"targetVmName": "web-win-01-t3"}));
    let body = serde_json::to_vec(&body).expect("json");
    stack.pump.enqueue("restore-requests", "req-tier3", body);
    // Stop once the retry is recorded, before its trigger runs.
    stack
        .pump_until(2000, |m| m.message_id == "INC-TIER3-restore-trigger-100")
        .await;
    let step = ade_backup_functions::records::RestoreStep::RestoreDisks;
    let op = doc(&stack, "INC-TIER3");
    assert!(op.steps.detail(step).tier_retry.is_some(), "{op:#?}");
    assert_eq!(op.azure.restore_job_id, None);
    // The track message that saw the failure is delivered again (as after a crash).
    let track = stack
        .pump
        .sent()
        .into_iter()
        .rfind(|m| m.message_id.starts_with("INC-TIER3-restore-track"))
        .expect("a track message");
    stack
        .pump
        .enqueue("restore-vm", "redelivered-track", track.body);
    stack.pump(2000).await;
    assert_eq!(
        stack.sim.stats().writes.restores,
        restores + 2,
        "one retry job"
    );
    let op = doc(&stack, "INC-TIER3");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    let notices = op
        .history
        .iter()
        .filter(|u| u.reason.as_deref() == Some("UserErrorSnapshotKeyMismatch"))
        .count();
    assert_eq!(notices, 1, "{:#?}", op.history);
}
