//! The one automatic retry of a failed snapshot-tier restore (issue 14): a restore of an ADE VM
//! from a recovery point's snapshot tier (`InstantRP`) can fail when the snapshot's key metadata
//! no longer matches the Key Vault; Azure's remedy is to restore from the vault tier
//! (`HardenedRP`). `IaasVMRestoreRequest` has no property selecting the tier, and Azure restores
//! from the snapshot tier whenever one is valid (backup-instant-restore-capability.md, "which
//! recovery type will be used"): the vault tier of a point can only be used once its snapshot
//! expired. So the retry takes the nearest recovery point at or before the failed one whose
//! vault tier is valid and whose snapshot tier is not, records that choice in the restore-disks
//! step's detail ([`TierRetry`]) and only then sends the step's trigger again — once: a
//! redelivery re-sends the same trigger (same message id), a second failure fails the ticket.

use super::{fail, push, request_of, update_reporting, vault_of, RestorePhase, Why};
use crate::context::Context;
use crate::engine::{self, ArmResultExt, Phase, WorkflowError};
use crate::records::{RestoreOperation, RestoreStatus, RestoreStep, TierRetry};
use ade_backup_shared::arm::RecoveryPoint;
use chrono::{DateTime, Utc};

/// Error codes of a restore job that mean "the snapshot tier's keys do not match": the only list.
/// Azure documents the failure and its remedy but no code for it; `UserErrorSnapshotKeyMismatch`
/// is the simulator's own. Add Azure's code here once it is known.
pub const SNAPSHOT_TIER_FAILURE_CODES: [&str; 1] = ["UserErrorSnapshotKeyMismatch"];

/// The poll number of the retry's trigger message (`{ticket}-restore-trigger-100`): distinct from
/// the first trigger (0) and the deferrals' (1..=3), so duplicate detection never drops it.
pub const TIER_RETRY_POLL: u32 = 100;

const RETRY_NEXT: &str = "Look at the restore jobs in the Recovery Services vault (Backup jobs); anything restored so far is kept. Restore from a recovery point that has only a vault-tier copy (its snapshot expired; Azure restores from the snapshot tier whenever one exists and offers no tier selector), or wait until this point's snapshot tier expires and submit a new ticket.";

/// Whether a failed restore job's code is a snapshot/key mismatch (any case).
pub fn is_snapshot_tier_failure(code: &str) -> bool {
    SNAPSHOT_TIER_FAILURE_CODES
        .iter()
        .any(|c| c.eq_ignore_ascii_case(code))
}

/// The nearest recovery point at or before `before` that Azure must restore from its vault tier:
/// `HardenedRP` valid, `InstantRP` absent or not valid.
pub fn vault_tier_fallback(
    points: &[RecoveryPoint],
    before: DateTime<Utc>,
) -> Option<&RecoveryPoint> {
    points
        .iter()
        .filter(|p| p.has_vault_tier() && !p.has_snapshot_tier())
        .filter(|p| p.name.is_some())
        .filter(|p| {
            p.properties
                .recovery_point_time
                .is_some_and(|t| t <= before)
        })
        .max_by_key(|p| p.properties.recovery_point_time)
}

/// The restore job `job_id` failed with a snapshot-tier code (`code`, Azure's text in
/// `message`): retry once from the vault tier, or fail the ticket saying why not.
pub async fn after_failure(
    ctx: &Context,
    op: &RestoreOperation,
    job_id: &str,
    (code, message): (&str, &str),
) -> Result<String, WorkflowError> {
    let ticket = &op.ticket_id;
    let track = RestoreStep::TrackRestoreJob;
    if let Some(r) = op.steps.detail(RestoreStep::RestoreDisks).tier_retry {
        if r.failed_job.eq_ignore_ascii_case(job_id) {
            // Recorded by an earlier delivery: the same trigger again (duplicate detection drops it).
            RestorePhase::Trigger
                .send(ctx, op, TIER_RETRY_POLL, None)
                .await?;
            return Ok(format!("{ticket}: vault-tier retry already recorded"));
        }
        let m = format!("{message}. This was the automatic retry from recovery point {} (vault tier) after restore job {} of recovery point {} failed with {}: ade-backup retries once only.", r.point, r.failed_job, r.failed_point, r.code);
        return fail(ctx, ticket, track, code, &m, RETRY_NEXT).await;
    }
    let vault = vault_of(op)?;
    let vm = request_of(op)?.vm_resource_id.clone();
    let points = ctx
        .arm
        .list_recovery_points(&vault, &vm)
        .await
        .doing("listing recovery points for a vault-tier retry")?;
    let failed_point = op.azure.recovery_point_id.clone().unwrap_or_default();
    let failed_time = op.azure.recovery_point_time.or_else(|| {
        points
            .iter()
            .find(|p| p.name.as_deref() == Some(failed_point.as_str()))
            .and_then(|p| p.properties.recovery_point_time)
    });
    let fallback = failed_time.and_then(|t| vault_tier_fallback(&points, t));
    let (Some(rp), Some(name)) = (fallback, fallback.and_then(|p| p.name.clone())) else {
        let when = failed_time.map_or_else(|| "it".to_string(), |t| t.to_rfc3339());
        let m = format!("{message}. ade-backup retries such a failure once from a vault-tier recovery point, but no recovery point at or before {when} has a valid vault tier without a valid snapshot tier (Azure restores from the snapshot tier whenever one exists and offers no tier selector), so no automatic retry was made.");
        return fail(ctx, ticket, track, code, &m, RETRY_NEXT).await;
    };
    if let Err(r) = super::key_material::present_or_restorable(ctx, rp).await? {
        let m = format!(
            "{message}. The vault-tier retry from recovery point {name} cannot run: {}",
            r.message
        );
        let next = r.next_action.as_deref().unwrap_or(RETRY_NEXT);
        return fail(ctx, ticket, track, &r.code, &m, next).await;
    }
    let retry = TierRetry {
        failed_job: job_id.to_string(),
        failed_point: failed_point.clone(),
        code: code.to_string(),
        point: name.clone(),
        point_time: rp.properties.recovery_point_time,
        at: engine::now(ctx),
    };
    record(ctx, op, retry).await
}

/// Records the retry on the ticket (status `restoring-disks` saying which point and why), then
/// sends the restore-disks trigger for it.
async fn record(
    ctx: &Context,
    op: &RestoreOperation,
    retry: TierRetry,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (&op.ticket_id, RestoreStep::RestoreDisks);
    let time = retry
        .point_time
        .map_or_else(String::new, |t| format!(" ({})", t.to_rfc3339()));
    let message = format!(
        "restore job {} of recovery point {} failed on its snapshot tier ({}): the snapshot's key metadata no longer matches the Key Vault. Retrying once, automatically, from recovery point {}{time}: the nearest point at or before it with a vault-tier copy only (its snapshot expired), so Azure restores it from the vault tier (Azure has no tier selector).",
        retry.failed_job, retry.failed_point, retry.code, retry.point
    );
    let op = update_reporting(ctx, ticket, |o, sent| {
        let recorded = o.steps.detail(step).tier_retry.is_some();
        let current = o.azure.restore_job_id.as_deref() == Some(retry.failed_job.as_str());
        if recorded || !current || o.status.is_final() {
            return false;
        }
        o.steps.reset(step);
        let d = o.steps.detail_mut(step);
        d.tier_retry = Some(retry.clone());
        d.started_at = Some(retry.at);
        d.pending = None;
        d.job_id = None;
        o.azure.recovery_point_id = Some(retry.point.clone());
        o.azure.recovery_point_time = retry.point_time;
        o.azure.restore_job_id = None;
        let why = Why {
            reason: Some(&retry.code),
            field: None,
            next_action: None,
        };
        let st = RestoreStatus::RestoringDisks;
        *sent = Some(push(o, retry.at, st, Some(step), message.clone(), why));
        true
    })
    .await?;
    if op.steps.detail(step).tier_retry.is_none() {
        return Ok(format!(
            "{ticket}: restore job {} is not the ticket's current job; no retry",
            retry.failed_job
        ));
    }
    RestorePhase::Trigger
        .send(ctx, &op, TIER_RETRY_POLL, None)
        .await?;
    tracing::warn!(ticket = %ticket, reason = %retry.code, point = %retry.point, "snapshot-tier restore failed; retrying from a vault-tier recovery point");
    Ok(format!(
        "{ticket}: retrying from vault-tier recovery point {}",
        retry.point
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(name: &str, hours_ago: i64, snapshot: &str, vault: bool) -> RecoveryPoint {
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let mut tiers = vec![serde_json::json!({"type": "InstantRP", "status": snapshot})];
        if vault {
            tiers.push(serde_json::json!({"type": 2, "status": 1}));
        }
        serde_json::from_value(serde_json::json!({
            "name": name,
            "properties": {
                "objectType": "IaasVMRecoveryPoint",
                "recoveryPointTime": (now - chrono::Duration::hours(hours_ago)).to_rfc3339(),
                "recoveryPointTierDetails": tiers,
            }
        }))
        .expect("a recovery point")
    }

    #[test]
    fn the_fallback_is_the_newest_vault_only_point_at_or_before_the_failed_one() {
        let points = [
            point("new", 1, "Valid", true),
            point("failed", 20, "Valid", true),
            point("vault-only", 68, "Deleted", true),
            point("older-vault-only", 92, "Deleted", true),
            point("snapshot-only", 30, "Valid", false),
        ];
        let before = points[1].properties.recovery_point_time.expect("time");
        let rp = vault_tier_fallback(&points, before).expect("a fallback");
        assert_eq!(rp.name.as_deref(), Some("vault-only"));
        // The failed point itself qualifies once its snapshot expired.
        let expired = [point("failed", 20, "Deleted", true)];
        let before = expired[0].properties.recovery_point_time.expect("time");
        assert!(vault_tier_fallback(&expired, before).is_some());
        // No vault-only point at or before: none.
        let none = [
            point("failed", 20, "Valid", true),
            point("x", 1, "Deleted", true),
        ];
        let before = none[0].properties.recovery_point_time.expect("time");
        assert!(vault_tier_fallback(&none, before).is_none());
    }

    #[test]
    fn only_the_listed_codes_are_snapshot_tier_failures() {
        assert!(is_snapshot_tier_failure("usererrorsnapshotkeymismatch"));
        assert!(!is_snapshot_tier_failure("DiskEncryptionInternalError"));
        assert!(!is_snapshot_tier_failure("CloudDosAbsoluteLimitReached"));
    }
}
