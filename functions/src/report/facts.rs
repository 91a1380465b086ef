//! The ARM facts the state documents do not hold, gathered by the sweep after its run and kept
//! in `reports/facts.json` so a report built later from the state alone (`ade-backup report` on a
//! state directory) needs no Azure: each VM's region, size and disk count (Resource Graph, one
//! query page per 1,000 VMs), whether its size supports encryption at host in its region (the
//! Resource SKUs API's `EncryptionAtHostSupported` and `NotAvailableForSubscription` restrictions,
//! one call per subscription and region), each subscription's `EncryptionAtHost` feature
//! registration ([`super::readiness`]), each backup policy's RPO and longest retention (one GET
//! per distinct policy) and every recovery point of each protected VM
//! ([`super::recovery_points`]).

use super::recovery_points::VmRecoveryPoints;
use crate::context::Context;
use crate::records::VmRecord;
use ade_backup_shared::arm::{
    queries, ArmClient, ArmError, BackupPolicy, FeatureState, SubscriptionId,
};
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub const FACTS_KEY: &str = "reports/facts.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetFacts {
    pub gathered_at: Option<DateTime<Utc>>,
    /// By VM resource id, lower-cased.
    #[serde(default)]
    pub vms: BTreeMap<String, VmFacts>,
    /// By backup policy resource id, lower-cased.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyFacts>,
    /// By VM resource id, lower-cased: the VM's recovery points as the sweep listed them.
    #[serde(default)]
    pub recovery_points: BTreeMap<String, VmRecoveryPoints>,
    /// By subscription id, lower-cased: `Microsoft.Compute/EncryptionAtHost` registration.
    #[serde(default)]
    pub encryption_at_host_feature: BTreeMap<String, FeatureState>,
    /// What could not be read (the report shows these gaps instead of guessing).
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmFacts {
    pub location: String,
    pub size: String,
    pub disks: u64,
    /// `EncryptionAtHostSupported` of the size in the VM's region; `None`: ARM did not say.
    pub encryption_at_host_supported: Option<bool>,
    /// The size is `NotAvailableForSubscription` in the VM's region; `None`: ARM did not say.
    #[serde(default)]
    pub size_restricted: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyFacts {
    pub rpo_hours: Option<i64>,
    /// The longest retention of any schedule (daily, weekly, monthly, yearly), in days.
    pub longest_retention_days: Option<i64>,
}

impl FleetFacts {
    pub fn vm(&self, id: &str) -> Option<&VmFacts> {
        self.vms.get(&id.to_ascii_lowercase())
    }
    pub fn policy(&self, id: &str) -> Option<&PolicyFacts> {
        self.policies.get(&id.to_ascii_lowercase())
    }
    pub fn recovery_points(&self, vm_id: &str) -> Option<&VmRecoveryPoints> {
        self.recovery_points.get(&vm_id.to_ascii_lowercase())
    }
    /// The `EncryptionAtHost` registration of the VM's subscription.
    pub fn feature_of(&self, vm_id: &str) -> Option<FeatureState> {
        let sub = super::readiness::subscription_of(vm_id)?;
        self.encryption_at_host_feature.get(&sub).copied()
    }
}

/// The longest `retentionDuration` of a policy's retention schedules, in days.
pub fn longest_retention_days(policy: &BackupPolicy) -> Option<i64> {
    let r = policy.properties.retention_policy.as_ref()?;
    [
        "dailySchedule",
        "weeklySchedule",
        "monthlySchedule",
        "yearlySchedule",
    ]
    .iter()
    .filter_map(|s| r.get(*s)?.get("retentionDuration"))
    .filter_map(|d| {
        let count = d.get("count")?.as_i64()?;
        let days = match d
            .get("durationType")?
            .as_str()?
            .to_ascii_lowercase()
            .as_str()
        {
            "days" => 1,
            "weeks" => 7,
            "months" => 31,
            "years" => 366,
            _ => return None,
        };
        Some(count.saturating_mul(days))
    })
    .max()
}

fn vm_query() -> String {
    format!(
        "{} | project id, location, vmSize = properties.hardwareProfile.vmSize, storageProfile = properties.storageProfile",
        queries::VIRTUAL_MACHINES
    )
}

/// One VM row of the query → (lower-cased id, facts without the SKU answer).
fn vm_row(row: &Value) -> Option<(String, VmFacts)> {
    let id = row.get("id")?.as_str()?.to_ascii_lowercase();
    let storage = row.get("storageProfile");
    let data = storage
        .and_then(|s| s.get("dataDisks"))
        .and_then(Value::as_array)
        .map_or(0, |a| a.len() as u64);
    let os = u64::from(storage.and_then(|s| s.get("osDisk")).is_some());
    Some((
        id,
        VmFacts {
            location: row.get("location")?.as_str()?.to_ascii_lowercase(),
            size: row.get("vmSize").and_then(Value::as_str)?.to_string(),
            disks: os + data,
            encryption_at_host_supported: None,
            size_restricted: None,
        },
    ))
}

/// Gathers the facts for the VMs the records name (see the module doc for the calls).
/// `previous` is what the last sweep kept (recovery points are reused from it while a VM's
/// latest point is unchanged: [`super::recovery_points::gather`]).
pub async fn gather(ctx: &Context, records: &[VmRecord], previous: &FleetFacts) -> FleetFacts {
    let mut facts = FleetFacts {
        gathered_at: Some(ctx.clock.now()),
        ..FleetFacts::default()
    };
    let wanted: BTreeSet<String> = records
        .iter()
        .map(|r| r.vm_id.canonical().to_ascii_lowercase())
        .collect();
    for scope in crate::workflows::sweep::configured_scopes(ctx) {
        match ctx.arm.resource_graph_query(&scope, &vm_query()).await {
            Ok(rows) => facts.vms.extend(
                rows.iter()
                    .filter_map(vm_row)
                    .filter(|(id, _)| wanted.contains(id)),
            ),
            Err(e) => facts
                .warnings
                .push(format!("VM sizes and regions could not be read: {e}")),
        }
    }
    host_encryption(&ctx.arm, &mut facts).await;
    super::readiness::gather_features(&ctx.arm, &mut facts).await;
    policies(&ctx.arm, records, &mut facts).await;
    super::recovery_points::gather(&ctx.arm, records, previous, &mut facts).await;
    facts
}

/// `EncryptionAtHostSupported` and the subscription's restriction per VM, from one SKU list per
/// (subscription, region).
async fn host_encryption(arm: &ArmClient, facts: &mut FleetFacts) {
    let mut pairs: BTreeSet<(String, String)> = BTreeSet::new();
    for (id, vm) in &facts.vms {
        if let Some(sub) = ResourceId::parse(id)
            .ok()
            .map(|r| r.subscription().to_string())
        {
            pairs.insert((sub, vm.location.clone()));
        }
    }
    // (subscription, region) → size (lower-cased) → (supported, restricted)
    type Sizes = BTreeMap<String, (Option<bool>, bool)>;
    let mut answers: BTreeMap<(String, String), Sizes> = BTreeMap::new();
    for (sub, location) in pairs {
        let Ok(sub_id) = sub.parse::<uuid::Uuid>().map(SubscriptionId::from_uuid) else {
            continue;
        };
        match arm.list_resource_skus(sub_id, &location).await {
            Ok(skus) => {
                let sizes = skus
                    .iter()
                    .filter(|s| s.is_virtual_machine())
                    .filter_map(|s| {
                        let name = s.name.as_deref()?.to_ascii_lowercase();
                        Some((
                            name,
                            (s.encryption_at_host_supported(), s.restricted_in(&location)),
                        ))
                    })
                    .collect();
                answers.insert((sub, location), sizes);
            }
            Err(e) => facts.warnings.push(format!(
                "VM sizes of {location} could not be read (subscription {sub}): {e}"
            )),
        }
    }
    for (id, vm) in facts.vms.iter_mut() {
        let sub = ResourceId::parse(id)
            .map(|r| r.subscription().to_string())
            .unwrap_or_default();
        let answer = answers
            .get(&(sub, vm.location.clone()))
            .and_then(|sizes| sizes.get(&vm.size.to_ascii_lowercase()).copied());
        vm.encryption_at_host_supported = answer.and_then(|(supported, _)| supported);
        vm.size_restricted = answer.map(|(_, restricted)| restricted);
    }
}

/// RPO and longest retention of every policy the records name (one GET each).
async fn policies(arm: &ArmClient, records: &[VmRecord], facts: &mut FleetFacts) {
    let ids: BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.azure.policy_id.clone())
        .collect();
    for id in ids {
        let Ok(rid) = ResourceId::parse(&id) else {
            facts
                .warnings
                .push(format!("policy id {id:?} is not a resource id"));
            continue;
        };
        let answer: Result<BackupPolicy, ArmError> = arm.get_backup_policy(&rid).await;
        match answer {
            Ok(p) => {
                facts.policies.insert(
                    id.to_ascii_lowercase(),
                    PolicyFacts {
                        rpo_hours: p.rpo().map(|d| d.num_hours()),
                        longest_retention_days: longest_retention_days(&p),
                    },
                );
            }
            Err(e) => facts
                .warnings
                .push(format!("backup policy {id} could not be read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_retention_takes_the_longest_schedule() {
        let p: BackupPolicy = serde_json::from_value(serde_json::json!({
            "properties": {"retentionPolicy": {
                "retentionPolicyType": "LongTermRetentionPolicy",
                "dailySchedule": {"retentionDuration": {"count": 30, "durationType": "Days"}},
                "weeklySchedule": {"retentionDuration": {"count": 104, "durationType": "Weeks"}}
            }}
        }))
        .expect("policy");
        assert_eq!(longest_retention_days(&p), Some(728));
        assert_eq!(longest_retention_days(&BackupPolicy::default()), None);
    }

    #[test]
    fn a_vm_row_counts_os_and_data_disks() {
        let row = serde_json::json!({"id": "/subscriptions/S/resourceGroups/R/providers/Microsoft.Compute/virtualMachines/V", "location": "WestEurope", "vmSize": "Standard_A2_v2", "storageProfile": {"osDisk": {}, "dataDisks": [{}, {}]}});
        let (id, f) = vm_row(&row).expect("row");
        assert!(id.ends_with("virtualmachines/v"));
        assert_eq!((f.location.as_str(), f.disks), ("westeurope", 3));
        assert!(vm_row(&serde_json::json!({"id": "x"})).is_none());
    }
}
