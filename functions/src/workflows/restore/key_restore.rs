//! Opt-in restore of a recovery point's deleted BEK secret / KEK (issue 14, item 3;
//! `ADE_BACKUP_RESTORE_KEY_MATERIAL=true`). Runs when the restore-disks job has succeeded and
//! before anything is deployed: the backups of the key material come from the job itself (its
//! `Encryption Info Blob Name` blob in the staging account), so it cannot run earlier.
//!
//! 1. The recovery point's key material is checked again (it may have been deleted, or put
//!    back, while the job ran); present → nothing to do.
//! 2. Missing and the opt-in off → the ticket fails `key-material-missing` with Azure's steps.
//! 3. The blob is read with the process identity from the staging account *this ticket named*
//!    (the job's `Target Storage Account Name` must be it) and parsed as untrusted input
//!    ([`super::encryption_info`]): it must name exactly the recovery point's secret and key.
//! 4. The KEK, then the BEK secret, are restored into the vaults the *recorded protection
//!    state* names (never a vault from the ticket or the blob), with `POST keys|secrets/restore`;
//!    `409 Conflict` means already there. A redelivery after a crash re-runs this and sees 409.
//! 5. The key material is checked again; still missing → `key-material-missing`.
//!
//! Never logged: the blob, the backups. Logged: which objects were restored into which vault.

use super::encryption_info::{self, Backups};
use super::key_material::{key_material_present, KEY_MATERIAL_MISSING};
use super::{ade_of, code, fail, request_of, vault_of};
use crate::context::Context;
use crate::domain::ade::AdeSettings;
use crate::engine::WorkflowError;
use crate::records::{RestoreOperation, RestoreStep};
use ade_backup_shared::arm::{BackupJob, RecoveryPoint};
use ade_backup_shared::ids::KeyVaultUrl;
use ade_backup_shared::keyvault::{KeyVaultError, Restored};

/// A blob that cannot be trusted (wrong account, tampered, oversized, another vault named).
pub const KEY_MATERIAL_BACKUP_REJECTED: &str = "key-material-backup-rejected";

const REJECTED_NEXT: &str = "Nothing was restored into the Key Vault and no VM was deployed; the restored disks are kept. Check who can write to the staging storage account, then put the key material back by hand (https://learn.microsoft.com/azure/backup/backup-azure-restore-key-secret) and submit a new ticket.";

/// `Ok(Ok(note))`: go on (`note` says what was put back); `Ok(Err(line))`: the ticket failed.
pub(super) async fn ensure(
    ctx: &Context,
    op: &RestoreOperation,
    job: &BackupJob,
) -> Result<Result<Option<String>, String>, WorkflowError> {
    let ticket = &op.ticket_id;
    let step = RestoreStep::TrackRestoreJob;
    let Some(rp) = recovery_point(ctx, op).await? else {
        return Ok(Ok(None));
    };
    let refusal = match key_material_present(ctx, &rp).await? {
        Ok(()) => return Ok(Ok(None)),
        Err(r) => r,
    };
    let next = refusal.next_action.clone().unwrap_or_default();
    if refusal.code != KEY_MATERIAL_MISSING || !ctx.settings.workflow.key_vault.restore_key_material
    {
        return fail(ctx, ticket, step, &refusal.code, &refusal.message, &next)
            .await
            .map(Err);
    }
    let (bek, kek) = urls(&rp);
    let Some(bek) = bek else {
        return fail(
            ctx,
            ticket,
            step,
            KEY_MATERIAL_MISSING,
            &refusal.message,
            &next,
        )
        .await
        .map(Err);
    };
    let rejected = |why: String| async move {
        let m = format!(
            "the recovery point's key material is missing and its backup was not used: {why}"
        );
        fail(
            ctx,
            ticket,
            step,
            KEY_MATERIAL_BACKUP_REJECTED,
            &m,
            REJECTED_NEXT,
        )
        .await
        .map(Err)
    };
    let json = match read_blob(ctx, op, job).await? {
        Ok(j) => j,
        Err(why) => return rejected(why).await,
    };
    let backups = match encryption_info::parse(&json, &bek, kek.as_ref()) {
        Ok(b) => b,
        Err(e) => return rejected(e.to_string()).await,
    };
    if backups.secret.is_none() && backups.secret_data_only {
        let m = format!("{}; the job's Encryption Info blob carries the BEK only as SecretData (a wrapped value: putting it back creates a new secret version the recovery point does not name), which ade-backup does not restore", refusal.message);
        return fail(ctx, ticket, step, KEY_MATERIAL_MISSING, &m, &next)
            .await
            .map(Err);
    }
    let ade = ade_of(op)?;
    let done = match restore_all(ctx, ade, &bek, kek.as_ref(), &backups).await? {
        Ok(done) => done,
        Err((c, m)) => return fail(ctx, ticket, step, &c, &m, &next).await.map(Err),
    };
    if let Err(r) = key_material_present(ctx, &rp).await? {
        let m = format!("{} (after restoring {})", r.message, done.join(", "));
        return fail(ctx, ticket, step, &r.code, &m, &next).await.map(Err);
    }
    tracing::info!(ticket = %ticket, restored = %done.join(", "), "key material put back from the recovery point's backup");
    Ok(Ok(Some(format!(
        "the recovery point's key material was put back from its backup: {}",
        done.join(", ")
    ))))
}

/// The recovery point the restore job restored (`None`: no longer listed; nothing to check).
async fn recovery_point(
    ctx: &Context,
    op: &RestoreOperation,
) -> Result<Option<RecoveryPoint>, WorkflowError> {
    let Some(name) = op.azure.recovery_point_id.as_deref() else {
        return Ok(None);
    };
    let vault = vault_of(op)?;
    let vm = &request_of(op)?.vm_resource_id;
    let points = ctx
        .arm
        .list_recovery_points(&vault, vm)
        .await
        .map_err(|e| WorkflowError::arm("listing recovery points", e))?;
    Ok(points.into_iter().find(|p| {
        p.name
            .as_deref()
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    }))
}

fn urls(rp: &RecoveryPoint) -> (Option<KeyVaultUrl>, Option<KeyVaultUrl>) {
    let ks = rp.properties.key_and_secret.as_ref();
    let bek = ks
        .and_then(|k| k.bek_details.as_ref())
        .and_then(|b| b.secret_url.as_deref())
        .and_then(|u| KeyVaultUrl::parse(u).ok());
    let kek = ks
        .and_then(|k| k.kek_details.as_ref())
        .and_then(|b| b.key_url.as_deref())
        .and_then(|u| KeyVaultUrl::parse(u).ok());
    (bek, kek)
}

/// The job's Encryption Info blob, from this ticket's staging account only. `Err(why)`: refused.
async fn read_blob(
    ctx: &Context,
    op: &RestoreOperation,
    job: &BackupJob,
) -> Result<Result<serde_json::Value, String>, WorkflowError> {
    let staging = request_of(op)?
        .staging_storage_account_id
        .name()
        .to_string();
    let url = match encryption_info_url(job, &staging) {
        Ok(url) => url,
        Err(why) => return Ok(Err(why)),
    };
    let (container, blob) = (
        job.property("Config Blob Container Name")
            .unwrap_or_default(),
        job.property("Encryption Info Blob Name")
            .unwrap_or_default(),
    );
    match ctx.arm.download_blob_json(&url).await {
        Ok(j) => Ok(Ok(j)),
        Err(e) if e.is_transient() => {
            Err(WorkflowError::arm("reading the Encryption Info blob", e))
        }
        Err(e) => Ok(Err(format!(
            "the Encryption Info blob {container}/{blob} cannot be read: {e}"
        ))),
    }
}

/// Restores the KEK, then the BEK secret, into the recorded vaults. `Err((reason, message))`.
async fn restore_all(
    ctx: &Context,
    ade: &AdeSettings,
    bek: &KeyVaultUrl,
    kek: Option<&KeyVaultUrl>,
    backups: &Backups,
) -> Result<Result<Vec<String>, (String, String)>, WorkflowError> {
    let mut done = Vec::new();
    if let (Some(kek), Some(blob)) = (kek, backups.key.as_ref()) {
        let Some(recorded) = ade.key_encryption_key_url.as_ref() else {
            return Ok(Err((
                KEY_MATERIAL_BACKUP_REJECTED.into(),
                "the recovery point has a KEK but none was recorded at protection".into(),
            )));
        };
        match restore_one(ctx, recorded, kek, blob, true).await? {
            Ok(note) => done.push(note),
            Err(e) => return Ok(Err(e)),
        }
    }
    if let Some(blob) = backups.secret.as_ref() {
        let recorded = KeyVaultUrl::parse(&format!(
            "{}secrets/{}",
            with_slash(&ade.key_vault_url),
            bek.object_name()
        ))
        .map_err(|e| WorkflowError::poison("InvalidRestore", e.to_string()))?;
        match restore_one(ctx, &recorded, bek, blob, false).await? {
            Ok(note) => done.push(note),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(done))
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

/// One restore into the vault of `recorded` (protection state), which must be the vault the
/// recovery point names.
async fn restore_one(
    ctx: &Context,
    recorded: &KeyVaultUrl,
    object: &KeyVaultUrl,
    blob: &[u8],
    is_key: bool,
) -> Result<Result<String, (String, String)>, WorkflowError> {
    let what = if is_key { "KEK" } else { "BEK secret" };
    if !recorded
        .vault_name()
        .eq_ignore_ascii_case(object.vault_name())
    {
        let m = format!("the recovery point's {what} is in vault {}, but protection recorded vault {}: nothing restored", object.vault_name(), recorded.vault_name());
        return Ok(Err((KEY_MATERIAL_BACKUP_REJECTED.into(), m)));
    }
    let host = url::Url::parse(recorded.as_str())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let client = match ctx.arm.key_vault(&format!("https://{host}/")) {
        Ok(c) => c,
        Err(e) => return Ok(Err((KEY_MATERIAL_BACKUP_REJECTED.into(), e.to_string()))),
    };
    let result = if is_key {
        client.restore_key(blob).await
    } else {
        client.restore_secret(blob).await
    };
    let name = object.object_name();
    let vault = recorded.vault_name();
    match result {
        Ok(Restored::Restored { .. }) => Ok(Ok(format!("{what} {name} restored into {vault}"))),
        Ok(Restored::AlreadyExists) => Ok(Ok(format!("{what} {name} already in {vault}"))),
        Err(KeyVaultError::Http { source, .. }) if source.is_transient() => {
            Err(WorkflowError::arm(format!("restoring the {what}"), source))
        }
        Err(e) if e.is_forbidden() => {
            let kind = if is_key { "keys" } else { "secrets" };
            let m = format!("ade-backup may not restore the {what} {name} into {vault}: {e} ({}); grant its identity Microsoft.KeyVault/vaults/{kind}/restore/action on the vault (or the keys/secrets 'restore' access-policy permission)", e.code().unwrap_or("no code"));
            Ok(Err((code::KEY_VAULT_UNAVAILABLE.into(), m)))
        }
        Err(e) => {
            let m = format!(
                "Key Vault refused to restore the {what} {name} into {vault}: {e} ({})",
                e.code().unwrap_or("no code")
            );
            Ok(Err((KEY_MATERIAL_BACKUP_REJECTED.into(), m)))
        }
    }
}

/// The URL of the restore job's Encryption Info blob (the backups of the recovery point's BEK
/// secret and KEK), only in `staging` and only under plain names. `Err(why)`: refused.
pub(super) fn encryption_info_url(job: &BackupJob, staging: &str) -> Result<url::Url, String> {
    let account = job
        .property("Target Storage Account Name")
        .unwrap_or_default();
    if !account.eq_ignore_ascii_case(staging) {
        return Err(format!("the restore job names the storage account {account:?}, not this ticket's staging account {staging}"));
    }
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 255
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.contains("..")
    };
    let (Some(container), Some(blob)) = (
        job.property("Config Blob Container Name"),
        job.property("Encryption Info Blob Name"),
    ) else {
        return Err(
            "the restore job names no Encryption Info Blob Name / Config Blob Container Name"
                .into(),
        );
    };
    if !name_ok(container) || !name_ok(blob) {
        return Err(
            "the restore job's Encryption Info blob or container name is not a plain blob name"
                .into(),
        );
    }
    let url = format!("https://{staging}.blob.core.windows.net/{container}/{blob}");
    url::Url::parse(&url).map_err(|e| e.to_string())
}
