//! Claiming a step: the one place that decides whether this delivery does a step's side effect.
//! Done already → what follows it is sent again ([`Operation::resume`]); held by a live
//! invocation → this message comes back when that lease ends (or, held by another copy of the
//! same message, this copy is dropped); otherwise the step is ours.
//!
//! A claim's lease outlives the Azure call it guards: it is never shorter than the ARM client's
//! whole retry budget plus one request timeout (and a margin), so no takeover starts while the
//! call is still in flight. The result is then written only while the claim is still held
//! ([`update_holding`]); a writer that lost its claim writes nothing and leaves the step to its
//! new holder (who adopts what the call started).

use super::send::{claimant, is_other_copy, redeliver_at};
use super::{now, update, update_reporting, Operation, Reporting, WorkflowError};
use crate::context::Context;
use crate::domain::steps::{Claim, StepName, StepState};
use crate::trigger::ServiceBusMessage;
use std::time::Duration;

/// How long a claimed step is protected from a concurrent invocation: the setting, but never less
/// than the longest one ARM call can take (retry budget + one request timeout) plus a margin for
/// the write that records its result.
pub fn step_lease(ctx: &Context) -> chrono::Duration {
    let o = ctx.arm.options();
    let call = o.retry.max_elapsed + o.request_timeout;
    let margin = (call / 2).min(Duration::from_secs(30));
    let lease = ctx.settings.workflow.step_lease.max(call + margin);
    chrono::Duration::from_std(lease).unwrap_or_else(|_| chrono::Duration::minutes(5))
}

/// Who writes a step's result: the delivery that claimed the step (its claim is checked at the
/// write), or a follow-up poll of a step whose start is already recorded (no claim to hold).
#[derive(Clone, Copy)]
pub enum Writer<'a> {
    Claim(&'a ServiceBusMessage),
    Poll,
}

impl Writer<'_> {
    /// Whether this writer may still write `step`'s result into `op`.
    pub fn holds<O: Operation>(&self, op: &O, step: O::Step) -> bool {
        match self {
            Writer::Poll => true,
            Writer::Claim(delivery) => matches!(
                op.steps().state(step),
                Some(StepState::Claimed { by, .. }) if *by == claimant(delivery)
            ),
        }
    }
}

/// [`update_reporting`], applied only while `writer` still holds `step`. `Ok(None)`: the claim
/// was lost (expired and taken over); nothing was written.
pub async fn update_holding<O: Reporting>(
    ctx: &Context,
    id: &O::Id,
    step: O::Step,
    writer: Writer<'_>,
    mut f: impl FnMut(&mut O, &mut Option<O::Report>) -> bool + Send,
) -> Result<Option<O>, WorkflowError> {
    let mut lost = false;
    let op = update_reporting::<O>(ctx, id, |o, report| {
        lost = !writer.holds(o, step);
        !lost && f(o, report)
    })
    .await?;
    if lost {
        tracing::warn!(
            operation = %id,
            step = step.as_str(),
            "the claim on the step was lost during its Azure call; its result is left to the new holder"
        );
        return Ok(None);
    }
    Ok(Some(op))
}

/// Extends this delivery's claim on `step` to a full lease from now, right before a
/// non-idempotent Azure call (a step may make several calls: the lease must cover the one that
/// matters from its start). `Ok(false)`: the claim was lost — do not make the call.
pub async fn renew_claim<O: Operation>(
    ctx: &Context,
    id: &O::Id,
    step: O::Step,
    delivery: &ServiceBusMessage,
) -> Result<bool, WorkflowError> {
    let (by, at, lease) = (claimant(delivery), now(ctx), step_lease(ctx));
    let mut held = false;
    update::<O>(ctx, id, |op| {
        held = op.steps_mut().renew(step, &by, at, lease);
        held
    })
    .await?;
    Ok(held)
}

/// The log line of a writer that lost its claim.
pub fn claim_lost(id: &impl std::fmt::Display, step: impl StepName) -> String {
    format!(
        "{id}: the claim on {} expired during its Azure call; the step's new holder adopts the result",
        step.as_str()
    )
}

/// What [`claim_step`] decided for this delivery.
pub enum Claimed<O> {
    /// The step is ours: do it.
    Go(O),
    /// Nothing to do here; `line` says why (for the invocation log).
    Settled { op: O, line: String },
}

/// Claims `step` of the document `id` (of `generation`) for this delivery, and settles the two
/// "not mine" answers the same way for every workflow.
pub async fn claim_step<O: Operation>(
    ctx: &Context,
    id: &O::Id,
    generation: u32,
    step: O::Step,
    delivery: &ServiceBusMessage,
) -> Result<Claimed<O>, WorkflowError> {
    let by = claimant(delivery);
    let (at, lease) = (now(ctx), step_lease(ctx));
    let open = |op: &O| op.generation() == generation && !op.is_finished();
    let mut outcome = Claim::AlreadyDone;
    let op = update::<O>(ctx, id, |op| {
        outcome = if open(op) {
            op.steps_mut().claim(step, &by, at, lease)
        } else {
            Claim::AlreadyDone
        };
        if outcome == Claim::Acquired {
            op.on_claimed(step, at);
        }
        outcome == Claim::Acquired
    })
    .await?;
    let name = step.as_str();
    match outcome {
        Claim::Acquired => Ok(Claimed::Go(op)),
        // Another copy of this very message (sent twice, no duplicate detection between): the
        // holder does the step and sends what follows; should it die, its own message comes back.
        Claim::HeldByOther { by: holder, .. } if is_other_copy(&holder, delivery) => {
            let line = format!("{id}: {name} held by another copy of this message ({holder}); this copy is dropped");
            Ok(Claimed::Settled { op, line })
        }
        Claim::HeldByOther { until, .. } => {
            redeliver_at(ctx, delivery, until).await?;
            let line = format!("{id}: {name} in progress elsewhere until {until}; will look again");
            Ok(Claimed::Settled { op, line })
        }
        _ => {
            if op.generation() == generation {
                op.resume(ctx, step).await?;
            }
            let line = format!("{id}: {name} already done");
            Ok(Claimed::Settled { op, line })
        }
    }
}
