//! `BackupVm`: Service Bus trigger on queue `backup-vm`.
//!
//! Enables protection (refreshing containers when the vault cannot see the VM yet), triggers the
//! first backup and tracks the job with scheduled follow-up messages until a recovery point exists.
//! See [`crate::workflows::protect::backup`].

use crate::context::Context;
use crate::engine::{phase_name, run_step, Workflow};
use crate::handlers::invocation::record;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::protect::{self, BackupMessage};

pub const NAME: &str = "BackupVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: BackupMessage = worker_message(msg)?;
    record("operation_id", &body.operation_id);
    let step = phase_name(&body.phase);
    let work = protect::backup(ctx, &body, msg);
    let line = run_step(Workflow::Protect, &step, body.poll, work).await?;
    Ok(HandlerOutput::default().log(line))
}
