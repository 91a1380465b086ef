//! The dead-letter redrive: a capped number of further attempts for messages Service Bus
//! dead-lettered after `maxDeliveryCount` failed deliveries, so a crash storm or a long Azure
//! outage ends without an operator moving messages by hand.
//!
//! Each run (the `RedriveDeadLetters` timer) walks the dead-letter sub-queue of every queue this
//! app's functions read, peek-locking one message at a time, and [`decide`]s:
//! - **redrive**: the attempt is recorded at `redrives/{queue}/{messageId}.json` *first* (so an
//!   attempt a crash cuts short still counts: a message that kills the process cannot loop), then
//!   the message is dispatched in this process to the function that reads its queue, exactly as a
//!   delivery would be (same handler, same classification, the message's own trace context), with
//!   a delivery count past every delivery the queue made. Completed: the dead letter is deleted. Failed again: it
//!   is unlocked and stays, and the next attempt waits `backoff × 2^(attempts-1)`. Judged poison:
//!   it stays for a human, with the verdict at `deadletters/`.
//! - **leave**: unlocked at the end of the queue's walk (held until then so the walk moves on).
//!
//! Nothing is re-sent: the redrive needs only the Data Receiver role the triggers already have on
//! each queue (which covers its `$DeadLetterQueue`), never Data Sender on the queues that outside
//! systems write (`vm-encryption-events`, `restore-requests`). Handlers are idempotent, so an
//! attempt that repeats work (a delete lost after completing, a lock that expired meanwhile)
//! changes nothing in Azure.

mod decide;

pub use decide::{decide, next_attempt_at, Decision, Facts, Leave, MAX_DELIVERY_COUNT_EXCEEDED};

use crate::context::Context;
use crate::handlers::{dispatch_invocation, DeadLetterRecord, Disposition, FunctionSpec, Outcome};
use crate::records::{dead_letter_key, redrive_key, RedriveOutcome, RedriveRecord};
use crate::trigger::{ServiceBusMessage, TriggerInput, TriggerSpec};
use ade_backup_shared::messaging::{
    DeadLetterReceiver, DeadLetteredMessage, MessagingError, DEAD_LETTER_DESCRIPTION,
    DEAD_LETTER_REASON,
};
use ade_backup_shared::state::{self, StateError};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// A run stops starting attempts after this long, well inside the 5-minute schedule.
pub const RUN_BUDGET: Duration = Duration::from_secs(240);

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedriveSummary {
    /// Dead letters looked at.
    pub examined: u32,
    /// `queue/messageId` of each message whose attempt completed (dead letter deleted).
    pub completed: Vec<String>,
    /// `queue/messageId` of each message that failed again.
    pub failed: Vec<String>,
    /// Dead letters left in place, by [`Leave`] reason.
    pub left: BTreeMap<&'static str, u32>,
    /// Queues or messages the run could not handle (broker or state errors), redacted.
    pub errors: Vec<String>,
    /// Why nothing was looked at, when so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
}

/// One run over every Service Bus-triggered function of `functions`.
pub async fn run<'a>(
    ctx: &Context,
    functions: impl IntoIterator<Item = &'a FunctionSpec>,
) -> RedriveSummary {
    let mut summary = RedriveSummary::default();
    let Some(receiver) = ctx.dead_letters.clone() else {
        summary.skipped = Some("no dead-letter receiver is configured");
        return summary;
    };
    if ctx.settings.workflow.redrive.max_attempts == 0 {
        summary.skipped = Some("ADE_BACKUP_REDRIVE_MAX_ATTEMPTS is 0");
        return summary;
    }
    let started = Instant::now();
    let mut budget = ctx.settings.workflow.redrive.max_per_run;
    for spec in functions {
        let TriggerSpec::ServiceBus { queue, .. } = spec.trigger else {
            continue;
        };
        let walk = QueueWalk {
            ctx,
            receiver: receiver.as_ref(),
            spec,
            queue,
        };
        walk.run(&mut budget, started, &mut summary).await;
        if budget == 0 || started.elapsed() >= RUN_BUDGET {
            break;
        }
    }
    summary
}

struct QueueWalk<'a> {
    ctx: &'a Context,
    receiver: &'a dyn DeadLetterReceiver,
    spec: &'a FunctionSpec,
    queue: &'static str,
}

impl QueueWalk<'_> {
    async fn run(&self, budget: &mut u32, started: Instant, summary: &mut RedriveSummary) {
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        while *budget > 0 && started.elapsed() < RUN_BUDGET {
            let message = match self.receiver.receive(self.queue).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    summary.errors.push(format!("{}: receive: {e}", self.queue));
                    break;
                }
            };
            if !seen.insert(message.sequence_number) {
                // A lock taken earlier in this walk expired: everything is looked at.
                held.push(message);
                break;
            }
            *budget -= 1;
            summary.examined += 1;
            if let Some(kept) = self.handle(message, summary).await {
                held.push(kept);
            }
        }
        for message in held {
            self.settle(&message, Settle::Unlock, summary).await;
        }
    }

    /// Decides and acts on one dead letter; returns it when it is to be unlocked later.
    async fn handle(
        &self,
        message: DeadLetteredMessage,
        summary: &mut RedriveSummary,
    ) -> Option<DeadLetteredMessage> {
        let store = self.ctx.state.as_ref();
        let facts = async {
            let recorded = state::json::get::<DeadLetterRecord>(
                store,
                &dead_letter_key(self.queue, &message.message_id),
            )
            .await?;
            let history = state::json::get::<RedriveRecord>(
                store,
                &redrive_key(self.queue, &message.message_id),
            )
            .await?;
            Ok::<_, StateError>((recorded.map(|(r, _)| r), history.map(|(h, _)| h)))
        };
        let (recorded, history) = match facts.await {
            Ok(f) => f,
            Err(e) => {
                summary.errors.push(self.label(&message, &e));
                return Some(message);
            }
        };
        let decision = decide(
            Facts {
                reason: message.reason(),
                recorded_reason: recorded.as_ref().map(|r| r.reason.as_str()),
                history: history.as_ref(),
            },
            &self.ctx.settings.workflow.redrive,
            self.ctx.clock.now(),
        );
        match decision {
            Decision::Leave(why) => {
                *summary.left.entry(why.as_str()).or_default() += 1;
                self.count(&format!("left:{}", why.as_str()));
                Some(message)
            }
            Decision::Delete => {
                if self.settle(&message, Settle::Complete, summary).await {
                    summary.completed.push(self.name(&message));
                }
                None
            }
            Decision::Redrive { attempt } => self.attempt(message, attempt, summary).await,
        }
    }

    /// One attempt: recorded first, then dispatched, then settled.
    async fn attempt(
        &self,
        message: DeadLetteredMessage,
        attempt: u32,
        summary: &mut RedriveSummary,
    ) -> Option<DeadLetteredMessage> {
        if let Err(e) = self
            .record(&message, attempt, RedriveOutcome::Running, None)
            .await
        {
            summary.errors.push(self.label(&message, &e));
            return Some(message);
        }
        tracing::info!(
            queue = self.queue,
            message_id = %message.message_id,
            attempt,
            "redriving a dead-lettered message"
        );
        let max_delivery_count = self.ctx.settings.workflow.max_delivery_count;
        let input = TriggerInput::ServiceBus(as_delivery(&message, attempt, max_delivery_count));
        let outcome = dispatch_invocation(self.spec, input, self.ctx, None).await;
        let (result, error) = match &outcome {
            Outcome::Completed(_) => (RedriveOutcome::Completed, None),
            Outcome::Failed { error, .. } => match error {
                Disposition::Poison { .. } => (RedriveOutcome::Poison, Some(error.to_string())),
                Disposition::Transient(_) => (RedriveOutcome::Failed, Some(error.to_string())),
            },
        };
        if let Err(e) = self.record(&message, attempt, result, error).await {
            summary.errors.push(self.label(&message, &e));
        }
        self.count(result.as_str());
        match result {
            RedriveOutcome::Completed => {
                // A lost lock leaves the dead letter; the next run deletes it (`Decision::Delete`).
                self.settle(&message, Settle::Complete, summary).await;
                summary.completed.push(self.name(&message));
                None
            }
            RedriveOutcome::Poison => {
                *summary.left.entry(Leave::Poison.as_str()).or_default() += 1;
                Some(message)
            }
            RedriveOutcome::Failed | RedriveOutcome::Running => {
                summary.failed.push(self.name(&message));
                Some(message)
            }
        }
    }

    async fn record(
        &self,
        message: &DeadLetteredMessage,
        attempt: u32,
        outcome: RedriveOutcome,
        error: Option<String>,
    ) -> Result<RedriveRecord, StateError> {
        let key = redrive_key(self.queue, &message.message_id);
        let now = self.ctx.clock.now();
        state::json::update::<RedriveRecord, StateError, _>(
            self.ctx.state.as_ref(),
            &key,
            |current| {
                Ok(Some(RedriveRecord {
                    queue: self.queue.to_string(),
                    message_id: message.message_id.clone(),
                    function: self.spec.name.to_string(),
                    attempts: attempt,
                    first_attempt_at: current.map_or(now, |c| c.first_attempt_at),
                    last_attempt_at: now,
                    last_outcome: outcome,
                    last_error: error.clone(),
                }))
            },
        )
        .await
    }

    /// Completes or unlocks; a lost lock is not an error (the message is back in the dead-letter
    /// queue and the next run sees it). Returns whether the broker did it.
    async fn settle(
        &self,
        message: &DeadLetteredMessage,
        how: Settle,
        summary: &mut RedriveSummary,
    ) -> bool {
        let result = match how {
            Settle::Complete => self.receiver.complete(message).await,
            Settle::Unlock => self.receiver.unlock(message).await,
        };
        match result {
            Ok(()) => true,
            Err(MessagingError::LockLost { .. }) => false,
            Err(e) => {
                summary.errors.push(self.label(message, &e));
                false
            }
        }
    }

    fn count(&self, outcome: &str) {
        ade_backup_shared::telemetry::metrics().redrive(self.spec.name, outcome);
    }

    fn name(&self, message: &DeadLetteredMessage) -> String {
        format!("{}/{}", self.queue, message.message_id)
    }

    fn label(&self, message: &DeadLetteredMessage, e: &dyn std::fmt::Display) -> String {
        ade_backup_shared::telemetry::redact_owned(format!("{}: {e}", self.name(message)))
    }
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Complete,
    Unlock,
}

/// The dead letter as the delivery its function expects: the original body, ids and
/// application properties (the trace context among them), without the broker's dead-letter
/// properties. Its delivery count is past every delivery the queue made (`maxDeliveryCount`, or
/// the count the broker reports if higher, plus the attempt), so the attempt's step claims
/// (`{messageId}#{deliveryCount}@{sequence}`) are never an earlier delivery's.
pub fn as_delivery(
    message: &DeadLetteredMessage,
    attempt: u32,
    max_delivery_count: u32,
) -> ServiceBusMessage {
    let user_properties = message
        .properties
        .iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case(DEAD_LETTER_REASON)
                && !k.eq_ignore_ascii_case(DEAD_LETTER_DESCRIPTION)
        })
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    ServiceBusMessage {
        queue: message.queue.clone(),
        body: message.body.clone(),
        message_id: message.message_id.clone(),
        delivery_count: message
            .delivery_count
            .max(max_delivery_count)
            .saturating_add(attempt),
        correlation_id: message.correlation_id.clone(),
        content_type: message.content_type.clone(),
        subject: None,
        enqueued_time: message.enqueued_time,
        expires_at: None,
        sequence_number: Some(message.sequence_number),
        user_properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_letter(delivery_count: u32) -> DeadLetteredMessage {
        DeadLetteredMessage {
            queue: "restore-requests".into(),
            message_id: "req-1".into(),
            sequence_number: 42,
            lock_token: "7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547".into(),
            delivery_count,
            correlation_id: Some("INC-1".into()),
            content_type: Some("application/json".into()),
            enqueued_time: None,
            body: b"{}".to_vec(),
            properties: [
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("deadletterreason", MAX_DELIVERY_COUNT_EXCEEDED),
                ("DeadLetterErrorDescription", "ran out"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    #[test]
    fn an_attempt_is_the_original_delivery_past_every_count_the_queue_used() {
        // The broker may report the dead-letter receive count (1) or the queue's (10).
        for reported in [1, 10] {
            let m = as_delivery(&dead_letter(reported), 2, 10);
            assert_eq!(m.delivery_count, 12, "reported {reported}");
        }
        assert_eq!(as_delivery(&dead_letter(15), 1, 10).delivery_count, 16);
        let m = as_delivery(&dead_letter(1), 1, 10);
        assert_eq!(
            (m.queue.as_str(), m.message_id.as_str(), m.sequence_number),
            ("restore-requests", "req-1", Some(42))
        );
        assert_eq!(m.correlation_id.as_deref(), Some("INC-1"));
        assert_eq!(m.body, b"{}");
        // The trace context stays; the broker's dead-letter properties do not.
        assert_eq!(
            m.user_properties.keys().collect::<Vec<_>>(),
            ["traceparent"]
        );
    }
}
