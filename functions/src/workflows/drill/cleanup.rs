//! A drill's clean-up: deletes exactly what the drill created, and nothing else.
//!
//! What is deleted is gathered once, from the drill's own records: the restored VM and its disks
//! (the restore document), and the resources the drill's deployment reports it created
//! (`properties.outputResources`). Each id must be a VM, managed disk or NIC **inside the drill
//! resource group** (checked when gathered and again before every DELETE); anything else the
//! records name is listed as refused and never touched. The list is never widened: no listing of
//! the resource group, no resource group delete. The VM goes first (its disks and NIC cannot be
//! deleted while attached), then disks and NICs; each deletion is followed to its end and
//! verified by a `GET` answering 404. Then the staging blobs of the drill's restore job (its
//! template and config). A delete that fails is retried on the next pass (one pass per poll
//! interval); after [`MAX_ITEM_FAILURES`] failures of one resource, or [`MAX_PASSES`] passes,
//! the clean-up is `failed`, the resources left are reported, and a human is notified.

use super::{finish::finish, restore_of, send_phase, target_of, update, DrillPhase};
use crate::context::Context;
use crate::domain::drill_config::DrillTarget;
use crate::engine::WorkflowError;
use crate::records::{
    CleanupBlob, CleanupItem, CleanupStatus, DrillCleanup, DrillRecord, DrillStatus, ItemState,
};
use ade_backup_shared::arm::{
    DeletableKind, DeleteStarted, PollOutcome, ResourceGroupRef, SubscriptionId,
};
use ade_backup_shared::ids::ResourceId;

/// Failed deletes of one resource before the clean-up gives up on it.
pub const MAX_ITEM_FAILURES: u32 = 5;
/// Clean-up passes before the clean-up is declared failed.
pub const MAX_PASSES: u32 = 200;

/// Whether a drill may delete `id`: a VM, disk or NIC inside the drill resource group.
pub fn deletable(target: &DrillTarget, id: &str) -> Option<ResourceId> {
    ResourceId::parse(id)
        .ok()
        .filter(|r| target.contains(r) && DeletableKind::of(r).is_some())
}

/// Splits the ids the drill's records name into what it deletes and what it refuses (deduped,
/// case-insensitively; VMs first).
pub fn plan(target: &DrillTarget, ids: &[String]) -> (Vec<String>, Vec<String>) {
    let mut keep: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for id in ids {
        let seen = |v: &Vec<String>| v.iter().any(|x| x.eq_ignore_ascii_case(id));
        if seen(&keep) || seen(&refused) {
            continue;
        }
        match deletable(target, id) {
            Some(_) => keep.push(id.clone()),
            None => refused.push(id.clone()),
        }
    }
    keep.sort_by_key(|id| !is_vm(id));
    (keep, refused)
}

fn is_vm(id: &str) -> bool {
    ResourceId::parse(id)
        .ok()
        .and_then(|r| DeletableKind::of(&r))
        == Some(DeletableKind::VirtualMachine)
}

/// The ids the drill's restore created, from the restore document and the deployment.
async fn gather(
    ctx: &Context,
    d: &DrillRecord,
) -> Result<(Vec<String>, Vec<String>), WorkflowError> {
    let Some(op) = restore_of(ctx, d).await? else {
        return Ok((vec![], vec![]));
    };
    let mut ids: Vec<String> = op.azure.restored_vm_id.iter().cloned().collect();
    ids.extend(op.azure.restored_disk_ids.iter().cloned());
    if let (Some(name), Some(req)) = (&op.azure.deployment_name, &op.request) {
        let rg = &req.target_resource_group;
        let sub = SubscriptionId::parse(&rg.subscription)
            .map_err(|e| WorkflowError::arm("reading the drill's deployment", e))?;
        let rg = ResourceGroupRef::new(sub, &rg.name)
            .map_err(|e| WorkflowError::arm("reading the drill's deployment", e))?;
        match ctx.arm.get_deployment(&rg, name).await {
            Ok(dep) => ids.extend(
                dep.properties
                    .output_resources
                    .iter()
                    .filter_map(|r| r.id.clone()),
            ),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(WorkflowError::arm("reading the drill's deployment", e)),
        }
    }
    if let Some(vm) = op
        .azure
        .restored_vm_id
        .as_deref()
        .and_then(|v| ResourceId::parse(v).ok())
    {
        match ctx.arm.get_virtual_machine(&vm).await {
            Ok(v) => {
                let disks = v
                    .os_disk()
                    .and_then(|d| d.managed_disk.as_ref())
                    .and_then(|m| m.id.clone());
                ids.extend(disks);
                ids.extend(
                    v.data_disks()
                        .iter()
                        .filter_map(|d| d.managed_disk.as_ref().and_then(|m| m.id.clone())),
                );
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(WorkflowError::arm("reading the drilled VM", e)),
        }
    }
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

/// One pass over the clean-up: follow deletions, start the ones now allowed, then blobs.
pub(super) async fn cleanup(
    ctx: &Context,
    d: DrillRecord,
    poll: u32,
) -> Result<String, WorkflowError> {
    if d.status != DrillStatus::CleaningUp {
        return Ok(format!("{}: not cleaning up ({})", d.drill_id, d.status));
    }
    let target = target_of(ctx, &d)?.clone();
    let mut c = d.cleanup.clone();
    if !c.gathered {
        first_pass(ctx, &d, &target, &mut c).await?;
    }
    c.passes += 1;
    follow_deletions(ctx, &mut c).await?;
    start_deletions(ctx, &target, &mut c).await?;
    if c.items.iter().all(|i| i.state == ItemState::Gone) {
        delete_blobs(ctx, &mut c).await;
    }
    let all_gone =
        c.items.iter().all(|i| i.state == ItemState::Gone) && c.blobs.iter().all(|b| b.deleted);
    let stuck = c
        .items
        .iter()
        .any(|i| i.failures >= MAX_ITEM_FAILURES && i.state != ItemState::Gone)
        || c.passes >= MAX_PASSES;
    c.status = if all_gone {
        CleanupStatus::Done
    } else if stuck {
        CleanupStatus::Failed
    } else {
        CleanupStatus::Running
    };
    let status = c.status;
    let written = update(ctx, &d.drill_id, |r| {
        if r.status != DrillStatus::CleaningUp {
            return false;
        }
        r.cleanup = c.clone();
        true
    })
    .await?;
    if status == CleanupStatus::Running {
        let delay = Some(ctx.settings.workflow.poll_interval);
        send_phase(ctx, &d.drill_id, DrillPhase::Cleanup, poll + 1, delay).await?;
        let left = c
            .items
            .iter()
            .filter(|i| i.state != ItemState::Gone)
            .count();
        return Ok(format!(
            "{}: clean-up pass {}: {left} resource(s) left",
            d.drill_id, c.passes
        ));
    }
    finish(ctx, written).await
}

/// The first pass: what to delete, fixed once (never widened afterwards).
async fn first_pass(
    ctx: &Context,
    d: &DrillRecord,
    target: &DrillTarget,
    c: &mut DrillCleanup,
) -> Result<(), WorkflowError> {
    let (ids, blobs) = gather(ctx, d).await?;
    let (keep, refused) = plan(target, &ids);
    for r in &refused {
        tracing::warn!(security_event = true, drill = %d.drill_id, resource = %r, "a drill's records name a resource outside the drill resource group (or of a type a drill never deletes): refused, not deleted");
    }
    c.items = keep
        .into_iter()
        .map(|id| CleanupItem {
            id,
            state: ItemState::Pending,
            pending: None,
            failures: 0,
            error: None,
        })
        .collect();
    c.blobs = blobs
        .into_iter()
        .map(|uri| CleanupBlob {
            uri,
            deleted: false,
        })
        .collect();
    c.refused = refused;
    c.gathered = true;
    c.status = CleanupStatus::Running;
    Ok(())
}

/// Follows each accepted delete; a finished one is verified gone.
async fn follow_deletions(ctx: &Context, c: &mut DrillCleanup) -> Result<(), WorkflowError> {
    for item in c
        .items
        .iter_mut()
        .filter(|i| i.state == ItemState::Deleting)
    {
        let Some(p) = item.pending.clone() else {
            item.state = ItemState::Pending;
            continue;
        };
        match ctx.arm.poll_once(&p).await {
            Ok(PollOutcome::Pending(next)) => item.pending = Some(next),
            Ok(PollOutcome::Done(_)) => verify_gone(ctx, item).await?,
            Err(e) if e.is_transient() => {
                return Err(WorkflowError::arm("following a drill delete", e))
            }
            Err(e) => failed(item, &e.to_string()),
        }
    }
    Ok(())
}

/// Starts the deletes now allowed: VMs, then (once every VM is gone) disks and NICs.
async fn start_deletions(
    ctx: &Context,
    target: &DrillTarget,
    c: &mut DrillCleanup,
) -> Result<(), WorkflowError> {
    let vms_gone = c
        .items
        .iter()
        .filter(|i| is_vm(&i.id))
        .all(|i| i.state == ItemState::Gone);
    for item in c.items.iter_mut() {
        let allowed = is_vm(&item.id) || vms_gone;
        if item.state != ItemState::Pending || !allowed || item.failures >= MAX_ITEM_FAILURES {
            continue;
        }
        // Checked again right before the DELETE: nothing outside the drill group, ever.
        let Some(id) = deletable(target, &item.id) else {
            failed(item, "outside the drill resource group: refused");
            item.failures = MAX_ITEM_FAILURES;
            continue;
        };
        match ctx.arm.begin_delete_resource(&id).await {
            Ok(DeleteStarted::Gone) => verify_gone(ctx, item).await?,
            Ok(DeleteStarted::Pending(p)) => {
                item.state = ItemState::Deleting;
                item.pending = Some(p);
            }
            Err(e) if e.is_transient() => {
                return Err(WorkflowError::arm("deleting a drill resource", e))
            }
            Err(e) => failed(item, &e.to_string()),
        }
    }
    Ok(())
}

async fn verify_gone(ctx: &Context, item: &mut CleanupItem) -> Result<(), WorkflowError> {
    let id = ResourceId::parse(&item.id)
        .map_err(|e| WorkflowError::poison("InvalidDrill", e.to_string()))?;
    match ctx.arm.resource_exists(&id).await {
        Ok(false) => {
            item.state = ItemState::Gone;
            item.pending = None;
            item.error = None;
        }
        Ok(true) => failed(item, "still there after its delete finished"),
        Err(e) if e.is_transient() => {
            return Err(WorkflowError::arm("verifying a drill delete", e))
        }
        Err(e) => failed(item, &e.to_string()),
    }
    Ok(())
}

fn failed(item: &mut CleanupItem, why: &str) {
    item.state = ItemState::Pending;
    item.pending = None;
    item.failures += 1;
    item.error = Some(ade_backup_shared::telemetry::redact_owned(why.to_string()));
}

/// Deletes the restore job's staging blobs; a failure is kept and retried on the next pass.
async fn delete_blobs(ctx: &Context, c: &mut DrillCleanup) {
    for b in c.blobs.iter_mut().filter(|b| !b.deleted) {
        let Ok(url) = url::Url::parse(&b.uri) else {
            b.deleted = true;
            continue;
        };
        match ctx.arm.delete_blob(&url).await {
            Ok(_) => b.deleted = true,
            Err(e) => c.last_error = Some(format!("staging blob not deleted: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";

    fn target() -> DrillTarget {
        DrillTarget {
            resource_group: format!("/subscriptions/{SUB}/resourceGroups/rg-drill"),
            subscription: SUB.into(),
            resource_group_name: "rg-drill".into(),
            subnet_id: ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/v/subnets/s")).expect("subnet"),
            staging_storage_account_id: ResourceId::parse(&format!("/subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/st")).expect("sa"),
        }
    }

    fn id(rg: &str, t: &str, n: &str) -> String {
        format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/{t}/{n}")
    }

    #[test]
    fn the_drill_staging_role_grants_blob_delete_and_nothing_else() {
        let roles: serde_json::Value =
            serde_json::from_str(include_str!("../../../../infra/roles.json")).expect("roles.json");
        let r = &roles["customRoles"]["drillStagingBlobDelete"];
        assert_eq!(
            r["dataActions"],
            serde_json::json!([
                "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete"
            ])
        );
        assert_eq!(r["actions"], serde_json::json!([]));
    }

    #[test]
    fn only_vms_disks_and_nics_inside_the_drill_group_are_deleted_vms_first() {
        let ids = vec![
            id("rg-drill", "Microsoft.Compute/disks", "d1"),
            id("RG-DRILL", "Microsoft.Compute/virtualMachines", "dr-1"),
            id(
                "rg-drill",
                "Microsoft.Network/networkInterfaces",
                "dr-1-nic",
            ),
            id("rg-app", "Microsoft.Compute/virtualMachines", "web-01"),
            id("rg-drill", "Microsoft.Network/virtualNetworks", "vnet"),
            id("rg-drill", "Microsoft.Compute/disks", "D1"),
            "not an id".into(),
        ];
        let (keep, refused) = plan(&target(), &ids);
        assert_eq!(keep.len(), 3, "{keep:?}");
        assert!(keep[0].contains("virtualMachines/dr-1"), "{keep:?}");
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(refused.iter().any(|r| r.contains("rg-app")));
        let other_sub = id("rg-drill", "Microsoft.Compute/disks", "d1")
            .replace(SUB, "9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22");
        assert!(deletable(&target(), &other_sub).is_none());
    }
}
