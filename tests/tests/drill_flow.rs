//! Restore drills end to end (issue 17): the real handlers, the real restore workflow and the
//! simulator. A passing drill is restored, verified, cleaned up and has its RTO recorded; failing
//! verifications (key material deleted after the restore, Windows at BitLocker recovery, a guest
//! agent that never gets ready) report why and still clean up; a drill whose messages were lost
//! is resumed by the schedule and cleaned up; nothing outside the drill resource group is ever
//! deleted (simulator counters); the caps and in-flight restores are honoured.

use ade_backup_functions::records::{CleanupStatus, DrillResult, DrillStatus, ItemState};
use ade_backup_functions::workflows::drill::{self, StartError};
use ade_backup_shared::ids::ResourceId;
use ade_backup_sim::field::FieldFault;
use ade_backup_test_support::drills::DRILL_RG;
use ade_backup_test_support::sim_stack::*;
use serde_json::json;

fn vm(name: &str) -> String {
    vm_id(S1, "rg-app-web", name)
}

async fn protected(stack: &SimStack, name: &str) -> ResourceId {
    let id = vm(name);
    assert_eq!(stack.protect(&id).await["status"], "protected");
    stack.clock.set(stack.sim.now());
    ResourceId::parse(&id).expect("vm id")
}

/// Every delete request and every deletion was inside the drill resource group.
fn assert_only_drill_group_touched(stack: &SimStack) {
    let inside = |id: &str| {
        id.to_ascii_lowercase()
            .contains(&format!("/resourcegroups/{DRILL_RG}/"))
    };
    let requests = stack.sim.delete_requests();
    assert!(!requests.is_empty(), "the drill deleted something");
    assert!(requests.iter().all(|id| inside(id)), "{requests:#?}");
    let deleted = stack.sim.deleted();
    assert!(deleted.iter().all(|id| inside(id)), "{deleted:#?}");
    assert_eq!(stack.sim.stats().writes.deletes as usize, requests.len());
}

/// The drill's clean-up is done: every resource it recorded is gone in the simulator, and so are
/// its restore job's staging blobs.
fn assert_cleaned_up(stack: &SimStack, id: &str) {
    let d = stack.drill(id);
    assert_eq!(d.cleanup.status, CleanupStatus::Done, "{:#?}", d.cleanup);
    let kinds = |t: &str| d.cleanup.items.iter().filter(|i| i.id.contains(t)).count();
    assert_eq!(kinds("virtualMachines"), 1, "{:#?}", d.cleanup.items);
    assert_eq!(kinds("networkInterfaces"), 1, "{:#?}", d.cleanup.items);
    assert!(
        kinds("/disks/") >= 2,
        "OS and data disks: {:#?}",
        d.cleanup.items
    );
    for item in &d.cleanup.items {
        assert_eq!(item.state, ItemState::Gone, "{item:#?}");
        assert!(
            !stack.sim.resource_exists(&item.id),
            "{} still exists",
            item.id
        );
    }
    assert_eq!(
        d.cleanup.blobs.len(),
        3,
        "template, config and the Encryption Info blob (key material backups)"
    );
    for b in &d.cleanup.blobs {
        assert!(
            b.deleted && !stack.sim.staging_blob_exists(&b.uri),
            "{b:#?}"
        );
    }
    assert!(d.cleanup.refused.is_empty(), "{:#?}", d.cleanup.refused);
    assert_only_drill_group_touched(stack);
}

#[tokio::test]
async fn a_passing_drill_is_restored_verified_cleaned_up_and_timed() {
    let stack = SimStack::start_drills(&[]).await;
    let vm = protected(&stack, "web-lnx-01").await;
    let before: Vec<String> = stack.sim.attached_resources();
    let id = drill::start_drill(&stack.ctx, &vm, "cli")
        .await
        .expect("started");
    stack.pump(5000).await;
    let d = stack.drill(&id);
    assert_eq!(d.status, DrillStatus::Done);
    assert_eq!(d.result, Some(DrillResult::Passed), "{:#?}", d.checks);
    assert_eq!(d.restore_status.as_deref(), Some("completed"));
    let restored = d.restored_vm_id.clone().expect("restored VM");
    assert!(
        restored
            .to_ascii_lowercase()
            .contains("/resourcegroups/rg-drill/"),
        "{restored}"
    );
    // The restore went through the ticket workflow, into the isolated subnet.
    let op = stack.restore_doc(&id).expect("the drill's restore ticket");
    let req = op.request.expect("request");
    assert_eq!(
        req.target_subnet_id.map(|s| s.to_string()),
        Some(ade_backup_test_support::drills::drill_subnet())
    );
    // RTO per step.
    assert!(d.rto.restore_job_secs.is_some_and(|s| s > 0), "{:?}", d.rto);
    assert!(d.rto.deployment_secs.is_some_and(|s| s > 0), "{:?}", d.rto);
    assert!(d.rto.reinstall_secs.is_some_and(|s| s > 0), "{:?}", d.rto);
    assert!(d.rto.verification_secs.is_some());
    let total = d.rto.total_secs.expect("total");
    assert!(total >= d.rto.restore_job_secs.unwrap_or(0) + d.rto.deployment_secs.unwrap_or(0));
    assert_cleaned_up(&stack, &id);
    // The source VM and everything that existed before is untouched.
    assert!(stack.sim.resource_exists(&vm.to_string()));
    assert_eq!(stack.sim.attached_resources(), before);
    // Passed: no notification; the VM's index says passed.
    assert!(stack.unrouted_json("drill-alerts").is_empty());
    let index: serde_json::Value = stack
        .state
        .json(&ade_backup_functions::records::drill_vm_key(&vm))
        .expect("index");
    assert_eq!(index["result"], "passed");
    assert_eq!(index["cleanup"], "done");
    // The fleet report's drill section.
    let report = ade_backup_functions::report::from_store(stack.state.as_ref(), stack.sim.now())
        .await
        .expect("report");
    assert_eq!((report.drills.drilled, report.drills.passed), (1, 1));
    assert!(report.drills.last_failed.is_empty());
    assert!(!report.drills.never_drilled.contains(&vm.to_string()));
    assert!(ade_backup_functions::report::html::render(&report).contains(&id));
}

/// Runs a drill of `name` to its end with `fault` applied once the restore completed (before the
/// drill's own verification), and returns the drill.
async fn failing_drill(
    stack: &SimStack,
    name: &str,
    before_start: Option<FieldFault>,
    after_restore: Option<FieldFault>,
) -> ade_backup_functions::records::DrillRecord {
    let vm = protected(stack, name).await;
    if let Some(f) = before_start {
        stack.sim.field_fault(&f).expect("fault");
    }
    let id = drill::start_drill(&stack.ctx, &vm, "cli")
        .await
        .expect("started");
    let verify = format!("{id}-drill-verify-0");
    stack.pump_until(5000, |m| m.message_id == verify).await;
    if let Some(f) = after_restore {
        stack.sim.field_fault(&f).expect("fault");
    }
    stack.pump(5000).await;
    let d = stack.drill(&id);
    assert_eq!(d.status, DrillStatus::Done);
    assert_eq!(d.result, Some(DrillResult::Failed), "{:#?}", d.checks);
    assert_cleaned_up(stack, &id);
    let alerts = stack.unrouted_json("drill-alerts");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["drillId"], id.as_str());
    assert_eq!(
        alerts[0]["reason"],
        d.reason.clone().expect("reason").as_str()
    );
    d
}

#[tokio::test]
async fn key_material_deleted_after_the_restore_fails_the_drill_and_it_still_cleans_up() {
    let stack = SimStack::start_drills(&[]).await;
    let delete = FieldFault::DeleteKeyMaterial {
        key_vault: "kv-ade-ap-weu".into(),
        what: "secrets".into(),
    };
    let d = failing_drill(&stack, "web-lnx-01", None, Some(delete)).await;
    assert_eq!(
        d.reason.as_deref(),
        Some("key-material-missing"),
        "{:#?}",
        d.checks
    );
    assert!(
        d.message
            .as_deref()
            .is_some_and(|m| m.contains("BEK secret")),
        "{:?}",
        d.message
    );
}

#[tokio::test]
async fn a_windows_vm_at_bitlocker_recovery_fails_the_drill_and_it_still_cleans_up() {
    let stack = SimStack::start_drills(&[]).await;
    let vm = ResourceId::parse(&vm("web-win-01")).expect("id");
    let name = ade_backup_functions::domain::drill_config::drill_vm_name(&vm);
    let never = FieldFault::AgentNeverReady { vm_name: name };
    let d = failing_drill(&stack, "web-win-01", Some(never), None).await;
    assert_eq!(
        d.reason.as_deref(),
        Some("vm-agent-not-ready"),
        "{:#?}",
        d.checks
    );
    assert!(
        d.message
            .as_deref()
            .is_some_and(|m| m.contains("BitLocker")),
        "{:?}",
        d.message
    );
    assert_eq!(
        d.restore_status.as_deref(),
        Some("completed-needs-attention")
    );
}

#[tokio::test]
async fn a_linux_vm_whose_agent_never_gets_ready_fails_the_drill_and_it_still_cleans_up() {
    let stack = SimStack::start_drills(&[]).await;
    let vm = ResourceId::parse(&vm("web-lnx-01")).expect("id");
    let name = ade_backup_functions::domain::drill_config::drill_vm_name(&vm);
    let d = failing_drill(
        &stack,
        "web-lnx-01",
        None,
        Some(FieldFault::AgentNeverReady { vm_name: name }),
    )
    .await;
    assert_eq!(
        d.reason.as_deref(),
        Some("vm-agent-not-ready"),
        "{:#?}",
        d.checks
    );
}

#[tokio::test]
async fn a_drill_whose_messages_were_lost_mid_clean_up_is_resumed_by_the_schedule_and_cleaned_up() {
    let stack = SimStack::start_drills(&[]).await;
    let vm = protected(&stack, "web-lnx-01").await;
    let id = drill::start_drill(&stack.ctx, &vm, "cli")
        .await
        .expect("started");
    // Crash after the first clean-up pass: its follow-up is lost.
    let second = format!("{id}-drill-cleanup-1");
    stack.pump_until(5000, |m| m.message_id == second).await;
    assert!(stack.pump.lose_pending() > 0);
    assert_eq!(stack.drill(&id).status, DrillStatus::CleaningUp);
    // The next scheduled run, later, finds the stalled drill and resumes it.
    stack.sim.advance(std::time::Duration::from_secs(2 * 3600));
    stack.clock.set(stack.sim.now());
    let out = drill::run_schedule(&stack.ctx, None)
        .await
        .expect("schedule");
    assert_eq!(out.resumed, vec![id.clone()]);
    assert!(
        out.started.is_empty(),
        "the VM's drill is still open: {out:?}"
    );
    stack.pump(5000).await;
    let d = stack.drill(&id);
    assert_eq!(d.status, DrillStatus::Done);
    assert_eq!(d.result, Some(DrillResult::Passed));
    assert_cleaned_up(&stack, &id);
}

#[tokio::test]
async fn caps_and_in_flight_restores_are_honoured() {
    let extra = [
        ("ADE_BACKUP_DRILL_MAX_CONCURRENT", "1".to_string()),
        ("ADE_BACKUP_DRILL_DAILY_CAP", "2".to_string()),
    ];
    let stack = SimStack::start_drills(&extra).await;
    let lnx = protected(&stack, "web-lnx-01").await;
    let win = protected(&stack, "web-win-01").await;
    // A real restore of web-win-01 is in flight: no drill of it.
    let body = restore_request("INC-REAL", &win.to_string(), json!({}));
    stack.pump.enqueue(
        "restore-requests",
        "req-real",
        serde_json::to_vec(&body).expect("json"),
    );
    stack.pump_until(50, |m| m.queue == "restore-vm").await;
    let busy = drill::start_drill(&stack.ctx, &win, "cli").await;
    assert!(matches!(busy, Err(StartError::Busy { .. })), "{busy:?}");
    // One drill at a time.
    let first = drill::start_drill(&stack.ctx, &lnx, "cli")
        .await
        .expect("first");
    let capped = drill::run_schedule(&stack.ctx, None)
        .await
        .expect("schedule");
    assert_eq!(capped.running, 1);
    assert_eq!(capped.room, 0);
    assert!(capped.started.is_empty(), "{capped:?}");
    stack.pump(8000).await;
    assert_eq!(stack.drill(&first).status, DrillStatus::Done);
    // The real restore finished: the schedule picks the VM never drilled (web-win-01) and the
    // other protected VMs wait for the period; the daily cap (2) then stops everything.
    let second = drill::run_schedule(&stack.ctx, None)
        .await
        .expect("schedule");
    assert_eq!(second.started.len(), 1, "{second:?}");
    assert!(second.started[0] != first);
    stack.pump(8000).await;
    let third = drill::run_schedule(&stack.ctx, None)
        .await
        .expect("schedule");
    assert_eq!(third.started_today, 2);
    assert_eq!(third.room, 0);
    assert!(third.started.is_empty());
    let refused = drill::start_drill(&stack.ctx, &lnx, "cli").await;
    assert!(
        matches!(
            refused,
            Err(StartError::CapReached { .. }) | Err(StartError::Busy { .. })
        ),
        "{refused:?}"
    );
    assert_only_drill_group_touched(&stack);
}

#[tokio::test]
async fn a_drill_whose_deployment_fails_still_deletes_its_tagged_restored_disks() {
    let stack = SimStack::start_drills(&[]).await;
    let vm = protected(&stack, "web-lnx-01").await;
    let before: Vec<String> = stack.sim.attached_resources();
    let name = ade_backup_functions::domain::drill_config::drill_vm_name(&vm);
    let fails = FieldFault::DeploymentFails { vm_name: name };
    stack.sim.field_fault(&fails).expect("fault");
    let id = drill::start_drill(&stack.ctx, &vm, "cli")
        .await
        .expect("started");
    // The restore job's disks exist, unattached, tagged with this drill before the deployment.
    let deploy = format!("{id}-drill-cleanup-0");
    stack.pump_until(5000, |m| m.message_id == deploy).await;
    let restored: Vec<String> = stack
        .sim
        .attached_resources()
        .into_iter()
        .filter(|r| !before.contains(r))
        .collect();
    assert!(restored.len() >= 2, "OS and data disks: {restored:#?}");
    for disk in &restored {
        assert!(
            disk.contains("/providers/Microsoft.Compute/disks/"),
            "{disk}"
        );
        let tags = stack.sim.tags_of(disk).expect("tags");
        assert_eq!(tags.get("ade-backup-drill"), Some(&id), "{disk}: {tags:?}");
    }
    stack.pump(5000).await;
    let d = stack.drill(&id);
    assert_eq!(d.status, DrillStatus::Done);
    assert_eq!(d.result, Some(DrillResult::Failed));
    assert_eq!(
        d.reason.as_deref(),
        Some("SkuNotAvailable"),
        "{:#?}",
        d.checks
    );
    assert!(d.restored_vm_id.is_none());
    assert_eq!(d.cleanup.status, CleanupStatus::Done, "{:#?}", d.cleanup);
    assert_eq!(
        d.cleanup.items.len(),
        restored.len(),
        "{:#?}",
        d.cleanup.items
    );
    for item in &d.cleanup.items {
        assert_eq!(item.state, ItemState::Gone, "{item:#?}");
        assert!(restored.iter().any(|r| r.eq_ignore_ascii_case(&item.id)));
    }
    assert_eq!(stack.sim.attached_resources(), before);
    assert_only_drill_group_touched(&stack);
    assert_eq!(stack.sim.deleted().len(), restored.len());
}

#[tokio::test]
async fn a_resource_without_this_drill_s_tag_is_never_deleted_even_when_the_deployment_names_it() {
    let stack = SimStack::start_drills(&[]).await;
    let vm = protected(&stack, "web-lnx-01").await;
    let id = drill::start_drill(&stack.ctx, &vm, "cli")
        .await
        .expect("started");
    let verify = format!("{id}-drill-verify-0");
    stack.pump_until(5000, |m| m.message_id == verify).await;
    let restored = stack.drill(&id).restored_vm_id.expect("restored VM");
    let nic = format!(
        "{}/providers/Microsoft.Network/networkInterfaces/{}-nic",
        restored.split("/providers/").next().expect("group"),
        restored.rsplit('/').next().expect("name")
    );
    // The deployment tagged what it created with this drill (from the template).
    for r in [&restored, &nic] {
        let tags = stack.sim.tags_of(r).expect("tags");
        assert_eq!(tags.get("ade-backup-drill"), Some(&id), "{r}: {tags:?}");
    }
    // Someone re-tags the VM for another drill and strips the NIC's tag.
    assert!(stack.sim.set_tags(
        &restored,
        &[("ade-backup-drill", "drill-20240101-000000000000")]
    ));
    assert!(stack.sim.set_tags(&nic, &[("owner", "ops")]));
    stack.pump(5000).await;
    let d = stack.drill(&id);
    assert_eq!(d.status, DrillStatus::Done);
    assert_eq!(
        d.cleanup.status,
        CleanupStatus::NeedsHuman,
        "{:#?}",
        d.cleanup
    );
    let item = |x: &str| {
        d.cleanup
            .items
            .iter()
            .find(|i| i.id.eq_ignore_ascii_case(x))
            .unwrap_or_else(|| panic!("{x} in {:#?}", d.cleanup.items))
    };
    let vm_item = item(&restored);
    assert_eq!(vm_item.state, ItemState::Refused);
    assert!(
        vm_item
            .error
            .as_deref()
            .is_some_and(|e| e.contains("another drill")),
        "{vm_item:#?}"
    );
    let nic_item = item(&nic);
    assert_eq!(nic_item.state, ItemState::Refused);
    assert!(
        nic_item
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no ade-backup-drill tag")),
        "{nic_item:#?}"
    );
    // The VM's disks are attached to a VM the drill does not delete: refused too.
    let disks: Vec<_> = d
        .cleanup
        .items
        .iter()
        .filter(|i| i.id.contains("/disks/"))
        .collect();
    assert!(disks.len() >= 2, "{disks:#?}");
    for disk in &disks {
        assert_eq!(disk.state, ItemState::Refused, "{disk:#?}");
        assert!(stack.sim.resource_exists(&disk.id));
    }
    // Nothing was deleted or even asked to be: no DELETE at all.
    assert!(stack.sim.resource_exists(&restored) && stack.sim.resource_exists(&nic));
    assert!(
        stack.sim.delete_requests().is_empty(),
        "{:#?}",
        stack.sim.delete_requests()
    );
    assert!(stack.sim.deleted().is_empty());
    assert_eq!(stack.sim.stats().writes.deletes, 0);
    // Humans are told: the notification lists what was left.
    let alerts = stack.unrouted_json("drill-alerts");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["cleanup"], "needs-human");
    assert!(alerts[0]["leftBehind"]
        .as_array()
        .is_some_and(|l| l.len() == d.cleanup.items.len()));
}

#[tokio::test]
async fn status_drill_shows_the_result_the_rto_and_the_clean_up() {
    use ade_backup_functions::status::drill as st;
    let stack = SimStack::start_drills(&[]).await;
    let vm = protected(&stack, "web-lnx-01").await;
    let id = drill::start_drill(&stack.ctx, &vm, "cli")
        .await
        .expect("started");
    stack.pump(5000).await;
    let d = st::drill_status(stack.state.as_ref(), &id)
        .await
        .expect("read")
        .expect("the drill");
    let text = st::render_drill_text(&d);
    assert!(text.contains(&format!("drill:    {id}")), "{text}");
    assert!(text.contains("result:   passed"), "{text}");
    assert!(text.contains("clean-up: done after"), "{text}");
    let total = d.rto.total_secs.expect("total");
    assert!(text.contains(&format!("total {total} s")), "{text}");
    let gone = text
        .lines()
        .filter(|l| l.trim_start().starts_with("gone "))
        .count();
    assert_eq!(gone, d.cleanup.items.len(), "{text}");
    let rows = st::drill_tsv_rows(&d);
    assert_eq!(rows.as_array().map(Vec::len), Some(d.cleanup.items.len()));
    assert!(rows[0]["state"] == "gone");
    // The VM's last drill, for `status --vm`.
    let last = st::last_drill(stack.state.as_ref(), &vm)
        .await
        .expect("read")
        .expect("indexed");
    assert_eq!(last.last_drill_id, id);
    let line = st::render_last_drill(&last);
    assert!(
        line.contains(&id) && line.contains("passed") && line.contains("clean-up done"),
        "{line}"
    );
    assert!(st::drill_status(stack.state.as_ref(), "drill-none")
        .await
        .expect("read")
        .is_none());
}
