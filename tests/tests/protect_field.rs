//! Field failure modes of automatic protection (issue 14), end to end through the real protection
//! workflow and the simulator: a VM agent that is not ready, a deallocated VM, unmanaged disks,
//! and Azure Backup's daily limit on on-demand backups.

use ade_backup_functions::workflows::protect::{evaluate_with, Origin};
use ade_backup_shared::ids::ResourceId;
use ade_backup_sim::fleet::{Fleet, PowerState, VmAgent};
use ade_backup_test_support::sim_stack::{vm_id, SimStack, S1};
use serde_json::Value;
use std::time::Duration;

async fn stack() -> SimStack {
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    stack
}

fn record(stack: &SimStack, vm: &str) -> Value {
    let id = ResourceId::parse(vm).expect("id");
    stack
        .state
        .json(&ade_backup_functions::records::vm_record_key(&id))
        .expect("a VM record")
}

#[tokio::test]
async fn a_vm_whose_agent_is_not_ready_is_blocked_with_the_fix_then_protected_once_ready() {
    let stack = stack().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-02");
    stack.sim.set_vm_agent(&vm, VmAgent::NotReady).expect("vm");
    let rec = stack.protect(&vm).await;
    assert_eq!(rec["status"], "blocked", "{rec}");
    assert_eq!(rec["reason"], "vm-agent-not-ready");
    let msg = rec["message"].as_str().expect("message");
    assert!(
        msg.contains("Not Ready") && msg.contains("agent-linux"),
        "{msg}"
    );
    let s = stack.sim.stats();
    assert_eq!(s.writes.protection_puts, 0, "nothing attempted in Azure");
    assert_eq!(s.writes.backup_now_calls, 0);
    // The owner repairs the agent; the next look (a sweep) protects the VM.
    stack.sim.set_vm_agent(&vm, VmAgent::Ready).expect("vm");
    let rec = stack.protect(&vm).await;
    assert_eq!(rec["status"], "protected", "{rec}");
    assert!(rec["reason"].is_null(), "{rec}");
}

#[tokio::test]
async fn a_vm_without_an_agent_is_blocked_and_a_deallocated_vm_waits_without_failing() {
    let stack = stack().await;
    let absent = vm_id(S1, "rg-app-db", "db-lnx-02");
    stack
        .sim
        .set_vm_agent(&absent, VmAgent::Absent)
        .expect("vm");
    let rec = stack.protect(&absent).await;
    assert_eq!(rec["reason"], "vm-agent-not-ready", "{rec}");
    assert!(rec["message"]
        .as_str()
        .is_some_and(|m| m.contains("no VM agent")));
    let off = vm_id(S1, "rg-app-web", "web-win-02");
    stack
        .sim
        .set_power_state(&off, PowerState::Deallocated)
        .expect("vm");
    let rec = stack.protect(&off).await;
    assert_eq!(rec["status"], "blocked", "{rec}");
    assert_eq!(rec["reason"], "vm-deallocated");
    assert_eq!(stack.sim.stats().writes.protection_puts, 0);
}

#[tokio::test]
async fn a_backup_job_failing_on_the_agent_ends_blocked_not_failed() {
    let stack = stack().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-02");
    let id = ResourceId::parse(&vm).expect("id");
    stack.clock.set(stack.sim.now());
    evaluate_with(&stack.ctx, &id, Origin::Sweep("t".into()), false)
        .await
        .expect("evaluation");
    // Protection goes ahead; the agent stops answering before the backup's snapshot.
    stack
        .pump_until(500, |m| {
            m.queue == "backup-vm" && String::from_utf8_lossy(&m.body).contains("\"backup-now\"")
        })
        .await;
    stack.sim.set_vm_agent(&vm, VmAgent::NotReady).expect("vm");
    stack.pump(500).await;
    let rec = record(&stack, &vm);
    assert_eq!(rec["status"], "blocked", "{rec}");
    assert_eq!(rec["reason"], "vm-agent-not-ready");
    assert!(rec["message"]
        .as_str()
        .is_some_and(|m| m.contains("UserErrorGuestAgentStatusUnavailable")));
    assert_eq!(stack.sim.stats().writes.backup_now_calls, 1);
}

#[tokio::test]
async fn an_encrypted_vm_on_unmanaged_disks_is_unsupported_and_never_attempted() {
    let stack = stack().await;
    let mut legacy = Fleet::sample()
        .vms
        .into_iter()
        .find(|v| v.name == "web-lnx-02")
        .expect("sample vm");
    legacy.name = "vhd-lnx-01".into();
    legacy.unmanaged_disks = true;
    stack.sim.add_vm(&legacy);
    let vm = vm_id(S1, "rg-app-web", "vhd-lnx-01");
    let rec = stack.protect(&vm).await;
    assert_eq!(rec["status"], "unsupported", "{rec}");
    assert_eq!(rec["reason"], "unmanaged-disks");
    assert!(rec["message"]
        .as_str()
        .is_some_and(|m| m.contains("30 September 2025")));
    let s = stack.sim.stats();
    assert_eq!(s.writes.protection_puts + s.writes.backup_now_calls, 0);
}

/// A backup-vm message of phase backup-now sent for later (a deferral).
fn deferred_backup(m: &ade_backup_shared::messaging::OutboundMessage) -> bool {
    m.queue == "backup-vm"
        && String::from_utf8_lossy(&m.body).contains("\"backup-now\"")
        && m.scheduled_enqueue_time.is_some()
}

#[tokio::test]
async fn azure_s_daily_limit_defers_the_backup_to_the_next_day_without_retrying() {
    daily_limit_defers(false).await;
}

#[tokio::test]
async fn the_daily_limit_failing_the_backup_s_long_running_operation_defers_it_too() {
    daily_limit_defers(true).await;
}

/// Azure refuses a backup now for the daily limit, on the trigger call or (`in_operation`) in
/// the trigger's long-running operation: either way the step is deferred a day, never failed.
async fn daily_limit_defers(in_operation: bool) {
    let stack = stack().await;
    stack.sim.set_daily_limit_in_operation(in_operation);
    // web-lnx-01 is protected in the sample fleet; someone took three backups today already.
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    stack.sim.take_on_demand_backups(&vm, 3).expect("vm");
    let id = ResourceId::parse(&vm).expect("id");
    stack.clock.set(stack.sim.now());
    let start = stack.sim.now();
    evaluate_with(&stack.ctx, &id, Origin::Sweep("t".into()), true)
        .await
        .expect("evaluation");
    stack.pump_until(500, deferred_backup).await;
    let rec = record(&stack, &vm);
    assert_eq!(rec["status"], "in-progress", "{rec}");
    assert_eq!(rec["reason"], "backup-deferred-daily-limit");
    assert_eq!(rec["deferred"]["reason"], "daily-limit-azure", "{rec}");
    assert_eq!(
        stack.sim.stats().calls("rs.backupNow"),
        1,
        "refused once, never retried in a loop"
    );
    let next = stack
        .pump
        .sent()
        .into_iter()
        .rev()
        .find(deferred_backup)
        .expect("a deferred backup");
    let at = next.scheduled_enqueue_time.expect("scheduled");
    assert!((at - start).num_hours() >= 24, "{at} vs {start}");
    stack.pump(500).await;
    let rec = record(&stack, &vm);
    assert_eq!(rec["status"], "protected", "{rec}");
    assert!(rec.get("deferred").is_none(), "{rec}");
    assert_eq!(stack.sim.stats().calls("rs.backupNow"), 2);
}

#[tokio::test]
async fn ade_backup_never_asks_for_a_fourth_on_demand_backup_in_a_day() {
    let stack = stack().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let id = ResourceId::parse(&vm).expect("id");
    for _ in 0..3 {
        stack.clock.set(stack.sim.now());
        evaluate_with(&stack.ctx, &id, Origin::Sweep("t".into()), true)
            .await
            .expect("evaluation");
        stack.pump(500).await;
        assert_eq!(record(&stack, &vm)["status"], "protected");
    }
    assert_eq!(stack.sim.stats().calls("rs.backupNow"), 3);
    stack.clock.set(stack.sim.now());
    evaluate_with(&stack.ctx, &id, Origin::Sweep("t".into()), true)
        .await
        .expect("evaluation");
    stack.pump_until(500, deferred_backup).await;
    let rec = record(&stack, &vm);
    assert_eq!(rec["deferred"]["reason"], "daily-limit-own", "{rec}");
    assert_eq!(
        stack.sim.stats().calls("rs.backupNow"),
        3,
        "the fourth is not asked for"
    );
    stack.pump(500).await;
    assert_eq!(record(&stack, &vm)["status"], "protected");
    assert_eq!(stack.sim.stats().calls("rs.backupNow"), 4, "a day later");
}

/// The disk selection of `vm`'s protected item (`null` when every disk is backed up).
fn disk_selection(stack: &SimStack, vm: &str) -> Value {
    let item = stack.sim.protected_item(vm).expect("vm").expect("item");
    item["properties"]["extendedProperties"]["diskExclusionProperties"].clone()
}

/// The protection operation document of `vm` (the VM record names it).
fn operation(stack: &SimStack, vm: &str) -> Value {
    let rec = record(stack, vm);
    let id = rec["operationId"].as_str().expect("operation id");
    stack
        .state
        .json(&ade_backup_functions::records::protect_operation_key(id))
        .expect("operation document")
}

#[tokio::test]
async fn the_sweep_reports_a_disk_exclusion_on_an_ade_vm_and_protects_it_again_with_every_disk() {
    let stack = stack().await;
    // web-lnx-01 is protected in the sample fleet; someone excluded a data disk from its backup.
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    stack.sim.exclude_disks(&vm, &[0]).expect("vm");
    assert_eq!(
        disk_selection(&stack, &vm)["diskLunList"],
        serde_json::json!([0])
    );
    stack.clock.set(stack.sim.now());
    let s = run_sweep(&stack).await;
    assert_eq!(
        s.drift.get("disk-exclusion-on-ade"),
        Some(&1),
        "{:?}",
        s.drift
    );
    let rec = record(&stack, &vm);
    let facts = rec["extra"]["sweep"]["drift"].to_string();
    assert!(
        facts.contains("disk-exclusion-on-ade: backs up all but data disk LUNs [0]"),
        "{rec}"
    );
    stack.pump(2_000).await;
    assert!(disk_selection(&stack, &vm).is_null(), "exclusion reset");
    let rec = record(&stack, &vm);
    assert_eq!(rec["status"], "protected", "{rec}");
    let op = operation(&stack, &vm);
    assert!(
        op["history"].to_string().contains("disk exclusion reset"),
        "{op}"
    );
    // One PUT, under the item's own policy (the sweep protects other sample VMs meanwhile).
    let step = &op["steps"]["enable-protection"];
    assert_eq!(step["attempts"], 1, "{op}");
    assert!(op["azure"]["policyId"]
        .as_str()
        .is_some_and(|p| p.ends_with("/backupPolicies/DefaultPolicy")));
    // The next run finds nothing to repair on that VM.
    let s = run_sweep(&stack).await;
    assert_eq!(s.drift.get("disk-exclusion-on-ade"), None, "{:?}", s.drift);
}

async fn run_sweep(stack: &SimStack) -> ade_backup_functions::workflows::sweep::SweepSummary {
    use ade_backup_functions::workflows::sweep::{self, SweepOutcome};
    match sweep::run(&stack.ctx).await.expect("sweep") {
        SweepOutcome::Completed(s) => *s,
        other => panic!("sweep skipped: {other:?}"),
    }
}

/// A `backup-vm` message of phase backup-now of generation `g`.
fn backup_now_of(g: u32) -> impl Fn(&ade_backup_shared::messaging::OutboundMessage) -> bool {
    move |m| {
        let body = String::from_utf8_lossy(&m.body);
        m.queue == "backup-vm"
            && body.contains("\"backup-now\"")
            && body.contains(&format!("\"generation\":{g},"))
    }
}

#[tokio::test]
async fn a_backup_refused_for_a_disk_exclusion_resets_it_once_then_the_vm_is_protected() {
    let stack = stack().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-02");
    let id = ResourceId::parse(&vm).expect("id");
    stack.clock.set(stack.sim.now());
    evaluate_with(&stack.ctx, &id, Origin::Event("evt-1".into()), false)
        .await
        .expect("evaluation");
    // Protection goes ahead; someone excludes a data disk before the first backup.
    stack.pump_until(500, backup_now_of(0)).await;
    stack.sim.exclude_disks(&vm, &[0, 1]).expect("vm");
    stack.pump(2_000).await;
    let rec = record(&stack, &vm);
    assert_eq!(rec["status"], "protected", "{rec}");
    assert!(disk_selection(&stack, &vm).is_null());
    let op = operation(&stack, &vm);
    assert_eq!(op["diskExclusionRepairs"], 1, "{op}");
    assert_eq!(
        op["lastError"]["code"],
        "UserErrorEncryptedVmNotSupportedWithDiskEx"
    );
    let w = stack.sim.stats().writes;
    assert_eq!((w.protection_puts, w.backup_now_calls), (2, 2), "{w:?}");
}

#[tokio::test]
async fn a_disk_exclusion_that_comes_back_after_the_repair_fails_the_operation_instead_of_looping()
{
    let stack = stack().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-02");
    let id = ResourceId::parse(&vm).expect("id");
    stack.clock.set(stack.sim.now());
    evaluate_with(&stack.ctx, &id, Origin::Event("evt-2".into()), false)
        .await
        .expect("evaluation");
    stack.pump_until(500, backup_now_of(0)).await;
    stack.sim.exclude_disks(&vm, &[0]).expect("vm");
    // The repair resets it; a script puts it back before the next backup.
    stack.pump_until(2_000, backup_now_of(1)).await;
    assert!(disk_selection(&stack, &vm).is_null(), "the repair reset it");
    stack.sim.exclude_disks(&vm, &[0]).expect("vm");
    stack.pump(2_000).await;
    let rec = record(&stack, &vm);
    assert_eq!(rec["status"], "failed", "{rec}");
    assert_eq!(rec["reason"], "UserErrorEncryptedVmNotSupportedWithDiskEx");
    let w = stack.sim.stats().writes;
    assert_eq!((w.protection_puts, w.backup_now_calls), (2, 2), "{w:?}");
}
