//! `BackupVm`: enable protection (refreshing the vault's containers while it cannot see the VM
//! yet), trigger the first backup, and hand over to [`super::track`]. A crash between the
//! trigger and its record adopts the backup job already running instead of starting another.

use super::{conclude, limits, track, BackupMessage, BackupPhase};
use crate::context::Context;
use crate::engine::{
    self, claim_lost, claim_step, fail_if_overdue, poll_delay, poll_step, poll_step_handing_back,
    update_holding, ArmResultExt, Claimed, Phase, PollSpec, Polled, WorkflowError, Writer,
};
use crate::records::{ProtectDetail, ProtectStep, ProtectionOperation, ProtectionStatus as St};
use crate::trigger::ServiceBusMessage;
use ade_backup_shared::arm::recovery_services::BACKUP_POLICY_TYPE;
use ade_backup_shared::arm::recovery_services::{
    protected_item_id, BackupJobFilter, JobOperation, JobStatus,
};
use ade_backup_shared::arm::{ArmError, DiskSelection};
use ade_backup_shared::ids::ResourceId;
use serde_json::Value;

/// One `backup-vm` message.
pub async fn backup(
    ctx: &Context,
    msg: &BackupMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let op = engine::load_existing::<ProtectionOperation>(ctx, &msg.operation_id).await?;
    if op.generation != msg.generation {
        return Ok(format!(
            "{}: stale message (operation is {} generation {})",
            op.operation_id, op.status, op.generation
        ));
    }
    if op.is_finished() {
        // A redelivery of the message that ended it: if writing the VM record failed after the
        // operation's own write landed, only this puts the outcome there.
        engine::Operation::resume(&op, ctx, ProtectStep::TrackBackupJob).await?;
        return Ok(format!(
            "{}: already {}; outcome mirrored on the VM record",
            op.operation_id, op.status
        ));
    }
    let id = op.operation_id.as_str();
    if let Some(line) =
        fail_if_overdue::<ProtectionOperation, _>(ctx, id, msg.phase, msg.poll, "").await?
    {
        return Ok(line);
    }
    match msg.phase {
        BackupPhase::Protect => protect(ctx, op, delivery).await,
        BackupPhase::ProtectPoll => protect_poll(ctx, op, msg.poll).await,
        BackupPhase::BackupNow => backup_now(ctx, op, delivery).await,
        BackupPhase::BackupPoll => backup_poll(ctx, op, msg.poll).await,
        BackupPhase::Track => track::track(ctx, op, msg.poll).await,
    }
}

fn policy_id(op: &ProtectionOperation) -> Result<ResourceId, WorkflowError> {
    op.target
        .target
        .vault_id
        .child("backupPolicies", &op.target.target.policy)
        .map_err(|e| WorkflowError::poison("InvalidPolicy", e.to_string()))
}

/// Claims `step` for this delivery (`None`: settled, the line says why).
async fn claim(
    ctx: &Context,
    op: &ProtectionOperation,
    step: ProtectStep,
    delivery: &ServiceBusMessage,
) -> Result<Result<ProtectionOperation, String>, WorkflowError> {
    let id = op.operation_id.as_str();
    Ok(
        match claim_step::<ProtectionOperation>(ctx, id, op.generation, step, delivery).await? {
            Claimed::Go(op) => Ok(op),
            Claimed::Settled { line, .. } => Err(line),
        },
    )
}

/// Records the long-running operation a step started and schedules its first poll.
async fn record_pending(
    ctx: &Context,
    (op, writer): (&ProtectionOperation, Writer<'_>),
    step: ProtectStep,
    detail: ProtectDetail,
    poll_phase: BackupPhase,
) -> Result<Option<String>, WorkflowError> {
    let retry_after = detail.pending.as_ref().and_then(|p| p.retry_after);
    let delay = poll_delay(ctx, retry_after);
    let id = op.operation_id.as_str();
    let Some(op) = update_holding::<ProtectionOperation>(ctx, id, step, writer, |o, _| {
        *o.steps.detail_mut(step) = detail.clone();
        true
    })
    .await?
    else {
        return Ok(Some(claim_lost(&id, step)));
    };
    poll_phase.send(ctx, &op, 1, Some(delay)).await?;
    Ok(None)
}

/// Enable protection with the rule's policy, unless the VM is already protected.
async fn protect(
    ctx: &Context,
    op: ProtectionOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let step = ProtectStep::EnableProtection;
    let op = match claim(ctx, &op, step, delivery).await? {
        Ok(op) => op,
        Err(line) => return Ok(line),
    };
    let writer = Writer::Claim(delivery);
    let (policy, disks, note) = match already_protected(ctx, &op, writer).await? {
        Existing::Done(line) => return Ok(line),
        Existing::Absent => (
            policy_id(&op)?,
            DiskSelection::Unchanged,
            "protection enabled",
        ),
        Existing::ExcludingDisks { policy, what } => {
            tracing::info!(op = %op.operation_id, "the protected item excludes disks ({what}); protecting it again with every disk");
            (
                policy,
                DiskSelection::All,
                "disk exclusion reset: every disk is backed up",
            )
        }
    };
    let vault = op.target.target.vault_id.clone();
    match ctx
        .arm
        .begin_protect_vm_with(&vault, &op.vm_id, &policy, disks)
        .await
    {
        Ok(started) => match started.pending {
            None => {
                let id = started.resource.and_then(|r| r.id);
                let (policy, note) = (Some(policy.to_string()), note.to_string());
                finish_protect(ctx, (op, writer), id, policy, note).await
            }
            Some(p) => {
                let (on, next) = ((&op, writer), BackupPhase::ProtectPoll);
                // What the poll finishes with: the note and the policy asked for.
                let detail = ProtectDetail {
                    pending: Some(p),
                    note: Some(note.to_string()),
                    policy_id: Some(policy.to_string()),
                    ..Default::default()
                };
                let lost = record_pending(ctx, on, step, detail, next).await?;
                Ok(lost.unwrap_or_else(|| format!("{}: enabling protection", op.operation_id)))
            }
        },
        Err(e) if needs_discovery(&e) => refresh_and_retry(ctx, op, e).await,
        Err(e) if e.is_transient() => Err(WorkflowError::arm("enabling protection", e)),
        Err(e) => {
            let code = e.code().unwrap_or("protection-failed").to_string();
            conclude(
                ctx,
                &op.operation_id,
                St::Failed,
                step,
                &code,
                &e.to_string(),
            )
            .await?;
            Ok(format!(
                "{}: enabling protection failed: {e}",
                op.operation_id
            ))
        }
    }
}

/// What the protect step found in Azure.
enum Existing {
    /// No active protection: enable it.
    Absent,
    /// Already protected; the step is done (the line says so).
    Done(String),
    /// Protected, but leaving data disks out (ADE backups would fail): protect it again with
    /// every disk, under the item's own policy.
    ExcludingDisks { policy: ResourceId, what: String },
}

/// Already protected (by us earlier, or by someone with another policy)? The sweep's Graph read
/// answered that for the first attempt; a retry (maybe after our own PUT) asks Azure.
async fn already_protected(
    ctx: &Context,
    op: &ProtectionOperation,
    writer: Writer<'_>,
) -> Result<Existing, WorkflowError> {
    let first_attempt = op.steps.attempts(ProtectStep::EnableProtection) <= 1;
    if op.known_unprotected && first_attempt {
        return Ok(Existing::Absent);
    }
    let vault = &op.target.target.vault_id;
    let item = match ctx.arm.get_protected_item(vault, &op.vm_id).await {
        Ok(item) => item,
        Err(e) if e.is_not_found() => return Ok(Existing::Absent),
        Err(e) => return Err(WorkflowError::arm("reading the protected item", e)),
    };
    let state = item.properties.protection_state.clone().unwrap_or_default();
    if state.is_empty() || crate::domain::sweep_plan::protection_stopped(&state) {
        return Ok(Existing::Absent);
    }
    let theirs = item.properties.policy_id.clone().unwrap_or_default();
    let ours = policy_id(op)?;
    if let Some(what) = super::disk_exclusion::excluded(&item) {
        let policy = ResourceId::parse(&theirs)
            .ok()
            .filter(|p| p.is_type(BACKUP_POLICY_TYPE))
            .unwrap_or(ours);
        return Ok(Existing::ExcludingDisks { policy, what });
    }
    let note = if !theirs.is_empty() && !theirs.eq_ignore_ascii_case(&ours.to_string()) {
        format!(
            "already protected with policy {theirs}; kept it (the rule asked for {})",
            op.target.target.policy
        )
    } else {
        "already protected".to_string()
    };
    let on = (op.clone(), writer);
    let line = finish_protect(ctx, on, item.id.clone(), Some(theirs), note).await?;
    Ok(Existing::Done(line))
}

fn needs_discovery(e: &ArmError) -> bool {
    e.is_not_found()
        || e.code().is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("containernotfound")
                || c.contains("objectnotfound")
                || c.contains("notdiscovered")
                || c.contains("protectablenotfound")
        })
}

/// The vault has not discovered the VM yet: refresh containers, try again shortly (5 times).
async fn refresh_and_retry(
    ctx: &Context,
    op: ProtectionOperation,
    e: ArmError,
) -> Result<String, WorkflowError> {
    let step = ProtectStep::EnableProtection;
    let vault = op.target.target.vault_id.clone();
    ctx.arm
        .begin_refresh_containers(&vault)
        .await
        .doing("refreshing containers")?;
    let op = engine::update::<ProtectionOperation>(ctx, &op.operation_id, |o| {
        o.steps.release(step);
        true
    })
    .await?;
    let attempt = op.steps.get(step).map(|s| s.attempts).unwrap_or(1);
    if attempt > 5 {
        let m = format!(
            "the vault {vault} still cannot see the VM after {attempt} container refreshes: {e}"
        );
        let code = e.code().unwrap_or("vm-not-discoverable");
        conclude(ctx, &op.operation_id, St::Failed, step, code, &m).await?;
        return Ok(m);
    }
    let delay = Some(ctx.settings.workflow.poll_interval);
    BackupPhase::Protect.send(ctx, &op, attempt, delay).await?;
    Ok(format!(
        "{}: refreshed containers; protection retried (attempt {attempt})",
        op.operation_id
    ))
}

async fn finish_protect(
    ctx: &Context,
    (op, writer): (ProtectionOperation, Writer<'_>),
    item_id: Option<String>,
    policy: Option<String>,
    note: String,
) -> Result<String, WorkflowError> {
    let at = engine::now(ctx);
    let detail = ProtectDetail {
        note: Some(note.clone()),
        ..Default::default()
    };
    let (id, step) = (op.operation_id.as_str(), ProtectStep::EnableProtection);
    let Some(op) = update_holding::<ProtectionOperation>(ctx, id, step, writer, |o, _| {
        o.steps.finish(step, at, Some(detail.clone()));
        o.azure.protected_item_id = item_id.clone().or(o.azure.protected_item_id.clone());
        o.azure.policy_id = policy.clone();
        if note.contains("kept it") && !o.warnings.iter().any(|w| w.starts_with("policy-kept")) {
            o.warnings.push(format!("policy-kept: {note}"));
        }
        o.record(at, St::InProgress, note.clone());
        true
    })
    .await?
    else {
        return Ok(claim_lost(&id, step));
    };
    BackupPhase::BackupNow.send(ctx, &op, 0, None).await?;
    Ok(format!("{}: {note}", op.operation_id))
}

async fn protect_poll(
    ctx: &Context,
    op: ProtectionOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let spec = PollSpec {
        step: ProtectStep::EnableProtection,
        start: BackupPhase::Protect,
        again: BackupPhase::ProtectPoll,
        what: "the protection request",
        failure_code: "protection-failed",
        next_action: "",
    };
    let out = match poll_step(ctx, &op, spec, poll).await? {
        Polled::Handled(line) => return Ok(line),
        Polled::Finished(out) => out,
    };
    // The item's id: from the final body when it is the item (Location polling), else derived —
    // its path is fixed by the vault and the VM, no GET needed.
    let item = out
        .body
        .as_ref()
        .and_then(|b| b.get("id"))
        .and_then(Value::as_str)
        .filter(|id| id.to_ascii_lowercase().contains("/protecteditems/"))
        .map(str::to_string)
        .or_else(|| {
            protected_item_id(&op.target.target.vault_id, &op.vm_id)
                .ok()
                .map(|id| id.to_string())
        });
    let asked = op.steps.detail(ProtectStep::EnableProtection);
    let policy = match asked.policy_id {
        Some(p) => p,
        None => policy_id(&op)?.to_string(),
    };
    let note = asked
        .note
        .unwrap_or_else(|| "protection enabled".to_string());
    finish_protect(ctx, (op, Writer::Poll), item, Some(policy), note).await
}

/// Trigger the first backup (or adopt the job a crashed attempt started).
async fn backup_now(
    ctx: &Context,
    op: ProtectionOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let step = ProtectStep::BackupNow;
    let op = match claim(ctx, &op, step, delivery).await? {
        Ok(op) => op,
        Err(line) => return Ok(line),
    };
    let writer = Writer::Claim(delivery);
    // A crash after the trigger and before it was recorded must not start a second backup:
    // adopt a backup job of this VM that started since the operation began.
    if let Some(job) = adoptable_job(ctx, &op).await? {
        let note = "adopted the backup job already running";
        return record_job(ctx, (op, writer), job, note).await;
    }
    // Azure Backup's daily limit: never ask for a fourth on-demand backup in 24 h.
    if let Some(until) = limits::own_limit(&op, engine::now(ctx)) {
        let why = format!(
            "ade-backup already asked for {} on-demand backups of this VM in the last 24 h (Azure Backup refuses more with CloudDosTimeboudLimitReached)",
            crate::domain::backup_limits::ON_DEMAND_BACKUPS_PER_DAY
        );
        let reason = crate::domain::backup_limits::DeferReason::DailyLimitOwn;
        return limits::defer(ctx, (&op, writer), reason, until, why).await;
    }
    let id = op.operation_id.as_str();
    if !engine::renew_claim::<ProtectionOperation>(ctx, id, step, delivery).await? {
        return Ok(claim_lost(&id, step));
    }
    let vault = op.target.target.vault_id.clone();
    let retention = i64::from(ctx.settings.workflow.first_backup_retention_days);
    let expiry = engine::now(ctx) + chrono::Duration::days(retention);
    match ctx
        .arm
        .begin_backup_now(&vault, &op.vm_id, Some(expiry))
        .await
    {
        Ok(p) => {
            let lost = limits::record_backup_requested(ctx, (&op, writer), p).await?;
            Ok(lost.unwrap_or_else(|| format!("{}: backup triggered", op.operation_id)))
        }
        Err(e) if e.is_service_limit() => limits::defer_after_refusal(ctx, (&op, writer), &e).await,
        Err(e) if backup_in_progress(&e) => adopt_running_job(ctx, (op, writer), e).await,
        Err(e) if e.is_transient() => Err(WorkflowError::arm("triggering the backup", e)),
        Err(e) => {
            let code = e.code().unwrap_or("backup-failed").to_string();
            conclude(
                ctx,
                &op.operation_id,
                St::Failed,
                step,
                &code,
                &e.to_string(),
            )
            .await?;
            Ok(format!(
                "{}: triggering the backup failed: {e}",
                op.operation_id
            ))
        }
    }
}

/// Azure Backup's refusal of a backup while another backup of the item runs
/// ([backup-azure-vms-troubleshoot](https://learn.microsoft.com/azure/backup/backup-azure-vms-troubleshoot):
/// `UserErrorBackupOperationInProgress`, "wait for the previous backup operation to finish").
fn backup_in_progress(e: &ArmError) -> bool {
    e.code()
        .is_some_and(|c| c.eq_ignore_ascii_case("UserErrorBackupOperationInProgress"))
}

/// Azure refused the backup because a backup of this VM is already running (another copy of this
/// step, a scheduled backup, an operator's): that job is the first backup, so the step adopts
/// it. When it already ended (between the refusal and the listing), a backup job of this VM
/// since the step was claimed is adopted; with none, the refusal is retried (redelivery).
async fn adopt_running_job(
    ctx: &Context,
    (op, writer): (ProtectionOperation, Writer<'_>),
    refusal: ArmError,
) -> Result<String, WorkflowError> {
    let mut job = vm_backup_job(ctx, &op, Some(JobStatus::InProgress), None).await?;
    if job.is_none() {
        if let Some(since) = op.steps.claimed_at(ProtectStep::BackupNow) {
            job = vm_backup_job(ctx, &op, None, Some(since)).await?;
        }
    }
    match job {
        Some(job) => {
            let note = "adopted the backup job already running (Azure refused a second one)";
            record_job(ctx, (op, writer), job, note).await
        }
        None => Err(WorkflowError::arm(
            "triggering the backup (refused as in progress, and no backup job of the VM found)",
            refusal,
        )),
    }
}

/// A backup job of this VM started since this step was first claimed (only on a retry).
async fn adoptable_job(
    ctx: &Context,
    op: &ProtectionOperation,
) -> Result<Option<String>, WorkflowError> {
    let step = ProtectStep::BackupNow;
    let Some(since) = op.steps.claimed_at(step) else {
        return Ok(None);
    };
    if op.steps.attempts(step) <= 1 {
        return Ok(None);
    }
    vm_backup_job(ctx, op, None, Some(since)).await
}

/// The first backup job of this VM in the operation's vault with `status`, started since
/// `since` (less 5 minutes of clock skew), as Azure Backup lists them.
async fn vm_backup_job(
    ctx: &Context,
    op: &ProtectionOperation,
    status: Option<JobStatus>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<String>, WorkflowError> {
    let filter = BackupJobFilter {
        operation: Some(JobOperation::Backup),
        status,
        start_time: since.map(|t| t - chrono::Duration::minutes(5)),
        end_time: None,
    };
    let jobs = ctx
        .arm
        .list_backup_jobs(&op.target.target.vault_id, &filter)
        .await
        .doing("listing backup jobs")?;
    // This VM's job only: its container names the VM's resource group and name (a same-named
    // VM of another resource group in the same vault is another container).
    Ok(jobs
        .into_iter()
        .filter(|j| j.is_for_vm(&op.vm_id))
        .filter_map(|j| j.name)
        .next())
}

async fn record_job(
    ctx: &Context,
    (op, writer): (ProtectionOperation, Writer<'_>),
    job_id: String,
    note: &str,
) -> Result<String, WorkflowError> {
    let at = engine::now(ctx);
    let detail = ProtectDetail {
        job_id: Some(job_id.clone()),
        ..Default::default()
    };
    let (id, step) = (op.operation_id.as_str(), ProtectStep::BackupNow);
    let Some(op) = update_holding::<ProtectionOperation>(ctx, id, step, writer, |o, _| {
        o.steps.finish(step, at, Some(detail.clone()));
        o.azure.backup_job_id = Some(job_id.clone());
        o.record(at, St::InProgress, format!("{note}: job {job_id}"));
        true
    })
    .await?
    else {
        return Ok(claim_lost(&id, step));
    };
    // A backup job takes minutes (seconds in the simulator): a read right now would only say
    // "InProgress" and spend a token of the subscription's read bucket.
    let delay = Some(ctx.settings.workflow.poll_interval);
    BackupPhase::Track.send(ctx, &op, 0, delay).await?;
    Ok(format!("{}: {note}", op.operation_id))
}

async fn backup_poll(
    ctx: &Context,
    op: ProtectionOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let spec = PollSpec {
        step: ProtectStep::BackupNow,
        start: BackupPhase::BackupNow,
        again: BackupPhase::BackupPoll,
        what: "the backup request",
        failure_code: "backup-failed",
        next_action: "",
    };
    // The daily limit can also end the trigger's long-running operation: defer, as when the
    // trigger itself is refused.
    let hand_back = |e: &ArmError| e.is_service_limit() || backup_in_progress(e);
    let out = match poll_step_handing_back(ctx, &op, spec, poll, hand_back).await? {
        Ok(Polled::Handled(line)) => return Ok(line),
        Ok(Polled::Finished(out)) => out,
        Err(e) if backup_in_progress(&e) => {
            return adopt_running_job(ctx, (op, Writer::Poll), e).await
        }
        Err(limit) => return limits::defer_after_refusal(ctx, (&op, Writer::Poll), &limit).await,
    };
    let job = match out.job_id {
        Some(job) => Some((job, "backup job started")),
        None => adoptable_job(ctx, &op)
            .await?
            .map(|j| (j, "backup job found")),
    };
    match job {
        Some((job, note)) => record_job(ctx, (op, Writer::Poll), job, note).await,
        None => {
            let (code, m) = (
                "backup-job-unknown",
                "the backup request finished without a job id",
            );
            conclude(
                ctx,
                &op.operation_id,
                St::Failed,
                ProtectStep::BackupNow,
                code,
                m,
            )
            .await?;
            Ok(format!(
                "{}: backup finished without a job id",
                op.operation_id
            ))
        }
    }
}
