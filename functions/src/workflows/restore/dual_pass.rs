//! Dual-pass ADE on restore (issue 14): a VM encrypted with the older flow (an Azure AD
//! application, recorded at protection as `dualPass` with its `AADClientID`) gets ADE back only
//! with the application's client id *and secret* in the extension's `protectedSettings`
//! (backup-azure-vms-automation.md, dual-pass restore). ade-backup holds no such secret and has
//! no Key Vault data-plane client to read one, so it never reinstalls dual-pass ADE: the restore
//! stops at the reinstall step with `reinstall-needs-aad-credentials` and the exact command —
//! the deployed VM is kept, and the ticket never reads `completed` with locked disks.

use super::{fail, kek_clause};
use crate::context::Context;
use crate::domain::ade::AdeSettings;
use crate::engine::WorkflowError;
use crate::records::RestoreStep;
use ade_backup_shared::ids::{ResourceId, TicketId};

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
        "The VM {vm} is deployed and kept; its encrypted volumes stay locked until ADE is reinstalled with the Azure AD application this VM was encrypted with (dual-pass ADE). With that application's client secret (ade-backup neither holds nor reads it), run: Set-AzVMDiskEncryptionExtension -ResourceGroupName {} -VMName {} -AadClientID {client} -AadClientSecret <secret> -DiskEncryptionKeyVaultUrl {} -DiskEncryptionKeyVaultId {}{kek} -VolumeType {} (https://learn.microsoft.com/azure/backup/backup-azure-vms-automation, restoring dual-pass encrypted VMs); then check that the volumes mount. Consider migrating the VM to single-pass ADE (without the AAD application).",
        vm.resource_group(),
        vm.name(),
        ade.key_vault_url,
        ade.key_vault_resource_id,
        ade.volume_type.as_deref().unwrap_or("All"),
    )
}

/// Fails the ticket at `reinstall-ade` for a dual-pass VM (returns the log line).
pub async fn stop(
    ctx: &Context,
    ticket: &TicketId,
    ade: &AdeSettings,
    vm: &ResourceId,
) -> Result<String, WorkflowError> {
    let client = ade
        .aad_client_id
        .as_deref()
        .map_or_else(String::new, |c| format!(" (AADClientID {c})"));
    let m = format!(
        "the source VM uses dual-pass ADE with an Azure AD application{client}: reinstalling ADE on {vm} needs that application's client secret, which ade-backup does not have; ADE was not reinstalled (settings recorded at protection: KeyVaultResourceId {}{})",
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
