//! Backup jobs: get one, list them with a typed `$filter`, and read what a job reports (status,
//! errors, the property bag a restore job fills in).
//!
//! Shapes (see `arm/EXAMPLES.md`): the JobResource of azure-docs
//! `backup-azure-arm-userestapi-managejobs.md`; the `$filter` of
//! Common/ListJobsWithStartTimeAndEndTimeFilters.json and ListJobsWithAllSupportedFilters.

use super::{IAAS_FILTER, RECOVERY_VAULT_TYPE};
use crate::arm::client::{sub_bucket, ArmClient};
use crate::arm::common::{lenient_time, null_vec, string_or_number};
use crate::arm::error::ArmError;
use crate::arm::scope::{check_segment, expect_type};
use crate::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// `AzureIaaSVMJob.containerName`: `iaasvmcontainerv2;{resourceGroup};{vm}` — which VM (in
    /// which resource group) the job is about; the friendly name alone does not say.
    pub container_name: Option<String>,
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
    /// Whether the job is about `vm`: its container names the VM's resource group and name
    /// (compared case-insensitively; the `iaasvmcontainer;` path prefix is optional). A job
    /// without a container name is nobody's: it is never taken for this VM's.
    pub fn is_for_vm(&self, vm: &ResourceId) -> bool {
        let Some(c) = self.properties.container_name.as_deref() else {
            return false;
        };
        let c = c.to_ascii_lowercase();
        let c = c.strip_prefix("iaasvmcontainer;").unwrap_or(&c);
        let want = format!("iaasvmcontainerv2;{};{}", vm.resource_group(), vm.name());
        c == want.to_ascii_lowercase()
    }

    /// A restore job's staging account (`Target Storage Account Name` in the job's details).
    pub fn target_storage_account(&self) -> Option<&str> {
        self.property("Target Storage Account Name")
    }

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
    /// A value of the job's property bag. Azure's keys carry stray spaces and casing
    /// (`"Recovery point time "`): an exact key wins, else the first key equal to `key` once
    /// both are trimmed and compared case-insensitively.
    pub fn property(&self, key: &str) -> Option<&str> {
        let bag = &self.properties.extended_info.as_ref()?.property_bag;
        if let Some(v) = bag.get(key) {
            return Some(v.as_str());
        }
        let want = key.trim();
        bag.iter()
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(want))
            .map(|(_, v)| v.as_str())
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

impl ArmClient {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_for_a_vm_by_its_container_not_its_name() {
        let vm = ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/RG-App/providers/Microsoft.Compute/virtualMachines/web01",
        )
        .expect("id");
        let job = |container: Option<&str>| BackupJob {
            id: None,
            name: Some("j".into()),
            properties: BackupJobProperties {
                entity_friendly_name: Some("web01".into()),
                container_name: container.map(str::to_string),
                ..Default::default()
            },
        };
        assert!(job(Some("iaasvmcontainerv2;rg-app;web01")).is_for_vm(&vm));
        assert!(job(Some("IaasVMContainer;iaasvmcontainerv2;RG-APP;WEB01")).is_for_vm(&vm));
        assert!(
            !job(Some("iaasvmcontainerv2;rg-other;web01")).is_for_vm(&vm),
            "same name, other RG"
        );
        assert!(!job(Some("iaasvmcontainerv2;rg-app;web011")).is_for_vm(&vm));
        assert!(
            !job(None).is_for_vm(&vm),
            "no container: not taken for this VM"
        );
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

    #[test]
    fn property_bag_keys_match_as_azure_spells_them() {
        let j: BackupJob = serde_json::from_value(serde_json::json!({
            "name": "j1",
            "properties": {"extendedInfo": {"propertyBag": {
                "Recovery point time ": "12/1/2026 10:00:00 AM",
                "target storage account name": "stx"
            }}}
        }))
        .expect("job");
        assert_eq!(
            j.property("Recovery point time"),
            Some("12/1/2026 10:00:00 AM")
        );
        assert_eq!(
            j.property("Recovery point time "),
            Some("12/1/2026 10:00:00 AM")
        );
        assert_eq!(j.target_storage_account(), Some("stx"));
        assert_eq!(j.property("Template Blob Uri"), None);
    }
}
