//! Builds the [`FleetReport`] from the state documents ([`ReportInputs`]): a pure function of the
//! documents and the report's clock, so the same state always gives the same report.

use super::load::ReportInputs;
use super::model::*;
use crate::records::{ProtectionStatus, RestoreOperation, RestoreStatus, VmRecord};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// How many sweeps the trend shows.
pub const TREND_RUNS: usize = 12;
/// The RPO a protected item is held to when no facts name its policy's (the sweep's default).
pub const DEFAULT_RPO_HOURS: i64 = 24;

/// A VM record's outcome label: its status, `recorded` for a record with no outcome yet.
pub fn outcome(rec: &VmRecord) -> String {
    match rec.status {
        ProtectionStatus::Unset => "recorded".into(),
        s => s.as_str().to_string(),
    }
}

fn is_ade(rec: &VmRecord) -> bool {
    rec.status != ProtectionStatus::NotEncrypted
}

pub fn build(inputs: &ReportInputs, now: DateTime<Utc>) -> FleetReport {
    let ade: Vec<&VmRecord> = inputs.vms.iter().filter(|r| is_ade(r)).collect();
    let mut warnings = inputs.warnings.clone();
    warnings.extend(inputs.facts.warnings.iter().cloned());
    if inputs.facts.gathered_at.is_none() {
        warnings.push("no ARM facts in the state yet (reports/facts.json is written by the sweep): regions, sizes, disks, RPOs and retention are unknown".into());
    }
    FleetReport {
        generated_at: now,
        facts_gathered_at: inputs.facts.gathered_at,
        coverage: coverage(&ade, inputs),
        sweeps: sweeps(inputs),
        needs_human: needs_human(&ade, inputs),
        freshness: freshness(&ade, inputs, now),
        restores: restores(&inputs.restores),
        dead_letters: inputs
            .dead_letters
            .iter()
            .map(|d| DeadLetterRow {
                queue: d.queue.clone(),
                message_id: d.message_id.clone(),
                reason: d.reason.clone(),
                description: d.description.clone(),
            })
            .collect(),
        retirement: super::retirement::build(&ade, inputs, now),
        drills: super::drills::build(&inputs.vms, &inputs.drills),
        warnings,
    }
}

fn coverage(ade: &[&VmRecord], inputs: &ReportInputs) -> Coverage {
    let mut by_outcome = BTreeMap::new();
    let mut groups: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    for rec in ade {
        let o = outcome(rec);
        *by_outcome.entry(o.clone()).or_insert(0) += 1;
        let region = inputs
            .facts
            .vm(&rec.vm_id.canonical())
            .map_or_else(|| "unknown".to_string(), |f| f.location.clone());
        let sub = rec.vm_id.subscription().to_ascii_lowercase();
        *groups
            .entry((sub, region))
            .or_default()
            .entry(o)
            .or_insert(0) += 1;
    }
    Coverage {
        ade_vms: ade.len() as u64,
        by_outcome,
        groups: groups
            .into_iter()
            .map(|((subscription, region), by_outcome)| CoverageGroup {
                subscription,
                region,
                by_outcome,
            })
            .collect(),
    }
}

fn sweeps(inputs: &ReportInputs) -> Vec<SweepPoint> {
    let skip = inputs.sweeps.len().saturating_sub(TREND_RUNS);
    inputs.sweeps[skip..]
        .iter()
        .map(|s| SweepPoint {
            run_id: s.run_id.clone(),
            finished_at: s.finished_at,
            status: s.status.clone(),
            ade_vms: s.ade_vms as u64,
            protected_items: s.protected_items as u64,
            drift_found: s.drift.values().sum(),
            repair_started: ["protection-started", "repair-started"]
                .iter()
                .filter_map(|k| s.outcomes.get(*k))
                .sum(),
            needs_human: s.needs_human.len() as u64,
            failures: s.failures.len() as u64,
        })
        .collect()
}

/// What the owner does about a reason (README, "When ADE is enabled on a VM").
pub fn fix_for(status: &str, reason: &str) -> &'static str {
    match reason {
        r if r.starts_with("kek-certificate") => "re-encrypt with a standalone Key Vault key (Azure Backup supports no certificate KEK)",
        r if r.starts_with("vault-region-mismatch") || r.starts_with("vault-subscription-mismatch") => "add a protection rule pointing to a vault in the VM's region and subscription",
        r if r.starts_with("no-protection-rule") => "add a protection rule (or a default)",
        r if r.starts_with("ade-settings-invalid") || r.starts_with("ade-extension-failed") => "fix ADE on the VM",
        r if r.starts_with("key-vault-access-denied") => "grant ade-backup's identity the missing Key Vault permission, or grant Azure Backup access by hand",
        _ if status == "failed" => "read the Azure error; the next sweep retries",
        _ => "see the message",
    }
}

fn needs_human(ade: &[&VmRecord], inputs: &ReportInputs) -> Vec<NeedsHumanRow> {
    let mut rows: BTreeMap<String, NeedsHumanRow> = BTreeMap::new();
    for rec in ade {
        let status = rec.status;
        if !matches!(
            status,
            ProtectionStatus::Unsupported | ProtectionStatus::Blocked | ProtectionStatus::Failed
        ) {
            continue;
        }
        let reason = rec.reason.clone().unwrap_or_default();
        rows.insert(
            rec.vm_id.canonical().to_ascii_lowercase(),
            NeedsHumanRow {
                vm_id: rec.vm_id.to_string(),
                status: status.as_str().into(),
                fix: fix_for(status.as_str(), &reason).into(),
                doc: super::links::for_reason(status.as_str(), &reason).into(),
                reason,
                message: rec.message.clone().unwrap_or_default(),
            },
        );
    }
    // The last sweep's list names VMs whose record says nothing yet (drift it cannot repair).
    if let Some(last) = inputs.sweeps.last() {
        for n in &last.needs_human {
            rows.entry(n.vm_id.to_ascii_lowercase())
                .or_insert_with(|| NeedsHumanRow {
                    vm_id: n.vm_id.clone(),
                    status: "needs-human".into(),
                    fix: fix_for("", &n.reason).into(),
                    doc: super::links::for_reason("", &n.reason).into(),
                    reason: n.reason.clone(),
                    message: String::new(),
                });
        }
    }
    rows.into_values().collect()
}

fn freshness(ade: &[&VmRecord], inputs: &ReportInputs, now: DateTime<Utc>) -> Vec<FreshnessRow> {
    ade.iter()
        .filter(|r| r.status == ProtectionStatus::Protected)
        .map(|rec| {
            let policy = rec.azure.policy_id.clone().unwrap_or_default();
            let from_policy = inputs.facts.policy(&policy).and_then(|p| p.rpo_hours);
            let rpo_hours = from_policy.unwrap_or(DEFAULT_RPO_HOURS);
            let last = rec.azure.recovery_point_time;
            let age_hours = last.map(|t| (now - t).num_hours().max(0));
            let freshness = match age_hours {
                None => Freshness::NoRecoveryPoint,
                Some(a) if a > rpo_hours => Freshness::Stale,
                Some(_) => Freshness::Fresh,
            };
            FreshnessRow {
                vm_id: rec.vm_id.to_string(),
                policy,
                rpo_hours,
                rpo_source: if from_policy.is_some() {
                    "policy"
                } else {
                    "default"
                }
                .into(),
                last_recovery_point: last,
                age_hours,
                freshness,
            }
        })
        .collect()
}

/// The statuses in the order a restore goes through them.
const STATUS_ORDER: [RestoreStatus; 8] = [
    RestoreStatus::Accepted,
    RestoreStatus::RestoringDisks,
    RestoreStatus::DisksRestored,
    RestoreStatus::Deploying,
    RestoreStatus::ReinstallingAde,
    RestoreStatus::Completed,
    RestoreStatus::Rejected,
    RestoreStatus::Failed,
];

fn restores(ops: &[RestoreOperation]) -> Restores {
    let mut by_status = BTreeMap::new();
    let mut spans: BTreeMap<RestoreStatus, Vec<f64>> = BTreeMap::new();
    let mut failures = Vec::new();
    for op in ops {
        *by_status.entry(op.status.as_str().to_string()).or_insert(0) += 1;
        for pair in op.history.windows(2) {
            let secs = (pair[1].at - pair[0].at).num_milliseconds().max(0) as f64 / 1000.0;
            spans.entry(pair[0].status).or_default().push(secs);
        }
        if matches!(op.status, RestoreStatus::Failed | RestoreStatus::Rejected) {
            let last = op.history.last();
            failures.push(RestoreFailureRow {
                ticket: op.ticket_id.as_str().to_string(),
                status: op.status.as_str().into(),
                step: last
                    .and_then(|h| h.step)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                reason: last.and_then(|h| h.reason.clone()).unwrap_or_default(),
                message: last.map(|h| h.message.clone()).unwrap_or_default(),
                next_action: last.and_then(|h| h.next_action.clone()).unwrap_or_default(),
            });
        }
    }
    let phases = STATUS_ORDER
        .iter()
        .filter_map(|s| {
            let v = spans.get(s)?;
            Some(PhaseDuration {
                phase: s.as_str().into(),
                samples: v.len() as u64,
                mean_seconds: v.iter().sum::<f64>() / v.len() as f64,
                max_seconds: v.iter().copied().fold(0.0, f64::max),
            })
        })
        .collect();
    Restores {
        tickets: ops.len() as u64,
        by_status,
        phases,
        failures,
    }
}
