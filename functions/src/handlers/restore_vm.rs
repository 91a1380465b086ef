//! `RestoreVm`: Service Bus trigger on queue `restore-vm`. Starts the restore-disks job of an
//! accepted restore (once, even across crashes and redeliveries), follows it with scheduled
//! follow-up messages and hands over to `RedeployVm` when the disks and template are restored.
//! See [`crate::workflows::restore::restore_vm`].

use crate::context::Context;
use crate::engine::{phase_name, run_step, Workflow};
use crate::handlers::invocation::record;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::restore::{self, RestoreVmMessage};

pub const NAME: &str = "RestoreVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: RestoreVmMessage = worker_message(msg)?;
    record("ticket_id", body.ticket_id.as_str());
    let step = phase_name(&body.phase);
    let work = restore::restore_vm(ctx, &body, msg);
    let line = run_step(Workflow::Restore, &step, body.poll, work).await?;
    Ok(HandlerOutput::default().log(line))
}
