//! The span of one workflow step: every invocation of a protect or restore worker runs one phase
//! of its workflow inside a `step` span (named `{workflow} {step}`, a child of the invocation
//! span), with the step's poll count, and its outcome as the span status. A restore step's
//! duration also goes to the `ade_backup.restore.step_duration` metric.

use super::WorkflowError;
use ade_backup_shared::telemetry::metrics;
use serde::Serialize;
use std::future::Future;
use tracing::Instrument;

/// Which workflow a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workflow {
    Protect,
    Restore,
}

impl Workflow {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Protect => "protect",
            Self::Restore => "restore",
        }
    }
}

/// A phase enum's wire name (`kebab-case` serde name), e.g. `backup-poll`.
pub fn phase_name<P: Serialize>(phase: &P) -> String {
    match serde_json::to_value(phase) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "unknown".to_string(),
    }
}

/// Runs `work` (one step of `workflow`) inside its span and records its outcome.
pub async fn run_step<T>(
    workflow: Workflow,
    step: &str,
    poll: u32,
    work: impl Future<Output = Result<T, WorkflowError>>,
) -> Result<T, WorkflowError> {
    let span = tracing::info_span!(
        "step",
        otel.name = format!("{} {step}", workflow.as_str()),
        otel.status_code = tracing::field::Empty,
        workflow = workflow.as_str(),
        step = step,
        poll = poll,
        outcome = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let result = work.instrument(span.clone()).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.is_poison() => "poison",
        Err(_) => "transient",
    };
    span.record("outcome", outcome);
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    if workflow == Workflow::Restore {
        metrics().restore_step(step, outcome, started.elapsed());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "kebab-case")]
    enum P {
        BackupPoll,
    }

    #[test]
    fn phase_names_are_the_wire_names() {
        assert_eq!(phase_name(&P::BackupPoll), "backup-poll");
    }

    #[tokio::test]
    async fn run_step_passes_the_result_through() {
        let ok = run_step(Workflow::Restore, "deploy", 0, async {
            Ok::<_, WorkflowError>(7)
        });
        assert_eq!(ok.await.expect("ok"), 7);
        let err = run_step(Workflow::Protect, "grant", 1, async {
            Err::<(), _>(WorkflowError::poison("Bad", "bad"))
        })
        .await;
        assert!(err.is_err_and(|e| e.is_poison()));
    }
}
