//! Peak memory and Resource Graph pacing of the sweep (issue 15, scenario 7). Both real
//! binaries: `ade-backup sim --generate SUBSxVMS` in one process (throttling on: ARM's buckets
//! and Resource Graph's per-user quota of 15 queries per 5 s), `ade-backup sweep --dry-run` in
//! another, whose peak RSS (`VmHWM` in /proc/PID/status, read until it exits) is the figure.
//! Prints figures and ratios; asserts nothing. Reproduce with:
//!
//! ```text
//! cargo bench -p ade-backup-functions --bench sweep_memory --profile dev -- 10k
//! cargo bench -p ade-backup-functions --bench sweep_memory --profile dev -- 100k
//! ```
//! `SWEEP_BIN=/path/to/other/ade-backup` measures another build's sweep against this simulator;
//! `SWEEP_WRAPPER="heaptrack -o /tmp/sweep"` runs it under a profiler (its figures are then the
//! wrapper's).

use ade_backup_sim::Fleet;
use ade_backup_test_support::simulator::rules_for;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use ade_backup_test_support::bench::{free_port, status_kib};

fn sim_stats(base: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sf", &format!("{base}/_sim/stats")])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Starts the simulator with a generated fleet and waits until it answers.
fn start_sim(subs: usize, vms: usize) -> (Killed, String) {
    let port = free_port();
    let sim = Killed(
        Command::new(BIN)
            .args([
                "sim",
                "--generate",
                &format!("{subs}x{vms}"),
                "--time-scale",
                "1",
                "--port",
                &port.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(300);
    while sim_stats(&base).is_none() {
        assert!(Instant::now() < deadline, "simulator did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    (sim, base)
}

/// What one measured sweep gave.
struct Run {
    wall: Duration,
    peak_kib: u64,
    /// Largest sampled anonymous (heap, stacks) and file-backed (the binary's code) parts.
    anon_kib: u64,
    file_kib: u64,
    plans: usize,
    ok: bool,
    stderr: String,
}

/// Runs `sweep --dry-run` against `base`, sampling the child's VmHWM until it exits.
fn measure_sweep(base: &str, fleet: &Fleet, state: &std::path::Path) -> Run {
    let t = Instant::now();
    // Another build of the sweep (e.g. main's, for a before/after figure) with SWEEP_BIN.
    let bin = std::env::var("SWEEP_BIN").unwrap_or_else(|_| BIN.to_string());
    // A profiler around the sweep (e.g. `SWEEP_WRAPPER=heaptrack`): the figures are then the
    // wrapper's, the profile is the point.
    let mut command = match std::env::var("SWEEP_WRAPPER") {
        Ok(w) if !w.trim().is_empty() => {
            let mut words = w.split_whitespace();
            let mut c = Command::new(words.next().unwrap_or_default());
            c.args(words).arg(bin);
            c
        }
        _ => Command::new(bin),
    };
    let mut child = command
        .args(["sweep", "--dry-run", "--output", "json"])
        .env("ADE_BACKUP_CREDENTIAL", "static")
        .env("ADE_BACKUP_STATIC_TOKEN", "t")
        .env("ADE_BACKUP_ARM_ENDPOINT", base)
        .env("ADE_BACKUP_GRAPH_ENDPOINT", base)
        .env("ADE_BACKUP_MANAGEMENT_GROUPS", "mg-root")
        .env(
            "ADE_BACKUP_BMS_OBJECT_ID",
            &fleet.backup_management_service_object_id,
        )
        .env("ADE_BACKUP_PROTECTION_RULES", rules_for(fleet))
        .env("ADE_BACKUP_STATE", format!("fs:{}", state.display()))
        // The simulator renders a whole table for a query's first page: 100,000 rows take
        // longer than the default 60 s on a loaded machine (Resource Graph does not).
        .env("ADE_BACKUP_ARM_REQUEST_TIMEOUT_MS", "900000")
        .env("ADE_BACKUP_ARM_RETRY_BUDGET_MS", "900000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the sweep");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::BufReader::new(stdout), &mut buf).map(|_| buf)
    });
    let (mut peak, mut anon, mut file) = (0, 0, 0);
    loop {
        if let Some(k) = status_kib(Some(pid), "VmHWM:") {
            peak = peak.max(k);
        }
        anon = anon.max(status_kib(Some(pid), "RssAnon:").unwrap_or(0));
        file = file.max(status_kib(Some(pid), "RssFile:").unwrap_or(0));
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let wall = t.elapsed();
    let out = child.wait_with_output().expect("sweep output");
    let stdout = reader.join().ok().and_then(Result::ok).unwrap_or_default();
    let plans = serde_json::from_slice::<Value>(&stdout)
        .ok()
        .and_then(|r| r["plans"].as_array().map(Vec::len))
        .unwrap_or(0);
    Run {
        wall,
        peak_kib: peak,
        anon_kib: anon,
        file_kib: file,
        plans,
        ok: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(2000)
            .collect(),
    }
}

/// The least time Resource Graph's quota allows for `queries`: 15 per 5-second window, the
/// first window starting with the first query.
fn quota_bound(queries: u64) -> Duration {
    Duration::from_secs(queries.saturating_sub(1) / 15 * 5)
}

fn fleet_run(subs: usize, vms: usize) {
    let fleet = Fleet::generate(subs, vms, 1);
    let (_sim, base) = start_sim(subs, vms);
    let state = tempfile::tempdir().expect("state dir");
    let before = sim_stats(&base).unwrap_or_default();
    let r = measure_sweep(&base, &fleet, state.path());
    let after = sim_stats(&base).unwrap_or_default();
    let count = |v: &Value, op: &str| v["calls"][op].as_u64().unwrap_or(0);
    let queries = count(&after, "resourceGraph.query") - count(&before, "resourceGraph.query");
    let throttled = after["throttledByOperation"]["resourceGraph.query"]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(
            before["throttledByOperation"]["resourceGraph.query"]
                .as_u64()
                .unwrap_or(0),
        );
    let bound = quota_bound(queries);
    println!("== sweep --dry-run: {vms} VMs over {subs} subscriptions (management group mg-root), simulator in another process, throttling and the Resource Graph quota on");
    println!(
        "exit ok: {} | plans: {} | wall {:.1} s (process start to exit)",
        r.ok,
        r.plans,
        r.wall.as_secs_f64()
    );
    if !r.ok {
        println!("stderr: {}", r.stderr);
    }
    println!(
        "peak RSS (VmHWM of the sweep process): {:.1} MiB; sampled every 10 ms: anonymous (heap, stacks) up to {:.1} MiB, file-backed (the binary's code) up to {:.1} MiB",
        r.peak_kib as f64 / 1024.0,
        r.anon_kib as f64 / 1024.0,
        r.file_kib as f64 / 1024.0
    );
    println!(
        "Resource Graph queries (pages): {queries}, 429s {throttled} ({:.1}%) | quota bound (15 per 5 s): {:.0} s | wall / bound = {:.2}",
        throttled as f64 * 100.0 / queries.max(1) as f64,
        bound.as_secs_f64(),
        r.wall.as_secs_f64() / bound.as_secs_f64().max(1.0)
    );
}

fn main() {
    let selection = ade_backup_test_support::bench::Selection::from_args();
    let want = |n: &str| selection.wants(n);
    if want("small") {
        fleet_run(1, 100);
    }
    if want("10k") {
        fleet_run(4, 10_000);
    }
    if want("100k") {
        fleet_run(20, 100_000);
    }
}
