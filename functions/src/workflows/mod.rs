//! The multi-step workflows behind the handlers. Handlers parse their trigger and call in here;
//! every step reads its operation document, claims the step, does one Azure call, records what
//! happened and sends the next message. Nothing sleeps: waits are scheduled messages.

pub mod protect;
pub mod restore;
pub mod sweep;

use crate::context::Context;
use crate::handlers::HandlerError;
use crate::host::protocol::{ServiceBusMessage, TriggerInput};
use ade_backup_shared::arm::ArmError;
use ade_backup_shared::messaging::{MessagingError, OutboundMessage};
use serde::Serialize;

/// The Service Bus message of a queue-triggered handler.
pub fn service_bus(input: &TriggerInput) -> Result<&ServiceBusMessage, HandlerError> {
    match input {
        TriggerInput::ServiceBus(m) => Ok(m),
        TriggerInput::Timer(_) => Err(HandlerError::poison(
            "WrongTrigger",
            "this function takes Service Bus messages, not timer ticks",
        )),
    }
}

/// Decodes a worker message body; a body that does not fit is poison.
pub fn worker_message<T: serde::de::DeserializeOwned>(
    msg: &ServiceBusMessage,
) -> Result<T, HandlerError> {
    msg.json::<T>().map_err(|e| {
        HandlerError::poison(
            "InvalidWorkerMessage",
            format!(
                "message {} does not match the worker message format: {e}",
                msg.message_id
            ),
        )
    })
}

/// ARM failures seen from a handler: transient ones are retried by redelivery.
pub fn arm_transient(what: &str, e: &ArmError) -> HandlerError {
    HandlerError::Transient(format!("{what}: {e}"))
}

pub fn messaging_error(e: MessagingError) -> HandlerError {
    match e {
        MessagingError::Encode(m) => HandlerError::poison("EncodeFailed", m),
        other => HandlerError::Transient(format!("could not send a message: {other}")),
    }
}

/// Sends a JSON message with a deterministic id, optionally delayed.
pub async fn send<T: Serialize>(
    ctx: &Context,
    queue: &str,
    message_id: &str,
    body: &T,
    delay: Option<std::time::Duration>,
    correlation_id: Option<&str>,
) -> Result<(), HandlerError> {
    let mut m = OutboundMessage::json(queue, message_id, body).map_err(messaging_error)?;
    if let Some(c) = correlation_id {
        m = m.with_correlation_id(c);
    }
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        let at = ctx.clock.now()
            + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::seconds(60));
        m = m.scheduled_at(at);
    }
    ctx.sender.send(m).await.map_err(messaging_error)
}

/// Whether an ARM error says "you may not do this" (our identity lacks a permission).
pub fn is_forbidden(e: &ArmError) -> bool {
    matches!(e.status(), Some(401) | Some(403))
        || e.code().is_some_and(|c| {
            c.eq_ignore_ascii_case("AuthorizationFailed")
                || c.eq_ignore_ascii_case("Forbidden")
                || c.eq_ignore_ascii_case("LinkedAuthorizationFailed")
        })
}

/// Who holds a step claim: this delivery of this message. A redelivery after a crash is a new
/// holder, so it waits for the crashed holder's lease to expire instead of racing a live one.
pub fn claimant(msg: &ServiceBusMessage) -> String {
    format!("{}#{}", msg.message_id, msg.delivery_count)
}

/// Sends the same message again, to arrive at `at` (a step is held by a live invocation: look
/// again when its lease ends). Completing the current delivery then loses nothing.
pub async fn redeliver_at(
    ctx: &Context,
    msg: &ServiceBusMessage,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), HandlerError> {
    let id = format!("{}~retry-{}", msg.message_id, at.timestamp_millis());
    let mut m = OutboundMessage {
        queue: msg.queue.clone(),
        message_id: id,
        correlation_id: msg.correlation_id.clone(),
        scheduled_enqueue_time: Some(at),
        content_type: msg
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".to_string()),
        body: msg.body.clone(),
        properties: Default::default(),
    };
    if m.message_id.len() > 128 {
        // Service Bus MessageId limit: keep it deterministic but short.
        m.message_id = format!(
            "retry-{}",
            ade_backup_shared::ids::deterministic_uuid(&[
                &msg.message_id,
                &at.timestamp_millis().to_string()
            ])
        );
    }
    ctx.sender.send(m).await.map_err(messaging_error)
}
