//! Scenarios 1, 2 and 4 in process: VMs announced by Event Grid events (at a given rate, each
//! delivered `copies` times), onboarded by the production handlers behind a continuous
//! [`QueuePump`] against the simulator, optionally with completed deliveries redelivered,
//! ARM faults injected by the simulator and state writes failing. [`run`] returns the figures:
//! time from event enqueued to backup-now accepted (with the ARM pacing wait inside it apart),
//! the simulator's write counts, the VM records' census.

use super::{
    access_policy_needs, ade_event, onboarding_fleet, restores, vm_ids, vm_of, Census, Spread,
};
use crate::flaky_store::FlakyStore;
use crate::pump::{PumpOptions, PumpReport, QueuePump};
use crate::simulator::uniform_durations;
use crate::sweep_harness::Harness;
use ade_backup_functions::handlers::{Outcome, Registry};
use ade_backup_shared::arm::ArmStats;
use ade_backup_shared::messaging::{MessageSender, OutboundMessage};
use ade_backup_sim::{FaultConfig, SimOptions, SimStats};
use chrono::TimeDelta;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One onboarding run.
#[derive(Debug, Clone)]
pub struct OnboardingRun {
    pub subscriptions: usize,
    pub vms: usize,
    /// Restore requests (of other VMs, protected with a recovery point), sent at the start.
    pub restores: usize,
    /// Events per second (0: all at once).
    pub events_per_second: f64,
    /// Each event is delivered this many times (same event, distinct Service Bus message ids).
    pub copies: u32,
    /// Share of completed deliveries handed out again.
    pub redeliver_completed: f64,
    /// Service Bus duplicate detection on every queue (as deployed); off, the product's own
    /// same-id resends reach the handlers too.
    pub duplicate_detection: bool,
    /// ARM faults the simulator injects for the whole run.
    pub faults: FaultConfig,
    /// Share of state writes that fail.
    pub state_write_failures: f64,
    /// Simulated seconds per real second (every simulated job takes one simulated second).
    pub time_scale: f64,
    /// Real-time limit for the whole run.
    pub timeout: Duration,
    pub seed: u64,
}

impl Default for OnboardingRun {
    fn default() -> Self {
        Self {
            subscriptions: 4,
            vms: 100,
            restores: 0,
            events_per_second: 0.0,
            copies: 1,
            redeliver_completed: 0.0,
            duplicate_detection: true,
            faults: FaultConfig::default(),
            state_write_failures: 0.0,
            time_scale: 10.0,
            timeout: Duration::from_secs(120),
            seed: 15,
        }
    }
}

/// What one run did.
#[derive(Debug)]
pub struct OnboardingReport {
    pub vm_ids: Vec<String>,
    pub wall: Duration,
    /// Event enqueued → backup-now accepted, minus the ARM pacing wait in between.
    pub latency: Spread,
    /// Event enqueued → backup-now accepted, pacing included.
    pub latency_with_pacing: Spread,
    /// The ARM pacing wait per VM before its backup-now was accepted.
    pub pacing: Spread,
    /// VM records by status.
    pub by_status: BTreeMap<String, u64>,
    pub unprotected: Vec<String>,
    pub sim: SimStats,
    pub arm: ArmStats,
    /// Access-policy vaults the fleet leaves without the Backup Management Service's policy, and
    /// how many permission sets their VMs need.
    pub access_policy_needs: BTreeMap<String, u64>,
    pub pump: PumpReport,
    pub redelivered: u64,
    pub state_faults: u64,
    /// Restore tickets sent, and their documents by status at the end.
    pub tickets: usize,
    pub tickets_by_status: BTreeMap<String, u64>,
    /// The operation documents of the VMs left unprotected (what to look at when one is).
    pub stuck: Vec<String>,
}

impl OnboardingReport {
    /// Access-policy writes on vaults that needed none, or more writes than permission sets.
    pub fn excess_access_policy_writes(&self) -> Vec<String> {
        self.sim
            .access_policy_writes_by_vault
            .iter()
            .filter(|(vault, n)| **n > self.access_policy_needs.get(*vault).copied().unwrap_or(0))
            .map(|(vault, n)| format!("{vault}: {n} writes"))
            .collect()
    }
}

/// Runs `run` (see the module docs).
pub async fn run(run: &OnboardingRun) -> OnboardingReport {
    let mut fleet = onboarding_fleet(run.subscriptions, run.vms + run.restores, run.seed);
    let requests = restores::protect_for_restore(&mut fleet, run.restores);
    let needs = access_policy_needs(&fleet);
    let ids = vm_ids(&fleet).split_off(run.restores);
    let tenant = fleet.tenant_id.clone();
    let options = SimOptions {
        time_scale: run.time_scale,
        throttling: true,
        durations: uniform_durations(1),
        faults: run.faults.clone(),
        varied_casing: true,
        ..SimOptions::default()
    };
    let env = [
        ("ADE_BACKUP_POLL_INTERVAL_MS", "1000".to_string()),
        ("ADE_BACKUP_RESTORE_ALLOWLIST", restores::allowlist(&fleet)),
        ("ADE_BACKUP_REPLY_QUEUES", restores::REPLY_QUEUE.to_string()),
    ];
    let mut h = Harness::start(fleet, options, &env).await;
    let pump = Arc::new(QueuePump::new(
        &Registry::production(),
        PumpOptions {
            // Duplicate detection on every queue, as infra/modules/app.bicep configures them
            // (the product's own follow-ups rely on it); the copies of an event carry distinct
            // message ids, so each reaches the handler (as copies outside the window would).
            duplicate_window: run.duplicate_detection.then_some(TimeDelta::MAX),
            redelivery_delay: TimeDelta::zero(),
            redeliver_completed: run.redeliver_completed,
        },
    ));
    h.ctx.sender = pump.clone();
    let flaky = Arc::new(FlakyStore::new(h.store.clone()));
    flaky.fail_share(run.state_write_failures);
    h.ctx.state = flaky.clone();
    h.sim.reset_stats();

    let enqueued: Mutex<HashMap<String, Instant>> = Mutex::default();
    let producing = AtomicBool::new(true);
    let started = Instant::now();
    let produce = async {
        for r in &requests {
            let m = OutboundMessage::json(restores::REQUEST_QUEUE, &r.ticket, &r.body)
                .expect("a restore request serialises");
            pump.send(m).await.expect("the pump accepts requests");
        }
        for (i, vm) in ids.iter().enumerate() {
            if run.events_per_second > 0.0 {
                let due = started + Duration::from_secs_f64(i as f64 / run.events_per_second);
                tokio::time::sleep_until(due.into()).await;
            }
            let event_id = uuid::Uuid::from_u128((u128::from(run.seed) << 64) | i as u128);
            let msg = ade_event(vm, &tenant, &event_id.to_string());
            if let Ok(mut m) = enqueued.lock() {
                m.insert(vm.to_ascii_lowercase(), Instant::now());
            }
            for copy in 0..run.copies.max(1) {
                let mut m = msg.clone();
                if copy > 0 {
                    m.message_id = format!("{}~copy-{copy}", m.message_id);
                }
                pump.send(m).await.expect("the pump accepts events");
            }
        }
        producing.store(false, Ordering::SeqCst);
    };
    let (_, report) = tokio::join!(produce, pump.drain_while(&h.ctx, run.timeout, &producing));
    let wall = started.elapsed();
    let census = Census::of(&h.store);
    let enqueued = enqueued.into_inner().unwrap_or_default();
    let (latency, latency_with_pacing, pacing) = latencies(&pump, &census, &enqueued);
    if std::env::var("RELIABILITY_TRACE").is_ok() {
        let first = ids[0].to_ascii_lowercase();
        for d in pump.deliveries() {
            if vm_of(&d.body, &census).as_deref() == Some(first.as_str()) {
                println!(
                    "{:?} {:?} {} {}",
                    d.started.duration_since(started),
                    d.finished.duration_since(started),
                    d.queue,
                    String::from_utf8_lossy(&d.body)
                        .chars()
                        .take(120)
                        .collect::<String>()
                );
            }
        }
    }
    let unprotected = census.unprotected(&ids);
    let stuck = stuck_operations(&h.store, &census, &unprotected);
    OnboardingReport {
        stuck,
        unprotected,
        vm_ids: ids,
        wall,
        latency,
        latency_with_pacing,
        pacing,
        by_status: census.by_status,
        sim: h.sim.stats(),
        arm: h.ctx.arm.stats(),
        access_policy_needs: needs,
        pump: report,
        redelivered: pump.redelivered(),
        state_faults: flaky.injected(),
        tickets: requests.len(),
        tickets_by_status: restores::tickets_by_status(&h.store),
    }
}

/// The operation document of each VM of `vms`, as one JSON line.
fn stuck_operations(
    store: &ade_backup_shared::state::MemoryStateStore,
    census: &Census,
    vms: &[String],
) -> Vec<String> {
    let wanted: Vec<String> = vms.iter().map(|v| v.to_ascii_lowercase()).collect();
    census
        .operation_vm
        .iter()
        .filter(|(_, vm)| wanted.contains(vm))
        .filter_map(|(op, _)| store.json(&format!("operations/protect/{op}.json")))
        .map(|doc| doc.to_string())
        .collect()
}

/// Per VM: enqueued → the first completed `backup-now` delivery, with and without the pacing
/// wait of the VM's deliveries that ended by then; and that wait.
fn latencies(
    pump: &QueuePump,
    census: &Census,
    enqueued: &HashMap<String, Instant>,
) -> (Spread, Spread, Spread) {
    let deliveries = pump.deliveries();
    let mut accepted: HashMap<String, Instant> = HashMap::new();
    for d in &deliveries {
        let backup_now = d.queue == "backup-vm"
            && matches!(d.outcome, Outcome::Completed(_))
            && serde_json::from_slice::<serde_json::Value>(&d.body)
                .is_ok_and(|b| b["phase"] == "backup-now");
        if !backup_now {
            continue;
        }
        if let Some(vm) = vm_of(&d.body, census) {
            let at = accepted.entry(vm).or_insert(d.finished);
            *at = (*at).min(d.finished);
        }
    }
    let mut paced: HashMap<String, Duration> = HashMap::new();
    for d in &deliveries {
        let Some(vm) = vm_of(&d.body, census) else {
            continue;
        };
        if accepted.get(&vm).is_some_and(|at| d.finished <= *at) {
            *paced.entry(vm).or_default() += d.paced;
        }
    }
    let (mut without, mut with, mut waits) = (Vec::new(), Vec::new(), Vec::new());
    for (vm, at) in &accepted {
        let Some(t0) = enqueued.get(vm) else { continue };
        let total = at.saturating_duration_since(*t0);
        let wait = paced.get(vm).copied().unwrap_or_default();
        with.push(total);
        without.push(total.saturating_sub(wait));
        waits.push(wait);
    }
    (Spread::of(without), Spread::of(with), Spread::of(waits))
}

impl std::fmt::Display for OnboardingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = &self.sim.writes;
        writeln!(
            f,
            "  VMs: {}, wall {:.1} s",
            self.vm_ids.len(),
            self.wall.as_secs_f64()
        )?;
        writeln!(f, "  records by status: {:?}", self.by_status)?;
        writeln!(f, "  unprotected: {}", self.unprotected.len())?;
        if self.tickets > 0 {
            writeln!(
                f,
                "  restore tickets: {} sent, by status {:?}; sim restore jobs {} deployments {}",
                self.tickets, self.tickets_by_status, w.restores, w.deployments
            )?;
        }
        writeln!(
            f,
            "  enqueued -> backup-now accepted, excluding pacing: {}",
            self.latency
        )?;
        writeln!(f, "  same, pacing included: {}", self.latency_with_pacing)?;
        writeln!(f, "  ARM pacing wait per VM: {}", self.pacing)?;
        writeln!(
            f,
            "  sim writes: protected-item PUTs {} backup-now {} access-policy {} role assignments {} role definitions {}",
            w.protection_puts, w.backup_now_calls, w.access_policy_writes, w.role_assignment_writes, w.role_definition_writes
        )?;
        writeln!(
            f,
            "  access-policy writes per vault: {:?} (vaults needing grants: {})",
            self.sim.access_policy_writes_by_vault,
            self.access_policy_needs.len()
        )?;
        writeln!(
            f,
            "  sim: {} calls, {} throttled (429 from the buckets), {} faults injected",
            self.sim.calls.values().sum::<u64>(),
            self.sim.throttled,
            self.sim.faults_injected
        )?;
        writeln!(
            f,
            "  sim calls per VM by operation: {}",
            self.calls_per_vm()
        )?;
        writeln!(f, "  client: {}", summary_line(&self.arm))?;
        write!(
            f,
            "  pump: {} deliveries, {} transient failures (redelivered), {} completed redelivered on purpose, {} dead-lettered, timed out: {}; state writes failed: {}",
            self.pump.delivered,
            self.pump.transient_failures,
            self.redelivered,
            self.pump.dead_lettered.len(),
            self.pump.timed_out,
            self.state_faults
        )?;
        for line in self.pump.dead_lettered.iter().take(10) {
            write!(
                f,
                "\n  dead-lettered: {}",
                line.chars().take(400).collect::<String>()
            )?;
        }
        for doc in &self.stuck {
            write!(f, "\n  stuck: {doc}")?;
        }
        Ok(())
    }
}

impl OnboardingReport {
    /// The simulator's calls per onboarded VM, by operation (most first): reads and writes per
    /// VM of the event path, fleet-wide calls (vault, policy) included.
    pub fn calls_per_vm(&self) -> String {
        let n = self.vm_ids.len().max(1) as f64;
        let mut ops: Vec<(&String, &u64)> = self.sim.calls.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let total: u64 = ops.iter().map(|(_, c)| **c).sum();
        let each: Vec<String> = ops
            .iter()
            .map(|(op, c)| format!("{op} {:.2}", **c as f64 / n))
            .collect();
        format!("{:.2} in all: {}", total as f64 / n, each.join(", "))
    }
}

fn summary_line(s: &ArmStats) -> String {
    format!(
        "{} ARM attempts, {} answered 429, {} retries, {} calls paced ({} ms in all)",
        s.total_calls(),
        s.throttled,
        s.retries,
        s.paced,
        s.paced_wait_ms
    )
}
