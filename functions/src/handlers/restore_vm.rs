//! `RestoreVm`: Service Bus trigger on queue `restore-vm`. Restores the disks of an ADE VM from a recovery point.
//!
//! **Scaffold — logic lands with a later issue (not part of Foundation).** For now the handler
//! only proves the wiring: it parses the message (JSON object body + metadata), records the
//! receipt at `operations/restore-vm/{messageId}.json` and completes. A body
//! that is not a JSON object is poison (`MalformedBody`).

use crate::context::Context;
use crate::handlers::{record_message_receipt, HandlerError, HandlerOutput};
use crate::host::protocol::TriggerInput;

pub const NAME: &str = "RestoreVm";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    record_message_receipt(NAME, input, ctx).await
}
