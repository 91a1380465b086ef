//! The restore side of the drill tag ([`crate::domain::drill_tag`]): whether a ticket is a
//! restore drill's (its drill document, written by ade-backup when the drill started, names this
//! ticket and this target resource group: nothing in a request or a template can make a ticket
//! a drill's), and tagging the managed disks a drill's restore job created, right after the job
//! completed: found from the template the job wrote (its VM's disks, inside the target resource
//! group only), each tagged by `PATCH` (its tags merged with the drill tag) and the tag confirmed
//! by `GET`. A deployment that fails later leaves these disks unattached; the drill's clean-up
//! still finds and deletes them by the tag.

use super::request_of;
use crate::context::Context;
use crate::domain::drill_tag::{template_disk_ids, with_drill_tag, DRILL_TAG};
use crate::engine::WorkflowError;
use crate::records::RestoreOperation;
use ade_backup_shared::ids::ResourceId;

/// The drill id when `op` is a restore drill's ticket.
pub(super) async fn drill_of(
    ctx: &Context,
    op: &RestoreOperation,
) -> Result<Option<String>, WorkflowError> {
    let ticket = op.ticket_id.as_str();
    let Some(d) = crate::workflows::drill::load(ctx, ticket).await? else {
        return Ok(None);
    };
    let target = request_of(op)?.target_resource_group.id();
    let same = d.ticket_id == ticket && d.drill_resource_group.eq_ignore_ascii_case(&target);
    Ok(same.then_some(d.drill_id))
}

fn arm(what: &'static str, e: ade_backup_shared::arm::ArmError) -> WorkflowError {
    WorkflowError::arm(what, e)
}

/// A drill's restore job completed: tag the disks its template attaches. Returns their ids (the
/// disks of a ticket that is not a drill's are not read). A disk that cannot be tagged for a
/// reason other than a transient one is logged and left untagged (the clean-up will refuse it
/// and report it for a human).
pub(super) async fn tag_restored_disks(
    ctx: &Context,
    op: &RestoreOperation,
    template_uri: &str,
) -> Result<Vec<String>, WorkflowError> {
    let Some(drill) = drill_of(ctx, op).await? else {
        return Ok(vec![]);
    };
    let Ok(url) = url::Url::parse(template_uri) else {
        return Ok(vec![]);
    };
    let template = match ctx.arm.download_blob(&url).await {
        Ok(b) => b.json,
        Err(e) if e.is_transient() => return Err(arm("reading the drill's restore template", e)),
        Err(e) => {
            tracing::warn!(drill = %drill, error = %e, "the drill's restore template could not be read: its disks are not tagged");
            return Ok(vec![]);
        }
    };
    let rg = request_of(op)?.target_resource_group.id();
    let ids = template_disk_ids(&template, &rg);
    for id in &ids {
        let Ok(rid) = ResourceId::parse(id) else {
            continue;
        };
        if let Err(why) = tag_one(ctx, &rid, &drill).await? {
            tracing::warn!(drill = %drill, disk = %id, why = %why, "a drill's restored disk is not tagged; its clean-up will need a human");
        }
    }
    Ok(ids)
}

/// `Ok(Err(why))`: not tagged, for a reason a retry does not fix.
async fn tag_one(
    ctx: &Context,
    id: &ResourceId,
    drill: &str,
) -> Result<Result<(), String>, WorkflowError> {
    let current = match ctx.arm.get_tagged_resource(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(Err("the restore job's disk does not exist".into())),
        Err(e) if e.is_transient() => return Err(arm("reading a restored disk", e)),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if current.tag(DRILL_TAG) == Some(drill) {
        return Ok(Ok(()));
    }
    match ctx
        .arm
        .patch_disk_tags(id, &with_drill_tag(&current.tags, drill))
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_transient() => return Err(arm("tagging a restored disk", e)),
        Err(e) => return Ok(Err(e.to_string())),
    }
    match ctx.arm.get_tagged_resource(id).await {
        Ok(Some(r)) if r.tag(DRILL_TAG) == Some(drill) => Ok(Ok(())),
        Ok(_) => Ok(Err("the tag is not there after the PATCH".into())),
        Err(e) if e.is_transient() => Err(arm("confirming a restored disk's tag", e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}
