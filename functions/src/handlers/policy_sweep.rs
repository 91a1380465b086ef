//! `PolicySweep`: timer trigger, NCRONTAB `0 */30 * * * *` (every 30 minutes). Reads the fleet with
//! Resource Graph and enqueues the work that brings every ADE VM to "protected".
//!
//! **Scaffold — logic lands with a later issue (not part of Foundation).** For now the handler
//! only proves the wiring: it parses the `TimerInfo`, records the run at
//! `operations/policy-sweep/{yyyymmddThhmmssZ}.json` and completes.

use crate::context::Context;
use crate::handlers::{HandlerError, HandlerOutput, ReceivedOperation};
use crate::host::protocol::TriggerInput;
use ade_backup_shared::state;

pub const NAME: &str = "PolicySweep";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let TriggerInput::Timer(timer) = input else {
        return Err(HandlerError::poison(
            "WrongTrigger",
            "PolicySweep is a timer function but received a Service Bus message",
        ));
    };
    let now = ctx.clock.now();
    let key = format!(
        "operations/policy-sweep/{}.json",
        now.format("%Y%m%dT%H%M%SZ")
    );
    let record = ReceivedOperation {
        function: NAME.to_string(),
        status: "received".into(),
        message_id: None,
        correlation_id: None,
        delivery_count: None,
        enqueued_time: None,
        deliveries: 1,
        first_received_at: now,
        last_received_at: now,
        input: serde_json::json!({
            "isPastDue": timer.is_past_due,
            "last": timer.last,
            "next": timer.next,
        }),
    };
    match state::json::create(ctx.state.as_ref(), &key, &record).await {
        Ok(_) => {}
        // Two firings in the same second (host restart + catch-up) are one sweep.
        Err(state::StateError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut out = HandlerOutput::default().log(format!("PolicySweep: recorded run at {key}"));
    if timer.is_past_due {
        out = out.log("PolicySweep: this run is past due (the host missed a schedule slot)");
    }
    Ok(out)
}
