//! What a drill's clean-up deletes, gathered once from the drill's own records: the restored VM
//! and its disks (the restore document: the disks the restore job's template named and tagged,
//! the VM's disks once deployed), the resources the drill's deployment reports it created
//! (`properties.outputResources`), and the managed disks of the drill resource group that carry
//! this drill's tag (`Disks_ListByResourceGroup`; a deployment that failed before its VM existed
//! leaves the restore job's disks unattached). Never by name: a disk is listed here only when
//! the restore record names it or it carries this drill's tag; every one is checked again
//! (group, tag) right before its delete.

use super::super::restore_of;
use crate::context::Context;
use crate::domain::drill_config::DrillTarget;
use crate::domain::drill_tag::DRILL_TAG;
use crate::engine::WorkflowError;
use crate::records::{DrillRecord, RestoreOperation};
use ade_backup_shared::arm::{ResourceGroupRef, SubscriptionId};
use ade_backup_shared::ids::ResourceId;

fn arm(what: &'static str, e: ade_backup_shared::arm::ArmError) -> WorkflowError {
    WorkflowError::arm(what, e)
}

/// The ids the drill created (VMs, disks, NICs; unchecked) and its staging blobs.
pub(super) async fn gather(
    ctx: &Context,
    d: &DrillRecord,
    target: &DrillTarget,
) -> Result<(Vec<String>, Vec<String>), WorkflowError> {
    let mut ids = tagged_disks(ctx, d, target).await?;
    let Some(op) = restore_of(ctx, d).await? else {
        return Ok((ids, vec![]));
    };
    ids.extend(op.azure.restored_vm_id.iter().cloned());
    ids.extend(op.azure.restored_disk_ids.iter().cloned());
    ids.extend(deployment_outputs(ctx, &op).await?);
    ids.extend(vm_disks(ctx, &op).await?);
    let blobs = [
        &op.azure.template_blob_uri,
        &op.azure.config_blob_uri,
        &op.azure.encryption_info_blob_uri,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    Ok((ids, blobs))
}

/// The drill resource group's managed disks tagged with this drill's id.
async fn tagged_disks(
    ctx: &Context,
    d: &DrillRecord,
    target: &DrillTarget,
) -> Result<Vec<String>, WorkflowError> {
    let sub = SubscriptionId::parse(&target.subscription)
        .map_err(|e| arm("listing the drill group's disks", e))?;
    let rg = ResourceGroupRef::new(sub, &target.resource_group_name)
        .map_err(|e| arm("listing the drill group's disks", e))?;
    let disks = ctx
        .arm
        .list_disks(&rg)
        .await
        .map_err(|e| arm("listing the drill group's disks", e))?;
    Ok(disks
        .into_iter()
        .filter(|r| r.tag(DRILL_TAG) == Some(d.drill_id.as_str()))
        .filter_map(|r| r.id)
        .collect())
}

async fn deployment_outputs(
    ctx: &Context,
    op: &RestoreOperation,
) -> Result<Vec<String>, WorkflowError> {
    let (Some(name), Some(req)) = (&op.azure.deployment_name, &op.request) else {
        return Ok(vec![]);
    };
    let rg = &req.target_resource_group;
    let sub = SubscriptionId::parse(&rg.subscription)
        .map_err(|e| arm("reading the drill's deployment", e))?;
    let rg = ResourceGroupRef::new(sub, &rg.name)
        .map_err(|e| arm("reading the drill's deployment", e))?;
    match ctx.arm.get_deployment(&rg, name).await {
        Ok(dep) => Ok(dep
            .properties
            .output_resources
            .iter()
            .filter_map(|r| r.id.clone())
            .collect()),
        Err(e) if e.is_not_found() => Ok(vec![]),
        Err(e) => Err(arm("reading the drill's deployment", e)),
    }
}

async fn vm_disks(ctx: &Context, op: &RestoreOperation) -> Result<Vec<String>, WorkflowError> {
    let Some(vm) = op
        .azure
        .restored_vm_id
        .as_deref()
        .and_then(|v| ResourceId::parse(v).ok())
    else {
        return Ok(vec![]);
    };
    match ctx.arm.get_virtual_machine(&vm).await {
        Ok(v) => {
            let mut ids: Vec<String> = v
                .os_disk()
                .and_then(|d| d.managed_disk.as_ref())
                .and_then(|m| m.id.clone())
                .into_iter()
                .collect();
            ids.extend(
                v.data_disks()
                    .iter()
                    .filter_map(|d| d.managed_disk.as_ref().and_then(|m| m.id.clone())),
            );
            Ok(ids)
        }
        Err(e) if e.is_not_found() => Ok(vec![]),
        Err(e) => Err(arm("reading the drilled VM", e)),
    }
}
