//! Automatic protection of an ADE VM: evaluate → grant Key Vault access → enable protection →
//! first backup → track the job until a recovery point exists.
//!
//! Messages (all with deterministic `MessageId`s, so Service Bus duplicate detection drops
//! repeats, and all idempotent on redelivery thanks to the operation document's step claims):
//! - `vm-encryption-events`: Event Grid events, or our own [`RecheckMessage`] (encryption in progress).
//! - `grant-key-vault-access`: [`GrantMessage`].
//! - `backup-vm`: [`BackupMessage`] with a phase; polls are scheduled follow-ups.
//!
//! Modules, in the order a VM goes through them: [`observe`] (read and classify the VM, the
//! per-VM record), [`evaluate`] (rules, placement, open the operation), [`grant`] (Key Vault
//! access), [`backup`] (enable protection, backup now), [`track`] (the backup job),
//! [`adopt`] (VMs Azure Backup already protects); beside them [`limits`] (daily backup limits),
//! [`readiness`] (the VM agent) and [`disk_exclusion`] (selective disk backup on an ADE VM). This file holds the messages and what the
//! engine needs to know about a [`ProtectionOperation`].

mod adopt;
mod backup;
mod disk_exclusion;
mod evaluate;
mod grant;
mod limits;
mod observe;
mod readiness;
mod track;

pub use adopt::{adopt_protected_vm, record_adoption};
pub use backup::backup;
pub use disk_exclusion::DISK_EXCLUSION_ERROR;
pub use evaluate::{evaluate, evaluate_observed, evaluate_with};
pub use grant::{bms_object_id, grant};
pub use observe::{observe_vm, upsert_vm_record, ObservedVm, SweepFacts};

use crate::context::Context;
use crate::engine::{self, send_json, Failure, Operation, Phase, Reporting, WorkflowError};
use crate::records::{
    protect_operation_key, ErrorRecord, ProtectDetail, ProtectStep, ProtectionOperation,
    ProtectionStatus,
};
use ade_backup_shared::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const RECHECK_KIND: &str = "ade-backup.recheckVm";

/// Our own message on the events queue: look at this VM again (encryption was in progress).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecheckMessage {
    pub kind: String,
    pub vm_id: ResourceId,
    pub attempt: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantMessage {
    #[serde(deserialize_with = "operation_id")]
    pub operation_id: String,
    pub generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupPhase {
    Protect,
    ProtectPoll,
    BackupNow,
    BackupPoll,
    Track,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupMessage {
    #[serde(deserialize_with = "operation_id")]
    pub operation_id: String,
    pub generation: u32,
    pub phase: BackupPhase,
    #[serde(default)]
    pub poll: u32,
}

/// An operation id as ade-backup makes them (`protect-{uuid}`): checked where a follow-up
/// message is decoded, so a message with a made-up one is refused naming the field (it also
/// becomes part of a state key).
fn operation_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(
            "an operation id is 1 to 128 letters, digits, '-' or '_'",
        ))
    }
}

/// Why an evaluation was started.
#[derive(Debug, Clone)]
pub enum Origin {
    Event(String),
    Recheck(u32),
    Sweep(String),
}

impl Origin {
    fn label(&self) -> String {
        match self {
            Self::Event(id) => format!("event:{id}"),
            Self::Recheck(n) => format!("recheck:{n}"),
            Self::Sweep(run) => format!("sweep:{run}"),
        }
    }
}

impl Phase<ProtectionOperation> for BackupPhase {
    fn name(self) -> &'static str {
        match self {
            Self::Protect => "protect",
            Self::ProtectPoll => "protect-poll",
            Self::BackupNow => "backup-now",
            Self::BackupPoll => "backup-poll",
            Self::Track => "track",
        }
    }

    fn step(self) -> ProtectStep {
        match self {
            Self::Protect | Self::ProtectPoll => ProtectStep::EnableProtection,
            Self::BackupNow | Self::BackupPoll => ProtectStep::BackupNow,
            Self::Track => ProtectStep::TrackBackupJob,
        }
    }

    async fn send(
        self,
        ctx: &Context,
        op: &ProtectionOperation,
        poll: u32,
        delay: Option<Duration>,
    ) -> Result<(), WorkflowError> {
        let id = format!(
            "{}-g{}-{}-{poll}",
            op.operation_id,
            op.generation,
            self.name()
        );
        let body = BackupMessage {
            operation_id: op.operation_id.clone(),
            generation: op.generation,
            phase: self,
            poll,
        };
        let queue = &ctx.settings.queues.backup_vm;
        send_json(ctx, queue, &id, &body, delay, Some(&op.operation_id)).await
    }
}

/// Sends the grant step of the operation's current generation.
async fn send_grant(ctx: &Context, op: &ProtectionOperation) -> Result<(), WorkflowError> {
    let id = format!("{}-g{}-grant", op.operation_id, op.generation);
    let body = GrantMessage {
        operation_id: op.operation_id.clone(),
        generation: op.generation,
    };
    let queue = &ctx.settings.queues.grant_key_vault_access;
    send_json(ctx, queue, &id, &body, None, Some(&op.operation_id)).await
}

impl Operation for ProtectionOperation {
    type Id = str;
    type Step = ProtectStep;
    type Detail = ProtectDetail;
    const UNKNOWN: &'static str = "UnknownOperation";

    fn key(id: &str) -> String {
        protect_operation_key(id)
    }
    fn missing(id: &str) -> String {
        format!("protection operation {id} does not exist")
    }
    fn id(&self) -> &str {
        &self.operation_id
    }
    fn steps(&self) -> &crate::domain::steps::Steps<ProtectStep, ProtectDetail> {
        &self.steps
    }
    fn steps_mut(&mut self) -> &mut crate::domain::steps::Steps<ProtectStep, ProtectDetail> {
        &mut self.steps
    }
    fn is_finished(&self) -> bool {
        ProtectionOperation::is_finished(self)
    }
    fn generation(&self) -> u32 {
        self.generation
    }

    /// The phase that follows a step that is done.
    async fn resume(&self, ctx: &Context, step: ProtectStep) -> Result<(), WorkflowError> {
        if self.is_finished() {
            // The delivery that finished it may have failed writing the VM record after the
            // operation's own write landed (issue 15, scenario 4): mirror the outcome again.
            return match self.status {
                ProtectionStatus::Protected => track::mirror_protected(ctx, self).await,
                st => {
                    let message = self.message.clone().unwrap_or_default();
                    observe::record_outcome(ctx, &self.vm_id, st, self.reason.as_deref(), &message)
                        .await
                }
            };
        }
        let next = match step {
            ProtectStep::GrantKeyVaultAccess => BackupPhase::Protect,
            ProtectStep::EnableProtection => BackupPhase::BackupNow,
            ProtectStep::BackupNow | ProtectStep::TrackBackupJob => BackupPhase::Track,
        };
        next.send(ctx, self, 0, None).await
    }

    async fn fail_step(
        ctx: &Context,
        id: &str,
        step: ProtectStep,
        failure: Failure<'_>,
    ) -> Result<String, WorkflowError> {
        let st = ProtectionStatus::Failed;
        conclude(ctx, id, st, step, failure.code, failure.message).await?;
        Ok(format!(
            "{id}: {} failed: {}",
            step.as_str(),
            failure.message
        ))
    }
}

/// A protection reports its final outcome on the VM's record.
pub struct Outcome {
    pub status: ProtectionStatus,
    pub reason: Option<String>,
    pub message: String,
}

impl Reporting for ProtectionOperation {
    type Report = Outcome;

    async fn publish(&self, ctx: &Context, o: &Outcome) -> Result<(), WorkflowError> {
        observe::record_outcome(ctx, &self.vm_id, o.status, o.reason.as_deref(), &o.message).await
    }
}

/// Ends the operation with a non-success outcome, mirrored on the VM record.
async fn conclude(
    ctx: &Context,
    op_id: &str,
    st: ProtectionStatus,
    step: ProtectStep,
    code: &str,
    message: &str,
) -> Result<ProtectionOperation, WorkflowError> {
    let at = engine::now(ctx);
    // Azure's error text can quote a URL with its SAS: documents keep it redacted too.
    let message = ade_backup_shared::telemetry::redact_owned(message.to_string());
    let message = message.as_str();
    engine::update_reporting::<ProtectionOperation>(ctx, op_id, |op, report| {
        op.steps.fail(step, at, code, message);
        op.reason = Some(code.to_string());
        op.message = Some(message.to_string());
        op.last_error = Some(ErrorRecord {
            at,
            step: step.as_str().to_string(),
            code: code.to_string(),
            message: message.to_string(),
        });
        op.record(at, st, format!("{code}: {message}"));
        *report = Some(Outcome {
            status: st,
            reason: Some(code.to_string()),
            message: message.to_string(),
        });
        true
    })
    .await
    .inspect(|_| ade_backup_shared::telemetry::metrics().protection(st.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follow_up_with_a_made_up_operation_id_is_refused() {
        let ok: BackupMessage = serde_json::from_str(
            r#"{"operationId": "protect-1eb0ca0c-3924-5127-bd9e-38f0b279ce7e", "generation": 1, "phase": "protect"}"#,
        )
        .expect("a real id");
        assert_eq!(ok.phase, BackupPhase::Protect);
        for bad in ["", "../x", "a/b", &"A".repeat(129)] {
            let body = serde_json::json!({"operationId": bad, "generation": 1}).to_string();
            let err = serde_json::from_str::<GrantMessage>(&body).expect_err(bad);
            assert!(err.to_string().contains("operation id"), "{err}");
        }
    }
}
