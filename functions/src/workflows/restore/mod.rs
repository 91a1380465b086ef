//! Restore of an ADE VM on request of a ticketing system: validate → restore disks → redeploy
//! the VM from the template the restore job wrote → (Linux) reinstall ADE with the settings
//! recorded at protection → verify the VM boots and its disks are unlocked.
//!
//! Messages (deterministic `MessageId`s; every step is claimed in the restore document first, so
//! redeliveries and duplicates do no second Azure write):
//! - `restore-requests`: the ticketing system's request (`schemas/restore-request.v1.schema.json`).
//! - `restore-vm`: [`RestoreVmMessage`] — trigger the restore-disks job, follow it.
//! - `redeploy-vm`: [`RedeployMessage`] — deploy the template, reinstall ADE, verify.
//! - `replyTo` (from the request): [`RestoreStatusUpdate`] at every transition,
//!   `CorrelationId` = ticket id, `MessageId` = `{ticket}-{sequence}-{status}`.
//!
//! The restore document `restores/{ticket}.json` is the idempotency record: ticket ids live for
//! hours or days, far beyond Service Bus duplicate detection.
//!
//! Modules, in the order a ticket goes through them: [`submit`] (idempotency by ticket, accept or
//! reject), [`validate`] (the rules that need Azure), [`disks`] (restore-disks job),
//! [`redeploy`] (deployment of the generated template), [`ade`] (ADE reinstall on Linux),
//! [`verify`] (power and disk state). This file holds the messages, the status reporting and what
//! the engine needs to know about a [`RestoreOperation`].
//!
//! Azure shapes: `begin_restore` follows the spec example
//! `TriggerRestore_RestoreDisks_IaasVMRestoreRequest.json` (recoveryType `RestoreDisks`,
//! `encryptionDetails` from the recovery point's `keyAndSecret`); the restore template's parameter
//! `VirtualMachineName` is the one Azure Backup's generated template and the simulator use.

mod ade;
mod disks;
mod drill_tags;
mod dual_pass;
mod encryption_info;
mod key_material;
mod key_restore;
mod limits;
mod redeploy;
mod submit;
mod template;
mod tier_retry;
mod validate;
mod verify;

pub use ade::ade_extension;
pub use disks::{restore_vm, strip_query};
pub use key_material::{key_material_present, KEY_MATERIAL_MISSING};
pub use redeploy::{deployment_name, redeploy};
pub use submit::{peek_reply_to, submit, Refusal};
pub use validate::choose_recovery_point;
pub use verify::{disk_problems, disk_states};

use crate::context::Context;
use crate::domain::ade::AdeSettings;
use crate::domain::restore_request::RestoreRequest;
use crate::domain::steps::Steps;
use crate::engine::{self, send_json, Failure, Operation, Phase, Reporting, WorkflowError};
use crate::records::{
    restore_key, ErrorRecord, RestoreDetail, RestoreOperation, RestoreStatus, RestoreStatusUpdate,
    RestoreStep,
};
use ade_backup_shared::ids::{ResourceId, TicketId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Rejection / failure codes beyond the parser's.
pub mod code {
    pub const CONFLICT: &str = "conflict";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_PROTECTED: &str = "not-protected";
    pub const RECOVERY_POINT_NOT_FOUND: &str = "recovery-point-not-found";
    pub const ADE_RESTORE_LIMIT: &str = "ade-restore-limit";
    pub const KEY_VAULT_NOT_ENABLED: &str = "key-vault-not-enabled-for-disk-encryption";
    pub const KEY_VAULT_UNAVAILABLE: &str = "key-vault-unavailable";
    pub const STAGING_NOT_FOUND: &str = "staging-storage-account-not-found";
    pub const STAGING_REGION: &str = "staging-storage-account-region";
    pub const TIMED_OUT: &str = "operation-timed-out";
    pub const TARGET_EXISTS: &str = "target-exists";
    pub const REPLY_TO_NOT_ALLOWED: &str = "reply-to-not-allowed";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestorePhase {
    /// Start the restore-disks job.
    Trigger,
    /// Follow the restore request until it names its job.
    TriggerPoll,
    /// Follow the restore job until it ends.
    Track,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedeployPhase {
    Deploy,
    DeployPoll,
    ReinstallAde,
    AdePoll,
    Verify,
}

/// A worker message of a restore: the ticket, the phase to run, and how many polls came before.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseMessage<P> {
    pub ticket_id: TicketId,
    pub phase: P,
    #[serde(default)]
    pub poll: u32,
}

/// `restore-vm` queue messages.
pub type RestoreVmMessage = PhaseMessage<RestorePhase>;
/// `redeploy-vm` queue messages.
pub type RedeployMessage = PhaseMessage<RedeployPhase>;

/// Sends a phase of one of the two restore workers (deterministic id: a redelivered step re-sends
/// the same message, which Service Bus duplicate detection drops).
async fn send_phase<P: Serialize + Sync>(
    ctx: &Context,
    queue: &str,
    worker: &str,
    (ticket, phase, name): (&TicketId, P, &str),
    poll: u32,
    delay: Option<Duration>,
) -> Result<(), WorkflowError> {
    let id = format!("{ticket}-{worker}-{name}-{poll}");
    let body = PhaseMessage {
        ticket_id: ticket.clone(),
        phase,
        poll,
    };
    send_json(ctx, queue, &id, &body, delay, Some(ticket.as_str())).await
}

impl Phase<RestoreOperation> for RestorePhase {
    fn name(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::TriggerPoll => "trigger-poll",
            Self::Track => "track",
        }
    }
    fn step(self) -> RestoreStep {
        match self {
            Self::Trigger | Self::TriggerPoll => RestoreStep::RestoreDisks,
            Self::Track => RestoreStep::TrackRestoreJob,
        }
    }
    async fn send(
        self,
        ctx: &Context,
        op: &RestoreOperation,
        poll: u32,
        delay: Option<Duration>,
    ) -> Result<(), WorkflowError> {
        let queue = &ctx.settings.queues.restore_vm;
        let what = (&op.ticket_id, self, self.name());
        send_phase(ctx, queue, "restore", what, poll, delay).await
    }
}

impl Phase<RestoreOperation> for RedeployPhase {
    fn name(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::DeployPoll => "deploy-poll",
            Self::ReinstallAde => "reinstall-ade",
            Self::AdePoll => "ade-poll",
            Self::Verify => "verify",
        }
    }
    fn step(self) -> RestoreStep {
        match self {
            Self::Deploy | Self::DeployPoll => RestoreStep::Deploy,
            Self::ReinstallAde | Self::AdePoll => RestoreStep::ReinstallAde,
            Self::Verify => RestoreStep::Verify,
        }
    }
    async fn send(
        self,
        ctx: &Context,
        op: &RestoreOperation,
        poll: u32,
        delay: Option<Duration>,
    ) -> Result<(), WorkflowError> {
        let queue = &ctx.settings.queues.redeploy_vm;
        let what = (&op.ticket_id, self, self.name());
        send_phase(ctx, queue, "redeploy", what, poll, delay).await
    }
}

impl Operation for RestoreOperation {
    type Id = TicketId;
    type Step = RestoreStep;
    type Detail = RestoreDetail;
    const UNKNOWN: &'static str = "UnknownRestore";

    fn key(id: &TicketId) -> String {
        restore_key(id)
    }
    fn missing(id: &TicketId) -> String {
        format!("restore ticket {id} has no restore document")
    }
    fn id(&self) -> &TicketId {
        &self.ticket_id
    }
    fn steps(&self) -> &Steps<RestoreStep, RestoreDetail> {
        &self.steps
    }
    fn steps_mut(&mut self) -> &mut Steps<RestoreStep, RestoreDetail> {
        &mut self.steps
    }
    fn is_finished(&self) -> bool {
        self.status.is_final()
    }

    /// Remember when the step was first started: a restore job started by a crashed attempt is
    /// found by its start time.
    fn on_claimed(&mut self, step: RestoreStep, at: DateTime<Utc>) {
        let d = self.steps.detail_mut(step);
        d.started_at.get_or_insert(at);
    }

    /// The ticket gets its latest status again; a restore job already known is followed again.
    async fn resume(&self, ctx: &Context, step: RestoreStep) -> Result<(), WorkflowError> {
        resend_latest(ctx, self).await?;
        let job_known = self.azure.restore_job_id.is_some();
        if step == RestoreStep::RestoreDisks && !self.status.is_final() && job_known {
            RestorePhase::Track.send(ctx, self, 0, None).await?;
        }
        Ok(())
    }

    /// Ends the restore as `failed`: keeps everything restored (nothing is cleaned up), records
    /// the Azure error and tells a human what to do.
    async fn fail_step(
        ctx: &Context,
        ticket: &TicketId,
        step: RestoreStep,
        f: Failure<'_>,
    ) -> Result<String, WorkflowError> {
        let at = engine::now(ctx);
        // Azure's error text can quote a URL with its SAS: the document keeps it redacted too.
        let message = ade_backup_shared::telemetry::redact_owned(f.message.to_string());
        let f = Failure {
            message: &message,
            ..f
        };
        engine::update_reporting::<RestoreOperation>(ctx, ticket, |op, sent| {
            if op.status.is_final() {
                return false;
            }
            op.steps.fail(step, at, f.code, f.message);
            op.last_error = Some(ErrorRecord {
                at,
                step: step.as_str().to_string(),
                code: f.code.to_string(),
                message: f.message.to_string(),
            });
            let why = Why {
                reason: Some(f.code),
                field: None,
                next_action: Some(f.next_action),
            };
            *sent = Some(push(
                op,
                at,
                RestoreStatus::Failed,
                Some(step),
                f.message.into(),
                why,
            ));
            true
        })
        .await?;
        let (reason, message) = (f.code, f.message);
        tracing::warn!(ticket = %ticket, step = step.as_str(), reason, "restore failed: {message}");
        Ok(format!("{ticket}: failed at {step}: {reason}: {message}"))
    }
}

impl Reporting for RestoreOperation {
    type Report = RestoreStatusUpdate;

    /// Sends the update (and any earlier one `replyTo` did not accept) to the ticketing system.
    async fn publish(&self, ctx: &Context, u: &RestoreStatusUpdate) -> Result<(), WorkflowError> {
        deliver(ctx, self, Some(u)).await
    }
}

/// `fail_step` with the workflow's own arguments.
async fn fail(
    ctx: &Context,
    ticket: &TicketId,
    step: RestoreStep,
    code: &str,
    message: &str,
    next_action: &str,
) -> Result<String, WorkflowError> {
    let failure = Failure {
        code,
        message,
        next_action,
    };
    RestoreOperation::fail_step(ctx, ticket, step, failure).await
}

/// What a `rejected` / `failed` status carries besides its message.
#[derive(Default, Clone, Copy)]
struct Why<'a> {
    reason: Option<&'a str>,
    field: Option<&'a str>,
    next_action: Option<&'a str>,
}

/// Pushes a status with its details, keeping the history entry and the returned update equal.
fn push(
    op: &mut RestoreOperation,
    at: DateTime<Utc>,
    status: RestoreStatus,
    step: Option<RestoreStep>,
    message: String,
    why: Why<'_>,
) -> RestoreStatusUpdate {
    // The status goes to the ticketing system: its texts are redacted (an Azure error can quote
    // a SAS URL or a secret).
    use ade_backup_shared::telemetry::redact_owned;
    let mut u = op.push_status(at, status, step, redact_owned(message));
    u.reason = why.reason.map(|r| redact_owned(r.to_string()));
    u.field = why.field.map(str::to_string);
    u.next_action = why.next_action.map(|n| redact_owned(n.to_string()));
    if let Some(last) = op.history.last_mut() {
        *last = u.clone();
    }
    u
}

/// [`engine::update_reporting`] for a restore: the status goes to the ticket once the write landed.
async fn update_reporting(
    ctx: &Context,
    ticket: &TicketId,
    f: impl FnMut(&mut RestoreOperation, &mut Option<RestoreStatusUpdate>) -> bool + Send,
) -> Result<RestoreOperation, WorkflowError> {
    engine::update_reporting::<RestoreOperation>(ctx, ticket, f).await
}

/// Sends one status update to the ticketing system's queue.
async fn send_status(
    ctx: &Context,
    queue: &str,
    update: &RestoreStatusUpdate,
) -> Result<(), WorkflowError> {
    let id = format!("{}-{}-{}", update.ticket_id, update.sequence, update.status);
    send_json(ctx, queue, &id, update, None, Some(&update.ticket_id)).await
}

/// Sends `latest` to `replyTo`, after the updates an earlier attempt could not deliver (same
/// message ids: Service Bus drops what did arrive). A reply that fails is recorded on the ticket
/// (`undelivered`, `replyError`, shown by `ade-backup status`) and tried again with the next
/// status; it never fails the step that produced it.
async fn deliver(
    ctx: &Context,
    op: &RestoreOperation,
    latest: Option<&RestoreStatusUpdate>,
) -> Result<(), WorkflowError> {
    let Some(queue) = op.reply_to.as_deref() else {
        return Ok(());
    };
    let mut due: Vec<&RestoreStatusUpdate> = op
        .history
        .iter()
        .filter(|u| op.undelivered.contains(&u.sequence))
        .collect();
    due.extend(latest.filter(|l| !op.undelivered.contains(&l.sequence)));
    let mut failed = Vec::new();
    let mut last_error = None;
    for u in due {
        if let Err(e) = send_status(ctx, queue, u).await {
            tracing::warn!(ticket = %op.ticket_id, sequence = u.sequence, "status not delivered to replyTo {queue}: {}", engine::chain(&e));
            failed.push(u.sequence);
            last_error = Some(format!(
                "status {} ({}) not delivered to {queue}: {}",
                u.sequence,
                u.status,
                engine::chain(&e)
            ));
        }
    }
    if failed == op.undelivered && last_error.is_none() == op.reply_error.is_none() {
        return Ok(());
    }
    engine::update::<RestoreOperation>(ctx, &op.ticket_id, |o| {
        o.undelivered = failed.clone();
        o.reply_error = last_error.clone();
        true
    })
    .await?;
    Ok(())
}

/// Re-sends the latest status (same id: Service Bus drops it inside its duplicate window), with
/// any earlier one that was not delivered.
async fn resend_latest(ctx: &Context, op: &RestoreOperation) -> Result<(), WorkflowError> {
    deliver(ctx, op, op.history.last()).await
}

fn invalid(what: &str) -> WorkflowError {
    WorkflowError::poison("InvalidRestore", what.to_string())
}

fn vault_of(op: &RestoreOperation) -> Result<ResourceId, WorkflowError> {
    op.azure
        .vault_id
        .as_deref()
        .and_then(|v| ResourceId::parse(v).ok())
        .ok_or_else(|| invalid("the restore has no vault id"))
}

fn request_of(op: &RestoreOperation) -> Result<&RestoreRequest, WorkflowError> {
    op.request
        .as_ref()
        .ok_or_else(|| invalid("the restore has no request"))
}

fn ade_of(op: &RestoreOperation) -> Result<&AdeSettings, WorkflowError> {
    op.ade
        .as_ref()
        .ok_or_else(|| invalid("the restore has no ADE settings"))
}

/// Loads the open restore a worker message names; `Err(line)` when there is nothing to do
/// (final already) or the phase polled too long (the ticket fails).
async fn open_restore<P: Phase<RestoreOperation>>(
    ctx: &Context,
    msg: &PhaseMessage<P>,
    next_action: &str,
) -> Result<Result<RestoreOperation, String>, WorkflowError> {
    let op = engine::load_existing::<RestoreOperation>(ctx, &msg.ticket_id).await?;
    if op.status.is_final() {
        return Ok(Err(format!("{}: already {}", op.ticket_id, op.status)));
    }
    let overdue = engine::fail_if_overdue(ctx, &op.ticket_id, msg.phase, msg.poll, next_action);
    if let Some(line) = overdue.await? {
        return Ok(Err(line));
    }
    Ok(Ok(op))
}

/// `, KeyEncryptionKeyURL{sep}…, KekVaultResourceId{sep}…` when the VM has a KEK, for the
/// instructions a human follows to re-enable ADE by hand.
fn kek_clause(ade: &AdeSettings, sep: &str) -> String {
    let Some(kek) = &ade.key_encryption_key_url else {
        return String::new();
    };
    let vault = ade.kek_vault_resource_id.as_ref();
    let vault = vault.map(|v| v.to_string()).unwrap_or_default();
    format!(
        ", KeyEncryptionKeyURL{sep}{}, KekVaultResourceId{sep}{vault}",
        kek.as_str()
    )
}

/// Sends again the same phase later (a long-running thing is still running).
async fn again<P: Phase<RestoreOperation>>(
    ctx: &Context,
    op: &RestoreOperation,
    phase: P,
    poll: u32,
) -> Result<(), WorkflowError> {
    let delay = Some(ctx.settings.workflow.poll_interval);
    phase.send(ctx, op, poll + 1, delay).await
}
