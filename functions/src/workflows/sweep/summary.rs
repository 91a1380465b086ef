//! What a sweep reports: the run's [`SweepSummary`] (kept in `runs/sweep/latest.json` and, when
//! the run changed something, in `runs/sweep/{runId}.json`), the dry run's [`SweepPlanReport`],
//! the ARM usage between two counter snapshots, and the state-operation counter
//! ([`CountingStore`]) every state access of a run goes through.

use super::discover::Discovery;
use super::plan;
use super::SweepError;
use crate::domain::sweep_plan::VmPlan;
use crate::records;
use ade_backup_shared::arm::ArmStats;
use ade_backup_shared::state::{json, ETag, LeaseAcquired, LeaseId, StateError, StateStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `runs/sweep/latest.json` (its blob lease is the run guard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepLatest {
    pub last: Option<SweepSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedsHuman {
    pub vm_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmFailure {
    pub vm_id: String,
    pub error: String,
}

/// ARM usage of one run (deltas of the process-wide client counters: work other handlers of the
/// same process did meanwhile is included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmUsage {
    pub calls: u64,
    pub calls_by_operation: BTreeMap<String, u64>,
    pub throttled: u64,
    pub retries: u64,
    pub paced_wait_ms: u64,
}

impl ArmUsage {
    pub fn between(before: &ArmStats, after: &ArmStats) -> Self {
        let calls_by_operation: BTreeMap<String, u64> = after
            .calls
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(before.calls.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        Self {
            calls: calls_by_operation.values().sum(),
            calls_by_operation,
            throttled: after.throttled.saturating_sub(before.throttled),
            retries: after.retries.saturating_sub(before.retries),
            paced_wait_ms: after.paced_wait_ms.saturating_sub(before.paced_wait_ms),
        }
    }
}

/// What one run did (the `last` of `latest.json`, and `runs/sweep/{runId}.json` when it changed
/// something).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `completed` or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// The previous run's lease lapsed without a release (it crashed or overran) and this run
    /// took over; `last_run_id` names the last run that did finish.
    pub took_over_expired_lease: bool,
    pub last_run_id: Option<String>,
    /// Subscriptions the run covered (management groups expanded).
    pub subscriptions: usize,
    /// The configured scope, as text: subscriptions, management groups, tag filter.
    #[serde(default)]
    pub scope: String,
    pub vms_seen: usize,
    pub ade_vms: usize,
    pub protected_items: usize,
    /// VMs per outcome: `protection-started`, `repair-started`, `in-flight`, `needs-human`,
    /// `reported` (drift kept as is, e.g. a changed policy), `failed`.
    pub outcomes: BTreeMap<String, u64>,
    /// VMs per drift kind.
    pub drift: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
    pub needs_human: Vec<NeedsHuman>,
    pub failures: Vec<VmFailure>,
    pub warnings: Vec<String>,
    pub arm: ArmUsage,
    /// State reads of this run.
    pub state_reads: u64,
    /// State (blob) writes of this run, the summary write and the history write included.
    pub state_writes: u64,
    /// Lease calls of this run (acquire, renewals, release): not writes.
    pub lease_calls: u64,
    pub changed: bool,
    /// Fingerprint of the drift picture; a run whose picture matches the last one and that
    /// started no work changed nothing.
    pub plan_digest: String,
}

impl SweepSummary {
    /// A `completed` run that has seen and done nothing yet.
    pub(super) fn new(run_id: String, started_at: DateTime<Utc>) -> Self {
        Self {
            run_id,
            started_at,
            finished_at: started_at,
            duration_ms: 0,
            status: "completed".into(),
            error: None,
            took_over_expired_lease: false,
            last_run_id: None,
            subscriptions: 0,
            scope: String::new(),
            vms_seen: 0,
            ade_vms: 0,
            protected_items: 0,
            outcomes: BTreeMap::new(),
            drift: BTreeMap::new(),
            actions: BTreeMap::new(),
            needs_human: vec![],
            failures: vec![],
            warnings: vec![],
            arm: ArmUsage::default(),
            state_reads: 0,
            state_writes: 0,
            lease_calls: 0,
            changed: false,
            plan_digest: String::new(),
        }
    }

    /// What discovery saw.
    pub(super) fn saw(&mut self, d: &Discovery) {
        self.subscriptions = d.subscriptions.len();
        self.vms_seen = d.vms_seen;
        self.ade_vms = d.vms.len();
        self.protected_items = d.protected_items.len();
        self.warnings = d.warnings.clone();
    }

    /// What the plan found: drift and actions per kind, and the drift picture's fingerprint.
    pub(super) fn planned(&mut self, plans: &[VmPlan]) {
        let (drift, actions) = plan::count_plans(plans);
        let m = ade_backup_shared::telemetry::metrics();
        for (kind, n) in &drift {
            m.sweep_drift(kind, *n);
        }
        self.drift = drift;
        self.actions = actions;
        self.plan_digest = plan::plan_digest(plans);
    }

    /// One more VM with this outcome.
    pub(super) fn count_outcome(&mut self, outcome: &str) {
        *self.outcomes.entry(outcome.to_string()).or_insert(0) += 1;
    }

    /// A VM's drift facts could not be written to its record.
    pub(super) fn drift_not_recorded(
        &mut self,
        vm_id: &impl std::fmt::Display,
        e: impl std::fmt::Display,
    ) {
        self.warnings
            .push(format!("{vm_id}: could not record the drift facts: {e}"));
    }

    /// The run's status, and whether it changed anything: a failed run did; otherwise its drift
    /// picture is compared with the previous run's.
    pub(super) fn conclude(&mut self, error: Option<&SweepError>, previous: Option<&SweepSummary>) {
        if let Some(e) = error {
            self.status = "failed".into();
            self.error = Some(e.to_string());
            self.changed = true;
        }
        if !self.changed {
            // No previous run counts as "no drift": a healthy fleet's first run changes nothing.
            let before = previous
                .map(|p| p.plan_digest.clone())
                .unwrap_or_else(|| plan::plan_digest(&[]));
            self.changed = before != self.plan_digest;
        }
    }
}

/// Writes the run's history document `runs/sweep/{runId}.json` (already there: a retried write
/// of the same run, nothing to do).
pub(super) async fn keep_history(
    store: &dyn StateStore,
    summary: &SweepSummary,
) -> Result<(), StateError> {
    match json::create(store, &records::sweep_run_key(&summary.run_id), summary).await {
        Ok(_) | Err(StateError::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The dry-run report: the plan, and what discovery saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPlanReport {
    pub generated_at: DateTime<Utc>,
    /// The configured scope (subscriptions, management groups, tag filter).
    pub scope: String,
    /// Subscriptions the discovery covered (management groups expanded).
    pub subscriptions: Vec<String>,
    pub vms_seen: usize,
    pub ade_vms: usize,
    pub protected_items: usize,
    pub key_vaults: usize,
    pub key_vaults_with_access: usize,
    pub drift: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
    pub plans: Vec<VmPlan>,
    pub warnings: Vec<String>,
    pub arm: ArmUsage,
}

/// Counts the state operations of one run (the summary reports them).
pub(super) struct CountingStore {
    inner: Arc<dyn StateStore>,
    reads: AtomicU64,
    writes: AtomicU64,
    lease_calls: AtomicU64,
}

impl CountingStore {
    pub(super) fn new(inner: Arc<dyn StateStore>) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            lease_calls: AtomicU64::new(0),
        }
    }

    /// Puts the counts into the summary, with what the run is still to do counted in: the
    /// summary write, the history write when the run changed something, and the release.
    pub(super) fn report(&self, summary: &mut SweepSummary) {
        summary.state_reads = self.reads.load(Ordering::Relaxed);
        summary.state_writes = self.writes.load(Ordering::Relaxed) + 1 + u64::from(summary.changed);
        summary.lease_calls = self.lease_calls.load(Ordering::Relaxed) + 1;
    }
}

#[async_trait]
impl StateStore for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.create(key, body).await
    }
    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.replace(key, body, etag).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }
    async fn acquire_lease(
        &self,
        key: &str,
        duration: std::time::Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        self.lease_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire_lease(key, duration, proposed).await
    }
    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.lease_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.renew_lease(key, lease).await
    }
    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.lease_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.release_lease(key, lease).await
    }
    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.replace_leased(key, body, lease).await
    }
}
