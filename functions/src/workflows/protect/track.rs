//! Tracking the first backup job until it ends: completed → `protected` with the newest recovery
//! point; a Key Vault permission error → back to the grant step once; a disk exclusion → back to
//! the protect step once (`disk_exclusion`); a certificate-backed KEK →
//! `unsupported`; any other failure → `failed` with Azure's code.

use super::observe::upsert_vm_record;
use super::{conclude, send_grant, BackupPhase};
use crate::context::Context;
use crate::engine::{self, ArmResultExt, Phase, WorkflowError};
use crate::records::{
    ErrorRecord, ProtectDetail, ProtectStep, ProtectionOperation, ProtectionStatus as St,
};
use ade_backup_shared::arm::BackupJob;

/// One poll of the backup job.
pub(super) async fn track(
    ctx: &Context,
    op: ProtectionOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let Some(job_id) = op.azure.backup_job_id.clone() else {
        BackupPhase::BackupNow.send(ctx, &op, poll, None).await?;
        return Ok(format!(
            "{}: no job recorded; back to backup-now",
            op.operation_id
        ));
    };
    let vault = op.target.target.vault_id.clone();
    let job = ctx
        .arm
        .get_backup_job(&vault, &job_id)
        .await
        .doing("reading the backup job")?;
    let st = job.properties.status.clone().unwrap_or_default();
    match st.as_str() {
        "Completed" | "CompletedWithWarnings" => completed(ctx, op, &st).await,
        "Failed" | "Cancelled" => failed(ctx, op, &job, &job_id, &st).await,
        _ => {
            let delay = Some(ctx.settings.workflow.poll_interval);
            BackupPhase::Track.send(ctx, &op, poll + 1, delay).await?;
            Ok(format!("{}: backup job {job_id} {st}", op.operation_id))
        }
    }
}

/// The job completed: record the newest recovery point; the VM is protected.
async fn completed(
    ctx: &Context,
    op: ProtectionOperation,
    st: &str,
) -> Result<String, WorkflowError> {
    let vault = &op.target.target.vault_id;
    let points = ctx
        .arm
        .list_recovery_points(vault, &op.vm_id)
        .await
        .doing("listing recovery points")?;
    let newest = points
        .into_iter()
        .filter(|p| p.properties.recovery_point_time.is_some())
        .max_by_key(|p| p.properties.recovery_point_time);
    let (rp_id, rp_time) = match newest {
        Some(p) => (p.name.clone(), p.properties.recovery_point_time),
        None => (None, None),
    };
    let at = engine::now(ctx);
    let detail = ProtectDetail {
        job_status: Some(st.to_string()),
        ..Default::default()
    };
    let op = engine::update::<ProtectionOperation>(ctx, &op.operation_id, |o| {
        o.steps
            .finish(ProtectStep::TrackBackupJob, at, Some(detail.clone()));
        o.azure.recovery_point_id = rp_id.clone();
        o.azure.recovery_point_time = rp_time;
        o.reason = None;
        o.message = None;
        let rp = rp_id.clone().unwrap_or_else(|| "?".into());
        o.record(
            at,
            St::Protected,
            format!("first backup {st}; recovery point {rp}"),
        );
        true
    })
    .await?;
    let m = ade_backup_shared::telemetry::metrics();
    m.protection(St::Protected.as_str());
    m.event_to_protected((at - op.created_at).to_std().unwrap_or_default());
    mirror_protected(ctx, &op).await?;
    Ok(format!(
        "{}: protected, recovery point {}",
        op.operation_id,
        op.azure.recovery_point_id.clone().unwrap_or_default()
    ))
}

/// Writes a protected operation's outcome on the VM record (again, on a redelivery after that
/// write failed: the operation document alone says `protected`).
pub(super) async fn mirror_protected(
    ctx: &Context,
    op: &ProtectionOperation,
) -> Result<(), WorkflowError> {
    upsert_vm_record(ctx, &op.vm_id, |r| {
        r.status = St::Protected;
        r.reason = None;
        r.message = Some("protected; first recovery point taken".to_string());
        r.azure = op.azure.clone();
        r.warnings = op.warnings.clone();
        r.operation_id = Some(op.operation_id.clone());
        r.deferred = None;
    })
    .await
}

/// The job failed or was cancelled.
async fn failed(
    ctx: &Context,
    op: ProtectionOperation,
    job: &BackupJob,
    job_id: &str,
    st: &str,
) -> Result<String, WorkflowError> {
    let step = ProtectStep::TrackBackupJob;
    let code = job.error_code().unwrap_or("backup-job-failed").to_string();
    let text = job
        .properties
        .error_details
        .first()
        .and_then(|e| e.error_string.clone())
        .unwrap_or_else(|| format!("backup job {job_id} {st}"));
    let kv_problem = crate::domain::sweep_plan::KEY_VAULT_PERMISSION_ERRORS
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&code));
    if kv_problem && op.grant_retries == 0 {
        return grant_again(ctx, op, code, text).await;
    }
    if crate::domain::sweep_plan::kek_certificate_failure(&code) {
        // Azure Backup supports standalone keys only; no retry can fix this.
        let fix = crate::domain::sweep_plan::KEK_CERTIFICATE_FIX;
        let msg = format!("{fix} (Azure: {code}: {text})");
        let st = St::Unsupported;
        conclude(ctx, &op.operation_id, st, step, "kek-certificate", &msg).await?;
        return Ok(format!("{}: unsupported: kek-certificate", op.operation_id));
    }
    if let Some(line) = super::disk_exclusion::repair_after_failure(ctx, &op, &code, &text).await? {
        return Ok(line);
    }
    if let Some(line) = super::readiness::agent_failure(ctx, &op, &code).await? {
        return Ok(line);
    }
    conclude(ctx, &op.operation_id, St::Failed, step, &code, &text).await?;
    Ok(format!("{}: backup job failed: {code}", op.operation_id))
}

/// Access drifted (or propagated late): a new generation goes back to the grant step, once.
async fn grant_again(
    ctx: &Context,
    op: ProtectionOperation,
    code: String,
    text: String,
) -> Result<String, WorkflowError> {
    let at = engine::now(ctx);
    let op = engine::update::<ProtectionOperation>(ctx, &op.operation_id, |o| {
        o.grant_retries += 1;
        o.generation += 1;
        o.steps = Default::default();
        o.azure.backup_job_id = None;
        o.last_error = Some(ErrorRecord {
            at,
            step: ProtectStep::TrackBackupJob.as_str().into(),
            code: code.clone(),
            message: text.clone(),
        });
        let note = format!("backup failed with {code}; granting Key Vault access again");
        o.record(at, St::InProgress, note);
        true
    })
    .await?;
    send_grant(ctx, &op).await?;
    Ok(format!(
        "{}: {code}; back to the grant step",
        op.operation_id
    ))
}
