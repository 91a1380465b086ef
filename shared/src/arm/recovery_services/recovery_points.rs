//! Recovery points of a protected VM (list) and what each says: its tiers (snapshot, vault),
//! whether the source VM was encrypted, and with which BEK and KEK.
//!
//! Shapes: AzureIaasVm/RecoveryPoints_List.json (`recoveryPointTierDetails`,
//! `isSourceVMEncrypted`); `keyAndSecret` per swagger `KeyAndSecretDetails` (see `arm/EXAMPLES.md`).

use super::protection::protected_item_id;
use crate::arm::client::{sub_bucket, ArmClient};
use crate::arm::common::{lenient_time, null_vec};
use crate::arm::error::ArmError;
use crate::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    /// `RecoveryPointProperties` (bms.json since 2021-12-01): when the point expires, the
    /// retention rule that governs it, whether it is soft-deleted.
    pub recovery_point_properties: Option<RecoveryPointLifecycle>,
}

/// `recoveryPointProperties` of a recovery point.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RecoveryPointLifecycle {
    /// "Expiry time of Recovery Point in UTC."
    #[serde(deserialize_with = "lenient_time")]
    pub expiry_time: Option<DateTime<Utc>>,
    /// "Rule name tagged on Recovery Point that governs life cycle."
    pub rule_name: Option<String>,
    pub is_soft_deleted: Option<bool>,
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
    /// `InstantRP` (snapshot tier), `HardenedRP` (vault tier), `ArchivedRP`; older examples send
    /// the enum's number (1, 2, 3), read here as its name.
    #[serde(rename = "type", deserialize_with = "tier_type")]
    pub tier_type: Option<String>,
    /// `Valid`, `Disabled`, `Deleted`, `Rehydrated`; older examples send the number (1..=4).
    #[serde(deserialize_with = "tier_status")]
    pub status: Option<String>,
}

/// `RecoveryTierType` of bms.json, by its number.
const TIER_TYPES: [&str; 4] = ["Invalid", "InstantRP", "HardenedRP", "ArchivedRP"];
/// `RecoveryTierStatus` of bms.json, by its number.
const TIER_STATUSES: [&str; 5] = ["Invalid", "Valid", "Disabled", "Deleted", "Rehydrated"];

/// A string enum that older api-versions' examples write as its number: the name either way
/// (an unknown number is kept as its digits, so it matches no known value).
fn enum_name<'de, D: serde::Deserializer<'de>>(
    d: D,
    names: &[&str],
) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(
            n.as_u64()
                .and_then(|i| names.get(i as usize))
                .map(|s| s.to_string())
                .unwrap_or_else(|| n.to_string()),
        ),
        _ => None,
    })
}

fn tier_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, &TIER_TYPES)
}

fn tier_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    enum_name(d, &TIER_STATUSES)
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
    /// When Azure says the point expires (`recoveryPointProperties.expiryTime`), if it says.
    pub fn expiry_time(&self) -> Option<DateTime<Utc>> {
        self.properties
            .recovery_point_properties
            .as_ref()
            .and_then(|p| p.expiry_time)
    }
}

impl ArmClient {
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

    /// The same list, at most `max_pages` pages: the points read and whether pages were left.
    pub async fn list_recovery_points_up_to(
        &self,
        vault: &ResourceId,
        vm: &ResourceId,
        max_pages: u32,
    ) -> Result<(Vec<RecoveryPoint>, bool), ArmError> {
        let item = protected_item_id(vault, vm)?;
        let url = self.rs_url(&item, &["recoveryPoints"], &[])?;
        let bucket = sub_bucket(vault)?;
        self.list_up_to(
            "recoveryServices.recoveryPoints.list",
            url,
            bucket,
            false,
            max_pages,
        )
        .await
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    #[test]
    fn tiers_read_as_strings_and_as_numbers() {
        let current: RecoveryPoint = serde_json::from_value(serde_json::json!({"name": "1",
            "properties": {"recoveryPointTierDetails": [
                {"type": "InstantRP", "status": "Deleted"}, {"type": "HardenedRP", "status": "Valid"}]}}))
        .expect("strings");
        assert!(!current.has_snapshot_tier() && current.has_vault_tier());
        let old: RecoveryPoint = serde_json::from_value(serde_json::json!({"name": "2",
            "properties": {"recoveryPointTierDetails": [
                {"type": 1, "status": 1}, {"type": 2, "status": 3}, {"type": 9, "status": null}]}}))
        .expect("numbers");
        assert!(old.has_snapshot_tier() && !old.has_vault_tier());
        let t = &old.properties.recovery_point_tier_details;
        assert_eq!(t[1].tier_type.as_deref(), Some("HardenedRP"));
        assert_eq!(t[1].status.as_deref(), Some("Deleted"));
        assert_eq!(t[2].tier_type.as_deref(), Some("9"));
        assert_eq!(t[2].status, None);
    }

    #[test]
    fn expiry_comes_from_recovery_point_properties() {
        let rp: RecoveryPoint = serde_json::from_value(serde_json::json!({"name": "3",
            "properties": {"objectType": "IaasVMRecoveryPoint",
                "recoveryPointProperties": {"expiryTime": "2029-01-05T22:48:25.4353958Z",
                    "ruleName": "WeeklyRule", "isSoftDeleted": false}}}))
        .expect("parses");
        assert_eq!(
            rp.expiry_time().map(|t| t.to_rfc3339()).as_deref(),
            Some("2029-01-05T22:48:25.435395800+00:00")
        );
        let none: RecoveryPoint =
            serde_json::from_value(serde_json::json!({"properties": {}})).expect("parses");
        assert_eq!(none.expiry_time(), None);
    }
}
