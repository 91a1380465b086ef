//! `GrantKeyVaultAccess`: Service Bus trigger on queue `grant-key-vault-access`.
//!
//! Gives the Backup Management Service exactly the Key Vault access Azure Backup documents for the
//! VM's ADE mode (access policy merge, or least-privilege custom role on RBAC vaults), skipping the
//! write when an equal or broader grant exists, then sends `BackupVm`. See
//! [`crate::workflows::protect::grant`].

use crate::context::Context;
use crate::engine::{run_step, Workflow};
use crate::handlers::invocation::record;
use crate::handlers::{service_bus, worker_message};
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::protect::{self, GrantMessage};

pub const NAME: &str = "GrantKeyVaultAccess";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let body: GrantMessage = worker_message(msg)?;
    record("operation_id", &body.operation_id);
    let work = protect::grant(ctx, &body, msg);
    let line = run_step(Workflow::Protect, "grant-key-vault-access", 0, work).await?;
    Ok(HandlerOutput::default().log(line))
}
