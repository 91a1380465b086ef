//! The fleet reconciliation plan: desired state vs actual state, per ADE VM, and only the work
//! needed. Pure: discovery feeds it, the `PolicySweep` handler fans out what it decides, and
//! `ade-backup sweep --dry-run` prints it.

use super::ade::AdeState;
use super::rules::{ProtectionRules, Selection, VmFacts};
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Error codes that mean "Azure Backup lost its Key Vault access".
pub const KEY_VAULT_PERMISSION_ERRORS: [&str; 2] = [
    "UserErrorKeyVaultPermissionsNotConfigured",
    "UserErrorKeyVaultPermissionsNotConfiguredForBackup",
];

/// Whether a `protectionState` means protection was stopped (`ProtectionStopped`, with or
/// without its data): the workflow enables protection again instead of keeping the item.
pub fn protection_stopped(state: &str) -> bool {
    state.to_ascii_lowercase().contains("stopped")
}

#[derive(Debug, Clone)]
pub struct FleetVm {
    pub id: ResourceId,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub ade: AdeState,
    /// Restore-limit warnings of the VM's disks (`ade::restore_limit_warnings`).
    pub restore_warnings: Vec<String>,
}

/// A protected item as Azure reports it (Resource Graph or list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectedItemView {
    pub vm_id: ResourceId,
    pub vault_id: ResourceId,
    /// Policy name (last segment of `policyId`), if any.
    pub policy: Option<String>,
    /// `protectionState`: Protected, IRPending, ProtectionStopped, ProtectionError, ProtectionPaused.
    pub protection_state: String,
    /// `lastBackupStatus`: Healthy/Completed, Failed, ...
    pub last_backup_status: Option<String>,
    pub last_backup_error_code: Option<String>,
    pub last_recovery_point: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Grant the Backup Management Service access to the VM's Key Vault(s).
    GrantAccess,
    /// Enable (or resume) protection, then take a first backup.
    Protect,
    /// Take a backup now (stale recovery point or failed last job).
    BackupNow,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Drift {
    Unprotected,
    KeyVaultAccessRemoved { key_vault: String },
    ProtectionStopped { state: String },
    PolicyChanged { expected: String, actual: String },
    RecoveryPointStale { age_hours: i64, rpo_hours: i64 },
    NoRecoveryPoint,
    LastJobFailed { code: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmPlan {
    pub vm_id: ResourceId,
    pub actions: Vec<Action>,
    pub drift: Vec<Drift>,
    /// Set when a human must act (unsupported configuration, no rule).
    pub needs_human: Option<String>,
    /// Work already in flight for the VM (an open operation): nothing new is sent.
    pub in_flight: bool,
    pub target: Option<Selection>,
}

#[derive(Debug, Clone, Default)]
pub struct SweepInputs<'a> {
    pub vms: &'a [FleetVm],
    pub protected_items: &'a [ProtectedItemView],
    /// Key Vaults (canonical id) where the Backup Management Service's access is in place.
    pub key_vaults_with_access: HashSet<String>,
    /// RPO per (vault canonical id, policy name lower-case).
    pub rpo: HashMap<(String, String), Duration>,
    /// VMs (canonical id) with an open operation.
    pub open_operations: HashSet<String>,
    pub now: Option<DateTime<Utc>>,
}

/// Grace on top of the RPO before a recovery point counts as stale (a daily backup window can
/// start late; Azure Backup itself schedules within a window).
pub fn stale_grace(rpo: Duration) -> Duration {
    std::cmp::max(Duration::hours(2), rpo / 4)
}

pub fn plan(rules: &ProtectionRules, inputs: &SweepInputs<'_>) -> Vec<VmPlan> {
    let now = inputs.now.unwrap_or_else(Utc::now);
    let items: HashMap<String, &ProtectedItemView> = inputs
        .protected_items
        .iter()
        .map(|p| (p.vm_id.canonical(), p))
        .collect();
    let mut out = Vec::new();
    for vm in inputs.vms {
        let settings = match &vm.ade {
            AdeState::NotEncrypted { .. } | AdeState::InProgress { .. } => continue,
            AdeState::Unsupported { code, message } => {
                out.push(VmPlan {
                    vm_id: vm.id.clone(),
                    actions: vec![],
                    drift: vec![],
                    needs_human: Some(format!("unsupported: {code}: {message}")),
                    in_flight: false,
                    target: None,
                });
                continue;
            }
            AdeState::Encrypted { settings, .. } => settings,
        };
        let target = rules.select(&VmFacts {
            id: &vm.id,
            location: &vm.location,
            tags: &vm.tags,
        });
        let mut p = VmPlan {
            vm_id: vm.id.clone(),
            actions: vec![],
            drift: vec![],
            needs_human: None,
            in_flight: inputs.open_operations.contains(&vm.id.canonical()),
            target: target.clone(),
        };
        let mut vaults = vec![settings.key_vault_resource_id.canonical()];
        if let Some(k) = &settings.kek_vault_resource_id {
            if !vaults.contains(&k.canonical()) {
                vaults.push(k.canonical());
            }
        }
        let access_missing: Vec<String> = vaults
            .into_iter()
            .filter(|v| !inputs.key_vaults_with_access.contains(v))
            .collect();
        match items.get(&vm.id.canonical()) {
            None => {
                p.drift.push(Drift::Unprotected);
                if target.is_none() {
                    p.needs_human = Some(
                        "no protection rule matches this VM and there is no default; add a rule"
                            .to_string(),
                    );
                } else {
                    if !access_missing.is_empty() {
                        p.actions.push(Action::GrantAccess);
                    }
                    p.actions.push(Action::Protect);
                }
            }
            Some(item) => {
                for kv in &access_missing {
                    p.drift.push(Drift::KeyVaultAccessRemoved {
                        key_vault: kv.clone(),
                    });
                }
                if !access_missing.is_empty() {
                    p.actions.push(Action::GrantAccess);
                }
                let state = item.protection_state.to_ascii_lowercase();
                let stopped = state.contains("stopped") || state.contains("paused");
                if stopped {
                    p.drift.push(Drift::ProtectionStopped {
                        state: item.protection_state.clone(),
                    });
                    p.actions.push(Action::Protect);
                }
                if let (Some(sel), Some(actual)) = (&target, &item.policy) {
                    if !sel.target.policy.eq_ignore_ascii_case(actual) {
                        // Kept as is (an owner may have chosen it); reported.
                        p.drift.push(Drift::PolicyChanged {
                            expected: sel.target.policy.clone(),
                            actual: actual.clone(),
                        });
                    }
                }
                let failed_code = item
                    .last_backup_status
                    .as_deref()
                    .filter(|s| {
                        s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Unhealthy")
                    })
                    .map(|_| {
                        item.last_backup_error_code
                            .clone()
                            .unwrap_or_else(|| "Unknown".to_string())
                    });
                if let Some(code) = &failed_code {
                    p.drift.push(Drift::LastJobFailed { code: code.clone() });
                    if KEY_VAULT_PERMISSION_ERRORS
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(code))
                        && !p.actions.contains(&Action::GrantAccess)
                    {
                        p.actions.push(Action::GrantAccess);
                    }
                }
                let rpo = item.policy.as_ref().and_then(|pol| {
                    inputs
                        .rpo
                        .get(&(item.vault_id.canonical(), pol.to_ascii_lowercase()))
                        .copied()
                });
                let rpo = rpo.unwrap_or_else(|| Duration::hours(24));
                if !stopped {
                    match item.last_recovery_point {
                        None => {
                            if !state.contains("irpending") {
                                p.drift.push(Drift::NoRecoveryPoint);
                                p.actions.push(Action::BackupNow);
                            }
                        }
                        Some(t) if now - t > rpo + stale_grace(rpo) => {
                            p.drift.push(Drift::RecoveryPointStale {
                                age_hours: (now - t).num_hours(),
                                rpo_hours: rpo.num_hours(),
                            });
                            p.actions.push(Action::BackupNow);
                        }
                        Some(_) => {
                            if failed_code.is_some() {
                                p.actions.push(Action::BackupNow);
                            }
                        }
                    }
                }
            }
        }
        p.actions.sort();
        p.actions.dedup();
        if p.in_flight {
            p.actions.clear();
        }
        if !p.actions.is_empty() || !p.drift.is_empty() || p.needs_human.is_some() {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ade::{AdeSettings, OsType};
    use crate::domain::kv_access::KeyMode;

    const S: &str = "00000000-0000-0000-0000-000000000001";

    fn kv() -> ResourceId {
        ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv1"
        ))
        .expect("kv")
    }
    fn vault() -> ResourceId {
        ResourceId::parse(&format!("/subscriptions/{S}/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv")).expect("rsv")
    }
    fn vm(name: &str) -> FleetVm {
        FleetVm {
            id: ResourceId::parse(&format!("/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}")).expect("vm"),
            location: "westeurope".into(),
            tags: BTreeMap::new(),
            ade: AdeState::Encrypted {
                mode: KeyMode::BekOnly,
                settings: Box::new(AdeSettings {
                    os_type: OsType::Linux,
                    extension_name: "AzureDiskEncryptionForLinux".into(),
                    extension_type: "AzureDiskEncryptionForLinux".into(),
                    type_handler_version: None,
                    key_vault_url: "https://kv1.vault.azure.net/".into(),
                    key_vault_resource_id: kv(),
                    key_encryption_key_url: None,
                    kek_vault_resource_id: None,
                    key_encryption_algorithm: None,
                    volume_type: None,
                }),
            },
            restore_warnings: vec![],
        }
    }
    fn rules() -> ProtectionRules {
        ProtectionRules::from_json(&format!(
            r#"{{"default": {{"vaultId": "{}", "policy": "DefaultPolicy"}}}}"#,
            vault()
        ))
        .expect("rules")
    }
    fn item(v: &FleetVm, rp_age_h: Option<i64>, now: DateTime<Utc>) -> ProtectedItemView {
        ProtectedItemView {
            vm_id: v.id.clone(),
            vault_id: vault(),
            policy: Some("DefaultPolicy".into()),
            protection_state: "Protected".into(),
            last_backup_status: Some("Healthy".into()),
            last_backup_error_code: None,
            last_recovery_point: rp_age_h.map(|h| now - Duration::hours(h)),
        }
    }

    #[test]
    fn healthy_fleet_needs_nothing() {
        let now = Utc::now();
        let vms = vec![vm("a"), vm("b")];
        let items: Vec<_> = vms.iter().map(|v| item(v, Some(3), now)).collect();
        let inputs = SweepInputs {
            vms: &vms,
            protected_items: &items,
            key_vaults_with_access: [kv().canonical()].into_iter().collect(),
            now: Some(now),
            ..Default::default()
        };
        assert!(plan(&rules(), &inputs).is_empty());
    }

    #[test]
    fn each_drift_gets_its_action() {
        let now = Utc::now();
        let vms = vec![
            vm("unprotected"),
            vm("stale"),
            vm("stopped"),
            vm("kvfail"),
            vm("busy"),
        ];
        let mut stopped = item(&vms[2], Some(1), now);
        stopped.protection_state = "ProtectionStopped".into();
        let mut kvfail = item(&vms[3], Some(1), now);
        kvfail.last_backup_status = Some("Failed".into());
        kvfail.last_backup_error_code = Some("UserErrorKeyVaultPermissionsNotConfigured".into());
        let items = vec![item(&vms[1], Some(50), now), stopped, kvfail];
        let inputs = SweepInputs {
            vms: &vms,
            protected_items: &items,
            key_vaults_with_access: [kv().canonical()].into_iter().collect(),
            open_operations: [vms[4].id.canonical()].into_iter().collect(),
            now: Some(now),
            ..Default::default()
        };
        let plans = plan(&rules(), &inputs);
        let by = |n: &str| plans.iter().find(|p| p.vm_id.name() == n).expect(n);
        assert_eq!(by("unprotected").actions, vec![Action::Protect]);
        assert_eq!(by("stale").actions, vec![Action::BackupNow]);
        assert!(matches!(
            by("stale").drift[0],
            Drift::RecoveryPointStale { .. }
        ));
        assert_eq!(by("stopped").actions, vec![Action::Protect]);
        assert_eq!(
            by("kvfail").actions,
            vec![Action::GrantAccess, Action::BackupNow]
        );
        assert!(by("busy").in_flight && by("busy").actions.is_empty());
    }

    #[test]
    fn removed_access_is_drift_and_repaired() {
        let now = Utc::now();
        let vms = vec![vm("a")];
        let items = vec![item(&vms[0], Some(1), now)];
        let inputs = SweepInputs {
            vms: &vms,
            protected_items: &items,
            now: Some(now),
            ..Default::default()
        };
        let plans = plan(&rules(), &inputs);
        assert_eq!(plans[0].actions, vec![Action::GrantAccess]);
        assert!(matches!(
            plans[0].drift[0],
            Drift::KeyVaultAccessRemoved { .. }
        ));
    }

    #[test]
    fn no_rule_needs_a_human() {
        let vms = vec![vm("a")];
        let inputs = SweepInputs {
            vms: &vms,
            ..Default::default()
        };
        let plans = plan(&ProtectionRules::default(), &inputs);
        assert!(plans[0].needs_human.is_some() && plans[0].actions.is_empty());
    }
}
