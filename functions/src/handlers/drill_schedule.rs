//! `DrillSchedule`: timer trigger, NCRONTAB `0 0 3 * * *` (daily at 03:00 UTC). Resumes stalled
//! restore drills and starts the day's sample (see [`crate::workflows::drill::schedule`]): the
//! cadence per VM is `ADE_BACKUP_DRILL_PERIOD_DAYS`, the caps `ADE_BACKUP_DRILL_MAX_CONCURRENT`
//! and `ADE_BACKUP_DRILL_DAILY_CAP`. Without `ADE_BACKUP_DRILL_TARGETS` it starts nothing.

use crate::context::Context;
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::drill;

pub const NAME: &str = "DrillSchedule";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let TriggerInput::Timer(_) = input else {
        return Err(HandlerError::poison(
            "WrongTrigger",
            "DrillSchedule is a timer function but received a Service Bus message",
        ));
    };
    // A timer run has no message to dead-letter: a failure is "try again next tick".
    let outcome = drill::run_schedule(ctx, None)
        .await
        .map_err(|e| HandlerError::Transient(crate::engine::chain(&e)))?;
    let mut out = HandlerOutput::default().log(format!(
        "DrillSchedule: {} started, {} resumed; {} candidate VM(s), {} running, {} started today, room {}",
        outcome.started.len(),
        outcome.resumed.len(),
        outcome.candidates,
        outcome.running,
        outcome.started_today,
        outcome.room
    ));
    out.return_value = serde_json::to_value(&outcome).unwrap_or_default();
    Ok(out)
}
