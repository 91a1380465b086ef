//! Microsoft.RecoveryServices (vaults) and its backup provider: policies, container refresh,
//! protectable/protected items, backup now, jobs, recovery points, restore.
//!
//! Shapes: recoveryservicesbackup 2023-04-01 examples (see EXAMPLES.md), e.g.
//! AzureIaasVm/ProtectedItemOperationStatus.json (operationsStatus carries `properties.jobId`),
//! AzureIaasVm/TriggerRestore_RestoreDisks_IaasVMRestoreRequest_IdentityBasedRestoreDetails.json,
//! AzureIaasVm/RecoveryPoints_List.json, Common/RefreshContainers.json.

use super::client::{sub_bucket, ArmClient, Bucket, Call};
use super::common::{lenient_time, null_vec, string_or_number};
use super::compute::VM_TYPE;
use super::error::ArmError;
use super::lro::{PendingOperation, Started};
use super::scope::{check_segment, expect_type, SubscriptionId};
use crate::ids::ResourceId;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const RECOVERY_SERVICES_API_VERSION: &str = "2023-04-01";
pub const RECOVERY_VAULT_TYPE: &str = "Microsoft.RecoveryServices/vaults";
pub const BACKUP_POLICY_TYPE: &str = "Microsoft.RecoveryServices/vaults/backupPolicies";
const IAAS_FILTER: &str = "backupManagementType eq 'AzureIaasVM'";
const BACKUP_NOW: &str = "recoveryServices.backupNow";
const RESTORE: &str = "recoveryServices.restore";

// ---------------------------------------------------------------------------------------------
// Models

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecoveryServicesVault {
    pub id: Option<String>,
    pub name: Option<String>,
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub sku: Option<serde_json::Value>,
    pub properties: Option<serde_json::Value>,
}

impl RecoveryServicesVault {
    pub fn resource_id(&self) -> Option<ResourceId> {
        self.id.as_deref().and_then(|s| ResourceId::parse(s).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BackupPolicy {
    pub id: Option<String>,
    pub name: Option<String>,
    pub properties: BackupPolicyProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BackupPolicyProperties {
    pub backup_management_type: Option<String>,
    /// `V1` (standard) or `V2` (enhanced).
    pub policy_type: Option<String>,
    pub schedule_policy: Option<SchedulePolicy>,
    pub retention_policy: Option<serde_json::Value>,
    pub instant_rp_retention_range_in_days: Option<i64>,
    pub time_zone: Option<String>,
    pub protected_items_count: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SchedulePolicy {
    /// `SimpleSchedulePolicy` or `SimpleSchedulePolicyV2`.
    pub schedule_policy_type: Option<String>,
    /// `Daily`, `Weekly` or `Hourly`.
    pub schedule_run_frequency: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub schedule_run_days: Vec<String>,
    #[serde(deserialize_with = "null_vec")]
    pub schedule_run_times: Vec<String>,
    pub hourly_schedule: Option<HourlySchedule>,
    pub daily_schedule: Option<serde_json::Value>,
    pub weekly_schedule: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HourlySchedule {
    /// Hours between backups (4, 6, 8, 12).
    pub interval: Option<i64>,
    pub schedule_window_start_time: Option<String>,
    pub schedule_window_duration: Option<i64>,
}

impl BackupPolicy {
    /// The recovery point objective the schedule implies: daily 24 h, weekly 7 days, hourly
    /// (enhanced policy) the `hourlySchedule.interval`. `None` when the schedule is missing or
    /// unknown — the caller decides what that means rather than this guessing.
    pub fn rpo(&self) -> Option<chrono::Duration> {
        let s = self.properties.schedule_policy.as_ref()?;
        match s
            .schedule_run_frequency
            .as_deref()?
            .to_ascii_lowercase()
            .as_str()
        {
            "daily" => Some(chrono::Duration::hours(24)),
            "weekly" => Some(chrono::Duration::days(7)),
            "hourly" => s
                .hourly_schedule
                .as_ref()?
                .interval
                .filter(|h| *h > 0 && *h <= 24)
                .map(chrono::Duration::hours),
            _ => None,
        }
    }
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
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BackupJob {
    pub id: Option<String>,
    /// The job id.
    pub name: Option<String>,
    pub properties: BackupJobProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BackupJobProperties {
    /// `AzureIaaSVMJob`, `AzureIaaSVMJobV2`.
    pub job_type: Option<String>,
    /// `Backup`, `Restore`, `ConfigureBackup`, ...
    pub operation: Option<String>,
    /// `InProgress`, `Completed`, `Failed`, `CompletedWithWarnings`, `Cancelled`, ...
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_time")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_time")]
    pub end_time: Option<DateTime<Utc>>,
    pub entity_friendly_name: Option<String>,
    pub backup_management_type: Option<String>,
    pub activity_id: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub error_details: Vec<JobErrorInfo>,
    pub extended_info: Option<JobExtendedInfo>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobErrorInfo {
    /// A string in most providers, an integer in AzureIaaSVMErrorInfo; always a string here.
    #[serde(deserialize_with = "string_or_number")]
    pub error_code: Option<String>,
    pub error_string: Option<String>,
    pub error_title: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub recommendations: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobExtendedInfo {
    /// Restore jobs: `Config Blob Uri`, `Template Blob Uri`, `Target Storage Account Name`, ...
    /// Values may be blob URLs; do not log them whole.
    #[serde(deserialize_with = "null_map")]
    pub property_bag: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_vec")]
    pub tasks_list: Vec<JobTask>,
    pub progress_percentage: Option<f64>,
    pub dynamic_error_message: Option<String>,
}

fn null_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let m = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(m.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobTask {
    pub task_id: Option<String>,
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient_time")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "lenient_time")]
    pub end_time: Option<DateTime<Utc>>,
}

impl BackupJob {
    pub fn status(&self) -> Option<&str> {
        self.properties.status.as_deref()
    }
    /// Finished in any way (including failure).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status().map(str::to_ascii_lowercase).as_deref(),
            Some("completed" | "failed" | "completedwithwarnings" | "cancelled" | "canceled")
        )
    }
    pub fn succeeded(&self) -> bool {
        matches!(
            self.status().map(str::to_ascii_lowercase).as_deref(),
            Some("completed" | "completedwithwarnings")
        )
    }
    /// First error code, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.properties
            .error_details
            .iter()
            .find_map(|e| e.error_code.as_deref())
    }
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .extended_info
            .as_ref()?
            .property_bag
            .get(key)
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecoveryPoint {
    pub id: Option<String>,
    /// The recovery point id.
    pub name: Option<String>,
    pub properties: RecoveryPointProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecoveryPointProperties {
    /// `IaasVMRecoveryPoint`.
    pub object_type: Option<String>,
    /// `CrashConsistent`, `AppConsistent`, `FileSystemConsistent`.
    pub recovery_point_type: Option<String>,
    #[serde(deserialize_with = "lenient_time")]
    pub recovery_point_time: Option<DateTime<Utc>>,
    #[serde(rename = "isSourceVMEncrypted")]
    pub is_source_vm_encrypted: Option<bool>,
    pub key_and_secret: Option<KeyAndSecretDetails>,
    #[serde(deserialize_with = "null_vec")]
    pub recovery_point_tier_details: Vec<RecoveryPointTierInfo>,
    pub os_type: Option<String>,
    pub virtual_machine_size: Option<String>,
    pub is_managed_virtual_machine: Option<bool>,
    pub zones: Option<Vec<String>>,
}

/// Which BEK/KEK the recovery point was taken with. The key/secret backup blobs
/// (`keyBackupData`, `secretData`) are not modelled so they cannot be logged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyAndSecretDetails {
    pub kek_details: Option<KekDetails>,
    pub bek_details: Option<BekDetails>,
    pub encryption_algorithm: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KekDetails {
    pub key_url: Option<String>,
    pub key_vault_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BekDetails {
    pub secret_url: Option<String>,
    pub secret_vault_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecoveryPointTierInfo {
    /// `InstantRP` (snapshot tier), `HardenedRP` (vault tier), `ArchivedRP`.
    #[serde(rename = "type")]
    pub tier_type: Option<String>,
    /// `Valid`, `Deleted`, `Disabled`, `Rehydrated`.
    pub status: Option<String>,
}

impl RecoveryPoint {
    fn tier_valid(&self, tier: &str) -> bool {
        self.properties.recovery_point_tier_details.iter().any(|t| {
            t.tier_type
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(tier))
                && t.status
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("Valid"))
        })
    }
    /// A valid snapshot-tier copy exists.
    pub fn has_snapshot_tier(&self) -> bool {
        self.tier_valid("InstantRP")
    }
    /// A valid vault-tier copy exists (the documented fallback for ADE single-pass restores).
    pub fn has_vault_tier(&self) -> bool {
        self.tier_valid("HardenedRP")
    }
    pub fn is_encrypted(&self) -> bool {
        self.properties.is_source_vm_encrypted == Some(true)
    }
}

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
    pub fn target_resource_group(mut self, rg: &super::scope::ResourceGroupRef) -> Self {
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

/// Typed `$filter` for the backup jobs list (values are enums/timestamps, never free text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackupJobFilter {
    /// `Backup`, `Restore`, `ConfigureBackup`...
    pub operation: Option<JobOperation>,
    pub status: Option<JobStatus>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOperation {
    Backup,
    Restore,
    ConfigureBackup,
    DisableBackup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    InProgress,
    Completed,
    Failed,
    CompletedWithWarnings,
    Cancelled,
}

impl JobOperation {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobOperation::Backup => "Backup",
            JobOperation::Restore => "Restore",
            JobOperation::ConfigureBackup => "ConfigureBackup",
            JobOperation::DisableBackup => "DisableBackup",
        }
    }
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::InProgress => "InProgress",
            JobStatus::Completed => "Completed",
            JobStatus::Failed => "Failed",
            JobStatus::CompletedWithWarnings => "CompletedWithWarnings",
            JobStatus::Cancelled => "Cancelled",
        }
    }
}

impl BackupJobFilter {
    pub fn to_odata(&self) -> String {
        let mut parts = vec![IAAS_FILTER.to_string()];
        if let Some(op) = self.operation {
            parts.push(format!("operation eq '{}'", op.as_str()));
        }
        if let Some(st) = self.status {
            parts.push(format!("status eq '{}'", st.as_str()));
        }
        // The service's own format (spec example ListJobsWithStartTimeAndEndTimeFilters.json).
        let fmt = |t: &DateTime<Utc>| t.format("%Y-%m-%d %I:%M:%S %p").to_string();
        if let Some(t) = &self.start_time {
            parts.push(format!("startTime eq '{}'", fmt(t)));
        }
        if let Some(t) = &self.end_time {
            parts.push(format!("endTime eq '{}'", fmt(t)));
        }
        parts.join(" and ")
    }
}

// ---------------------------------------------------------------------------------------------
// Naming

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
}

// ---------------------------------------------------------------------------------------------
// Operations

impl ArmClient {
    fn rs_url(
        &self,
        base: &ResourceId,
        tail: &[&str],
        query: &[(&str, &str)],
    ) -> Result<url::Url, ArmError> {
        self.id_url(base, tail, RECOVERY_SERVICES_API_VERSION, query)
    }

    /// POSTs a backup or restore trigger. Not idempotent: a repeat would start a second job, so
    /// the retry policy only repeats it on 429. The job id is only in the `operationsStatus`
    /// document, so an answer with nothing to follow is an error rather than "done".
    async fn begin_rs_job<B: Serialize>(
        &self,
        operation: &'static str,
        url: url::Url,
        vault: &ResourceId,
        body: &B,
    ) -> Result<PendingOperation, ArmError> {
        let call = Call::new(operation, Method::POST, url, sub_bucket(vault)?).json(body)?;
        let resp = self.send(&call).await?;
        self.pending_from(operation, &resp, true)?
            .ok_or_else(|| ArmError::decode(operation, "no operation to follow in the response"))
    }

    async fn wait_for_job_id(
        &self,
        operation: &'static str,
        pending: PendingOperation,
        deadline: Duration,
    ) -> Result<String, ArmError> {
        let out = self.wait(pending, deadline).await?;
        out.job_id
            .ok_or_else(|| ArmError::decode(operation, "operation status has no jobId"))
    }

    /// `GET /subscriptions/{s}/providers/Microsoft.RecoveryServices/vaults` (all pages).
    pub async fn list_recovery_services_vaults(
        &self,
        subscription: SubscriptionId,
    ) -> Result<Vec<RecoveryServicesVault>, ArmError> {
        let url = self.subscription_url(
            subscription,
            &["providers", "Microsoft.RecoveryServices", "vaults"],
            RECOVERY_SERVICES_API_VERSION,
            &[],
        )?;
        let bucket = Bucket::Subscription(subscription);
        self.list_all("recoveryServices.vaults.list", url, bucket, false)
            .await
    }

    /// `GET vaults/{v}`.
    pub async fn get_recovery_services_vault(
        &self,
        vault: &ResourceId,
    ) -> Result<RecoveryServicesVault, ArmError> {
        expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
        let url = self.rs_url(vault, &[], &[])?;
        self.get_json("recoveryServices.vault.get", url, sub_bucket(vault)?)
            .await
    }

    /// `GET vaults/{v}/backupPolicies/{p}` — by the policy's id (what protected items carry).
    pub async fn get_backup_policy(&self, policy: &ResourceId) -> Result<BackupPolicy, ArmError> {
        expect_type("policyId", policy, BACKUP_POLICY_TYPE)?;
        let url = self.rs_url(policy, &[], &[])?;
        self.get_json("recoveryServices.policy.get", url, sub_bucket(policy)?)
            .await
    }

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
        expect_type("policyId", policy, BACKUP_POLICY_TYPE)?;
        let item = protected_item_id(vault, vm)?;
        let url = self.rs_url(&item, &[], &[])?;
        let body = ProtectedItemPut {
            properties: ProtectedItemPutProps {
                protected_item_type: VM_TYPE,
                source_resource_id: vm.to_string(),
                policy_id: policy.to_string(),
            },
        };
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

    /// `GET vaults/{v}/backupJobs/{jobId}`.
    pub async fn get_backup_job(
        &self,
        vault: &ResourceId,
        job_id: &str,
    ) -> Result<BackupJob, ArmError> {
        expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
        check_segment("jobId", job_id)?;
        let url = self.rs_url(vault, &["backupJobs", job_id], &[])?;
        self.get_json("recoveryServices.job.get", url, sub_bucket(vault)?)
            .await
    }

    /// `GET vaults/{v}/backupJobs?$filter=...` (all pages).
    pub async fn list_backup_jobs(
        &self,
        vault: &ResourceId,
        filter: &BackupJobFilter,
    ) -> Result<Vec<BackupJob>, ArmError> {
        expect_type("vaultId", vault, RECOVERY_VAULT_TYPE)?;
        let f = filter.to_odata();
        let url = self.rs_url(vault, &["backupJobs"], &[("$filter", &f)])?;
        self.list_all("recoveryServices.jobs.list", url, sub_bucket(vault)?, false)
            .await
    }

    /// `GET .../protectedItems/{item}/recoveryPoints` (all pages).
    pub async fn list_recovery_points(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
    ) -> Result<Vec<RecoveryPoint>, ArmError> {
        let item = protected_item_id(vault, vm)?;
        let url = self.rs_url(&item, &["recoveryPoints"], &[])?;
        let bucket = sub_bucket(vault)?;
        self.list_all("recoveryServices.recoveryPoints.list", url, bucket, false)
            .await
    }

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
    const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv1";

    #[test]
    fn item_naming() {
        let vm = ResourceId::parse(VM).expect("vm");
        let vault = ResourceId::parse(VAULT).expect("vault");
        let id = protected_item_id(&vault, &vm).expect("id");
        assert!(id.to_string().ends_with("/backupFabrics/Azure/protectionContainers/iaasvmcontainer;iaasvmcontainerv2;rg-app;vm-1/protectedItems/vm;iaasvmcontainerv2;rg-app;vm-1"));
        assert!(protected_item_id(&vm, &vm).is_err());
    }

    #[test]
    fn rpo_from_schedules() {
        let p = |v: serde_json::Value| -> BackupPolicy {
            serde_json::from_value(serde_json::json!({"properties": {"schedulePolicy": v}}))
                .expect("policy")
        };
        assert_eq!(
            p(serde_json::json!({"scheduleRunFrequency":"Daily"})).rpo(),
            Some(chrono::Duration::hours(24))
        );
        assert_eq!(
            p(serde_json::json!({"scheduleRunFrequency":"Weekly"})).rpo(),
            Some(chrono::Duration::days(7))
        );
        assert_eq!(
            p(serde_json::json!({"schedulePolicyType":"SimpleSchedulePolicyV2","scheduleRunFrequency":"Hourly","hourlySchedule":{"interval":4}})).rpo(),
            Some(chrono::Duration::hours(4))
        );
        assert_eq!(
            p(serde_json::json!({"scheduleRunFrequency":"Hourly"})).rpo(),
            None
        );
        assert_eq!(BackupPolicy::default().rpo(), None);
    }

    #[test]
    fn restore_body_shape() {
        let vm = ResourceId::parse(VM).expect("vm");
        let sa = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.Storage/storageAccounts/stage1").expect("sa");
        let rg = super::super::scope::ResourceGroupRef::of(&vm).expect("rg");
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

    #[test]
    fn job_filter_is_built_from_enums() {
        let f = BackupJobFilter {
            operation: Some(JobOperation::Restore),
            status: Some(JobStatus::InProgress),
            ..Default::default()
        };
        assert_eq!(
            f.to_odata(),
            "backupManagementType eq 'AzureIaasVM' and operation eq 'Restore' and status eq 'InProgress'"
        );
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-29T14:05:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let f = BackupJobFilter {
            start_time: Some(t),
            ..Default::default()
        };
        assert!(f
            .to_odata()
            .ends_with("startTime eq '2026-11-29 02:05:00 PM'"));
    }
}
