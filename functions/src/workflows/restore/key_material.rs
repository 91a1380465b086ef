//! Restore-time checks of the Key Vault side, against the vaults as they are now (issue 14):
//! the BEK Key Vault must still be in the restore's region and the VM's subscription (ADE needs
//! both; protection checked them, but a vault can change afterwards), and the BEK secret and KEK
//! the recovery point was taken with must still exist — a VM deployed without them cannot unlock
//! its disks (`DiskEncryptionInternalError`, "Unknown error encountered when retrieving secret").
//! Existence is read through ARM (`vaults/{kv}/secrets/{name}`, `vaults/{kv}/keys/{name}`:
//! metadata only, `Microsoft.KeyVault/vaults/secrets/read` and `.../keys/read`). With
//! `ADE_BACKUP_RESTORE_KEY_MATERIAL=true`, missing key material is a warning at acceptance
//! ([`present_or_restorable`]) and `key_restore` puts it back after the restore job.

use super::submit::Refusal;
use crate::context::Context;
use crate::engine::WorkflowError;
use ade_backup_shared::arm::RecoveryPoint;
use ade_backup_shared::ids::{KeyVaultUrl, ResourceId};

pub const KEY_MATERIAL_MISSING: &str = "key-material-missing";
pub const KEY_VAULT_REGION: &str = "key-vault-region";
pub const KEY_VAULT_CROSS_SUBSCRIPTION: &str = "key-vault-cross-subscription";

/// Azure's procedure to put a deleted BEK secret / KEK back (backup-azure-restore-key-secret.md).
const RESTORE_KEY_SECRET_STEPS: &str = "Put the key material back before restoring: 1) if the secret/key was deleted less than the retention period ago and the vault has soft delete, recover it (az keyvault secret recover / az keyvault key recover); 2) otherwise restore it from the recovery point's backup: in the vault, restore the disks of this recovery point, open the restore job's details and download the blob named by 'Encryption Info Blob Name' from the staging account; from its JSON take KeyBackupData (the KEK) and SecretData / KeyVaultSecretBackupData (the BEK), base64-decode each to a file and run Restore-AzKeyVaultKey -VaultName <vault> -InputFile <kek file> and Restore-AzKeyVaultSecret -VaultName <vault> -InputFile <bek file> (same subscription and region); see https://learn.microsoft.com/azure/backup/backup-azure-restore-key-secret. 3) Submit a new ticket.";

/// A BEK Key Vault in another region than the restore or another subscription than the VM.
pub fn key_vault_placement(
    kv: &ResourceId,
    kv_location: Option<&str>,
    vm: &ResourceId,
    region: &str,
) -> Option<Refusal> {
    if !kv.subscription().eq_ignore_ascii_case(vm.subscription()) {
        return Some(Refusal::new(
            KEY_VAULT_CROSS_SUBSCRIPTION,
            "vmResourceId",
            format!("the Key Vault {kv} holding the VM's disk encryption secret is in another subscription than the VM: ADE VMs are restored only with a Key Vault of their subscription"),
            Some("Move the secret (and KEK) back to a Key Vault of the VM's subscription and region, or restore by hand; submit a new ticket.".into()),
        ));
    }
    match kv_location {
        Some(loc) if !norm(loc).eq(&norm(region)) => Some(Refusal::new(
            KEY_VAULT_REGION,
            "vmResourceId",
            format!("the Key Vault {kv} is in {loc}, the restore runs in {region}: ADE needs the Key Vault in the VM's region"),
            Some(format!("Use a Key Vault in {region} holding the VM's secret (and KEK), or restore by hand; submit a new ticket.")),
        )),
        _ => None,
    }
}

/// `West Europe` and `westeurope` are the same region.
fn norm(region: &str) -> String {
    region
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The recovery point's BEK secret and KEK exist in their vaults now.
pub async fn key_material_present(
    ctx: &Context,
    rp: &RecoveryPoint,
) -> Result<Result<(), Refusal>, WorkflowError> {
    let Some(ks) = rp.properties.key_and_secret.as_ref() else {
        return Ok(Ok(()));
    };
    let mut missing = Vec::new();
    if let Some(bek) = &ks.bek_details {
        if let Some((vault, url)) = parse(bek.secret_vault_id.as_deref(), bek.secret_url.as_deref())
        {
            let found = ctx
                .arm
                .key_vault_secret_exists(&vault, url.object_name())
                .await;
            let found = match readable(found, &vault, "secrets")? {
                Ok(f) => f,
                Err(r) => return Ok(Err(r)),
            };
            if !found {
                missing.push(format!("the BEK secret {} in {vault}", strip_version(&url)));
            }
        }
    }
    if let Some(kek) = &ks.kek_details {
        if let Some((vault, url)) = parse(kek.key_vault_id.as_deref(), kek.key_url.as_deref()) {
            let found = ctx
                .arm
                .key_vault_key_exists(&vault, url.object_name(), url.version())
                .await;
            let found = match readable(found, &vault, "keys")? {
                Ok(f) => f,
                Err(r) => return Ok(Err(r)),
            };
            if !found {
                missing.push(format!("the KEK {} in {vault}", url.as_str()));
            }
        }
    }
    if missing.is_empty() {
        return Ok(Ok(()));
    }
    Ok(Err(Refusal::new(
        KEY_MATERIAL_MISSING,
        "recoveryPoint",
        format!(
            "the recovery point's key material no longer exists: {}; a VM restored from it could not unlock its disks, so nothing was restored",
            missing.join(" and ")
        ),
        Some(RESTORE_KEY_SECRET_STEPS.into()),
    )))
}

/// [`key_material_present`] at acceptance: missing key material is a refusal, unless
/// `ADE_BACKUP_RESTORE_KEY_MATERIAL=true`, when it is a warning (`Ok(Ok(Some(_)))`) and
/// `key_restore` puts it back after the restore job.
pub async fn present_or_restorable(
    ctx: &Context,
    rp: &RecoveryPoint,
) -> Result<Result<Option<String>, Refusal>, WorkflowError> {
    match key_material_present(ctx, rp).await? {
        Ok(()) => Ok(Ok(None)),
        Err(r) if r.code == KEY_MATERIAL_MISSING && ctx.settings.workflow.key_vault.restore_key_material => {
            Ok(Ok(Some(format!("{KEY_MATERIAL_MISSING}: {}; ade-backup puts it back from the recovery point's key-and-secret backup once the restore job has written it (ADE_BACKUP_RESTORE_KEY_MATERIAL=true)", r.message))))
        }
        Err(r) => Ok(Err(r)),
    }
}

/// An existence check's answer; ade-backup not allowed to read it is a refusal that says which
/// permission to grant (never a silent pass).
fn readable(
    found: Result<bool, ade_backup_shared::arm::ArmError>,
    vault: &ResourceId,
    kind: &str,
) -> Result<Result<bool, Refusal>, WorkflowError> {
    match found {
        Ok(f) => Ok(Ok(f)),
        Err(e) if crate::workflows::is_forbidden(&e) => Ok(Err(Refusal::new(
            super::code::KEY_VAULT_UNAVAILABLE,
            "vmResourceId",
            format!("ade-backup may not check the recovery point's {kind} in {vault}: {e}"),
            Some(format!("Grant ade-backup's identity Microsoft.KeyVault/vaults/{kind}/read on the Key Vault (ARM metadata only, no secret values), then submit a new ticket.")),
        ))),
        Err(e) => Err(WorkflowError::arm("checking the recovery point's key material", e)),
    }
}

fn parse(vault: Option<&str>, url: Option<&str>) -> Option<(ResourceId, KeyVaultUrl)> {
    Some((
        ResourceId::parse(vault?).ok()?,
        KeyVaultUrl::parse(url?).ok()?,
    ))
}

/// `https://kv/secrets/name/version` → `https://kv/secrets/name` (ARM reads the secret by name).
fn strip_version(url: &KeyVaultUrl) -> String {
    match url.version() {
        Some(v) => url
            .as_str()
            .trim_end_matches('/')
            .trim_end_matches(v)
            .trim_end_matches('/')
            .to_string(),
        None => url.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";
    const S2: &str = "9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22";

    fn kv(sub: &str) -> ResourceId {
        ResourceId::parse(&format!(
            "/subscriptions/{sub}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-1"
        ))
        .expect("kv id")
    }

    #[test]
    fn key_vault_must_be_in_the_vms_subscription_and_the_restore_region() {
        let vm = ResourceId::parse(&format!(
            "/subscriptions/{S1}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
        ))
        .expect("vm id");
        assert!(key_vault_placement(&kv(S1), Some("West Europe"), &vm, "westeurope").is_none());
        assert!(key_vault_placement(&kv(S1), None, &vm, "westeurope").is_none());
        let r = key_vault_placement(&kv(S1), Some("northeurope"), &vm, "westeurope")
            .expect("other region");
        assert_eq!(r.code, KEY_VAULT_REGION);
        let r = key_vault_placement(&kv(S2), Some("westeurope"), &vm, "westeurope")
            .expect("other subscription");
        assert_eq!(r.code, KEY_VAULT_CROSS_SUBSCRIPTION);
    }

    #[test]
    fn secret_urls_lose_their_version_for_the_message() {
        let u =
            KeyVaultUrl::parse("https://kv-1.vault.azure.net/secrets/bek-1/0123abcd").expect("url");
        assert_eq!(
            strip_version(&u),
            "https://kv-1.vault.azure.net/secrets/bek-1"
        );
    }
}
