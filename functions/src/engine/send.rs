//! Outbound messages of a workflow: the next phase of an operation (deterministic `MessageId`, so
//! a redelivered step re-sends the same message and Service Bus duplicate detection drops it),
//! the same message again later ("a live invocation holds this step: look again when its lease
//! ends"), and the claimant identity of a delivery.

use super::{Operation, WorkflowError};
use crate::context::Context;
use crate::trigger::ServiceBusMessage;
use ade_backup_shared::messaging::OutboundMessage;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

/// A phase of an operation's worker: sending it is the workflow's (its message body and id are
/// part of the wire format), naming it is for log lines and timeouts.
pub trait Phase<O: Operation>: Copy + Send + Sync {
    fn name(self) -> &'static str;
    /// The step this phase works on (a timed-out phase fails its step).
    fn step(self) -> O::Step;
    /// Sends this phase of `op`, the `poll`-th time, after `delay`.
    fn send(
        self,
        ctx: &Context,
        op: &O,
        poll: u32,
        delay: Option<Duration>,
    ) -> impl Future<Output = Result<(), WorkflowError>> + Send;
}

/// Sends a JSON message with a deterministic id, optionally delayed.
pub async fn send_json<T: Serialize>(
    ctx: &Context,
    queue: &str,
    message_id: &str,
    body: &T,
    delay: Option<Duration>,
    correlation_id: Option<&str>,
) -> Result<(), WorkflowError> {
    let mut m = OutboundMessage::json(queue, message_id, body)?;
    if let Some(c) = correlation_id {
        m = m.with_correlation_id(c);
    }
    if let Some(d) = delay.filter(|d| !d.is_zero()) {
        let at = ctx.clock.now()
            + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::seconds(60));
        m = m.scheduled_at(at);
    }
    Ok(ctx.sender.send(m).await?)
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
) -> Result<(), WorkflowError> {
    let mut id = format!("{}~retry-{}", msg.message_id, at.timestamp_millis());
    if id.len() > 128 {
        // Service Bus MessageId limit: keep it deterministic but short.
        id = format!(
            "retry-{}",
            ade_backup_shared::ids::deterministic_uuid(&[
                &msg.message_id,
                &at.timestamp_millis().to_string()
            ])
        );
    }
    let m = OutboundMessage {
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
    Ok(ctx.sender.send(m).await?)
}

/// The delay before polling a long-running operation again: Azure's `Retry-After` wins, but never
/// beyond our own interval (accelerated runs, the simulator).
pub fn poll_delay(ctx: &Context, retry_after: Option<Duration>) -> Duration {
    let base = ctx.settings.workflow.poll_interval;
    match retry_after {
        Some(ra) => ra.min(base.max(Duration::from_millis(1))),
        None => base,
    }
}
