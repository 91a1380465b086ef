//! A drill's restore: submitting the restore request through the ticket workflow's own entry
//! ([`restore::submit`], idempotent by ticket id: a redelivered start submits nothing twice), then
//! following the restore document until its status is final, and the RTO of each restore step
//! from the ticket's status times.

use super::{restore_of, send_phase, target_of, update, DrillPhase, MAX_RESTORE_POLLS};
use crate::context::Context;
use crate::domain::drill_config::drill_request;
use crate::engine::WorkflowError;
use crate::records::{
    DrillRecord, DrillResult, DrillRto, DrillStatus, RestoreOperation, RestoreStatus,
};
use crate::workflows::restore;
use chrono::{DateTime, Utc};

/// `start`: submits the drill's restore request and starts following it.
pub(super) async fn start(ctx: &Context, d: DrillRecord) -> Result<String, WorkflowError> {
    let target = target_of(ctx, &d)?;
    let (req, body) = drill_request(&d.ticket_id, &d.vm_id, target).map_err(|r| {
        WorkflowError::poison(
            "InvalidDrill",
            format!(
                "the drill's restore request does not parse: {}: {}",
                r.field, r.rule
            ),
        )
    })?;
    let line = restore::submit(ctx, Ok(req), &body).await?;
    send_phase(ctx, &d.drill_id, DrillPhase::AwaitRestore, 0, None).await?;
    Ok(format!("{}: restore submitted: {line}", d.drill_id))
}

/// `await-restore`: the ticket is final → verify (it completed) or record why it failed and
/// clean up; otherwise look again after the poll interval.
pub(super) async fn await_restore(
    ctx: &Context,
    d: DrillRecord,
    poll: u32,
) -> Result<String, WorkflowError> {
    let Some(op) = restore_of(ctx, &d).await? else {
        send_phase(ctx, &d.drill_id, DrillPhase::Start, poll, None).await?;
        return Ok(format!(
            "{}: no restore document yet; submitting again",
            d.drill_id
        ));
    };
    if !op.status.is_final() {
        if poll >= MAX_RESTORE_POLLS {
            let why = format!(
                "the restore ticket was still {} after {poll} looks",
                op.status
            );
            return conclude(ctx, &d, &op, Some(("restore-timed-out", why))).await;
        }
        // Touch the document: a live drill is never taken for a stalled one.
        update(ctx, &d.drill_id, |r| r.status == DrillStatus::Restoring).await?;
        let delay = Some(ctx.settings.workflow.poll_interval);
        send_phase(ctx, &d.drill_id, DrillPhase::AwaitRestore, poll + 1, delay).await?;
        return Ok(format!(
            "{}: restore {}; looking again",
            d.drill_id, op.status
        ));
    }
    let failure = match op.status {
        RestoreStatus::Completed | RestoreStatus::CompletedNeedsAttention => None,
        _ => {
            let last = op.history.last();
            let code = last
                .and_then(|u| u.reason.clone())
                .unwrap_or_else(|| op.status.to_string());
            let msg = last.map(|u| u.message.clone()).unwrap_or_default();
            Some((code, format!("the restore ended {}: {msg}", op.status)))
        }
    };
    conclude(
        ctx,
        &d,
        &op,
        failure.as_ref().map(|(c, m)| (c.as_str(), m.clone())),
    )
    .await
}

/// Records the restore's outcome and RTO, then verifies (restored) or cleans up (failed).
async fn conclude(
    ctx: &Context,
    d: &DrillRecord,
    op: &RestoreOperation,
    failure: Option<(&str, String)>,
) -> Result<String, WorkflowError> {
    let rto = restore_rto(op, d.created_at);
    let restored = op.azure.restored_vm_id.clone();
    let status = op.status.to_string();
    let next = if failure.is_some() {
        DrillStatus::CleaningUp
    } else {
        DrillStatus::Verifying
    };
    update(ctx, &d.drill_id, |r| {
        if r.status != DrillStatus::Restoring {
            return false;
        }
        r.rto = rto.clone();
        r.restore_status = Some(status.clone());
        r.restored_vm_id = restored.clone();
        if let Some((code, message)) = &failure {
            r.result = Some(DrillResult::Failed);
            r.reason = Some(code.to_string());
            r.message = Some(message.clone());
            r.checks.push(format!("restore: {message}"));
        } else {
            r.checks.push(format!("restore: the ticket ended {status}"));
        }
        r.status = next;
        true
    })
    .await?;
    let phase = match next {
        DrillStatus::Verifying => DrillPhase::Verify,
        _ => DrillPhase::Cleanup,
    };
    send_phase(ctx, &d.drill_id, phase, 0, None).await?;
    Ok(format!(
        "{}: restore {status}; next {}",
        d.drill_id,
        phase.name()
    ))
}

/// When the ticket first reached `status`.
fn at(op: &RestoreOperation, status: RestoreStatus) -> Option<DateTime<Utc>> {
    op.history.iter().find(|u| u.status == status).map(|u| u.at)
}

fn secs(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Option<i64> {
    Some((to? - from?).num_seconds().max(0))
}

/// RTO of the restore's steps from its status times: accepted → disks restored (restore job),
/// → deploying done (deployment: until ADE reinstall starts, or the final status on Windows),
/// → final (reinstall and the restore's own check).
pub fn restore_rto(op: &RestoreOperation, started: DateTime<Utc>) -> DrillRto {
    let accepted = at(op, RestoreStatus::Accepted);
    let restored = at(op, RestoreStatus::DisksRestored);
    let reinstall = at(op, RestoreStatus::ReinstallingAde);
    let end = op
        .history
        .iter()
        .rev()
        .find(|u| u.status.is_final())
        .map(|u| u.at);
    DrillRto {
        restore_job_secs: secs(accepted.or(Some(started)), restored),
        deployment_secs: secs(restored, reinstall.or(end)),
        reinstall_secs: reinstall.and(secs(reinstall, end)),
        verification_secs: None,
        total_secs: secs(Some(started), end),
    }
}
