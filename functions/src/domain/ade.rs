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
    /// Dual-pass ADE (the older flow with an Azure AD application): reinstalling it needs the
    /// application's client id and secret. Absent (`false`) in records written before issue 14.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dual_pass: bool,
    /// The extension's `AADClientID` (a GUID) on a dual-pass VM, when it has a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad_client_id: Option<String>,
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
        // Dual-pass ADE: the application's id is a public setting (its secret is protected).
        if let Some(client) = self.aad_client_id.as_ref().filter(|_| self.dual_pass) {
            s.insert("AADClientID".into(), client.clone().into());
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
    /// A disk is unmanaged (VHD): `unsupported: unmanaged-disks` (see `source_vm`).
    pub unmanaged_disks: bool,
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

/// Decides the VM's ADE state from what ARM reports, in order: is there an ADE extension, is it
/// done (not disabling, provisioned, disks no longer encrypting), and are its Key Vault settings
/// ones a restore can use.
pub fn classify(vm: &VmObservation) -> AdeState {
    let state = classify_extension(vm);
    // Unmanaged disks were retired on 30 September 2025: an encrypted (or encrypting) VM on them
    // is reported, never worked on.
    let encrypted = matches!(
        state,
        AdeState::Encrypted { .. } | AdeState::InProgress { .. }
    );
    if vm.unmanaged_disks && encrypted {
        return unsupported(
            "unmanaged-disks",
            super::source_vm::UNMANAGED_DISKS_MESSAGE.to_string(),
        );
    }
    state
}

fn classify_extension(vm: &VmObservation) -> AdeState {
    let Some(ext) = find_ade_extension(vm) else {
        return without_extension(vm);
    };
    if let Some(state) = not_settled(vm, ext) {
        return state;
    }
    match read_settings(vm, ext) {
        Ok(settings) => AdeState::Encrypted {
            mode: settings.key_mode(),
            settings: Box::new(settings),
        },
        Err(state) => state,
    }
}

fn find_ade_extension(vm: &VmObservation) -> Option<&ExtensionObservation> {
    vm.extensions.iter().find(|e| {
        e.publisher.eq_ignore_ascii_case(ADE_PUBLISHER)
            && (e.extension_type.eq_ignore_ascii_case(ADE_WINDOWS)
                || e.extension_type.eq_ignore_ascii_case(ADE_LINUX))
    })
}

/// No ADE extension: not encrypted, unless the OS disk says it is (ADE via the VM model without
/// the extension, whose settings a restore would need).
fn without_extension(vm: &VmObservation) -> AdeState {
    if vm.os_disk_encryption_enabled {
        unsupported(
            "ade-extension-missing",
            "the OS disk has encryptionSettings but no Azure Disk Encryption extension is installed; ade-backup needs the extension's Key Vault settings to protect and later restore this VM".to_string(),
        )
    } else {
        AdeState::NotEncrypted {
            why: "no Azure Disk Encryption extension on the VM".to_string(),
        }
    }
}

/// The state when the extension is not (yet) a finished encryption: its last operation disabled
/// encryption, it failed or is still provisioning, or the disks are still encrypting.
fn not_settled(vm: &VmObservation, ext: &ExtensionObservation) -> Option<AdeState> {
    let op = setting(&ext.settings, "EncryptionOperation").unwrap_or("EnableEncryption");
    if op.eq_ignore_ascii_case("DisableEncryption") {
        return Some(AdeState::NotEncrypted {
            why: "the ADE extension's last operation is DisableEncryption".to_string(),
        });
    }
    match ext.provisioning_state.as_deref() {
        Some(s) if s.eq_ignore_ascii_case("Succeeded") => {}
        Some(s) if s.eq_ignore_ascii_case("Failed") => {
            return Some(unsupported(
                "ade-extension-failed",
                format!(
                    "the {} extension is in state Failed; fix encryption on the VM first",
                    ext.name
                ),
            ))
        }
        other => {
            return Some(AdeState::InProgress {
                why: format!(
                    "the {} extension is {}",
                    ext.name,
                    other.unwrap_or("still provisioning")
                ),
            })
        }
    }
    if vm
        .disk_encryption_codes
        .iter()
        .any(|c| c.to_ascii_lowercase().contains("inprogress"))
    {
        return Some(AdeState::InProgress {
            why: "disk encryption is still in progress".to_string(),
        });
    }
    None
}

/// The settings to record, or why they cannot be: the BEK vault, then the KEK (a standalone key).
fn read_settings(vm: &VmObservation, ext: &ExtensionObservation) -> Result<AdeSettings, AdeState> {
    let os_type = vm
        .os_type
        .unwrap_or(if ext.extension_type.eq_ignore_ascii_case(ADE_LINUX) {
            OsType::Linux
        } else {
            OsType::Windows
        });
    let (kv_url, kv_id) = bek_vault(&ext.settings)?;
    let (kek_url, kek_vault) = kek(&ext.settings, &kv_id)?;
    if kek_url.is_some() && vm.kek_is_certificate == Some(true) {
        return Err(unsupported(
            "kek-certificate",
            "the key-encryption key belongs to a certificate; Azure Backup supports only standalone keys for ADE VMs. Re-encrypt the VM with a standalone Key Vault key.".to_string(),
        ));
    }
    Ok(AdeSettings {
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
        dual_pass: is_dual_pass(ext),
        aad_client_id: setting(&ext.settings, "AADClientID")
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
            .map(|id| id.to_string()),
    })
}

/// Dual-pass ADE: the extension settings name an Azure AD application (`AADClientID`), or the
/// extension is one of the AAD versions (Windows `AzureDiskEncryption` 1.x, Linux
/// `AzureDiskEncryptionForLinux` 0.x; single-pass is 2.x and 1.x).
fn is_dual_pass(ext: &ExtensionObservation) -> bool {
    if setting(&ext.settings, "AADClientID").is_some() {
        return true;
    }
    let Some(major) = ext
        .type_handler_version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse::<u32>().ok())
    else {
        return false;
    };
    if ext.extension_type.eq_ignore_ascii_case(ADE_LINUX) {
        major < 1
    } else {
        major < 2
    }
}

/// `KeyVaultURL` (an https Key Vault base URL) and `KeyVaultResourceId` (a Key Vault id).
fn bek_vault(settings: &Value) -> Result<(&str, ResourceId), AdeState> {
    let Some(kv_url) = setting(settings, "KeyVaultURL") else {
        return Err(unsupported(
            "ade-settings-invalid",
            "the ADE extension has no KeyVaultURL setting".to_string(),
        ));
    };
    if !vault_base_url_ok(kv_url) {
        return Err(unsupported(
            "ade-settings-invalid",
            format!("the ADE extension's KeyVaultURL {kv_url:?} is not an https Key Vault URL"),
        ));
    }
    match setting(settings, "KeyVaultResourceId").map(ResourceId::parse) {
        Some(Ok(id)) if id.is_type("Microsoft.KeyVault/vaults") => {
            same_vault("KeyVaultURL", kv_url, "KeyVaultResourceId", &id)?;
            Ok((kv_url, id))
        }
        Some(Ok(_)) | Some(Err(_)) => Err(unsupported(
            "ade-settings-invalid",
            "the ADE extension's KeyVaultResourceId is not a Key Vault resource id".to_string(),
        )),
        None => Err(unsupported(
            "ade-settings-invalid",
            "the ADE extension has no KeyVaultResourceId setting".to_string(),
        )),
    }
}

/// `KeyEncryptionKeyURL` and its vault (`KekVaultResourceId`, the BEK vault when absent); both
/// `None` without a KEK.
fn kek(
    settings: &Value,
    bek_vault: &ResourceId,
) -> Result<(Option<KeyVaultUrl>, Option<ResourceId>), AdeState> {
    let kek_url = match setting(settings, "KeyEncryptionKeyURL").map(KeyVaultUrl::parse) {
        None => return Ok((None, None)),
        Some(Ok(u)) => u,
        Some(Err(e)) => {
            return Err(unsupported(
                "ade-settings-invalid",
                format!("the ADE extension's KeyEncryptionKeyURL is invalid: {e}"),
            ))
        }
    };
    let kek_vault = match setting(settings, "KekVaultResourceId") {
        None => bek_vault.clone(),
        Some(s) => match ResourceId::parse(s) {
            Ok(id) if id.is_type("Microsoft.KeyVault/vaults") => id,
            _ => {
                return Err(unsupported(
                    "ade-settings-invalid",
                    "the ADE extension's KekVaultResourceId is not a Key Vault resource id"
                        .to_string(),
                ))
            }
        },
    };
    same_vault(
        "KeyEncryptionKeyURL",
        kek_url.as_str(),
        "KekVaultResourceId",
        &kek_vault,
    )?;
    Ok((Some(kek_url), Some(kek_vault)))
}

/// The vault a Key Vault URL points at (`https://{vault}.vault.azure.net/...`).
fn url_vault_name(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?;
    host.split('.').next().map(str::to_ascii_lowercase)
}

/// The resource id an access grant goes to must be the vault the URL the VM uses points at:
/// otherwise ade-backup would grant Azure Backup access on a vault that settings name but the VM
/// does not use (and a forged extension could choose it).
fn same_vault(url_field: &str, url: &str, id_field: &str, id: &ResourceId) -> Result<(), AdeState> {
    match url_vault_name(url) {
        Some(name) if name.eq_ignore_ascii_case(id.name()) => Ok(()),
        other => Err(unsupported(
            "ade-settings-invalid",
            format!(
                "the ADE extension's {id_field} names the Key Vault {} but its {url_field} points at {}; the two must be the same vault",
                id.name(),
                other.unwrap_or_else(|| "no vault".into())
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_vault_id_must_name_the_vault_its_url_points_at() {
        let id = |n: &str| {
            ResourceId::parse(&format!("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{n}")).expect("id")
        };
        assert!(same_vault(
            "KeyVaultURL",
            "https://kv-a.vault.azure.net/",
            "KeyVaultResourceId",
            &id("KV-A")
        )
        .is_ok());
        let Err(AdeState::Unsupported { code, message }) = same_vault(
            "KeyVaultURL",
            "https://kv-a.vault.azure.net/",
            "KeyVaultResourceId",
            &id("kv-other"),
        ) else {
            panic!("a mismatch is refused");
        };
        assert_eq!(code, "ade-settings-invalid");
        assert!(
            message.contains("kv-other") && message.contains("kv-a"),
            "{message}"
        );
        let bek = serde_json::json!({
            "KeyVaultURL": "https://kv-a.vault.azure.net/",
            "KeyVaultResourceId": id("kv-b").to_string()
        });
        assert!(
            bek_vault(&bek).is_err(),
            "the BEK vault id is checked against its URL"
        );
    }
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
            unmanaged_disks: false,
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
    fn dual_pass_is_an_aad_client_id_or_an_aad_extension_version() {
        let bek =
            json!({"KeyVaultURL": "https://kv-app.vault.azure.net/", "KeyVaultResourceId": KV});
        let settings_of = |e: ExtensionObservation| match classify(&vm(Some(e))) {
            AdeState::Encrypted { settings, .. } => *settings,
            other => panic!("not encrypted: {other:?}"),
        };
        let single = settings_of(ext(bek.clone(), "Succeeded"));
        assert!(!single.dual_pass && single.aad_client_id.is_none());
        let mut aad = bek.clone();
        aad["AADClientID"] = json!("8F6C2E1A-0B3D-4C5E-9A7B-1D2E3F4A5B6C");
        let s = settings_of(ext(aad.clone(), "Succeeded"));
        assert!(s.dual_pass);
        assert_eq!(
            s.aad_client_id.as_deref(),
            Some("8f6c2e1a-0b3d-4c5e-9a7b-1d2e3f4a5b6c")
        );
        // A client id that is not a GUID is not recorded; the VM is still dual-pass.
        aad["AADClientID"] = json!("not-a-guid; rm -rf");
        let s = settings_of(ext(aad, "Succeeded"));
        assert!(s.dual_pass && s.aad_client_id.is_none());
        // The AAD extension versions: Linux 0.x, Windows 1.x.
        let mut old_linux = ext(bek.clone(), "Succeeded");
        old_linux.type_handler_version = Some("0.1".into());
        assert!(settings_of(old_linux).dual_pass);
        let mut windows = ext(bek.clone(), "Succeeded");
        windows.extension_type = ADE_WINDOWS.into();
        windows.type_handler_version = Some("1.1".into());
        assert!(settings_of(windows.clone()).dual_pass);
        windows.type_handler_version = Some("2.2".into());
        assert!(!settings_of(windows).dual_pass);
    }

    #[test]
    fn settings_recorded_before_dual_pass_existed_still_load() {
        let old = json!({
            "osType": "Linux", "extensionName": ADE_LINUX, "extensionType": ADE_LINUX,
            "typeHandlerVersion": "1.1", "keyVaultUrl": "https://kv-app.vault.azure.net/",
            "keyVaultResourceId": KV, "keyEncryptionKeyUrl": null, "kekVaultResourceId": null,
            "keyEncryptionAlgorithm": null, "volumeType": "Data"
        });
        let s: AdeSettings = serde_json::from_value(old.clone()).expect("old record");
        assert!(!s.dual_pass && s.aad_client_id.is_none());
        assert_eq!(serde_json::to_value(&s).expect("json"), old);
    }

    const VM_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";

    /// Every outcome of `classify`, pinned whole (state, code and message, recorded settings).
    fn every_outcome() -> Vec<AdeState> {
        let bek =
            json!({"KeyVaultURL": "https://kv-app.vault.azure.net/", "KeyVaultResourceId": KV});
        let kek_url = "https://kv-app.vault.azure.net/keys/kek/0123456789abcdef";
        let other_kv = KV.replace("kv-app", "kv-kek");
        let with = |pairs: &[(&str, Value)]| {
            let mut s = bek.clone();
            for (k, v) in pairs {
                s[*k] = v.clone();
            }
            s
        };
        let ok = |s: Value| vm(Some(ext(s, "Succeeded")));
        let mut model_only = vm(None);
        model_only.os_disk_encryption_enabled = true;
        let mut other_publisher = ext(bek.clone(), "Succeeded");
        other_publisher.publisher = "Contoso".into();
        let mut no_state = ext(bek.clone(), "Succeeded");
        no_state.provisioning_state = None;
        let mut encrypting = ok(bek.clone());
        encrypting.disk_encryption_codes = vec!["EncryptionState/EncryptionInProgress".into()];
        let mut windows = ext(
            json!({"keyvaulturl": "https://kv-app.vault.azure.cn/", "keyVaultResourceId": KV, "VolumeType": "OS"}),
            "succeeded",
        );
        windows.extension_type = ADE_WINDOWS.into();
        windows.name = ADE_WINDOWS.into();
        // Single-pass Windows ADE is 2.x (1.x is the AAD, dual-pass version).
        windows.type_handler_version = Some("2.2".into());
        let mut windows_vm = vm(Some(windows));
        windows_vm.os_type = None;
        let mut cert = ok(with(&[("KeyEncryptionKeyURL", json!(kek_url))]));
        cert.kek_is_certificate = Some(true);
        vec![
            classify(&model_only),
            classify(&vm(Some(other_publisher))),
            classify(&ok(with(&[(
                "encryptionOperation",
                json!("disableencryption"),
            )]))),
            classify(&vm(Some(ext(bek.clone(), "Failed")))),
            classify(&vm(Some(no_state))),
            classify(&encrypting),
            classify(&ok(json!({"KeyVaultResourceId": KV}))),
            classify(&ok(with(&[(
                "KeyVaultURL",
                json!("http://kv-app.vault.azure.net/"),
            )]))),
            classify(&ok(
                json!({"KeyVaultURL": "https://kv-app.vault.azure.net/"}),
            )),
            classify(&ok(with(&[("KeyVaultResourceId", json!(VM_ID))]))),
            classify(&ok(with(&[(
                "KeyEncryptionKeyURL",
                json!("https://evil.example.com/keys/k/1"),
            )]))),
            classify(&ok(with(&[
                ("KeyEncryptionKeyURL", json!(kek_url)),
                ("KekVaultResourceId", json!(VM_ID)),
            ]))),
            classify(&cert),
            classify(&ok(with(&[
                ("KeyEncryptionKeyURL", json!(kek_url)),
                ("KekVaultResourceId", json!(other_kv)),
                ("KeyEncryptionAlgorithm", json!("RSA-OAEP")),
            ]))),
            classify(&windows_vm),
        ]
    }

    /// Outcome 13 (a KEK vault id naming another vault than the KEK URL) is refused since issue
    /// 11; the version before accepted it and granted access on that other vault.
    #[test]
    fn every_outcome_is_pinned() {
        let expected: Value = serde_json::from_str(
            r#"[
            {"state":"unsupported","code":"ade-extension-missing","message":"the OS disk has encryptionSettings but no Azure Disk Encryption extension is installed; ade-backup needs the extension's Key Vault settings to protect and later restore this VM"},
            {"state":"not-encrypted","why":"no Azure Disk Encryption extension on the VM"},
            {"state":"not-encrypted","why":"the ADE extension's last operation is DisableEncryption"},
            {"state":"unsupported","code":"ade-extension-failed","message":"the AzureDiskEncryptionForLinux extension is in state Failed; fix encryption on the VM first"},
            {"state":"in-progress","why":"the AzureDiskEncryptionForLinux extension is still provisioning"},
            {"state":"in-progress","why":"disk encryption is still in progress"},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension has no KeyVaultURL setting"},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension's KeyVaultURL \"http://kv-app.vault.azure.net/\" is not an https Key Vault URL"},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension has no KeyVaultResourceId setting"},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension's KeyVaultResourceId is not a Key Vault resource id"},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension's KeyEncryptionKeyURL is invalid: invalid keyVaultUrl: host must be a Key Vault host (*.vault.azure.net) (got \"https://evil.example.com/keys/k/1\")"},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension's KekVaultResourceId is not a Key Vault resource id"},
            {"state":"unsupported","code":"kek-certificate","message":"the key-encryption key belongs to a certificate; Azure Backup supports only standalone keys for ADE VMs. Re-encrypt the VM with a standalone Key Vault key."},
            {"state":"unsupported","code":"ade-settings-invalid","message":"the ADE extension's KekVaultResourceId names the Key Vault kv-kek but its KeyEncryptionKeyURL points at kv-app; the two must be the same vault"},
            {"state":"encrypted","mode":"bek-only","settings":{"osType":"Windows","extensionName":"AzureDiskEncryption","extensionType":"AzureDiskEncryption","typeHandlerVersion":"2.2","keyVaultUrl":"https://kv-app.vault.azure.cn/","keyVaultResourceId":"/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-app","keyEncryptionKeyUrl":null,"kekVaultResourceId":null,"keyEncryptionAlgorithm":null,"volumeType":"OS"}}
        ]"#,
        )
        .expect("expected outcomes");
        let got = serde_json::to_value(every_outcome()).expect("outcomes");
        let (got, expected) = (
            got.as_array().expect("got"),
            expected.as_array().expect("exp"),
        );
        assert_eq!(got.len(), expected.len());
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert_eq!(g, e, "outcome {i}");
        }
    }

    #[test]
    fn an_encrypted_vm_on_unmanaged_disks_is_unsupported() {
        let bek = json!({"EncryptionOperation": "EnableEncryption", "KeyVaultURL": "https://kv-app.vault.azure.net/", "KeyVaultResourceId": KV, "VolumeType": "All"});
        let mut v = vm(Some(ext(bek, "Succeeded")));
        v.unmanaged_disks = true;
        assert!(matches!(
            classify(&v),
            AdeState::Unsupported { code, message } if code == "unmanaged-disks" && message.contains("30 September 2025")
        ));
        let mut plain = vm(None);
        plain.unmanaged_disks = true;
        assert!(matches!(classify(&plain), AdeState::NotEncrypted { .. }));
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
