//! Microsoft.RecoveryServices: vaults and their backup policies, protected items (a VM under a
//! policy) and their recovery points, stopping and resuming protection, and the ARM rendering
//! of all of them. The jobs that take backups and restore them are in `backup_jobs`. Shapes
//! follow recoveryservicesbackup 2023-04-01 `AzureIaasVm/RecoveryPoints_List.json`,
//! `ProtectedItemOperationStatus.json`, `BackupProtectableItems_List.json`.

use super::{lc, resource_id, ts, Disk, Encryption, Failure, JobKind, VmState, World};
use crate::fleet::{self, OsType};
use chrono::{DateTime, Datelike, Duration, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `protectionState` of an item whose protection was stopped with its data retained.
pub const PROTECTION_STOPPED_STATE: &str = "ProtectionStopped";

#[derive(Debug, Clone, serde::Serialize)]
pub struct RsVault {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub policies: BTreeMap<String, fleet::BackupPolicy>,
    /// VMs found by the last completed refreshContainers.
    pub discovered: BTreeSet<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoveryPoint {
    pub name: String,
    pub time: DateTime<Utc>,
    pub os_type: OsType,
    pub vm_size: String,
    pub vm_name: String,
    pub source_vm_id: String,
    pub location: String,
    pub os_disk: Disk,
    pub data_disks: Vec<Disk>,
    pub encryption: Option<Encryption>,
    pub instant_until: DateTime<Utc>,
    pub hardened_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProtectedItem {
    pub vault_key: String,
    pub name: String,
    pub container: String,
    pub vm_key: String,
    pub source_id: String,
    pub vm_name: String,
    /// Policy name; `None` once protection is stopped (Azure clears `policyId`).
    pub policy: Option<String>,
    pub protection_state: String,
    pub last_backup_status: Option<String>,
    pub last_backup_time: Option<DateTime<Utc>>,
    pub recovery_points: Vec<RecoveryPoint>,
    pub health_error: Option<Failure>,
    pub created: DateTime<Utc>,
    /// Data disk LUNs excluded from backup (`extendedProperties.diskExclusionProperties`).
    pub excluded_disk_luns: Vec<u32>,
}

impl ProtectedItem {
    /// A new protection of `vm` in vault `vault_key` under `policy`, waiting for its first
    /// backup (IRPending).
    pub fn new(vault_key: &str, vm: &VmState, policy: &str, created: DateTime<Utc>) -> Self {
        ProtectedItem {
            vault_key: vault_key.to_string(),
            name: item_name(&vm.resource_group, &vm.name),
            container: container_name(&vm.resource_group, &vm.name),
            vm_key: lc(&vm.id),
            source_id: vm.id.clone(),
            vm_name: vm.name.clone(),
            policy: Some(policy.to_string()),
            protection_state: "IRPending".into(),
            last_backup_status: None,
            last_backup_time: None,
            recovery_points: Vec::new(),
            health_error: None,
            created,
            excluded_disk_luns: Vec::new(),
        }
    }
}

/// `extendedProperties` of an item: `diskExclusionProperties` when disks are excluded.
fn extended_properties(item: &ProtectedItem) -> Value {
    if item.excluded_disk_luns.is_empty() {
        return json!({});
    }
    json!({"diskExclusionProperties": {"diskLunList": item.excluded_disk_luns, "isInclusionList": false}})
}

pub fn container_name(rg: &str, vm: &str) -> String {
    format!("IaasVMContainer;iaasvmcontainerv2;{};{}", lc(rg), lc(vm))
}

pub fn item_name(rg: &str, vm: &str) -> String {
    format!("VM;iaasvmcontainerv2;{};{}", lc(rg), lc(vm))
}

impl World {
    /// Add a fleet's Recovery Services vault (keyed by lower-case resource id).
    pub(super) fn add_fleet_rs_vault(&mut self, rsv: &fleet::RecoveryServicesVault) {
        let id = resource_id(
            &rsv.subscription,
            &rsv.resource_group,
            "Microsoft.RecoveryServices/vaults",
            &rsv.name,
        );
        self.rs_vaults.insert(
            lc(&id),
            RsVault {
                id,
                name: rsv.name.clone(),
                subscription: rsv.subscription.clone(),
                resource_group: rsv.resource_group.clone(),
                location: rsv.location.clone(),
                policies: rsv
                    .policies
                    .iter()
                    .map(|p| (lc(&p.name), p.clone()))
                    .collect(),
                discovered: BTreeSet::new(),
            },
        );
    }

    /// Protect a fleet VM as its `protection` says: protected 60 days ago, with hardened
    /// recovery points of the given ages (Protected; IRPending without any). Nothing happens when the
    /// named vault is not in the VM's subscription.
    pub(super) fn protect_fleet_vm(
        &mut self,
        vm: &VmState,
        p: &fleet::Protection,
        now: DateTime<Utc>,
    ) {
        let Some(vault_key) = self
            .rs_vaults
            .values()
            .find(|r| {
                r.name.eq_ignore_ascii_case(&p.vault)
                    && r.subscription.eq_ignore_ascii_case(&vm.subscription)
            })
            .map(|r| lc(&r.id))
        else {
            return;
        };
        let mut item = ProtectedItem::new(&vault_key, vm, &p.policy, now - Duration::days(60));
        item.excluded_disk_luns = p.excluded_disk_luns.clone();
        let mut ages = p.recovery_point_ages_hours.clone();
        ages.sort_unstable_by(|a, b| b.cmp(a));
        for age in ages {
            let time = now - Duration::hours(age as i64);
            let mut rp = self.snapshot_rp(vm, time, 2);
            rp.hardened_at = Some(time + Duration::minutes(20));
            item.recovery_points.push(rp);
            item.last_backup_status = Some("Completed".into());
            item.last_backup_time = Some(time);
        }
        if !item.recovery_points.is_empty() {
            item.protection_state = "Protected".into();
        }
        self.protected_items
            .insert(format!("{vault_key}|{}", lc(&item.name)), item);
    }

    /// A recovery point of `vm` as it is at `time`, kept as an instant RP for `instant_days`.
    pub(super) fn snapshot_rp(
        &mut self,
        vm: &VmState,
        time: DateTime<Utc>,
        instant_days: u32,
    ) -> RecoveryPoint {
        let n = self.next_number();
        RecoveryPoint {
            name: format!(
                "{}",
                100_000_000_000_000u64 + (time.timestamp() as u64 % 1_000_000) * 1000 + n
            ),
            time,
            os_type: vm.os_type,
            vm_size: vm.vm_size.clone(),
            vm_name: vm.name.clone(),
            source_vm_id: vm.id.clone(),
            location: vm.location.clone(),
            os_disk: vm.os_disk.clone(),
            data_disks: vm.data_disks.clone(),
            encryption: vm
                .encryption
                .clone()
                .or_else(|| vm.restored_encryption.clone()),
            instant_until: time + Duration::days(instant_days as i64),
            hardened_at: None,
        }
    }

    /// Stop protection and retain data: the item keeps its recovery points but loses its policy
    /// (so no scheduled backups), and Backup now is refused until protection is resumed with a
    /// policy. Returns the `DisableBackup` job's id.
    pub fn stop_protection(
        &mut self,
        item_key: &str,
        now: DateTime<Utc>,
    ) -> Result<String, Failure> {
        let item = self.protected_items.get_mut(item_key).ok_or_else(|| {
            Failure::new(
                "BMSUserErrorObjectNotFound",
                "protected item not found; only a protected item can have its protection stopped",
            )
        })?;
        item.protection_state = PROTECTION_STOPPED_STATE.into();
        item.policy = None;
        let (vault_key, vm_name) = (item.vault_key.clone(), item.vm_name.clone());
        Ok(self.start_protection_job(JobKind::DisableBackup, item_key, &vault_key, &vm_name, now))
    }

    /// Give an existing item `policy`. A stopped item resumes: Protected if it kept recovery
    /// points, IRPending (waiting for its first backup) otherwise, as for a new protection.
    pub fn set_item_policy(&mut self, item_key: &str, policy: &str) -> Option<ProtectedItem> {
        let item = self.protected_items.get_mut(item_key)?;
        item.policy = Some(policy.to_string());
        if item
            .protection_state
            .eq_ignore_ascii_case(PROTECTION_STOPPED_STATE)
        {
            item.protection_state = if item.recovery_points.is_empty() {
                "IRPending".into()
            } else {
                "Protected".into()
            };
        }
        Some(item.clone())
    }

    pub fn rs_vault_json(&self, v: &RsVault) -> Value {
        json!({
            "id": v.id,
            "name": v.name,
            "type": "Microsoft.RecoveryServices/vaults",
            "location": v.location,
            "tags": {},
            "sku": {"name": "RS0", "tier": "Standard"},
            "properties": {
                "provisioningState": "Succeeded",
                "privateEndpointStateForBackup": "None",
                "privateEndpointStateForSiteRecovery": "None",
                "publicNetworkAccess": "Enabled"
            }
        })
    }

    pub fn policy_json(&self, v: &RsVault, p: &fleet::BackupPolicy) -> Value {
        let count = self
            .protected_items
            .values()
            .filter(|i| {
                i.vault_key == lc(&v.id)
                    && i.policy
                        .as_deref()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&p.name))
            })
            .count();
        let day = "2024-01-01";
        let (schedule, policy_type, run_time) = match &p.schedule {
            fleet::Schedule::Daily { time } => (
                json!({"schedulePolicyType": "SimpleSchedulePolicy", "scheduleRunFrequency": "Daily", "scheduleRunTimes": [format!("{day}T{time}:00Z")], "scheduleWeeklyFrequency": 0}),
                "V1",
                format!("{day}T{time}:00Z"),
            ),
            fleet::Schedule::Hourly {
                interval_hours,
                start_time,
                window_hours,
            } => (
                json!({"schedulePolicyType": "SimpleSchedulePolicyV2", "scheduleRunFrequency": "Hourly", "hourlySchedule": {"interval": interval_hours, "scheduleWindowStartTime": format!("{day}T{start_time}:00Z"), "scheduleWindowDuration": window_hours}}),
                "V2",
                format!("{day}T{start_time}:00Z"),
            ),
        };
        let mut retention = json!({
            "retentionPolicyType": "LongTermRetentionPolicy",
            "dailySchedule": {"retentionTimes": [run_time], "retentionDuration": {"count": p.retention.daily_days, "durationType": "Days"}}
        });
        if let Some(w) = p.retention.weekly_weeks {
            retention["weeklySchedule"] = json!({"daysOfTheWeek": ["Sunday"], "retentionTimes": [run_time], "retentionDuration": {"count": w, "durationType": "Weeks"}});
        }
        json!({
            "id": format!("{}/backupPolicies/{}", v.id, p.name),
            "name": p.name,
            "type": "Microsoft.RecoveryServices/vaults/backupPolicies",
            "properties": {
                "backupManagementType": "AzureIaasVM",
                "policyType": policy_type,
                "instantRPDetails": {},
                "schedulePolicy": schedule,
                "retentionPolicy": retention,
                "instantRpRetentionRangeInDays": p.instant_rp_retention_days,
                "timeZone": "UTC",
                "protectedItemsCount": count
            }
        })
    }

    pub fn protected_item_id(&self, item: &ProtectedItem) -> String {
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            self.child_vault_id(&item.vault_key),
            item.container,
            item.name
        )
    }

    /// The vault id inside the ids of its children (items, recovery points, jobs, policies):
    /// with [`World::varied_casing`], as Azure Backup often returns it —
    /// `/subscriptions/{s}/resourcegroups/{RG}/providers/microsoft.recoveryservices/vaults/{v}`.
    pub(crate) fn child_vault_id(&self, vault_key: &str) -> String {
        let Some(v) = self.rs_vaults.get(vault_key) else {
            return String::new();
        };
        if !self.varied_casing {
            return v.id.clone();
        }
        format!(
            "/subscriptions/{}/resourcegroups/{}/providers/microsoft.recoveryservices/vaults/{}",
            v.subscription,
            v.resource_group.to_ascii_uppercase(),
            v.name
        )
    }

    /// Where the `Location` / `Azure-AsyncOperation` headers of an item's operations point: the
    /// item's id, with [`World::varied_casing`] in the other spelling Azure Backup uses there
    /// (`iaasvmcontainer;iaasVMContainerV2;{RG};{vm}`, `vm;iaasVMContainerV2;{RG};{vm}`).
    pub fn protected_item_header_id(&self, item: &ProtectedItem) -> String {
        if !self.varied_casing {
            return self.protected_item_id(item);
        }
        let tail = |prefix: &str, name: &str| {
            let mut parts: Vec<String> = name.split(';').map(str::to_string).collect();
            if parts.len() == 4 {
                parts[0] = prefix.to_string();
                parts[1] = "iaasVMContainerV2".to_string();
                parts[2] = parts[2].to_ascii_uppercase();
            }
            parts.join(";")
        };
        format!(
            "{}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            self.child_vault_id(&item.vault_key),
            tail("iaasvmcontainer", &item.container),
            tail("vm", &item.name)
        )
    }

    pub fn protected_item_json(&self, item: &ProtectedItem) -> Value {
        let vault_id = self.child_vault_id(&item.vault_key);
        let last_rp = item.recovery_points.iter().map(|r| r.time).max();
        let oldest_rp = item.recovery_points.iter().map(|r| r.time).min();
        let (health, details) = match &item.health_error {
            Some(f) => (
                "ActionRequired",
                json!([{"code": 0, "title": f.code, "message": f.message, "recommendations": []}]),
            ),
            None => ("Passed", json!([])),
        };
        json!({
            "id": self.protected_item_id(item),
            "name": item.name,
            "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems",
            "properties": {
                "friendlyName": item.vm_name,
                "virtualMachineId": item.source_id,
                "protectionStatus": if item.health_error.is_some() { "Unhealthy" } else { "Healthy" },
                "protectionState": item.protection_state,
                "healthStatus": health,
                "healthDetails": details,
                "lastBackupStatus": item.last_backup_status.clone().unwrap_or_default(),
                "lastBackupTime": item.last_backup_time.map(ts),
                "protectedItemDataId": ade_backup_shared::ids::deterministic_uuid(&["pidata", &lc(&item.source_id)]).as_u128() as u64 % 1_000_000_000_000,
                "protectedItemType": "Microsoft.Compute/virtualMachines",
                "backupManagementType": "AzureIaasVM",
                "workloadType": "VM",
                "containerName": item.container.split_once(';').map(|(_, c)| c.to_string()).unwrap_or_default(),
                "sourceResourceId": item.source_id,
                // A stopped item has no policy: Azure reports `policyId` "" (the value az cli
                // sends to stop protection, see routes/recovery_services.rs).
                "policyId": item.policy.as_ref().map(|p| format!("{vault_id}/backupPolicies/{p}")).unwrap_or_default(),
                "policyName": item.policy.clone().unwrap_or_default(),
                "lastRecoveryPoint": last_rp.map(ts),
                "isScheduledForDeferredDelete": false,
                "extendedInfo": {
                    "oldestRecoveryPoint": oldest_rp.map(ts),
                    "recoveryPointCount": item.recovery_points.len(),
                    "policyInconsistent": false
                },
                "extendedProperties": extended_properties(item)
            }
        })
    }

    /// When `rp` expires under the item's policy: a Sunday point of a policy with weekly
    /// retention lives `weekly_weeks` weeks, any other point `daily_days` days. `None` once
    /// protection is stopped (retained data never expires) or the policy is unknown.
    pub fn recovery_point_expiry(
        &self,
        item: &ProtectedItem,
        rp: &RecoveryPoint,
    ) -> Option<DateTime<Utc>> {
        let policy = self
            .rs_vaults
            .get(&item.vault_key)?
            .policies
            .get(&lc(item.policy.as_deref()?))?;
        let daily = Duration::days(i64::from(policy.retention.daily_days));
        let weekly = policy
            .retention
            .weekly_weeks
            .filter(|_| rp.time.weekday() == chrono::Weekday::Sun)
            .map(|w| Duration::weeks(i64::from(w)));
        Some(rp.time + weekly.map_or(daily, |w| w.max(daily)))
    }

    pub fn recovery_point_json(
        &self,
        item: &ProtectedItem,
        rp: &RecoveryPoint,
        now: DateTime<Utc>,
    ) -> Value {
        let tiers = self.tier_details(rp, now);
        let mut props = json!({
            "objectType": "IaasVMRecoveryPoint",
            "recoveryPointType": "CrashConsistent",
            "recoveryPointTime": ts(rp.time),
            "recoveryPointAdditionalInfo": "",
            "sourceVMStorageType": "NormalStorage",
            "isSourceVMEncrypted": rp.encryption.is_some(),
            "isInstantIlrSessionActive": false,
            "recoveryPointTierDetails": tiers,
            "isManagedVirtualMachine": true,
            "virtualMachineSize": rp.vm_size,
            "originalStorageAccountOption": false,
            "osType": rp.os_type.as_str(),
            "securityType": "None",
            "isPrivateAccessEnabledOnAnyDisk": false
        });
        if let Some(expiry) = self.recovery_point_expiry(item, rp) {
            props["recoveryPointProperties"] =
                json!({"expiryTime": ts(expiry), "isSoftDeleted": false});
        }
        if let Some(e) = &rp.encryption {
            let mut kas = json!({
                "bekDetails": {"secretUrl": e.secret_url, "secretVaultId": e.key_vault_id, "secretData": "<redacted>"},
                "encryptionVersion": "v2"
            });
            if let (Some(k), Some(kv)) = (&e.kek_url, &e.kek_vault_id) {
                kas["kekDetails"] =
                    json!({"keyUrl": k, "keyVaultId": kv, "keyBackupData": "<redacted>"});
            }
            props["keyAndSecret"] = kas;
        }
        json!({
            "id": format!("{}/recoveryPoints/{}", self.protected_item_id(item), rp.name),
            "name": rp.name,
            "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectedItems/recoveryPoints",
            "properties": props
        })
    }
}
