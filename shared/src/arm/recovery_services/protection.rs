//! Protecting a VM: the names Azure Backup gives its container and protected item, container
//! refresh, protectable and protected items, enabling protection, and backup now.
//!
//! Shapes (see `arm/EXAMPLES.md`): Common/RefreshContainers.json (202 + `Location`),
//! AzureIaasVm/BackupProtectableItems_List.json, the protected item PUT and GET of azure-docs
//! `backup-azure-arm-userestapi-backupazurevms.md`, and AzureIaasVm/ProtectedItemOperationStatus.json
//! for the job id a backup now ends with.

use super::{BACKUP_POLICY_TYPE, IAAS_FILTER, RECOVERY_VAULT_TYPE};
use crate::arm::client::{sub_bucket, ArmClient, Call};
use crate::arm::common::lenient_time;
use crate::arm::compute::VM_TYPE;
use crate::arm::error::ArmError;
use crate::arm::lro::{PendingOperation, Started};
use crate::arm::scope::expect_type;
use crate::ids::ResourceId;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const BACKUP_NOW: &str = "recoveryServices.backupNow";

/// `iaasvmcontainer;iaasvmcontainerv2;{rg};{vm}` (as the built-in Azure Policy names it).
pub fn container_name(vm: &ResourceId) -> String {
    format!(
        "iaasvmcontainer;iaasvmcontainerv2;{};{}",
        vm.resource_group(),
        vm.name()
    )
}

/// `vm;iaasvmcontainerv2;{rg};{vm}`.
pub fn protected_item_name(vm: &ResourceId) -> String {
    format!("vm;iaasvmcontainerv2;{};{}", vm.resource_group(), vm.name())
}

/// `.../vaults/{v}/backupFabrics/Azure/protectionContainers/{c}/protectedItems/{i}` for a VM.
pub fn protected_item_id(vault: &ResourceId, vm: &ResourceId) -> Result<ResourceId, ArmError> {
    expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
    expect_type("vmId", vm, VM_TYPE)?;
    Ok(vault
        .child("backupFabrics", "Azure")?
        .child("protectionContainers", &container_name(vm))?
        .child("protectedItems", &protected_item_name(vm))?)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProtectableItem {
    pub id: Option<String>,
    pub name: Option<String>,
    pub properties: ProtectableItemProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProtectableItemProperties {
    pub protectable_item_type: Option<String>,
    pub backup_management_type: Option<String>,
    pub friendly_name: Option<String>,
    pub virtual_machine_id: Option<String>,
    pub protection_state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProtectedItem {
    pub id: Option<String>,
    pub name: Option<String>,
    pub properties: ProtectedItemProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProtectedItemProperties {
    /// `Microsoft.Compute/virtualMachines`.
    pub protected_item_type: Option<String>,
    pub backup_management_type: Option<String>,
    pub workload_type: Option<String>,
    pub friendly_name: Option<String>,
    pub virtual_machine_id: Option<String>,
    pub source_resource_id: Option<String>,
    pub policy_id: Option<String>,
    pub policy_name: Option<String>,
    pub container_name: Option<String>,
    /// `Protected`, `IRPending`, `ProtectionStopped`, `ProtectionError`, `ProtectionPaused`...
    pub protection_state: Option<String>,
    pub protection_status: Option<String>,
    pub last_backup_status: Option<String>,
    #[serde(deserialize_with = "lenient_time")]
    pub last_backup_time: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_time")]
    pub last_recovery_point: Option<DateTime<Utc>>,
    pub health_status: Option<String>,
    pub extended_info: Option<serde_json::Value>,
    /// `extendedProperties`: the item's disk selection (`diskExclusionProperties`).
    pub extended_properties: Option<ExtendedProperties>,
}

/// `extendedProperties` of an `AzureIaaSVMProtectedItem` (recoveryservicesbackup
/// `ExtendedProperties`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtendedProperties {
    pub disk_exclusion_properties: Option<DiskExclusionProperties>,
}

/// `diskExclusionProperties`: the data disk LUNs of a selective disk backup, as an inclusion or
/// an exclusion list (the OS disk is always backed up). Azure Backup refuses the backups of an
/// ADE VM with a selection (`UserErrorEncryptedVmNotSupportedWithDiskEx`; azure-docs
/// `selective-disk-backup-restore.md`, "Limitations").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DiskExclusionProperties {
    pub disk_lun_list: Vec<i64>,
    pub is_inclusion_list: Option<bool>,
}

impl DiskExclusionProperties {
    /// Whether this selection leaves any data disk out: an inclusion list always does (even an
    /// empty one: "OS disk only"); an exclusion list does when it names a LUN.
    pub fn excludes_disks(&self) -> bool {
        self.is_inclusion_list == Some(true) || !self.disk_lun_list.is_empty()
    }
}

impl ProtectedItem {
    /// The item's disk selection when it leaves data disks out of the backup.
    pub fn disk_exclusion(&self) -> Option<&DiskExclusionProperties> {
        self.properties
            .extended_properties
            .as_ref()
            .and_then(|e| e.disk_exclusion_properties.as_ref())
            .filter(|d| d.excludes_disks())
    }
}

/// Which disks a protect PUT asks for. ade-backup never sends an exclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSelection {
    /// No `extendedProperties`: a new item backs up every disk; an existing item keeps its
    /// selection (a policy change by `az backup item set-policy` sends the same body).
    Unchanged,
    /// Every disk, resetting a selection made by someone else: an exclusion list with no LUN (the
    /// body Az PowerShell's `Enable-AzRecoveryServicesBackupProtection -ResetExclusionSettings`
    /// sends; azure-docs `selective-disk-backup-restore.md`, "Reset disk exclusion setting").
    All,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProtectedItemPut {
    properties: ProtectedItemPutProps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProtectedItemPutProps {
    protected_item_type: &'static str,
    source_resource_id: String,
    policy_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    extended_properties: Option<ExtendedProperties>,
}

impl ProtectedItemPut {
    fn new(vm: &ResourceId, policy: &ResourceId, disks: DiskSelection) -> Self {
        let extended_properties = match disks {
            DiskSelection::Unchanged => None,
            DiskSelection::All => Some(ExtendedProperties {
                disk_exclusion_properties: Some(DiskExclusionProperties {
                    disk_lun_list: vec![],
                    is_inclusion_list: Some(false),
                }),
            }),
        };
        ProtectedItemPut {
            properties: ProtectedItemPutProps {
                protected_item_type: VM_TYPE,
                source_resource_id: vm.to_string(),
                policy_id: policy.to_string(),
                extended_properties,
            },
        }
    }
}

impl ArmClient {
    /// `POST vaults/{v}/backupFabrics/Azure/refreshContainers` (safe to repeat): makes newly
    /// created VMs show up as protectable. Returns the `Location` to follow, if any.
    pub async fn begin_refresh_containers(
        &self,
        vault: &ResourceId,
    ) -> Result<Option<PendingOperation>, ArmError> {
        expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
        let url = self.rs_url(
            vault,
            &["backupFabrics", "Azure", "refreshContainers"],
            &[("$filter", IAAS_FILTER)],
        )?;
        let call = Call::new(
            "recoveryServices.refreshContainers",
            Method::POST,
            url,
            sub_bucket(vault)?,
        )
        .safe_to_repeat();
        let resp = self.send(&call).await?;
        self.pending_from(call.operation, &resp, false)
    }

    /// Refresh and wait for it to finish.
    pub async fn refresh_containers_and_wait(
        &self,
        vault: &ResourceId,
        deadline: Duration,
    ) -> Result<(), ArmError> {
        if let Some(p) = self.begin_refresh_containers(vault).await? {
            self.wait(p, deadline).await?;
        }
        Ok(())
    }

    /// `GET vaults/{v}/backupProtectableItems?$filter=backupManagementType eq 'AzureIaasVM'`.
    pub async fn list_protectable_items(
        &self,
        vault: &ResourceId,
    ) -> Result<Vec<ProtectableItem>, ArmError> {
        expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
        let query = [("$filter", IAAS_FILTER)];
        let url = self.rs_url(vault, &["backupProtectableItems"], &query)?;
        let bucket = sub_bucket(vault)?;
        self.list_all("recoveryServices.protectableItems.list", url, bucket, false)
            .await
    }

    /// `PUT .../protectedItems/vm;iaasvmcontainerv2;{rg};{vm}` with `policyId`: enables (or
    /// re-points) protection. Returns the operation to follow.
    pub async fn begin_protect_vm(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        policy: &ResourceId,
    ) -> Result<Started<ProtectedItem>, ArmError> {
        self.begin_protect_vm_with(vault, vm, policy, DiskSelection::Unchanged)
            .await
    }

    /// [`Self::begin_protect_vm`] with the disks to back up: [`DiskSelection::All`] also resets
    /// an existing item's disk exclusion.
    pub async fn begin_protect_vm_with(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        policy: &ResourceId,
        disks: DiskSelection,
    ) -> Result<Started<ProtectedItem>, ArmError> {
        expect_type("policyId", policy, BACKUP_POLICY_TYPE)?;
        let item = protected_item_id(vault, vm)?;
        let url = self.rs_url(&item, &[], &[])?;
        let body = ProtectedItemPut::new(vm, policy, disks);
        let call = Call::new(
            "recoveryServices.protectedItem.put",
            Method::PUT,
            url,
            sub_bucket(vault)?,
        )
        .json(&body)?;
        let resp = self.send(&call).await?;
        Ok(Started {
            pending: self.pending_from(call.operation, &resp, true)?,
            // The 202 answer's body is not the item; the item is read back once the operation
            // is done, so an unreadable first body is not an error.
            resource: serde_json::from_slice(&resp.body).ok(),
        })
    }

    /// Protect and wait; returns the protected item read back.
    pub async fn protect_vm_and_wait(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        policy: &ResourceId,
        deadline: Duration,
    ) -> Result<ProtectedItem, ArmError> {
        let started = self.begin_protect_vm(vault, vm, policy).await?;
        self.finish(started, deadline).await?;
        self.get_protected_item(vault, vm).await
    }

    /// `GET .../protectedItems/vm;iaasvmcontainerv2;{rg};{vm}`.
    pub async fn get_protected_item(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
    ) -> Result<ProtectedItem, ArmError> {
        let item = protected_item_id(vault, vm)?;
        let url = self.rs_url(&item, &[], &[])?;
        let bucket = sub_bucket(vault)?;
        self.get_json("recoveryServices.protectedItem.get", url, bucket)
            .await
    }

    /// `GET vaults/{v}/backupProtectedItems?$filter=backupManagementType eq 'AzureIaasVM' and itemType eq 'VM'`.
    pub async fn list_protected_items(
        &self,
        vault: &ResourceId,
    ) -> Result<Vec<ProtectedItem>, ArmError> {
        expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
        let filter = format!("{IAAS_FILTER} and itemType eq 'VM'");
        let url = self.rs_url(vault, &["backupProtectedItems"], &[("$filter", &filter)])?;
        let bucket = sub_bucket(vault)?;
        self.list_all("recoveryServices.protectedItems.list", url, bucket, false)
            .await
    }

    /// `POST .../protectedItems/{item}/backup` (not idempotent: never retried except on 429).
    /// The returned operation's final status carries the job id.
    pub async fn begin_backup_now(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        expiry: Option<DateTime<Utc>>,
    ) -> Result<PendingOperation, ArmError> {
        let item = protected_item_id(vault, vm)?;
        let url = self.rs_url(&item, &["backup"], &[])?;
        let mut props = serde_json::json!({ "objectType": "IaasVMBackupRequest" });
        if let (Some(e), Some(obj)) = (expiry, props.as_object_mut()) {
            obj.insert(
                "recoveryPointExpiryTimeInUTC".into(),
                e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
            );
        }
        let body = serde_json::json!({ "properties": props });
        self.begin_rs_job(BACKUP_NOW, url, vault, &body).await
    }

    /// Backup now and wait for the *trigger* to complete; returns the backup job id (the job
    /// itself runs on; follow it with `get_backup_job`).
    pub async fn backup_now_and_wait(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        expiry: Option<DateTime<Utc>>,
        deadline: Duration,
    ) -> Result<String, ArmError> {
        let p = self.begin_backup_now(vault, vm, expiry).await?;
        self.wait_for_job_id(BACKUP_NOW, p, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1";
    const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv1";

    #[test]
    fn item_naming() {
        let vm = ResourceId::parse(VM).expect("vm");
        let vault = ResourceId::parse(VAULT).expect("vault");
        let id = protected_item_id(&vault, &vm).expect("id");
        assert!(id.to_string().ends_with("/backupFabrics/Azure/protectionContainers/iaasvmcontainer;iaasvmcontainerv2;rg-app;vm-1/protectedItems/vm;iaasvmcontainerv2;rg-app;vm-1"));
        assert!(protected_item_id(&vm, &vm).is_err());
    }

    /// Whatever ade-backup asks for, the PUT never leaves a disk out (an ADE VM's backups would
    /// fail with `UserErrorEncryptedVmNotSupportedWithDiskEx`).
    #[test]
    fn a_protect_body_never_carries_an_exclusion() {
        let vm = ResourceId::parse(VM).expect("vm");
        let policy =
            ResourceId::parse(&format!("{VAULT}/backupPolicies/DefaultPolicy")).expect("policy");
        for disks in [DiskSelection::Unchanged, DiskSelection::All] {
            let body =
                serde_json::to_value(ProtectedItemPut::new(&vm, &policy, disks)).expect("json");
            let props = &body["properties"];
            assert_eq!(props["policyId"], policy.to_string());
            let sel = props["extendedProperties"]["diskExclusionProperties"].clone();
            if disks == DiskSelection::Unchanged {
                assert!(props.get("extendedProperties").is_none(), "{body}");
                continue;
            }
            let sel: DiskExclusionProperties = serde_json::from_value(sel).expect("selection");
            assert!(!sel.excludes_disks(), "{body}");
            assert_eq!(sel.is_inclusion_list, Some(false));
        }
    }

    #[test]
    fn a_selection_that_leaves_disks_out_is_told_apart_from_one_that_does_not() {
        let item = |v: serde_json::Value| -> ProtectedItem {
            serde_json::from_value(serde_json::json!({"properties": {"extendedProperties": v}}))
                .expect("item")
        };
        let sel = |luns: serde_json::Value, incl: serde_json::Value| {
            item(
                serde_json::json!({"diskExclusionProperties": {"diskLunList": luns, "isInclusionList": incl}}),
            )
        };
        assert!(sel(serde_json::json!([0, 1]), false.into())
            .disk_exclusion()
            .is_some());
        assert!(sel(serde_json::json!([]), true.into())
            .disk_exclusion()
            .is_some());
        assert!(sel(serde_json::json!([0]), true.into())
            .disk_exclusion()
            .is_some());
        assert!(sel(serde_json::json!([]), false.into())
            .disk_exclusion()
            .is_none());
        assert!(sel(serde_json::json!([]), serde_json::Value::Null)
            .disk_exclusion()
            .is_none());
        assert!(item(serde_json::json!({})).disk_exclusion().is_none());
        assert!(item(serde_json::json!({"diskExclusionProperties": null}))
            .disk_exclusion()
            .is_none());
    }
}
