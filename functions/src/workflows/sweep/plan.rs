//! Planning: [`crate::domain::sweep_plan::plan`] over what discovery saw, with the work already
//! in flight taken into account; and what the summary and the VM records say about a plan
//! (drift and action names, stable drift facts, counts, the drift picture's digest).

use super::discover::Discovery;
use super::{SweepError, STALLED_AFTER};
use crate::context::Context;
use crate::domain::sweep_plan::{self, Action, Drift, VmPlan};
use crate::records::{self, ProtectionStatus, VmRecord};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::{json, StateError};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Stable name of a drift kind (the serde tag).
pub fn drift_kind(d: &Drift) -> &'static str {
    match d {
        Drift::Unprotected => "unprotected",
        Drift::KeyVaultAccessRemoved { .. } => "key-vault-access-removed",
        Drift::ProtectionStopped { .. } => "protection-stopped",
        Drift::PolicyChanged { .. } => "policy-changed",
        Drift::RecoveryPointStale { .. } => "recovery-point-stale",
        Drift::NoRecoveryPoint => "no-recovery-point",
        Drift::LastJobFailed { .. } => "last-job-failed",
        Drift::DiskExclusionOnAde { .. } => "disk-exclusion-on-ade",
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::GrantAccess => "grant-access",
        Action::Protect => "protect",
        Action::BackupNow => "backup-now",
    }
}

/// A drift fact that does not change from run to run while the drift lasts (no ages), so the
/// per-VM record is written when the drift picture changes, not on every run.
pub(super) fn drift_fact(d: &Drift) -> String {
    match d {
        Drift::KeyVaultAccessRemoved { key_vault } => {
            format!("key-vault-access-removed: {key_vault}")
        }
        Drift::ProtectionStopped { state } => format!("protection-stopped: {state}"),
        Drift::PolicyChanged { expected, actual } => {
            format!("policy-changed: rule wants {expected}, Azure has {actual} (kept)")
        }
        Drift::RecoveryPointStale { rpo_hours, .. } => {
            format!("recovery-point-stale: older than the {rpo_hours} h RPO")
        }
        Drift::LastJobFailed { code } => format!("last-job-failed: {code}"),
        Drift::DiskExclusionOnAde {
            luns,
            inclusion_list,
        } => {
            let list = if *inclusion_list { "only" } else { "all but" };
            format!("disk-exclusion-on-ade: backs up {list} data disk LUNs {luns:?}")
        }
        other => drift_kind(other).to_string(),
    }
}

fn inputs<'a>(
    d: &'a Discovery,
    open: HashSet<String>,
    now: DateTime<Utc>,
) -> sweep_plan::SweepInputs<'a> {
    sweep_plan::SweepInputs {
        vms: &d.vms,
        protected_items: &d.protected_items,
        key_vaults_with_access: d.key_vaults_with_access.clone(),
        rpo: d.rpo.clone(),
        open_operations: open,
        now: Some(now),
    }
}

/// Plans, then reads the per-VM records of the VMs the plan would act on (only those) to find
/// work already in flight, and plans again with that.
pub(super) async fn plan_with_in_flight(
    ctx: &Context,
    d: &Discovery,
    now: DateTime<Utc>,
) -> Result<Vec<VmPlan>, SweepError> {
    let open = open_operations(ctx, d, now).await?;
    Ok(sweep_plan::plan(
        &ctx.settings.workflow.protection_rules,
        &inputs(d, open, now),
    ))
}

/// [`plan_with_in_flight`], each plan handed to `f` as it is made and none kept (the dry run
/// streams them out): the first pass keeps only the ids of the VMs it would act on.
pub(super) async fn plan_each_with_in_flight(
    ctx: &Context,
    d: &Discovery,
    now: DateTime<Utc>,
    f: impl FnMut(VmPlan),
) -> Result<(), SweepError> {
    let open = open_operations(ctx, d, now).await?;
    sweep_plan::plan_each(
        &ctx.settings.workflow.protection_rules,
        &inputs(d, open, now),
        f,
    );
    Ok(())
}

/// The VMs (canonical ids) with work in flight, among those a plan without that knowledge would
/// act on (only their records are read).
async fn open_operations(
    ctx: &Context,
    d: &Discovery,
    now: DateTime<Utc>,
) -> Result<HashSet<String>, SweepError> {
    let rules = &ctx.settings.workflow.protection_rules;
    let mut to_check: Vec<ResourceId> = Vec::new();
    sweep_plan::plan_each(rules, &inputs(d, HashSet::new(), now), |p| {
        if !p.actions.is_empty() {
            to_check.push(p.vm_id);
        }
    });
    if to_check.is_empty() {
        return Ok(HashSet::new());
    }
    in_flight(ctx, to_check, now).await
}

/// The VMs (canonical ids) among `vms` whose record says work is in progress and not stalled.
async fn in_flight(
    ctx: &Context,
    vms: Vec<ResourceId>,
    now: DateTime<Utc>,
) -> Result<HashSet<String>, SweepError> {
    let stalled = Duration::from_std(STALLED_AFTER).unwrap_or_else(|_| Duration::hours(2));
    let tasks: Vec<_> = vms
        .into_iter()
        .map(|vm| {
            let state = ctx.state.clone();
            Box::pin(async move {
                let rec =
                    json::get::<VmRecord>(state.as_ref(), &records::vm_record_key(&vm)).await?;
                Ok::<_, StateError>(rec.and_then(|(r, _)| {
                    (r.status == ProtectionStatus::InProgress && now - r.updated_at < stalled)
                        .then(|| vm.canonical())
                }))
            })
        })
        .collect();
    let results: Vec<Result<Option<String>, StateError>> = futures::stream::iter(tasks)
        .buffer_unordered(32)
        .collect()
        .await;
    let mut open = HashSet::new();
    for r in results {
        if let Some(vm) = r? {
            open.insert(vm);
        }
    }
    Ok(open)
}

/// VMs per drift kind, and per action.
pub(super) fn count_plans(plans: &[VmPlan]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut counts = PlanCounts::default();
    plans.iter().for_each(|p| counts.add(p));
    (counts.drift, counts.actions)
}

/// VMs per drift kind, and per action, counted one plan at a time.
#[derive(Debug, Default)]
pub(super) struct PlanCounts {
    pub drift: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
}

impl PlanCounts {
    pub fn add(&mut self, p: &VmPlan) {
        let kinds: BTreeSet<&str> = p.drift.iter().map(drift_kind).collect();
        for k in kinds {
            *self.drift.entry(k.to_string()).or_insert(0) += 1;
        }
        for a in &p.actions {
            *self.actions.entry(action_name(*a).to_string()).or_insert(0) += 1;
        }
    }
}

/// Fingerprint of the drift picture (stable drift facts, actions, needs-human, in flight per VM).
pub(super) fn plan_digest(plans: &[VmPlan]) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = plans
        .iter()
        .map(|p| {
            let facts: Vec<String> = p.drift.iter().map(drift_fact).collect();
            let actions: Vec<&str> = p.actions.iter().map(|a| action_name(*a)).collect();
            format!(
                "{}|{}|{}|{}|{}",
                p.vm_id.canonical(),
                facts.join(","),
                actions.join(","),
                p.needs_human.as_deref().unwrap_or(""),
                p.in_flight
            )
        })
        .collect();
    lines.sort();
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "00000000-0000-0000-0000-000000000001";

    #[test]
    fn digest_ignores_recovery_point_age() {
        let id = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        ))
        .expect("id");
        let mk = |age| VmPlan {
            vm_id: id.clone(),
            actions: vec![Action::BackupNow],
            drift: vec![Drift::RecoveryPointStale {
                age_hours: age,
                rpo_hours: 24,
            }],
            needs_human: None,
            in_flight: false,
            target: None,
        };
        assert_eq!(plan_digest(&[mk(40)]), plan_digest(&[mk(41)]));
        assert_ne!(plan_digest(&[mk(40)]), plan_digest(&[]));
    }
}
