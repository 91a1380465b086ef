//! A test-only Service Bus handler: [`record_message_receipt`] stores a [`ReceivedOperation`] at
//! `operations/{function}/{messageId}.json`, proof that a message arrived, parsed and reached the
//! state store. The server-protocol tests register it under a test-only function name.

use ade_backup_functions::context::Context;
use ade_backup_functions::handlers::{key_segment, HandlerError, HandlerOutput};
use ade_backup_functions::host::protocol::TriggerInput;
use ade_backup_shared::state;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What [`record_message_receipt`] stores at `operations/{function}/{id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedOperation {
    pub function: String,
    pub status: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub delivery_count: Option<u32>,
    pub enqueued_time: Option<DateTime<Utc>>,
    pub deliveries: u32,
    pub first_received_at: DateTime<Utc>,
    pub last_received_at: DateTime<Utc>,
    pub input: Value,
}

/// The body of a recording Service Bus handler: the body must be a JSON object (anything else is
/// poison — it will never parse), and the receipt is recorded idempotently per MessageId.
pub async fn record_message_receipt(
    function: &'static str,
    input: TriggerInput,
    ctx: &Context,
) -> Result<HandlerOutput, HandlerError> {
    let TriggerInput::ServiceBus(m) = input else {
        return Err(HandlerError::poison(
            "WrongTrigger",
            format!("{function} is bound to a Service Bus queue but received a timer invocation"),
        ));
    };
    let body: Value = m.json().map_err(|e| {
        HandlerError::poison(
            "MalformedBody",
            format!("the message body must be a JSON object: {e}"),
        )
    })?;
    if !body.is_object() {
        return Err(HandlerError::poison(
            "MalformedBody",
            "the message body must be a JSON object",
        ));
    }
    let key = format!(
        "operations/{}/{}.json",
        kebab(function),
        key_segment(&m.message_id)
    );
    let now = ctx.clock.now();
    let stored = state::json::update::<ReceivedOperation, HandlerError, _>(
        ctx.state.as_ref(),
        &key,
        |current| {
            Ok(Some(ReceivedOperation {
                function: function.to_string(),
                status: "received".into(),
                message_id: Some(m.message_id.clone()),
                correlation_id: m.correlation_id.clone(),
                delivery_count: Some(m.delivery_count),
                enqueued_time: m.enqueued_time,
                deliveries: current.map_or(1, |c| c.deliveries + 1),
                first_received_at: current.map_or(now, |c| c.first_received_at),
                last_received_at: now,
                input: body.clone(),
            }))
        },
    )
    .await?;
    Ok(HandlerOutput::default().log(format!(
        "{function}: recorded message {} at {key} (delivery {}, seen {} time(s))",
        m.message_id, m.delivery_count, stored.deliveries
    )))
}

/// `OnVmEncryptionEvent` → `on-vm-encryption-event`.
pub fn kebab(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_case_names() {
        assert_eq!(kebab("OnVmEncryptionEvent"), "on-vm-encryption-event");
        assert_eq!(kebab("PolicySweep"), "policy-sweep");
    }
}
