//! `RestoreVm`: Service Bus trigger on queue `restore-vm`. Starts the restore-disks job of an
//! accepted restore (once, even across crashes and redeliveries), follows it with scheduled
//! follow-up messages and hands over to `RedeployVm` when the disks and template are restored.
//! See [`crate::workflows::restore::restore_vm`].

use crate::context::Context;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::restore::{self, RestoreVmMessage};

pub const NAME: &str = "RestoreVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: RestoreVmMessage = worker_message(msg)?;
    let line = restore::restore_vm(ctx, &body, msg).await?;
    Ok(HandlerOutput::default().log(line))
}
