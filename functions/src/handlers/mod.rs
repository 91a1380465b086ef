//! Function registry and the transport-independent dispatch core.
//!
//! A handler is a plain `async fn(TriggerInput, &Context) -> Result<HandlerOutput, HandlerError>`;
//! the [`Registry`] maps each Functions function name (the folder holding its `function.json`) to
//! its trigger and handler. [`dispatch`] runs a handler and turns its result into an [`Outcome`]
//! that the HTTP adapter (`host::server`) renders.
//!
//! Failure contract (the README repeats it). A failure is classified once, here, by
//! [`HandlerError::disposition`] (a workflow's [`WorkflowError`] keeps its source until then, and
//! the Azure error behind it is logged with its code and status):
//! - `Ok` → 200; the host completes the message.
//! - [`Disposition::Transient`] → 500 with the error chain in `Logs`; the host abandons the
//!   message, Service Bus redelivers it (`DeliveryCount` + 1) and dead-letters it after
//!   `maxDeliveryCount`.
//! - [`Disposition::Poison`] → the reason is first recorded at
//!   `deadletters/{queue}/{messageId}.json`, then 500 with `ReturnValue: {"deadLetter": {"reason",
//!   "description"}}`. The embedded local host dead-letters at once with that reason; the Azure
//!   host ignores `ReturnValue` on failure, so there Service Bus dead-letters after
//!   `maxDeliveryCount` — the recorded document keeps the real reason. If recording fails the
//!   outcome degrades to transient (no `deadLetter`), so the message is retried rather than lost.
//!
//! Everything an [`Outcome`] carries leaves the process (the host's invocation log, Service Bus
//! dead-letter properties, the recorded document), so [`dispatch`] passes all of it through
//! [`redact_owned`]: a SAS URL or secret in an Azure error message is masked before it is
//! answered, logged by the host or stored.

use crate::context::Context;
use crate::engine::WorkflowError;
use crate::trigger::{DeadLetter, ServiceBusMessage, TriggerInput, TriggerSpec};
use ade_backup_shared::state::{self, StateError};
use ade_backup_shared::telemetry::{redact_json, redact_owned};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub mod backup_vm;
pub mod drill_schedule;
pub mod drill_vm;
pub mod grant_key_vault_access;
pub mod invocation;
pub mod on_restore_request;
pub mod on_vm_encryption_event;
pub mod policy_sweep;
pub mod redeploy_vm;
pub mod redrive_dead_letters;
pub mod restore_vm;

/// What a successful handler returns: log lines for the invocation log and an optional
/// `ReturnValue` (none of this app's functions bind `$return`, so it is informational).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerOutput {
    pub logs: Vec<String>,
    pub return_value: Value,
}

impl HandlerOutput {
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    /// The output with its log lines and every string of its return value redacted.
    fn redacted(mut self) -> Self {
        self.logs = self.logs.into_iter().map(redact_owned).collect();
        redact_json(&mut self.return_value);
        self
    }
}

/// A handler's failure. Handler-level problems (wrong trigger, unreadable message) are
/// [`HandlerError::Poison`] directly; a workflow's [`WorkflowError`] keeps its source until
/// [`dispatch`] classifies it, once, with [`HandlerError::disposition`].
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: the message is abandoned and redelivered.
    #[error("transient failure, the message will be redelivered: {0}")]
    Transient(String),
    /// Will never succeed: dead-letter with this reason (see the module docs).
    #[error("poison message ({reason}): {description}")]
    Poison { reason: String, description: String },
    /// A workflow step failed (transient or poison, by its kind).
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

/// What the transport does with a failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Abandon: Service Bus redelivers it. The text is the whole error chain.
    Transient(String),
    /// Dead-letter with this reason.
    Poison { reason: String, description: String },
}

impl std::fmt::Display for Disposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(m) => {
                write!(f, "transient failure, the message will be redelivered: {m}")
            }
            Self::Poison {
                reason,
                description,
            } => write!(f, "poison message ({reason}): {description}"),
        }
    }
}

impl Disposition {
    /// The disposition with its texts redacted.
    fn redacted(self) -> Self {
        match self {
            Self::Transient(m) => Self::Transient(redact_owned(m)),
            Self::Poison {
                reason,
                description,
            } => Self::Poison {
                reason: redact_owned(reason),
                description: redact_owned(description),
            },
        }
    }
}

impl HandlerError {
    pub fn poison(reason: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Poison {
            reason: reason.into(),
            description: description.into(),
        }
    }

    /// The one place a failure is classified as transient or poison. The texts are redacted:
    /// everything downstream of the classification leaves the process.
    pub fn disposition(&self) -> Disposition {
        let disposition = match self {
            Self::Transient(m) => Disposition::Transient(m.clone()),
            Self::Poison {
                reason,
                description,
            } => Disposition::Poison {
                reason: reason.clone(),
                description: description.clone(),
            },
            Self::Workflow(e) => match e.poison_reason() {
                Some((reason, description)) => Disposition::Poison {
                    reason,
                    description,
                },
                None => Disposition::Transient(crate::engine::chain(e)),
            },
        };
        disposition.redacted()
    }
}

impl From<StateError> for HandlerError {
    fn from(e: StateError) -> Self {
        Self::Workflow(e.into())
    }
}

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

pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HandlerOutput, HandlerError>> + Send + 'a>>;
/// The boxed form of an `async fn(TriggerInput, &Context)`; build one with [`handler_fn!`](crate::handler_fn).
pub type HandlerFn = for<'a> fn(TriggerInput, &'a Context) -> HandlerFuture<'a>;

/// Wraps an `async fn(TriggerInput, &Context) -> Result<HandlerOutput, HandlerError>` path into a
/// [`HandlerFn`].
#[macro_export]
macro_rules! handler_fn {
    ($path:path) => {{
        fn boxed<'a>(
            input: $crate::trigger::TriggerInput,
            ctx: &'a $crate::context::Context,
        ) -> $crate::handlers::HandlerFuture<'a> {
            Box::pin($path(input, ctx))
        }
        boxed as $crate::handlers::HandlerFn
    }};
}

/// One registered function.
#[derive(Clone)]
pub struct FunctionSpec {
    pub name: &'static str,
    pub trigger: TriggerSpec,
    pub handler: HandlerFn,
}

impl std::fmt::Debug for FunctionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSpec")
            .field("name", &self.name)
            .field("trigger", &self.trigger)
            .finish_non_exhaustive()
    }
}

/// Function name → spec. Names are matched exactly, as the host sends the folder name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    functions: BTreeMap<&'static str, FunctionSpec>,
}

/// Binding name of every Service Bus trigger in this app's `function.json` files.
pub const MESSAGE_BINDING: &str = "message";
/// Binding name of the timer trigger.
pub const TIMER_BINDING: &str = "timer";
/// The policy sweep's NCRONTAB schedule (6 fields, seconds first).
pub const POLICY_SWEEP_SCHEDULE: &str = "0 */30 * * * *";
/// The dead-letter redrive's NCRONTAB schedule: every 5 minutes.
pub const REDRIVE_SCHEDULE: &str = "0 */5 * * * *";
/// The restore drills' NCRONTAB schedule: daily at 03:00 UTC (each run drills its share).
pub const DRILL_SCHEDULE: &str = "0 0 3 * * *";

impl Registry {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Every function this app deploys. Must agree with the `function.json` files (a test checks).
    pub fn production() -> Self {
        let sb = |queue| TriggerSpec::ServiceBus {
            queue,
            binding: MESSAGE_BINDING,
        };
        Self::empty()
            .with(FunctionSpec {
                name: on_vm_encryption_event::NAME,
                trigger: sb("vm-encryption-events"),
                handler: handler_fn!(on_vm_encryption_event::handle),
            })
            .with(FunctionSpec {
                name: policy_sweep::NAME,
                trigger: TriggerSpec::Timer {
                    schedule: POLICY_SWEEP_SCHEDULE,
                    binding: TIMER_BINDING,
                },
                handler: handler_fn!(policy_sweep::handle),
            })
            .with(FunctionSpec {
                name: on_restore_request::NAME,
                trigger: sb("restore-requests"),
                handler: handler_fn!(on_restore_request::handle),
            })
            .with(FunctionSpec {
                name: grant_key_vault_access::NAME,
                trigger: sb("grant-key-vault-access"),
                handler: handler_fn!(grant_key_vault_access::handle),
            })
            .with(FunctionSpec {
                name: backup_vm::NAME,
                trigger: sb("backup-vm"),
                handler: handler_fn!(backup_vm::handle),
            })
            .with(FunctionSpec {
                name: restore_vm::NAME,
                trigger: sb("restore-vm"),
                handler: handler_fn!(restore_vm::handle),
            })
            .with(FunctionSpec {
                name: redeploy_vm::NAME,
                trigger: sb("redeploy-vm"),
                handler: handler_fn!(redeploy_vm::handle),
            })
            .with(FunctionSpec {
                name: drill_vm::NAME,
                trigger: sb("drill-vm"),
                handler: handler_fn!(drill_vm::handle),
            })
            .with(FunctionSpec {
                name: drill_schedule::NAME,
                trigger: TriggerSpec::Timer {
                    schedule: DRILL_SCHEDULE,
                    binding: TIMER_BINDING,
                },
                handler: handler_fn!(drill_schedule::handle),
            })
            .with(FunctionSpec {
                name: redrive_dead_letters::NAME,
                trigger: TriggerSpec::Timer {
                    schedule: REDRIVE_SCHEDULE,
                    binding: TIMER_BINDING,
                },
                handler: handler_fn!(redrive_dead_letters::handle),
            })
    }

    /// Adds (or replaces) a function.
    pub fn with(mut self, spec: FunctionSpec) -> Self {
        self.functions.insert(spec.name, spec);
        self
    }

    pub fn get(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.get(name)
    }

    pub fn specs(&self) -> impl Iterator<Item = &FunctionSpec> {
        self.functions.values()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.functions.keys().copied().collect()
    }
}

/// The result of one invocation, before it is rendered for the host.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(HandlerOutput),
    Failed {
        error: Disposition,
        logs: Vec<String>,
        /// Set only for a Service Bus poison message whose reason was recorded.
        dead_letter: Option<DeadLetter>,
    },
}

/// What is stored at `deadletters/{queue}/{messageId}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    pub queue: String,
    pub message_id: String,
    pub function: String,
    pub reason: String,
    pub description: String,
    pub correlation_id: Option<String>,
    pub delivery_count: u32,
    pub first_recorded_at: DateTime<Utc>,
    pub last_recorded_at: DateTime<Utc>,
}

/// Runs `spec`'s handler on `input` and classifies the result, recording poison reasons.
pub async fn dispatch(spec: &FunctionSpec, input: TriggerInput, ctx: &Context) -> Outcome {
    dispatch_invocation(spec, input, ctx, None).await
}

/// [`dispatch`] inside the invocation's span ([`invocation::span`]: continues the message's trace),
/// with the host's invocation id recorded; the outcome is logged and counted there.
pub async fn dispatch_invocation(
    spec: &FunctionSpec,
    input: TriggerInput,
    ctx: &Context,
    invocation_id: Option<&str>,
) -> Outcome {
    use tracing::Instrument;
    let span = invocation::span(spec.name, &input, invocation_id);
    async move {
        let started = std::time::Instant::now();
        let outcome = run(spec, input, ctx).await;
        invocation::finish(spec.name, &outcome, started.elapsed());
        outcome
    }
    .instrument(span)
    .await
}

async fn run(spec: &FunctionSpec, input: TriggerInput, ctx: &Context) -> Outcome {
    let message = match &input {
        TriggerInput::ServiceBus(m) => Some(m.clone()),
        TriggerInput::Timer(_) => None,
    };
    let error = match (spec.handler)(input, ctx).await {
        Ok(out) => return Outcome::Completed(out.redacted()),
        Err(e) => e,
    };
    log_source(spec.name, &error);
    match (error.disposition(), message) {
        (
            Disposition::Poison {
                reason,
                description,
            },
            Some(m),
        ) => dead_letter(spec, ctx, &m, reason, description).await,
        (Disposition::Transient(last), Some(m))
            if m.delivery_count >= ctx.settings.workflow.max_delivery_count =>
        {
            last_delivery(spec, ctx, &m, last).await
        }
        (error, _) => Outcome::Failed {
            logs: vec![error.to_string()],
            error,
            dead_letter: None,
        },
    }
}

/// The last delivery Service Bus allows failed transiently: it dead-letters the message after
/// this (`MaxDeliveryCountExceeded`), so the last error is recorded where poison reasons are.
async fn last_delivery(
    spec: &FunctionSpec,
    ctx: &Context,
    m: &ServiceBusMessage,
    last: String,
) -> Outcome {
    let error = Disposition::Transient(last.clone());
    let reason = "MaxDeliveryCountExceeded";
    ade_backup_shared::telemetry::metrics().dead_letter(spec.name, reason);
    let description = format!(
        "failed on all {} deliveries; the last error: {last}",
        m.delivery_count
    );
    let mut logs = vec![error.to_string()];
    match record_dead_letter(spec, ctx, m, reason, &description).await {
        Ok(key) => logs.push(format!("last delivery: the error is recorded at {key}")),
        Err(e) => logs.push(format!(
            "last delivery: the error could not be recorded ({e})"
        )),
    }
    Outcome::Failed {
        logs,
        error,
        dead_letter: None,
    }
}

/// Writes (or refreshes) `deadletters/{queue}/{messageId}.json`. Returns its key.
async fn record_dead_letter(
    spec: &FunctionSpec,
    ctx: &Context,
    m: &ServiceBusMessage,
    reason: &str,
    description: &str,
) -> Result<String, StateError> {
    let key = dead_letter_key(&m.queue, &m.message_id);
    let now = ctx.clock.now();
    state::json::update::<DeadLetterRecord, StateError, _>(ctx.state.as_ref(), &key, |current| {
        Ok(Some(DeadLetterRecord {
            queue: m.queue.clone(),
            message_id: m.message_id.clone(),
            function: spec.name.to_string(),
            reason: reason.to_string(),
            description: description.to_string(),
            correlation_id: m.correlation_id.clone(),
            delivery_count: m.delivery_count,
            first_recorded_at: current.map_or(now, |c| c.first_recorded_at),
            last_recorded_at: now,
        }))
    })
    .await
    .map(|_| key)
}

/// The Azure error behind a failure, as structured fields (code, status, operation) for the log.
fn log_source(function: &str, error: &HandlerError) {
    if let HandlerError::Workflow(e) = error {
        if let Some(arm) = e.arm_source() {
            tracing::warn!(
                function,
                azure_code = arm.code().unwrap_or(""),
                azure_status = arm.status().unwrap_or(0),
                transient = arm.is_transient(),
                "Azure call failed: {}",
                crate::engine::chain(e)
            );
        }
    }
}

/// Records a poison message's reason, then asks for dead-lettering; if the record cannot be
/// written the message is retried instead (nothing is lost).
async fn dead_letter(
    spec: &FunctionSpec,
    ctx: &Context,
    m: &ServiceBusMessage,
    reason: String,
    description: String,
) -> Outcome {
    let error = Disposition::Poison {
        reason: reason.clone(),
        description: description.clone(),
    };
    let recorded = record_dead_letter(spec, ctx, m, &reason, &description).await;
    match recorded {
        Ok(key) => {
            ade_backup_shared::telemetry::metrics().dead_letter(spec.name, &reason);
            dead_lettered(error, key, reason, description)
        }
        Err(e) => {
            let key = dead_letter_key(&m.queue, &m.message_id);
            let error = Disposition::Transient(format!(
                "could not record the poison reason at {key} ({e}); retrying instead of dead-lettering: {error}"
            ))
            .redacted();
            Outcome::Failed {
                logs: vec![error.to_string()],
                error,
                dead_letter: None,
            }
        }
    }
}

fn dead_lettered(error: Disposition, key: String, reason: String, description: String) -> Outcome {
    Outcome::Failed {
        logs: vec![
            error.to_string(),
            format!("poison reason recorded at {key}"),
        ],
        error,
        dead_letter: Some(DeadLetter {
            reason,
            description,
        }),
    }
}

pub use crate::records::{dead_letter_key, key_segment};

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn key_segments_are_safe_and_deterministic() {
        assert_eq!(key_segment("abc-123"), "abc-123");
        let odd = key_segment("a/b:c");
        assert!(state::validate_key(&odd).is_ok(), "{odd}");
        assert_eq!(odd, key_segment("a/b:c"));
        assert_ne!(odd, key_segment("a/b:d"));
        for id in ["..", "", "x y", "a/../b"] {
            let k = dead_letter_key("backup-vm", id);
            assert!(state::validate_key(&k).is_ok(), "{k}");
        }
        assert_eq!(
            dead_letter_key("backup-vm", "m1"),
            "deadletters/backup-vm/m1.json"
        );
    }

    #[test]
    fn state_errors_classify() {
        let e: HandlerError = StateError::Unavailable("down".into()).into();
        assert!(matches!(e.disposition(), Disposition::Transient(_)));
        let e: HandlerError = StateError::InvalidKey {
            key: "x".into(),
            rule: "r",
        }
        .into();
        assert!(matches!(e.disposition(), Disposition::Poison { .. }));
    }

    #[test]
    fn dispositions_and_outputs_are_redacted() {
        let sas = "https://stg1.blob.core.windows.net/c/t.json?sv=1&sig=S3cr3t";
        let e = HandlerError::poison("Bad", format!("template {sas} clientSecret=p4ss"));
        assert_eq!(
            e.disposition(),
            Disposition::Poison {
                reason: "Bad".into(),
                description:
                    "template https://stg1.blob.core.windows.net/c/t.json?[REDACTED] clientSecret=[REDACTED]"
                        .into(),
            }
        );
        let e = HandlerError::Transient(format!("GET {sas} failed"));
        assert_eq!(
            e.disposition(),
            Disposition::Transient(
                "GET https://stg1.blob.core.windows.net/c/t.json?[REDACTED] failed".into()
            )
        );
        let out = HandlerOutput {
            logs: vec![format!("read {sas}")],
            return_value: json!({"failures": [format!("password=hunter2 at {sas}")]}),
        }
        .redacted();
        assert_eq!(
            out.logs,
            vec!["read https://stg1.blob.core.windows.net/c/t.json?[REDACTED]".to_string()]
        );
        assert_eq!(
            out.return_value,
            json!({"failures": ["password=[REDACTED] at https://stg1.blob.core.windows.net/c/t.json?[REDACTED]"]})
        );
    }

    fn read_json(path: &Path) -> Value {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
    }

    /// The registry and the deployed `function.json` files must describe the same functions.
    #[test]
    fn function_json_files_match_the_registry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let registry = Registry::production();
        assert_eq!(registry.names().len(), 10);
        for spec in registry.specs() {
            let doc = read_json(&root.join(spec.name).join("function.json"));
            let bindings = doc["bindings"].as_array().expect("bindings array");
            assert_eq!(bindings.len(), 1, "{}: one trigger binding", spec.name);
            let b = &bindings[0];
            assert_eq!(b["direction"], "in");
            match &spec.trigger {
                TriggerSpec::ServiceBus { queue, binding } => {
                    assert_eq!(b["type"], "serviceBusTrigger", "{}", spec.name);
                    assert_eq!(b["queueName"], *queue, "{}", spec.name);
                    assert_eq!(b["name"], *binding, "{}", spec.name);
                    assert_eq!(b["connection"], "ServiceBusConnection", "{}", spec.name);
                }
                TriggerSpec::Timer { schedule, binding } => {
                    assert_eq!(b["type"], "timerTrigger", "{}", spec.name);
                    assert_eq!(b["schedule"], *schedule);
                    assert_eq!(b["name"], *binding);
                    assert_eq!(b["runOnStartup"], false);
                    assert_eq!(
                        schedule.split_whitespace().count(),
                        6,
                        "NCRONTAB has 6 fields"
                    );
                }
            }
        }
        // No function folder the registry does not know about.
        for entry in std::fs::read_dir(root).expect("crate dir") {
            let path = entry.expect("entry").path();
            if path.join("function.json").exists() {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("utf-8 name");
                assert!(
                    registry.get(name).is_some(),
                    "{name}/function.json is not registered"
                );
            }
        }
    }

    #[test]
    fn host_json_runs_this_binary_as_a_custom_handler() {
        // host.json is at the repository root (the one source `ade-backup local` and the
        // package both read).
        let host = read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../host.json"));
        assert_eq!(host["version"], "2.0");
        // The host's own spans in OpenTelemetry form, so they share traces with the handler's.
        assert_eq!(host["telemetryMode"], "OpenTelemetry");
        let d = &host["customHandler"]["description"];
        assert_eq!(d["defaultExecutablePath"], "ade-backup");
        assert_eq!(d["arguments"], json!(["serve"]));
        assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
        assert_eq!(
            host["extensionBundle"]["id"],
            "Microsoft.Azure.Functions.ExtensionBundle"
        );
        let sb = &host["extensions"]["serviceBus"];
        // Non-C# handlers cannot settle messages themselves: completion must be automatic.
        assert_eq!(sb["autoCompleteMessages"], true);
        assert!(sb["maxConcurrentCalls"].as_u64().is_some_and(|n| n >= 1));
        assert!(sb["prefetchCount"].as_u64().is_some());
        assert!(sb["maxAutoLockRenewalDuration"].is_string());
    }
}
