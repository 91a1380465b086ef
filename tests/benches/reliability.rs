//! Issue 15, scenarios 1-4 at full size: prints the figures `docs/reliability.md` records;
//! asserts nothing (the reduced runs with assertions are `tests/tests/reliability.rs`).
//!
//! ```text
//! cargo bench -p ade-backup-tests --bench reliability --profile dev -- latency     # 1
//! cargo bench -p ade-backup-tests --bench reliability --profile dev -- duplicates  # 2
//! cargo bench -p ade-backup-tests --bench reliability --profile dev -- crashes     # 3
//! cargo bench -p ade-backup-tests --bench reliability --profile dev -- faults      # 4
//! ```
//! (no argument: all four). `RELIABILITY_VMS=<n>` changes the fleet size,
//! `RELIABILITY_SUBSCRIPTIONS=<n>` the subscriptions of the latency run (default 10),
//! `RELIABILITY_RESTORES`, `RELIABILITY_KILLS` and `RELIABILITY_MAX_RUNTIME` (seconds) size
//! the crash run (50, 200, 2,400; restores also for the faults run), `RELIABILITY_KILL_GAP_MS`
//! the mean gap between a restart and the next kill (1,000; each gap is uniform in 0-2x), `RELIABILITY_HOST_LOG=<file>` keeps
//! the crash run's local host log (every delivery and how it was settled),
//! `RELIABILITY_DUPLICATE_DETECTION=off` turns Service Bus duplicate detection off in the
//! duplicates run.

use ade_backup_sim::{FaultConfig, FaultRule};
use ade_backup_test_support::reliability::crashes::{self, CrashRun};
use ade_backup_test_support::reliability::onboarding::{self, OnboardingRun};
use std::time::Duration;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vms(default: usize) -> usize {
    env_or("RELIABILITY_VMS", default)
}

/// Restore tickets of the crash and fault runs (`RELIABILITY_RESTORES`, default 50).
fn restores() -> usize {
    env_or("RELIABILITY_RESTORES", 50)
}

fn subscriptions() -> usize {
    std::env::var("RELIABILITY_SUBSCRIPTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

async fn latency() {
    let run = OnboardingRun {
        subscriptions: subscriptions(),
        vms: vms(6_000),
        events_per_second: 100.0,
        timeout: Duration::from_secs(900),
        ..OnboardingRun::default()
    };
    let r = onboarding::run(&run).await;
    println!(
        "1. time to protection ({} events/s):\n{r}\n",
        run.events_per_second
    );
}

async fn duplicates() {
    let run = OnboardingRun {
        subscriptions: 10,
        vms: vms(1_000),
        copies: 3,
        redeliver_completed: 0.1,
        duplicate_detection: std::env::var("RELIABILITY_DUPLICATE_DETECTION").as_deref()
            != Ok("off"),
        timeout: Duration::from_secs(900),
        ..OnboardingRun::default()
    };
    let r = onboarding::run(&run).await;
    println!(
        "2. duplicates (each event x{}, {:.0}% of completed deliveries redelivered, duplicate detection {}):\n{r}\n  access-policy writes beyond the missing permissions: {:?}\n",
        run.copies,
        run.redeliver_completed * 100.0,
        if run.duplicate_detection { "on" } else { "off" },
        r.excess_access_policy_writes()
    );
}

async fn faults() {
    let run = OnboardingRun {
        subscriptions: 10,
        vms: vms(1_000),
        restores: restores(),
        faults: FaultConfig {
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
        },
        state_write_failures: 0.01,
        timeout: Duration::from_secs(1_200),
        ..OnboardingRun::default()
    };
    let r = onboarding::run(&run).await;
    println!(
        "4. faults (10% 500, 5% 429 + Retry-After, 2% timeouts, 1% state writes), {} restores:\n{r}\n",
        run.restores
    );
}

async fn crashes() {
    // Azure's default maxDeliveryCount (and infra/main.bicep's), with the product's dead-letter
    // redrive on a faster tick than its 5 minutes and its default backoff (5 min, then 10): the
    // run then lasts --max-runtime, long enough for a second attempt after the kills.
    // RELIABILITY_MAX_DELIVERY=50 RELIABILITY_REDRIVE=off: the runs before the redrive.
    let redrive_every = match std::env::var("RELIABILITY_REDRIVE").as_deref() {
        Ok("off") => None,
        Ok(schedule) => Some(schedule.to_string()),
        Err(_) => Some("*/30 * * * * *".to_string()),
    };
    let runtime_default = if redrive_every.is_some() { 900 } else { 2_400 };
    let run = CrashRun {
        vms: vms(1_000),
        restores: restores(),
        kills: env_or("RELIABILITY_KILLS", 200),
        // Sized to the kill schedule: every kill costs a restart and the 5 s lock of each
        // message whose invocation died, on top of the onboarding itself.
        max_runtime: Duration::from_secs(env_or("RELIABILITY_MAX_RUNTIME", runtime_default) as u64),
        mean_gap: Duration::from_millis(env_or("RELIABILITY_KILL_GAP_MS", 1_000) as u64),
        host_log: std::env::var_os("RELIABILITY_HOST_LOG").map(Into::into),
        max_delivery_count: env_or("RELIABILITY_MAX_DELIVERY", 10) as u32,
        redrive_every,
        ..CrashRun::default()
    };
    println!(
        "3. crashes: {} VMs, {} restores, {} kills (mean gap {} ms), --max-runtime {} s, maxDeliveryCount {}, redrive {:?}",
        run.vms,
        run.restores,
        run.kills,
        run.mean_gap.as_millis(),
        run.max_runtime.as_secs(),
        run.max_delivery_count,
        run.redrive_every
    );
    match crashes::run(&run).await {
        Ok(r) => println!("3. crashes (kill -9 of the handler):\n{r}\n"),
        Err(e) => println!("3. crashes: could not run: {e}\n"),
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    println!("(one run on a shared machine: other builds and tests run beside it)\n");
    if wants("latency") {
        latency().await;
    }
    if wants("duplicates") {
        duplicates().await;
    }
    if wants("crashes") {
        crashes().await;
    }
    if wants("faults") {
        faults().await;
    }
}
