//! Recovery Services vaults (list, get) and their backup policies (get by id, and the recovery
//! point objective a policy's schedule implies).
//!
//! Shapes: vaults are the standard ARM resource (recoveryservices 2023-04-01); policies follow
//! AzureIaasVm/V2Policy/v2-List-Policies.json and, for the enhanced hourly schedule, the azure-docs
//! `backup-azure-vms-enhanced-policy.md` sample (see `arm/EXAMPLES.md`).

use super::{BACKUP_POLICY_TYPE, RECOVERY_SERVICES_API_VERSION, RECOVERY_VAULT_TYPE};
use crate::arm::client::{sub_bucket, ArmClient, Bucket};
use crate::arm::common::null_vec;
use crate::arm::error::ArmError;
use crate::arm::scope::{expect_type, SubscriptionId};
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

impl ArmClient {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
