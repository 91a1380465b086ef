//! The scheduled policy sweep: reconcile every ADE VM in the configured subscriptions with the
//! protection rules, with as few ARM calls as Azure allows, and start only the work needed.
//!
//! One run, from the `PolicySweep` timer tick ([`run`]) to its summary, file by file:
//! 1. **Claim the run** (`lease.rs`). Take a lease on `runs/sweep/latest.json` (Blob: Lease Blob,
//!    60 s, renewed every 20 s by a background task while the run works). A live lease held by
//!    another run means "another sweep is running": this run exits without touching anything and
//!    says so in its return. A lease is not a write (it changes neither the document nor its
//!    ETag). A crashed run's lease lapses within a minute and the next tick takes over (the store
//!    reports the lease as `expired`, which the summary records); since the plan is recomputed
//!    from Azure every time, the next run redoes whatever was left undone. A run that loses its
//!    lease (a renewal failed and someone else took it) starts no further VM work.
//! 2. **Discover** (`discover.rs`, with `access.rs` for Key Vault access) by Azure Resource
//!    Graph only (1,000 rows a page, `$skipToken`): VMs, ADE extensions, Key Vaults (access
//!    policies), the Backup Management Service's role assignments (RBAC vaults) and protected
//!    items, over all configured subscriptions at once; then one `GET backupPolicies/{p}` per
//!    distinct (vault, policy) for the RPO, cached for the run. An unchanged 10,000-VM fleet
//!    costs a few dozen calls, never one GET per VM.
//! 3. **Plan** (`plan.rs`) with [`crate::domain::sweep_plan::plan`]. Per-VM records are read only
//!    for VMs the plan wants to act on (an `in-progress` record means work is already in flight).
//! 4. **Act** (`act.rs`) with bounded concurrency: [`protect::evaluate_observed`] per VM that
//!    needs work (`repair` when Azure already protects it), handed what discovery already knows
//!    (VM, Key Vault access and settings, protection state, the vault's location) so the workflow
//!    reads none of it again. It reuses open operations, so nothing in flight is duplicated. VMs
//!    that need a human are listed in the summary. Healthy protected ADE VMs without a record
//!    (protected before ade-backup) are adopted: their ADE settings are recorded once (one `list`
//!    of `vms/` per run finds them).
//! 5. **Summary** (`summary.rs`): written into `latest.json` under the lease (the run's one
//!    write), then the lease is released. `runs/sweep/{runId}.json` is written only when
//!    something changed (work started, the drift picture differs from the last run's, or a VM
//!    failed). **An unchanged fleet costs exactly one state write (the summary), two state reads
//!    (the last summary, the list of VM records), two lease calls (acquire — on Blob with a
//!    properties read — and release) and zero ARM writes.**
//!
//! [`plan_only`] (`ade-backup sweep --dry-run`) runs steps 2 and 3 only and writes nothing; the
//! CLI prints its report with [`crate::sweep_table`]. [`plan_streamed`] is the same dry run with
//! each plan handed on as it is made and none kept (`--output json` writes them out that way).
//!
//! Resource Graph query and row shapes: `Azure/azure-rest-api-specs` resourcegraph 2022-10-01
//! examples `ResourcesFirstPageQuery.json` / `ResourcesNextPageQuery.json`, and docs/arm-surface.md
//! (the KQL subset the simulator implements, `project` included).
//!
//! [`protect::evaluate_observed`]: super::protect::evaluate_observed

mod access;
mod act;
mod discover;
mod lease;
mod plan;
mod summary;

pub use self::discover::{configured_scopes, discover, scope_text, Discovery};
pub use self::plan::{action_name, drift_kind};
pub use self::summary::{
    ArmUsage, NeedsHuman, SweepLatest, SweepPlanReport, SweepSummary, VmFailure,
};
/// The dry-run table lives with the CLI ([`crate::sweep_table`]); re-exported for existing callers.
pub use crate::sweep_table::render_table;

use self::lease::{Claim, Claimed, LeaseKeeper};
use self::summary::CountingStore;
use crate::context::Context;
use crate::domain::sweep_plan::VmPlan;
use ade_backup_shared::arm::ArmError;
use ade_backup_shared::state::StateError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

/// How many VMs are worked on at once. ARM pacing (per subscription) is the real limit; this only
/// bounds memory and open connections.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// The run lease's length: the longest the Blob service allows short of an infinite lease. A
/// running sweep renews it every third of this; a crashed run blocks the schedule at most this
/// long.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);
/// An `in-progress` VM record older than this is treated as stalled: the sweep evaluates the VM
/// again, which re-sends the operation's current step (duplicate detection and step claims keep
/// that idempotent) instead of waiting forever.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub concurrency: usize,
    pub lease: std::time::Duration,
    /// Explicit run id (tests); default: `sweep-{yyyymmddThhmmssZ}-{random}`.
    pub run_id: Option<String>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            lease: DEFAULT_LEASE,
            run_id: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("settings ADE_BACKUP_SUBSCRIPTIONS and ADE_BACKUP_MANAGEMENT_GROUPS are both empty: the sweep needs at least one subscription id or management group to reconcile")]
    NoSubscriptions,
    #[error("Resource Graph discovery failed while reading {what}: {source}")]
    Discovery {
        what: &'static str,
        #[source]
        source: ArmError,
    },
    #[error("could not find the Backup Management Service object id (set ADE_BACKUP_BMS_OBJECT_ID to skip the lookup): {0}")]
    BmsObjectId(String),
    #[error("state store: {0}")]
    State(#[from] StateError),
    /// Some already-protected VMs could not be recorded; the next run retries them.
    #[error("{adopted} recorded, {failed} failed (first: {first})")]
    Adoption {
        adopted: u64,
        failed: usize,
        first: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum SweepOutcome {
    Completed(Box<SweepSummary>),
    /// Another run holds the lease; nothing was read from Azure or written.
    Skipped {
        reason: String,
    },
}

/// The dry run: discovery and plan, nothing written (state is only read, for in-flight work).
pub async fn plan_only(ctx: &Context) -> Result<SweepPlanReport, SweepError> {
    struct Collect(Vec<VmPlan>);
    impl PlanSink for Collect {
        fn begin(&mut self, _: &SweepPlanReport) {}
        fn plan(&mut self, p: VmPlan) {
            self.0.push(p);
        }
    }
    let mut sink = Collect(Vec::new());
    let report = plan_streamed(ctx, &mut sink).await?;
    Ok(SweepPlanReport {
        plans: sink.0,
        ..report
    })
}

/// Where a streamed dry run's report goes: its head (what discovery saw, `plans` and the
/// counts still empty), then each plan as it is made.
pub trait PlanSink {
    fn begin(&mut self, head: &SweepPlanReport);
    fn plan(&mut self, plan: VmPlan);
}

/// The dry run, streamed: no plan is kept (a 100,000-VM fleet's plans are tens of MB). Returns
/// the report without its plans, with the counts and ARM usage filled in.
pub async fn plan_streamed(
    ctx: &Context,
    sink: &mut (dyn PlanSink + Send),
) -> Result<SweepPlanReport, SweepError> {
    let before = ctx.arm.stats();
    let now = ctx.clock.now();
    let d = discover(ctx).await?;
    let mut report = SweepPlanReport {
        generated_at: now,
        scope: scope_text(ctx),
        subscriptions: d.subscriptions.iter().map(|s| s.to_string()).collect(),
        vms_seen: d.vms_seen,
        ade_vms: d.vms.len(),
        protected_items: d.protected_items.len(),
        key_vaults: d.key_vaults,
        key_vaults_with_access: d.key_vaults_with_access.len(),
        drift: Default::default(),
        actions: Default::default(),
        plans: Vec::new(),
        warnings: d.warnings.clone(),
        arm: ArmUsage::default(),
    };
    sink.begin(&report);
    let mut counts = plan::PlanCounts::default();
    plan::plan_each_with_in_flight(ctx, &d, now, |p| {
        counts.add(&p);
        sink.plan(p);
    })
    .await?;
    report.drift = counts.drift;
    report.actions = counts.actions;
    report.arm = ArmUsage::between(&before, &ctx.arm.stats());
    Ok(report)
}

/// One scheduled run (what the `PolicySweep` timer calls).
pub async fn run(ctx: &Context) -> Result<SweepOutcome, SweepError> {
    run_with(ctx, SweepOptions::default()).await
}

/// One run with explicit options: claim the run lease, reconcile, keep the summary.
pub async fn run_with(ctx: &Context, options: SweepOptions) -> Result<SweepOutcome, SweepError> {
    let started = Started {
        clock: std::time::Instant::now(),
        at: ctx.clock.now(),
        arm: ctx.arm.stats(),
    };
    let counting = Arc::new(CountingStore::new(ctx.state.clone()));
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| new_run_id(started.at));
    match lease::claim(counting.as_ref(), options.lease).await? {
        Claimed::No { reason } => {
            tracing::info!(run_id, "{reason}");
            Ok(SweepOutcome::Skipped { reason })
        }
        Claimed::Yes(claim) => {
            let summary = run_claimed(ctx, &options, counting, run_id, started, claim).await?;
            Ok(SweepOutcome::Completed(Box::new(summary)))
        }
    }
}

/// When and from which ARM counters a run started (the summary reports the differences).
struct Started {
    clock: std::time::Instant,
    at: DateTime<Utc>,
    arm: ade_backup_shared::arm::ArmStats,
}

/// The run under its lease: reconcile while the lease is kept alive, then close and keep the
/// summary (history first when something changed, then `latest.json`, then the release).
async fn run_claimed(
    ctx: &Context,
    options: &SweepOptions,
    counting: Arc<CountingStore>,
    run_id: String,
    started: Started,
    claim: Claim,
) -> Result<SweepSummary, SweepError> {
    let keeper = LeaseKeeper::start(counting.clone(), claim.lease.clone(), options.lease);
    let previous = claim.previous.as_deref();
    if claim.took_over {
        tracing::warn!(run_id, last_finished = ?previous.map(|p| p.run_id.clone()), "the previous sweep's lease expired without a release; taking over (the plan is recomputed, so what it left undone is redone)");
    }
    let mut summary = SweepSummary {
        took_over_expired_lease: claim.took_over,
        last_run_id: previous.map(|p| p.run_id.clone()),
        subscriptions: ctx.settings.subscriptions.len(),
        scope: scope_text(ctx),
        ..SweepSummary::new(run_id.clone(), started.at)
    };
    // Every state access of the run (the protection workflow's included) goes through the counter.
    let rctx = Context {
        state: counting.clone(),
        ..ctx.clone()
    };
    let body = reconcile(
        &rctx,
        &run_id,
        options.concurrency.max(1),
        &keeper,
        &mut summary,
    )
    .await;
    drop(keeper);
    summary.conclude(body.as_ref().err(), previous);
    summary.finished_at = ctx.clock.now();
    summary.duration_ms = started.clock.elapsed().as_millis() as i64;
    summary.arm = ArmUsage::between(&started.arm, &ctx.arm.stats());
    counting.report(&mut summary);
    if summary.changed {
        summary::keep_history(counting.as_ref(), &summary).await?;
    }
    lease::finish(counting.as_ref(), &claim.lease, &summary).await?;
    tracing::info!(
        run_id,
        changed = summary.changed,
        arm_calls = summary.arm.calls,
        throttled = summary.arm.throttled,
        state_writes = summary.state_writes,
        "sweep finished"
    );
    body?;
    Ok(summary)
}

/// Discover → plan → act, each step's counts into the summary.
async fn reconcile(
    ctx: &Context,
    run_id: &str,
    concurrency: usize,
    keeper: &LeaseKeeper,
    summary: &mut SweepSummary,
) -> Result<(), SweepError> {
    let now = ctx.clock.now();
    let d = discover(ctx).await?;
    summary.saw(&d);
    let plans = plan::plan_with_in_flight(ctx, &d, now).await?;
    summary.planned(&plans);
    act::act(ctx, run_id, concurrency, &keeper.lost, &d, &plans, summary).await;
    Ok(())
}

fn new_run_id(now: DateTime<Utc>) -> String {
    format!(
        "sweep-{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
