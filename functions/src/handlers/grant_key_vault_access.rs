//! `GrantKeyVaultAccess`: Service Bus trigger on queue `grant-key-vault-access`. Grants the Backup Management Service access to the VM's Key Vault (access policy or RBAC role).
//!
//! **Scaffold — logic lands with a later issue (not part of Foundation).** For now the handler
//! only proves the wiring: it parses the message (JSON object body + metadata), records the
//! receipt at `operations/grant-key-vault-access/{messageId}.json` and completes. A body
//! that is not a JSON object is poison (`MalformedBody`).

use crate::context::Context;
use crate::handlers::{record_message_receipt, HandlerError, HandlerOutput};
use crate::host::protocol::TriggerInput;

pub const NAME: &str = "GrantKeyVaultAccess";

pub async fn handle(input: TriggerInput, ctx: &Context) -> Result<HandlerOutput, HandlerError> {
    record_message_receipt(NAME, input, ctx).await
}
