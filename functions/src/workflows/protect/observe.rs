//! What the protection workflow knows about a VM: [`observe_vm`] reads it (and its ADE extension)
//! from ARM and classifies it; the sweep hands in the same [`ObservedVm`] from Resource Graph,
//! with [`SweepFacts`] about its surroundings. The per-VM record (`vms/…`) is written here.

use crate::context::Context;
use crate::domain::ade::{self, AdeState, ExtensionObservation, OsType, VmObservation};
use crate::domain::source_vm::{readiness, Readiness};
use crate::engine::{self, WorkflowError};
use crate::records::{vm_record_key, ProtectionStatus, VmRecord};
use ade_backup_shared::arm::{VirtualMachine, VmExtension};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::json;
use serde_json::Value;

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
    /// Whether a backup can run now (power state, VM agent), when the VM was read with its
    /// instance view; `None` from Resource Graph (the workflow reads it when it matters).
    pub readiness: Option<Readiness>,
    /// The OS, for the VM agent's fix.
    pub os_type: Option<OsType>,
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
    /// The VM agent must be checked before working on the VM: a new protection, or the last
    /// backup job failed on the agent. (Resource Graph has no instance view: one VM GET.)
    pub check_agent: bool,
}

/// Reads the VM (and its ADE extension when the VM's list shape lacks it) and classifies it.
pub async fn observe_vm(
    ctx: &Context,
    vm_id: &ResourceId,
) -> Result<Option<ObservedVm>, WorkflowError> {
    let vm = match ctx.arm.get_virtual_machine(vm_id).await {
        Ok(vm) => vm,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(WorkflowError::arm("reading the VM", e)),
    };
    let mut extensions = Vec::new();
    for ext in &vm.resources {
        if let Some(obs) = observe_extension(ctx, vm_id, ext).await? {
            extensions.push(obs);
        }
    }
    let obs = observation(vm_id, &vm, extensions);
    Ok(Some(ObservedVm {
        id: vm_id.clone(),
        location: vm.location.clone().unwrap_or_default(),
        tags: vm.tags.clone(),
        ade: ade::classify(&obs),
        restore_warnings: ade::restore_limit_warnings(&obs),
        readiness: Some(readiness(&vm)),
        os_type: obs.os_type,
    }))
}

/// One extension of the VM; an ADE extension the list shape names only by id is read in full.
async fn observe_extension(
    ctx: &Context,
    vm_id: &ResourceId,
    ext: &VmExtension,
) -> Result<Option<ExtensionObservation>, WorkflowError> {
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
    if ext.properties.publisher.is_none()
        && ade::ADE_EXTENSION_NAMES_ALL
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&name))
    {
        match ctx.arm.get_vm_extension(vm_id, &name).await {
            Ok(full) => ext = full,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(WorkflowError::arm("reading the ADE extension", e)),
        }
    }
    Ok(Some(ExtensionObservation {
        name,
        publisher: ext.properties.publisher.clone().unwrap_or_default(),
        extension_type: ext.properties.extension_type.clone().unwrap_or_default(),
        type_handler_version: ext.properties.type_handler_version.clone(),
        provisioning_state: ext.properties.provisioning_state.clone(),
        settings: ext.properties.settings.clone().unwrap_or(Value::Null),
    }))
}

/// The pure observation the ADE classifier works on.
fn observation(
    vm_id: &ResourceId,
    vm: &VirtualMachine,
    extensions: Vec<ExtensionObservation>,
) -> VmObservation {
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
    VmObservation {
        id: vm_id.clone(),
        os_type: vm.os_type().and_then(OsType::parse),
        extensions,
        os_disk_encryption_enabled,
        disk_encryption_codes,
        disk_sizes_gb,
        disk_count: vm.disk_count(),
        kek_is_certificate: None,
        unmanaged_disks: crate::domain::source_vm::has_unmanaged_disks(vm),
    }
}

/// Writes the per-VM record (read-modify-write; no write when nothing changed).
pub async fn upsert_vm_record(
    ctx: &Context,
    vm_id: &ResourceId,
    f: impl Fn(&mut VmRecord) + Send + Sync,
) -> Result<(), WorkflowError> {
    let at = engine::now(ctx);
    let key = vm_record_key(vm_id);
    json::update::<VmRecord, WorkflowError, _>(ctx.state.as_ref(), &key, |cur| {
        let mut rec = cur
            .cloned()
            .unwrap_or_else(|| VmRecord::new(vm_id.clone(), at));
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

/// Mirrors an outcome (status, reason, message) on the VM's record.
pub(super) async fn record_outcome(
    ctx: &Context,
    vm_id: &ResourceId,
    st: ProtectionStatus,
    reason: Option<&str>,
    message: &str,
) -> Result<(), WorkflowError> {
    upsert_vm_record(ctx, vm_id, |r| {
        r.status = st;
        r.reason = reason.map(str::to_string);
        r.message = Some(message.to_string());
    })
    .await
}

/// Used by the adoption path: the recorded VM record after a write.
pub(super) async fn read_vm_record(
    ctx: &Context,
    vm_id: &ResourceId,
) -> Result<Option<VmRecord>, WorkflowError> {
    Ok(
        json::get::<VmRecord>(ctx.state.as_ref(), &vm_record_key(vm_id))
            .await?
            .map(|(r, _)| r),
    )
}
