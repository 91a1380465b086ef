//! The run's summary: the types serialized as the `--report` file, assembled at exit from the
//! dispatch counters and the queue (what is left, what was dead-lettered), and written out.

use super::dispatch::{FunctionReport, Shared};
use super::{BeforeReportHook, LocalError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ExitReason {
    Idle,
    MaxRuntime,
    Interrupted,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterReport {
    pub queue: String,
    pub message_id: String,
    pub sequence_number: u64,
    pub correlation_id: Option<String>,
    pub reason: String,
    pub description: String,
    pub delivery_count: u32,
    pub dead_lettered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueReport {
    /// Messages still waiting (visible or scheduled) at exit.
    pub remaining: usize,
    pub dead_lettered: usize,
}

/// The run's summary; serialized as the `--report` file.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LocalOutcome {
    pub exit_reason: ExitReason,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub functions: BTreeMap<String, FunctionReport>,
    pub queues: BTreeMap<String, QueueReport>,
    pub dead_letters: Vec<DeadLetterReport>,
    /// Times the handler died after it had been ready and was restarted.
    pub handler_restarts: u64,
    /// Sections added by the caller (flattened into the top level of the report).
    #[serde(flatten)]
    pub extras: serde_json::Map<String, serde_json::Value>,
}

/// The run's summary: per-function counters, what is left in each queue, every dead letter.
pub(super) fn collect_outcome(
    exit_reason: ExitReason,
    started_at: DateTime<Utc>,
    clock: std::time::Instant,
    shared: &Shared,
    restarts: &AtomicU64,
) -> Result<LocalOutcome, LocalError> {
    let mut outcome = LocalOutcome {
        exit_reason,
        started_at,
        finished_at: Utc::now(),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        functions: shared
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        queues: BTreeMap::new(),
        dead_letters: Vec::new(),
        handler_restarts: restarts.load(Ordering::Relaxed),
        extras: serde_json::Map::new(),
    };
    let queue = &shared.queue;
    for name in queue.queue_names() {
        let stats = queue.stats(&name)?;
        outcome.queues.insert(
            name.clone(),
            QueueReport {
                remaining: stats.active + stats.scheduled + stats.locked,
                dead_lettered: stats.dead_lettered,
            },
        );
        for dl in queue.dead_letters(&name)? {
            outcome.dead_letters.push(DeadLetterReport {
                queue: name.clone(),
                message_id: dl.message.message_id,
                sequence_number: dl.message.sequence_number,
                correlation_id: dl.message.correlation_id,
                reason: dl.reason,
                description: dl.description,
                delivery_count: dl.message.delivery_count,
                dead_lettered_at: dl.dead_lettered_at,
            });
        }
    }
    Ok(outcome)
}

/// The caller's last look at the outcome, the closing line, and the `--report` file.
pub(super) fn finish(
    mut outcome: LocalOutcome,
    before_report: Option<BeforeReportHook>,
    report: Option<&Path>,
) -> Result<LocalOutcome, LocalError> {
    if let Some(hook) = before_report {
        hook(&mut outcome);
    }
    println!(
        "[local] stopped ({:?}) after {} ms; {} dead-lettered",
        outcome.exit_reason,
        outcome.duration_ms,
        outcome.dead_letters.len()
    );
    if let Some(path) = report {
        write_report(path, &outcome)?;
    }
    Ok(outcome)
}

fn write_report(path: &Path, outcome: &LocalOutcome) -> Result<(), LocalError> {
    let io = |source| LocalError::Report {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let json = serde_json::to_vec_pretty(outcome)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    std::fs::write(path, json).map_err(io)
}
