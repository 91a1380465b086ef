//! A drill's clean-up: deletes exactly what the drill created, and nothing else.
//!
//! What is deleted is gathered once ([`gather`]): the restored VM and its disks (the restore
//! document), the resources the drill's deployment reports it created, and the drill resource
//! group's disks carrying this drill's tag. Each id must be a VM, managed disk or NIC **inside
//! the drill resource group** (checked when gathered); anything else the records name is listed
//! as refused and never touched. The list is never widened: no resource group delete, no name
//! patterns. Right before every DELETE the resource is read (`GET`): it must still be inside the
//! drill resource group and carry the tag `ade-backup-drill` with this drill's id, and a disk or
//! NIC must not be attached to a VM the drill does not delete; otherwise it is `refused` (why is
//! recorded), never deleted, and the clean-up ends `needs-human`. The VM goes first (its disks
//! and NIC cannot be deleted while attached), then disks and NICs. A deletion is confirmed by a
//! `GET` of the resource answering 404, inside the drill resource group (the identity has no
//! rights above it, so the subscription-scoped operation URL of a 202 is never polled): a 202 is
//! `deleting` until a later pass sees the 404. Then the staging blobs of the drill's restore job.
//! A delete that fails is retried on the next pass (one pass per poll interval); after
//! [`MAX_ITEM_FAILURES`] failures of one resource, or [`MAX_PASSES`] passes, the clean-up is
//! `failed`, the resources left are reported, and a human is notified.

mod gather;

use super::{finish::finish, send_phase, target_of, update, DrillPhase};
use crate::context::Context;
use crate::domain::drill_config::DrillTarget;
use crate::domain::drill_tag::may_delete;
use crate::engine::WorkflowError;
use crate::records::{
    CleanupBlob, CleanupItem, CleanupStatus, DrillCleanup, DrillRecord, DrillStatus, ItemState,
};
use ade_backup_shared::arm::{DeletableKind, DeleteStarted};
use ade_backup_shared::ids::ResourceId;

/// Failed deletes of one resource before the clean-up gives up on it.
pub const MAX_ITEM_FAILURES: u32 = 5;
/// Clean-up passes before the clean-up is declared failed.
pub const MAX_PASSES: u32 = 200;
/// Passes a resource may still be there after its delete was accepted before it is asked again.
pub const MAX_WAITS: u32 = 10;

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

fn settled(i: &CleanupItem) -> bool {
    matches!(i.state, ItemState::Gone | ItemState::Refused)
}

/// One pass over the clean-up: confirm deletions, start the ones now allowed, then blobs.
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
    confirm_deletions(ctx, &mut c).await?;
    start_deletions(ctx, &target, &d.drill_id, &mut c).await?;
    if c.items.iter().all(settled) {
        delete_blobs(ctx, &mut c).await;
    }
    c.status = status_of(&c);
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
        let left = c.items.iter().filter(|i| !settled(i)).count();
        return Ok(format!(
            "{}: clean-up pass {}: {left} resource(s) left",
            d.drill_id, c.passes
        ));
    }
    finish(ctx, written).await
}

/// Done, needs a human (something refused), failed (retries ran out), or running.
fn status_of(c: &DrillCleanup) -> CleanupStatus {
    let blobs_done = c.blobs.iter().all(|b| b.deleted);
    if c.items.iter().all(settled) && blobs_done {
        return if c.items.iter().any(|i| i.state == ItemState::Refused) {
            CleanupStatus::NeedsHuman
        } else {
            CleanupStatus::Done
        };
    }
    let stuck = c
        .items
        .iter()
        .any(|i| i.failures >= MAX_ITEM_FAILURES && !settled(i))
        || c.passes >= MAX_PASSES;
    if stuck {
        CleanupStatus::Failed
    } else {
        CleanupStatus::Running
    }
}

/// The first pass: what to delete, fixed once (never widened afterwards).
async fn first_pass(
    ctx: &Context,
    d: &DrillRecord,
    target: &DrillTarget,
    c: &mut DrillCleanup,
) -> Result<(), WorkflowError> {
    let (ids, blobs) = gather::gather(ctx, d, target).await?;
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
            waits: 0,
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

/// Each accepted delete: `GET` answering 404 confirms it; still there after [`MAX_WAITS`]
/// passes, it is asked again.
async fn confirm_deletions(ctx: &Context, c: &mut DrillCleanup) -> Result<(), WorkflowError> {
    for item in c
        .items
        .iter_mut()
        .filter(|i| i.state == ItemState::Deleting)
    {
        if !still_there(ctx, item).await? {
            continue;
        }
        item.waits += 1;
        if item.waits >= MAX_WAITS {
            failed(item, "still there after its delete was accepted");
        }
    }
    Ok(())
}

/// `GET` of the item: gone → `Gone`; `true` when it still exists.
async fn still_there(ctx: &Context, item: &mut CleanupItem) -> Result<bool, WorkflowError> {
    let id = ResourceId::parse(&item.id)
        .map_err(|e| WorkflowError::poison("InvalidDrill", e.to_string()))?;
    match ctx.arm.get_tagged_resource(&id).await {
        Ok(None) => {
            item.state = ItemState::Gone;
            item.pending = None;
            item.error = None;
            Ok(false)
        }
        Ok(Some(_)) => Ok(true),
        Err(e) if e.is_transient() => Err(WorkflowError::arm("confirming a drill delete", e)),
        Err(e) => {
            failed(item, &e.to_string());
            Ok(true)
        }
    }
}

/// Starts the deletes now allowed: VMs, then (once every VM is settled) disks and NICs.
async fn start_deletions(
    ctx: &Context,
    target: &DrillTarget,
    drill: &str,
    c: &mut DrillCleanup,
) -> Result<(), WorkflowError> {
    let vms_settled = c.items.iter().filter(|i| is_vm(&i.id)).all(settled);
    // What this drill deletes (a refused VM is not: what is attached to it is refused too).
    let ours: Vec<String> = c
        .items
        .iter()
        .filter(|i| i.state != ItemState::Refused)
        .map(|i| i.id.to_ascii_lowercase())
        .collect();
    for item in c.items.iter_mut() {
        let allowed = is_vm(&item.id) || vms_settled;
        if item.state != ItemState::Pending || !allowed || item.failures >= MAX_ITEM_FAILURES {
            continue;
        }
        delete_one(ctx, target, drill, &ours, item).await?;
    }
    Ok(())
}

/// The check right before the DELETE (group, tag, attachment), then the DELETE.
async fn delete_one(
    ctx: &Context,
    target: &DrillTarget,
    drill: &str,
    ours: &[String],
    item: &mut CleanupItem,
) -> Result<(), WorkflowError> {
    let Some(id) = deletable(target, &item.id) else {
        refuse(drill, item, "outside the drill resource group");
        return Ok(());
    };
    let found = match ctx.arm.get_tagged_resource(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            item.state = ItemState::Gone;
            item.error = None;
            return Ok(());
        }
        Err(e) if e.is_transient() => {
            return Err(WorkflowError::arm("reading a drill resource", e))
        }
        Err(e) => {
            failed(item, &e.to_string());
            return Ok(());
        }
    };
    if let Err(why) = may_delete(target, drill, &id, &found) {
        refuse(drill, item, &why);
        return Ok(());
    }
    if let Some(vm) = found.attached_to() {
        if !ours.contains(&vm.to_ascii_lowercase()) {
            refuse(
                drill,
                item,
                &format!("attached to {vm}, which this drill does not delete"),
            );
        }
        // Attached to the drill's own VM, whose delete is not confirmed yet: next pass.
        return Ok(());
    }
    match ctx.arm.begin_delete_resource(&id).await {
        Ok(DeleteStarted::Gone) => {
            still_there(ctx, item).await?;
        }
        Ok(DeleteStarted::Pending(_)) => {
            item.state = ItemState::Deleting;
            item.pending = None;
            item.waits = 0;
        }
        Err(e) if e.is_transient() => {
            return Err(WorkflowError::arm("deleting a drill resource", e))
        }
        Err(e) => failed(item, &e.to_string()),
    }
    Ok(())
}

fn refuse(drill: &str, item: &mut CleanupItem, why: &str) {
    tracing::warn!(security_event = true, drill = %drill, resource = %item.id, why = %why, "a drill's clean-up refused to delete a resource; a human must look at it");
    item.state = ItemState::Refused;
    item.pending = None;
    item.error = Some(format!("refused: {why}"));
}

fn failed(item: &mut CleanupItem, why: &str) {
    item.state = ItemState::Pending;
    item.pending = None;
    item.waits = 0;
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
