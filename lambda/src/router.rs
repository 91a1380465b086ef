//! The one Lambda function: routes an invocation's event to the same handler registry and
//! dispatch core as the Azure Functions host.
//!
//! - An SQS batch (`Records` with `eventSource: aws:sqs`): each record's queue is its
//!   `eventSourceARN` mapped back to a logical queue name ([`QueueMap`]), and the registry's
//!   function bound to that queue handles it. The answer is an `SqsBatchResponse` naming the
//!   records to retry in `batchItemFailures` (the event source mapping must enable
//!   `ReportBatchItemFailures`), so one failing record does not redeliver the batch:
//!   - completed → not listed (SQS deletes it);
//!   - transient failure → listed: SQS makes it visible again after the visibility timeout, and
//!     the queue's redrive policy moves it to the DLQ after `maxReceiveCount` receives (the
//!     dispatcher records the last error at `deadletters/…` on the last allowed receive, as for
//!     Service Bus, when `ADE_BACKUP_MAX_DELIVERY_COUNT` equals `maxReceiveCount`);
//!   - poison → the dispatcher has recorded the reason at `deadletters/{queue}/{messageId}.json`;
//!     the router then sends the message to the queue's DLQ itself, with the reason as message
//!     attributes, and does not list it. Why explicitly rather than by redrive: redrive would
//!     redeliver a message known to be unprocessable `maxReceiveCount` times (minutes to hours of
//!     visibility timeouts) and the DLQ copy would not say why; sending it costs one
//!     `sqs:SendMessage` on the DLQ. If that send fails the record is listed, and redrive remains
//!     the backstop;
//!   - arrived before its `ade-due-at` (a delay chain hop, [`crate::delay`]) → sent on with the
//!     rest of its delay, not handled.
//! - An EventBridge Scheduler (or EventBridge rule) "Scheduled Event" → the timer function its
//!   `detail.function` names ([`timer_function`]; `infra/aws/template.yaml`'s schedules set it),
//!   the policy sweep when it names none. A name that is not one of the registry's timer functions
//!   is refused.
//!
//! Anything else is an invocation error (nothing to acknowledge item by item).

use crate::delay;
use crate::queues::QueueMap;
use crate::sqs_sender::attr;
use ade_backup_functions::context::Context;
use ade_backup_functions::handlers::{dispatch_invocation, FunctionSpec, Outcome, Registry};
use ade_backup_functions::trigger::{ServiceBusMessage, TimerInfo, TriggerInput, TriggerSpec};
use ade_backup_shared::messaging::{MessageSender, OutboundMessage};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The timer function of a schedule event whose `detail` names none.
pub const DEFAULT_SCHEDULED_FUNCTION: &str = "PolicySweep";
/// EventBridge `detail-type` of schedule events.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
/// A schedule event older than this counts as past due (`TimerInfo.is_past_due`).
const PAST_DUE_AFTER: chrono::Duration = chrono::Duration::minutes(5);
/// How much of a poison description goes into the DLQ message's attribute.
const MAX_DESCRIPTION_CHARS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("the event is neither an SQS batch nor a scheduled event: {0}")]
    UnknownEvent(String),
    #[error("SQS record {index} has no messageId, so it cannot be reported alone")]
    RecordWithoutId { index: usize },
    #[error("scheduled event: {0}")]
    UnknownTimerFunction(String),
    #[error("the scheduled function {function} failed: {error}")]
    Timer {
        function: &'static str,
        error: String,
    },
}

/// How one SQS record ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Completed,
    /// Sent on towards its due time.
    Deferred,
    /// Recorded and sent to the DLQ.
    DeadLettered,
    /// Listed in `batchItemFailures`, with why.
    Retry(String),
}

/// The router: registry, queue map, handler context and the DLQ sender.
pub struct Router {
    pub registry: Registry,
    pub queues: QueueMap,
    pub ctx: Context,
    /// Sends to the DLQ of a logical queue (the map of `ADE_BACKUP_SQS_DEAD_LETTER_QUEUES`).
    pub dead_letters: Arc<dyn MessageSender>,
}

fn spec_for_queue<'a>(registry: &'a Registry, queue: &str) -> Option<&'a FunctionSpec> {
    registry
        .specs()
        .find(|s| matches!(s.trigger, TriggerSpec::ServiceBus { queue: q, .. } if q == queue))
}

fn string_attr<'a>(m: &'a SqsMessage, name: &str) -> Option<&'a str> {
    m.message_attributes
        .get(name)
        .and_then(|a| a.string_value.as_deref())
}

/// The handler's view of an SQS record: the fields a Service Bus message has.
pub fn to_trigger_message(queue: &str, sqs_id: &str, m: &SqsMessage) -> ServiceBusMessage {
    let mut user_properties = Map::new();
    for (k, v) in &m.message_attributes {
        if let Some(s) = &v.string_value {
            user_properties.insert(k.clone(), Value::String(s.clone()));
        }
    }
    let millis = |name: &str| {
        m.attributes
            .get(name)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
    };
    ServiceBusMessage {
        queue: queue.to_string(),
        body: m.body.clone().unwrap_or_default().into_bytes(),
        message_id: string_attr(m, attr::MESSAGE_ID)
            .unwrap_or(sqs_id)
            .to_string(),
        delivery_count: m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        correlation_id: string_attr(m, attr::CORRELATION_ID).map(str::to_string),
        content_type: string_attr(m, attr::CONTENT_TYPE).map(str::to_string),
        subject: None,
        enqueued_time: millis("SentTimestamp"),
        expires_at: None,
        sequence_number: m
            .attributes
            .get("SequenceNumber")
            .and_then(|v| v.parse().ok()),
        user_properties,
    }
}

/// The outbound copy of a received message (for a chain hop or the DLQ).
fn resend(message: &ServiceBusMessage, due: Option<DateTime<Utc>>) -> OutboundMessage {
    let mut out = OutboundMessage {
        queue: message.queue.clone(),
        message_id: message.message_id.clone(),
        correlation_id: message.correlation_id.clone(),
        scheduled_enqueue_time: due,
        content_type: message
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".into()),
        body: message.body.clone(),
        properties: Default::default(),
    };
    for (k, v) in &message.user_properties {
        if let (false, Some(s)) = (k.starts_with("ade-"), v.as_str()) {
            out.properties.insert(k.clone(), s.to_string());
        }
    }
    out
}

#[allow(clippy::needless_update)] // `other` exists only with aws_lambda_events' catch-all-fields
fn failure(id: String) -> BatchItemFailure {
    BatchItemFailure {
        item_identifier: id,
        ..Default::default()
    }
}

impl Router {
    /// Handles one invocation's event; returns the JSON answer for the runtime.
    pub async fn handle(&self, event: Value, request_id: &str) -> Result<Value, RouterError> {
        if event.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event)
                .map_err(|e| RouterError::UnknownEvent(e.to_string()))?;
            let response = self.handle_batch(batch, request_id).await?;
            return serde_json::to_value(response)
                .map_err(|e| RouterError::UnknownEvent(e.to_string()));
        }
        if event.get("detail-type").and_then(Value::as_str) == Some(SCHEDULED_EVENT) {
            let scheduled: EventBridgeEvent = serde_json::from_value(event)
                .map_err(|e| RouterError::UnknownEvent(e.to_string()))?;
            return self.handle_schedule(scheduled, request_id).await;
        }
        Err(RouterError::UnknownEvent(
            "expected `Records` (SQS) or `detail-type: Scheduled Event`".into(),
        ))
    }

    /// Every record of the batch, concurrently; the failures to retry.
    pub async fn handle_batch(
        &self,
        batch: SqsEvent,
        request_id: &str,
    ) -> Result<SqsBatchResponse, RouterError> {
        for (index, r) in batch.records.iter().enumerate() {
            if r.message_id.is_none() {
                return Err(RouterError::RecordWithoutId { index });
            }
        }
        let outcomes = futures::future::join_all(
            batch
                .records
                .iter()
                .map(|r| self.handle_record(r, request_id)),
        )
        .await;
        let mut response = SqsBatchResponse::default();
        for (record, outcome) in batch.records.iter().zip(outcomes) {
            if let (RecordOutcome::Retry(why), Some(id)) = (outcome, &record.message_id) {
                tracing::warn!(sqs_message_id = %id, "SQS record will be retried: {why}");
                response.batch_item_failures.push(failure(id.clone()));
            }
        }
        Ok(response)
    }

    /// One record: defer, dispatch, dead-letter, or retry.
    pub async fn handle_record(&self, record: &SqsMessage, request_id: &str) -> RecordOutcome {
        let sqs_id = record.message_id.as_deref().unwrap_or_default();
        let queue = match record
            .event_source_arn
            .as_deref()
            .map(|arn| self.queues.logical_for_arn(arn))
        {
            Some(Ok(q)) => q.to_string(),
            Some(Err(e)) => return RecordOutcome::Retry(e.to_string()),
            None => return RecordOutcome::Retry("the record has no eventSourceARN".into()),
        };
        let Some(spec) = spec_for_queue(&self.registry, &queue) else {
            return RecordOutcome::Retry(format!("no function is bound to queue {queue:?}"));
        };
        let message = to_trigger_message(&queue, sqs_id, record);
        match delay::early(string_attr(record, attr::DUE_AT), self.ctx.clock.now()) {
            Ok(Some(due)) => {
                return match self.ctx.sender.send(resend(&message, Some(due))).await {
                    Ok(()) => RecordOutcome::Deferred,
                    Err(e) => RecordOutcome::Retry(format!("could not send on: {e}")),
                }
            }
            Ok(None) => {}
            // An unreadable due time: handle it now rather than hold it forever.
            Err(e) => tracing::warn!(queue = %queue, "{e}; handling the message now"),
        }
        let input = TriggerInput::ServiceBus(message.clone());
        match dispatch_invocation(spec, input, &self.ctx, Some(request_id)).await {
            Outcome::Completed(_) => RecordOutcome::Completed,
            Outcome::Failed {
                dead_letter: Some(dl),
                ..
            } => {
                self.dead_letter(&message, &dl.reason, &dl.description)
                    .await
            }
            Outcome::Failed { error, .. } => RecordOutcome::Retry(error.to_string()),
        }
    }

    /// Sends a poison message to its queue's DLQ with the reason (already recorded in state).
    async fn dead_letter(
        &self,
        message: &ServiceBusMessage,
        reason: &str,
        description: &str,
    ) -> RecordOutcome {
        let description: String = description.chars().take(MAX_DESCRIPTION_CHARS).collect();
        let mut out = resend(message, None);
        out.properties
            .retain(|k, _| k.eq_ignore_ascii_case(attr::TRACEPARENT));
        let out = out
            .with_property("DeadLetterReason", reason)
            .with_property("DeadLetterErrorDescription", description);
        match self.dead_letters.send(out).await {
            Ok(()) => RecordOutcome::DeadLettered,
            Err(e) => RecordOutcome::Retry(format!(
                "poison ({reason}) but the DLQ send failed, left to the redrive policy: {e}"
            )),
        }
    }

    async fn handle_schedule(
        &self,
        event: EventBridgeEvent,
        request_id: &str,
    ) -> Result<Value, RouterError> {
        let spec = timer_function(&self.registry, &event.detail)?;
        let now = self.ctx.clock.now();
        let timer = TimerInfo {
            is_past_due: event.time.is_some_and(|t| now - t > PAST_DUE_AFTER),
            adjust_for_dst: None,
            last: None,
            next: None,
            last_updated: event.time,
        };
        let outcome = dispatch_invocation(
            spec,
            TriggerInput::Timer(timer),
            &self.ctx,
            Some(request_id),
        )
        .await;
        match outcome {
            Outcome::Completed(out) => Ok(serde_json::json!({
                "function": spec.name,
                "logs": out.logs,
            })),
            Outcome::Failed { error, .. } => Err(RouterError::Timer {
                function: spec.name,
                error: error.to_string(),
            }),
        }
    }
}

/// The timer function a schedule event's `detail.function` names (see the module docs).
pub fn timer_function<'r>(
    registry: &'r Registry,
    detail: &Value,
) -> Result<&'r FunctionSpec, RouterError> {
    let name = match detail.get("function") {
        None | Some(Value::Null) => DEFAULT_SCHEDULED_FUNCTION,
        Some(Value::String(name)) => name.as_str(),
        Some(other) => {
            return Err(RouterError::UnknownTimerFunction(format!(
                "detail.function must be a string, got {other}"
            )))
        }
    };
    registry
        .get(name)
        .filter(|spec| matches!(spec.trigger, TriggerSpec::Timer { .. }))
        .ok_or_else(|| {
            let timers: Vec<&str> = registry
                .specs()
                .filter(|spec| matches!(spec.trigger, TriggerSpec::Timer { .. }))
                .map(|spec| spec.name)
                .collect();
            RouterError::UnknownTimerFunction(format!(
                "detail.function {name:?} is not a timer function of this app (one of {timers:?})"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schedule_runs_the_timer_function_it_names_and_the_sweep_by_default() {
        let registry = Registry::production();
        let pick = |detail: Value| timer_function(&registry, &detail).map(|s| s.name);
        assert_eq!(pick(json!({})).expect("default"), "PolicySweep");
        assert_eq!(
            pick(json!({"function": null})).expect("null"),
            "PolicySweep"
        );
        assert_eq!(
            pick(json!({"function": "DrillSchedule"})).expect("drills"),
            "DrillSchedule"
        );
        // A queue-triggered function, an unknown name and a non-string are refused, by name.
        for (detail, says) in [
            (
                json!({"function": "BackupVm"}),
                "\"BackupVm\" is not a timer function",
            ),
            (
                json!({"function": "../x"}),
                "\"../x\" is not a timer function",
            ),
            (json!({"function": 7}), "must be a string, got 7"),
        ] {
            let err = pick(detail).expect_err("refused").to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
