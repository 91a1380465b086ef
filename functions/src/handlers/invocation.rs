//! The span and the metrics of one invocation. [`span`] opens the invocation span as a child of
//! the trace the message's `traceparent` (or `Diagnostic-Id`) application property names — the
//! Functions host passes application properties in `Metadata.ApplicationProperties` /
//! `UserProperties`, and so does the embedded local host — or a new trace for a timer tick or a
//! message without a valid context. [`finish`] logs the outcome inside it, sets the span status
//! and counts the invocation (`ade_backup.invocations` by function and outcome).

use super::{Disposition, Outcome};
use crate::trigger::TriggerInput;
use ade_backup_shared::telemetry::{self, metrics};
use std::time::Duration;

/// The invocation's span (see the module docs). `vm_id`, `ticket_id` and `operation_id` are
/// recorded by the handlers once they have read the message.
pub fn span(function: &str, input: &TriggerInput, invocation_id: Option<&str>) -> tracing::Span {
    let (message_id, delivery_count) = match input {
        TriggerInput::ServiceBus(m) => (m.message_id.as_str(), m.delivery_count),
        TriggerInput::Timer(_) => ("", 0),
    };
    let span = telemetry::invocation_span(function, message_id, delivery_count);
    if let TriggerInput::ServiceBus(m) = input {
        telemetry::continue_trace(&span, |name| m.property(name));
        span.record("messaging.destination.name", m.queue.as_str());
        if let Some(c) = &m.correlation_id {
            span.record("correlation_id", c.as_str());
        }
    }
    if let Some(id) = invocation_id {
        span.record("invocation_id", id);
    }
    span
}

/// The metric label of an outcome.
fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed(_) => "completed",
        Outcome::Failed {
            dead_letter: Some(_),
            ..
        } => "poison",
        Outcome::Failed {
            error: Disposition::Poison { .. },
            ..
        } => "poison",
        Outcome::Failed { .. } => "transient",
    }
}

/// Logs the outcome (inside the invocation span), sets the span's status and counts it.
pub fn finish(function: &str, outcome: &Outcome, elapsed: Duration) {
    let elapsed_ms = elapsed.as_millis() as u64;
    let label = outcome_label(outcome);
    let span = tracing::Span::current();
    span.record("outcome", label);
    match outcome {
        Outcome::Completed(_) => tracing::info!(elapsed_ms, "invocation succeeded"),
        Outcome::Failed {
            error, dead_letter, ..
        } => {
            span.record("otel.status_code", "ERROR");
            tracing::warn!(
                elapsed_ms,
                error = %error,
                dead_letter = dead_letter.is_some(),
                "invocation failed"
            );
        }
    }
    metrics().invocation(function, label);
}

/// Records a field of the current (invocation) span: a handler calls it before it starts a step.
pub fn record(field: &'static str, value: &str) {
    tracing::Span::current().record(field, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::HandlerOutput;
    use crate::trigger::DeadLetter;

    #[test]
    fn outcomes_have_labels() {
        assert_eq!(
            outcome_label(&Outcome::Completed(HandlerOutput::default())),
            "completed"
        );
        let failed = |error, dead_letter| Outcome::Failed {
            error,
            logs: vec![],
            dead_letter,
        };
        assert_eq!(
            outcome_label(&failed(Disposition::Transient("x".into()), None)),
            "transient"
        );
        let poison = Disposition::Poison {
            reason: "R".into(),
            description: "d".into(),
        };
        let dl = Some(DeadLetter {
            reason: "R".into(),
            description: "d".into(),
        });
        assert_eq!(outcome_label(&failed(poison, dl)), "poison");
    }
}
