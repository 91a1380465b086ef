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
//! Azure shapes: `begin_restore` follows the spec example
//! `TriggerRestore_RestoreDisks_IaasVMRestoreRequest.json` (recoveryType `RestoreDisks`,
//! `encryptionDetails` from the recovery point's `keyAndSecret`); the template is deployed with a
//! `templateLink` (resources example `PutDeploymentResourceGroupTemplateSpecsWithId.json`
//! shape); the restore template's parameter `VirtualMachineName` is the one Azure Backup's
//! generated template and the simulator use.

use super::{arm_transient, claimant, is_forbidden, redeliver_at, send};
use crate::context::Context;
use crate::domain::ade::{AdeSettings, OsType, ADE_PUBLISHER};
use crate::domain::restore_request::{
    peek_ticket_id, valid_queue_name, RecoveryPointChoice, Rejection, RestoreRequest,
};
use crate::domain::steps::{Claim, StepState};
use crate::handlers::HandlerError;
use crate::host::protocol::ServiceBusMessage;
use crate::records::{
    restore_key, restore_status as rs, vm_record_key, ErrorRecord, RestoreAzureIds,
    RestoreOperation, RestoreStatusUpdate, VmRecord,
};
use ade_backup_shared::arm::recovery_services::{protected_item_id, BackupJobFilter, JobOperation};
use ade_backup_shared::arm::{
    DeploymentRequest, EncryptionDetails, PollOutcome, RecoveryPoint, ResourceGroupRef,
    RestoreDisksRequest, SubscriptionId, VirtualMachine, VmExtension, VmExtensionProperties,
};
use ade_backup_shared::ids::{deterministic_uuid, ResourceId, TicketId};
use ade_backup_shared::state::json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};
use sha2::{Digest, Sha256};

/// Steps of a restore (keys in the document's `steps`, and the `step` of status updates).
pub mod step {
    pub const VALIDATE: &str = "validate";
    pub const RESTORE_DISKS: &str = "restore-disks";
    pub const TRACK_RESTORE: &str = "track-restore-job";
    pub const DEPLOY: &str = "deploy";
    pub const REINSTALL_ADE: &str = "reinstall-ade";
    pub const VERIFY: &str = "verify";
}

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

impl RestorePhase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::TriggerPoll => "trigger-poll",
            Self::Track => "track",
        }
    }
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

/// A phase of one of the restore workers: which queue it travels on and how it is named in
/// message ids.
trait WorkerPhase: Serialize + Copy + Send + Sync {
    /// The worker's part of the message id.
    const WORKER: &'static str;
    fn queue(settings: &crate::settings::Settings) -> &str;
    fn name(self) -> &'static str;
}

impl WorkerPhase for RestorePhase {
    const WORKER: &'static str = "restore";
    fn queue(settings: &crate::settings::Settings) -> &str {
        &settings.queues.restore_vm
    }
    fn name(self) -> &'static str {
        self.as_str()
    }
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

impl RedeployPhase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::DeployPoll => "deploy-poll",
            Self::ReinstallAde => "reinstall-ade",
            Self::AdePoll => "ade-poll",
            Self::Verify => "verify",
        }
    }
}

impl WorkerPhase for RedeployPhase {
    const WORKER: &'static str = "redeploy";
    fn queue(settings: &crate::settings::Settings) -> &str {
        &settings.queues.redeploy_vm
    }
    fn name(self) -> &'static str {
        self.as_str()
    }
}

/// How many times `verify` looks again at a VM that is not running yet before failing.
const VERIFY_ATTEMPTS: u32 = 5;

fn now(ctx: &Context) -> DateTime<Utc> {
    ctx.clock.now()
}

fn lease(ctx: &Context) -> chrono::Duration {
    chrono::Duration::from_std(ctx.settings.workflow.step_lease)
        .unwrap_or_else(|_| chrono::Duration::minutes(2))
}

/// `https://sa.blob.core.windows.net/c/t.json?sv=..&sig=..` → without the query (a SAS is a
/// credential: never stored, never logged).
pub fn strip_query(uri: &str) -> String {
    let cut = uri.find(['?', '#']).unwrap_or(uri.len());
    uri[..cut].to_string()
}

/// ARM deployment name for a ticket: readable, deterministic, at most 64 characters of the
/// allowed set. The hash keeps two tickets that sanitize alike apart.
pub fn deployment_name(ticket: &TicketId) -> String {
    let readable: String = ticket
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let h = deterministic_uuid(&["restore-deployment", ticket.as_str()]).simple();
    format!("adeb-restore-{readable}-{}", &h.to_string()[..8])
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `replyTo` of a request that did not parse, if it is still a usable queue name.
pub fn peek_reply_to(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let q = v.get("replyTo")?.as_str()?;
    valid_queue_name(q).then(|| q.to_string())
}

/// The newest recovery point that fits the request's choice.
pub fn choose_recovery_point<'a>(
    points: &'a [RecoveryPoint],
    choice: &RecoveryPointChoice,
) -> Option<&'a RecoveryPoint> {
    match choice {
        RecoveryPointChoice::Latest => points
            .iter()
            .filter(|p| p.properties.recovery_point_time.is_some())
            .max_by_key(|p| p.properties.recovery_point_time),
        RecoveryPointChoice::Id { id } => points.iter().find(|p| {
            p.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(id))
        }),
        RecoveryPointChoice::Before { before } => points
            .iter()
            .filter(|p| {
                p.properties
                    .recovery_point_time
                    .is_some_and(|t| t < *before)
            })
            .max_by_key(|p| p.properties.recovery_point_time),
    }
}

// ------------------------------------------------------------------------------ documents

async fn load(ctx: &Context, ticket: &TicketId) -> Result<Option<RestoreOperation>, HandlerError> {
    Ok(
        json::get::<RestoreOperation>(ctx.state.as_ref(), &restore_key(ticket))
            .await?
            .map(|(op, _)| op),
    )
}

async fn load_existing(ctx: &Context, ticket: &TicketId) -> Result<RestoreOperation, HandlerError> {
    load(ctx, ticket).await?.ok_or_else(|| {
        HandlerError::poison(
            "UnknownRestore",
            format!("restore ticket {ticket} has no restore document"),
        )
    })
}

/// Writes `op` unless a document for its ticket exists. Returns the stored document and whether
/// this call created it.
async fn create(
    ctx: &Context,
    op: RestoreOperation,
) -> Result<(RestoreOperation, bool), HandlerError> {
    let mut created = false;
    let stored = json::update::<RestoreOperation, HandlerError, _>(
        ctx.state.as_ref(),
        &restore_key(&op.ticket_id),
        |cur| {
            created = cur.is_none();
            Ok(if cur.is_some() {
                None
            } else {
                Some(op.clone())
            })
        },
    )
    .await?;
    Ok((stored, created))
}

/// Applies `f` (conditional write, retried on conflict). `f` returns whether it changed anything.
async fn update(
    ctx: &Context,
    ticket: &TicketId,
    mut f: impl FnMut(&mut RestoreOperation) -> bool + Send,
) -> Result<RestoreOperation, HandlerError> {
    json::update::<RestoreOperation, HandlerError, _>(
        ctx.state.as_ref(),
        &restore_key(ticket),
        |cur| {
            let Some(cur) = cur else {
                return Err(HandlerError::poison(
                    "UnknownRestore",
                    format!("restore ticket {ticket} has no restore document"),
                ));
            };
            let mut next = cur.clone();
            Ok(f(&mut next).then_some(next))
        },
    )
    .await
}

/// [`update`] for a change that may push a status (into the closure's second argument): the
/// status is sent to the ticketing system only after the write has landed, and only if the
/// attempt that landed pushed it (a retried attempt starts with none).
async fn update_reporting(
    ctx: &Context,
    ticket: &TicketId,
    mut f: impl FnMut(&mut RestoreOperation, &mut Option<RestoreStatusUpdate>) -> bool + Send,
) -> Result<RestoreOperation, HandlerError> {
    let mut sent = None;
    let op = update(ctx, ticket, |o| {
        sent = None;
        f(o, &mut sent)
    })
    .await?;
    if let Some(u) = &sent {
        send_status(ctx, op.reply_to.as_deref(), u).await?;
    }
    Ok(op)
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
    status: &str,
    step: Option<&str>,
    message: String,
    why: Why<'_>,
) -> RestoreStatusUpdate {
    let mut u = op.push_status(at, status, step, message);
    u.reason = why.reason.map(str::to_string);
    u.field = why.field.map(str::to_string);
    u.next_action = why.next_action.map(str::to_string);
    if let Some(last) = op.history.last_mut() {
        *last = u.clone();
    }
    u
}

/// Sends one status update to the ticketing system's queue.
async fn send_status(
    ctx: &Context,
    reply_to: Option<&str>,
    update: &RestoreStatusUpdate,
) -> Result<(), HandlerError> {
    let Some(queue) = reply_to else {
        return Ok(());
    };
    let id = format!("{}-{}-{}", update.ticket_id, update.sequence, update.status);
    send(ctx, queue, &id, update, None, Some(&update.ticket_id)).await
}

/// Re-sends the latest status (same id: Service Bus drops it inside its duplicate window).
async fn resend_latest(ctx: &Context, op: &RestoreOperation) -> Result<(), HandlerError> {
    if let Some(last) = op.history.last() {
        send_status(ctx, op.reply_to.as_deref(), last).await?;
    }
    Ok(())
}

/// Sends the next phase of a restore worker (deterministic id: a redelivered step re-sends the
/// same message, which Service Bus duplicate detection drops).
async fn send_phase<P: WorkerPhase>(
    ctx: &Context,
    ticket: &TicketId,
    phase: P,
    poll: u32,
    delay: Option<std::time::Duration>,
) -> Result<(), HandlerError> {
    let id = format!("{ticket}-{}-{}-{poll}", P::WORKER, phase.name());
    let body = PhaseMessage {
        ticket_id: ticket.clone(),
        phase,
        poll,
    };
    send(
        ctx,
        P::queue(&ctx.settings),
        &id,
        &body,
        delay,
        Some(ticket.as_str()),
    )
    .await
}

/// What [`claim_step`] decided for this delivery.
enum Claimed {
    /// The step is ours: do it.
    Go(RestoreOperation),
    /// Nothing to do here: the step is done (`done`; the latest status was re-sent) or a live
    /// invocation holds it (this message comes back when its lease ends).
    Settled {
        op: RestoreOperation,
        done: bool,
        line: String,
    },
}

/// Claims `step_name` for this delivery and settles the two "not mine" answers the same way for
/// every step; `what` names the step in the log line.
async fn claim_step(
    ctx: &Context,
    ticket: &TicketId,
    step_name: &str,
    what: &str,
    by: &str,
    delivery: &ServiceBusMessage,
) -> Result<Claimed, HandlerError> {
    let (op, claim) = claim(ctx, ticket, step_name, by).await?;
    match claim {
        Claim::Acquired => Ok(Claimed::Go(op)),
        Claim::AlreadyDone => {
            resend_latest(ctx, &op).await?;
            Ok(Claimed::Settled {
                op,
                done: true,
                line: format!("{ticket}: {what} is already done"),
            })
        }
        Claim::HeldByOther { until } => {
            redeliver_at(ctx, delivery, until).await?;
            Ok(Claimed::Settled {
                op,
                done: false,
                line: format!(
                    "{ticket}: {what} is in progress elsewhere until {until}; will look again"
                ),
            })
        }
    }
}

/// Claims a step of an open restore.
async fn claim(
    ctx: &Context,
    ticket: &TicketId,
    step_name: &str,
    by: &str,
) -> Result<(RestoreOperation, Claim), HandlerError> {
    let at = now(ctx);
    let lease = lease(ctx);
    let mut outcome = Claim::AlreadyDone;
    let op = update(ctx, ticket, |op| {
        if rs::is_final(&op.status) {
            outcome = Claim::AlreadyDone;
            return false;
        }
        outcome = op.steps.claim(step_name, by, at, lease);
        if outcome == Claim::Acquired {
            // Remember when the step was first started: a restore job started by a crashed
            // attempt is found by its start time.
            let mut d = op.steps.detail(step_name).cloned().unwrap_or(j!({}));
            if d.get("startedAt").is_none() {
                d["startedAt"] = j!(at);
                op.steps.set_detail(step_name, d);
            }
        }
        outcome == Claim::Acquired
    })
    .await?;
    if rs::is_final(&op.status) {
        return Ok((op, Claim::AlreadyDone));
    }
    Ok((op, outcome))
}

fn merge_detail(op: &mut RestoreOperation, step_name: &str, key: &str, value: Value) {
    let mut d = op.steps.detail(step_name).cloned().unwrap_or(j!({}));
    d[key] = value;
    op.steps.set_detail(step_name, d);
}

fn detail_of(op: &RestoreOperation, step_name: &str, key: &str) -> Option<Value> {
    op.steps.detail(step_name)?.get(key).cloned()
}

/// Ends the restore as `failed`: keeps everything restored (nothing is cleaned up), records the
/// Azure error and tells a human what to do.
async fn fail(
    ctx: &Context,
    ticket: &TicketId,
    step_name: &str,
    reason: &str,
    message: &str,
    next_action: &str,
) -> Result<String, HandlerError> {
    let at = now(ctx);
    update_reporting(ctx, ticket, |op, sent| {
        if rs::is_final(&op.status) {
            return false;
        }
        op.steps.fail(step_name, at, reason, message);
        op.last_error = Some(ErrorRecord {
            at,
            step: step_name.to_string(),
            code: reason.to_string(),
            message: message.to_string(),
        });
        *sent = Some(push(
            op,
            at,
            rs::FAILED,
            Some(step_name),
            message.to_string(),
            Why {
                reason: Some(reason),
                field: None,
                next_action: Some(next_action),
            },
        ));
        true
    })
    .await?;
    tracing::warn!(ticket = %ticket, step = step_name, reason, "restore failed: {message}");
    Ok(format!(
        "{ticket}: failed at {step_name}: {reason}: {message}"
    ))
}

/// A refusal found while validating against Azure (becomes a `rejected` status).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: String,
    pub field: String,
    pub message: String,
    pub next_action: Option<String>,
}

impl Refusal {
    fn new(code: &str, field: &str, message: impl Into<String>, next: Option<String>) -> Self {
        Self {
            code: code.to_string(),
            field: field.to_string(),
            message: message.into(),
            next_action: next,
        }
    }
}

impl From<Rejection> for Refusal {
    fn from(r: Rejection) -> Self {
        let next = match r.code.as_str() {
            "unsupported-restore-type" => Some("Submit a new ticket with restoreType restoreDisks (or no restoreType): ade-backup restores the disks, redeploys the VM and reinstalls ADE.".to_string()),
            "cross-subscription" => Some("Choose a target resource group and staging storage account in the VM's subscription, and submit a new ticket.".to_string()),
            _ => Some(format!("Fix {} and submit the request again under a new ticket id.", r.field)),
        };
        Self {
            message: format!("{}: {}", r.field, r.rule),
            code: r.code,
            field: r.field,
            next_action: next,
        }
    }
}

// ------------------------------------------------------------------------------ OnRestoreRequest

/// What the accepted restore will use.
struct Plan {
    ade: AdeSettings,
    vault: ResourceId,
    region: String,
    recovery_point_id: String,
    recovery_point_time: Option<DateTime<Utc>>,
    warnings: Vec<String>,
}

/// Handles one message of `restore-requests`, already parsed by the handler.
pub async fn submit(
    ctx: &Context,
    parsed: Result<RestoreRequest, Rejection>,
    body: &[u8],
) -> Result<String, HandlerError> {
    let req = match parsed {
        Ok(r) => r,
        Err(rej) => return reject_unparsed(ctx, rej, body).await,
    };
    if let Some(existing) = load(ctx, &req.ticket_id).await? {
        return answer_existing(ctx, existing, &req.fingerprint, req.reply_to.as_deref()).await;
    }
    match validate(ctx, &req).await? {
        Err(refusal) => {
            record_rejection(
                ctx,
                Some(&req),
                &req.ticket_id,
                &req.fingerprint,
                req.reply_to.as_deref(),
                req.requested_by.as_deref(),
                refusal,
            )
            .await
        }
        Ok(plan) => accept(ctx, req, plan).await,
    }
}

async fn reject_unparsed(
    ctx: &Context,
    rej: Rejection,
    body: &[u8],
) -> Result<String, HandlerError> {
    let Some(ticket) = peek_ticket_id(body) else {
        return Err(HandlerError::poison(
            "InvalidRestoreRequest",
            format!("{rej} — and the message has no readable ticketId, so it cannot be answered"),
        ));
    };
    let fingerprint = format!("unparsed-{}", sha256_hex(body));
    let reply_to = peek_reply_to(body);
    if let Some(existing) = load(ctx, &ticket).await? {
        if existing.fingerprint == fingerprint {
            resend_latest(ctx, &existing).await?;
            return Ok(format!(
                "{ticket}: duplicate of a rejected request; status re-sent"
            ));
        }
        // A malformed message must not change a ticket that already exists: answer it alone.
        let refusal = Refusal::from(rej);
        reply_unrecorded(
            ctx,
            &existing.ticket_id,
            reply_to.as_deref(),
            &fingerprint,
            &refusal,
        )
        .await?;
        return Ok(format!(
            "{ticket}: malformed request for an existing ticket rejected ({}); the ticket's restore is unchanged",
            refusal.code
        ));
    }
    record_rejection(
        ctx,
        None,
        &ticket,
        &fingerprint,
        reply_to.as_deref(),
        None,
        Refusal::from(rej),
    )
    .await
}

/// A reply about a message that was not applied to the ticket (sequence 0, not in the history).
async fn reply_unrecorded(
    ctx: &Context,
    ticket: &TicketId,
    reply_to: Option<&str>,
    fingerprint: &str,
    refusal: &Refusal,
) -> Result<(), HandlerError> {
    let Some(queue) = reply_to else {
        return Ok(());
    };
    let update = RestoreStatusUpdate {
        ticket_id: ticket.as_str().to_string(),
        sequence: 0,
        status: rs::REJECTED.to_string(),
        at: now(ctx),
        step: Some(step::VALIDATE.to_string()),
        message: refusal.message.clone(),
        reason: Some(refusal.code.clone()),
        field: Some(refusal.field.clone()),
        next_action: refusal.next_action.clone(),
        azure: RestoreAzureIds::default(),
    };
    let fp: String = fingerprint.chars().rev().take(16).collect();
    let id = format!("{ticket}-0-rejected-{}-{fp}", refusal.code);
    send(ctx, queue, &id, &update, None, Some(ticket.as_str())).await
}

async fn answer_existing(
    ctx: &Context,
    existing: RestoreOperation,
    fingerprint: &str,
    reply_to: Option<&str>,
) -> Result<String, HandlerError> {
    let ticket = existing.ticket_id.clone();
    if existing.fingerprint == fingerprint {
        resend_latest(ctx, &existing).await?;
        // The first delivery may have crashed between recording `accepted` and sending the
        // first step; the step message has a fixed id, so a repeat is dropped or is a no-op.
        if existing.status == rs::ACCEPTED {
            send_phase(ctx, &ticket, RestorePhase::Trigger, 0, None).await?;
        }
        return Ok(format!(
            "{ticket}: duplicate submission; current status {} re-sent, no new restore",
            existing.status
        ));
    }
    let refusal = Refusal::new(
        code::CONFLICT,
        "ticketId",
        format!(
            "ticket {ticket} already has a different restore request (status {}); a ticket id identifies one request",
            existing.status
        ),
        Some("Use a new ticket id for a different restore, or resubmit the original request unchanged to get its status.".to_string()),
    );
    reply_unrecorded(
        ctx,
        &ticket,
        reply_to.or(existing.reply_to.as_deref()),
        fingerprint,
        &refusal,
    )
    .await?;
    Ok(format!(
        "{ticket}: conflicting request rejected; the existing restore is unchanged"
    ))
}

#[allow(clippy::too_many_arguments)]
async fn record_rejection(
    ctx: &Context,
    req: Option<&RestoreRequest>,
    ticket: &TicketId,
    fingerprint: &str,
    reply_to: Option<&str>,
    requested_by: Option<&str>,
    refusal: Refusal,
) -> Result<String, HandlerError> {
    let at = now(ctx);
    let mut op = RestoreOperation {
        ticket_id: ticket.clone(),
        fingerprint: fingerprint.to_string(),
        request: req.cloned(),
        status: rs::REJECTED.to_string(),
        created_at: at,
        updated_at: at,
        reply_to: reply_to.map(str::to_string),
        requested_by: requested_by.map(str::to_string),
        ade: None,
        steps: Default::default(),
        azure: RestoreAzureIds::default(),
        history: vec![],
        warnings: vec![],
        region: None,
        last_error: None,
    };
    op.steps
        .fail(step::VALIDATE, at, &refusal.code, &refusal.message);
    push(
        &mut op,
        at,
        rs::REJECTED,
        Some(step::VALIDATE),
        refusal.message.clone(),
        Why {
            reason: Some(&refusal.code),
            field: Some(&refusal.field),
            next_action: refusal.next_action.as_deref(),
        },
    );
    let (stored, created) = create(ctx, op).await?;
    if !created {
        // Lost a race with a concurrent delivery: answer as for any existing ticket.
        return answer_existing(ctx, stored, fingerprint, reply_to).await;
    }
    resend_latest(ctx, &stored).await?;
    Ok(format!(
        "{ticket}: rejected ({}): {}",
        refusal.code, refusal.message
    ))
}

async fn accept(ctx: &Context, req: RestoreRequest, plan: Plan) -> Result<String, HandlerError> {
    let at = now(ctx);
    let ticket = req.ticket_id.clone();
    let item = protected_item_id(&plan.vault, &req.vm_resource_id)
        .ok()
        .map(|i| i.to_string());
    let mut op = RestoreOperation {
        ticket_id: ticket.clone(),
        fingerprint: req.fingerprint.clone(),
        request: Some(req.clone()),
        status: rs::ACCEPTED.to_string(),
        created_at: at,
        updated_at: at,
        reply_to: req.reply_to.clone(),
        requested_by: req.requested_by.clone(),
        ade: Some(plan.ade.clone()),
        steps: Default::default(),
        azure: RestoreAzureIds {
            vault_id: Some(plan.vault.to_string()),
            protected_item_id: item,
            recovery_point_id: Some(plan.recovery_point_id.clone()),
            recovery_point_time: plan.recovery_point_time,
            ..Default::default()
        },
        history: vec![],
        warnings: plan.warnings.clone(),
        region: Some(plan.region.clone()),
        last_error: None,
    };
    op.steps.finish(step::VALIDATE, at, None);
    let when = plan
        .recovery_point_time
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "unknown time".into());
    push(
        &mut op,
        at,
        rs::ACCEPTED,
        Some(step::VALIDATE),
        format!(
            "accepted: restore {} ({:?}) from recovery point {} ({when}) into {}, staging in {}",
            req.vm_resource_id,
            plan.ade.os_type,
            plan.recovery_point_id,
            req.target_resource_group.id(),
            req.staging_storage_account_id
        ),
        Why::default(),
    );
    let (stored, created) = create(ctx, op).await?;
    if !created {
        return answer_existing(ctx, stored, &req.fingerprint, req.reply_to.as_deref()).await;
    }
    resend_latest(ctx, &stored).await?;
    send_phase(ctx, &ticket, RestorePhase::Trigger, 0, None).await?;
    Ok(format!(
        "{ticket}: accepted; restoring {} from {}",
        req.vm_resource_id, plan.recovery_point_id
    ))
}

/// The rules that need Azure (and the configured allowlist). `Ok(Err(_))`: a rejection.
async fn validate(
    ctx: &Context,
    req: &RestoreRequest,
) -> Result<Result<Plan, Refusal>, HandlerError> {
    if let Err(rej) = ctx.settings.workflow.restore_allowlist.check(req) {
        tracing::warn!(
            security_event = true,
            ticket = %req.ticket_id,
            requested_by = req.requested_by.as_deref().unwrap_or(""),
            field = %rej.field,
            vm = %req.vm_resource_id,
            "restore request outside the restore allowlist refused: {}",
            rej.rule
        );
        let mut r = Refusal::from(rej);
        r.code = code::FORBIDDEN.to_string();
        r.next_action = Some("Ask the ade-backup operators to add the target to ADE_BACKUP_RESTORE_ALLOWLIST if it is legitimate, or choose an allowed target.".into());
        return Ok(Err(r));
    }
    let vm = &req.vm_resource_id;
    let record = json::get::<VmRecord>(ctx.state.as_ref(), &vm_record_key(vm))
        .await?
        .map(|(r, _)| r);
    let not_protected = |why: String| {
        Refusal::new(
            code::NOT_PROTECTED,
            "vmResourceId",
            why,
            Some("Only VMs protected by ade-backup can be restored by ticket: their ADE settings were recorded when they were protected. Let ade-backup protect the VM (it does when ADE is enabled), or restore it by hand.".into()),
        )
    };
    // A VM Azure Backup protected before ade-backup saw it: record its ADE settings now, while
    // the VM exists, and go on.
    let record = match record {
        Some(r) if r.ade.is_some() && r.azure.vault_id.is_some() => Some(r),
        other => super::protect::adopt_protected_vm(ctx, vm).await?.or(other),
    };
    let Some(record) = record else {
        return Ok(Err(not_protected(format!(
            "{vm} is not protected: ade-backup has no record of it, and it is not an ADE VM protected in the vault its protection rule names"
        ))));
    };
    let (Some(ade), Some(vault)) = (
        record.ade.clone(),
        record
            .azure
            .vault_id
            .as_deref()
            .and_then(|v| ResourceId::parse(v).ok()),
    ) else {
        return Ok(Err(not_protected(format!(
            "the record of {vm} has no recorded ADE settings or no Recovery Services vault (status {})",
            record.status
        ))));
    };
    let limits: Vec<&String> = record
        .warnings
        .iter()
        .filter(|w| w.starts_with("ade-restore-limit"))
        .collect();
    if !limits.is_empty() {
        let detail = limits
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        return Ok(Err(Refusal::new(
            code::ADE_RESTORE_LIMIT,
            "vmResourceId",
            format!("Azure Backup cannot restore the ADE settings of this VM: {detail}"),
            Some(format!(
                "Restore by hand: in the vault, restore the disks of the chosen recovery point; create the VM from the restored disks; then re-enable ADE on it with KeyVaultURL {}, KeyVaultResourceId {}{}, VolumeType {}.",
                ade.key_vault_url,
                ade.key_vault_resource_id,
                ade.key_encryption_key_url
                    .as_ref()
                    .map(|k| format!(", KeyEncryptionKeyURL {}, KekVaultResourceId {}", k.as_str(), ade.kek_vault_resource_id.as_ref().map(|v| v.to_string()).unwrap_or_default()))
                    .unwrap_or_default(),
                ade.volume_type.clone().unwrap_or_else(|| "All".into())
            )),
        )));
    }
    match ctx.arm.get_key_vault(&ade.key_vault_resource_id).await {
        Ok(kv) if !kv.enabled_for_disk_encryption() => {
            return Ok(Err(Refusal::new(
                code::KEY_VAULT_NOT_ENABLED,
                "vmResourceId",
                format!(
                    "the Key Vault {} holding the VM's disk encryption secret has enabledForDiskEncryption=false: a restored VM could not fetch its passphrase",
                    ade.key_vault_resource_id
                ),
                Some(format!(
                    "Enable it (az keyvault update --name {} --enabled-for-disk-encryption true) and submit the request again under a new ticket id.",
                    ade.key_vault_resource_id.name()
                )),
            )))
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() || is_forbidden(&e) => {
            return Ok(Err(Refusal::new(
                code::KEY_VAULT_UNAVAILABLE,
                "vmResourceId",
                format!(
                    "the Key Vault {} holding the VM's disk encryption secret cannot be read: {e}",
                    ade.key_vault_resource_id
                ),
                Some("Restore or recover the Key Vault (soft delete), or grant ade-backup Microsoft.KeyVault/vaults/read on it, then submit a new ticket.".into()),
            )))
        }
        Err(e) => return Err(arm_transient("reading the Key Vault", &e)),
    }
    let vault_obj = match ctx.arm.get_recovery_services_vault(&vault).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => {
            return Ok(Err(not_protected(format!(
                "the Recovery Services vault {vault} recorded for this VM no longer exists"
            ))))
        }
        Err(e) => return Err(arm_transient("reading the Recovery Services vault", &e)),
    };
    let region = vault_obj.location.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    match staging_location(ctx, &req.staging_storage_account_id).await? {
        None => {
            return Ok(Err(Refusal::new(
                code::STAGING_NOT_FOUND,
                "stagingStorageAccountId",
                format!("the storage account {} does not exist (or ade-backup cannot see it)", req.staging_storage_account_id),
                Some("Create it (general-purpose v2, in the vault's region) or name another one, and submit a new ticket.".into()),
            )))
        }
        Some(loc) if !loc.eq_ignore_ascii_case(&region) => {
            if ctx.settings.workflow.allow_cross_region_restore {
                warnings.push(format!(
                    "staging-region: the staging account is in {loc}, the vault in {region}; allowed by ADE_BACKUP_ALLOW_CROSS_REGION_RESTORE, Azure Backup decides whether it accepts it"
                ));
            } else {
                return Ok(Err(Refusal::new(
                    code::STAGING_REGION,
                    "stagingStorageAccountId",
                    format!("the staging storage account is in {loc}; Azure Backup restores the disks of this VM in the vault's region {region}"),
                    Some(format!("Name a storage account in {region} and submit a new ticket.")),
                )));
            }
        }
        Some(_) => {}
    }
    let points = match ctx.arm.list_recovery_points(&vault, vm).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => {
            return Ok(Err(not_protected(format!(
                "the vault {vault} has no protected item for {vm}"
            ))))
        }
        Err(e) => return Err(arm_transient("listing recovery points", &e)),
    };
    let Some(rp) = choose_recovery_point(&points, &req.recovery_point) else {
        let newest = points
            .iter()
            .filter_map(|p| p.properties.recovery_point_time)
            .max()
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "none".into());
        return Ok(Err(Refusal::new(
            code::RECOVERY_POINT_NOT_FOUND,
            "recoveryPoint",
            format!(
                "no recovery point matches {:?} ({} recovery point(s), newest {newest})",
                req.recovery_point,
                points.len()
            ),
            Some("Choose \"latest\", an existing recovery point id, or a later time.".into()),
        )));
    };
    let Some(rp_id) = rp.name.clone() else {
        return Err(HandlerError::Transient(
            "a recovery point has no name in the list response".into(),
        ));
    };
    Ok(Ok(Plan {
        ade,
        vault,
        region,
        recovery_point_id: rp_id,
        recovery_point_time: rp.properties.recovery_point_time,
        warnings,
    }))
}

/// Region of the staging storage account, by Resource Graph (the ARM client has no storage
/// account GET). The id is a validated `ResourceId`, whose segments cannot hold a quote, so it
/// cannot break out of the KQL literal.
async fn staging_location(
    ctx: &Context,
    account: &ResourceId,
) -> Result<Option<String>, HandlerError> {
    let sub = SubscriptionId::parse(account.subscription())
        .map_err(|e| HandlerError::poison("InvalidSubscription", e.to_string()))?;
    let query = format!(
        "resources | where type =~ 'microsoft.storage/storageaccounts' and id =~ '{}'",
        account
    );
    let rows = ctx
        .arm
        .resource_graph_query(
            &ade_backup_shared::arm::GraphScope::Subscriptions(vec![sub]),
            &query,
        )
        .await
        .map_err(|e| arm_transient("looking up the staging storage account", &e))?;
    Ok(rows
        .iter()
        .find(|r| {
            r.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(&account.to_string()))
        })
        .and_then(|r| r.get("location").and_then(Value::as_str))
        .map(str::to_string))
}

// ------------------------------------------------------------------------------ RestoreVm

/// One `restore-vm` message.
pub async fn restore_vm(
    ctx: &Context,
    msg: &RestoreVmMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let op = load_existing(ctx, &msg.ticket_id).await?;
    if rs::is_final(&op.status) {
        return Ok(format!("{}: already {}", op.ticket_id, op.status));
    }
    if msg.poll > ctx.settings.workflow.max_polls {
        return fail(
            ctx,
            &op.ticket_id,
            step::RESTORE_DISKS,
            code::TIMED_OUT,
            &format!("the restore did not finish after {} polls", msg.poll),
            "Look at the restore job in the vault's Backup jobs; when it completed, deploy the template it wrote by hand.",
        )
        .await;
    }
    match msg.phase {
        RestorePhase::Trigger => trigger(ctx, op, &claimant(delivery), delivery).await,
        RestorePhase::TriggerPoll => trigger_poll(ctx, op, msg.poll).await,
        RestorePhase::Track => track_restore(ctx, op, msg.poll).await,
    }
}

fn vault_of(op: &RestoreOperation) -> Result<ResourceId, HandlerError> {
    op.azure
        .vault_id
        .as_deref()
        .and_then(|v| ResourceId::parse(v).ok())
        .ok_or_else(|| HandlerError::poison("InvalidRestore", "the restore has no vault id"))
}

fn request_of(op: &RestoreOperation) -> Result<&RestoreRequest, HandlerError> {
    op.request
        .as_ref()
        .ok_or_else(|| HandlerError::poison("InvalidRestore", "the restore has no request"))
}

fn ade_of(op: &RestoreOperation) -> Result<&AdeSettings, HandlerError> {
    op.ade
        .as_ref()
        .ok_or_else(|| HandlerError::poison("InvalidRestore", "the restore has no ADE settings"))
}

const RESTORE_NEXT: &str = "Look at the restore job in the Recovery Services vault (Backup jobs); anything restored so far is kept. If the job failed on a snapshot-tier recovery point of an ADE VM, retry from a vault-tier recovery point (submit a new ticket with that recovery point id).";

async fn trigger(
    ctx: &Context,
    op: RestoreOperation,
    by: &str,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    let op = match claim_step(
        ctx,
        &ticket,
        step::RESTORE_DISKS,
        "the restore trigger",
        by,
        delivery,
    )
    .await?
    {
        Claimed::Go(op) => op,
        Claimed::Settled { op, done, line } => {
            if done && !rs::is_final(&op.status) && op.azure.restore_job_id.is_some() {
                send_phase(ctx, &ticket, RestorePhase::Track, 0, None).await?;
            }
            return Ok(line);
        }
    };
    let vault = vault_of(&op)?;
    let req = request_of(&op)?.clone();
    // A crash after the trigger and before it was recorded must not start a second restore.
    if let Some(job) = adoptable_restore_job(ctx, &op, &vault, &req.vm_resource_id).await? {
        return record_restore_job(ctx, &ticket, job, "adopted the restore job already running")
            .await;
    }
    let rp_id = op.azure.recovery_point_id.clone().unwrap_or_default();
    let points = ctx
        .arm
        .list_recovery_points(&vault, &req.vm_resource_id)
        .await
        .map_err(|e| arm_transient("listing recovery points", &e))?;
    let Some(rp) = points.iter().find(|p| {
        p.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(&rp_id))
    }) else {
        return fail(
            ctx,
            &ticket,
            step::RESTORE_DISKS,
            code::RECOVERY_POINT_NOT_FOUND,
            &format!("recovery point {rp_id} expired or was deleted before the restore started"),
            "Submit a new ticket with another recovery point.",
        )
        .await;
    };
    let ks = rp.properties.key_and_secret.clone().unwrap_or_default();
    let bek = ks.bek_details.unwrap_or_default();
    let kek = ks.kek_details.unwrap_or_default();
    let encryption = EncryptionDetails {
        encryption_enabled: rp.is_encrypted(),
        kek_url: kek.key_url,
        secret_key_url: bek.secret_url,
        kek_vault_id: kek.key_vault_id,
        secret_key_vault_id: bek.secret_vault_id,
    };
    let region = op.region.clone().unwrap_or_default();
    let target = ResourceGroupRef::new(
        SubscriptionId::parse(&req.target_resource_group.subscription)
            .map_err(|e| HandlerError::poison("InvalidRestore", e.to_string()))?,
        &req.target_resource_group.name,
    )
    .map_err(|e| HandlerError::poison("InvalidRestore", e.to_string()))?;
    let request = match RestoreDisksRequest::new(
        &rp_id,
        &req.vm_resource_id,
        &region,
        &req.staging_storage_account_id,
    ) {
        Ok(r) => r.target_resource_group(&target).encryption(encryption),
        Err(e) => {
            return fail(
                ctx,
                &ticket,
                step::RESTORE_DISKS,
                "invalid-restore-request",
                &e.to_string(),
                RESTORE_NEXT,
            )
            .await
        }
    };
    match ctx
        .arm
        .begin_restore(&vault, &req.vm_resource_id, &request)
        .await
    {
        Ok(pending) => {
            let at = now(ctx);
            let p = serde_json::to_value(&pending).unwrap_or(Value::Null);
            update_reporting(ctx, &ticket, |o, sent| {
                merge_detail(o, step::RESTORE_DISKS, "pending", p.clone());
                *sent = Some(push(
                    o,
                    at,
                    rs::RESTORING_DISKS,
                    Some(step::RESTORE_DISKS),
                    format!(
                        "restoring the disks of recovery point {rp_id} to the staging account {}",
                        req.staging_storage_account_id.name()
                    ),
                    Why::default(),
                ));
                true
            })
            .await?;
            send_phase(
                ctx,
                &ticket,
                RestorePhase::TriggerPoll,
                1,
                Some(poll_delay(ctx, pending.retry_after)),
            )
            .await?;
            Ok(format!("{ticket}: restore triggered"))
        }
        Err(e) if e.is_transient() => Err(arm_transient("triggering the restore", &e)),
        Err(e) => {
            let c = e.code().unwrap_or("restore-failed").to_string();
            fail(
                ctx,
                &ticket,
                step::RESTORE_DISKS,
                &c,
                &e.to_string(),
                RESTORE_NEXT,
            )
            .await
        }
    }
}

fn poll_delay(ctx: &Context, retry_after: Option<std::time::Duration>) -> std::time::Duration {
    let base = ctx.settings.workflow.poll_interval;
    match retry_after {
        Some(ra) => ra.min(base.max(std::time::Duration::from_millis(1))),
        None => base,
    }
}

async fn adoptable_restore_job(
    ctx: &Context,
    op: &RestoreOperation,
    vault: &ResourceId,
    vm: &ResourceId,
) -> Result<Option<String>, HandlerError> {
    let rec = op.steps.get(step::RESTORE_DISKS);
    if rec.map(|r| r.attempts).unwrap_or(0) <= 1 {
        return Ok(None);
    }
    let since = detail_of(op, step::RESTORE_DISKS, "startedAt")
        .and_then(|v| serde_json::from_value::<DateTime<Utc>>(v).ok())
        .or_else(|| match rec.and_then(|r| r.state.as_ref()) {
            Some(StepState::Claimed { at, .. }) => Some(*at),
            _ => None,
        });
    let Some(since) = since else { return Ok(None) };
    let filter = BackupJobFilter {
        operation: Some(JobOperation::Restore),
        status: None,
        start_time: Some(since - chrono::Duration::minutes(5)),
        end_time: None,
    };
    let jobs = ctx
        .arm
        .list_backup_jobs(vault, &filter)
        .await
        .map_err(|e| arm_transient("listing restore jobs", &e))?;
    Ok(jobs
        .into_iter()
        .filter(|jb| {
            jb.properties
                .operation
                .as_deref()
                .is_none_or(|o| o.eq_ignore_ascii_case("Restore"))
                && jb
                    .properties
                    .entity_friendly_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(vm.name()))
                && jb
                    .properties
                    .start_time
                    .is_none_or(|t| t >= since - chrono::Duration::minutes(5))
        })
        .filter_map(|jb| jb.name)
        .next())
}

async fn record_restore_job(
    ctx: &Context,
    ticket: &TicketId,
    job_id: String,
    note: &str,
) -> Result<String, HandlerError> {
    let at = now(ctx);
    update(ctx, ticket, |o| {
        o.steps.finish(step::RESTORE_DISKS, at, None);
        merge_detail(o, step::RESTORE_DISKS, "jobId", j!(job_id));
        o.azure.restore_job_id = Some(job_id.clone());
        true
    })
    .await?;
    send_phase(ctx, ticket, RestorePhase::Track, 0, None).await?;
    Ok(format!("{ticket}: {note}: job {job_id}"))
}

async fn trigger_poll(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    if op.steps.is_done(step::RESTORE_DISKS) {
        send_phase(ctx, &ticket, RestorePhase::Track, 0, None).await?;
        return Ok(format!("{ticket}: restore job already known"));
    }
    let Some(pending) =
        detail_of(&op, step::RESTORE_DISKS, "pending").and_then(|p| serde_json::from_value(p).ok())
    else {
        send_phase(ctx, &ticket, RestorePhase::Trigger, 0, None).await?;
        return Ok(format!(
            "{ticket}: no pending restore recorded; back to the trigger"
        ));
    };
    match ctx.arm.poll_once(&pending).await {
        Ok(PollOutcome::Pending(p)) => {
            send_phase(
                ctx,
                &ticket,
                RestorePhase::TriggerPoll,
                poll + 1,
                Some(poll_delay(ctx, p.retry_after)),
            )
            .await?;
            Ok(format!("{ticket}: waiting for the restore job id"))
        }
        Ok(PollOutcome::Done(out)) => match out.job_id {
            Some(job) => record_restore_job(ctx, &ticket, job, "restore job started").await,
            None => {
                let vault = vault_of(&op)?;
                let vm = request_of(&op)?.vm_resource_id.clone();
                match adoptable_restore_job(ctx, &op, &vault, &vm).await? {
                    Some(job) => record_restore_job(ctx, &ticket, job, "restore job found").await,
                    None => {
                        fail(
                            ctx,
                            &ticket,
                            step::RESTORE_DISKS,
                            "restore-job-unknown",
                            "the restore request finished without naming its job",
                            RESTORE_NEXT,
                        )
                        .await
                    }
                }
            }
        },
        Err(e) if e.is_transient() => Err(arm_transient("polling the restore request", &e)),
        Err(e) => {
            let c = e.code().unwrap_or("restore-failed").to_string();
            fail(
                ctx,
                &ticket,
                step::RESTORE_DISKS,
                &c,
                &e.to_string(),
                RESTORE_NEXT,
            )
            .await
        }
    }
}

async fn track_restore(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    if op.steps.is_done(step::TRACK_RESTORE) {
        resend_latest(ctx, &op).await?;
        send_phase(ctx, &ticket, RedeployPhase::Deploy, 0, None).await?;
        return Ok(format!("{ticket}: disks already restored"));
    }
    let Some(job_id) = op.azure.restore_job_id.clone() else {
        send_phase(ctx, &ticket, RestorePhase::Trigger, 0, None).await?;
        return Ok(format!(
            "{ticket}: no restore job recorded; back to the trigger"
        ));
    };
    let vault = vault_of(&op)?;
    let job = ctx
        .arm
        .get_backup_job(&vault, &job_id)
        .await
        .map_err(|e| arm_transient("reading the restore job", &e))?;
    if !job.is_terminal() {
        send_phase(
            ctx,
            &ticket,
            RestorePhase::Track,
            poll + 1,
            Some(ctx.settings.workflow.poll_interval),
        )
        .await?;
        return Ok(format!(
            "{ticket}: restore job {job_id} {}",
            job.status().unwrap_or("?")
        ));
    }
    if !job.succeeded() {
        let c = job.error_code().unwrap_or("restore-job-failed").to_string();
        let text = job
            .properties
            .error_details
            .first()
            .and_then(|e| e.error_string.clone())
            .unwrap_or_else(|| format!("restore job {job_id} {}", job.status().unwrap_or("?")));
        let next = if c.eq_ignore_ascii_case("UserErrorEncryptedVmRestoreDiskLimitExceeded") {
            "Azure Backup cannot restore the ADE settings of VMs with more than 16 disks or a disk over 4097 GB: create the VM from the restored disks by hand and re-enable ADE with the recorded settings (see the restore document's ade)."
        } else {
            RESTORE_NEXT
        };
        return fail(
            ctx,
            &ticket,
            step::TRACK_RESTORE,
            &c,
            &format!("restore job {job_id} failed: {text}"),
            next,
        )
        .await;
    }
    let Some(template) = job.property("Template Blob Uri").map(strip_query) else {
        return fail(
            ctx,
            &ticket,
            step::TRACK_RESTORE,
            "restore-template-missing",
            &format!("restore job {job_id} completed without a Template Blob Uri"),
            "The disks are restored in the staging account / target resource group: create the VM from them by hand and reinstall ADE with the recorded settings.",
        )
        .await;
    };
    let config = job.property("Config Blob Uri").map(strip_query);
    let at = now(ctx);
    update_reporting(ctx, &ticket, |o, sent| {
        if o.steps.is_done(step::TRACK_RESTORE) {
            return false;
        }
        o.steps.finish(step::TRACK_RESTORE, at, None);
        o.azure.template_blob_uri = Some(template.clone());
        o.azure.config_blob_uri = config.clone();
        *sent = Some(push(
            o,
            at,
            rs::DISKS_RESTORED,
            Some(step::TRACK_RESTORE),
            format!("restore job {job_id} completed; the VM template is at {template}"),
            Why::default(),
        ));
        true
    })
    .await?;
    send_phase(ctx, &ticket, RedeployPhase::Deploy, 0, None).await?;
    Ok(format!("{ticket}: disks restored"))
}

// ------------------------------------------------------------------------------ RedeployVm

/// One `redeploy-vm` message.
pub async fn redeploy(
    ctx: &Context,
    msg: &RedeployMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let op = load_existing(ctx, &msg.ticket_id).await?;
    if rs::is_final(&op.status) {
        return Ok(format!("{}: already {}", op.ticket_id, op.status));
    }
    if msg.poll > ctx.settings.workflow.max_polls {
        return fail(
            ctx,
            &op.ticket_id,
            msg.phase.as_str(),
            code::TIMED_OUT,
            &format!("the {} step did not finish after {} polls", msg.phase.as_str(), msg.poll),
            "Look at the deployment / extension in the target resource group; the restored disks and anything deployed are kept.",
        )
        .await;
    }
    let by = claimant(delivery);
    match msg.phase {
        RedeployPhase::Deploy => deploy(ctx, op, &by, delivery).await,
        RedeployPhase::DeployPoll => deploy_poll(ctx, op, msg.poll).await,
        RedeployPhase::ReinstallAde => reinstall_ade(ctx, op, &by, delivery).await,
        RedeployPhase::AdePoll => ade_poll(ctx, op, msg.poll).await,
        RedeployPhase::Verify => verify(ctx, op, msg.poll).await,
    }
}

fn target_rg(req: &RestoreRequest) -> Result<ResourceGroupRef, HandlerError> {
    SubscriptionId::parse(&req.target_resource_group.subscription)
        .and_then(|s| ResourceGroupRef::new(s, &req.target_resource_group.name))
        .map_err(|e| HandlerError::poison("InvalidRestore", e.to_string()))
}

fn target_vm_name(req: &RestoreRequest) -> String {
    req.target_vm_name
        .clone()
        .unwrap_or_else(|| format!("{}-restored", req.vm_resource_id.name()))
}

fn target_vm_id(req: &RestoreRequest) -> Result<ResourceId, HandlerError> {
    ResourceId::parse(&format!(
        "{}/providers/Microsoft.Compute/virtualMachines/{}",
        req.target_resource_group.id(),
        target_vm_name(req)
    ))
    .map_err(|e| HandlerError::poison("InvalidRestore", e.to_string()))
}

/// Template parameters: the VM name and, when a subnet is given, its network (the parameter
/// names of the template Azure Backup generates for a restore-disks job).
fn deployment_parameters(req: &RestoreRequest) -> Value {
    let mut p = j!({ "VirtualMachineName": { "value": target_vm_name(req) } });
    if let Some(subnet) = &req.target_subnet_id {
        let vnet = subnet
            .parent()
            .map(|v| v.name().to_string())
            .unwrap_or_default();
        p["VirtualNetwork"] = j!({ "value": vnet });
        p["VirtualNetworkResourceGroup"] = j!({ "value": subnet.resource_group() });
        p["Subnet"] = j!({ "value": subnet.name() });
    }
    p
}

const DEPLOY_NEXT: &str = "The restored disks are kept (target resource group and staging storage account). Fix the cause shown (for example a VM with that name already exists), then deploy the template from the restore job by hand or submit a new ticket with another targetVmName.";

async fn deploy(
    ctx: &Context,
    op: RestoreOperation,
    by: &str,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    let op = match claim_step(ctx, &ticket, step::DEPLOY, "the deployment", by, delivery).await? {
        Claimed::Go(op) => op,
        Claimed::Settled { line, .. } => return Ok(line),
    };
    let req = request_of(&op)?.clone();
    let rg = target_rg(&req)?;
    let name = deployment_name(&ticket);
    // Deployments are named after the ticket: an existing one is ours (a crashed attempt).
    let existing = match ctx.arm.get_deployment(&rg, &name).await {
        Ok(d) => Some(d),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(arm_transient("reading the deployment", &e)),
    };
    let note = if let Some(d) = existing {
        format!("adopted deployment {name} ({})", d.state().unwrap_or("?"))
    } else {
        let Some(template) = op.azure.template_blob_uri.clone() else {
            return fail(
                ctx,
                &ticket,
                step::DEPLOY,
                "restore-template-missing",
                "no template was recorded from the restore job",
                DEPLOY_NEXT,
            )
            .await;
        };
        // The template blob is private: read it with our identity (Storage Blob Data Reader on
        // the staging account) and deploy it inline — no SAS is ever minted or logged.
        let template_url = match url::Url::parse(&template) {
            Ok(u) => u,
            Err(e) => {
                return fail(
                    ctx,
                    &ticket,
                    step::DEPLOY,
                    "restore-template-invalid",
                    &format!("the template URI from the restore job is not a URL: {e}"),
                    DEPLOY_NEXT,
                )
                .await;
            }
        };
        let content = match ctx.arm.download_blob_json(&template_url).await {
            Ok(t) => t,
            Err(e) if e.is_transient() => {
                return Err(arm_transient("reading the restore template", &e))
            }
            Err(e) => {
                let c = e
                    .code()
                    .unwrap_or("restore-template-unreadable")
                    .to_string();
                return fail(ctx, &ticket, step::DEPLOY, &c, &format!("the template the restore job wrote could not be read: {e}"), "Grant ade-backup's identity Storage Blob Data Reader on the staging storage account, then redeliver the ticket's RedeployVm message (or deploy the template from the staging account by hand).").await;
            }
        };
        let request = DeploymentRequest::inline(content, Some(deployment_parameters(&req)));
        match ctx.arm.begin_put_deployment(&rg, &name, &request).await {
            Ok(_) => format!("deployment {name} started"),
            Err(e) if e.is_transient() => return Err(arm_transient("starting the deployment", &e)),
            Err(e) => {
                let c = e.code().unwrap_or("deployment-failed").to_string();
                return fail(ctx, &ticket, step::DEPLOY, &c, &e.to_string(), DEPLOY_NEXT).await;
            }
        }
    };
    let at = now(ctx);
    let dep_id = format!(
        "{}/providers/Microsoft.Resources/deployments/{name}",
        req.target_resource_group.id()
    );
    let vm_name = target_vm_name(&req);
    update_reporting(ctx, &ticket, |o, sent| {
        o.azure.deployment_name = Some(name.clone());
        o.azure.deployment_id = Some(dep_id.clone());
        if o.status != rs::DEPLOYING {
            *sent = Some(push(
                o,
                at,
                rs::DEPLOYING,
                Some(step::DEPLOY),
                format!("deploying the VM {vm_name} from the restore template ({note})"),
                Why::default(),
            ));
        }
        true
    })
    .await?;
    send_phase(
        ctx,
        &ticket,
        RedeployPhase::DeployPoll,
        1,
        Some(ctx.settings.workflow.poll_interval),
    )
    .await?;
    Ok(format!("{ticket}: {note}"))
}

async fn deploy_poll(
    ctx: &Context,
    op: RestoreOperation,
    poll: u32,
) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    if op.steps.is_done(step::DEPLOY) {
        // A crash after recording may have lost the next message: send it again (fixed id).
        send_after_deploy(ctx, &op).await?;
        return Ok(format!("{ticket}: deployment already done"));
    }
    let req = request_of(&op)?.clone();
    let rg = target_rg(&req)?;
    let name = op
        .azure
        .deployment_name
        .clone()
        .unwrap_or_else(|| deployment_name(&ticket));
    let d = match ctx.arm.get_deployment(&rg, &name).await {
        Ok(d) => d,
        Err(e) if e.is_not_found() => {
            // Recorded as started but not there: start it again (the PUT is idempotent by name).
            update(ctx, &ticket, |o| {
                o.steps.reset(step::DEPLOY);
                true
            })
            .await?;
            send_phase(ctx, &ticket, RedeployPhase::Deploy, poll, None).await?;
            return Ok(format!(
                "{ticket}: deployment {name} not found; starting it again"
            ));
        }
        Err(e) => return Err(arm_transient("reading the deployment", &e)),
    };
    let state = d.state().unwrap_or("").to_ascii_lowercase();
    match state.as_str() {
        "succeeded" => {
            let vm_id = d
                .properties
                .output_resources
                .iter()
                .filter_map(|r| r.id.as_deref())
                .filter_map(|id| ResourceId::parse(id).ok())
                .find(|id| id.is_type("Microsoft.Compute/virtualMachines"))
                .map(Ok)
                .unwrap_or_else(|| target_vm_id(&req))?;
            let at = now(ctx);
            let vm_s = vm_id.to_string();
            update(ctx, &ticket, |o| {
                o.steps
                    .finish(step::DEPLOY, at, Some(j!({ "deployment": name })));
                o.azure.restored_vm_id = Some(vm_s.clone());
                true
            })
            .await?;
            send_after_deploy(ctx, &op).await?;
            Ok(format!("{ticket}: deployment {name} succeeded: {vm_id}"))
        }
        "failed" | "canceled" => {
            let c = d
                .root_error_code()
                .unwrap_or("deployment-failed")
                .to_string();
            let mut e = d.properties.error.as_ref();
            while let Some(inner) = e.and_then(|x| x.details.first()) {
                e = Some(inner);
            }
            let text = e
                .and_then(|x| x.message.clone())
                .unwrap_or_else(|| format!("deployment {name} {state}"));
            fail(
                ctx,
                &ticket,
                step::DEPLOY,
                &c,
                &format!("deployment {name} {state}: {text}"),
                DEPLOY_NEXT,
            )
            .await
        }
        _ => {
            send_phase(
                ctx,
                &ticket,
                RedeployPhase::DeployPoll,
                poll + 1,
                Some(ctx.settings.workflow.poll_interval),
            )
            .await?;
            Ok(format!("{ticket}: deployment {name} {state}"))
        }
    }
}

/// Linux: reinstall ADE; Windows: straight to verification (no reinstall needed).
async fn send_after_deploy(ctx: &Context, op: &RestoreOperation) -> Result<(), HandlerError> {
    let phase = match ade_of(op)?.os_type {
        OsType::Linux => RedeployPhase::ReinstallAde,
        OsType::Windows => RedeployPhase::Verify,
    };
    send_phase(ctx, &op.ticket_id, phase, 0, None).await
}

fn restored_vm(op: &RestoreOperation) -> Result<ResourceId, HandlerError> {
    op.azure
        .restored_vm_id
        .as_deref()
        .and_then(|v| ResourceId::parse(v).ok())
        .ok_or_else(|| HandlerError::poison("InvalidRestore", "no restored VM recorded"))
}

fn ade_next(ade: &AdeSettings) -> String {
    format!(
        "The VM is deployed and kept. Reinstall ADE by hand: extension {} (publisher {ADE_PUBLISHER}) with settings EncryptionOperation=EnableEncryption, KeyVaultURL={}, KeyVaultResourceId={}{}, VolumeType={}; then check that the data disks mount.",
        ade.os_type.ade_extension_type(),
        ade.key_vault_url,
        ade.key_vault_resource_id,
        ade.key_encryption_key_url
            .as_ref()
            .map(|k| format!(", KeyEncryptionKeyURL={}, KekVaultResourceId={}", k.as_str(), ade.kek_vault_resource_id.as_ref().map(|v| v.to_string()).unwrap_or_default()))
            .unwrap_or_default(),
        ade.volume_type.clone().unwrap_or_else(|| "All".into())
    )
}

/// The extension body that reinstalls ADE with the recorded public settings. No
/// `protectedSettings`: single-pass ADE reads the key from the vault with the VM's platform access.
pub fn ade_extension(ade: &AdeSettings, location: &str) -> VmExtension {
    let version = ade.type_handler_version.clone().unwrap_or_else(|| {
        match ade.os_type {
            OsType::Linux => "1.1",
            OsType::Windows => "2.2",
        }
        .to_string()
    });
    VmExtension {
        location: Some(location.to_string()),
        properties: VmExtensionProperties {
            publisher: Some(ADE_PUBLISHER.to_string()),
            extension_type: Some(ade.os_type.ade_extension_type().to_string()),
            type_handler_version: Some(version),
            auto_upgrade_minor_version: Some(true),
            settings: Some(ade.to_extension_settings()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn extension_name(ade: &AdeSettings) -> String {
    if ade.extension_name.is_empty() {
        ade.os_type.ade_extension_type().to_string()
    } else {
        ade.extension_name.clone()
    }
}

async fn reinstall_ade(
    ctx: &Context,
    op: RestoreOperation,
    by: &str,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    let op = match claim_step(
        ctx,
        &ticket,
        step::REINSTALL_ADE,
        "the ADE reinstall",
        by,
        delivery,
    )
    .await?
    {
        Claimed::Go(op) => op,
        Claimed::Settled { line, .. } => return Ok(line),
    };
    let ade = ade_of(&op)?.clone();
    let vm_id = restored_vm(&op)?;
    // Checked again here, hours after validation: without it the VM cannot fetch its passphrase.
    match ctx.arm.get_key_vault(&ade.key_vault_resource_id).await {
        Ok(kv) if !kv.enabled_for_disk_encryption() => {
            return fail(
                ctx,
                &ticket,
                step::REINSTALL_ADE,
                code::KEY_VAULT_NOT_ENABLED,
                &format!(
                    "the Key Vault {} has enabledForDiskEncryption=false",
                    ade.key_vault_resource_id
                ),
                &format!(
                    "Enable disk encryption on the Key Vault, then: {}",
                    ade_next(&ade)
                ),
            )
            .await
        }
        Ok(_) => {}
        Err(e) if e.is_transient() => return Err(arm_transient("reading the Key Vault", &e)),
        Err(e) => {
            return fail(
                ctx,
                &ticket,
                step::REINSTALL_ADE,
                code::KEY_VAULT_UNAVAILABLE,
                &format!(
                    "the Key Vault {} cannot be read: {e}",
                    ade.key_vault_resource_id
                ),
                &ade_next(&ade),
            )
            .await
        }
    }
    let vm = match ctx.arm.get_virtual_machine(&vm_id).await {
        Ok(vm) => vm,
        Err(e) if e.is_transient() => return Err(arm_transient("reading the restored VM", &e)),
        Err(e) => {
            return fail(
                ctx,
                &ticket,
                step::REINSTALL_ADE,
                e.code().unwrap_or("vm-not-found"),
                &format!("the restored VM {vm_id} cannot be read: {e}"),
                &ade_next(&ade),
            )
            .await
        }
    };
    let location = vm.location.clone().unwrap_or_default();
    let name = extension_name(&ade);
    let body = ade_extension(&ade, &location);
    let note = match ctx.arm.get_vm_extension(&vm_id, &name).await {
        // Already put by a crashed attempt with the same settings: follow it, no second PUT.
        Ok(ext) if ext.properties.settings == body.properties.settings => {
            "following the ADE extension already being installed".to_string()
        }
        Ok(_) | Err(_) => match ctx.arm.begin_put_vm_extension(&vm_id, &name, &body).await {
            Ok(_) => format!("installing {name} with the settings recorded at protection"),
            Err(e) if e.is_transient() => {
                return Err(arm_transient("installing the ADE extension", &e))
            }
            Err(e) => {
                let c = e.code().unwrap_or("ade-reinstall-failed").to_string();
                return fail(
                    ctx,
                    &ticket,
                    step::REINSTALL_ADE,
                    &c,
                    &e.to_string(),
                    &ade_next(&ade),
                )
                .await;
            }
        },
    };
    let at = now(ctx);
    let ext_id = format!("{vm_id}/extensions/{name}");
    update_reporting(ctx, &ticket, |o, sent| {
        o.azure.ade_extension_id = Some(ext_id.clone());
        if o.status != rs::REINSTALLING_ADE {
            *sent = Some(push(
                o,
                at,
                rs::REINSTALLING_ADE,
                Some(step::REINSTALL_ADE),
                format!(
                    "reinstalling ADE on {vm_id}: {note} (KeyVaultResourceId {}{}, VolumeType {})",
                    ade.key_vault_resource_id,
                    if ade.key_encryption_key_url.is_some() {
                        ", with KEK"
                    } else {
                        ""
                    },
                    ade.volume_type.clone().unwrap_or_else(|| "All".into())
                ),
                Why::default(),
            ));
        }
        true
    })
    .await?;
    send_phase(
        ctx,
        &ticket,
        RedeployPhase::AdePoll,
        1,
        Some(ctx.settings.workflow.poll_interval),
    )
    .await?;
    Ok(format!("{ticket}: {note}"))
}

async fn ade_poll(ctx: &Context, op: RestoreOperation, poll: u32) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    if op.steps.is_done(step::REINSTALL_ADE) {
        send_phase(ctx, &ticket, RedeployPhase::Verify, 0, None).await?;
        return Ok(format!("{ticket}: ADE already reinstalled"));
    }
    let ade = ade_of(&op)?.clone();
    let vm_id = restored_vm(&op)?;
    let name = extension_name(&ade);
    let ext = match ctx.arm.get_vm_extension(&vm_id, &name).await {
        Ok(e) => e,
        Err(e) if e.is_transient() => return Err(arm_transient("reading the ADE extension", &e)),
        Err(e) => {
            return fail(
                ctx,
                &ticket,
                step::REINSTALL_ADE,
                e.code().unwrap_or("ade-extension-missing"),
                &format!("the ADE extension on {vm_id} cannot be read: {e}"),
                &ade_next(&ade),
            )
            .await
        }
    };
    let state = ext
        .properties
        .provisioning_state
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match state.as_str() {
        "succeeded" => {
            let at = now(ctx);
            update(ctx, &ticket, |o| {
                o.steps.finish(step::REINSTALL_ADE, at, None);
                true
            })
            .await?;
            send_phase(ctx, &ticket, RedeployPhase::Verify, 0, None).await?;
            Ok(format!("{ticket}: ADE extension provisioned"))
        }
        "failed" | "canceled" => {
            let why = extension_message(ctx, &vm_id, &name).await;
            fail(
                ctx,
                &ticket,
                step::REINSTALL_ADE,
                "ade-reinstall-failed",
                &format!("the ADE extension on {vm_id} failed: {why}"),
                &ade_next(&ade),
            )
            .await
        }
        _ => {
            send_phase(
                ctx,
                &ticket,
                RedeployPhase::AdePoll,
                poll + 1,
                Some(ctx.settings.workflow.poll_interval),
            )
            .await?;
            Ok(format!("{ticket}: ADE extension {state}"))
        }
    }
}

/// The extension's status message from the VM instance view (where ADE reports its errors).
async fn extension_message(ctx: &Context, vm_id: &ResourceId, name: &str) -> String {
    let Ok(vm) = ctx.arm.get_virtual_machine(vm_id).await else {
        return "no detail available".into();
    };
    vm.properties
        .instance_view
        .as_ref()
        .and_then(|iv| {
            iv.extensions.iter().find(|e| {
                e.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
        })
        .and_then(|e| e.statuses.iter().find_map(|s| s.message.clone()))
        .unwrap_or_else(|| "no detail available".into())
}

/// Per-disk encryption state of the instance view: (disk name, is OS disk, state).
fn disk_states(vm: &VirtualMachine) -> Vec<(String, bool, String)> {
    let os_name = vm.os_disk().and_then(|d| d.name.clone());
    let Some(iv) = vm.properties.instance_view.as_ref() else {
        return vec![];
    };
    iv.disks
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = d.name.clone().unwrap_or_default();
            let is_os = match &os_name {
                Some(n) => n.eq_ignore_ascii_case(&name),
                None => i == 0,
            };
            let st = d
                .statuses
                .iter()
                .filter_map(|s| s.code.as_deref())
                .find_map(|c| c.strip_prefix("EncryptionState/"))
                .unwrap_or("unknown")
                .to_string();
            (name, is_os, st)
        })
        .collect()
}

/// Disks that are not as ADE should leave them: none may be `locked`; the volumes the recorded
/// `VolumeType` covers must be `encrypted` (Linux `Data` leaves the OS disk unencrypted).
pub fn disk_problems(
    os: OsType,
    volume_type: Option<&str>,
    states: &[(String, bool, String)],
) -> Vec<String> {
    let vt = volume_type.unwrap_or("All").to_ascii_lowercase();
    let os_covered = vt == "all" || vt == "os";
    let data_covered = match os {
        OsType::Linux => vt == "all" || vt == "data",
        // Windows data volumes are BitLocker-protected inside the guest; ARM may show them
        // either way, so only a locked one is a problem.
        OsType::Windows => false,
    };
    states
        .iter()
        .filter(|(_, is_os, st)| {
            st == "locked"
                || (st != "encrypted" && ((*is_os && os_covered) || (!*is_os && data_covered)))
        })
        .map(|(n, is_os, st)| format!("{} {n}: {st}", if *is_os { "OS disk" } else { "data disk" }))
        .collect()
}

async fn verify(ctx: &Context, op: RestoreOperation, poll: u32) -> Result<String, HandlerError> {
    let ticket = op.ticket_id.clone();
    let ade = ade_of(&op)?.clone();
    let vm_id = restored_vm(&op)?;
    let vm = match ctx.arm.get_virtual_machine(&vm_id).await {
        Ok(vm) => vm,
        Err(e) if e.is_transient() => return Err(arm_transient("reading the restored VM", &e)),
        Err(e) => {
            return fail(
                ctx,
                &ticket,
                step::VERIFY,
                e.code().unwrap_or("vm-not-found"),
                &format!("the restored VM {vm_id} cannot be read: {e}"),
                "Look for the VM in the target resource group; the restored disks are kept.",
            )
            .await
        }
    };
    let power = vm.power_state().unwrap_or("unknown").to_string();
    let states = disk_states(&vm);
    let shown = states
        .iter()
        .map(|(n, _, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(", ");
    if power != "running" {
        if poll < VERIFY_ATTEMPTS && matches!(power.as_str(), "starting" | "unknown") {
            send_phase(
                ctx,
                &ticket,
                RedeployPhase::Verify,
                poll + 1,
                Some(ctx.settings.workflow.poll_interval),
            )
            .await?;
            return Ok(format!("{ticket}: VM power state {power}; looking again"));
        }
        let next = match ade.os_type {
            OsType::Windows => "Open the VM's boot diagnostics (serial console / screenshot): a restored Windows VM can wait at the BitLocker recovery screen. Get the BEK secret from the Key Vault to unlock it, then start the VM.",
            OsType::Linux => "Open the VM's boot diagnostics (serial log) to see why it does not run; the VM and its disks are kept.",
        };
        return fail(
            ctx,
            &ticket,
            step::VERIFY,
            "vm-not-running",
            &format!("the restored VM {vm_id} is {power}, not running (disks: {shown})"),
            next,
        )
        .await;
    }
    let problems = disk_problems(ade.os_type, ade.volume_type.as_deref(), &states);
    if !problems.is_empty() {
        return fail(
            ctx,
            &ticket,
            step::VERIFY,
            "disks-not-unlocked",
            &format!(
                "the restored VM {vm_id} runs but its disks are not unlocked: {}",
                problems.join("; ")
            ),
            &ade_next(&ade),
        )
        .await;
    }
    let disk_ids: Vec<String> = vm
        .os_disk()
        .and_then(|d| d.managed_disk.as_ref().and_then(|m| m.id.clone()))
        .into_iter()
        .chain(
            vm.data_disks()
                .iter()
                .filter_map(|d| d.managed_disk.as_ref().and_then(|m| m.id.clone())),
        )
        .collect();
    let message = match ade.os_type {
        OsType::Linux => format!(
            "completed: {vm_id} is running; ADE reinstalled and every disk it covers is encrypted and unlocked ({shown})"
        ),
        OsType::Windows => format!(
            "completed: {vm_id} is running (power state {power}); Windows needs no ADE reinstall (the restored disks keep their BitLocker encryption settings); disk states: {shown}. Check boot diagnostics once: a Windows VM may still need its BitLocker key at first boot"
        ),
    };
    let at = now(ctx);
    update_reporting(ctx, &ticket, |o, sent| {
        if rs::is_final(&o.status) {
            return false;
        }
        o.steps.finish(
            step::VERIFY,
            at,
            Some(j!({ "powerState": power, "disks": shown })),
        );
        o.azure.restored_disk_ids = disk_ids.clone();
        *sent = Some(push(
            o,
            at,
            rs::COMPLETED,
            Some(step::VERIFY),
            message.clone(),
            Why::default(),
        ));
        true
    })
    .await?;
    tracing::info!(ticket = %ticket, vm = %vm_id, "restore completed");
    Ok(format!("{ticket}: completed: {vm_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::arm::RecoveryPointProperties;

    fn rp(name: &str, t: &str) -> RecoveryPoint {
        RecoveryPoint {
            id: None,
            name: Some(name.into()),
            properties: RecoveryPointProperties {
                recovery_point_time: Some(
                    DateTime::parse_from_rfc3339(t)
                        .expect("time")
                        .with_timezone(&Utc),
                ),
                ..Default::default()
            },
        }
    }

    #[test]
    fn recovery_point_choice() {
        let pts = vec![
            rp("a", "2024-05-01T00:00:00Z"),
            rp("c", "2024-05-03T00:00:00Z"),
            rp("b", "2024-05-02T00:00:00Z"),
        ];
        let name =
            |c: &RecoveryPointChoice| choose_recovery_point(&pts, c).and_then(|p| p.name.clone());
        assert_eq!(name(&RecoveryPointChoice::Latest).as_deref(), Some("c"));
        assert_eq!(
            name(&RecoveryPointChoice::Id { id: "B".into() }).as_deref(),
            Some("b")
        );
        assert_eq!(name(&RecoveryPointChoice::Id { id: "x".into() }), None);
        let before = |t: &str| RecoveryPointChoice::Before {
            before: DateTime::parse_from_rfc3339(t)
                .expect("time")
                .with_timezone(&Utc),
        };
        // strictly before: a point exactly at the time is not taken
        assert_eq!(name(&before("2024-05-03T00:00:00Z")).as_deref(), Some("b"));
        assert_eq!(name(&before("2024-05-02T12:00:00Z")).as_deref(), Some("b"));
        assert_eq!(name(&before("2024-05-01T00:00:00Z")), None);
    }

    #[test]
    fn sas_is_stripped_and_names_are_safe() {
        assert_eq!(
            strip_query("https://sa.blob.core.windows.net/c/t.json?sv=1&sig=SECRET"),
            "https://sa.blob.core.windows.net/c/t.json"
        );
        assert_eq!(strip_query("https://x/y"), "https://x/y");
        let t = TicketId::parse("JIRA:OPS-1.2").expect("ticket");
        let n = deployment_name(&t);
        assert!(n.len() <= 64, "{n}");
        assert!(n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(n, deployment_name(&t));
        let other = TicketId::parse("JIRA-OPS-1-2").expect("ticket");
        assert_ne!(
            n,
            deployment_name(&other),
            "sanitized alike, still distinct"
        );
        let long = TicketId::parse(&"x".repeat(64)).expect("ticket");
        assert!(deployment_name(&long).len() <= 64);
    }

    #[test]
    fn disk_verification_follows_volume_type() {
        let s = |v: &[(&str, bool, &str)]| -> Vec<(String, bool, String)> {
            v.iter()
                .map(|(n, o, st)| (n.to_string(), *o, st.to_string()))
                .collect()
        };
        let linux_ok = s(&[("os", true, "notEncrypted"), ("d1", false, "encrypted")]);
        assert!(disk_problems(OsType::Linux, Some("Data"), &linux_ok).is_empty());
        assert_eq!(
            disk_problems(OsType::Linux, Some("All"), &linux_ok).len(),
            1
        );
        let locked = s(&[("os", true, "notEncrypted"), ("d1", false, "locked")]);
        assert_eq!(disk_problems(OsType::Linux, Some("Data"), &locked).len(), 1);
        let plain = s(&[("os", true, "notEncrypted"), ("d1", false, "notEncrypted")]);
        assert_eq!(disk_problems(OsType::Linux, Some("Data"), &plain).len(), 1);
        let win = s(&[("os", true, "encrypted"), ("d1", false, "notEncrypted")]);
        assert!(disk_problems(OsType::Windows, Some("All"), &win).is_empty());
        let win_bad = s(&[("os", true, "notEncrypted")]);
        assert_eq!(
            disk_problems(OsType::Windows, Some("All"), &win_bad).len(),
            1
        );
    }

    #[test]
    fn reply_to_is_peeked_only_when_valid() {
        assert_eq!(
            peek_reply_to(br#"{"replyTo":"tickets-status","x":1}"#).as_deref(),
            Some("tickets-status")
        );
        assert_eq!(peek_reply_to(br#"{"replyTo":"../admin"}"#), None);
        assert_eq!(peek_reply_to(b"nope"), None);
    }
}
