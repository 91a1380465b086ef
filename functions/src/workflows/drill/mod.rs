//! Restore drills: prove on a schedule that protected ADE VMs come back. A drill submits a
//! restore request for the VM's latest recovery point into the configured drill resource group
//! and isolated subnet, through the *same* restore workflow a ticket uses ([`crate::workflows::restore::submit`];
//! the restore ticket's id is the drill id), follows the ticket until it is final, runs its own
//! checks of the restored VM ([`verify`]: running, guest agent ready, ADE reporting every covered
//! volume encrypted, the recovery point's key material still in its vault), records the RTO of
//! each step, deletes exactly what it created ([`cleanup`]: only inside the drill resource group,
//! verified gone, the staging blobs of its restore job too) and reports (the drill document, the
//! VM's drill index for the fleet report, a notification when it failed).
//!
//! Messages: queue `drill-vm`, [`DrillMessage`] `{drillId, phase, poll}` with deterministic ids.
//! Every phase is idempotent (the restore is idempotent by ticket id, deletes converge, checks
//! only read), so a redelivery or a resumed drill repeats nothing harmful; a drill whose message
//! was lost is resumed by the next scheduled run ([`schedule::resume_stalled`]).
//!
//! Modules: [`schedule`] (which VMs, caps, starting and resuming), [`follow`] (the restore
//! ticket, RTO), [`verify`], [`cleanup`], [`finish`] (index, notification).

pub mod cleanup;
mod finish;
mod follow;
pub mod schedule;
pub mod verify;

use crate::context::Context;
use crate::domain::drill_config::DrillTarget;
use crate::engine::{send_json, WorkflowError};
use crate::records::{drill_key, DrillRecord};
use ade_backup_shared::state::json;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use schedule::{resume_stalled, run_schedule, start_drill, ScheduleOutcome, StartError};

/// A drill worker's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrillPhase {
    /// Submit the restore request (idempotent by ticket id).
    Start,
    /// Look at the restore ticket until it is final.
    AwaitRestore,
    /// ade-backup's own checks of the restored VM.
    Verify,
    /// Delete what the drill created, one pass; again later until verified gone.
    Cleanup,
}

impl DrillPhase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::AwaitRestore => "await-restore",
            Self::Verify => "verify",
            Self::Cleanup => "cleanup",
        }
    }
}

/// `drill-vm` queue messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrillMessage {
    pub drill_id: String,
    pub phase: DrillPhase,
    #[serde(default)]
    pub poll: u32,
}

/// How often a drill looks again at its restore ticket before giving up on it (the restore has
/// its own per-step bounds; this is the drill's outer bound).
const MAX_RESTORE_POLLS: u32 = 2000;

/// Sends a phase of a drill (deterministic id; `tag` distinguishes a resumed send).
async fn send_phase(
    ctx: &Context,
    drill_id: &str,
    phase: DrillPhase,
    poll: u32,
    delay: Option<Duration>,
) -> Result<(), WorkflowError> {
    send_tagged(ctx, drill_id, phase, poll, delay, "").await
}

async fn send_tagged(
    ctx: &Context,
    drill_id: &str,
    phase: DrillPhase,
    poll: u32,
    delay: Option<Duration>,
    tag: &str,
) -> Result<(), WorkflowError> {
    let id = format!("{drill_id}-drill-{}-{poll}{tag}", phase.name());
    let body = DrillMessage {
        drill_id: drill_id.to_string(),
        phase,
        poll,
    };
    let queue = &ctx.settings.queues.drill_vm;
    send_json(ctx, queue, &id, &body, delay, Some(drill_id)).await
}

/// The drill document, if it exists.
pub async fn load(ctx: &Context, drill_id: &str) -> Result<Option<DrillRecord>, WorkflowError> {
    Ok(
        json::get::<DrillRecord>(ctx.state.as_ref(), &drill_key(drill_id))
            .await?
            .map(|(d, _)| d),
    )
}

/// Applies `f` to the drill document (conditional write); `f` returns whether it changed it.
async fn update(
    ctx: &Context,
    drill_id: &str,
    mut f: impl FnMut(&mut DrillRecord) -> bool + Send,
) -> Result<DrillRecord, WorkflowError> {
    let now = ctx.clock.now();
    json::update::<DrillRecord, WorkflowError, _>(ctx.state.as_ref(), &drill_key(drill_id), |cur| {
        let Some(cur) = cur else {
            return Err(unknown(drill_id));
        };
        let mut next = cur.clone();
        if !f(&mut next) {
            return Ok(None);
        }
        next.updated_at = now;
        Ok(Some(next))
    })
    .await
}

fn unknown(drill_id: &str) -> WorkflowError {
    WorkflowError::poison(
        "UnknownDrill",
        format!("drill {drill_id} has no drill document"),
    )
}

/// The drill target of the drill's VM (the configuration may have changed since it started:
/// without a target, nothing can be checked against the drill resource group, so nothing is
/// deleted).
fn target_of<'a>(ctx: &'a Context, d: &DrillRecord) -> Result<&'a DrillTarget, WorkflowError> {
    ctx.settings
        .drill
        .target_for(d.vm_id.subscription())
        .filter(|t| t.resource_group.eq_ignore_ascii_case(&d.drill_resource_group))
        .ok_or_else(|| {
            WorkflowError::poison(
                "DrillTargetChanged",
                format!(
                    "drill {}: {} is no longer the configured drill resource group of subscription {}",
                    d.drill_id,
                    d.drill_resource_group,
                    d.vm_id.subscription()
                ),
            )
        })
}

/// Handles one `drill-vm` message.
pub async fn run_phase(ctx: &Context, msg: &DrillMessage) -> Result<String, WorkflowError> {
    let d = load(ctx, &msg.drill_id)
        .await?
        .ok_or_else(|| unknown(&msg.drill_id))?;
    if !d.is_open() {
        return Ok(format!("{}: drill already done", d.drill_id));
    }
    match msg.phase {
        DrillPhase::Start => follow::start(ctx, d).await,
        DrillPhase::AwaitRestore => follow::await_restore(ctx, d, msg.poll).await,
        DrillPhase::Verify => verify::verify(ctx, d).await,
        DrillPhase::Cleanup => cleanup::cleanup(ctx, d, msg.poll).await,
    }
}

/// The restore document of the drill's ticket.
async fn restore_of(
    ctx: &Context,
    d: &DrillRecord,
) -> Result<Option<crate::records::RestoreOperation>, WorkflowError> {
    let ticket = ade_backup_shared::ids::TicketId::parse(&d.ticket_id)
        .map_err(|e| WorkflowError::poison("InvalidDrill", e.to_string()))?;
    crate::engine::load::<crate::records::RestoreOperation>(ctx, &ticket).await
}
