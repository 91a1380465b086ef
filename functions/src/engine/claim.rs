//! Claiming a step: the one place that decides whether this delivery does a step's side effect.
//! Done already → what follows it is sent again ([`Operation::resume`]); held by a live
//! invocation → this message comes back when that lease ends; otherwise the step is ours.

use super::send::{claimant, redeliver_at};
use super::{now, update, Operation, WorkflowError};
use crate::context::Context;
use crate::domain::steps::{Claim, StepName};
use crate::trigger::ServiceBusMessage;

/// How long a claimed step is protected from a concurrent invocation.
pub fn step_lease(ctx: &Context) -> chrono::Duration {
    chrono::Duration::from_std(ctx.settings.workflow.step_lease)
        .unwrap_or_else(|_| chrono::Duration::minutes(2))
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
        Claim::HeldByOther { until } => {
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
