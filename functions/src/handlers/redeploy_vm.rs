//! `RedeployVm`: Service Bus trigger on queue `redeploy-vm`. Deploys the template the restore
//! job wrote into the target resource group, reinstalls ADE on Linux VMs with the settings
//! recorded at protection, and verifies the VM runs with its disks unlocked.
//! See [`crate::workflows::restore::redeploy`].

use crate::context::Context;
use crate::engine::{phase_name, run_step, Workflow};
use crate::handlers::invocation::record;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::restore::{self, RedeployMessage};

pub const NAME: &str = "RedeployVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: RedeployMessage = worker_message(msg)?;
    record("ticket_id", body.ticket_id.as_str());
    let step = phase_name(&body.phase);
    let work = restore::redeploy(ctx, &body, msg);
    let line = run_step(Workflow::Restore, &step, body.poll, work).await?;
    Ok(HandlerOutput::default().log(line))
}
