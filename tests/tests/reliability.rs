//! Issue 15, scenarios 1-4 reduced to seconds (the full runs: `tests/benches/reliability.rs`,
//! `docs/reliability.md`). Every assertion is a count from the simulator or the state store:
//! protected-item PUTs, backup-now calls, access-policy writes per vault, VM records.

use ade_backup_sim::{FaultConfig, FaultRule};
use ade_backup_test_support::reliability::crashes;
use ade_backup_test_support::reliability::onboarding::{self, OnboardingReport, OnboardingRun};
use std::time::Duration;

/// Every VM protected, exactly one protected-item PUT and one backup-now per VM, access-policy
/// writes only where permissions were missing, nothing dead-lettered.
fn assert_onboarded_once(r: &OnboardingReport) {
    let n = r.vm_ids.len() as u64;
    assert!(!r.pump.timed_out, "the run finished\n{r}");
    assert!(
        r.unprotected.is_empty(),
        "unprotected: {:?}\n{r}",
        r.unprotected
    );
    // The onboarded VMs, and the restore tickets' source VMs (protected before the run).
    let records = n + r.tickets as u64;
    assert_eq!(r.by_status.get("protected"), Some(&records), "{r}");
    assert_eq!(
        r.sim.writes.protection_puts, n,
        "one protected-item PUT per VM\n{r}"
    );
    assert_eq!(
        r.sim.writes.backup_now_calls, n,
        "one backup-now per VM\n{r}"
    );
    assert!(
        r.excess_access_policy_writes().is_empty(),
        "{:?}\n{r}",
        r.excess_access_policy_writes()
    );
    for vault in r.access_policy_needs.keys() {
        assert!(
            r.sim
                .access_policy_writes_by_vault
                .get(vault)
                .is_some_and(|w| *w >= 1),
            "{vault} lacked the policy and got no write\n{r}"
        );
    }
    assert!(
        r.pump.dead_lettered.is_empty(),
        "{:?}",
        r.pump.dead_lettered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_protection_of_a_burst_of_events_is_measured_per_vm() {
    let r = onboarding::run(&OnboardingRun {
        subscriptions: 4,
        vms: 100,
        events_per_second: 100.0,
        ..OnboardingRun::default()
    })
    .await;
    println!("scenario 1 (reduced):\n{r}");
    assert_onboarded_once(&r);
    // A latency per VM, and pacing never more than the whole.
    assert_eq!(r.latency.n, 100, "{r}");
    assert!(r.latency.max <= r.latency_with_pacing.max, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_delivered_three_times_and_redelivered_follow_ups_protect_each_vm_once() {
    // Duplicate detection on as deployed; each copy of an event has its own message id.
    let r = onboarding::run(&OnboardingRun {
        subscriptions: 8,
        vms: 100,
        copies: 3,
        redeliver_completed: 0.1,
        ..OnboardingRun::default()
    })
    .await;
    println!("scenario 2 (reduced):\n{r}");
    assert_onboarded_once(&r);
    assert!(r.redelivered > 0, "follow-ups were redelivered\n{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_duplicate_detection_each_vm_is_still_protected_once() {
    // No duplicate detection on any queue: the product's own same-id resends (a step found
    // done sends what follows again) reach the handlers too, concurrently with the original.
    let r = onboarding::run(&OnboardingRun {
        subscriptions: 8,
        vms: 100,
        copies: 3,
        redeliver_completed: 0.1,
        duplicate_detection: false,
        ..OnboardingRun::default()
    })
    .await;
    println!("scenario 2 (reduced, duplicate detection off):\n{r}");
    assert_onboarded_once(&r);
    assert!(r.redelivered > 0, "follow-ups were redelivered\n{r}");
}

/// Issue 15's fault mix: 10% 5xx, 5% 429 with Retry-After, 2% timeouts, 1% of state writes.
pub fn fault_mix() -> FaultConfig {
    FaultConfig {
        default: FaultRule {
            error_rate: 0.10,
            error_status: 500,
            throttle_rate: 0.05,
            timeout_rate: 0.02,
            timeout_ms: 1_000,
            ..FaultRule::default()
        },
        seed: Some(15),
        ..FaultConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_every_vm_is_protected_once_and_every_ticket_restored_once() {
    let r = onboarding::run(&OnboardingRun {
        subscriptions: 4,
        vms: 100,
        restores: 6,
        faults: fault_mix(),
        state_write_failures: 0.01,
        timeout: Duration::from_secs(240),
        ..OnboardingRun::default()
    })
    .await;
    println!("scenario 4 (reduced):\n{r}");
    assert!(
        r.sim.faults_injected > 0 && r.arm.throttled > 0 && r.arm.retries > 0,
        "{r}"
    );
    assert_onboarded_once(&r);
    // Every ticket completed, with exactly one restore job and one deployment each.
    let t = r.tickets as u64;
    assert_eq!(r.tickets_by_status.get("completed"), Some(&t), "{r}");
    assert_eq!(r.sim.writes.restores, t, "one restore job per ticket\n{r}");
    assert_eq!(
        r.sim.writes.deployments, t,
        "one deployment per ticket\n{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_handler_process_loses_no_operation_and_doubles_no_write() {
    let run = crashes::CrashRun::default();
    let r = crashes::run(&run).await.expect("the crash run ran");
    println!("scenario 3 (reduced):\n{r}");
    let n = run.vms as u64;
    assert_eq!(r.kills, run.kills, "{r}");
    assert_eq!(r.recovery.n, run.kills, "a new child after every kill\n{r}");
    // Every VM record protected: the onboarded VMs, and restored VMs whose ADE extension
    // ade-backup reinstalled (that write is an ADE event like any other).
    assert_eq!(
        r.vms_by_status.keys().collect::<Vec<_>>(),
        ["protected"],
        "{r}"
    );
    assert!(r.vms_by_status["protected"] >= n, "{r}");
    let reinstalled = r.write("extensionPuts");
    assert_eq!(
        r.write("protectionPuts"),
        n + reinstalled,
        "one PUT per VM\n{r}"
    );
    assert_eq!(
        r.write("backupNowCalls"),
        n + reinstalled,
        "one backup-now per VM\n{r}"
    );
    let t = run.restores as u64;
    assert_eq!(r.tickets_by_status.get("completed"), Some(&t), "{r}");
    assert_eq!(r.write("restores"), t, "one restore per ticket\n{r}");
    assert_eq!(r.write("deployments"), t, "one deployment per ticket\n{r}");
    assert_eq!(r.dead_letters, 0, "{r}");
}
