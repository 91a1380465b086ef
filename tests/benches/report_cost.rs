//! What the fleet report costs at 10,000 VMs, against the sweep that produced its state, in the
//! same run (issue 16). One process: the simulator (throttling on, simulated time = real time),
//! a Context pointed at it, an in-memory state store. Prints figures and ratios; asserts nothing.
//!
//! ```text
//! cargo bench -p ade-backup-tests --bench report_cost --profile dev -- 10k
//! cargo bench -p ade-backup-tests --bench report_cost --profile dev -- 1k
//! ```
//! Phases, each measured as wall time, peak heap growth (a counting global allocator: the most
//! bytes live at once during the phase above those live at its start) and peak RSS growth
//! (`VmHWM` reset through `/proc/self/clear_refs`, minus `VmRSS` at the start; blind to pages the
//! allocator already holds). The simulator runs in this process, so its allocations while
//! answering count too (during the sweep and the facts; rendering calls no ARM):
//! 1. the first sweep of a healthy fleet (it adopts every protected ADE VM: the 10k-VM state);
//! 2. `report::publish`, what the sweep does after a run: load the state, gather the ARM facts
//!    (Resource Graph, Resource SKUs per subscription and region, the EncryptionAtHost feature per
//!    subscription, each policy, every protected VM's recovery points), build the report, write
//!    facts, HTML, JSON and CSV;
//! 3. rendering alone (`ade-backup report` on that state): load, build, HTML + JSON + CSV.

use ade_backup_functions::report;
use ade_backup_functions::workflows::sweep::{self, SweepOutcome};
use ade_backup_sim::SimOptions;
use ade_backup_test_support::bench::status_kib;
use ade_backup_test_support::simulator::{healthy_fleet, uniform_durations};
use ade_backup_test_support::sweep_harness::Harness;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SEED: u64 = 20240501;

/// The system allocator, counting live bytes and their peak since the last reset.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A measured phase: wall time, peak heap growth and peak RSS growth over its start.
struct Phase {
    wall: Duration,
    heap_mib: f64,
    peak_kib: u64,
}

/// Resets the peaks (heap counter; RSS through `echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0)
/// and notes where the phase starts.
fn start_phase() -> (Instant, usize, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    (
        Instant::now(),
        live,
        status_kib(None, "VmRSS:").unwrap_or(0),
    )
}

fn end_phase((t, live, rss): (Instant, usize, u64)) -> Phase {
    Phase {
        wall: t.elapsed(),
        heap_mib: PEAK.load(Ordering::Relaxed).saturating_sub(live) as f64 / 1048576.0,
        peak_kib: status_kib(None, "VmHWM:").unwrap_or(0).saturating_sub(rss),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "—".into()
    }
}

async fn run(subs: usize, vms: usize) {
    let h = Harness::start(
        healthy_fleet(subs, vms, SEED, 0),
        SimOptions {
            time_scale: 1.0,
            throttling: true,
            durations: uniform_durations(1),
            ..Default::default()
        },
        &[("ADE_BACKUP_POLL_INTERVAL_MS", "1000".to_string())],
    )
    .await;
    h.grant_rbac().await;

    let p = start_phase();
    let summary = match sweep::run(&h.ctx).await {
        Ok(SweepOutcome::Completed(s)) => *s,
        Ok(SweepOutcome::Skipped { reason, .. }) => panic!("sweep skipped: {reason}"),
        Err(e) => panic!("sweep failed: {e}"),
    };
    let sweep = end_phase(p);
    tokio::time::sleep(Duration::from_secs(1)).await; // let the ARM buckets refill

    h.sim.reset_stats();
    let p = start_phase();
    let published = report::publish(&h.ctx).await.expect("publish");
    let publish = end_phase(p);
    let calls = h.sim.stats().calls;

    let p = start_phase();
    let r = report::from_store(h.store.as_ref(), h.ctx.clock.now())
        .await
        .expect("report");
    let html = report::html::render(&r);
    let json = serde_json::to_vec(&r).expect("json");
    let csv = report::text::csv(&r);
    let render = end_phase(p);

    println!("== fleet report: {vms} VMs over {subs} subscriptions, simulator in this process, throttling on");
    println!(
        "sweep: ADE VMs {} | state writes {} | wall {:.2} s | peak heap growth {:.1} MiB | peak RSS growth {:.1} MiB",
        summary.ade_vms,
        summary.state_writes,
        sweep.wall.as_secs_f64(),
        sweep.heap_mib,
        sweep.peak_kib as f64 / 1024.0
    );
    let points: u64 = published
        .retirement
        .recovery_points
        .iter()
        .map(|p| p.count)
        .sum();
    println!(
        "publish (facts + report, after the sweep): wall {:.2} s | peak heap growth {:.1} MiB | peak RSS growth {:.1} MiB | {} ADE VMs, {} recovery points, {} past retirement | ARM calls {:?}",
        publish.wall.as_secs_f64(),
        publish.heap_mib,
        publish.peak_kib as f64 / 1024.0,
        published.coverage.ade_vms,
        points,
        published.retirement.retained_past_retirement.len(),
        calls
    );
    println!(
        "render only (load + build + HTML {:.1} MiB + JSON {:.1} MiB + CSV {:.1} MiB): wall {:.2} s | peak heap growth {:.1} MiB | peak RSS growth {:.1} MiB",
        html.len() as f64 / 1048576.0,
        json.len() as f64 / 1048576.0,
        csv.len() as f64 / 1048576.0,
        render.wall.as_secs_f64(),
        render.heap_mib,
        render.peak_kib as f64 / 1024.0
    );
    println!(
        "ratios to the sweep: publish time {} heap {} | render time {} heap {}",
        ratio(publish.wall.as_secs_f64(), sweep.wall.as_secs_f64()),
        ratio(publish.heap_mib, sweep.heap_mib),
        ratio(render.wall.as_secs_f64(), sweep.wall.as_secs_f64()),
        ratio(render.heap_mib, sweep.heap_mib)
    );
}

fn main() {
    let selection = ade_backup_test_support::bench::Selection::from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        if selection.wants("1k") {
            run(2, 1_000).await;
        }
        if selection.wants("10k") {
            run(4, 10_000).await;
        }
    });
}
