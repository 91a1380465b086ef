//! Scale-out (issue 15, scenario 6): four instances of the app share one subscription's ARM
//! budget while onboarding 1,000 VMs. Each instance is a separate `Context` with its own ARM
//! client (its own pacer, as a separate `serve` process has) on one simulator (throttling on,
//! real time) and one set of queues; the sweep runs on one instance (the timer fires on one),
//! the four drain the queues together. Run once with the per-process pacing alone and once with
//! the shared-budget pacing (the default). Prints figures; asserts nothing:
//!
//! ```text
//! cargo bench -p ade-backup-tests --bench scale_out --profile dev
//! cargo bench -p ade-backup-tests --bench scale_out --profile dev -- shared
//! ```

use ade_backup_functions::context::Context;
use ade_backup_functions::workflows::sweep::{self, SweepOutcome};
use ade_backup_shared::arm::PacingPolicy;
use ade_backup_sim::SimOptions;
use ade_backup_test_support::simulator::{healthy_fleet, uniform_durations};
use ade_backup_test_support::sweep_harness::Harness;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEED: u64 = 20240501;
const INSTANCES: usize = 4;
/// ADE VMs left unprotected; about a third of a generated fleet has ADE, so 3,300 VMs hold them.
const NEEDING: usize = 1_000;
const VMS: usize = 3_300;

fn options() -> SimOptions {
    SimOptions {
        time_scale: 1.0,
        throttling: true,
        durations: uniform_durations(1),
        ..Default::default()
    }
}

async fn scale_out(shared_budget: bool) {
    let h = Harness::start(
        healthy_fleet(1, VMS, SEED, NEEDING),
        options(),
        &[("ADE_BACKUP_POLL_INTERVAL_MS", "1000".to_string())],
    )
    .await;
    h.grant_rbac().await;
    // Let the write bucket refill (200 at 10/s) so the run starts with ARM's full burst.
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.sim.reset_stats();
    let policy = PacingPolicy {
        shared_budget,
        ..PacingPolicy::default()
    };
    let instances: Vec<Context> = (0..INSTANCES).map(|_| h.instance(policy.clone())).collect();
    let t = Instant::now();
    let producing = Arc::new(AtomicBool::new(true));
    let drains: Vec<_> = instances
        .iter()
        .map(|ctx| {
            let (pump, ctx, producing) = (h.pump.clone(), ctx.clone(), producing.clone());
            tokio::spawn(async move {
                pump.drain_while(&ctx, Duration::from_secs(1200), &producing)
                    .await
            })
        })
        .collect();
    let sim = h.sim.clone();
    // Known once the sweep says how many protections it started: a PUT and a backup-now each.
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let watcher = {
        let expected = expected.clone();
        tokio::spawn(async move {
            loop {
                let w = sim.stats().writes;
                if w.protection_puts + w.backup_now_calls >= expected.load(Ordering::SeqCst) {
                    return t.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let outcome = sweep::run(&instances[0]).await;
    if let Ok(SweepOutcome::Completed(sum)) = &outcome {
        let started = sum.outcomes.get("protection-started").copied().unwrap_or(0);
        expected.store(2 * started, Ordering::SeqCst);
    }
    producing.store(false, Ordering::SeqCst);
    let mut dead = 0;
    let mut timed_out = false;
    for d in drains {
        let r = d.await.expect("drain task");
        dead += r.dead_lettered.len();
        timed_out |= r.timed_out;
    }
    let wall = t.elapsed();
    let writes_done = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .ok()
        .and_then(Result::ok);
    let s = h.sim.stats();
    let w = &s.writes;
    let writes = w.access_policy_writes
        + w.role_assignment_writes
        + w.role_definition_writes
        + w.protection_puts
        + w.backup_now_calls
        + s.calls("rs.refreshContainers");
    let calls: u64 = s.calls.values().sum();
    let bound = (writes as f64 - 200.0).max(0.0) / 10.0;
    let label = if shared_budget {
        "shared-budget pacing (x-ms-ratelimit-remaining-* sets each instance's share)"
    } else {
        "per-process pacing only"
    };
    println!("== scale-out: {INSTANCES} instances, one subscription, {NEEDING} ADE VMs to protect, {label}");
    match outcome {
        Ok(SweepOutcome::Completed(sum)) => println!("sweep: outcomes {:?}", sum.outcomes),
        Ok(SweepOutcome::Skipped { reason, .. }) => println!("sweep skipped: {reason}"),
        Err(e) => println!("sweep failed: {e}"),
    }
    println!(
        "protection PUTs {} | backup-now {} | all ARM writes {writes} | dead-lettered {dead} | timed out {timed_out}",
        w.protection_puts, w.backup_now_calls
    );
    match writes_done {
        Some(d) => println!(
            "every protection PUT and backup-now accepted at {:.1} s | write bound ((writes - 200 burst) / 10/s) {bound:.1} s | ratio {:.2}",
            d.as_secs_f64(),
            d.as_secs_f64() / bound.max(f64::EPSILON)
        ),
        None => println!("not every write was accepted (wall {:.1} s)", wall.as_secs_f64()),
    }
    println!(
        "ARM calls seen by the simulator: {calls} | 429s {} ({:.2}% of calls) {:?}",
        s.throttled,
        s.throttled as f64 * 100.0 / calls.max(1) as f64,
        s.throttled_by_operation
    );
    for (i, ctx) in instances.iter().enumerate() {
        let a = ctx.arm.stats();
        println!(
            "instance {i}: {} calls, {} 429s, {} retries, paced {} times ({} ms)",
            a.total_calls(),
            a.throttled,
            a.retries,
            a.paced,
            a.paced_wait_ms
        );
    }
    println!("until the queues were empty: {:.1} s", wall.as_secs_f64());
}

fn main() {
    let selection = ade_backup_test_support::bench::Selection::from_args();
    let want = |n: &str| selection.wants(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if want("per-process") {
            scale_out(false).await;
        }
        if want("shared") {
            scale_out(true).await;
        }
    });
}
