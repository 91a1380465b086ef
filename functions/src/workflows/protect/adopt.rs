//! Adoption: a VM that Azure Backup already protects but ade-backup has never seen (protected
//! before ade-backup was deployed, and healthy since) gets a VM record with its ADE settings, so a
//! later restore can reinstall ADE even when the source VM is gone.

use super::observe::{observe_vm, read_vm_record, upsert_vm_record};
use crate::context::Context;
use crate::domain::ade::{AdeSettings, AdeState};
use crate::domain::rules::{Selection, VmFacts};
use crate::engine::WorkflowError;
use crate::records::{ProtectionAzureIds, ProtectionStatus, VmRecord};
use ade_backup_shared::ids::ResourceId;

/// Writes the record of an adopted VM: protected by Azure Backup without ade-backup, its ADE
/// settings recorded so a restore can reinstall ADE.
pub async fn record_adoption(
    ctx: &Context,
    vm_id: &ResourceId,
    settings: &AdeSettings,
    selection: &Selection,
    warnings: Vec<String>,
    azure: ProtectionAzureIds,
) -> Result<(), WorkflowError> {
    upsert_vm_record(ctx, vm_id, |r| {
        r.status = ProtectionStatus::Protected;
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

/// Records a VM that Azure Backup already protects, reading its ADE settings from the VM while it
/// still exists. Returns the record, or `None` when the VM is gone, is not an ADE VM, matches no
/// rule, or is not protected in the rule's vault.
pub async fn adopt_protected_vm(
    ctx: &Context,
    vm_id: &ResourceId,
) -> Result<Option<VmRecord>, WorkflowError> {
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
    let vault = &selection.target.vault_id;
    let item = match ctx.arm.get_protected_item(vault, vm_id).await {
        Ok(item) => item,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(WorkflowError::arm("reading the protected item", e)),
    };
    let state = item.properties.protection_state.as_deref();
    if state.is_none_or(crate::domain::sweep_plan::protection_stopped) {
        return Ok(None);
    }
    let azure = ProtectionAzureIds {
        vault_id: Some(vault.to_string()),
        protected_item_id: item.id.clone(),
        policy_id: item.properties.policy_id.clone(),
        ..Default::default()
    };
    let warnings = observed.restore_warnings.clone();
    record_adoption(ctx, vm_id, settings, &selection, warnings, azure).await?;
    read_vm_record(ctx, vm_id).await
}
