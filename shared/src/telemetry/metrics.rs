//! ade-backup's OpenTelemetry metrics: one set of instruments per process, created from the
//! global meter provider the first time [`metrics`] is called (after [`super::init`] installed
//! the provider, or a no-op one when nothing exports). Every name is prefixed `ade_backup.`; the
//! attributes are low-cardinality (function, outcome, reason, subscription, class, step).
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `ade_backup.invocations` | counter | `function`, `outcome` (completed, transient, poison) |
//! | `ade_backup.protections` | counter | `outcome` (protected, unsupported, failed, ...) |
//! | `ade_backup.event_to_protected` | histogram, s | — |
//! | `ade_backup.arm.calls` | counter | `subscription`, `class`, `status` |
//! | `ade_backup.arm.throttled` | counter | `subscription`, `class` |
//! | `ade_backup.arm.paced_wait` | histogram, s | `subscription`, `class` |
//! | `ade_backup.restore.step_duration` | histogram, s | `step`, `outcome` |
//! | `ade_backup.dead_letters` | counter | `function`, `reason` |
//! | `ade_backup.redrives` | counter | `function`, `outcome` (completed, failed, poison, left: why) |
//! | `ade_backup.sweep.drift` | counter | `kind` |

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;
use std::sync::OnceLock;
use std::time::Duration;

/// Instrumentation scope name of every instrument here.
pub const METER_NAME: &str = "ade-backup";

/// The process's instruments.
pub struct Metrics {
    invocations: Counter<u64>,
    protections: Counter<u64>,
    event_to_protected: Histogram<f64>,
    arm_calls: Counter<u64>,
    arm_throttled: Counter<u64>,
    arm_paced_wait: Histogram<f64>,
    restore_step: Histogram<f64>,
    dead_letters: Counter<u64>,
    redrives: Counter<u64>,
    sweep_drift: Counter<u64>,
}

/// Seconds buckets from 10 ms to 2 days: an ARM pacing wait is milliseconds to a minute, a
/// protection (event → first recovery point) minutes to hours.
const SECONDS_BUCKETS: [f64; 16] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
    43200.0, 172800.0,
];

impl Metrics {
    fn new(meter: &Meter) -> Self {
        let seconds = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        Self {
            invocations: counter(
                "ade_backup.invocations",
                "Function invocations by function and outcome",
            ),
            protections: counter(
                "ade_backup.protections",
                "Protection operations finished, by outcome",
            ),
            event_to_protected: seconds(
                "ade_backup.event_to_protected",
                "Time from the ADE event to the VM's first recovery point",
            ),
            arm_calls: counter(
                "ade_backup.arm.calls",
                "ARM/Graph HTTP attempts by subscription, request class and status",
            ),
            arm_throttled: counter(
                "ade_backup.arm.throttled",
                "ARM/Graph 429 responses by subscription and request class",
            ),
            arm_paced_wait: seconds(
                "ade_backup.arm.paced_wait",
                "Time a request waited for a client-side pacing token",
            ),
            restore_step: seconds(
                "ade_backup.restore.step_duration",
                "Duration of each restore workflow step",
            ),
            dead_letters: counter(
                "ade_backup.dead_letters",
                "Messages dead-lettered (or failed on their last delivery), by reason",
            ),
            redrives: counter(
                "ade_backup.redrives",
                "Dead letters the redrive looked at, by function and what it did",
            ),
            sweep_drift: counter(
                "ade_backup.sweep.drift",
                "Drift the policy sweep found, by kind",
            ),
        }
    }

    pub fn invocation(&self, function: &str, outcome: &'static str) {
        self.invocations.add(
            1,
            &[
                KeyValue::new("function", function.to_string()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub fn protection(&self, outcome: &str) {
        self.protections
            .add(1, &[KeyValue::new("outcome", outcome.to_string())]);
    }

    pub fn event_to_protected(&self, elapsed: Duration) {
        self.event_to_protected.record(elapsed.as_secs_f64(), &[]);
    }

    /// One HTTP attempt of the ARM client; `status` is the HTTP status, 0 when none came back.
    pub fn arm_call(&self, subscription: &str, class: &'static str, status: u16) {
        let attrs = [
            KeyValue::new("subscription", subscription.to_string()),
            KeyValue::new("class", class),
            KeyValue::new("status", i64::from(status)),
        ];
        self.arm_calls.add(1, &attrs);
        if status == 429 {
            self.arm_throttled.add(1, &attrs[..2]);
        }
    }

    pub fn arm_paced_wait(&self, subscription: &str, class: &'static str, waited: Duration) {
        self.arm_paced_wait.record(
            waited.as_secs_f64(),
            &[
                KeyValue::new("subscription", subscription.to_string()),
                KeyValue::new("class", class),
            ],
        );
    }

    pub fn restore_step(&self, step: &str, outcome: &'static str, elapsed: Duration) {
        self.restore_step.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("step", step.to_string()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub fn dead_letter(&self, function: &str, reason: &str) {
        self.dead_letters.add(
            1,
            &[
                KeyValue::new("function", function.to_string()),
                KeyValue::new("reason", reason.to_string()),
            ],
        );
    }

    /// One dead letter the redrive handled: `outcome` is what its attempt did (`completed`,
    /// `failed`, `poison`) or why it was left (`left:attempts-spent`, ...).
    pub fn redrive(&self, function: &str, outcome: &str) {
        self.redrives.add(
            1,
            &[
                KeyValue::new("function", function.to_string()),
                KeyValue::new("outcome", outcome.to_string()),
            ],
        );
    }

    pub fn sweep_drift(&self, kind: &str, count: u64) {
        if count > 0 {
            self.sweep_drift
                .add(count, &[KeyValue::new("kind", kind.to_string())]);
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's instruments, from the global meter provider. Instruments are bound to the
/// provider installed when this is first called, so [`super::init`] runs before any handler.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter(METER_NAME)))
}
