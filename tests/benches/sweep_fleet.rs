//! Sweep benchmarks against the simulator (throttling ON, simulated time = real time). Prints
//! numbers; asserts nothing. Reproduce with:
//!
//! ```text
//! cargo bench -p ade-backup-tests --bench sweep_fleet --profile dev -- unchanged
//! cargo bench -p ade-backup-tests --bench sweep_fleet --profile dev -- protect
//! cargo bench -p ade-backup-tests --bench sweep_fleet --profile dev -- subscription
//! ```
//! (`--profile dev` keeps the build cheap on small machines; the numbers are bound by ARM-style
//! throttling, not CPU. Drop it for an optimised build.) The simulator runs in the same process,
//! so peak RSS includes its world.

use ade_backup_functions::workflows::sweep::{self, SweepOutcome};
use ade_backup_sim::{SimOptions, SimStats, Simulator};
use ade_backup_test_support::bench::status_kib;
use ade_backup_test_support::pump::PumpReport;
use ade_backup_test_support::simulator::{healthy_fleet, uniform_durations};
use ade_backup_test_support::sweep_harness::Harness;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const SEED: u64 = 20240501;

fn vm_hwm_kib() -> Option<u64> {
    status_kib(None, "VmHWM:")
}

fn vm_rss_kib() -> Option<u64> {
    status_kib(None, "VmRSS:")
}

fn options() -> SimOptions {
    SimOptions {
        time_scale: 1.0,
        throttling: true,
        // Jobs as short as the simulator allows, so the throttle, not job duration, bounds the run.
        durations: uniform_durations(1),
        ..Default::default()
    }
}

async fn one_sweep(h: &Harness) -> sweep::SweepSummary {
    match sweep::run(&h.ctx).await {
        Ok(SweepOutcome::Completed(s)) => *s,
        Ok(SweepOutcome::Skipped { reason, .. }) => panic!("sweep skipped: {reason}"),
        Err(e) => panic!("sweep failed: {e}"),
    }
}

/// Time ARM's token buckets need for `n` requests of a class: what the burst does not cover, at
/// the refill rate.
fn bound_secs(n: u64, burst: f64, per_second: f64) -> f64 {
    ((n as f64 - burst).max(0.0)) / per_second
}

async fn unchanged(subs: usize, vms: usize, label: &str) {
    let h = Harness::start(
        healthy_fleet(subs, vms, SEED, 0),
        options(),
        &[("ADE_BACKUP_POLL_INTERVAL_MS", "1000".to_string())],
    )
    .await;
    h.grant_rbac().await;
    let rss_before = vm_rss_kib().unwrap_or(0);
    // The previous tick: the first run ever also creates `latest.json` (its lease needs a blob).
    let first = one_sweep(&h).await;
    // Let the buckets refill, so the measured run starts like a scheduled tick.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.sim.reset_stats();
    let writes_before = h.store.writes();
    let t = Instant::now();
    let s = one_sweep(&h).await;
    let wall = t.elapsed();
    let sim = h.sim.stats();
    let sim_calls: u64 = sim.calls.values().sum();
    println!("== {label}: {vms} VMs over {subs} subscription(s), nothing changed, throttling on");
    println!(
        "ADE VMs {} | protected items {} | drift {:?} | outcomes {:?}",
        s.ade_vms, s.protected_items, s.drift, s.outcomes
    );
    println!(
        "ARM calls: {} ({:.2} per 100 VMs; simulator saw {}) {:?}",
        s.arm.calls,
        s.arm.calls as f64 * 100.0 / vms as f64,
        sim_calls,
        s.arm.calls_by_operation
    );
    println!(
        "429s: {} (simulator throttled {}) | retries {} | paced wait {} ms",
        s.arm.throttled, sim.throttled, s.arm.retries, s.arm.paced_wait_ms
    );
    println!(
        "state: {} writes (store counted {}), {} reads, {} lease calls | history written: {} | the first run ever: {} writes (it creates latest.json and adopts every already-protected ADE VM)",
        s.state_writes,
        h.store.writes() - writes_before,
        s.state_reads,
        s.lease_calls,
        s.changed,
        first.state_writes
    );
    let naive = bound_secs(vms as u64 / subs as u64, 250.0, 25.0);
    println!(
        "wall time: {:.2} s | throttle-bound minimum for these calls: {:.2} s (Resource Graph pages fit the 250-read burst) | one GET per VM instead: >= {:.0} s per subscription",
        wall.as_secs_f64(),
        bound_secs(s.arm.calls, 250.0, 25.0),
        naive
    );
    let peak = vm_hwm_kib().unwrap_or(0);
    println!(
        "peak RSS (VmHWM, simulator included): {} MiB; before the first sweep (simulator with its fleet, harness): {} MiB; the sweeps added at most {} MiB",
        peak / 1024,
        rss_before / 1024,
        peak.saturating_sub(rss_before) / 1024
    );
}

/// What one `protect` run measured.
struct ProtectRun {
    subs: usize,
    vms: usize,
    needing: usize,
    summary: sweep::SweepSummary,
    /// The sweep's own run, and the simulator's calls by then.
    sweep_wall: Duration,
    sweep_sim_calls: u64,
    report: PumpReport,
    /// Until every protection finished (first backup included).
    wall: Duration,
    first_write: Duration,
    writes_done: Duration,
    sim: SimStats,
    usage: sweep::ArmUsage,
}

async fn protect(subs: usize, vms: usize, needing: usize) {
    let h = Harness::start(
        healthy_fleet(subs, vms, SEED, needing),
        options(),
        &[("ADE_BACKUP_POLL_INTERVAL_MS", "1000".to_string())],
    )
    .await;
    h.grant_rbac().await;
    // The setup's writes (role assignments) drew on the subscriptions' write buckets: wait until
    // they are full again (200 tokens at 10/s), so the run starts like a tick after a quiet
    // period and the 200-write burst of the bound is really there.
    tokio::time::sleep(Duration::from_secs(20)).await;
    h.sim.reset_stats();
    let before = h.ctx.arm.stats();
    let t = Instant::now();
    let watcher = watch_writes(h.sim.clone(), 2 * needing as u64, t);
    // The queue is consumed while the sweep still fans out, as Service Bus triggers would.
    let producing = Arc::new(AtomicBool::new(true));
    let pump = {
        let (pump, ctx, producing) = (h.pump.clone(), h.ctx.clone(), producing.clone());
        tokio::spawn(async move {
            pump.drain_while(&ctx, Duration::from_secs(900), &producing)
                .await
        })
    };
    let summary = one_sweep(&h).await;
    producing.store(false, Ordering::SeqCst);
    let sweep_wall = t.elapsed();
    let sweep_sim_calls = h.sim.stats().calls.values().sum::<u64>();
    let report = pump.await.expect("pump task");
    let wall = t.elapsed();
    let (first_write, writes_done) = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or((None, wall));
    print_protect(&ProtectRun {
        subs,
        vms,
        needing,
        summary,
        sweep_wall,
        sweep_sim_calls,
        report,
        wall,
        first_write: first_write.unwrap_or_default(),
        writes_done,
        sim: h.sim.stats(),
        usage: sweep::ArmUsage::between(&before, &h.ctx.arm.stats()),
    });
}

/// Watches the simulator for the moment every needed write (protection PUT + backup-now per VM)
/// has been accepted: the work the throttle bound is about. Resolves to (first write, all
/// `expected` writes), both since `t`.
fn watch_writes(
    sim: Simulator,
    expected: u64,
    t: Instant,
) -> JoinHandle<(Option<Duration>, Duration)> {
    tokio::spawn(async move {
        let mut first_write = None;
        loop {
            let w = sim.stats().writes;
            let done = w.protection_puts + w.backup_now_calls;
            if done > 0 && first_write.is_none() {
                first_write = Some(t.elapsed());
            }
            if done >= expected {
                return (first_write, t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn print_protect(r: &ProtectRun) {
    let (subs, vms, needing) = (r.subs, r.vms, r.needing);
    let (s, sim, usage, report) = (&r.summary, &r.sim, &r.usage, &r.report);
    let (wall, first_write, writes_done) = (r.wall, r.first_write, r.writes_done);
    let w = &sim.writes;
    let writes = w.access_policy_writes
        + w.role_assignment_writes
        + w.role_definition_writes
        + w.protection_puts
        + w.backup_now_calls
        + sim.calls("rs.refreshContainers");
    // Successful writes by kind come from the simulator; with no 429s every other call is a read.
    let reads = usage.calls.saturating_sub(writes);
    // The fleet spreads VMs round-robin over subscriptions: per subscription = total / subs.
    let per_sub_writes = writes.div_ceil(subs as u64);
    let per_sub_reads = reads.div_ceil(subs as u64);
    let write_min = bound_secs(per_sub_writes, 200.0, 10.0);
    let read_min = bound_secs(per_sub_reads, 250.0, 25.0);
    println!(
        "== protect: {vms} VMs over {subs} subscriptions, {needing} ADE VMs needing protection, throttling on, time scale 1.0"
    );
    println!(
        "sweep run: {:.2} s, outcomes {:?}, {} ARM calls while it ran ({} on the simulator; the workers already run alongside: {:?})",
        r.sweep_wall.as_secs_f64(),
        s.outcomes,
        s.arm.calls,
        r.sweep_sim_calls,
        s.arm.calls_by_operation
    );
    println!(
        "until every protection finished (first backup included): {:.2} s; pump: {} deliveries, {} transient, {} dead-lettered, timed out: {}",
        wall.as_secs_f64(),
        report.delivered,
        report.transient_failures,
        report.dead_lettered.len(),
        report.timed_out
    );
    println!(
        "ARM writes: {writes} (protection PUTs {}, backup-now {}, access policies {}, role assignments {}, container refreshes {}) = {per_sub_writes} per subscription",
        w.protection_puts,
        w.backup_now_calls,
        w.access_policy_writes,
        w.role_assignment_writes,
        sim.calls("rs.refreshContainers")
    );
    println!(
        "ARM reads (whole workflow): {reads} = {per_sub_reads} per subscription; all calls by operation: {:?}",
        usage.calls_by_operation
    );
    println!(
        "discovery + plan before the first write: {:.2} s (Resource Graph pages; CPU-bound in a debug build)",
        first_write.as_secs_f64()
    );
    println!(
        "every needed write accepted at {:.2} s; write phase (first to last write) {:.2} s",
        writes_done.as_secs_f64(),
        (writes_done - first_write).as_secs_f64()
    );
    println!(
        "throttle-bound minimum from writes ((per-sub writes - 200 burst) / 10/s): {write_min:.1} s; all writes done / minimum = {:.2}; write phase / minimum = {:.2}; first recovery point everywhere / minimum = {:.2}",
        writes_done.as_secs_f64() / write_min.max(f64::EPSILON),
        (writes_done - first_write).as_secs_f64() / write_min.max(f64::EPSILON),
        wall.as_secs_f64() / write_min.max(f64::EPSILON)
    );
    println!(
        "throttle-bound minimum from reads ((per-sub reads - 250 burst) / 25/s): {read_min:.1} s; wall / max(minimums) = {:.2}",
        wall.as_secs_f64() / write_min.max(read_min).max(f64::EPSILON)
    );
    println!(
        "429s received: {} (simulator throttled {}), retries {}, paced waits {} ms",
        usage.throttled, sim.throttled, usage.retries, usage.paced_wait_ms
    );
    println!(
        "peak RSS (VmHWM, simulator included): {} MiB",
        vm_hwm_kib().map(|k| k / 1024).unwrap_or(0)
    );
}

fn main() {
    let selection = ade_backup_test_support::bench::Selection::from_args();
    let want = |n: &str| selection.wants(n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if want("unchanged") {
            unchanged(4, 10_000, "unchanged").await;
        }
        if want("protect") {
            protect(4, 10_000, 1_000).await;
        }
        if want("subscription") {
            unchanged(1, 10_000, "subscription").await;
        }
    });
}
