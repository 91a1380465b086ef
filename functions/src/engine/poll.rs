//! Polling the long-running Azure operation a step started (its [`PendingOperation`] is kept in
//! the step's detail). Everything but "it finished" is settled here the same way for every
//! workflow: already done → resume; nothing recorded → start the step over; still running → poll
//! again later; failed → the step fails for good; transient → redelivery.

use super::send::poll_delay;
use super::{Failure, Operation, Phase, WorkflowError};
use crate::context::Context;
use ade_backup_shared::arm::{ArmError, LroOutcome, PendingOperation, PollOutcome};

/// A step whose detail can hold the pending long-running operation it started.
pub trait PendingDetail {
    fn pending(&self) -> Option<&PendingOperation>;
}

/// What to poll and where to go from it.
pub struct PollSpec<S, P> {
    pub step: S,
    /// The phase that starts the step (sent again when no pending operation was recorded).
    pub start: P,
    /// This poll's own phase (sent again, later, while the operation runs).
    pub again: P,
    /// Names the operation in log lines ("the restore request").
    pub what: &'static str,
    /// Failure code when Azure gives none.
    pub failure_code: &'static str,
    /// What a human should do when it fails.
    pub next_action: &'static str,
}

pub enum Polled {
    /// The operation finished: the caller records its outcome.
    Finished(LroOutcome),
    /// Settled here; the line is for the invocation log.
    Handled(String),
}

/// One poll of `spec.step`'s pending operation.
pub async fn poll_step<O, P>(
    ctx: &Context,
    op: &O,
    spec: PollSpec<O::Step, P>,
    poll: u32,
) -> Result<Polled, WorkflowError>
where
    O: Operation,
    O::Detail: PendingDetail,
    P: Phase<O>,
{
    match poll_inner(ctx, op, spec, poll, |_| false).await? {
        Ok(polled) => Ok(polled),
        // Not asked for: `poll_inner` only hands back limits when told to.
        Err(e) => Err(WorkflowError::arm("polling", e)),
    }
}

/// Like [`poll_step`], but an operation that failed with an error `hand_back` picks (e.g. a
/// Recovery Services daily limit, `ArmError::is_service_limit`) is handed back (`Err`) instead
/// of failing the step: the caller settles it (defers the step, adopts a running job).
pub async fn poll_step_handing_back<O, P>(
    ctx: &Context,
    op: &O,
    spec: PollSpec<O::Step, P>,
    poll: u32,
    hand_back: fn(&ArmError) -> bool,
) -> Result<Result<Polled, ArmError>, WorkflowError>
where
    O: Operation,
    O::Detail: PendingDetail,
    P: Phase<O>,
{
    poll_inner(ctx, op, spec, poll, hand_back).await
}

async fn poll_inner<O, P>(
    ctx: &Context,
    op: &O,
    spec: PollSpec<O::Step, P>,
    poll: u32,
    hand_back: fn(&ArmError) -> bool,
) -> Result<Result<Polled, ArmError>, WorkflowError>
where
    O: Operation,
    O::Detail: PendingDetail,
    P: Phase<O>,
{
    let id = op.id();
    if op.steps().is_done(spec.step) {
        op.resume(ctx, spec.step).await?;
        return Ok(Ok(Polled::Handled(format!(
            "{id}: {} already done",
            spec.what
        ))));
    }
    let Some(pending) = op.steps().detail(spec.step).pending().cloned() else {
        // Lost track (e.g. the start was never recorded): start the step over.
        spec.start.send(ctx, op, poll, None).await?;
        return Ok(Ok(Polled::Handled(format!(
            "{id}: no pending {} recorded; restarting the step",
            spec.what
        ))));
    };
    match ctx.arm.poll_once(&pending).await {
        Ok(PollOutcome::Pending(p)) => {
            let delay = poll_delay(ctx, p.retry_after);
            spec.again.send(ctx, op, poll + 1, Some(delay)).await?;
            Ok(Ok(Polled::Handled(format!(
                "{id}: {} still running",
                spec.what
            ))))
        }
        Ok(PollOutcome::Done(out)) => Ok(Ok(Polled::Finished(out))),
        Err(e) if e.is_transient() => Err(WorkflowError::arm(format!("polling {}", spec.what), e)),
        Err(e) if hand_back(&e) => Ok(Err(e)),
        Err(e) => {
            let failure = Failure {
                code: e.code().unwrap_or(spec.failure_code),
                message: &e.to_string(),
                next_action: spec.next_action,
            };
            O::fail_step(ctx, id, spec.step, failure)
                .await
                .map(|line| Ok(Polled::Handled(line)))
        }
    }
}

/// A follow-up that has polled more than `max_polls` times fails its step for good
/// (`operation-timed-out`). `Some(line)` when it did.
pub async fn fail_if_overdue<O: Operation, P: Phase<O>>(
    ctx: &Context,
    id: &O::Id,
    phase: P,
    poll: u32,
    next_action: &str,
) -> Result<Option<String>, WorkflowError> {
    if poll <= ctx.settings.workflow.max_polls {
        return Ok(None);
    }
    let message = format!(
        "the {} step did not finish after {poll} polls",
        phase.name()
    );
    let failure = Failure {
        code: "operation-timed-out",
        message: &message,
        next_action,
    };
    O::fail_step(ctx, id, phase.step(), failure).await.map(Some)
}
