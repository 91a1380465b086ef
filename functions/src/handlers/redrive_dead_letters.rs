//! `RedriveDeadLetters`: timer trigger, NCRONTAB `0 */5 * * * *` (every 5 minutes). Gives messages
//! that Service Bus dead-lettered after `maxDeliveryCount` failed deliveries a capped number of
//! further attempts ([`crate::workflows::redrive`]); poison and spent messages stay for a human.
//!
//! A run always completes: what it could not do (a queue it could not read, a record it could not
//! write) is in its log and `ReturnValue`, and the next tick tries again.

use crate::context::Context;
use crate::handlers::{HandlerError, HandlerOutput, Registry};
use crate::trigger::TriggerInput;
use crate::workflows::redrive;

pub const NAME: &str = "RedriveDeadLetters";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let TriggerInput::Timer(_) = input else {
        return Err(HandlerError::poison(
            "WrongTrigger",
            "RedriveDeadLetters is a timer function but received a Service Bus message",
        ));
    };
    let registry = Registry::production();
    let summary = redrive::run(ctx, registry.specs()).await;
    let mut out = HandlerOutput::default();
    out = match summary.skipped {
        Some(why) => out.log(format!("RedriveDeadLetters: skipped: {why}")),
        None => out.log(format!(
            "RedriveDeadLetters: {} dead letters looked at; {} completed, {} failed again; left {:?}",
            summary.examined,
            summary.completed.len(),
            summary.failed.len(),
            summary.left
        )),
    };
    for e in &summary.errors {
        out = out.log(format!("RedriveDeadLetters: could not handle {e}"));
    }
    out.return_value = serde_json::to_value(&summary).unwrap_or(serde_json::Value::Null);
    Ok(out)
}
