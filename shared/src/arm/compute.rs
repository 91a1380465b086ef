//! Microsoft.Compute: VM get (with instance view), VM extension get/put.
//!
//! Shapes: azure-rest-api-specs compute examples VirtualMachine_Get_WithInstanceView*.json and
//! VirtualMachineExtension_CreateOrUpdate*.json (see EXAMPLES.md).

use super::client::{sub_bucket, ArmClient};
use super::common::{null_vec, SubResource};
use super::error::ArmError;
use super::lro::Started;
use super::scope::{check_segment, expect_type};
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const COMPUTE_API_VERSION: &str = "2024-07-01";
pub const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
/// Publisher of both ADE extensions.
pub const ADE_PUBLISHER: &str = "Microsoft.Azure.Security";
pub const ADE_TYPE_WINDOWS: &str = "AzureDiskEncryption";
pub const ADE_TYPE_LINUX: &str = "AzureDiskEncryptionForLinux";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualMachine {
    pub id: Option<String>,
    pub name: Option<String>,
    pub location: Option<String>,
    #[serde(deserialize_with = "null_map")]
    pub tags: BTreeMap<String, String>,
    pub zones: Option<Vec<String>>,
    pub properties: VmProperties,
    /// Extensions as child resources (present on GET).
    #[serde(deserialize_with = "null_vec")]
    pub resources: Vec<VmExtension>,
}

fn null_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VmProperties {
    pub vm_id: Option<String>,
    pub hardware_profile: Option<HardwareProfile>,
    pub storage_profile: Option<StorageProfile>,
    pub instance_view: Option<VmInstanceView>,
    pub provisioning_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HardwareProfile {
    pub vm_size: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StorageProfile {
    pub os_disk: Option<OsDisk>,
    #[serde(deserialize_with = "null_vec")]
    pub data_disks: Vec<DataDisk>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OsDisk {
    /// `Windows` or `Linux`.
    pub os_type: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: Option<i64>,
    pub encryption_settings: Option<DiskEncryptionSettings>,
    pub managed_disk: Option<SubResource>,
    /// An unmanaged (VHD in a storage account) disk: `vhd.uri`. Retired 30 September 2025.
    pub vhd: Option<VirtualHardDisk>,
}

/// `storageProfile.*.vhd` of an unmanaged disk.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualHardDisk {
    pub uri: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DataDisk {
    pub lun: i32,
    pub name: Option<String>,
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: Option<i64>,
    pub managed_disk: Option<SubResource>,
    pub vhd: Option<VirtualHardDisk>,
}

/// ADE settings of a disk (`storageProfile.osDisk.encryptionSettings` and
/// `instanceView.disks[].encryptionSettings[]`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DiskEncryptionSettings {
    pub enabled: Option<bool>,
    pub disk_encryption_key: Option<KeyVaultSecretReference>,
    pub key_encryption_key: Option<KeyVaultKeyReference>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyVaultSecretReference {
    pub secret_url: Option<String>,
    pub source_vault: Option<SubResource>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyVaultKeyReference {
    pub key_url: Option<String>,
    pub source_vault: Option<SubResource>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VmInstanceView {
    #[serde(deserialize_with = "null_vec")]
    pub statuses: Vec<InstanceViewStatus>,
    /// The VM agent (guest agent) and its statuses: `ProvisioningState/succeeded` with display
    /// status `Ready` when it runs; absent or `Not Ready` otherwise.
    pub vm_agent: Option<VmAgentInstanceView>,
    #[serde(deserialize_with = "null_vec")]
    pub disks: Vec<DiskInstanceView>,
    #[serde(deserialize_with = "null_vec")]
    pub extensions: Vec<ExtensionInstanceView>,
}

/// `instanceView.vmAgent` (compute `VirtualMachineAgentInstanceView`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VmAgentInstanceView {
    pub vm_agent_version: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub statuses: Vec<InstanceViewStatus>,
}

impl VmAgentInstanceView {
    /// The agent reports ready (a `ProvisioningState/succeeded` status).
    pub fn is_ready(&self) -> bool {
        self.statuses.iter().any(|s| {
            s.code
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case("ProvisioningState/succeeded"))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstanceViewStatus {
    pub code: Option<String>,
    pub level: Option<String>,
    pub display_status: Option<String>,
    pub message: Option<String>,
    pub time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DiskInstanceView {
    pub name: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub encryption_settings: Vec<DiskEncryptionSettings>,
    #[serde(deserialize_with = "null_vec")]
    pub statuses: Vec<InstanceViewStatus>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionInstanceView {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub extension_type: Option<String>,
    pub type_handler_version: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub statuses: Vec<InstanceViewStatus>,
    #[serde(deserialize_with = "null_vec")]
    pub substatuses: Vec<InstanceViewStatus>,
}

impl VirtualMachine {
    pub fn resource_id(&self) -> Option<ResourceId> {
        self.id.as_deref().and_then(|s| ResourceId::parse(s).ok())
    }
    pub fn os_disk(&self) -> Option<&OsDisk> {
        self.properties.storage_profile.as_ref()?.os_disk.as_ref()
    }
    pub fn data_disks(&self) -> &[DataDisk] {
        self.properties
            .storage_profile
            .as_ref()
            .map(|s| s.data_disks.as_slice())
            .unwrap_or(&[])
    }
    /// `Windows` / `Linux`, as the OS disk says.
    pub fn os_type(&self) -> Option<&str> {
        self.os_disk()?.os_type.as_deref()
    }
    /// OS disk + data disks.
    pub fn disk_count(&self) -> usize {
        usize::from(self.os_disk().is_some()) + self.data_disks().len()
    }
    /// Largest disk size in GB across the OS and data disks (ADE restore fails above 4097 GB).
    pub fn max_disk_size_gb(&self) -> Option<i64> {
        self.os_disk()
            .and_then(|d| d.disk_size_gb)
            .into_iter()
            .chain(self.data_disks().iter().filter_map(|d| d.disk_size_gb))
            .max()
    }
    /// `running`, `deallocated`, ... from the `PowerState/...` status (needs instance view).
    pub fn power_state(&self) -> Option<&str> {
        self.status_with_prefix("PowerState/")
    }
    /// `ProvisioningState/succeeded` → `succeeded`.
    pub fn provisioning_status(&self) -> Option<&str> {
        self.status_with_prefix("ProvisioningState/")
    }
    fn status_with_prefix(&self, prefix: &str) -> Option<&str> {
        self.properties
            .instance_view
            .as_ref()?
            .statuses
            .iter()
            .filter_map(|s| s.code.as_deref())
            .find_map(|c| c.strip_prefix(prefix))
    }
    /// The ADE extension among `resources`, if installed.
    pub fn ade_extension(&self) -> Option<&VmExtension> {
        self.resources.iter().find(|e| e.is_ade())
    }
    /// True when any disk reports ADE settings (model or instance view).
    pub fn has_ade_disk_settings(&self) -> bool {
        let model = self
            .os_disk()
            .and_then(|d| d.encryption_settings.as_ref())
            .is_some_and(|e| e.enabled == Some(true) || e.disk_encryption_key.is_some());
        let iv = self.properties.instance_view.as_ref().is_some_and(|iv| {
            iv.disks.iter().any(|d| {
                d.encryption_settings
                    .iter()
                    .any(|e| e.enabled == Some(true) || e.disk_encryption_key.is_some())
            })
        });
        model || iv
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VmExtension {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Resource type (`Microsoft.Compute/virtualMachines/extensions`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub properties: VmExtensionProperties,
}

/// Extension properties. `protectedSettings` is write-only (Azure never returns it): it is sent
/// only for dual-pass ADE (the AAD application's client secret), never read back, and its
/// `Debug` is redacted so it cannot end up in a log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VmExtensionProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Extension handler type (`AzureDiskEncryption`, `AzureDiskEncryptionForLinux`).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub extension_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_handler_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_upgrade_minor_version: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_update_tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub protected_settings: Option<ProtectedSettings>,
    #[serde(skip_serializing)]
    pub provisioning_state: Option<String>,
    #[serde(skip_serializing)]
    pub instance_view: Option<ExtensionInstanceView>,
}

/// An extension's `protectedSettings` (encrypted by Azure, never returned): serialized into the
/// PUT body only; `Debug` never shows it.
#[derive(Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ProtectedSettings(serde_json::Value);

impl ProtectedSettings {
    pub fn new(value: serde_json::Value) -> Self {
        Self(value)
    }
}

impl std::fmt::Debug for ProtectedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProtectedSettings(<redacted>)")
    }
}

/// The public settings of an ADE extension (ADE's names: PascalCase, with `URL` in capitals).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct AdeExtensionSettings {
    #[serde(rename = "KeyVaultURL", skip_serializing_if = "Option::is_none")]
    pub key_vault_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_vault_resource_id: Option<String>,
    #[serde(
        rename = "KeyEncryptionKeyURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_encryption_key_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kek_vault_resource_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_encryption_algorithm: Option<String>,
    /// `OS`, `Data` or `All`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    /// `EnableEncryption`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_operation: Option<String>,
}

impl AdeExtensionSettings {
    /// True when a KEK wraps the BEK.
    pub fn has_kek(&self) -> bool {
        self.key_encryption_key_url
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    }
}

impl VmExtension {
    pub fn is_ade(&self) -> bool {
        let p = &self.properties;
        p.publisher
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(ADE_PUBLISHER))
            && p.extension_type.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case(ADE_TYPE_WINDOWS) || t.eq_ignore_ascii_case(ADE_TYPE_LINUX)
            })
    }

    /// ADE's public settings, when this is an ADE extension with readable settings.
    pub fn ade_settings(&self) -> Option<AdeExtensionSettings> {
        if !self.is_ade() {
            return None;
        }
        serde_json::from_value(self.properties.settings.clone()?).ok()
    }

    /// The body that (re)installs ADE with `settings` (single-pass ADE, no AAD app): type by OS,
    /// handler version `2.2` on Windows and `1.1` on Linux, `EncryptionOperation` defaulting to
    /// `EnableEncryption`. `force_update_tag` makes a re-PUT re-run the extension.
    pub fn ade(
        location: &str,
        os_type: &str,
        settings: &AdeExtensionSettings,
        force_update_tag: Option<String>,
    ) -> Result<Self, ArmError> {
        let (ty, ver) = if os_type.eq_ignore_ascii_case("windows") {
            (ADE_TYPE_WINDOWS, "2.2")
        } else if os_type.eq_ignore_ascii_case("linux") {
            (ADE_TYPE_LINUX, "1.1")
        } else {
            return Err(ArmError::invalid(
                "osType",
                format!("must be Windows or Linux (got {os_type:?})"),
            ));
        };
        let mut s = settings.clone();
        if s.encryption_operation.is_none() {
            s.encryption_operation = Some("EnableEncryption".into());
        }
        if s.has_kek() && s.key_encryption_algorithm.is_none() {
            s.key_encryption_algorithm = Some("RSA-OAEP".into());
        }
        let settings = serde_json::to_value(&s)
            .map_err(|e| ArmError::invalid("settings", format!("cannot serialize: {e}")))?;
        Ok(Self {
            location: Some(location.to_string()),
            properties: VmExtensionProperties {
                publisher: Some(ADE_PUBLISHER.into()),
                extension_type: Some(ty.into()),
                type_handler_version: Some(ver.into()),
                auto_upgrade_minor_version: Some(true),
                force_update_tag,
                settings: Some(settings),
                ..Default::default()
            },
            ..Default::default()
        })
    }
}

impl ArmClient {
    /// `GET virtualMachines/{vm}?$expand=instanceView`.
    pub async fn get_virtual_machine(&self, vm: &ResourceId) -> Result<VirtualMachine, ArmError> {
        expect_type("vmId", vm, VM_TYPE)?;
        let query = [("$expand", "instanceView")];
        let url = self.id_url(vm, &[], COMPUTE_API_VERSION, &query)?;
        self.get_json("compute.vm.get", url, sub_bucket(vm)?).await
    }

    /// `GET virtualMachines/{vm}/extensions/{name}`.
    pub async fn get_vm_extension(
        &self,
        vm: &ResourceId,
        extension_name: &str,
    ) -> Result<VmExtension, ArmError> {
        let url = self.extension_url(vm, extension_name)?;
        self.get_json("compute.extension.get", url, sub_bucket(vm)?)
            .await
    }

    /// `PUT virtualMachines/{vm}/extensions/{name}`; returns at once with the `Azure-AsyncOperation`
    /// to follow.
    pub async fn begin_put_vm_extension(
        &self,
        vm: &ResourceId,
        extension_name: &str,
        extension: &VmExtension,
    ) -> Result<Started<VmExtension>, ArmError> {
        let url = self.extension_url(vm, extension_name)?;
        self.begin_put("compute.extension.put", url, sub_bucket(vm)?, extension)
            .await
    }

    /// PUT and wait until the extension is provisioned (or `deadline` passes); returns the
    /// extension as read back afterwards.
    pub async fn put_vm_extension_and_wait(
        &self,
        vm: &ResourceId,
        extension_name: &str,
        extension: &VmExtension,
        deadline: Duration,
    ) -> Result<VmExtension, ArmError> {
        let started = self
            .begin_put_vm_extension(vm, extension_name, extension)
            .await?;
        if started.pending.is_none() {
            if let Some(r) = started.resource {
                return Ok(r);
            }
        }
        self.finish(started, deadline).await?;
        self.get_vm_extension(vm, extension_name).await
    }

    fn extension_url(&self, vm: &ResourceId, extension_name: &str) -> Result<url::Url, ArmError> {
        expect_type("vmId", vm, VM_TYPE)?;
        check_segment("extensionName", extension_name)?;
        self.id_url(
            vm,
            &["extensions", extension_name],
            COMPUTE_API_VERSION,
            &[],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ade_body_for_linux_with_kek() {
        let s = AdeExtensionSettings {
            key_vault_url: Some("https://kv1.vault.azure.net".into()),
            key_vault_resource_id: Some(
                "/subscriptions/x/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv1".into(),
            ),
            key_encryption_key_url: Some("https://kv1.vault.azure.net/keys/kek/1".into()),
            volume_type: Some("Data".into()),
            ..Default::default()
        };
        let e = VmExtension::ade("westeurope", "Linux", &s, Some("t1".into())).expect("body");
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["properties"]["type"], "AzureDiskEncryptionForLinux");
        assert_eq!(v["properties"]["publisher"], "Microsoft.Azure.Security");
        assert_eq!(
            v["properties"]["settings"]["EncryptionOperation"],
            "EnableEncryption"
        );
        assert_eq!(
            v["properties"]["settings"]["KeyEncryptionAlgorithm"],
            "RSA-OAEP"
        );
        assert!(v["properties"].get("provisioningState").is_none());
        assert_eq!(
            e.ade_settings().expect("ade").volume_type.as_deref(),
            Some("Data")
        );
        assert!(VmExtension::ade("x", "Plan9", &s, None).is_err());
    }

    #[test]
    fn ade_settings_keep_ade_names() {
        let names = [
            "KeyVaultURL",
            "KeyVaultResourceId",
            "KeyEncryptionKeyURL",
            "KekVaultResourceId",
            "KeyEncryptionAlgorithm",
            "VolumeType",
            "EncryptionOperation",
        ];
        let doc: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .map(|n| (n.to_string(), serde_json::Value::from(*n)))
            .collect();
        let s: AdeExtensionSettings =
            serde_json::from_value(serde_json::Value::Object(doc.clone())).expect("settings");
        assert_eq!(
            s.key_encryption_key_url.as_deref(),
            Some("KeyEncryptionKeyURL")
        );
        assert_eq!(
            s.kek_vault_resource_id.as_deref(),
            Some("KekVaultResourceId")
        );
        assert_eq!(
            serde_json::to_value(&s).expect("json"),
            serde_json::Value::Object(doc)
        );
        assert_eq!(
            serde_json::to_value(AdeExtensionSettings::default()).expect("json"),
            serde_json::json!({})
        );
    }
}
