//! `OnVmEncryptionEvent`: Service Bus trigger on queue `vm-encryption-events` (fed by an Event
//! Grid subscription on the subscriptions' `Microsoft.Resources.ResourceWriteSuccess` events).
//!
//! The event is a hint: the VM is read and classified ([`crate::domain::ade`]), and an ADE VM is
//! handed to the protection workflow ([`crate::workflows::protect::evaluate`]). Irrelevant events
//! are acknowledged with a debug log; malformed ones are poison (dead-lettered with the reason).
//! The queue also carries ade-backup's own "look again" messages for VMs whose encryption was
//! still in progress.

use crate::context::Context;
use crate::domain::events::{self, EventHint};
use crate::engine::{run_step, Workflow};
use crate::handlers::invocation::record;
use crate::handlers::service_bus;
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::protect::{self, Origin, RecheckMessage, RECHECK_KIND};

pub const NAME: &str = "OnVmEncryptionEvent";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let mut out = HandlerOutput::default();
    if let Ok(recheck) = serde_json::from_slice::<RecheckMessage>(&msg.body) {
        if recheck.kind == RECHECK_KIND {
            record("vm_id", &recheck.vm_id.to_string());
            let work = protect::evaluate(ctx, &recheck.vm_id, Origin::Recheck(recheck.attempt));
            let line = run_step(Workflow::Protect, "evaluate", recheck.attempt, work).await?;
            return Ok(out.log(line));
        }
    }
    let hints = events::parse(&msg.body)
        .map_err(|e| HandlerError::poison("InvalidEvent", e.to_string()))?;
    for hint in hints {
        match hint {
            EventHint::Irrelevant { event_id, why } => {
                tracing::debug!(event_id = %event_id, %why, "event ignored");
                out = out.log(format!("event {event_id} ignored: {why}"));
            }
            EventHint::CheckVm { vm, event_id, .. } => {
                record("vm_id", &vm.to_string());
                let work = protect::evaluate(ctx, &vm, Origin::Event(event_id));
                let line = run_step(Workflow::Protect, "evaluate", 0, work).await?;
                tracing::info!(vm = %vm, "{line}");
                out = out.log(line);
            }
        }
    }
    Ok(out)
}
