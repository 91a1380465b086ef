//! Automatic protection of an ADE VM: evaluate → grant Key Vault access → enable protection →
//! first backup → track the job until a recovery point exists.
//!
//! Messages (all with deterministic `MessageId`s, so Service Bus duplicate detection drops
//! repeats, and all idempotent on redelivery thanks to the operation document's step claims):
//! - `vm-encryption-events`: Event Grid events, or our own [`RecheckMessage`] (encryption in progress).
//! - `grant-key-vault-access`: [`GrantMessage`].
//! - `backup-vm`: [`BackupMessage`] with a phase; polls are scheduled follow-ups.

use super::{arm_transient, claimant, is_forbidden, redeliver_at, send};
use crate::context::Context;
use crate::domain::ade::{
    self, AdeSettings, AdeState, ExtensionObservation, OsType, VmObservation,
};
use crate::domain::kv_access::{self, KeyMode, Permissions, RbacRoleChoice};
use crate::domain::rules::{check_placement, Selection, VmFacts};
use crate::domain::steps::Claim;
use crate::handlers::HandlerError;
use crate::host::protocol::ServiceBusMessage;
use crate::records::{
    self, protect_operation_key, status, vm_record_key, ErrorRecord, ProtectionAzureIds,
    ProtectionOperation, VmRecord,
};
use ade_backup_shared::arm::recovery_services::{BackupJobFilter, JobOperation};
use ade_backup_shared::arm::{
    AccessPolicyEntry, ArmError, PendingOperation, PollOutcome, RoleAssignmentProperties,
    RoleDefinitionProperties,
};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json as j, Value};

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

impl BackupPhase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Protect => "protect",
            Self::ProtectPoll => "protect-poll",
            Self::BackupNow => "backup-now",
            Self::BackupPoll => "backup-poll",
            Self::Track => "track",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupMessage {
    pub operation_id: String,
    pub generation: u32,
    pub phase: BackupPhase,
    #[serde(default)]
    pub poll: u32,
}

/// Steps of a protection operation.
pub mod step {
    pub const GRANT: &str = "grant-key-vault-access";
    pub const PROTECT: &str = "enable-protection";
    pub const BACKUP_NOW: &str = "backup-now";
    pub const TRACK: &str = "track-backup-job";
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

fn now(ctx: &Context) -> DateTime<Utc> {
    ctx.clock.now()
}

fn lease(ctx: &Context) -> chrono::Duration {
    chrono::Duration::from_std(ctx.settings.workflow.step_lease)
        .unwrap_or_else(|_| chrono::Duration::minutes(2))
}

/// Reads the VM (and its ADE extension when the VM's list shape lacks it) and classifies it.
pub async fn observe_vm(
    ctx: &Context,
    vm_id: &ResourceId,
) -> Result<Option<ObservedVm>, HandlerError> {
    let vm = match ctx.arm.get_virtual_machine(vm_id).await {
        Ok(vm) => vm,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(arm_transient("reading the VM", &e)),
    };
    let mut extensions = Vec::new();
    for ext in &vm.resources {
        let name = ext
            .name
            .clone()
            .or_else(|| {
                ext.id
                    .as_deref()
                    .and_then(|i| i.rsplit('/').next().map(str::to_string))
            })
            .unwrap_or_default();
        let mut ext = ext.clone();
        // Some list shapes carry only the id of a child resource: read the ADE one in full.
        if ext.properties.publisher.is_none()
            && ade::ADE_EXTENSION_NAMES_ALL
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&name))
        {
            match ctx.arm.get_vm_extension(vm_id, &name).await {
                Ok(full) => ext = full,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(arm_transient("reading the ADE extension", &e)),
            }
        }
        extensions.push(ExtensionObservation {
            name,
            publisher: ext.properties.publisher.clone().unwrap_or_default(),
            extension_type: ext.properties.extension_type.clone().unwrap_or_default(),
            type_handler_version: ext.properties.type_handler_version.clone(),
            provisioning_state: ext.properties.provisioning_state.clone(),
            settings: ext.properties.settings.clone().unwrap_or(Value::Null),
        });
    }
    let os_disk_encryption_enabled = vm
        .os_disk()
        .and_then(|d| d.encryption_settings.as_ref())
        .is_some_and(|e| e.enabled == Some(true));
    let disk_encryption_codes = vm
        .properties
        .instance_view
        .as_ref()
        .map(|iv| {
            iv.disks
                .iter()
                .flat_map(|d| d.statuses.iter().filter_map(|s| s.code.clone()))
                .collect()
        })
        .unwrap_or_default();
    let disk_sizes_gb = vm
        .os_disk()
        .and_then(|d| d.disk_size_gb)
        .into_iter()
        .chain(vm.data_disks().iter().filter_map(|d| d.disk_size_gb))
        .filter_map(|s| u64::try_from(s).ok())
        .collect();
    let obs = VmObservation {
        id: vm_id.clone(),
        os_type: vm.os_type().and_then(OsType::parse),
        extensions,
        os_disk_encryption_enabled,
        disk_encryption_codes,
        disk_sizes_gb,
        disk_count: vm.disk_count(),
        kek_is_certificate: None,
    };
    Ok(Some(ObservedVm {
        id: vm_id.clone(),
        location: vm.location.clone().unwrap_or_default(),
        tags: vm.tags.clone(),
        ade: ade::classify(&obs),
        restore_warnings: ade::restore_limit_warnings(&obs),
    }))
}

/// Writes the per-VM record (read-modify-write; no write when nothing changed).
pub async fn upsert_vm_record(
    ctx: &Context,
    vm_id: &ResourceId,
    f: impl Fn(&mut VmRecord) + Send + Sync,
) -> Result<(), HandlerError> {
    let at = now(ctx);
    let key = vm_record_key(vm_id);
    json::update::<VmRecord, HandlerError, _>(ctx.state.as_ref(), &key, |cur| {
        let mut rec = cur.cloned().unwrap_or_else(|| VmRecord {
            vm_id: vm_id.clone(),
            status: String::new(),
            reason: None,
            message: None,
            operation_id: None,
            ade: None,
            target: None,
            warnings: vec![],
            azure: ProtectionAzureIds::default(),
            updated_at: at,
            extra: Value::Null,
        });
        let before = rec.clone();
        f(&mut rec);
        if cur.is_some() && rec == before {
            return Ok(None);
        }
        rec.updated_at = at;
        Ok(Some(rec))
    })
    .await
    .map(|_| ())
}

async fn record_outcome(
    ctx: &Context,
    vm_id: &ResourceId,
    st: &str,
    reason: Option<&str>,
    message: &str,
) -> Result<(), HandlerError> {
    let (st, reason, message) = (
        st.to_string(),
        reason.map(str::to_string),
        message.to_string(),
    );
    upsert_vm_record(ctx, vm_id, |r| {
        r.status = st.clone();
        r.reason = reason.clone();
        r.message = Some(message.clone());
    })
    .await
}

/// Evaluates a VM and, if it is an ADE VM that should be protected, opens (or reuses) its
/// protection operation and sends the grant step. Returns a log line.
pub async fn evaluate(
    ctx: &Context,
    vm_id: &ResourceId,
    origin: Origin,
) -> Result<String, HandlerError> {
    evaluate_with(ctx, vm_id, origin, false).await
}

/// A VM as the protection workflow evaluates it: read from ARM one by one (events), or taken
/// from the sweep's Resource Graph pages.
#[derive(Debug, Clone)]
pub struct ObservedVm {
    pub id: ResourceId,
    pub location: String,
    pub tags: std::collections::BTreeMap<String, String>,
    pub ade: AdeState,
    /// `ade::restore_limit_warnings` of the observation.
    pub restore_warnings: Vec<String>,
}

/// What the sweep already knows about a VM's surroundings from the same run's discovery, so the
/// workflow does not read them again per VM.
#[derive(Debug, Clone)]
pub struct SweepFacts {
    /// Location of the Recovery Services vault the VM's rule selects (read once per vault).
    pub vault_location: String,
    /// `enabledForDiskEncryption` of the VM's Key Vault, when Resource Graph showed the vault.
    pub key_vault_disk_encryption: Option<bool>,
    /// The Backup Management Service's access to every Key Vault of the VM is in place: the
    /// grant step has nothing to do and is recorded as done without ARM calls. (If access
    /// drifts before the backup, the backup job's permission error sends the operation back to
    /// the grant step once.)
    pub access_in_place: bool,
    /// No active protection in Azure (no protected item, or protection stopped).
    pub unprotected: bool,
}

/// Like [`evaluate`]; with `repair`, a VM whose operation already ended `protected` is worked
/// again (the sweep found drift: access removed, recovery point stale, protection stopped): a new
/// generation re-grants access, re-enables protection if needed and takes a backup.
pub async fn evaluate_with(
    ctx: &Context,
    vm_id: &ResourceId,
    origin: Origin,
    repair: bool,
) -> Result<String, HandlerError> {
    let Some(observed) = observe_vm(ctx, vm_id).await? else {
        return Ok(format!(
            "{vm_id}: the VM no longer exists; nothing to protect"
        ));
    };
    evaluate_observed(ctx, &observed, origin, repair, None).await
}

/// The evaluation proper. With `facts` (the sweep), nothing about the VM, its vault or its Key
/// Vault is read from ARM again.
pub async fn evaluate_observed(
    ctx: &Context,
    observed: &ObservedVm,
    origin: Origin,
    repair: bool,
    facts: Option<&SweepFacts>,
) -> Result<String, HandlerError> {
    let vm_id = &observed.id;
    let settings = match observed.ade.clone() {
        AdeState::NotEncrypted { why } => {
            return Ok(format!("{vm_id}: not encrypted ({why}); ignored"));
        }
        AdeState::InProgress { why } => {
            let attempt = match origin {
                Origin::Recheck(n) => n + 1,
                _ => 1,
            };
            if attempt > ctx.settings.workflow.max_rechecks {
                let msg = format!(
                    "encryption did not finish after {} checks: {why}",
                    attempt - 1
                );
                record_outcome(
                    ctx,
                    vm_id,
                    status::FAILED,
                    Some("encryption-not-finished"),
                    &msg,
                )
                .await?;
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
            send(
                ctx,
                &ctx.settings.queues.vm_encryption_events,
                &id,
                &body,
                Some(ctx.settings.workflow.recheck_delay),
                None,
            )
            .await?;
            return Ok(format!("{vm_id}: {why}; will look again (check {attempt})"));
        }
        AdeState::Unsupported { code, message } => {
            record_outcome(ctx, vm_id, status::UNSUPPORTED, Some(&code), &message).await?;
            return Ok(format!("{vm_id}: unsupported: {code}: {message}"));
        }
        AdeState::Encrypted { settings, .. } => settings,
    };
    let location = observed.location.clone();
    let Some(selection) = ctx.settings.workflow.protection_rules.select(&VmFacts {
        id: vm_id,
        location: &location,
        tags: &observed.tags,
    }) else {
        let msg = "no protection rule matches this VM and there is no default rule; add one to ADE_BACKUP_PROTECTION_RULES";
        record_outcome(
            ctx,
            vm_id,
            status::UNSUPPORTED,
            Some("no-protection-rule"),
            msg,
        )
        .await?;
        return Ok(format!("{vm_id}: unsupported: no-protection-rule"));
    };
    let vault_location = match facts {
        Some(f) => f.vault_location.clone(),
        None => match ctx
            .arm
            .get_recovery_services_vault(&selection.target.vault_id)
            .await
        {
            Ok(v) => v.location.unwrap_or_default(),
            Err(e) if e.is_not_found() => {
                let msg = format!(
                    "the Recovery Services vault {} chosen by rule {} does not exist",
                    selection.target.vault_id, selection.rule
                );
                record_outcome(
                    ctx,
                    vm_id,
                    status::UNSUPPORTED,
                    Some("vault-not-found"),
                    &msg,
                )
                .await?;
                return Ok(format!("{vm_id}: {msg}"));
            }
            Err(e) => return Err(arm_transient("reading the Recovery Services vault", &e)),
        },
    };
    if let Err(p) = check_placement(
        vm_id,
        &location,
        &selection.target.vault_id,
        &vault_location,
    ) {
        record_outcome(
            ctx,
            vm_id,
            status::UNSUPPORTED,
            Some(p.code()),
            &p.to_string(),
        )
        .await?;
        return Ok(format!("{vm_id}: unsupported: {p}"));
    }
    let mut warnings = observed.restore_warnings.clone();
    let disk_encryption = match facts {
        Some(f) => f.key_vault_disk_encryption,
        // Access problems are the grant step's to report.
        None => ctx
            .arm
            .get_key_vault(&settings.key_vault_resource_id)
            .await
            .ok()
            .map(|kv| kv.enabled_for_disk_encryption()),
    };
    if disk_encryption == Some(false) {
        warnings.push(format!(
            "key-vault-not-enabled-for-disk-encryption: {} has enabledForDiskEncryption=false; a restored VM could not fetch its disk encryption secret. Enable it on the vault.",
            settings.key_vault_resource_id
        ));
    }
    let access_known = facts.is_some_and(|f| f.access_in_place);
    let known_unprotected = facts.is_some_and(|f| f.unprotected);
    let known = |op: &mut ProtectionOperation, at: DateTime<Utc>| {
        op.known_unprotected = known_unprotected;
        if access_known {
            op.steps.finish(
                step::GRANT,
                at,
                Some(j!({ "note": "access in place per the sweep's Resource Graph read; no ARM call" })),
            );
        }
    };

    let op_id = records::protection_operation_id(vm_id, &settings);
    let key = protect_operation_key(&op_id);
    let at = now(ctx);
    let origin_label = origin.label();
    let mut started_generation: Option<u32> = None;
    let op =
        json::update::<ProtectionOperation, HandlerError, _>(ctx.state.as_ref(), &key, |cur| {
            started_generation = None;
            match cur {
                Some(op) if !op.is_finished() => Ok(None),
                Some(op) if op.status == status::PROTECTED && !repair => Ok(None),
                Some(op) => {
                    // Failed, blocked or unsupported before: a new event or sweep tries again.
                    let mut next = op.clone();
                    next.generation += 1;
                    next.steps = Default::default();
                    next.grant_retries = 0;
                    next.reason = None;
                    next.message = None;
                    next.warnings = warnings.clone();
                    next.target = selection.clone();
                    next.ade = (*settings).clone();
                    next.origin = origin_label.clone();
                    known(&mut next, at);
                    next.record(
                        at,
                        status::IN_PROGRESS,
                        format!("restarted by {origin_label}"),
                    );
                    started_generation = Some(next.generation);
                    Ok(Some(next))
                }
                None => {
                    let mut op = ProtectionOperation {
                        operation_id: op_id.clone(),
                        vm_id: vm_id.clone(),
                        created_at: at,
                        updated_at: at,
                        status: status::IN_PROGRESS.to_string(),
                        reason: None,
                        message: None,
                        ade: (*settings).clone(),
                        target: selection.clone(),
                        warnings: warnings.clone(),
                        steps: Default::default(),
                        azure: ProtectionAzureIds {
                            vault_id: Some(selection.target.vault_id.to_string()),
                            ..Default::default()
                        },
                        grant_retries: 0,
                        generation: 0,
                        last_error: None,
                        history: vec![],
                        origin: origin_label.clone(),
                        known_unprotected: false,
                    };
                    known(&mut op, at);
                    op.record(at, status::IN_PROGRESS, format!("opened by {origin_label}"));
                    started_generation = Some(0);
                    Ok(Some(op))
                }
            }
        })
        .await?;
    let recorded = (*settings).clone();
    let (op_status, sel) = (op.status.clone(), selection.clone());
    let w = warnings.clone();
    upsert_vm_record(ctx, vm_id, |r| {
        r.ade = Some(recorded.clone());
        r.target = Some(sel.clone());
        r.operation_id = Some(op_id.clone());
        r.warnings = w.clone();
        if r.status.is_empty() || r.status != status::PROTECTED || op_status != status::PROTECTED {
            r.status = op_status.clone();
            r.reason = None;
            r.message = None;
        }
    })
    .await?;
    // Always (re)send the first step of the current generation while the operation is open: a
    // crash after the document write and before the send is repaired by the redelivery, and
    // Service Bus duplicate detection drops the repeat.
    if op.is_finished() {
        return Ok(format!(
            "{vm_id}: already {} (operation {})",
            op.status, op.operation_id
        ));
    }
    if op.steps.is_done(step::GRANT) {
        send_backup(ctx, &op, BackupPhase::Protect, 0, None).await?;
    } else {
        send_grant(ctx, &op).await?;
    }
    Ok(match started_generation {
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

async fn send_grant(ctx: &Context, op: &ProtectionOperation) -> Result<(), HandlerError> {
    let id = format!("{}-g{}-grant", op.operation_id, op.generation);
    let body = GrantMessage {
        operation_id: op.operation_id.clone(),
        generation: op.generation,
    };
    send(
        ctx,
        &ctx.settings.queues.grant_key_vault_access,
        &id,
        &body,
        None,
        Some(&op.operation_id),
    )
    .await
}

async fn send_backup(
    ctx: &Context,
    op: &ProtectionOperation,
    phase: BackupPhase,
    poll: u32,
    delay: Option<std::time::Duration>,
) -> Result<(), HandlerError> {
    let id = format!(
        "{}-g{}-{}-{poll}",
        op.operation_id,
        op.generation,
        phase.as_str()
    );
    let body = BackupMessage {
        operation_id: op.operation_id.clone(),
        generation: op.generation,
        phase,
        poll,
    };
    send(
        ctx,
        &ctx.settings.queues.backup_vm,
        &id,
        &body,
        delay,
        Some(&op.operation_id),
    )
    .await
}

async fn load_op(ctx: &Context, op_id: &str) -> Result<ProtectionOperation, HandlerError> {
    match json::get::<ProtectionOperation>(ctx.state.as_ref(), &protect_operation_key(op_id))
        .await?
    {
        Some((op, _)) => Ok(op),
        None => Err(HandlerError::poison(
            "UnknownOperation",
            format!("protection operation {op_id} does not exist"),
        )),
    }
}

/// Applies `f` to the operation (conditional write, retried on conflict) and returns it.
async fn update_op(
    ctx: &Context,
    op_id: &str,
    mut f: impl FnMut(&mut ProtectionOperation) -> bool + Send,
) -> Result<ProtectionOperation, HandlerError> {
    json::update::<ProtectionOperation, HandlerError, _>(
        ctx.state.as_ref(),
        &protect_operation_key(op_id),
        |cur| {
            let Some(cur) = cur else {
                return Err(HandlerError::poison(
                    "UnknownOperation",
                    format!("protection operation {op_id} does not exist"),
                ));
            };
            let mut next = cur.clone();
            if f(&mut next) {
                Ok(Some(next))
            } else {
                Ok(None)
            }
        },
    )
    .await
}

/// Claims a step; `Ok(None)` when there is nothing for this invocation to do.
async fn claim(
    ctx: &Context,
    op_id: &str,
    generation: u32,
    step_name: &str,
    by: &str,
) -> Result<(ProtectionOperation, Claim), HandlerError> {
    let at = now(ctx);
    let lease = lease(ctx);
    let mut outcome = Claim::AlreadyDone;
    let op = update_op(ctx, op_id, |op| {
        if op.generation != generation || op.is_finished() {
            outcome = Claim::AlreadyDone;
            return false;
        }
        outcome = op.steps.claim(step_name, by, at, lease);
        outcome == Claim::Acquired
    })
    .await?;
    if op.generation != generation || op.is_finished() {
        return Ok((op, Claim::AlreadyDone));
    }
    Ok((op, outcome))
}

/// Ends the operation with a non-success outcome, mirrored on the VM record.
async fn conclude(
    ctx: &Context,
    op_id: &str,
    st: &'static str,
    step_name: &str,
    code: &str,
    message: &str,
) -> Result<ProtectionOperation, HandlerError> {
    let at = now(ctx);
    let op = update_op(ctx, op_id, |op| {
        op.steps.fail(step_name, at, code, message);
        op.reason = Some(code.to_string());
        op.message = Some(message.to_string());
        op.last_error = Some(ErrorRecord {
            at,
            step: step_name.to_string(),
            code: code.to_string(),
            message: message.to_string(),
        });
        op.record(at, st, format!("{code}: {message}"));
        true
    })
    .await?;
    record_outcome(ctx, &op.vm_id, st, Some(code), message).await?;
    Ok(op)
}

// ---------------------------------------------------------------- GrantKeyVaultAccess

/// One Key Vault and what Azure Backup needs on it.
struct VaultNeed {
    vault: ResourceId,
    mode: KeyMode,
    secrets: bool,
    keys: bool,
}

fn needs(op: &ProtectionOperation) -> Vec<VaultNeed> {
    let bek = &op.ade.key_vault_resource_id;
    let mut out = vec![VaultNeed {
        vault: bek.clone(),
        mode: op.ade.key_mode(),
        secrets: true,
        keys: false,
    }];
    if let Some(kek) = &op.ade.kek_vault_resource_id {
        if kek == bek {
            out[0].keys = true;
        } else {
            out.push(VaultNeed {
                vault: kek.clone(),
                mode: KeyMode::BekKek,
                secrets: false,
                keys: true,
            });
        }
    }
    out
}

async fn bms_object_id(ctx: &Context) -> Result<uuid::Uuid, HandlerError> {
    if let Some(id) = ctx.settings.bms_object_id {
        return Ok(id);
    }
    let arm = ctx.arm.clone();
    ctx.bms_object_id
        .get_or_try_init(|| async move {
            let app = uuid::Uuid::parse_str(kv_access::BACKUP_MANAGEMENT_SERVICE_APP_ID)
                .map_err(|e| HandlerError::Transient(e.to_string()))?;
            arm.service_principal_object_id(app)
                .await
                .map_err(|e| arm_transient("looking up the Backup Management Service object id (set ADE_BACKUP_BMS_OBJECT_ID to skip it)", &e))
        })
        .await
        .copied()
}

/// Creates the least-privilege custom role once per subscription: the definition's GUID is
/// deterministic (a repeat PUT is a no-op) and a state marker saves the call after the first time.
/// Returns the reason when our identity may not create roles.
async fn ensure_custom_role(ctx: &Context, sub: &str) -> Result<Option<String>, HandlerError> {
    let marker = format!(
        "rbac/role-definitions/{}.json",
        records::key_segment(&sub.to_ascii_lowercase())
    );
    if ctx.state.get(&marker).await?.is_some() {
        return Ok(None);
    }
    let name = kv_access::custom_role_definition_name(sub);
    let role_uuid =
        uuid::Uuid::parse_str(&name).map_err(|e| HandlerError::Transient(e.to_string()))?;
    let subscription = ade_backup_shared::arm::scope::SubscriptionId::parse(sub)
        .map_err(|e| HandlerError::poison("InvalidSubscription", e.to_string()))?;
    let props = RoleDefinitionProperties::backup_key_vault_reader(
        &format!("{} ({sub})", kv_access::BACKUP_ROLE_NAME),
        subscription,
    );
    match ctx.arm.put_role_definition(subscription, role_uuid, &props).await {
        Ok(_) => {}
        Err(e) if is_forbidden(&e) => {
            return Ok(Some(format!(
                "ade-backup's identity may not create the custom role in subscription {sub} (needs Microsoft.Authorization/roleDefinitions/write); grant it, or set ADE_BACKUP_RBAC_ROLE=key-vault-administrator: {e}"
            )))
        }
        Err(e) => return Err(arm_transient("creating the custom role", &e)),
    }
    let body = j!({ "subscription": sub, "roleDefinitionId": kv_access::role_definition_id(RbacRoleChoice::CustomLeastPrivilege, sub), "createdAt": now(ctx) });
    match json::create(ctx.state.as_ref(), &marker, &body).await {
        Ok(_) | Err(ade_backup_shared::state::StateError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What the grant did on one vault.
enum GrantResult {
    AlreadyInPlace,
    Written(String),
    Denied(String),
}

async fn grant_on_vault(
    ctx: &Context,
    need: &VaultNeed,
    bms: uuid::Uuid,
) -> Result<GrantResult, HandlerError> {
    let kv = match ctx.arm.get_key_vault(&need.vault).await {
        Ok(kv) => kv,
        Err(e) if is_forbidden(&e) => {
            return Ok(GrantResult::Denied(format!(
                "ade-backup's identity may not read the Key Vault {} (needs Microsoft.KeyVault/vaults/read): {e}",
                need.vault
            )))
        }
        Err(e) if e.is_not_found() => {
            return Ok(GrantResult::Denied(format!("the Key Vault {} does not exist or is in another tenant", need.vault)))
        }
        Err(e) => return Err(arm_transient("reading the Key Vault", &e)),
    };
    let bms_s = bms.to_string();
    if kv.rbac_enabled() {
        let choice = ctx.settings.workflow.rbac_role;
        let sub = need.vault.subscription().to_string();
        let role_def_id = kv_access::role_definition_id(choice, &sub);
        // Already assigned (by us or by a human)?
        match ctx.arm.list_role_assignments_at_scope(&need.vault).await {
            Ok(list) => {
                let has = list.iter().any(|a| {
                    a.properties.principal_id.eq_ignore_ascii_case(&bms_s)
                        && (a.properties.role_definition_id.eq_ignore_ascii_case(&role_def_id)
                            || a.properties.role_definition_id.to_ascii_lowercase().ends_with(kv_access::KEY_VAULT_ADMINISTRATOR_ROLE))
                });
                if has {
                    return Ok(GrantResult::AlreadyInPlace);
                }
            }
            Err(e) if is_forbidden(&e) => {
                return Ok(GrantResult::Denied(format!(
                    "ade-backup's identity may not read role assignments on {} (needs Microsoft.Authorization/roleAssignments/read): {e}",
                    need.vault
                )))
            }
            Err(e) => return Err(arm_transient("listing role assignments", &e)),
        }
        if choice == RbacRoleChoice::CustomLeastPrivilege {
            if let Some(denied) = ensure_custom_role(ctx, &sub).await? {
                return Ok(GrantResult::Denied(denied));
            }
        }
        let assignment = kv_access::role_assignment_name(&need.vault, &bms_s, &role_def_id);
        let assignment = uuid::Uuid::parse_str(&assignment)
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        let props = RoleAssignmentProperties {
            role_definition_id: role_def_id.clone(),
            principal_id: bms_s.clone(),
            principal_type: Some("ServicePrincipal".to_string()),
            ..Default::default()
        };
        return match ctx.arm.put_role_assignment(&need.vault, assignment, &props).await {
            Ok(_) => Ok(GrantResult::Written(format!("role assignment {assignment} ({role_def_id}) on {}", need.vault))),
            Err(e) if e.code().is_some_and(|c| c.eq_ignore_ascii_case("RoleAssignmentExists")) => Ok(GrantResult::AlreadyInPlace),
            Err(e) if is_forbidden(&e) => Ok(GrantResult::Denied(format!(
                "ade-backup's identity may not assign roles on {} (needs Microsoft.Authorization/roleAssignments/write): {e}",
                need.vault
            ))),
            Err(e) => Err(arm_transient("assigning the role", &e)),
        };
    }
    // Access-policy model.
    let required = kv_access::required_permissions(need.mode);
    let required = Permissions {
        keys: if need.keys { required.keys } else { vec![] },
        secrets: if need.secrets {
            required.secrets
        } else {
            vec![]
        },
    };
    let entries: Vec<kv_access::PolicyEntry> = kv
        .properties
        .access_policies
        .iter()
        .map(|p| kv_access::PolicyEntry {
            object_id: p.object_id.clone(),
            permissions: Permissions {
                keys: p.permissions.keys.clone(),
                secrets: p.permissions.secrets.clone(),
            },
        })
        .collect();
    if kv_access::access_policy_in_place(&entries, &bms_s, &required) {
        return Ok(GrantResult::AlreadyInPlace);
    }
    let missing = kv_access::missing_permissions(&entries, &bms_s, &required);
    let tenant = kv.properties.tenant_id.clone().unwrap_or_default();
    let entry = AccessPolicyEntry {
        tenant_id: tenant,
        object_id: bms_s.clone(),
        application_id: None,
        permissions: ade_backup_shared::arm::Permissions {
            keys: missing.keys.clone(),
            secrets: missing.secrets.clone(),
            ..Default::default()
        },
    };
    match ctx.arm.add_key_vault_access_policies(&need.vault, &[entry]).await {
        Ok(_) => Ok(GrantResult::Written(format!(
            "access policy on {}: keys [{}] secrets [{}]",
            need.vault,
            missing.keys.join(", "),
            missing.secrets.join(", ")
        ))),
        Err(e) if is_forbidden(&e) => Ok(GrantResult::Denied(format!(
            "ade-backup's identity may not change access policies of {} (needs Microsoft.KeyVault/vaults/accessPolicies/write): {e}",
            need.vault
        ))),
        Err(e) => Err(arm_transient("adding the access policy", &e)),
    }
}

/// Claims `step` for this delivery. `Ok(None)`: claimed, go on. `Ok(Some(line))`: nothing to do
/// here — the step is done (the next phase is sent again, deduplicated by its id) or a live
/// invocation holds it (this message comes back when its lease ends).
async fn claim_step(
    ctx: &Context,
    op_id: &str,
    generation: u32,
    step_name: &str,
    delivery: &ServiceBusMessage,
    next: BackupPhase,
) -> Result<(ProtectionOperation, Option<String>), HandlerError> {
    let by = claimant(delivery);
    let (op, claim) = claim(ctx, op_id, generation, step_name, &by).await?;
    let line = match claim {
        Claim::Acquired => None,
        Claim::AlreadyDone => {
            if op.generation == generation && !op.is_finished() {
                send_backup(ctx, &op, next, 0, None).await?;
            }
            Some(format!("{}: {step_name} already done", op.operation_id))
        }
        Claim::HeldByOther { until } => {
            redeliver_at(ctx, delivery, until).await?;
            Some(format!(
                "{}: {step_name} in progress elsewhere until {until}; will look again",
                op.operation_id
            ))
        }
    };
    Ok((op, line))
}

pub async fn grant(
    ctx: &Context,
    msg: &GrantMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let (op, settled) = claim_step(
        ctx,
        &msg.operation_id,
        msg.generation,
        step::GRANT,
        delivery,
        BackupPhase::Protect,
    )
    .await?;
    if let Some(line) = settled {
        return Ok(line);
    }
    let bms = bms_object_id(ctx).await?;
    let mut written = Vec::new();
    for need in needs(&op) {
        match grant_on_vault(ctx, &need, bms).await? {
            GrantResult::AlreadyInPlace => {}
            GrantResult::Written(w) => written.push(w),
            GrantResult::Denied(why) => {
                let op = conclude(
                    ctx,
                    &op.operation_id,
                    status::BLOCKED,
                    step::GRANT,
                    "key-vault-access-denied",
                    &why,
                )
                .await?;
                notify(ctx, &op, "key-vault-access-denied", &why).await?;
                return Ok(format!("{}: blocked: {why}", op.operation_id));
            }
        }
    }
    let at = now(ctx);
    let detail = j!({ "writes": written });
    let n = written.len();
    let op = update_op(ctx, &op.operation_id, |op| {
        op.steps.finish(step::GRANT, at, Some(detail.clone()));
        op.record(
            at,
            status::IN_PROGRESS,
            if n == 0 {
                "Key Vault access already in place".to_string()
            } else {
                format!("Key Vault access granted ({n} write(s))")
            },
        );
        true
    })
    .await?;
    send_backup(ctx, &op, BackupPhase::Protect, 0, None).await?;
    Ok(format!(
        "{}: Key Vault access in place ({n} write(s))",
        op.operation_id
    ))
}

/// A message for humans (ticket, chat, e-mail bridge) about an operation that needs them.
async fn notify(
    ctx: &Context,
    op: &ProtectionOperation,
    code: &str,
    message: &str,
) -> Result<(), HandlerError> {
    let body = j!({
        "kind": "ade-backup.needsHuman",
        "operationId": op.operation_id,
        "vmId": op.vm_id.to_string(),
        "status": op.status,
        "reason": code,
        "message": message,
        "at": now(ctx),
    });
    let id = format!("{}-g{}-notify-{code}", op.operation_id, op.generation);
    send(
        ctx,
        &ctx.settings.workflow.notifications_queue,
        &id,
        &body,
        None,
        Some(&op.operation_id),
    )
    .await
}

// ---------------------------------------------------------------- BackupVm

fn policy_id(op: &ProtectionOperation) -> Result<ResourceId, HandlerError> {
    op.target
        .target
        .vault_id
        .child("backupPolicies", &op.target.target.policy)
        .map_err(|e| HandlerError::poison("InvalidPolicy", e.to_string()))
}

fn poll_delay(ctx: &Context, pending: Option<&PendingOperation>) -> std::time::Duration {
    let base = ctx.settings.workflow.poll_interval;
    match pending.and_then(|p| p.retry_after) {
        // Azure's Retry-After wins, but never beyond our own interval in accelerated runs.
        Some(ra) => ra.min(base.max(std::time::Duration::from_millis(1))),
        None => base,
    }
}

pub async fn backup(
    ctx: &Context,
    msg: &BackupMessage,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let op = load_op(ctx, &msg.operation_id).await?;
    if op.generation != msg.generation || op.is_finished() {
        return Ok(format!(
            "{}: stale message (operation is {} generation {})",
            op.operation_id, op.status, op.generation
        ));
    }
    if msg.poll > ctx.settings.workflow.max_polls {
        let m = format!(
            "the {} step did not finish after {} polls",
            msg.phase.as_str(),
            msg.poll
        );
        conclude(
            ctx,
            &op.operation_id,
            status::FAILED,
            msg.phase.as_str(),
            "operation-timed-out",
            &m,
        )
        .await?;
        return Ok(format!("{}: {m}", op.operation_id));
    }
    match msg.phase {
        BackupPhase::Protect => protect_phase(ctx, op, delivery).await,
        BackupPhase::ProtectPoll => protect_poll(ctx, op, msg.poll).await,
        BackupPhase::BackupNow => backup_now_phase(ctx, op, delivery).await,
        BackupPhase::BackupPoll => backup_poll(ctx, op, msg.poll).await,
        BackupPhase::Track => track(ctx, op, msg.poll).await,
    }
}

async fn protect_phase(
    ctx: &Context,
    op: ProtectionOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let (op, settled) = claim_step(
        ctx,
        &op.operation_id,
        op.generation,
        step::PROTECT,
        delivery,
        BackupPhase::BackupNow,
    )
    .await?;
    if let Some(line) = settled {
        return Ok(line);
    }
    let vault = op.target.target.vault_id.clone();
    let first_attempt = op.steps.get(step::PROTECT).map(|s| s.attempts).unwrap_or(1) <= 1;
    // Already protected (by us earlier, or by someone with another policy)? The sweep's Graph
    // read answered that for the first attempt; a retry (maybe after our own PUT) asks Azure.
    let known = if op.known_unprotected && first_attempt {
        Err(None)
    } else {
        ctx.arm
            .get_protected_item(&vault, &op.vm_id)
            .await
            .map_err(Some)
    };
    match known {
        Err(None) => {}
        Ok(item) => {
            let state = item.properties.protection_state.clone().unwrap_or_default();
            let stopped = crate::domain::sweep_plan::protection_stopped(&state);
            if !stopped && !state.is_empty() {
                let their_policy = item.properties.policy_id.clone().unwrap_or_default();
                let ours = policy_id(&op)?.to_string();
                let note = if !their_policy.is_empty() && !their_policy.eq_ignore_ascii_case(&ours)
                {
                    format!("already protected with policy {their_policy}; kept it (the rule asked for {})", op.target.target.policy)
                } else {
                    "already protected".to_string()
                };
                return finish_protect(ctx, op, item.id.clone(), Some(their_policy), note).await;
            }
        }
        Err(Some(e)) if e.is_not_found() => {}
        Err(Some(e)) => return Err(arm_transient("reading the protected item", &e)),
    }
    let policy = policy_id(&op)?;
    match ctx.arm.begin_protect_vm(&vault, &op.vm_id, &policy).await {
        Ok(started) => match started.pending {
            None => {
                let id = started.resource.and_then(|r| r.id);
                finish_protect(
                    ctx,
                    op,
                    id,
                    Some(policy.to_string()),
                    "protection enabled".to_string(),
                )
                .await
            }
            Some(p) => {
                let delay = poll_delay(ctx, Some(&p));
                let d = serde_json::to_value(&p).unwrap_or(Value::Null);
                let op = update_op(ctx, &op.operation_id, |o| {
                    o.steps.set_detail(step::PROTECT, j!({ "pending": d }));
                    true
                })
                .await?;
                send_backup(ctx, &op, BackupPhase::ProtectPoll, 1, Some(delay)).await?;
                Ok(format!("{}: enabling protection", op.operation_id))
            }
        },
        Err(e) if needs_discovery(&e) => {
            // The vault has not discovered the VM yet: refresh containers, try again shortly.
            let _ = ctx
                .arm
                .begin_refresh_containers(&vault)
                .await
                .map_err(|e| arm_transient("refreshing containers", &e))?;
            let op = update_op(ctx, &op.operation_id, |o| {
                o.steps.release(step::PROTECT);
                true
            })
            .await?;
            let attempt = op.steps.get(step::PROTECT).map(|s| s.attempts).unwrap_or(1);
            if attempt > 5 {
                let m = format!("the vault {vault} still cannot see the VM after {attempt} container refreshes: {e}");
                conclude(
                    ctx,
                    &op.operation_id,
                    status::FAILED,
                    step::PROTECT,
                    e.code().unwrap_or("vm-not-discoverable"),
                    &m,
                )
                .await?;
                return Ok(m);
            }
            send_backup(
                ctx,
                &op,
                BackupPhase::Protect,
                attempt,
                Some(ctx.settings.workflow.poll_interval),
            )
            .await?;
            Ok(format!(
                "{}: refreshed containers; protection retried (attempt {attempt})",
                op.operation_id
            ))
        }
        Err(e) if e.is_transient() => Err(arm_transient("enabling protection", &e)),
        Err(e) => {
            let code = e.code().unwrap_or("protection-failed").to_string();
            conclude(
                ctx,
                &op.operation_id,
                status::FAILED,
                step::PROTECT,
                &code,
                &e.to_string(),
            )
            .await?;
            Ok(format!(
                "{}: enabling protection failed: {e}",
                op.operation_id
            ))
        }
    }
}

fn needs_discovery(e: &ArmError) -> bool {
    e.is_not_found()
        || e.code().is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("containernotfound")
                || c.contains("objectnotfound")
                || c.contains("notdiscovered")
                || c.contains("protectablenotfound")
        })
}

async fn finish_protect(
    ctx: &Context,
    op: ProtectionOperation,
    item_id: Option<String>,
    policy: Option<String>,
    note: String,
) -> Result<String, HandlerError> {
    let at = now(ctx);
    let n = note.clone();
    let op = update_op(ctx, &op.operation_id, |o| {
        o.steps.finish(step::PROTECT, at, Some(j!({ "note": n })));
        o.azure.protected_item_id = item_id.clone().or(o.azure.protected_item_id.clone());
        o.azure.policy_id = policy.clone();
        if n.contains("kept it") && !o.warnings.iter().any(|w| w.starts_with("policy-kept")) {
            o.warnings.push(format!("policy-kept: {n}"));
        }
        o.record(at, status::IN_PROGRESS, n.clone());
        true
    })
    .await?;
    send_backup(ctx, &op, BackupPhase::BackupNow, 0, None).await?;
    Ok(format!("{}: {note}", op.operation_id))
}

fn pending_of(op: &ProtectionOperation, step_name: &str) -> Option<PendingOperation> {
    op.steps
        .detail(step_name)
        .and_then(|d| d.get("pending"))
        .and_then(|p| serde_json::from_value(p.clone()).ok())
}

/// One poll of the long-running operation a step started (stored as `pending` in the step's
/// detail). Everything but "it finished" is handled here: already done, lost track (restart the
/// step), still running (schedule the next poll), failed (conclude).
enum Polled {
    Finished(ade_backup_shared::arm::LroOutcome),
    Handled(String),
}

struct PollSpec {
    step: &'static str,
    start: BackupPhase,
    next: BackupPhase,
    what: &'static str,
    failure_code: &'static str,
}

async fn poll_step(
    ctx: &Context,
    op: &ProtectionOperation,
    spec: PollSpec,
    poll: u32,
) -> Result<Polled, HandlerError> {
    let id = &op.operation_id;
    if op.steps.is_done(spec.step) {
        return Ok(Polled::Handled(format!("{id}: {} already done", spec.what)));
    }
    let Some(pending) = pending_of(op, spec.step) else {
        // Lost track (e.g. the start was never recorded): start the step over.
        send_backup(ctx, op, spec.start, poll, None).await?;
        return Ok(Polled::Handled(format!(
            "{id}: no pending {} recorded; restarting the step",
            spec.what
        )));
    };
    match ctx.arm.poll_once(&pending).await {
        Ok(PollOutcome::Pending(p)) => {
            send_backup(
                ctx,
                op,
                spec.next,
                poll + 1,
                Some(poll_delay(ctx, Some(&p))),
            )
            .await?;
            Ok(Polled::Handled(format!(
                "{id}: {} still running",
                spec.what
            )))
        }
        Ok(PollOutcome::Done(out)) => Ok(Polled::Finished(out)),
        Err(e) if e.is_transient() => Err(arm_transient(&format!("polling the {}", spec.what), &e)),
        Err(e) => {
            let code = e.code().unwrap_or(spec.failure_code).to_string();
            conclude(ctx, id, status::FAILED, spec.step, &code, &e.to_string()).await?;
            Ok(Polled::Handled(format!(
                "{id}: the {} failed: {e}",
                spec.what
            )))
        }
    }
}

async fn protect_poll(
    ctx: &Context,
    op: ProtectionOperation,
    poll: u32,
) -> Result<String, HandlerError> {
    let spec = PollSpec {
        step: step::PROTECT,
        start: BackupPhase::Protect,
        next: BackupPhase::ProtectPoll,
        what: "protection request",
        failure_code: "protection-failed",
    };
    match poll_step(ctx, &op, spec, poll).await? {
        Polled::Handled(line) => Ok(line),
        Polled::Finished(out) => {
            // The item's id: from the final body when it is the item (Location polling), else
            // derived — its path is fixed by the vault and the VM, no GET needed.
            let item = out
                .body
                .as_ref()
                .and_then(|b| b.get("id"))
                .and_then(Value::as_str)
                .filter(|id| id.to_ascii_lowercase().contains("/protecteditems/"))
                .map(str::to_string)
                .or_else(|| {
                    ade_backup_shared::arm::recovery_services::protected_item_id(
                        &op.target.target.vault_id,
                        &op.vm_id,
                    )
                    .ok()
                    .map(|id| id.to_string())
                });
            let policy = policy_id(&op)?.to_string();
            finish_protect(
                ctx,
                op,
                item,
                Some(policy),
                "protection enabled".to_string(),
            )
            .await
        }
    }
}

async fn backup_now_phase(
    ctx: &Context,
    op: ProtectionOperation,
    delivery: &ServiceBusMessage,
) -> Result<String, HandlerError> {
    let (op, settled) = claim_step(
        ctx,
        &op.operation_id,
        op.generation,
        step::BACKUP_NOW,
        delivery,
        BackupPhase::Track,
    )
    .await?;
    if let Some(line) = settled {
        return Ok(line);
    }
    let vault = op.target.target.vault_id.clone();
    // A crash after the trigger and before it was recorded must not start a second backup:
    // adopt a backup job of this VM that started since the operation began.
    if let Some(job) = adoptable_job(ctx, &op).await? {
        return record_job(ctx, op, job, "adopted the backup job already running").await;
    }
    let expiry = now(ctx)
        + chrono::Duration::days(i64::from(ctx.settings.workflow.first_backup_retention_days));
    match ctx
        .arm
        .begin_backup_now(&vault, &op.vm_id, Some(expiry))
        .await
    {
        Ok(p) => {
            let delay = poll_delay(ctx, Some(&p));
            let d = serde_json::to_value(&p).unwrap_or(Value::Null);
            let op = update_op(ctx, &op.operation_id, |o| {
                o.steps.set_detail(step::BACKUP_NOW, j!({ "pending": d }));
                true
            })
            .await?;
            send_backup(ctx, &op, BackupPhase::BackupPoll, 1, Some(delay)).await?;
            Ok(format!("{}: backup triggered", op.operation_id))
        }
        Err(e) if e.is_transient() => Err(arm_transient("triggering the backup", &e)),
        Err(e) => {
            let code = e.code().unwrap_or("backup-failed").to_string();
            conclude(
                ctx,
                &op.operation_id,
                status::FAILED,
                step::BACKUP_NOW,
                &code,
                &e.to_string(),
            )
            .await?;
            Ok(format!(
                "{}: triggering the backup failed: {e}",
                op.operation_id
            ))
        }
    }
}

async fn adoptable_job(
    ctx: &Context,
    op: &ProtectionOperation,
) -> Result<Option<String>, HandlerError> {
    let since = op.steps.get(step::BACKUP_NOW).and_then(|s| match &s.state {
        Some(crate::domain::steps::StepState::Claimed { at, .. }) => Some(*at),
        _ => None,
    });
    let Some(since) = since else { return Ok(None) };
    if op
        .steps
        .get(step::BACKUP_NOW)
        .map(|s| s.attempts)
        .unwrap_or(0)
        <= 1
    {
        return Ok(None);
    }
    let filter = BackupJobFilter {
        operation: Some(JobOperation::Backup),
        status: None,
        start_time: Some(since - chrono::Duration::minutes(5)),
        end_time: None,
    };
    let jobs = ctx
        .arm
        .list_backup_jobs(&op.target.target.vault_id, &filter)
        .await
        .map_err(|e| arm_transient("listing backup jobs", &e))?;
    let name = op.vm_id.name().to_ascii_lowercase();
    Ok(jobs
        .into_iter()
        .filter(|j| {
            j.properties
                .entity_friendly_name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
        })
        .filter_map(|j| j.name)
        .next())
}

async fn record_job(
    ctx: &Context,
    op: ProtectionOperation,
    job_id: String,
    note: &str,
) -> Result<String, HandlerError> {
    let at = now(ctx);
    let op = update_op(ctx, &op.operation_id, |o| {
        o.steps
            .finish(step::BACKUP_NOW, at, Some(j!({ "jobId": job_id })));
        o.azure.backup_job_id = Some(job_id.clone());
        o.record(at, status::IN_PROGRESS, format!("{note}: job {job_id}"));
        true
    })
    .await?;
    // A backup job takes minutes (seconds in the simulator): a read right now would only say
    // "InProgress" and spend a token of the subscription's read bucket.
    send_backup(
        ctx,
        &op,
        BackupPhase::Track,
        0,
        Some(ctx.settings.workflow.poll_interval),
    )
    .await?;
    Ok(format!("{}: {note}", op.operation_id))
}

async fn backup_poll(
    ctx: &Context,
    op: ProtectionOperation,
    poll: u32,
) -> Result<String, HandlerError> {
    let spec = PollSpec {
        step: step::BACKUP_NOW,
        start: BackupPhase::BackupNow,
        next: BackupPhase::BackupPoll,
        what: "backup request",
        failure_code: "backup-failed",
    };
    let out = match poll_step(ctx, &op, spec, poll).await? {
        Polled::Handled(line) => return Ok(line),
        Polled::Finished(out) => out,
    };
    match out.job_id {
        Some(job) => record_job(ctx, op, job, "backup job started").await,
        None => match adoptable_job(ctx, &op).await? {
            Some(job) => record_job(ctx, op, job, "backup job found").await,
            None => {
                conclude(
                    ctx,
                    &op.operation_id,
                    status::FAILED,
                    step::BACKUP_NOW,
                    "backup-job-unknown",
                    "the backup request finished without a job id",
                )
                .await?;
                Ok(format!(
                    "{}: backup finished without a job id",
                    op.operation_id
                ))
            }
        },
    }
}

async fn track(ctx: &Context, op: ProtectionOperation, poll: u32) -> Result<String, HandlerError> {
    let Some(job_id) = op.azure.backup_job_id.clone() else {
        send_backup(ctx, &op, BackupPhase::BackupNow, poll, None).await?;
        return Ok(format!(
            "{}: no job recorded; back to backup-now",
            op.operation_id
        ));
    };
    let vault = op.target.target.vault_id.clone();
    let job = ctx
        .arm
        .get_backup_job(&vault, &job_id)
        .await
        .map_err(|e| arm_transient("reading the backup job", &e))?;
    let st = job.properties.status.clone().unwrap_or_default();
    match st.as_str() {
        "Completed" | "CompletedWithWarnings" => {
            let points = ctx
                .arm
                .list_recovery_points(&vault, &op.vm_id)
                .await
                .map_err(|e| arm_transient("listing recovery points", &e))?;
            let newest = points
                .into_iter()
                .filter(|p| p.properties.recovery_point_time.is_some())
                .max_by_key(|p| p.properties.recovery_point_time);
            let (rp_id, rp_time) = match newest {
                Some(p) => (p.name.clone(), p.properties.recovery_point_time),
                None => (None, None),
            };
            let at = now(ctx);
            let op = update_op(ctx, &op.operation_id, |o| {
                o.steps
                    .finish(step::TRACK, at, Some(j!({ "jobStatus": st })));
                o.azure.recovery_point_id = rp_id.clone();
                o.azure.recovery_point_time = rp_time;
                o.reason = None;
                o.message = None;
                o.record(
                    at,
                    status::PROTECTED,
                    format!(
                        "first backup {st}; recovery point {}",
                        rp_id.clone().unwrap_or_else(|| "?".into())
                    ),
                );
                true
            })
            .await?;
            let (azure, warnings, op_id) = (
                op.azure.clone(),
                op.warnings.clone(),
                op.operation_id.clone(),
            );
            upsert_vm_record(ctx, &op.vm_id, |r| {
                r.status = status::PROTECTED.to_string();
                r.reason = None;
                r.message = Some("protected; first recovery point taken".to_string());
                r.azure = azure.clone();
                r.warnings = warnings.clone();
                r.operation_id = Some(op_id.clone());
            })
            .await?;
            Ok(format!(
                "{}: protected, recovery point {}",
                op.operation_id,
                op.azure.recovery_point_id.unwrap_or_default()
            ))
        }
        "Failed" | "Cancelled" => {
            let code = job.error_code().unwrap_or("backup-job-failed").to_string();
            let text = job
                .properties
                .error_details
                .first()
                .and_then(|e| e.error_string.clone())
                .unwrap_or_else(|| format!("backup job {job_id} {st}"));
            let kv_problem = crate::domain::sweep_plan::KEY_VAULT_PERMISSION_ERRORS
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&code));
            if kv_problem && op.grant_retries == 0 {
                // Access drifted (or propagated late): back to the grant step, once.
                let at = now(ctx);
                let op = update_op(ctx, &op.operation_id, |o| {
                    o.grant_retries += 1;
                    o.generation += 1;
                    o.steps = Default::default();
                    o.azure.backup_job_id = None;
                    o.last_error = Some(ErrorRecord {
                        at,
                        step: step::TRACK.into(),
                        code: code.clone(),
                        message: text.clone(),
                    });
                    o.record(
                        at,
                        status::IN_PROGRESS,
                        format!("backup failed with {code}; granting Key Vault access again"),
                    );
                    true
                })
                .await?;
                send_grant(ctx, &op).await?;
                return Ok(format!(
                    "{}: {code}; back to the grant step",
                    op.operation_id
                ));
            }
            if code.to_ascii_lowercase().contains("certificate") {
                // Azure Backup supports standalone keys only; no retry can fix this.
                let msg = format!("the key-encryption key belongs to a certificate; Azure Backup supports only standalone keys for ADE VMs. Re-encrypt the VM with a standalone Key Vault key. (Azure: {code}: {text})");
                conclude(
                    ctx,
                    &op.operation_id,
                    status::UNSUPPORTED,
                    step::TRACK,
                    "kek-certificate",
                    &msg,
                )
                .await?;
                return Ok(format!("{}: unsupported: kek-certificate", op.operation_id));
            }
            conclude(
                ctx,
                &op.operation_id,
                status::FAILED,
                step::TRACK,
                &code,
                &text,
            )
            .await?;
            Ok(format!("{}: backup job failed: {code}", op.operation_id))
        }
        _ => {
            send_backup(
                ctx,
                &op,
                BackupPhase::Track,
                poll + 1,
                Some(ctx.settings.workflow.poll_interval),
            )
            .await?;
            Ok(format!("{}: backup job {job_id} {st}", op.operation_id))
        }
    }
}

/// Writes the record of an adopted VM: protected by Azure Backup without ade-backup, its ADE
/// settings recorded so a restore can reinstall ADE.
pub async fn record_adoption(
    ctx: &Context,
    vm_id: &ResourceId,
    settings: &AdeSettings,
    selection: &Selection,
    warnings: Vec<String>,
    azure: ProtectionAzureIds,
) -> Result<(), HandlerError> {
    upsert_vm_record(ctx, vm_id, |r| {
        r.status = status::PROTECTED.to_string();
        r.reason = None;
        r.message = Some(
            "already protected by Azure Backup; ADE settings recorded by ade-backup".to_string(),
        );
        r.ade = Some(settings.clone());
        r.target = Some(selection.clone());
        r.warnings = warnings.clone();
        if r.azure.vault_id.is_none() {
            r.azure = azure.clone();
        }
    })
    .await
}

/// Records a VM that Azure Backup already protects but ade-backup has never seen (protected before
/// ade-backup was deployed, and healthy since): its ADE settings are read from the VM while it
/// still exists, so a later restore can reinstall ADE. Returns the record, or `None` when the VM
/// is gone, is not an ADE VM, matches no rule, or is not protected in the rule's vault.
pub async fn adopt_protected_vm(
    ctx: &Context,
    vm_id: &ResourceId,
) -> Result<Option<VmRecord>, HandlerError> {
    let Some(observed) = observe_vm(ctx, vm_id).await? else {
        return Ok(None);
    };
    let AdeState::Encrypted { settings, .. } = &observed.ade else {
        return Ok(None);
    };
    let Some(selection) = ctx.settings.workflow.protection_rules.select(&VmFacts {
        id: vm_id,
        location: &observed.location,
        tags: &observed.tags,
    }) else {
        return Ok(None);
    };
    let item = match ctx
        .arm
        .get_protected_item(&selection.target.vault_id, vm_id)
        .await
    {
        Ok(item) => item,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(arm_transient("reading the protected item", &e)),
    };
    if item
        .properties
        .protection_state
        .as_deref()
        .is_none_or(crate::domain::sweep_plan::protection_stopped)
    {
        return Ok(None);
    }
    let azure = ProtectionAzureIds {
        vault_id: Some(selection.target.vault_id.to_string()),
        protected_item_id: item.id.clone(),
        policy_id: item.properties.policy_id.clone(),
        ..Default::default()
    };
    record_adoption(
        ctx,
        vm_id,
        settings,
        &selection,
        observed.restore_warnings.clone(),
        azure,
    )
    .await?;
    Ok(
        json::get::<VmRecord>(ctx.state.as_ref(), &vm_record_key(vm_id))
            .await?
            .map(|(r, _)| r),
    )
}
