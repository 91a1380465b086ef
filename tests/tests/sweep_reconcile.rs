//! The policy sweep against the simulator: discovery cost, each drift kind detected and repaired
//! through the real protection workflow, the run guard, takeover after a crash, and the dry run.

use ade_backup_functions::domain::sweep_plan::{Action, Drift};
use ade_backup_functions::records::{vm_record_key, SWEEP_LATEST_KEY};
use ade_backup_functions::workflows::protect::{self, Origin};
use ade_backup_functions::workflows::sweep::{self, SweepOptions, SweepOutcome, SweepSummary};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::{LeaseId, StateStore};
use ade_backup_sim::fleet::{Ade, BackupPolicy, Protection, Retention, Schedule};
use ade_backup_sim::scenario::{Action as SimAction, Scenario, TimedAction};
use ade_backup_sim::{run_scenario, Fleet, SimOptions};
use ade_backup_test_support::simulator::{healthy_fleet, quick_durations, vault_id, vm_id};
use ade_backup_test_support::sweep_harness::Harness;
use std::sync::Arc;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

fn sim_options() -> SimOptions {
    SimOptions {
        time_scale: 20.0,
        throttling: true,
        durations: quick_durations(),
        // Ids as Azure Backup spells them (issue 14, item 7).
        varied_casing: true,
        ..Default::default()
    }
}

async fn harness(fleet: Fleet) -> Harness {
    let h = Harness::start(fleet, sim_options(), &[]).await;
    h.grant_rbac().await;
    h.sim.reset_stats();
    h
}

async fn sweep_once(h: &Harness) -> SweepSummary {
    match sweep::run(&h.ctx).await.expect("sweep runs") {
        SweepOutcome::Completed(s) => *s,
        SweepOutcome::Skipped { reason, .. } => panic!("sweep skipped: {reason}"),
    }
}

fn ade_vms(f: &Fleet) -> Vec<&ade_backup_sim::fleet::Vm> {
    f.vms
        .iter()
        .filter(|v| !matches!(v.ade, Ade::None))
        .collect()
}

fn id_of(v: &ade_backup_sim::fleet::Vm) -> ResourceId {
    ResourceId::parse(&vm_id(&v.subscription, &v.resource_group, &v.name)).expect("valid VM id")
}

fn total_writes(h: &Harness) -> u64 {
    let w = h.sim.stats().writes;
    w.access_policy_writes
        + w.role_assignment_writes
        + w.role_definition_writes
        + w.protection_puts
        + w.backup_now_calls
        + w.restores
        + w.deployments
        + w.extension_puts
}

fn uses_vault(v: &ade_backup_sim::fleet::Vm, kv: &str) -> bool {
    match &v.ade {
        Ade::Bek { key_vault } => key_vault == kv,
        Ade::BekKek {
            key_vault,
            kek_vault,
            ..
        } => key_vault == kv || kek_vault.as_deref() == Some(kv),
        _ => false,
    }
}

#[tokio::test]
async fn unchanged_fleet_costs_graph_pages_and_exactly_one_summary_write() {
    let h = harness(healthy_fleet(2, 300, 11, 0)).await;
    let reads_before = h.store.reads();
    let s = sweep_once(&h).await;
    assert!(s.ade_vms > 50, "the fleet has ADE VMs: {}", s.ade_vms);
    assert!(
        s.drift.is_empty(),
        "healthy fleet has no drift: {:?}",
        s.drift
    );
    // The first run after deployment adopts what Azure Backup already protects: one record per
    // ADE VM with its ADE settings (from the Graph rows), so a restore can reinstall ADE even
    // after the VM is gone.
    let ade = s.ade_vms as u64;
    assert_eq!(s.outcomes.get("adopted"), Some(&ade), "{:?}", s.outcomes);
    assert!(s.changed);
    assert_eq!(h.store.keys("vms/").len() as u64, ade);
    let one = ade_vms(&h.fleet)[0];
    let rec = h
        .store
        .json(&vm_record_key(&id_of(one)))
        .expect("adopted record");
    assert_eq!(rec["status"], "protected", "{rec}");
    assert!(rec["ade"]["keyVaultResourceId"].is_string(), "{rec}");
    assert!(rec["azure"]["protectedItemId"].is_string(), "{rec}");
    // latest.json created (to have something to lease) + the records + history + summary
    assert_eq!(h.store.writes(), ade + 3);
    assert_eq!(s.state_writes, ade + 3);
    // the last summary, the record list, and each record's read-before-write
    assert_eq!(h.store.reads() - reads_before, ade + 2);
    assert_eq!(s.lease_calls, 3, "acquire (missing), acquire, release");
    // no writes to Azure; only Resource Graph pages and one policy GET per distinct policy
    let stats = h.sim.stats();
    assert_eq!(total_writes(&h), 0);
    let other: u64 = stats
        .calls
        .iter()
        .filter(|(k, _)| *k != "resourceGraph.query" && *k != "rs.policy.get")
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(other, 0, "no per-VM calls: {:?}", stats.calls);
    // 300 VMs over 2 subs: 1 page each of VMs, extensions, key vaults, items, role assignments
    assert_eq!(stats.calls("resourceGraph.query"), 5, "{:?}", stats.calls);
    assert_eq!(
        stats.calls("rs.policy.get"),
        4,
        "2 subs x 2 vaults x DefaultPolicy"
    );
    assert_eq!(s.arm.calls, 9);
    assert_eq!(s.arm.throttled, 0);

    // every later run of an unchanged fleet: one write (the summary), no history; two reads
    // (the last summary, the list of VM records)
    for round in 0..2 {
        let (w, r) = (h.store.writes(), h.store.reads());
        let s2 = sweep_once(&h).await;
        assert!(!s2.changed, "{:?}", s2.outcomes);
        assert!(s2.outcomes.is_empty(), "{:?}", s2.outcomes);
        assert_eq!(h.store.writes() - w, 1, "round {round}");
        assert_eq!(h.store.reads() - r, 2, "round {round}");
        assert_eq!(s2.state_writes, 1);
        assert_eq!(s2.lease_calls, 2, "acquire + release");
        assert!(!s2.took_over_expired_lease, "the lease was released");
        let latest = h.store.json(SWEEP_LATEST_KEY).expect("latest");
        assert_eq!(latest["last"]["runId"], serde_json::json!(s2.run_id));
    }
    assert_eq!(
        h.store.keys("runs/sweep/").len(),
        2,
        "latest + the adoption run's history only"
    );
}

#[tokio::test]
async fn unprotected_ade_vm_is_protected_and_the_next_run_is_clean() {
    let h = harness(healthy_fleet(1, 40, 5, 1)).await;
    let target = ade_vms(&h.fleet)[0];
    let s = sweep_once(&h).await;
    assert_eq!(s.drift.get("unprotected"), Some(&1), "{:?}", s.drift);
    assert_eq!(s.outcomes.get("protection-started"), Some(&1));
    assert!(s.changed);
    assert!(
        h.store
            .json(&format!("runs/sweep/{}.json", s.run_id))
            .is_some(),
        "history written"
    );
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    let rec = h
        .store
        .json(&vm_record_key(&id_of(target)))
        .expect("vm record");
    assert_eq!(rec["status"], "protected", "{rec}");
    assert_eq!(rec["extra"]["sweep"]["drift"][0], "unprotected");
    let w = h.sim.stats().writes;
    assert_eq!(w.protection_puts, 1);
    assert_eq!(w.backup_now_calls, 1);

    let s2 = sweep_once(&h).await;
    assert!(s2.drift.is_empty() && s2.outcomes.is_empty(), "{s2:?}");
    let s3 = sweep_once(&h).await;
    assert!(!s3.changed && s3.state_writes == 1, "{s3:?}");
}

#[tokio::test]
async fn removed_key_vault_access_is_detected_and_granted_again() {
    let h = harness(healthy_fleet(1, 40, 6, 0)).await;
    let affected = ade_vms(&h.fleet)
        .into_iter()
        .filter(|v| uses_vault(v, "kv-ap-0-0"))
        .count() as u64;
    assert!(affected > 0, "the fleet uses kv-ap-0-0");
    let scenario = Scenario {
        name: "drift".into(),
        actions: vec![TimedAction {
            at_seconds: 0.0,
            action: SimAction::RemoveAccessPolicy {
                key_vault: "kv-ap-0-0".into(),
                object_id: None,
            },
        }],
    };
    run_scenario(&h.sim, &scenario, h.pump.clone())
        .await
        .expect("scenario");
    let s = sweep_once(&h).await;
    assert_eq!(s.drift.get("key-vault-access-removed"), Some(&affected));
    assert_eq!(s.actions.get("grant-access"), Some(&affected));
    assert_eq!(s.outcomes.get("repair-started"), Some(&affected));
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert!(h.sim.stats().writes.access_policy_writes >= 1);
    let s2 = sweep_once(&h).await;
    assert!(s2.drift.is_empty(), "access back in place: {:?}", s2.drift);
}

#[tokio::test]
async fn stale_recovery_points_get_a_backup() {
    let h = harness(healthy_fleet(1, 30, 8, 0)).await;
    let n = ade_vms(&h.fleet).len() as u64;
    // Daily policy: 24 h RPO + 6 h grace.
    h.sim.advance(Duration::from_secs(40 * 3600));
    let s = sweep_once(&h).await;
    assert_eq!(
        s.drift.get("recovery-point-stale"),
        Some(&n),
        "{:?}",
        s.drift
    );
    assert_eq!(s.actions.get("backup-now"), Some(&n));
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert_eq!(h.sim.stats().writes.backup_now_calls, n);
    let s2 = sweep_once(&h).await;
    assert!(s2.drift.is_empty(), "{:?}", s2.drift);
}

#[tokio::test]
async fn last_job_failed_with_the_key_vault_permission_code_regrants_and_backs_up() {
    let h = harness(healthy_fleet(1, 40, 6, 0)).await;
    let victim = ade_vms(&h.fleet)
        .into_iter()
        .find(|v| uses_vault(v, "kv-ap-0-0"))
        .expect("a VM on kv-ap-0-0");
    let vm = id_of(victim);
    let vault =
        ResourceId::parse(&vault_id(&victim.subscription, "rg-backup", "rsv-0-0")).expect("vault");
    let remove = Scenario {
        name: "remove".into(),
        actions: vec![TimedAction {
            at_seconds: 0.0,
            action: SimAction::RemoveAccessPolicy {
                key_vault: "kv-ap-0-0".into(),
                object_id: None,
            },
        }],
    };
    run_scenario(&h.sim, &remove, h.pump.clone())
        .await
        .expect("scenario");
    // A scheduled backup runs without access and fails.
    h.ctx
        .arm
        .begin_backup_now(&vault, &vm, None)
        .await
        .expect("backup starts");
    h.sim.advance(Duration::from_secs(60));
    let report = sweep::plan_only(&h.ctx).await.expect("plan");
    let p = report
        .plans
        .iter()
        .find(|p| p.vm_id == vm)
        .expect("the failed VM is in the plan");
    // Azure spells it `UserErrorKeyVaultPermissionsNotConfigured` in the docs and with a lower-case
    // "v" in job errors; codes compare case-insensitively.
    assert!(
        p.drift
            .iter()
            .any(|d| matches!(d, Drift::LastJobFailed { code }
            if code.eq_ignore_ascii_case("UserErrorKeyVaultPermissionsNotConfigured"))),
        "{:?}",
        p.drift
    );
    assert_eq!(p.actions, vec![Action::GrantAccess, Action::BackupNow]);

    let s = sweep_once(&h).await;
    assert_eq!(s.drift.get("last-job-failed"), Some(&1));
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    let after = sweep::plan_only(&h.ctx).await.expect("plan");
    assert!(after.plans.is_empty(), "{:?}", after.plans);
}

#[tokio::test]
async fn a_changed_policy_is_reported_and_kept() {
    let mut fleet = healthy_fleet(1, 30, 9, 0);
    for v in fleet.recovery_services_vaults.iter_mut() {
        v.policies.push(BackupPolicy {
            name: "OtherPolicy".into(),
            schedule: Schedule::Daily {
                time: "03:00".into(),
            },
            retention: Retention {
                daily_days: 7,
                weekly_weeks: None,
            },
            instant_rp_retention_days: 2,
        });
    }
    let idx = fleet
        .vms
        .iter()
        .position(|v| !matches!(v.ade, Ade::None))
        .expect("an ADE VM");
    let p = fleet.vms[idx].protection.clone().expect("protected");
    fleet.vms[idx].protection = Some(Protection {
        policy: "OtherPolicy".into(),
        ..p
    });
    let vm = id_of(&fleet.vms[idx]);
    let h = harness(fleet).await;
    let s = sweep_once(&h).await;
    assert_eq!(s.drift.get("policy-changed"), Some(&1), "{:?}", s.drift);
    assert_eq!(s.outcomes.get("reported"), Some(&1));
    assert!(s.actions.is_empty());
    assert_eq!(total_writes(&h), 0, "nothing changed in Azure");
    let rec = h
        .store
        .json(&vm_record_key(&vm))
        .expect("record with the drift fact");
    assert!(
        rec["extra"]["sweep"]["drift"][0]
            .as_str()
            .is_some_and(|d| d.contains("OtherPolicy")),
        "{rec}"
    );
    // reported again next run, but no record write: the fact is already there
    let w = h.store.writes();
    let s2 = sweep_once(&h).await;
    assert_eq!(s2.drift.get("policy-changed"), Some(&1));
    assert_eq!(h.store.writes() - w, 1);
}

#[tokio::test]
async fn overlapping_runs_one_acts_the_other_exits_with_its_reason() {
    let h = harness(healthy_fleet(1, 40, 12, 2)).await;
    let (a, b) = tokio::join!(sweep::run(&h.ctx), sweep::run(&h.ctx));
    let outcomes = [a.expect("a"), b.expect("b")];
    let completed: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            SweepOutcome::Completed(s) => Some(s),
            _ => None,
        })
        .collect();
    let skipped: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            SweepOutcome::Skipped { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(completed.len(), 1, "{outcomes:?}");
    assert_eq!(skipped.len(), 1, "{outcomes:?}");
    assert!(
        skipped[0].contains("lease") || skipped[0].contains("claimed"),
        "{}",
        skipped[0]
    );
    assert_eq!(completed[0].outcomes.get("protection-started"), Some(&2));
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert_eq!(h.sim.stats().writes.protection_puts, 2);

    // A live lease held by someone else (another instance's run): nothing is read from Azure,
    // nothing is written.
    let other = LeaseId::new_random();
    h.store
        .acquire_lease(SWEEP_LATEST_KEY, Duration::from_secs(60), &other)
        .await
        .expect("another instance leases latest.json");
    h.sim.reset_stats();
    let w = h.store.writes();
    match sweep::run(&h.ctx).await.expect("runs") {
        SweepOutcome::Skipped { reason } => {
            assert!(reason.contains("holds the lease"), "{reason}");
        }
        other => panic!("expected a skip, got {other:?}"),
    }
    assert_eq!(h.store.writes(), w);
    assert!(h.sim.stats().calls.is_empty());
    // once it releases, the next tick runs
    h.store
        .release_lease(SWEEP_LATEST_KEY, &other)
        .await
        .expect("release");
    sweep_once(&h).await;
}

#[tokio::test]
async fn a_run_interrupted_midway_is_completed_by_the_next() {
    let h = harness(healthy_fleet(1, 40, 13, 3)).await;
    let unprotected: Vec<ResourceId> = ade_vms(&h.fleet).into_iter().take(3).map(id_of).collect();
    // The crashed run had started the first VM, then died holding a (short) lease.
    h.store.put_json(
        SWEEP_LATEST_KEY,
        &serde_json::json!({"last": {"runId": "finished-before"}}),
    );
    h.store
        .acquire_lease(
            SWEEP_LATEST_KEY,
            Duration::from_millis(300),
            &LeaseId::new_random(),
        )
        .await
        .expect("the crashed run's lease");
    protect::evaluate_with(
        &h.ctx,
        &unprotected[0],
        Origin::Sweep("crashed".into()),
        false,
    )
    .await
    .expect("first VM started");
    // still held: the next tick waits
    assert!(matches!(
        sweep::run(&h.ctx).await.expect("runs"),
        SweepOutcome::Skipped { .. }
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = match sweep::run_with(
        &h.ctx,
        SweepOptions {
            run_id: Some("next".into()),
            ..Default::default()
        },
    )
    .await
    .expect("runs")
    {
        SweepOutcome::Completed(s) => s,
        other => panic!("expected the takeover to run, got {other:?}"),
    };
    assert!(s.took_over_expired_lease, "{s:?}");
    assert_eq!(s.outcomes.get("in-flight"), Some(&1), "{:?}", s.outcomes);
    assert_eq!(s.outcomes.get("protection-started"), Some(&2));
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert_eq!(
        h.sim.stats().writes.protection_puts,
        3,
        "each VM protected once"
    );
    for vm in &unprotected {
        let rec = h.store.json(&vm_record_key(vm)).expect("record");
        assert_eq!(rec["status"], "protected", "{rec}");
    }
}

#[tokio::test]
async fn dry_run_reports_the_plan_and_changes_nothing() {
    let h = harness(healthy_fleet(1, 40, 14, 2)).await;
    h.sim.advance(Duration::from_secs(40 * 3600));
    let report = sweep::plan_only(&h.ctx).await.expect("plan");
    assert_eq!(report.drift.get("unprotected"), Some(&2));
    assert!(report
        .drift
        .get("recovery-point-stale")
        .is_some_and(|n| *n > 0));
    assert_eq!(h.store.writes(), 0);
    assert_eq!(total_writes(&h), 0);
    let table = sweep::render_table(&report);
    let first = &report.plans[0];
    assert!(table.contains(first.vm_id.name()), "{table}");
    assert!(
        table.contains("unprotected") && table.contains("nothing was changed"),
        "{table}"
    );
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(
        json["plans"].as_array().map(Vec::len),
        Some(report.plans.len())
    );
    assert!(json["plans"][0]["vmId"].is_string());
    assert!(h.pump.pending() == 0, "no message sent");
    let _ = Arc::clone(&h.pump);
}

#[tokio::test]
async fn stopped_protection_is_detected_and_resumed_with_the_rule_policy() {
    let h = harness(healthy_fleet(1, 40, 16, 0)).await;
    let victims: Vec<ResourceId> = ade_vms(&h.fleet).into_iter().take(3).map(id_of).collect();
    assert_eq!(victims.len(), 3, "the fleet has three ADE VMs");
    let n = victims.len() as u64;
    let scenario = Scenario {
        name: "stop".into(),
        actions: victims
            .iter()
            .map(|vm| TimedAction {
                at_seconds: 0.0,
                action: SimAction::StopProtection { vm: vm.to_string() },
            })
            .collect(),
    };
    run_scenario(&h.sim, &scenario, h.pump.clone())
        .await
        .expect("scenario");
    for vm in &victims {
        let item = h
            .sim
            .protected_item(&vm.to_string())
            .expect("known VM")
            .expect("still a protected item");
        assert_eq!(item["properties"]["protectionState"], "ProtectionStopped");
    }
    let s = sweep_once(&h).await;
    assert_eq!(s.drift.get("protection-stopped"), Some(&n), "{:?}", s.drift);
    assert_eq!(s.actions.get("protect"), Some(&n), "{:?}", s.actions);
    assert_eq!(
        s.outcomes.get("repair-started"),
        Some(&n),
        "{:?}",
        s.outcomes
    );
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert_eq!(h.sim.stats().writes.protection_puts, n, "one resume each");
    for vm in &victims {
        let item = h
            .sim
            .protected_item(&vm.to_string())
            .expect("known VM")
            .expect("protected item");
        let p = &item["properties"];
        assert_eq!(p["protectionState"], "Protected", "{item}");
        assert_eq!(p["policyName"], "DefaultPolicy", "{item}");
        assert!(
            p["extendedInfo"]["recoveryPointCount"]
                .as_u64()
                .is_some_and(|c| c >= 1),
            "retained recovery points: {item}"
        );
    }
    let s2 = sweep_once(&h).await;
    assert!(s2.drift.is_empty(), "protection resumed: {:?}", s2.drift);
}

async fn harness_with(fleet: Fleet, env: &[(&str, String)]) -> Harness {
    let h = Harness::start(fleet, sim_options(), env).await;
    h.grant_rbac().await;
    h.sim.reset_stats();
    h
}

/// Scope by management group only: generated fleets put even subscriptions under mg-prod, odd
/// ones under mg-dev. Only mg-prod's VMs are discovered and worked on.
#[tokio::test]
async fn a_management_group_scope_covers_only_its_subscriptions() {
    let fleet = healthy_fleet(2, 60, 17, 12);
    let prod_sub = fleet.subscriptions[0].id.clone();
    let unprotected_in_prod = ade_vms(&fleet)
        .into_iter()
        .filter(|v| v.protection.is_none() && v.subscription == prod_sub)
        .count() as u64;
    assert!(unprotected_in_prod > 0 && unprotected_in_prod < 12);
    let h = harness_with(
        fleet,
        &[
            ("ADE_BACKUP_SUBSCRIPTIONS", String::new()),
            ("ADE_BACKUP_MANAGEMENT_GROUPS", "mg-prod".to_string()),
        ],
    )
    .await;
    let s = sweep_once(&h).await;
    assert_eq!(s.subscriptions, 1, "{s:?}");
    assert!(s.scope.contains("mg-prod"), "{}", s.scope);
    assert_eq!(s.vms_seen, 30);
    assert_eq!(
        s.outcomes.get("protection-started"),
        Some(&unprotected_in_prod)
    );
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert_eq!(h.sim.stats().writes.protection_puts, unprotected_in_prod);

    // Both a subscription and a management group: rows are merged, each VM once.
    let both = harness_with(
        healthy_fleet(2, 60, 17, 0),
        &[("ADE_BACKUP_MANAGEMENT_GROUPS", "mg-root".to_string())],
    )
    .await;
    let s = sweep_once(&both).await;
    assert_eq!((s.subscriptions, s.vms_seen), (2, 60), "{s:?}");
    assert!(s.drift.is_empty(), "{:?}", s.drift);
}

/// `ADE_BACKUP_SWEEP_TAGS`: only VMs carrying every listed tag are considered (filtered in the
/// Resource Graph query, not after it).
#[tokio::test]
async fn a_tag_filter_limits_the_sweep_to_tagged_vms() {
    let mut fleet = healthy_fleet(1, 40, 18, 6);
    let mut tagged = Vec::new();
    for (i, vm) in fleet
        .vms
        .iter_mut()
        .filter(|v| !matches!(v.ade, Ade::None) && v.protection.is_none())
        .enumerate()
    {
        if i % 2 == 0 {
            vm.tags.insert("backup".into(), "ADE".into());
            tagged.push(vm.name.clone());
        } else {
            vm.tags.insert("backup".into(), "none".into());
        }
    }
    let h = harness_with(
        fleet,
        &[("ADE_BACKUP_SWEEP_TAGS", "backup=ade".to_string())],
    )
    .await;
    let report = sweep::plan_only(&h.ctx).await.expect("plan");
    assert_eq!(report.vms_seen, tagged.len(), "only tagged VMs come back");
    assert!(report.scope.contains("backup=ade"), "{}", report.scope);
    let s = sweep_once(&h).await;
    assert_eq!(
        s.outcomes.get("protection-started"),
        Some(&(tagged.len() as u64))
    );
    let r = h.settle(SETTLE).await;
    assert!(!r.timed_out && r.dead_lettered.is_empty(), "{r:?}");
    assert_eq!(h.sim.stats().writes.protection_puts, tagged.len() as u64);
}
