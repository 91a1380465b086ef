//! `OnRestoreRequest`: one request of a ticketing system, already parsed by the handler. The
//! ticket id is the idempotency key: a repeat gets the current status again, a different request
//! under the same ticket a `conflict` answer, and a new one is validated ([`super::validate`])
//! and either rejected (recorded, with the field and the rule) or accepted (the restore starts).

use super::validate::{validate, Plan};
use super::{code, push, resend_latest, RestorePhase, Why};
use crate::context::Context;
use crate::domain::restore_request::{peek_ticket_id, valid_queue_name, Rejection, RestoreRequest};
use crate::engine::{self, Phase, WorkflowError};
use crate::records::{
    RestoreAzureIds, RestoreOperation, RestoreStatus, RestoreStatusUpdate, RestoreStep,
};
use ade_backup_shared::arm::recovery_services::protected_item_id;
use ade_backup_shared::ids::TicketId;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A refusal found while validating (becomes a `rejected` status).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: String,
    pub field: String,
    pub message: String,
    pub next_action: Option<String>,
}

impl Refusal {
    pub(super) fn new(
        code: &str,
        field: &str,
        message: impl Into<String>,
        next: Option<String>,
    ) -> Self {
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

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `replyTo` of a request that did not parse, if it is still a usable queue name.
pub fn peek_reply_to(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let q = v.get("replyTo")?.as_str()?;
    valid_queue_name(q).then(|| q.to_string())
}

/// Whether status messages may go to `queue`: a reply queue the configuration lists
/// (`ADE_BACKUP_REPLY_QUEUES`), never one of ade-backup's own queues, and a name the sender
/// accepts. `Err` says why not.
fn reply_queue_allowed(ctx: &Context, queue: &str) -> Result<(), String> {
    let s = &ctx.settings;
    let same = |q: &str| q.eq_ignore_ascii_case(queue);
    if !valid_queue_name(queue) {
        return Err(format!("{queue:?} is not a valid Service Bus queue name"));
    }
    if s.queues.own().into_iter().any(same) || same(&s.workflow.notifications_queue) {
        return Err(format!("{queue:?} is one of ade-backup's own queues"));
    }
    if !s.workflow.reply_queues.iter().any(|q| same(q)) {
        let allowed = s.workflow.reply_queues.join(", ");
        return Err(format!(
            "{queue:?} is not a reply queue (ADE_BACKUP_REPLY_QUEUES allows: {allowed})"
        ));
    }
    Ok(())
}

/// A `replyTo` the configuration does not grant: a security event. The request is recorded as
/// rejected (field `replyTo`) and answered nowhere; an existing ticket is left alone.
async fn refuse_reply_to(
    ctx: &Context,
    req: &RestoreRequest,
    why: String,
) -> Result<String, WorkflowError> {
    tracing::warn!(
        security_event = true,
        ticket = %req.ticket_id,
        requested_by = req.requested_by.as_deref().unwrap_or(""),
        "restore request with a replyTo outside the reply allowlist refused: {why}"
    );
    let ticket = &req.ticket_id;
    if engine::load::<RestoreOperation>(ctx, ticket)
        .await?
        .is_some()
    {
        return Ok(format!(
            "{ticket}: request with a disallowed replyTo ignored; the ticket is unchanged ({why})"
        ));
    }
    let refusal = Refusal::new(
        code::REPLY_TO_NOT_ALLOWED,
        "replyTo",
        format!("replyTo: {why}"),
        Some("Name one of the reply queues the ade-backup operators configured (ADE_BACKUP_REPLY_QUEUES) and submit a new ticket.".into()),
    );
    let who = Who {
        ticket,
        fingerprint: &req.fingerprint,
        reply_to: None,
        requested_by: req.requested_by.as_deref(),
    };
    record_rejection(ctx, Some(req), who, refusal).await
}

/// Handles one message of `restore-requests`, already parsed by the handler.
pub async fn submit(
    ctx: &Context,
    parsed: Result<RestoreRequest, Rejection>,
    body: &[u8],
) -> Result<String, WorkflowError> {
    let req = match parsed {
        Ok(r) => r,
        Err(rej) => return reject_unparsed(ctx, rej, body).await,
    };
    if let Some(Err(why)) = req.reply_to.as_deref().map(|q| reply_queue_allowed(ctx, q)) {
        return refuse_reply_to(ctx, &req, why).await;
    }
    if let Some(existing) = engine::load::<RestoreOperation>(ctx, &req.ticket_id).await? {
        let reply_to = req.reply_to.as_deref();
        return answer_existing(ctx, existing, &req.fingerprint, reply_to).await;
    }
    match validate(ctx, &req).await? {
        Err(refusal) => {
            let who = Who {
                ticket: &req.ticket_id,
                fingerprint: &req.fingerprint,
                reply_to: req.reply_to.as_deref(),
                requested_by: req.requested_by.as_deref(),
            };
            record_rejection(ctx, Some(&req), who, refusal).await
        }
        Ok(plan) => accept(ctx, req, plan).await,
    }
}

/// A request that did not parse: answered (and recorded) when it has a readable ticket id,
/// poison otherwise.
async fn reject_unparsed(
    ctx: &Context,
    rej: Rejection,
    body: &[u8],
) -> Result<String, WorkflowError> {
    let Some(ticket) = peek_ticket_id(body) else {
        return Err(WorkflowError::poison(
            "InvalidRestoreRequest",
            format!("{rej} — and the message has no readable ticketId, so it cannot be answered"),
        ));
    };
    let fingerprint = format!("unparsed-{}", sha256_hex(body));
    let reply_to = peek_reply_to(body).filter(|q| reply_queue_allowed(ctx, q).is_ok());
    let Some(existing) = engine::load::<RestoreOperation>(ctx, &ticket).await? else {
        let who = Who {
            ticket: &ticket,
            fingerprint: &fingerprint,
            reply_to: reply_to.as_deref(),
            requested_by: None,
        };
        return record_rejection(ctx, None, who, Refusal::from(rej)).await;
    };
    if existing.fingerprint == fingerprint {
        resend_latest(ctx, &existing).await?;
        return Ok(format!(
            "{ticket}: duplicate of a rejected request; status re-sent"
        ));
    }
    // A malformed message must not change a ticket that already exists: answer it alone.
    let refusal = Refusal::from(rej);
    let reply_to = reply_to.as_deref();
    reply_unrecorded(ctx, &existing.ticket_id, reply_to, &fingerprint, &refusal).await?;
    Ok(format!(
        "{ticket}: malformed request for an existing ticket rejected ({}); the ticket's restore is unchanged",
        refusal.code
    ))
}

/// A reply about a message that was not applied to the ticket (sequence 0, not in the history).
async fn reply_unrecorded(
    ctx: &Context,
    ticket: &TicketId,
    reply_to: Option<&str>,
    fingerprint: &str,
    refusal: &Refusal,
) -> Result<(), WorkflowError> {
    let Some(queue) = reply_to else {
        return Ok(());
    };
    use ade_backup_shared::telemetry::redact_owned;
    let update = RestoreStatusUpdate {
        ticket_id: ticket.as_str().to_string(),
        sequence: 0,
        status: RestoreStatus::Rejected,
        at: engine::now(ctx),
        step: Some(RestoreStep::Validate),
        // Redacted like every status (see `push`).
        message: redact_owned(refusal.message.clone()),
        reason: Some(redact_owned(refusal.code.clone())),
        field: Some(refusal.field.clone()),
        next_action: refusal.next_action.clone().map(redact_owned),
        azure: RestoreAzureIds::default(),
        trace_id: ade_backup_shared::telemetry::current_trace_id(),
    };
    let fp: String = fingerprint.chars().rev().take(16).collect();
    let id = format!("{ticket}-0-rejected-{}-{fp}", refusal.code);
    // This answer is about a message that changed nothing: if it cannot be delivered there is
    // nothing to retry it with, and nothing to stall.
    if let Err(e) = engine::send_json(ctx, queue, &id, &update, None, Some(ticket.as_str())).await {
        let e = engine::chain(&e);
        tracing::warn!(ticket = %ticket, "rejection not delivered to replyTo {queue}: {e}");
    }
    Ok(())
}

/// The ticket exists: a repeat of the same request gets its status again; another request under
/// the same ticket is a conflict.
async fn answer_existing(
    ctx: &Context,
    existing: RestoreOperation,
    fingerprint: &str,
    reply_to: Option<&str>,
) -> Result<String, WorkflowError> {
    let ticket = existing.ticket_id.clone();
    if existing.fingerprint == fingerprint {
        resend_latest(ctx, &existing).await?;
        // The first delivery may have crashed between recording `accepted` and sending the
        // first step; the step message has a fixed id, so a repeat is dropped or is a no-op.
        if existing.status == RestoreStatus::Accepted {
            RestorePhase::Trigger.send(ctx, &existing, 0, None).await?;
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
    // Answered on the conflicting request's own replyTo only: the ticket's requester did not send
    // it, and a request must not be able to write into another requester's queue.
    reply_unrecorded(ctx, &ticket, reply_to, fingerprint, &refusal).await?;
    Ok(format!(
        "{ticket}: conflicting request rejected; the existing restore is unchanged"
    ))
}

/// Who asked, for a rejection's record.
struct Who<'a> {
    ticket: &'a TicketId,
    fingerprint: &'a str,
    reply_to: Option<&'a str>,
    requested_by: Option<&'a str>,
}

/// A new restore document (`accepted`, no history yet) for `who`.
fn new_document(ctx: &Context, req: Option<&RestoreRequest>, who: &Who<'_>) -> RestoreOperation {
    let at = engine::now(ctx);
    RestoreOperation {
        ticket_id: who.ticket.clone(),
        fingerprint: who.fingerprint.to_string(),
        request: req.cloned(),
        status: RestoreStatus::Accepted,
        created_at: at,
        updated_at: at,
        reply_to: who.reply_to.map(str::to_string),
        requested_by: who.requested_by.map(str::to_string),
        ade: None,
        steps: Default::default(),
        azure: RestoreAzureIds::default(),
        history: vec![],
        warnings: vec![],
        region: None,
        last_error: None,
        undelivered: vec![],
        reply_error: None,
    }
}

/// Records the ticket as `rejected` and answers it.
async fn record_rejection(
    ctx: &Context,
    req: Option<&RestoreRequest>,
    who: Who<'_>,
    refusal: Refusal,
) -> Result<String, WorkflowError> {
    let at = engine::now(ctx);
    let mut op = new_document(ctx, req, &who);
    op.status = RestoreStatus::Rejected;
    let step = RestoreStep::Validate;
    op.steps.fail(step, at, &refusal.code, &refusal.message);
    let why = Why {
        reason: Some(&refusal.code),
        field: Some(&refusal.field),
        next_action: refusal.next_action.as_deref(),
    };
    let message = refusal.message.clone();
    push(
        &mut op,
        at,
        RestoreStatus::Rejected,
        Some(step),
        message,
        why,
    );
    let (stored, created) = engine::create(ctx, op).await?;
    if !created {
        // Lost a race with a concurrent delivery: answer as for any existing ticket.
        return answer_existing(ctx, stored, who.fingerprint, who.reply_to).await;
    }
    resend_latest(ctx, &stored).await?;
    Ok(format!(
        "{}: rejected ({}): {}",
        who.ticket, refusal.code, refusal.message
    ))
}

/// Records the ticket as `accepted` with what the restore will use, and starts it.
async fn accept(ctx: &Context, req: RestoreRequest, plan: Plan) -> Result<String, WorkflowError> {
    let at = engine::now(ctx);
    let who = Who {
        ticket: &req.ticket_id,
        fingerprint: &req.fingerprint,
        reply_to: req.reply_to.as_deref(),
        requested_by: req.requested_by.as_deref(),
    };
    let mut op = new_document(ctx, Some(&req), &who);
    op.ade = Some(plan.ade.clone());
    op.azure = RestoreAzureIds {
        vault_id: Some(plan.vault.to_string()),
        protected_item_id: protected_item_id(&plan.vault, &req.vm_resource_id)
            .ok()
            .map(|i| i.to_string()),
        recovery_point_id: Some(plan.recovery_point_id.clone()),
        recovery_point_time: plan.recovery_point_time,
        ..Default::default()
    };
    op.warnings = plan.warnings.clone();
    op.region = Some(plan.region.clone());
    op.steps.finish(RestoreStep::Validate, at, None);
    let when = plan
        .recovery_point_time
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "unknown time".into());
    let message = format!(
        "accepted: restore {} ({:?}) from recovery point {} ({when}) into {}, staging in {}",
        req.vm_resource_id,
        plan.ade.os_type,
        plan.recovery_point_id,
        req.target_resource_group.id(),
        req.staging_storage_account_id
    );
    let step = Some(RestoreStep::Validate);
    push(
        &mut op,
        at,
        RestoreStatus::Accepted,
        step,
        message,
        Why::default(),
    );
    let (stored, created) = engine::create(ctx, op).await?;
    if !created {
        return answer_existing(ctx, stored, &req.fingerprint, req.reply_to.as_deref()).await;
    }
    resend_latest(ctx, &stored).await?;
    RestorePhase::Trigger.send(ctx, &stored, 0, None).await?;
    Ok(format!(
        "{}: accepted; restoring {} from {}",
        req.ticket_id, req.vm_resource_id, plan.recovery_point_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

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
