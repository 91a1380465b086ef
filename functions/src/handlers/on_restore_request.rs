//! `OnRestoreRequest`: Service Bus trigger on queue `restore-requests`. A ticketing system asks
//! for the restore of an ADE VM (`schemas/restore-request.v1.schema.json`, docs/restore.md).
//!
//! The body is parsed here ([`restore_request::parse`]); the rules that need Azure, idempotency
//! by ticket id and the answer to `replyTo` are in [`crate::workflows::restore::submit`].
//! A request with a readable ticket id is always answered (`rejected` with the field and rule);
//! only a message without one is poison (dead-lettered with the reason).

use crate::context::Context;
use crate::domain::restore_request;
use crate::engine::{run_step, Workflow};
use crate::handlers::invocation::record;
use crate::handlers::service_bus;
use crate::handlers::{HandlerError, HandlerOutput};
use crate::trigger::TriggerInput;
use crate::workflows::restore;

pub const NAME: &str = "OnRestoreRequest";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    let msg = service_bus(&input)?;
    let parsed = restore_request::parse(&msg.body);
    if let Some(ticket) = restore_request::peek_ticket_id(&msg.body) {
        record("ticket_id", ticket.as_str());
    }
    let line = run_step(
        Workflow::Restore,
        "submit",
        0,
        restore::submit(ctx, parsed, &msg.body),
    )
    .await?;
    tracing::info!(message_id = %msg.message_id, "{line}");
    Ok(HandlerOutput::default().log(line))
}
