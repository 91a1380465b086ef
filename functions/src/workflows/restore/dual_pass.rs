//! Dual-pass ADE on restore (issue 14): a VM encrypted with the older flow (an Azure AD
//! application, recorded at protection as `dualPass` with its `AADClientID`) gets ADE back only
//! with the application's client id *and secret* in the extension's `protectedSettings`
//! (backup-azure-vms-automation.md, dual-pass restore).
//!
//! With `ADE_BACKUP_AAD_CLIENT_SECRET_URL` set (a Key Vault secret named by configuration, never
//! by a message), [`credentials`] reads that secret through the Key Vault data plane at reinstall
//! time and hands back the `protectedSettings` (`AADClientSecret`; the `AADClientID` recorded
//! at protection goes in the public settings); the value lives only in that request body: never logged, never stored in
//! the restore document, read again on a redelivery. Without the setting, or when the secret
//! cannot be read, the restore stops at the reinstall step with `reinstall-needs-aad-credentials`
//! and the exact command — the deployed VM is kept, and the ticket never reads `completed` with
//! locked disks.

use super::{fail, kek_clause};
use crate::context::Context;
use crate::domain::ade::AdeSettings;
use crate::engine::WorkflowError;
use crate::records::RestoreStep;
use ade_backup_shared::arm::ProtectedSettings;
use ade_backup_shared::ids::{KeyVaultUrl, ResourceId, TicketId};
use ade_backup_shared::keyvault::KeyVaultError;

/// The failure reason of a dual-pass VM's restore.
pub const NEEDS_AAD_CREDENTIALS: &str = "reinstall-needs-aad-credentials";

/// What a human runs to finish the restore of a dual-pass VM.
pub fn instructions(ade: &AdeSettings, vm: &ResourceId) -> String {
    let client = ade
        .aad_client_id
        .as_deref()
        .unwrap_or("<AAD application client id>");
    let kek = match (&ade.key_encryption_key_url, &ade.kek_vault_resource_id) {
        (Some(url), Some(v)) => format!(
            " -KeyEncryptionKeyUrl {} -KeyEncryptionKeyVaultId {v}",
            url.as_str()
        ),
        _ => String::new(),
    };
    format!(
        "The VM {vm} is deployed and kept; its encrypted volumes stay locked until ADE is reinstalled with the Azure AD application this VM was encrypted with (dual-pass ADE). With that application's client secret (or configure ADE_BACKUP_AAD_CLIENT_SECRET_URL to a Key Vault secret holding it and submit a new ticket), run: Set-AzVMDiskEncryptionExtension -ResourceGroupName {} -VMName {} -AadClientID {client} -AadClientSecret <secret> -DiskEncryptionKeyVaultUrl {} -DiskEncryptionKeyVaultId {}{kek} -VolumeType {} (https://learn.microsoft.com/azure/backup/backup-azure-vms-automation, restoring dual-pass encrypted VMs); then check that the volumes mount. Consider migrating the VM to single-pass ADE (without the AAD application).",
        vm.resource_group(),
        vm.name(),
        ade.key_vault_url,
        ade.key_vault_resource_id,
        ade.volume_type.as_deref().unwrap_or("All"),
    )
}

/// The `protectedSettings` that reinstall dual-pass ADE, from the configured secret.
/// `Err(line)`: the ticket failed at `reinstall-ade` (no setting, no client id recorded, or the
/// secret cannot be read); a transient Key Vault failure is a redelivery.
pub async fn credentials(
    ctx: &Context,
    ticket: &TicketId,
    ade: &AdeSettings,
    vm: &ResourceId,
) -> Result<Result<ProtectedSettings, String>, WorkflowError> {
    let Some(secret) = ctx.settings.workflow.key_vault.aad_client_secret.clone() else {
        let why = "which ade-backup does not have (ADE_BACKUP_AAD_CLIENT_SECRET_URL is not set)";
        return stop(ctx, ticket, ade, vm, why).await.map(Err);
    };
    if ade.aad_client_id.is_none() {
        let why = "but no AADClientID was recorded at protection";
        return stop(ctx, ticket, ade, vm, why).await.map(Err);
    }
    match read_secret(ctx, &secret).await {
        // `AADClientID` goes in the public settings (`AdeSettings::to_extension_settings`).
        Ok(value) => Ok(Ok(ProtectedSettings::new(serde_json::json!({
            "AADClientSecret": value.expose(),
        })))),
        Err(KeyVaultError::Http { source, .. }) if source.is_transient() => Err(
            WorkflowError::arm("reading the AAD application's client secret", source),
        ),
        Err(e) => {
            let why = format!(
                "which could not be read from {}: {e} ({})",
                secret.as_str(),
                e.code().unwrap_or("no code")
            );
            stop(ctx, ticket, ade, vm, &why).await.map(Err)
        }
    }
}

async fn read_secret(
    ctx: &Context,
    secret: &KeyVaultUrl,
) -> Result<ade_backup_shared::keyvault::SecretValue, KeyVaultError> {
    let vault = format!("https://{}/", host_of(secret));
    let client = ctx.arm.key_vault(&vault)?;
    client
        .get_secret(secret.object_name(), secret.version())
        .await
}

/// `https://kv.vault.azure.net/secrets/s` → `kv.vault.azure.net` (a parsed URL always has one).
fn host_of(u: &KeyVaultUrl) -> String {
    url::Url::parse(u.as_str())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// Fails the ticket at `reinstall-ade` for a dual-pass VM (returns the log line); `why` ends
/// "reinstalling ADE needs that application's client secret, ...".
async fn stop(
    ctx: &Context,
    ticket: &TicketId,
    ade: &AdeSettings,
    vm: &ResourceId,
    why: &str,
) -> Result<String, WorkflowError> {
    let client = ade
        .aad_client_id
        .as_deref()
        .map_or_else(String::new, |c| format!(" (AADClientID {c})"));
    let m = format!(
        "the source VM uses dual-pass ADE with an Azure AD application{client}: reinstalling ADE on {vm} needs that application's client secret, {why}; ADE was not reinstalled (settings recorded at protection: KeyVaultResourceId {}{})",
        ade.key_vault_resource_id,
        kek_clause(ade, " ")
    );
    let next = instructions(ade, vm);
    tracing::warn!(ticket = %ticket, reason = NEEDS_AAD_CREDENTIALS, "dual-pass ADE: reinstall needs AAD credentials");
    fail(
        ctx,
        ticket,
        RestoreStep::ReinstallAde,
        NEEDS_AAD_CREDENTIALS,
        &m,
        &next,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ade::OsType;

    #[test]
    fn the_instructions_name_the_vm_the_client_and_the_vault_but_no_secret() {
        let kv = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-app";
        let ade = AdeSettings {
            os_type: OsType::Linux,
            extension_name: "AzureDiskEncryptionForLinux".into(),
            extension_type: "AzureDiskEncryptionForLinux".into(),
            type_handler_version: Some("0.1".into()),
            key_vault_url: "https://kv-app.vault.azure.net/".into(),
            key_vault_resource_id: ResourceId::parse(kv).expect("kv"),
            key_encryption_key_url: None,
            kek_vault_resource_id: None,
            key_encryption_algorithm: None,
            volume_type: Some("Data".into()),
            dual_pass: true,
            aad_client_id: Some("8f6c2e1a-0b3d-4c5e-9a7b-1d2e3f4a5b6c".into()),
        };
        let vm = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-restore/providers/Microsoft.Compute/virtualMachines/vm-r").expect("vm");
        let text = instructions(&ade, &vm);
        for part in [
            "-ResourceGroupName rg-restore -VMName vm-r",
            "-AadClientID 8f6c2e1a-0b3d-4c5e-9a7b-1d2e3f4a5b6c",
            "-AadClientSecret <secret>",
            "-DiskEncryptionKeyVaultId /subscriptions/",
            "-VolumeType Data",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("-KeyEncryptionKeyUrl"), "{text}");
    }
}
