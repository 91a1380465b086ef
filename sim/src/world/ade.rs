//! Azure Disk Encryption: the extension settings ADE is configured with for a key vault (and
//! optional KEK), and what running the extension does to a VM — validate the settings against
//! the world, store a new BEK secret in the vault, or unlock the data disks of a VM restored
//! from an encrypted backup when given the settings they were encrypted with.

use super::{lc, ExtState, Extension, VmState, World};
use crate::fleet::{self, OsType};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// ADE settings as applied to a VM (and recorded in recovery points).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Encryption {
    pub key_vault_url: String,
    pub key_vault_id: String,
    pub secret_url: String,
    pub kek_url: Option<String>,
    pub kek_vault_id: Option<String>,
    pub volume_type: String,
}

impl Encryption {
    /// A disk's `encryptionSettings` as the VM model and its instance view report them.
    pub(super) fn settings_json(&self) -> Value {
        let mut v = json!({
            "enabled": true,
            "diskEncryptionKey": {"secretUrl": self.secret_url, "sourceVault": {"id": self.key_vault_id}}
        });
        if let (Some(k), Some(kv)) = (&self.kek_url, &self.kek_vault_id) {
            v["keyEncryptionKey"] = json!({"keyUrl": k, "sourceVault": {"id": kv}});
        }
        v
    }
}

/// The ADE extension's (name, type, typeHandlerVersion) for an OS.
pub fn ade_extension_names(os: OsType) -> (&'static str, &'static str, &'static str) {
    match os {
        OsType::Windows => ("AzureDiskEncryption", "AzureDiskEncryption", "2.2"),
        OsType::Linux => (
            "AzureDiskEncryptionForLinux",
            "AzureDiskEncryptionForLinux",
            "1.1",
        ),
    }
}

impl Extension {
    /// The ADE extension for `os` with `settings`.
    pub fn ade(os: OsType, settings: Value, state: ExtState, ready_at: DateTime<Utc>) -> Self {
        let (name, ext_type, ver) = ade_extension_names(os);
        Extension {
            name: name.to_string(),
            publisher: "Microsoft.Azure.Security".into(),
            ext_type: ext_type.into(),
            type_handler_version: ver.into(),
            settings,
            state,
            ready_at,
        }
    }
}

impl World {
    /// Extension settings ADE would be configured with for a vault (and optional KEK).
    pub fn ade_settings_for(
        &self,
        kv_name: &str,
        kek: Option<(&str, &str)>,
        os: OsType,
    ) -> Option<Value> {
        let kv = self.key_vaults.get(&lc(kv_name))?;
        let mut s = json!({
            "EncryptionOperation": "EnableEncryption",
            "KeyVaultURL": kv.vault_uri(),
            "KeyVaultResourceId": kv.id,
            "KeyEncryptionAlgorithm": "RSA-OAEP",
            "VolumeType": if os == OsType::Windows { "All" } else { "Data" },
            "ResizeOSDisk": false
        });
        if let Some((kek_vault, key)) = kek {
            let kv2 = self.key_vaults.get(&lc(kek_vault))?;
            let (key_name, _) = kv2.keys.get(&lc(key))?;
            let version = ade_backup_shared::ids::deterministic_uuid(&["kek", &kv2.name, key_name])
                .simple()
                .to_string();
            s["KeyEncryptionKeyURL"] =
                json!(format!("{}keys/{key_name}/{version}", kv2.vault_uri()));
            s["KekVaultResourceId"] = json!(kv2.id);
        }
        Some(s)
    }

    /// A fleet VM's ADE as if its extension had run when the VM was created: the extension is
    /// installed (succeeded) and, if its settings are valid, the VM is encrypted.
    pub(super) fn apply_fleet_ade(&mut self, state: &mut VmState, vm: &fleet::Vm) {
        let Some((kv_name, kek)) = vm.ade.vaults() else {
            return;
        };
        let Some(settings) = self.ade_settings_for(kv_name, kek, vm.os_type) else {
            return;
        };
        if let Ok(enc) = self.apply_ade(state, &settings) {
            state.encryption = Some(enc);
        }
        let ext = Extension::ade(vm.os_type, settings, ExtState::Succeeded, state.created);
        state.extensions.insert(lc(&ext.name), ext);
        if let Some(client) = &vm.ade_aad_client_id {
            state.make_dual_pass(client);
        }
    }

    /// Validate ADE settings against the world and produce the resulting encryption state.
    pub(super) fn apply_ade(
        &mut self,
        vm: &mut VmState,
        settings: &Value,
    ) -> Result<Encryption, String> {
        let str_of = |k: &str| settings.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kv_id = str_of("KeyVaultResourceId")
            .ok_or("settings.KeyVaultResourceId is required for EnableEncryption")?;
        let kv_url =
            str_of("KeyVaultURL").ok_or("settings.KeyVaultURL is required for EnableEncryption")?;
        let kv_name = kv_id.rsplit('/').next().unwrap_or_default().to_string();
        let kv = self
            .key_vaults
            .get(&lc(&kv_name))
            .ok_or_else(|| format!("Key vault {kv_id} was not found"))?;
        if !kv_url
            .to_ascii_lowercase()
            .starts_with(&lc(&kv.vault_uri()).trim_end_matches('/').to_string())
        {
            return Err(format!(
                "KeyVaultURL {kv_url} does not belong to KeyVaultResourceId {kv_id}"
            ));
        }
        if !kv.enabled_for_disk_encryption {
            return Err(format!(
                "Key vault {} is not enabled for disk encryption (properties.enabledForDiskEncryption is false); the disk encryption secret cannot be stored or read",
                kv.name
            ));
        }
        let kek_url = str_of("KeyEncryptionKeyURL").filter(|s| !s.is_empty());
        let kek_vault_id = str_of("KekVaultResourceId").filter(|s| !s.is_empty());
        if let Some(url) = &kek_url {
            self.check_ade_kek(url)?;
        }
        let volume_type = str_of("VolumeType").unwrap_or_else(|| "All".into());
        if let (true, Some(orig)) = (vm.data_disks_locked, vm.restored_encryption.clone()) {
            return unlock_restored_disks(vm, orig, &kv.id, kek_url.as_deref(), volume_type);
        }
        let (key_vault_url, key_vault_id) = (kv.vault_uri(), kv.id.clone());
        let secret_url = self.store_bek_secret(vm, &kv_name, &key_vault_url);
        Ok(Encryption {
            key_vault_url,
            key_vault_id,
            secret_url,
            kek_url,
            kek_vault_id,
            volume_type,
        })
    }

    /// The KEK URL in ADE settings must name an existing key.
    fn check_ade_kek(&self, url: &str) -> Result<(), String> {
        let parsed = ade_backup_shared::ids::KeyVaultUrl::parse(url)
            .map_err(|e| format!("KeyEncryptionKeyURL is not a key URL: {e}"))?;
        let kv2 = self
            .key_vaults
            .get(&lc(parsed.vault_name()))
            .ok_or_else(|| format!("Key vault {} (KEK) was not found", parsed.vault_name()))?;
        if !kv2.keys.contains_key(&lc(parsed.object_name())) {
            return Err(format!(
                "Key {} was not found in vault {}",
                parsed.object_name(),
                kv2.name
            ));
        }
        Ok(())
    }

    /// Store a new BEK secret for `vm` in vault `kv_name`; returns its secret URL.
    fn store_bek_secret(&mut self, vm: &VmState, kv_name: &str, kv_uri: &str) -> String {
        let secret = ade_backup_shared::ids::deterministic_uuid(&[
            "bek",
            &lc(&vm.id),
            &self.counter.to_string(),
        ]);
        let version = ade_backup_shared::ids::deterministic_uuid(&["bekv", &secret.to_string()])
            .simple()
            .to_string();
        if let Some(kvm) = self.key_vaults.get_mut(&lc(kv_name)) {
            kvm.secrets.insert(secret.to_string());
        }
        format!("{kv_uri}secrets/{secret}/{version}")
    }
}

/// Re-running ADE on a VM whose restored data disks are locked unlocks them only with the key
/// vault (and KEK) they were encrypted with; the VM keeps its original encryption.
fn unlock_restored_disks(
    vm: &mut VmState,
    orig: Encryption,
    kv_id: &str,
    kek_url: Option<&str>,
    volume_type: String,
) -> Result<Encryption, String> {
    let same_vault = orig.key_vault_id.eq_ignore_ascii_case(kv_id);
    let same_kek = match (orig.kek_url.as_deref(), kek_url) {
        (None, None) => true,
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    if !(same_vault && same_kek) {
        return Err(
            "Failed to unlock the data volumes: the passphrase in the given key vault / KEK does not match the one the disks were encrypted with".into(),
        );
    }
    vm.data_disks_locked = false;
    Ok(Encryption {
        volume_type,
        ..orig
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::world::Durations;

    #[test]
    fn sample_fleet_ade_vms_are_encrypted_with_their_vaults() {
        let w = World::from_fleet(&Fleet::sample(), Utc::now(), Durations::default());
        let kek_vm = w.vms.values().find(|v| v.name == "web-lnx-02").expect("vm");
        let enc = kek_vm.encryption.as_ref().expect("encrypted");
        assert!(enc
            .kek_url
            .as_deref()
            .is_some_and(|u| u.contains("/keys/kek-weu/")));
        assert!(enc
            .secret_url
            .starts_with("https://kv-ade-ap-weu.vault.azure.net/secrets/"));
        // Fleet ADE on a vault not enabled for disk encryption cannot have succeeded.
        let legacy = w
            .vms
            .values()
            .find(|v| v.name == "legacy-lnx-01")
            .expect("vm");
        assert!(legacy.encryption.is_none());
    }
}
