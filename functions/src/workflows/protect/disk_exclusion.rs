//! Disk exclusion on an ADE VM (issue 14, item 5): Azure Backup refuses every backup of an
//! encrypted VM whose protected item leaves data disks out (`diskExclusionProperties`; the job
//! fails with `UserErrorEncryptedVmNotSupportedWithDiskEx`, azure-docs
//! `selective-disk-backup-restore.md`, "Limitations"). ade-backup never asks for an exclusion;
//! one made by someone else is reset by protecting the VM again with every disk
//! (`DiskSelection::All`). The protect step does that when it reads the item (the sweep's
//! `disk-exclusion-on-ade` repair), and a backup job failing with that code sends the operation
//! back to the protect step once per generation.

use super::{send_grant, BackupPhase};
use crate::context::Context;
use crate::engine::{self, Phase, WorkflowError};
use crate::records::{
    ErrorRecord, ProtectDetail, ProtectStep, ProtectionOperation, ProtectionStatus as St,
};
use ade_backup_shared::arm::ProtectedItem;

/// The job error code of a backup refused for a disk exclusion on an encrypted VM.
pub const DISK_EXCLUSION_ERROR: &str = "UserErrorEncryptedVmNotSupportedWithDiskEx";

/// What the item's selection leaves out, when it leaves data disks out.
pub(super) fn excluded(item: &ProtectedItem) -> Option<String> {
    let sel = item.disk_exclusion()?;
    Some(if sel.is_inclusion_list == Some(true) {
        format!("it backed up only data disk LUNs {:?}", sel.disk_lun_list)
    } else {
        format!("it left out data disk LUNs {:?}", sel.disk_lun_list)
    })
}

/// A backup job failed with [`DISK_EXCLUSION_ERROR`]: the first time in this generation, a new
/// generation goes back to the protect step (which reads the item and protects it again with
/// every disk). `None`: not this failure, or already repaired once.
pub(super) async fn repair_after_failure(
    ctx: &Context,
    op: &ProtectionOperation,
    code: &str,
    text: &str,
) -> Result<Option<String>, WorkflowError> {
    if !code.eq_ignore_ascii_case(DISK_EXCLUSION_ERROR) || op.disk_exclusion_repairs > 0 {
        return Ok(None);
    }
    let at = engine::now(ctx);
    // One document write decides. A crash before the send below leaves the new generation
    // without a message: the redelivered poll is stale for `backup`, and the sweep restarts the
    // operation once it counts as stalled (as after `track::grant_again`).
    let access_done = op.steps.is_done(ProtectStep::GrantKeyVaultAccess);
    let op = engine::update::<ProtectionOperation>(ctx, &op.operation_id, |o| {
        if o.disk_exclusion_repairs > 0 || o.is_finished() {
            return false;
        }
        o.disk_exclusion_repairs += 1;
        o.generation += 1;
        o.steps = Default::default();
        if access_done {
            // Access was in place for the backup that failed: only protection is redone.
            let detail = ProtectDetail {
                note: Some("access in place (kept from the previous generation)".to_string()),
                ..Default::default()
            };
            o.steps
                .finish(ProtectStep::GrantKeyVaultAccess, at, Some(detail));
        }
        o.azure.backup_job_id = None;
        // The protect step must read the item (its exclusion) rather than trust a sweep's view.
        o.known_unprotected = false;
        o.last_error = Some(ErrorRecord {
            at,
            step: ProtectStep::TrackBackupJob.as_str().into(),
            code: code.to_string(),
            message: text.to_string(),
        });
        let note = format!(
            "backup failed with {code}: the protected item excludes disks; protecting it again with every disk"
        );
        o.record(at, St::InProgress, note);
        true
    })
    .await?;
    if op.steps.is_done(ProtectStep::GrantKeyVaultAccess) {
        BackupPhase::Protect.send(ctx, &op, 0, None).await?;
    } else {
        send_grant(ctx, &op).await?;
    }
    Ok(Some(format!(
        "{}: {code}; back to the protect step to reset the disk exclusion",
        op.operation_id
    )))
}
