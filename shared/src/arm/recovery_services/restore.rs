//! Restore disks, the only restore Azure Backup offers VMs encrypted with ADE: the
//! `IaasVMRestoreRequest` (`recoveryType: RestoreDisks`, with its encryption details) and its
//! trigger, which ends with the restore job's id.
//!
//! Shapes (see `arm/EXAMPLES.md`):
//! AzureIaasVm/TriggerRestore_RestoreDisks_IaasVMRestoreRequest_IdentityBasedRestoreDetails.json
//! (202 with `Location` and `Azure-AsyncOperation`) and AzureIaasVm/ProtectedItemOperationStatus.json
//! (the job id).

use super::protection::protected_item_id;
use crate::arm::client::ArmClient;
use crate::arm::compute::VM_TYPE;
use crate::arm::error::ArmError;
use crate::arm::lro::PendingOperation;
use crate::arm::scope::{check_segment, expect_type, ResourceGroupRef};
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

const RESTORE: &str = "recoveryServices.restore";

/// Encryption details of a restore request (swagger `EncryptionDetails`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionDetails {
    pub encryption_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_vault_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_vault_id: Option<String>,
}

/// `IaasVMRestoreRequest` with `recoveryType: RestoreDisks` (the only restore ADE VMs support).
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreDisksRequest {
    recovery_point_id: String,
    source_resource_id: ResourceId,
    region: String,
    storage_account_id: ResourceId,
    target_resource_group_id: Option<String>,
    encryption: Option<EncryptionDetails>,
    restore_disk_lun_list: Option<Vec<i32>>,
    zones: Option<Vec<String>>,
}

impl RestoreDisksRequest {
    /// `storage_account` is the staging account the disks' config and template land in.
    pub fn new(
        recovery_point_id: &str,
        source_vm: &ResourceId,
        region: &str,
        storage_account: &ResourceId,
    ) -> Result<Self, ArmError> {
        check_segment("recoveryPointId", recovery_point_id)?;
        expect_type("sourceResourceId", source_vm, VM_TYPE)?;
        expect_type(
            "storageAccountId",
            storage_account,
            "Microsoft.Storage/storageAccounts",
        )?;
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ArmError::invalid(
                "region",
                format!("must be an Azure region name like westeurope (got {region:?})"),
            ));
        }
        Ok(Self {
            recovery_point_id: recovery_point_id.to_string(),
            source_resource_id: source_vm.clone(),
            region: region.to_string(),
            storage_account_id: storage_account.clone(),
            target_resource_group_id: None,
            encryption: None,
            restore_disk_lun_list: None,
            zones: None,
        })
    }
    /// Managed disks are created in this resource group (same subscription as the source).
    pub fn target_resource_group(mut self, rg: &ResourceGroupRef) -> Self {
        self.target_resource_group_id = Some(format!(
            "/subscriptions/{}/resourceGroups/{}",
            rg.subscription(),
            rg.name()
        ));
        self
    }
    pub fn encryption(mut self, details: EncryptionDetails) -> Self {
        self.encryption = Some(details);
        self
    }
    pub fn luns(mut self, luns: Vec<i32>) -> Self {
        self.restore_disk_lun_list = Some(luns);
        self
    }
    pub fn zones(mut self, zones: Vec<String>) -> Self {
        self.zones = Some(zones);
        self
    }
    pub fn recovery_point_id(&self) -> &str {
        &self.recovery_point_id
    }
    /// The request body.
    pub fn to_body(&self) -> serde_json::Value {
        let mut p = serde_json::json!({
            "objectType": "IaasVMRestoreRequest",
            "recoveryPointId": self.recovery_point_id,
            "recoveryType": "RestoreDisks",
            "sourceResourceId": self.source_resource_id.to_string(),
            "storageAccountId": self.storage_account_id.to_string(),
            "region": self.region,
            "createNewCloudService": false,
            "originalStorageAccountOption": false,
        });
        if let Some(obj) = p.as_object_mut() {
            if let Some(rg) = &self.target_resource_group_id {
                obj.insert("targetResourceGroupId".into(), rg.clone().into());
                obj.insert("restoreWithManagedDisks".into(), true.into());
            }
            if let Some(e) = &self.encryption {
                obj.insert(
                    "encryptionDetails".into(),
                    serde_json::to_value(e).unwrap_or_default(),
                );
            }
            if let Some(l) = &self.restore_disk_lun_list {
                obj.insert("restoreDiskLunList".into(), serde_json::json!(l));
            }
            if let Some(z) = &self.zones {
                obj.insert("zones".into(), serde_json::json!(z));
            }
        }
        serde_json::json!({ "properties": p })
    }
}

impl ArmClient {
    /// `POST .../recoveryPoints/{rp}/restore` (not idempotent). The returned operation's final
    /// status carries the restore job id.
    pub async fn begin_restore(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        request: &RestoreDisksRequest,
    ) -> Result<PendingOperation, ArmError> {
        let item = protected_item_id(vault, vm)?;
        let tail = ["recoveryPoints", request.recovery_point_id(), "restore"];
        let url = self.rs_url(&item, &tail, &[])?;
        self.begin_rs_job(RESTORE, url, vault, &request.to_body())
            .await
    }

    /// Restore and wait for the trigger; returns the restore job id.
    pub async fn restore_and_wait(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        request: &RestoreDisksRequest,
        deadline: Duration,
    ) -> Result<String, ArmError> {
        let p = self.begin_restore(vault, vm, request).await?;
        self.wait_for_job_id(RESTORE, p, deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1";

    #[test]
    fn restore_body_shape() {
        let vm = ResourceId::parse(VM).expect("vm");
        let sa = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.Storage/storageAccounts/stage1").expect("sa");
        let rg = ResourceGroupRef::of(&vm).expect("rg");
        let r = RestoreDisksRequest::new("348916168024334", &vm, "westeurope", &sa)
            .expect("req")
            .target_resource_group(&rg)
            .encryption(EncryptionDetails {
                encryption_enabled: true,
                ..Default::default()
            });
        let b = r.to_body();
        assert_eq!(b["properties"]["objectType"], "IaasVMRestoreRequest");
        assert_eq!(b["properties"]["recoveryType"], "RestoreDisks");
        assert_eq!(b["properties"]["sourceResourceId"], VM);
        assert_eq!(
            b["properties"]["encryptionDetails"]["encryptionEnabled"],
            true
        );
        assert!(RestoreDisksRequest::new("../x", &vm, "westeurope", &sa).is_err());
        assert!(RestoreDisksRequest::new("1", &vm, "west europe", &sa).is_err());
        assert!(RestoreDisksRequest::new("1", &sa, "westeurope", &sa).is_err());
    }
}
