//! `BackupVm`: Service Bus trigger on queue `backup-vm`.
//!
//! Enables protection (refreshing containers when the vault cannot see the VM yet), triggers the
//! first backup and tracks the job with scheduled follow-up messages until a recovery point exists.
//! See [`crate::workflows::protect::backup`].

use crate::context::Context;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::protect::{self, BackupMessage};

pub const NAME: &str = "BackupVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: BackupMessage = worker_message(msg)?;
    let line = protect::backup(ctx, &body, msg).await?;
    Ok(HandlerOutput::default().log(line))
}
