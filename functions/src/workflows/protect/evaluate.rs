//! Evaluation: is this an ADE VM that should be protected, under which rule, into which vault?
//! If so, open (or reuse, or restart) its protection operation and send the first step. Every
//! "no" is recorded on the VM's record with its reason.

use super::observe::{observe_vm, record_outcome, upsert_vm_record, ObservedVm, SweepFacts};
use super::{send_grant, BackupPhase, Origin, RecheckMessage, RECHECK_KIND};
use crate::context::Context;
use crate::domain::ade::{AdeSettings, AdeState};
use crate::domain::rules::{check_placement, Selection, VmFacts};
use crate::engine::{self, send_json, Phase, WorkflowError};
use crate::records::{
    self, protect_operation_key, ProtectDetail, ProtectStep, ProtectionAzureIds,
    ProtectionOperation, ProtectionStatus as St,
};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::json;
use chrono::{DateTime, Utc};

/// Evaluates a VM and, if it is an ADE VM that should be protected, opens (or reuses) its
/// protection operation and sends the grant step. Returns a log line.
pub async fn evaluate(
    ctx: &Context,
    vm_id: &ResourceId,
    origin: Origin,
) -> Result<String, WorkflowError> {
    evaluate_with(ctx, vm_id, origin, false).await
}

/// Like [`evaluate`]; with `repair`, a VM whose operation already ended `protected` is worked
/// again (the sweep found drift: access removed, recovery point stale, protection stopped): a new
/// generation re-grants access, re-enables protection if needed and takes a backup.
pub async fn evaluate_with(
    ctx: &Context,
    vm_id: &ResourceId,
    origin: Origin,
    repair: bool,
) -> Result<String, WorkflowError> {
    let Some(observed) = observe_vm(ctx, vm_id).await? else {
        return Ok(format!(
            "{vm_id}: the VM no longer exists; nothing to protect"
        ));
    };
    evaluate_observed(ctx, &observed, origin, repair, None).await
}

/// What a settled evaluation step returns: go on with `T`, or stop with a log line.
type Next<T> = Result<T, String>;

/// The evaluation proper. With `facts` (the sweep), nothing about the VM, its vault or its Key
/// Vault is read from ARM again.
pub async fn evaluate_observed(
    ctx: &Context,
    observed: &ObservedVm,
    origin: Origin,
    repair: bool,
    facts: Option<&SweepFacts>,
) -> Result<String, WorkflowError> {
    let settings = match encrypted_settings(ctx, observed, &origin).await? {
        Ok(s) => s,
        Err(line) => return Ok(line),
    };
    let (selection, vault_location) = match select_target(ctx, observed, facts).await? {
        Ok(t) => t,
        Err(line) => return Ok(line),
    };
    if let Err(p) = check_placement(
        &observed.id,
        &observed.location,
        &selection.target.vault_id,
        &vault_location,
    ) {
        let (code, msg) = (p.code(), p.to_string());
        record_outcome(ctx, &observed.id, St::Unsupported, Some(code), &msg).await?;
        return Ok(format!("{}: unsupported: {p}", observed.id));
    }
    if let Some(line) = super::readiness::check_before_protect(ctx, observed, facts).await? {
        return Ok(line);
    }
    let opening = Opening {
        vm_id: &observed.id,
        warnings: warnings(ctx, observed, &settings, facts).await,
        settings: &settings,
        selection: &selection,
        origin: origin.label(),
        access_known: facts.is_some_and(|f| f.access_in_place),
        known_unprotected: facts.is_some_and(|f| f.unprotected),
    };
    let (op, started) = open_operation(ctx, &opening, repair).await?;
    record_on_vm(ctx, &opening, &op).await?;
    start(ctx, &observed.id, &op, started, &selection).await
}

/// The VM's ADE settings when it is encrypted; otherwise what happened instead (ignored,
/// looked at again later, recorded as unsupported).
async fn encrypted_settings(
    ctx: &Context,
    observed: &ObservedVm,
    origin: &Origin,
) -> Result<Next<AdeSettings>, WorkflowError> {
    let vm_id = &observed.id;
    match &observed.ade {
        AdeState::NotEncrypted { why } => {
            Ok(Err(format!("{vm_id}: not encrypted ({why}); ignored")))
        }
        AdeState::InProgress { why } => recheck_later(ctx, vm_id, origin, why).await.map(Err),
        AdeState::Unsupported { code, message } => {
            record_outcome(ctx, vm_id, St::Unsupported, Some(code), message).await?;
            Ok(Err(format!("{vm_id}: unsupported: {code}: {message}")))
        }
        AdeState::Encrypted { settings, .. } => Ok(Ok((**settings).clone())),
    }
}

/// Encryption is still in progress: look again later, a bounded number of times.
async fn recheck_later(
    ctx: &Context,
    vm_id: &ResourceId,
    origin: &Origin,
    why: &str,
) -> Result<String, WorkflowError> {
    let attempt = match origin {
        Origin::Recheck(n) => n + 1,
        _ => 1,
    };
    if attempt > ctx.settings.workflow.max_rechecks {
        let msg = format!(
            "encryption did not finish after {} checks: {why}",
            attempt - 1
        );
        let reason = Some("encryption-not-finished");
        record_outcome(ctx, vm_id, St::Failed, reason, &msg).await?;
        return Ok(format!("{vm_id}: {msg}"));
    }
    let body = RecheckMessage {
        kind: RECHECK_KIND.to_string(),
        vm_id: vm_id.clone(),
        attempt,
    };
    let id = format!(
        "recheck-{}-{attempt}",
        ade_backup_shared::ids::deterministic_uuid(&["recheck", &vm_id.canonical()])
    );
    let queue = &ctx.settings.queues.vm_encryption_events;
    let delay = Some(ctx.settings.workflow.recheck_delay);
    send_json(ctx, queue, &id, &body, delay, None).await?;
    Ok(format!("{vm_id}: {why}; will look again (check {attempt})"))
}

/// The rule's target for this VM and the location of its Recovery Services vault.
async fn select_target(
    ctx: &Context,
    observed: &ObservedVm,
    facts: Option<&SweepFacts>,
) -> Result<Next<(Selection, String)>, WorkflowError> {
    let vm_id = &observed.id;
    let Some(selection) = ctx.settings.workflow.protection_rules.select(&VmFacts {
        id: vm_id,
        location: &observed.location,
        tags: &observed.tags,
    }) else {
        let msg = "no protection rule matches this VM and there is no default rule; add one to ADE_BACKUP_PROTECTION_RULES";
        let reason = Some("no-protection-rule");
        record_outcome(ctx, vm_id, St::Unsupported, reason, msg).await?;
        return Ok(Err(format!("{vm_id}: unsupported: no-protection-rule")));
    };
    if let Some(f) = facts {
        return Ok(Ok((selection, f.vault_location.clone())));
    }
    let vault = &selection.target.vault_id;
    // One read per vault per few minutes, not one per VM (read_cache).
    let read = async {
        match ctx.arm.get_recovery_services_vault(vault).await {
            Ok(v) => Ok(Some(v.location.unwrap_or_default())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    };
    match ctx
        .reads
        .vault_location
        .get_or_read(&vault.canonical(), read)
        .await
    {
        Ok(Some(location)) => Ok(Ok((selection, location))),
        Ok(None) => {
            let msg = format!(
                "the Recovery Services vault {vault} chosen by rule {} does not exist",
                selection.rule
            );
            let reason = Some("vault-not-found");
            record_outcome(ctx, vm_id, St::Unsupported, reason, &msg).await?;
            Ok(Err(format!("{vm_id}: {msg}")))
        }
        Err(e) => Err(WorkflowError::arm("reading the Recovery Services vault", e)),
    }
}

/// Restore-limit warnings, and a Key Vault a restored VM could not fetch its secret from.
async fn warnings(
    ctx: &Context,
    observed: &ObservedVm,
    settings: &AdeSettings,
    facts: Option<&SweepFacts>,
) -> Vec<String> {
    let mut warnings = observed.restore_warnings.clone();
    let disk_encryption = match facts {
        Some(f) => f.key_vault_disk_encryption,
        // Access problems are the grant step's to report.
        None => {
            let kv = &settings.key_vault_resource_id;
            let read = async {
                match ctx.arm.get_key_vault(kv).await {
                    Ok(v) => Ok(Some(v.enabled_for_disk_encryption())),
                    Err(e) => Err(e),
                }
            };
            let cache = &ctx.reads.key_vault_disk_encryption;
            cache
                .get_or_read(&kv.canonical(), read)
                .await
                .ok()
                .flatten()
        }
    };
    if disk_encryption == Some(false) {
        warnings.push(format!(
            "key-vault-not-enabled-for-disk-encryption: {} has enabledForDiskEncryption=false; a restored VM could not fetch its disk encryption secret. Enable it on the vault.",
            settings.key_vault_resource_id
        ));
    }
    warnings
}

/// Everything an operation is opened with.
struct Opening<'a> {
    vm_id: &'a ResourceId,
    settings: &'a AdeSettings,
    selection: &'a Selection,
    warnings: Vec<String>,
    origin: String,
    access_known: bool,
    known_unprotected: bool,
}

impl Opening<'_> {
    /// What the sweep already knows, written into a new generation.
    fn apply_known(&self, op: &mut ProtectionOperation, at: DateTime<Utc>) {
        op.known_unprotected = self.known_unprotected;
        if self.access_known {
            let note = "access in place per the sweep's Resource Graph read; no ARM call";
            let detail = ProtectDetail {
                note: Some(note.to_string()),
                ..Default::default()
            };
            op.steps
                .finish(ProtectStep::GrantKeyVaultAccess, at, Some(detail));
        }
    }

    fn new_operation(&self, op_id: &str, at: DateTime<Utc>) -> ProtectionOperation {
        let mut op = ProtectionOperation {
            operation_id: op_id.to_string(),
            vm_id: self.vm_id.clone(),
            created_at: at,
            updated_at: at,
            status: St::InProgress,
            reason: None,
            message: None,
            ade: self.settings.clone(),
            target: self.selection.clone(),
            warnings: self.warnings.clone(),
            steps: Default::default(),
            azure: ProtectionAzureIds {
                vault_id: Some(self.selection.target.vault_id.to_string()),
                ..Default::default()
            },
            grant_retries: 0,
            generation: 0,
            last_error: None,
            history: vec![],
            origin: self.origin.clone(),
            known_unprotected: false,
            on_demand_backups: vec![],
            deferred: None,
            disk_exclusion_repairs: 0,
        };
        self.apply_known(&mut op, at);
        op.record(at, St::InProgress, format!("opened by {}", self.origin));
        op
    }

    /// Failed, blocked or unsupported before (or protected, on repair): a new generation.
    fn restart(&self, prev: &ProtectionOperation, at: DateTime<Utc>) -> ProtectionOperation {
        let mut next = prev.clone();
        next.generation += 1;
        next.steps = Default::default();
        next.grant_retries = 0;
        next.disk_exclusion_repairs = 0;
        next.reason = None;
        next.message = None;
        next.warnings = self.warnings.clone();
        next.target = self.selection.clone();
        next.ade = self.settings.clone();
        next.origin = self.origin.clone();
        next.deferred = None;
        self.apply_known(&mut next, at);
        next.record(at, St::InProgress, format!("restarted by {}", self.origin));
        next
    }
}

/// Opens the VM's operation, or restarts a finished one. Returns the stored operation and the
/// generation this call started (none when one was already running, or protected).
async fn open_operation(
    ctx: &Context,
    o: &Opening<'_>,
    repair: bool,
) -> Result<(ProtectionOperation, Option<u32>), WorkflowError> {
    let op_id = records::protection_operation_id(o.vm_id, o.settings);
    let key = protect_operation_key(&op_id);
    let at = engine::now(ctx);
    let mut started = None;
    let op =
        json::update::<ProtectionOperation, WorkflowError, _>(ctx.state.as_ref(), &key, |cur| {
            started = None;
            let next = match cur {
                Some(op) if !op.is_finished() => None,
                Some(op) if op.status == St::Protected && !repair => None,
                Some(op) => Some(o.restart(op, at)),
                None => Some(o.new_operation(&op_id, at)),
            };
            started = next.as_ref().map(|n| n.generation);
            Ok(next)
        })
        .await?;
    Ok((op, started))
}

/// The VM's record takes the recorded ADE settings (what a restore reinstalls) and the status.
async fn record_on_vm(
    ctx: &Context,
    o: &Opening<'_>,
    op: &ProtectionOperation,
) -> Result<(), WorkflowError> {
    upsert_vm_record(ctx, o.vm_id, |r| {
        r.ade = Some(o.settings.clone());
        r.target = Some(o.selection.clone());
        r.operation_id = Some(op.operation_id.clone());
        r.warnings = o.warnings.clone();
        if r.status != St::Protected || op.status != St::Protected {
            r.status = op.status;
            r.reason = None;
            r.message = None;
        }
    })
    .await
}

/// Always (re)sends the first step of the current generation while the operation is open: a
/// crash after the document write and before the send is repaired by the redelivery, and
/// Service Bus duplicate detection drops the repeat.
async fn start(
    ctx: &Context,
    vm_id: &ResourceId,
    op: &ProtectionOperation,
    started: Option<u32>,
    selection: &Selection,
) -> Result<String, WorkflowError> {
    if op.is_finished() {
        return Ok(format!(
            "{vm_id}: already {} (operation {})",
            op.status, op.operation_id
        ));
    }
    if op.steps.is_done(ProtectStep::GrantKeyVaultAccess) {
        BackupPhase::Protect.send(ctx, op, 0, None).await?;
    } else {
        send_grant(ctx, op).await?;
    }
    Ok(match started {
        Some(g) => format!(
            "{vm_id}: protection operation {} generation {g} started ({})",
            op.operation_id, selection.rule
        ),
        None => format!(
            "{vm_id}: protection operation {} already in progress",
            op.operation_id
        ),
    })
}
