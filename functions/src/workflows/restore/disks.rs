//! `RestoreVm`: trigger the restore-disks job of the chosen recovery point, learn its job id, and
//! follow it until the disks and the template are in the staging account. A crash between the
//! trigger and its record adopts the restore job already running instead of starting another.

use super::{
    again, fail, open_restore, push, request_of, resend_latest, update_reporting, vault_of,
    RedeployPhase, RestorePhase, RestoreVmMessage, Why,
};
use crate::context::Context;
use crate::engine::{
    self, claim_lost, claim_step, poll_delay, poll_step, update_holding, ArmResultExt, Claimed,
    Phase, PollSpec, Polled, WorkflowError, Writer,
};
use crate::records::{RestoreDetail, RestoreOperation, RestoreStatus, RestoreStep};
use crate::trigger::ServiceBusMessage;
use ade_backup_shared::arm::recovery_services::{BackupJobFilter, JobOperation};
use ade_backup_shared::arm::{
    BackupJob, EncryptionDetails, RecoveryPoint, ResourceGroupRef, RestoreDisksRequest,
    SubscriptionId,
};
use ade_backup_shared::ids::{ResourceId, TicketId};

const RESTORE_NEXT: &str = "Look at the restore job in the Recovery Services vault (Backup jobs); anything restored so far is kept. If the job failed on a snapshot-tier recovery point of an ADE VM, retry from a vault-tier recovery point (submit a new ticket with that recovery point id).";
const TIMED_OUT_NEXT: &str = "Look at the restore job in the vault's Backup jobs; when it completed, deploy the template it wrote by hand.";

/// `https://sa.blob.core.windows.net/c/t.json?sv=..&sig=..` → without the query (a SAS is a
/// credential: never stored, never logged).
pub fn strip_query(uri: &str) -> String {
    let cut = uri.find(['?', '#']).unwrap_or(uri.len());
    uri[..cut].to_string()
}

/// One `restore-vm` message.
pub async fn restore_vm(
    ctx: &Context,
    msg: &RestoreVmMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let op = match open_restore(ctx, msg, TIMED_OUT_NEXT).await? {
        Ok(op) => op,
        Err(line) => return Ok(line),
    };
    match msg.phase {
        RestorePhase::Trigger => trigger(ctx, op, delivery).await,
        RestorePhase::TriggerPoll => trigger_poll(ctx, op, msg.poll).await,
        RestorePhase::Track => track(ctx, op, msg.poll).await,
    }
}

/// The restore request for Azure Backup: the recovery point's keys, the staging account, the
/// target resource group.
fn restore_request(
    op: &RestoreOperation,
    rp: &RecoveryPoint,
) -> Result<Result<RestoreDisksRequest, String>, WorkflowError> {
    let req = request_of(op)?;
    let ks = rp.properties.key_and_secret.clone().unwrap_or_default();
    let (bek, kek) = (
        ks.bek_details.unwrap_or_default(),
        ks.kek_details.unwrap_or_default(),
    );
    let encryption = EncryptionDetails {
        encryption_enabled: rp.is_encrypted(),
        kek_url: kek.key_url,
        secret_key_url: bek.secret_url,
        kek_vault_id: kek.key_vault_id,
        secret_key_vault_id: bek.secret_vault_id,
    };
    let target = &req.target_resource_group;
    let target = SubscriptionId::parse(&target.subscription)
        .and_then(|s| ResourceGroupRef::new(s, &target.name))
        .map_err(|e| WorkflowError::poison("InvalidRestore", e.to_string()))?;
    let rp_id = op.azure.recovery_point_id.clone().unwrap_or_default();
    let region = op.region.clone().unwrap_or_default();
    let staging = &req.staging_storage_account_id;
    Ok(
        match RestoreDisksRequest::new(&rp_id, &req.vm_resource_id, &region, staging) {
            Ok(r) => Ok(r.target_resource_group(&target).encryption(encryption)),
            Err(e) => Err(e.to_string()),
        },
    )
}

/// Start the restore-disks job (or adopt the one a crashed attempt started).
async fn trigger(
    ctx: &Context,
    op: RestoreOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::RestoreDisks);
    let op = match claim_step::<RestoreOperation>(ctx, &ticket, 0, step, delivery).await? {
        Claimed::Go(op) => op,
        Claimed::Settled { line, .. } => return Ok(line),
    };
    let vault = vault_of(&op)?;
    let vm = request_of(&op)?.vm_resource_id.clone();
    // A crash after the trigger and before it was recorded must not start a second restore.
    if let Some(job) = adoptable_job(ctx, &op, &vault, &vm).await? {
        let note = "adopted the restore job already running";
        return record_job(ctx, &ticket, Writer::Claim(delivery), job, note).await;
    }
    let rp_id = op.azure.recovery_point_id.clone().unwrap_or_default();
    let points = ctx
        .arm
        .list_recovery_points(&vault, &vm)
        .await
        .doing("listing recovery points")?;
    let Some(rp) = points.iter().find(|p| {
        p.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&rp_id))
    }) else {
        let m = format!("recovery point {rp_id} expired or was deleted before the restore started");
        let next = "Submit a new ticket with another recovery point.";
        return fail(
            ctx,
            &ticket,
            step,
            super::code::RECOVERY_POINT_NOT_FOUND,
            &m,
            next,
        )
        .await;
    };
    let request = match restore_request(&op, rp)? {
        Ok(r) => r,
        Err(m) => {
            return fail(
                ctx,
                &ticket,
                step,
                "invalid-restore-request",
                &m,
                RESTORE_NEXT,
            )
            .await
        }
    };
    start_job(ctx, &op, delivery, (&vault, &vm), &request).await
}

/// Starts the restore-disks job (a non-idempotent Azure call: the step's claim guards it) and
/// records its pending operation with the `restoring-disks` status.
async fn start_job(
    ctx: &Context,
    op: &RestoreOperation,
    delivery: &ServiceBusMessage,
    (vault, vm): (&ResourceId, &ResourceId),
    request: &RestoreDisksRequest,
) -> Result<String, WorkflowError> {
    let (ticket, step) = (&op.ticket_id, RestoreStep::RestoreDisks);
    if !engine::renew_claim::<RestoreOperation>(ctx, ticket, step, delivery).await? {
        return Ok(claim_lost(ticket, step));
    }
    let pending = match ctx.arm.begin_restore(vault, vm, request).await {
        Ok(p) => p,
        Err(e) if e.is_transient() => return Err(WorkflowError::arm("triggering the restore", e)),
        Err(e) => {
            let c = e.code().unwrap_or("restore-failed").to_string();
            let deferrals = op.steps.detail(step).deferrals;
            if e.is_service_limit() && deferrals < super::limits::MAX_DEFERRALS {
                return super::limits::defer(ctx, op, delivery, (&c, &e.to_string())).await;
            }
            return fail(ctx, ticket, step, &c, &e.to_string(), RESTORE_NEXT).await;
        }
    };
    let delay = poll_delay(ctx, pending.retry_after);
    let rp_id = op.azure.recovery_point_id.clone().unwrap_or_default();
    let staging = request_of(op)?
        .staging_storage_account_id
        .name()
        .to_string();
    let retry = match op.steps.detail(step).tier_retry {
        Some(_) => " (the automatic retry from the vault tier)",
        None => "",
    };
    let message = format!(
        "restoring the disks of recovery point {rp_id}{retry} to the staging account {staging}"
    );
    let at = engine::now(ctx);
    let writer = Writer::Claim(delivery);
    let Some(op) = update_holding::<RestoreOperation>(ctx, ticket, step, writer, |o, sent| {
        o.steps.detail_mut(step).pending = Some(pending.clone());
        let st = RestoreStatus::RestoringDisks;
        *sent = Some(push(o, at, st, Some(step), message.clone(), Why::default()));
        true
    })
    .await?
    else {
        return Ok(claim_lost(ticket, step));
    };
    RestorePhase::TriggerPoll
        .send(ctx, &op, 1, Some(delay))
        .await?;
    Ok(format!("{ticket}: restore triggered"))
}

/// A restore job of this VM started since this step was first claimed (only on a retry).
async fn adoptable_job(
    ctx: &Context,
    op: &RestoreOperation,
    vault: &ResourceId,
    vm: &ResourceId,
) -> Result<Option<String>, WorkflowError> {
    let step = RestoreStep::RestoreDisks;
    if op.steps.attempts(step) <= 1 {
        return Ok(None);
    }
    let since = op
        .steps
        .detail(step)
        .started_at
        .or(op.steps.claimed_at(step));
    let Some(since) = since else { return Ok(None) };
    let since = since - chrono::Duration::minutes(5);
    let filter = BackupJobFilter {
        operation: Some(JobOperation::Restore),
        status: None,
        start_time: Some(since),
        end_time: None,
    };
    let jobs = ctx
        .arm
        .list_backup_jobs(vault, &filter)
        .await
        .doing("listing restore jobs")?;
    // This VM's restore into this ticket's staging account only: the job's container names the
    // VM's resource group and name, and its details name the staging account.
    let staging = request_of(op)?
        .staging_storage_account_id
        .name()
        .to_string();
    // The job a vault-tier retry replaced failed: it is never adopted.
    let replaced = op.steps.detail(step).tier_retry.map(|r| r.failed_job);
    let candidates = jobs.into_iter().filter(|jb| {
        let p = &jb.properties;
        let name = jb.name.as_deref().unwrap_or_default();
        if replaced
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(name))
        {
            return false;
        }
        p.operation
            .as_deref()
            .is_none_or(|o| o.eq_ignore_ascii_case("Restore"))
            && jb.is_for_vm(vm)
            && p.start_time.is_none_or(|t| t >= since)
    });
    for jb in candidates {
        let Some(id) = jb.name else { continue };
        let full = ctx
            .arm
            .get_backup_job(vault, &id)
            .await
            .doing("reading a restore job")?;
        if full
            .target_storage_account()
            .is_some_and(|a| a.eq_ignore_ascii_case(&staging))
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

async fn record_job(
    ctx: &Context,
    ticket: &TicketId,
    writer: Writer<'_>,
    job_id: String,
    note: &str,
) -> Result<String, WorkflowError> {
    let at = engine::now(ctx);
    let step = RestoreStep::RestoreDisks;
    let Some(op) = update_holding::<RestoreOperation>(ctx, ticket, step, writer, |o, _| {
        o.steps.finish(step, at, None);
        o.steps.detail_mut(step).job_id = Some(job_id.clone());
        o.azure.restore_job_id = Some(job_id.clone());
        true
    })
    .await?
    else {
        return Ok(claim_lost(ticket, step));
    };
    RestorePhase::Track.send(ctx, &op, 0, None).await?;
    Ok(format!("{ticket}: {note}: job {job_id}"))
}

/// Follow the restore request until it names its job.
async fn trigger_poll(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, WorkflowError> {
    let ticket = op.ticket_id.clone();
    let spec = PollSpec {
        step: RestoreStep::RestoreDisks,
        start: RestorePhase::Trigger,
        again: RestorePhase::TriggerPoll,
        what: "the restore request",
        failure_code: "restore-failed",
        next_action: RESTORE_NEXT,
    };
    let out = match poll_step(ctx, &op, spec, poll).await? {
        Polled::Handled(line) => return Ok(line),
        Polled::Finished(out) => out,
    };
    if let Some(job) = out.job_id {
        return record_job(ctx, &ticket, Writer::Poll, job, "restore job started").await;
    }
    let vault = vault_of(&op)?;
    let vm = request_of(&op)?.vm_resource_id.clone();
    match adoptable_job(ctx, &op, &vault, &vm).await? {
        Some(job) => record_job(ctx, &ticket, Writer::Poll, job, "restore job found").await,
        None => {
            let m = "the restore request finished without naming its job";
            let step = RestoreStep::RestoreDisks;
            fail(ctx, &ticket, step, "restore-job-unknown", m, RESTORE_NEXT).await
        }
    }
}

/// Follow the restore job until it ends; on success record the template and go on to deploy.
async fn track(ctx: &Context, op: RestoreOperation, poll: u32) -> Result<String, WorkflowError> {
    let (ticket, step) = (op.ticket_id.clone(), RestoreStep::TrackRestoreJob);
    if op.steps.is_done(step) {
        resend_latest(ctx, &op).await?;
        RedeployPhase::Deploy.send(ctx, &op, 0, None).await?;
        return Ok(format!("{ticket}: disks already restored"));
    }
    let Some(job_id) = op.azure.restore_job_id.clone() else {
        RestorePhase::Trigger.send(ctx, &op, 0, None).await?;
        return Ok(format!(
            "{ticket}: no restore job recorded; back to the trigger"
        ));
    };
    let vault = vault_of(&op)?;
    let job = ctx
        .arm
        .get_backup_job(&vault, &job_id)
        .await
        .doing("reading the restore job")?;
    if !job.is_terminal() {
        again(ctx, &op, RestorePhase::Track, poll).await?;
        let st = job.status().unwrap_or("?");
        return Ok(format!("{ticket}: restore job {job_id} {st}"));
    }
    if !job.succeeded() {
        return job_failed(ctx, &op, &job, &job_id).await;
    }
    let Some(template) = job.property("Template Blob Uri").map(strip_query) else {
        let m = format!("restore job {job_id} completed without a Template Blob Uri");
        let next = "The disks are restored in the staging account / target resource group: create the VM from them by hand and reinstall ADE with the recorded settings.";
        return fail(ctx, &ticket, step, "restore-template-missing", &m, next).await;
    };
    // Never deploy a VM that cannot unlock: the key material again (put back when opted in).
    let key_note = match super::key_restore::ensure(ctx, &op, &job).await? {
        Ok(n) => n.map(|n| format!("; {n}")).unwrap_or_default(),
        Err(line) => return Ok(line),
    };
    let config = job.property("Config Blob Uri").map(strip_query);
    // A drill's restored disks carry its tag from now on (found again by it if the deployment fails).
    let drill_disks = super::drill_tags::tag_restored_disks(ctx, &op, &template).await?;
    let at = engine::now(ctx);
    // Pin the template as the job left it: its version now, and when the job ended.
    let detail = RestoreDetail {
        job_ended: Some(job.properties.end_time.unwrap_or(at)),
        template_etag: super::template::current_etag(ctx, &template).await?,
        ..Default::default()
    };
    let staging = request_of(&op)?
        .staging_storage_account_id
        .name()
        .to_string();
    // Kept so a drill can delete it with the template (it holds the key material's backups).
    let encryption_info = super::key_restore::encryption_info_url(&job, &staging)
        .ok()
        .map(|u| u.to_string());
    let message = format!(
        "restore job {job_id} completed; the disks and the VM template are in the staging account {staging}{key_note}"
    );
    let op = update_reporting(ctx, &ticket, |o, sent| {
        if o.steps.is_done(step) {
            return false;
        }
        o.steps.finish(step, at, Some(detail.clone()));
        o.azure.template_blob_uri = Some(template.clone());
        o.azure.config_blob_uri = config.clone();
        o.azure.encryption_info_blob_uri = encryption_info.clone();
        if !drill_disks.is_empty() {
            o.azure.restored_disk_ids = drill_disks.clone();
        }
        let st = RestoreStatus::DisksRestored;
        *sent = Some(push(o, at, st, Some(step), message.clone(), Why::default()));
        true
    })
    .await?;
    RedeployPhase::Deploy.send(ctx, &op, 0, None).await?;
    Ok(format!("{ticket}: disks restored"))
}

/// The restore job failed: a snapshot-tier key mismatch is retried once from a vault-tier point;
/// anything else fails the ticket with Azure's code and what a human can do.
async fn job_failed(
    ctx: &Context,
    op: &RestoreOperation,
    job: &BackupJob,
    job_id: &str,
) -> Result<String, WorkflowError> {
    let c = job.error_code().unwrap_or("restore-job-failed").to_string();
    let text = job
        .properties
        .error_details
        .first()
        .and_then(|e| e.error_string.clone())
        .unwrap_or_else(|| format!("restore job {job_id} {}", job.status().unwrap_or("?")));
    let m = format!("restore job {job_id} failed: {text}");
    if super::tier_retry::is_snapshot_tier_failure(&c) {
        return super::tier_retry::after_failure(ctx, op, job_id, (&c, &m)).await;
    }
    let next = if c.eq_ignore_ascii_case("UserErrorEncryptedVmRestoreDiskLimitExceeded") {
        "Azure Backup cannot restore the ADE settings of VMs with more than 16 disks or a disk over 4097 GB: create the VM from the restored disks by hand and re-enable ADE with the recorded settings (see the restore document's ade)."
    } else {
        RESTORE_NEXT
    };
    fail(
        ctx,
        &op.ticket_id,
        RestoreStep::TrackRestoreJob,
        &c,
        &m,
        next,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sas_is_stripped() {
        assert_eq!(
            strip_query("https://sa.blob.core.windows.net/c/t.json?sv=1&sig=SECRET"),
            "https://sa.blob.core.windows.net/c/t.json"
        );
        assert_eq!(strip_query("https://x/y"), "https://x/y");
    }
}
