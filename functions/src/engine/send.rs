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

/// Who holds a step claim: this delivery of this message, `{MessageId}#{DeliveryCount}@{SequenceNumber}`.
/// A redelivery after a crash is a new holder (its delivery count), so it waits for the crashed
/// holder's lease to expire instead of racing a live one. Two copies of one `MessageId` (sent
/// twice with no duplicate detection between them) are distinct holders by their sequence
/// numbers, which Service Bus assigns to each enqueued message and keeps across its redeliveries
/// (without the sequence number, two such copies would both take the step: issue 15).
pub fn claimant(msg: &ServiceBusMessage) -> String {
    match msg.sequence_number {
        Some(seq) => format!("{}#{}@{seq}", msg.message_id, msg.delivery_count),
        None => format!("{}#{}", msg.message_id, msg.delivery_count),
    }
}

/// Whether the claimant `holder` is another copy of `msg`: the same `MessageId` enqueued again
/// (another sequence number), not an earlier delivery of this very message. Such a copy is
/// redundant while the holder lives; if the holder's invocation dies, Service Bus redelivers the
/// holder's own message.
pub fn is_other_copy(holder: &str, msg: &ServiceBusMessage) -> bool {
    let Some(seq) = msg.sequence_number else {
        return false;
    };
    let Some(rest) = holder
        .strip_prefix(msg.message_id.as_str())
        .and_then(|r| r.strip_prefix('#'))
    else {
        return false;
    };
    rest.split_once('@').is_some_and(|(count, s)| {
        count.parse::<u32>().is_ok() && s.parse::<i64>().is_ok_and(|s| s != seq)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, count: u32, seq: Option<i64>) -> ServiceBusMessage {
        ServiceBusMessage {
            queue: "backup-vm".into(),
            body: b"{}".to_vec(),
            message_id: id.to_string(),
            delivery_count: count,
            correlation_id: None,
            content_type: None,
            subject: None,
            enqueued_time: None,
            expires_at: None,
            sequence_number: seq,
            user_properties: Default::default(),
        }
    }

    #[test]
    fn two_copies_of_one_message_id_are_two_claimants() {
        let (a, b) = (delivery("m", 1, Some(5)), delivery("m", 1, Some(6)));
        assert_ne!(claimant(&a), claimant(&b));
        assert!(is_other_copy(&claimant(&a), &b));
        assert!(is_other_copy(&claimant(&b), &a));
    }

    #[test]
    fn an_earlier_delivery_of_the_same_message_is_not_another_copy() {
        let (first, again) = (delivery("m", 1, Some(5)), delivery("m", 2, Some(5)));
        assert_ne!(claimant(&first), claimant(&again));
        assert!(!is_other_copy(&claimant(&first), &again));
        // Another message, or an unknown sequence number, is never taken for a copy.
        assert!(!is_other_copy(
            &claimant(&delivery("n", 1, Some(6))),
            &first
        ));
        assert!(!is_other_copy("m#1", &delivery("m", 1, None)));
        assert!(!is_other_copy("m#1@x", &first));
        assert_eq!(claimant(&delivery("m", 3, None)), "m#3");
    }
}
