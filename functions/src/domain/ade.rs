//! What Azure Disk Encryption looks like on a VM, decided from what ARM reports (never from the
//! event alone): not encrypted · in progress · BEK only · BEK + KEK · unsupported.
//!
//! The ADE extension settings are recorded in the VM's state when it is protected, because the
//! template a restore-disks job generates does not carry them (azure-docs issues 20435, 36679) and
//! the source VM may be gone when a restore is needed.

use super::kv_access::KeyMode;
use ade_backup_shared::ids::{KeyVaultUrl, ResourceId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const ADE_PUBLISHER: &str = "Microsoft.Azure.Security";
pub const ADE_WINDOWS: &str = "AzureDiskEncryption";
pub const ADE_LINUX: &str = "AzureDiskEncryptionForLinux";
/// Both extension names (the extension is named after its type).
pub const ADE_EXTENSION_NAMES_ALL: [&str; 2] = [ADE_WINDOWS, ADE_LINUX];
/// Azure Backup cannot restore ADE settings of a VM with a disk larger than this (GB).
pub const MAX_DISK_GB_FOR_ADE_RESTORE: u64 = 4097;
/// ... or with more disks than this.
pub const MAX_DISKS_FOR_ADE_RESTORE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsType {
    Windows,
    Linux,
}

impl OsType {
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("windows") {
            Some(Self::Windows)
        } else if s.eq_ignore_ascii_case("linux") {
            Some(Self::Linux)
        } else {
            None
        }
    }
    pub fn ade_extension_type(self) -> &'static str {
        match self {
            Self::Windows => ADE_WINDOWS,
            Self::Linux => ADE_LINUX,
        }
    }
}

/// The ADE extension settings needed to reinstall it on a restored VM (recorded at protection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdeSettings {
    pub os_type: OsType,
    pub extension_name: String,
    pub extension_type: String,
    pub type_handler_version: Option<String>,
    /// `KeyVaultURL`, the vault's base URL (e.g. `https://kv.vault.azure.net/`).
    pub key_vault_url: String,
    /// `KeyVaultResourceId`: the vault holding the BEK secret.
    pub key_vault_resource_id: ResourceId,
    /// `KeyEncryptionKeyURL`, with a KEK.
    pub key_encryption_key_url: Option<KeyVaultUrl>,
    /// `KekVaultResourceId`, with a KEK (may differ from the BEK vault).
    pub kek_vault_resource_id: Option<ResourceId>,
    pub key_encryption_algorithm: Option<String>,
    /// `VolumeType`: `OS`, `Data` or `All`.
    pub volume_type: Option<String>,
}

impl AdeSettings {
    pub fn key_mode(&self) -> KeyMode {
        if self.key_encryption_key_url.is_some() {
            KeyMode::BekKek
        } else {
            KeyMode::BekOnly
        }
    }

    /// The extension `settings` object to reinstall ADE with (the documented public settings).
    pub fn to_extension_settings(&self) -> Value {
        let mut s = serde_json::Map::new();
        s.insert("EncryptionOperation".into(), "EnableEncryption".into());
        s.insert("KeyVaultURL".into(), self.key_vault_url.clone().into());
        s.insert(
            "KeyVaultResourceId".into(),
            self.key_vault_resource_id.to_string().into(),
        );
        if let Some(kek) = &self.key_encryption_key_url {
            s.insert("KeyEncryptionKeyURL".into(), kek.as_str().into());
        }
        if let Some(id) = &self.kek_vault_resource_id {
            s.insert("KekVaultResourceId".into(), id.to_string().into());
        }
        if let Some(alg) = &self.key_encryption_algorithm {
            s.insert("KeyEncryptionAlgorithm".into(), alg.clone().into());
        }
        s.insert(
            "VolumeType".into(),
            self.volume_type
                .clone()
                .unwrap_or_else(|| "All".to_string())
                .into(),
        );
        Value::Object(s)
    }
}

/// What we observed of one extension on the VM.
#[derive(Debug, Clone)]
pub struct ExtensionObservation {
    pub name: String,
    pub publisher: String,
    pub extension_type: String,
    pub type_handler_version: Option<String>,
    pub provisioning_state: Option<String>,
    pub settings: Value,
}

/// What we observed of the VM.
#[derive(Debug, Clone)]
pub struct VmObservation {
    pub id: ResourceId,
    pub os_type: Option<OsType>,
    pub extensions: Vec<ExtensionObservation>,
    /// `storageProfile.osDisk.encryptionSettings.enabled` (ADE via the VM model, older "dual pass").
    pub os_disk_encryption_enabled: bool,
    /// Instance-view disk encryption status codes, e.g. `EncryptionState/encrypted`.
    pub disk_encryption_codes: Vec<String>,
    /// Disk sizes in GB (OS + data), unknown sizes omitted.
    pub disk_sizes_gb: Vec<u64>,
    pub disk_count: usize,
    /// Whether the KEK belongs to a certificate, when known (Key Vault data plane `managed`).
    pub kek_is_certificate: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum AdeState {
    NotEncrypted {
        why: String,
    },
    InProgress {
        why: String,
    },
    Encrypted {
        mode: KeyMode,
        settings: Box<AdeSettings>,
    },
    Unsupported {
        code: String,
        message: String,
    },
}

/// Warnings that do not stop protection but that the owner must know about.
pub fn restore_limit_warnings(vm: &VmObservation) -> Vec<String> {
    let mut w = Vec::new();
    if vm.disk_count > MAX_DISKS_FOR_ADE_RESTORE {
        w.push(format!(
            "ade-restore-limit: the VM has {} disks (more than {MAX_DISKS_FOR_ADE_RESTORE}); Azure Backup backs it up but cannot restore its ADE settings. After a restore, re-enable ADE on the restored VM by hand with the recorded Key Vault settings.",
            vm.disk_count
        ));
    }
    if let Some(max) = vm.disk_sizes_gb.iter().copied().max() {
        if max > MAX_DISK_GB_FOR_ADE_RESTORE {
            w.push(format!(
                "ade-restore-limit: a disk is {max} GB (larger than {MAX_DISK_GB_FOR_ADE_RESTORE} GB); Azure Backup backs it up but cannot restore its ADE settings. After a restore, re-enable ADE on the restored VM by hand with the recorded Key Vault settings."
            ));
        }
    }
    w
}

fn setting<'a>(settings: &'a Value, name: &str) -> Option<&'a str> {
    settings
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .filter(|s| !s.is_empty())
}

fn vault_base_url_ok(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.scheme() == "https"
            && u.query().is_none()
            && u.host_str().is_some_and(|h| {
                let h = h.to_ascii_lowercase();
                [
                    ".vault.azure.net",
                    ".vault.azure.cn",
                    ".vault.usgovcloudapi.net",
                    ".vault.microsoftazure.de",
                ]
                .iter()
                .any(|s| h.ends_with(s))
            })
    })
}

fn unsupported(code: &str, message: String) -> AdeState {
    AdeState::Unsupported {
        code: code.to_string(),
        message,
    }
}

pub fn classify(vm: &VmObservation) -> AdeState {
    let ade = vm.extensions.iter().find(|e| {
        e.publisher.eq_ignore_ascii_case(ADE_PUBLISHER)
            && (e.extension_type.eq_ignore_ascii_case(ADE_WINDOWS)
                || e.extension_type.eq_ignore_ascii_case(ADE_LINUX))
    });
    let Some(ext) = ade else {
        return if vm.os_disk_encryption_enabled {
            unsupported(
                "ade-extension-missing",
                "the OS disk has encryptionSettings but no Azure Disk Encryption extension is installed; ade-backup needs the extension's Key Vault settings to protect and later restore this VM".to_string(),
            )
        } else {
            AdeState::NotEncrypted {
                why: "no Azure Disk Encryption extension on the VM".to_string(),
            }
        };
    };
    let op = setting(&ext.settings, "EncryptionOperation").unwrap_or("EnableEncryption");
    if op.eq_ignore_ascii_case("DisableEncryption") {
        return AdeState::NotEncrypted {
            why: "the ADE extension's last operation is DisableEncryption".to_string(),
        };
    }
    match ext.provisioning_state.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("Succeeded") => {}
        Some(s) if s.eq_ignore_ascii_case("Failed") => {
            return unsupported(
                "ade-extension-failed",
                format!(
                    "the {} extension is in state Failed; fix encryption on the VM first",
                    ext.name
                ),
            )
        }
        other => {
            return AdeState::InProgress {
                why: format!(
                    "the {} extension is {}",
                    ext.name,
                    other.unwrap_or("still provisioning")
                ),
            }
        }
    }
    if vm
        .disk_encryption_codes
        .iter()
        .any(|c| c.to_ascii_lowercase().contains("inprogress"))
    {
        return AdeState::InProgress {
            why: "disk encryption is still in progress".to_string(),
        };
    }
    let os_type = vm
        .os_type
        .unwrap_or(if ext.extension_type.eq_ignore_ascii_case(ADE_LINUX) {
            OsType::Linux
        } else {
            OsType::Windows
        });
    let Some(kv_url) = setting(&ext.settings, "KeyVaultURL") else {
        return unsupported(
            "ade-settings-invalid",
            "the ADE extension has no KeyVaultURL setting".to_string(),
        );
    };
    if !vault_base_url_ok(kv_url) {
        return unsupported(
            "ade-settings-invalid",
            format!("the ADE extension's KeyVaultURL {kv_url:?} is not an https Key Vault URL"),
        );
    }
    let kv_id = match setting(&ext.settings, "KeyVaultResourceId").map(ResourceId::parse) {
        Some(Ok(id)) if id.is_type("Microsoft.KeyVault/vaults") => id,
        Some(Ok(_)) | Some(Err(_)) => {
            return unsupported(
                "ade-settings-invalid",
                "the ADE extension's KeyVaultResourceId is not a Key Vault resource id".to_string(),
            )
        }
        None => {
            return unsupported(
                "ade-settings-invalid",
                "the ADE extension has no KeyVaultResourceId setting".to_string(),
            )
        }
    };
    let kek_url = match setting(&ext.settings, "KeyEncryptionKeyURL").map(KeyVaultUrl::parse) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            return unsupported(
                "ade-settings-invalid",
                format!("the ADE extension's KeyEncryptionKeyURL is invalid: {e}"),
            )
        }
    };
    let kek_vault = match (&kek_url, setting(&ext.settings, "KekVaultResourceId")) {
        (None, _) => None,
        (Some(_), None) => Some(kv_id.clone()),
        (Some(_), Some(s)) => match ResourceId::parse(s) {
            Ok(id) if id.is_type("Microsoft.KeyVault/vaults") => Some(id),
            _ => {
                return unsupported(
                    "ade-settings-invalid",
                    "the ADE extension's KekVaultResourceId is not a Key Vault resource id"
                        .to_string(),
                )
            }
        },
    };
    if kek_url.is_some() && vm.kek_is_certificate == Some(true) {
        return unsupported(
            "kek-certificate",
            "the key-encryption key belongs to a certificate; Azure Backup supports only standalone keys for ADE VMs. Re-encrypt the VM with a standalone Key Vault key.".to_string(),
        );
    }
    let settings = AdeSettings {
        os_type,
        extension_name: ext.name.clone(),
        extension_type: ext.extension_type.clone(),
        type_handler_version: ext.type_handler_version.clone(),
        key_vault_url: kv_url.to_string(),
        key_vault_resource_id: kv_id,
        key_encryption_key_url: kek_url,
        kek_vault_resource_id: kek_vault,
        key_encryption_algorithm: setting(&ext.settings, "KeyEncryptionAlgorithm")
            .map(str::to_string),
        volume_type: setting(&ext.settings, "VolumeType").map(str::to_string),
    };
    AdeState::Encrypted {
        mode: settings.key_mode(),
        settings: Box::new(settings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KV: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-app";

    fn vm(ext: Option<ExtensionObservation>) -> VmObservation {
        VmObservation {
            id: ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1").expect("id"),
            os_type: Some(OsType::Linux),
            extensions: ext.into_iter().collect(),
            os_disk_encryption_enabled: false,
            disk_encryption_codes: vec!["EncryptionState/encrypted".into()],
            disk_sizes_gb: vec![30, 128],
            disk_count: 2,
            kek_is_certificate: Some(false),
        }
    }

    fn ext(settings: Value, state: &str) -> ExtensionObservation {
        ExtensionObservation {
            name: ADE_LINUX.into(),
            publisher: ADE_PUBLISHER.into(),
            extension_type: ADE_LINUX.into(),
            type_handler_version: Some("1.1".into()),
            provisioning_state: Some(state.into()),
            settings,
        }
    }

    #[test]
    fn classifies_every_variant() {
        assert!(matches!(classify(&vm(None)), AdeState::NotEncrypted { .. }));
        let bek = json!({"EncryptionOperation": "EnableEncryption", "KeyVaultURL": "https://kv-app.vault.azure.net/", "KeyVaultResourceId": KV, "VolumeType": "All"});
        match classify(&vm(Some(ext(bek.clone(), "Succeeded")))) {
            AdeState::Encrypted { mode, settings } => {
                assert_eq!(mode, KeyMode::BekOnly);
                assert_eq!(settings.to_extension_settings()["KeyVaultResourceId"], KV);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&vm(Some(ext(bek.clone(), "Creating")))),
            AdeState::InProgress { .. }
        ));
        let mut kek = bek.clone();
        kek["KeyEncryptionKeyURL"] =
            json!("https://kv-app.vault.azure.net/keys/kek/0123456789abcdef");
        match classify(&vm(Some(ext(kek.clone(), "Succeeded")))) {
            AdeState::Encrypted { mode, settings } => {
                assert_eq!(mode, KeyMode::BekKek);
                assert_eq!(
                    settings
                        .kek_vault_resource_id
                        .expect("kek vault")
                        .to_string(),
                    KV
                );
            }
            other => panic!("{other:?}"),
        }
        let mut cert = vm(Some(ext(kek, "Succeeded")));
        cert.kek_is_certificate = Some(true);
        assert!(
            matches!(classify(&cert), AdeState::Unsupported { code, .. } if code == "kek-certificate")
        );
        let mut disabling = bek;
        disabling["EncryptionOperation"] = json!("DisableEncryption");
        assert!(matches!(
            classify(&vm(Some(ext(disabling, "Succeeded")))),
            AdeState::NotEncrypted { .. }
        ));
    }

    #[test]
    fn bad_settings_are_unsupported_with_reason() {
        let bad = json!({"KeyVaultURL": "https://evil.example.com/", "KeyVaultResourceId": KV});
        assert!(
            matches!(classify(&vm(Some(ext(bad, "Succeeded")))), AdeState::Unsupported { code, .. } if code == "ade-settings-invalid")
        );
        let bad = json!({"KeyVaultURL": "https://kv-app.vault.azure.net/", "KeyVaultResourceId": "/subscriptions/x/../y"});
        assert!(matches!(
            classify(&vm(Some(ext(bad, "Succeeded")))),
            AdeState::Unsupported { .. }
        ));
    }

    #[test]
    fn restore_limits_are_flagged() {
        let mut v = vm(None);
        assert!(restore_limit_warnings(&v).is_empty());
        v.disk_count = 17;
        v.disk_sizes_gb = vec![4098];
        assert_eq!(restore_limit_warnings(&v).len(), 2);
    }
}
