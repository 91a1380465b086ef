//! The end of a drill: the document becomes `done`, the VM's drill index (what the scheduler and
//! the fleet report read) gets the result, and a failed drill (verification or clean-up) sends one
//! notification (deterministic id) to the drill notification queue.

use super::update;
use crate::context::Context;
use crate::engine::{send_json, WorkflowError};
use crate::records::{
    drill_vm_key, CleanupStatus, DrillRecord, DrillResult, DrillStatus, DrillVmIndex, ItemState,
};
use ade_backup_shared::state::json;
use serde_json::json;

/// Writes the VM's drill index from `d` (a later drill of the VM is never overwritten by an
/// earlier one).
pub async fn write_index(ctx: &Context, d: &DrillRecord) -> Result<(), WorkflowError> {
    let index = DrillVmIndex {
        vm_id: d.vm_id.clone(),
        rule: d.rule.clone(),
        last_drill_id: d.drill_id.clone(),
        last_started: d.created_at,
        status: d.status,
        result: d.result,
        reason: d.reason.clone(),
        cleanup: d.cleanup.status,
        total_rto_secs: d.rto.total_secs,
        finished_at: d.finished_at,
    };
    let key = drill_vm_key(&d.vm_id);
    json::update::<DrillVmIndex, WorkflowError, _>(ctx.state.as_ref(), &key, |cur| {
        if cur.is_some_and(|c| c.last_started > index.last_started || *c == index) {
            return Ok(None);
        }
        Ok(Some(index.clone()))
    })
    .await?;
    Ok(())
}

/// Closes the drill: `done`, index, notification on failure.
pub(super) async fn finish(ctx: &Context, d: DrillRecord) -> Result<String, WorkflowError> {
    let now = ctx.clock.now();
    let d = update(ctx, &d.drill_id, |r| {
        if r.status == DrillStatus::Done {
            return false;
        }
        r.status = DrillStatus::Done;
        r.finished_at = Some(now);
        true
    })
    .await?;
    write_index(ctx, &d).await?;
    let failed = d.result != Some(DrillResult::Passed) || d.cleanup.status != CleanupStatus::Done;
    if failed && !d.notified {
        notify(ctx, &d).await?;
        update(ctx, &d.drill_id, |r| {
            !std::mem::replace(&mut r.notified, true)
        })
        .await?;
    }
    let result = d.result.map_or("unknown", |r| r.as_str());
    tracing::info!(drill = %d.drill_id, vm = %d.vm_id, result, cleanup = d.cleanup.status.as_str(), "restore drill done");
    Ok(format!(
        "{}: drill {result}{}; clean-up {}",
        d.drill_id,
        d.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        d.cleanup.status
    ))
}

/// One message for humans: why the drill failed and what the clean-up left.
async fn notify(ctx: &Context, d: &DrillRecord) -> Result<(), WorkflowError> {
    let queue = ctx
        .settings
        .drill
        .notify_queue
        .clone()
        .unwrap_or_else(|| ctx.settings.workflow.notifications_queue.clone());
    let left: Vec<&str> = d
        .cleanup
        .items
        .iter()
        .filter(|i| i.state != ItemState::Gone)
        .map(|i| i.id.as_str())
        .collect();
    let body = json!({
        "kind": "restore-drill-failed",
        "drillId": d.drill_id,
        "vmId": d.vm_id.to_string(),
        "result": d.result,
        "reason": d.reason,
        "message": d.message,
        "cleanup": d.cleanup.status,
        "leftBehind": left,
        "refused": d.cleanup.refused,
        "rto": d.rto,
        "at": d.finished_at,
    });
    let id = format!("{}-drill-notify", d.drill_id);
    send_json(ctx, &queue, &id, &body, None, Some(&d.drill_id)).await
}
