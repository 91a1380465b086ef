//! Azure Backup's daily limit on on-demand backups, in the `backup-now` step: ade-backup asks for
//! at most `backup_limits::ON_DEMAND_BACKUPS_PER_DAY` per VM in 24 h (counted on the operation
//! document, so the sweep's repairs stay under it too), and a `CloudDosTimeboudLimitReached`
//! refusal (never retried: `ArmError::ServiceLimit`) defers the step. A deferred step is released
//! and sent again as a scheduled follow-up for when the window allows; why is recorded on the
//! operation and on the VM record. The operation stays open, so the sweep leaves the VM alone.

use super::observe::upsert_vm_record;
use super::BackupPhase;
use crate::context::Context;
use crate::domain::backup_limits::{self, DeferReason, Deferral};
use crate::engine::{self, claim_lost, update_holding, Phase, WorkflowError, Writer};
use crate::records::{ProtectDetail, ProtectStep, ProtectionOperation, ProtectionStatus as St};
use ade_backup_shared::arm::{ArmError, PendingOperation};
use chrono::{DateTime, Utc};

/// The VM record's reason while a backup waits.
pub const DEFERRED_REASON: &str = "backup-deferred-daily-limit";

/// `Some(until)` when ade-backup already asked for its daily share of on-demand backups.
pub(super) fn own_limit(op: &ProtectionOperation, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    backup_limits::next_slot(&op.on_demand_backups, now)
}

/// Defers the `backup-now` step held by `writer` to `until`: releases it, records why, and sends
/// the step again for then.
pub(super) async fn defer(
    ctx: &Context,
    (op, writer): (&ProtectionOperation, Writer<'_>),
    reason: DeferReason,
    until: DateTime<Utc>,
    why: String,
) -> Result<String, WorkflowError> {
    let step = ProtectStep::BackupNow;
    let at = engine::now(ctx);
    let deferral = Deferral {
        reason,
        until,
        message: ade_backup_shared::telemetry::redact_owned(why),
    };
    let id = op.operation_id.as_str();
    let note = format!(
        "backup deferred until {until} ({}): {}",
        reason.as_str(),
        deferral.message
    );
    let Some(op) = update_holding::<ProtectionOperation>(ctx, id, step, writer, |o, _| {
        o.steps.release(step);
        o.deferred = Some(deferral.clone());
        o.on_demand_backups = backup_limits::recent(&o.on_demand_backups, at);
        o.record(at, St::InProgress, note.clone());
        true
    })
    .await?
    else {
        return Ok(claim_lost(&id, step));
    };
    upsert_vm_record(ctx, &op.vm_id, |r| {
        r.status = St::InProgress;
        r.reason = Some(DEFERRED_REASON.to_string());
        r.message = Some(note.clone());
        r.deferred = Some(deferral.clone());
    })
    .await?;
    let delay = (until - at).to_std().unwrap_or_default();
    let attempt = op.steps.attempts(step);
    BackupPhase::BackupNow
        .send(ctx, &op, attempt, Some(delay))
        .await?;
    Ok(format!("{}: {note}", op.operation_id))
}

/// Azure refused the backup with its daily limit: wait a day (or longer, see
/// `backup_limits::after_azure_refusal`).
pub(super) async fn defer_after_refusal(
    ctx: &Context,
    on: (&ProtectionOperation, Writer<'_>),
    e: &ArmError,
) -> Result<String, WorkflowError> {
    let now = engine::now(ctx);
    let until = backup_limits::after_azure_refusal(&on.0.on_demand_backups, now);
    defer(ctx, on, DeferReason::DailyLimitAzure, until, e.to_string()).await
}

/// Records the backup request Azure accepted: its long-running operation (polled next), and
/// the on-demand backup counted against the daily limit. Returns a line when the claim was lost.
pub(super) async fn record_backup_requested(
    ctx: &Context,
    (op, writer): (&ProtectionOperation, Writer<'_>),
    pending: PendingOperation,
) -> Result<Option<String>, WorkflowError> {
    let step = ProtectStep::BackupNow;
    let at = engine::now(ctx);
    let delay = engine::poll_delay(ctx, pending.retry_after);
    let detail = ProtectDetail {
        pending: Some(pending),
        ..Default::default()
    };
    let id = op.operation_id.as_str();
    let Some(op) = update_holding::<ProtectionOperation>(ctx, id, step, writer, |o, _| {
        *o.steps.detail_mut(step) = detail.clone();
        let mut recent = backup_limits::recent(&o.on_demand_backups, at);
        recent.push(at);
        o.on_demand_backups = recent;
        o.deferred = None;
        true
    })
    .await?
    else {
        return Ok(Some(claim_lost(&id, step)));
    };
    BackupPhase::BackupPoll
        .send(ctx, &op, 1, Some(delay))
        .await?;
    Ok(None)
}
