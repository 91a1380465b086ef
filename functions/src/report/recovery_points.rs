//! Every recovery point of each protected ADE VM, as the fleet report needs them: how many, the
//! oldest and newest, when each expires, and the points whose retention runs past the ADE
//! retirement date (they need ADE to restore). Listed by the sweep after its run (`GET
//! .../protectedItems/{item}/recoveryPoints`, at most [`MAX_PAGES`] pages per VM, at most
//! [`crate::workflows::sweep::DEFAULT_CONCURRENCY`] VMs at once, paced by the ARM client like
//! every other call) and kept in `reports/facts.json`.
//!
//! A point's expiry is Azure's `recoveryPointProperties.expiryTime` when the list carries it;
//! otherwise it is computed as the point's time plus its policy's longest retention (an upper
//! bound: the policy does not say which schedule kept the point). Each expiry says which.
//!
//! Listing every protected VM's points costs one ARM read (or more) per VM per sweep: at 10,000
//! VMs that was most of the report's cost (docs/reliability.md, scenario 7). So a VM's summary
//! from the last sweep is reused, without a call, while it is still current: the VM record's
//! latest recovery point is the summary's newest (no point was added) and the summary is less
//! than [`REUSE_FOR`] old (points that aged out since are dropped at least daily). A summary
//! cut at [`MAX_PAGES`] is always listed again.

use super::facts::FleetFacts;
use super::model::ade_retirement_date;
use crate::records::VmRecord;
use ade_backup_shared::arm::{ArmClient, RecoveryPoint};
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Pages of recovery points read per VM (a daily policy keeping 9999 days lists far more than
/// anyone restores from; the report says when a list was cut).
pub const MAX_PAGES: u32 = 20;

/// How long a VM's listed recovery points are reused while no new point appeared.
pub const REUSE_FOR: Duration = Duration::hours(24);

/// Where a recovery point's expiry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpirySource {
    /// `recoveryPointProperties.expiryTime` of the recovery point.
    RecoveryPoint,
    /// Point time + the policy's longest retention (upper bound).
    PolicyRetention,
    /// Neither: ARM gave no expiry and the policy's retention is unknown.
    Unknown,
}

impl ExpirySource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RecoveryPoint => "recovery-point",
            Self::PolicyRetention => "policy-retention",
            Self::Unknown => "unknown",
        }
    }
}

/// One recovery point whose retention runs past the ADE retirement date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PointExpiry {
    pub name: String,
    pub time: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub source: ExpirySource,
}

/// A VM's recovery points as the last sweep listed them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmRecoveryPoints {
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
    /// The latest expiry of any point (when the VM's last ADE-dependent point goes away).
    pub last_expiry: Option<DateTime<Utc>>,
    /// How many points' expiry came from each source.
    pub expiry_sources: BTreeMap<ExpirySource, u64>,
    /// Every point whose expiry is after the retirement date, oldest first.
    pub past_retirement: Vec<PointExpiry>,
    /// More than [`MAX_PAGES`] pages: the numbers are of the points read.
    pub truncated: bool,
}

/// The retirement date as an instant (00:00 UTC).
pub fn retirement_instant() -> DateTime<Utc> {
    ade_retirement_date().and_time(NaiveTime::MIN).and_utc()
}

/// Summarizes `points` (expiry from each point, else `time + retention_days`).
pub fn summarize(
    points: &[RecoveryPoint],
    retention_days: Option<i64>,
    truncated: bool,
) -> VmRecoveryPoints {
    let deadline = retirement_instant();
    let mut out = VmRecoveryPoints {
        truncated,
        ..VmRecoveryPoints::default()
    };
    for rp in points {
        let Some(time) = rp.properties.recovery_point_time else {
            continue;
        };
        out.count += 1;
        out.oldest = Some(out.oldest.map_or(time, |o| o.min(time)));
        out.newest = Some(out.newest.map_or(time, |n| n.max(time)));
        let (expires, source) = match (rp.expiry_time(), retention_days) {
            (Some(t), _) => (Some(t), ExpirySource::RecoveryPoint),
            (None, Some(d)) => (
                Some(time + Duration::days(d)),
                ExpirySource::PolicyRetention,
            ),
            (None, None) => (None, ExpirySource::Unknown),
        };
        *out.expiry_sources.entry(source).or_insert(0) += 1;
        let Some(expires) = expires else { continue };
        out.last_expiry = Some(out.last_expiry.map_or(expires, |l| l.max(expires)));
        if expires > deadline {
            out.past_retirement.push(PointExpiry {
                name: rp.name.clone().unwrap_or_default(),
                time,
                expires,
                source,
            });
        }
    }
    out.past_retirement
        .sort_by_key(|p| (p.time, p.name.clone()));
    out
}

/// Whether `previous` (kept by the sweep at `gathered_at`) still describes a VM whose latest
/// recovery point is `latest` at `now` (see the module docs).
pub fn reusable(
    previous: &VmRecoveryPoints,
    gathered_at: Option<DateTime<Utc>>,
    latest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    !previous.truncated
        && latest.is_some()
        && previous.newest == latest
        && gathered_at.is_some_and(|at| at <= now && now - at < REUSE_FOR)
}

/// Lists the recovery points of every ADE VM with a vault (policies must be in `facts` already),
/// reusing `previous`'s summary of a VM while it is current.
pub async fn gather(
    arm: &ArmClient,
    records: &[VmRecord],
    previous: &FleetFacts,
    facts: &mut FleetFacts,
) {
    let now = facts.gathered_at.unwrap_or_else(Utc::now);
    let mut reused = 0usize;
    let mut wanted: Vec<(String, ResourceId, ResourceId, Option<i64>)> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.status != crate::records::ProtectionStatus::NotEncrypted)
    {
        let Some(vault) = r
            .azure
            .vault_id
            .as_deref()
            .and_then(|v| ResourceId::parse(v).ok())
        else {
            continue;
        };
        let key = r.vm_id.canonical().to_ascii_lowercase();
        if let Some(prev) = previous
            .recovery_points(&key)
            .filter(|p| reusable(p, previous.gathered_at, r.azure.recovery_point_time, now))
        {
            facts.recovery_points.insert(key, prev.clone());
            reused += 1;
            continue;
        }
        let retention = r
            .azure
            .policy_id
            .as_deref()
            .and_then(|p| facts.policy(p))
            .and_then(|p| p.longest_retention_days);
        wanted.push((key, vault, r.vm_id.clone(), retention));
    }
    tracing::debug!(
        listed = wanted.len(),
        reused,
        "recovery points for the report"
    );
    let answers: Vec<_> = futures::stream::iter(wanted)
        .map(|(key, vault, vm, retention)| async move {
            let r = arm.list_recovery_points_up_to(&vault, &vm, MAX_PAGES).await;
            (key, vm, retention, r)
        })
        .buffer_unordered(crate::workflows::sweep::DEFAULT_CONCURRENCY)
        .collect()
        .await;
    for (key, vm, retention, r) in answers {
        match r {
            Ok((points, truncated)) => {
                if truncated {
                    facts.warnings.push(format!(
                        "{vm}: more than {MAX_PAGES} pages of recovery points; the report counts the first {}",
                        points.len()
                    ));
                }
                facts
                    .recovery_points
                    .insert(key, summarize(&points, retention, truncated));
            }
            Err(e) => facts
                .warnings
                .push(format!("recovery points of {vm} could not be listed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn a_summary_is_reused_only_while_no_point_was_added_and_for_a_day_at_most() {
        let newest = at("2026-12-01T22:00:00Z");
        let prev = VmRecoveryPoints {
            count: 3,
            newest: Some(newest),
            ..VmRecoveryPoints::default()
        };
        let kept = Some(at("2026-12-02T01:00:00Z"));
        let now = at("2026-12-02T05:00:00Z");
        assert!(reusable(&prev, kept, Some(newest), now));
        // A new point since: list again.
        assert!(!reusable(
            &prev,
            kept,
            Some(at("2026-12-02T04:00:00Z")),
            now
        ));
        // The record names no point, or the summary is a day old, or was cut, or is from the future.
        assert!(!reusable(&prev, kept, None, now));
        assert!(!reusable(
            &prev,
            kept,
            Some(newest),
            at("2026-12-03T01:00:00Z")
        ));
        assert!(!reusable(&prev, None, Some(newest), now));
        let cut = VmRecoveryPoints {
            truncated: true,
            ..prev.clone()
        };
        assert!(!reusable(&cut, kept, Some(newest), now));
        assert!(!reusable(
            &prev,
            Some(at("2026-12-02T06:00:00Z")),
            Some(newest),
            now
        ));
    }

    fn rp(name: &str, time: &str, expiry: Option<&str>) -> RecoveryPoint {
        let mut props =
            serde_json::json!({"objectType": "IaasVMRecoveryPoint", "recoveryPointTime": time});
        if let Some(e) = expiry {
            props["recoveryPointProperties"] = serde_json::json!({"expiryTime": e});
        }
        serde_json::from_value(serde_json::json!({"name": name, "properties": props})).expect("rp")
    }

    #[test]
    fn expiry_from_the_point_else_from_the_policy_and_points_past_retirement() {
        let points = [
            rp("a", "2026-11-29T22:00:00Z", Some("2028-11-26T22:00:00Z")),
            rp("b", "2026-11-30T22:00:00Z", Some("2026-12-30T22:00:00Z")),
            rp("c", "2026-12-01T22:00:00Z", None),
            rp("d", "2026-10-01T22:00:00Z", None),
        ];
        let s = summarize(&points, Some(728), false);
        assert_eq!(s.count, 4);
        assert_eq!(
            s.oldest.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-10-01T22:00:00+00:00")
        );
        assert_eq!(
            s.newest.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-01T22:00:00+00:00")
        );
        assert_eq!(s.expiry_sources[&ExpirySource::RecoveryPoint], 2);
        assert_eq!(s.expiry_sources[&ExpirySource::PolicyRetention], 2);
        // a (ARM: 2028-11-26) and c (2026-12-01 + 728 days = 2028-11-28) run past 15 Sep 2028;
        // d (2026-10-01 + 728 = 2028-09-27) too; b does not.
        let names: Vec<_> = s.past_retirement.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["d", "a", "c"]);
        assert_eq!(s.past_retirement[1].source, ExpirySource::RecoveryPoint);
        assert_eq!(
            s.last_expiry.map(|t| t.to_rfc3339()).as_deref(),
            Some("2028-11-28T22:00:00+00:00")
        );
    }

    #[test]
    fn no_retention_known_leaves_the_expiry_unknown() {
        let s = summarize(&[rp("x", "2026-12-01T22:00:00Z", None)], None, true);
        assert_eq!(s.count, 1);
        assert!(s.truncated && s.past_retirement.is_empty() && s.last_expiry.is_none());
        assert_eq!(s.expiry_sources[&ExpirySource::Unknown], 1);
    }
}
