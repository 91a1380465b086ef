//! The fleet reconciliation plan: desired state vs actual state, per ADE VM, and only the work
//! needed. Pure: discovery feeds it, the `PolicySweep` handler fans out what it decides, and
//! `ade-backup sweep --dry-run` prints it.

use super::ade::{AdeSettings, AdeState};
use super::rules::{ProtectionRules, Selection, VmFacts};
use ade_backup_shared::arm::DiskExclusionProperties;
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Error codes that mean "Azure Backup lost its Key Vault access".
pub const KEY_VAULT_PERMISSION_ERRORS: [&str; 2] = [
    "UserErrorKeyVaultPermissionsNotConfigured",
    "UserErrorKeyVaultPermissionsNotConfiguredForBackup",
];

/// Why no backup of an ADE VM can succeed when its last job failed with `code`: the
/// key-encryption key belongs to a certificate (`UserErrorKekFromCertificateNotSupported`), which
/// Azure Backup does not support. Retrying would only spend the item's daily on-demand backups.
pub fn kek_certificate_failure(code: &str) -> bool {
    code.to_ascii_lowercase().contains("certificate")
}

/// What a human must do about [`kek_certificate_failure`].
pub const KEK_CERTIFICATE_FIX: &str = "the key-encryption key belongs to a certificate; Azure Backup supports only standalone keys for ADE VMs. Re-encrypt the VM with a standalone Key Vault key.";

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
    /// `extendedProperties.diskExclusionProperties` when it leaves data disks out (selective
    /// disk backup, which Azure Backup refuses for ADE VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_exclusion: Option<DiskExclusionProperties>,
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
    KeyVaultAccessRemoved {
        key_vault: String,
    },
    ProtectionStopped {
        state: String,
    },
    PolicyChanged {
        expected: String,
        actual: String,
    },
    RecoveryPointStale {
        age_hours: i64,
        rpo_hours: i64,
    },
    NoRecoveryPoint,
    LastJobFailed {
        code: String,
    },
    /// The protected item leaves data disks out: every backup of an ADE VM fails with
    /// `UserErrorEncryptedVmNotSupportedWithDiskEx`. Repaired by protecting it again with every
    /// disk.
    DiskExclusionOnAde {
        luns: Vec<i64>,
        inclusion_list: bool,
    },
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

/// The plan for the fleet: one [`VmPlan`] per ADE VM that has drift, work to do, or needs a
/// human; healthy VMs, VMs without ADE and VMs still encrypting are left out.
pub fn plan(rules: &ProtectionRules, inputs: &SweepInputs<'_>) -> Vec<VmPlan> {
    let mut plans = Vec::new();
    plan_each(rules, inputs, |p| plans.push(p));
    plans
}

/// [`plan`], each VM's plan handed to `f` as it is made (none of them kept): what the dry run
/// streams out.
pub fn plan_each(rules: &ProtectionRules, inputs: &SweepInputs<'_>, mut f: impl FnMut(VmPlan)) {
    let now = inputs.now.unwrap_or_else(Utc::now);
    let items: HashMap<String, &ProtectedItemView> = inputs
        .protected_items
        .iter()
        .map(|p| (p.vm_id.canonical(), p))
        .collect();
    for vm in inputs.vms {
        if let Some(p) = plan_vm(rules, inputs, &items, vm, now) {
            f(p);
        }
    }
}

/// One VM: its ADE state decides whether it is planned at all, then the plan of an unprotected
/// or a protected VM. `None` when there is nothing to report.
fn plan_vm(
    rules: &ProtectionRules,
    inputs: &SweepInputs<'_>,
    items: &HashMap<String, &ProtectedItemView>,
    vm: &FleetVm,
    now: DateTime<Utc>,
) -> Option<VmPlan> {
    let settings = match &vm.ade {
        AdeState::NotEncrypted { .. } | AdeState::InProgress { .. } => return None,
        AdeState::Unsupported { code, message } => {
            return Some(VmPlan {
                vm_id: vm.id.clone(),
                actions: vec![],
                drift: vec![],
                needs_human: Some(format!("unsupported: {code}: {message}")),
                in_flight: false,
                target: None,
            });
        }
        AdeState::Encrypted { settings, .. } => settings,
    };
    let mut p = VmPlan {
        vm_id: vm.id.clone(),
        actions: vec![],
        drift: vec![],
        needs_human: None,
        in_flight: inputs.open_operations.contains(&vm.id.canonical()),
        target: rules.select(&VmFacts {
            id: &vm.id,
            location: &vm.location,
            tags: &vm.tags,
        }),
    };
    let access_missing = missing_key_vault_access(settings, &inputs.key_vaults_with_access);
    match items.get(&vm.id.canonical()) {
        None => plan_unprotected(&mut p, &access_missing),
        Some(item) => plan_protected(&mut p, item, &access_missing, &inputs.rpo, now),
    }
    p.actions.sort();
    p.actions.dedup();
    if p.in_flight {
        p.actions.clear();
    }
    let worth_reporting = !p.actions.is_empty() || !p.drift.is_empty() || p.needs_human.is_some();
    worth_reporting.then_some(p)
}

/// The Key Vaults (canonical ids: the BEK vault, then the KEK vault when it differs) where the
/// Backup Management Service's access is not in place.
fn missing_key_vault_access(settings: &AdeSettings, with_access: &HashSet<String>) -> Vec<String> {
    let mut vaults = vec![settings.key_vault_resource_id.canonical()];
    if let Some(k) = &settings.kek_vault_resource_id {
        if !vaults.contains(&k.canonical()) {
            vaults.push(k.canonical());
        }
    }
    vaults
        .into_iter()
        .filter(|v| !with_access.contains(v))
        .collect()
}

/// Not protected: protect it (granting Key Vault access first when missing), or ask a human when
/// no rule says where.
fn plan_unprotected(p: &mut VmPlan, access_missing: &[String]) {
    p.drift.push(Drift::Unprotected);
    if p.target.is_none() {
        p.needs_human = Some(
            "no protection rule matches this VM and there is no default; add a rule".to_string(),
        );
    } else {
        if !access_missing.is_empty() {
            p.actions.push(Action::GrantAccess);
        }
        p.actions.push(Action::Protect);
    }
}

/// Protected: Key Vault access, stopped protection, policy, the last job, then recovery point
/// freshness (only while protection runs).
fn plan_protected(
    p: &mut VmPlan,
    item: &ProtectedItemView,
    access_missing: &[String],
    rpo: &HashMap<(String, String), Duration>,
    now: DateTime<Utc>,
) {
    for kv in access_missing {
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
    policy_drift(p, item);
    if let Some(sel) = &item.disk_exclusion {
        p.drift.push(Drift::DiskExclusionOnAde {
            luns: sel.disk_lun_list.clone(),
            inclusion_list: sel.is_inclusion_list == Some(true),
        });
        p.actions.push(Action::Protect);
    }
    let failed_code = failed_backup_code(item);
    if let Some(code) = &failed_code {
        p.drift.push(Drift::LastJobFailed { code: code.clone() });
        if kek_certificate_failure(code) {
            // No backup can succeed until the VM is re-encrypted; a backup now would only use up
            // the item's on-demand backups of the day.
            p.needs_human = Some(format!(
                "unsupported: kek-certificate: {KEK_CERTIFICATE_FIX} (Azure: {code})"
            ));
            return;
        }
        if KEY_VAULT_PERMISSION_ERRORS
            .iter()
            .any(|c| c.eq_ignore_ascii_case(code))
            && !p.actions.contains(&Action::GrantAccess)
        {
            p.actions.push(Action::GrantAccess);
        }
    }
    if !stopped {
        let rpo = item_rpo(item, rpo);
        freshness(p, item, &state, failed_code.is_some(), rpo, now);
    }
}

/// A policy other than the rule's is kept as is (an owner may have chosen it) and reported.
fn policy_drift(p: &mut VmPlan, item: &ProtectedItemView) {
    if let (Some(sel), Some(actual)) = (&p.target, &item.policy) {
        if !sel.target.policy.eq_ignore_ascii_case(actual) {
            let expected = sel.target.policy.clone();
            p.drift.push(Drift::PolicyChanged {
                expected,
                actual: actual.clone(),
            });
        }
    }
}

/// The error code of a failed (or unhealthy) last backup, `Unknown` when Azure gave none.
fn failed_backup_code(item: &ProtectedItemView) -> Option<String> {
    item.last_backup_status
        .as_deref()
        .filter(|s| s.eq_ignore_ascii_case("Failed") || s.eq_ignore_ascii_case("Unhealthy"))
        .map(|_| {
            item.last_backup_error_code
                .clone()
                .unwrap_or_else(|| "Unknown".to_string())
        })
}

/// The item's RPO from its (vault, policy), 24 hours when unknown.
fn item_rpo(item: &ProtectedItemView, rpo: &HashMap<(String, String), Duration>) -> Duration {
    item.policy
        .as_ref()
        .and_then(|pol| {
            rpo.get(&(item.vault_id.canonical(), pol.to_ascii_lowercase()))
                .copied()
        })
        .unwrap_or_else(|| Duration::hours(24))
}

/// Recovery point freshness: none yet (unless the first backup is pending), older than the RPO
/// plus grace, or fresh but the last job failed: each means a backup now.
fn freshness(
    p: &mut VmPlan,
    item: &ProtectedItemView,
    state: &str,
    last_job_failed: bool,
    rpo: Duration,
    now: DateTime<Utc>,
) {
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
            if last_job_failed {
                p.actions.push(Action::BackupNow);
            }
        }
    }
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
                    dual_pass: false,
                    aad_client_id: None,
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
            disk_exclusion: None,
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
    fn every_rule_of_the_plan_in_one_fleet() {
        let now = Utc::now();
        let kv2 = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv2"
        ))
        .expect("kv2");
        let with_kek = |name: &str| {
            let mut v = vm(name);
            if let AdeState::Encrypted { settings, .. } = &mut v.ade {
                settings.kek_vault_resource_id = Some(kv2.clone());
            }
            v
        };
        let mut unsupported = vm("unsupported");
        unsupported.ade = AdeState::Unsupported {
            code: "kek-certificate".into(),
            message: "m".into(),
        };
        let mut plain = vm("plain");
        plain.ade = AdeState::NotEncrypted { why: "none".into() };
        let vms = vec![
            vm("policy"),
            vm("irpending"),
            vm("norp"),
            vm("failed"),
            vm("unhealthy"),
            vm("paused"),
            vm("hourly"),
            with_kek("kek"),
            unsupported,
            plain,
            with_kek("new-kek"),
        ];
        let mut items: Vec<_> = vms[..8].iter().map(|v| item(v, Some(1), now)).collect();
        items[0].policy = Some("OtherPolicy".into());
        items[1].protection_state = "IRPending".into();
        items[1].last_recovery_point = None;
        items[2].last_recovery_point = None;
        items[3].last_backup_status = Some("Failed".into());
        items[3].last_backup_error_code = Some("SomeError".into());
        items[4].last_backup_status = Some("Unhealthy".into());
        items[5].protection_state = "ProtectionPaused".into();
        items[5].last_recovery_point = Some(now - Duration::hours(100));
        items[6].last_recovery_point = Some(now - Duration::hours(7));
        let inputs = SweepInputs {
            vms: &vms,
            protected_items: &items,
            key_vaults_with_access: [kv().canonical()].into_iter().collect(),
            rpo: [(
                (vault().canonical(), "defaultpolicy".to_string()),
                Duration::hours(4),
            )]
            .into_iter()
            .collect(),
            now: Some(now),
            ..Default::default()
        };
        let got: Vec<_> = plan(&rules(), &inputs)
            .into_iter()
            .map(|p| {
                (
                    p.vm_id.name().to_string(),
                    p.actions,
                    p.drift,
                    p.needs_human,
                )
            })
            .collect();
        use Action::*;
        let failed = |code: &str| Drift::LastJobFailed { code: code.into() };
        let policy = Drift::PolicyChanged {
            expected: "DefaultPolicy".into(),
            actual: "OtherPolicy".into(),
        };
        let paused = Drift::ProtectionStopped {
            state: "ProtectionPaused".into(),
        };
        let stale = Drift::RecoveryPointStale {
            age_hours: 7,
            rpo_hours: 4,
        };
        let kek_access = Drift::KeyVaultAccessRemoved {
            key_vault: kv2.canonical(),
        };
        let row = |name: &str, actions: Vec<Action>, drift: Vec<Drift>| {
            (name.to_string(), actions, drift, None)
        };
        let human = Some("unsupported: kek-certificate: m".to_string());
        let expected = vec![
            row("policy", vec![], vec![policy]),
            row("norp", vec![BackupNow], vec![Drift::NoRecoveryPoint]),
            row("failed", vec![BackupNow], vec![failed("SomeError")]),
            row("unhealthy", vec![BackupNow], vec![failed("Unknown")]),
            row("paused", vec![Protect], vec![paused]),
            row("hourly", vec![BackupNow], vec![stale]),
            row("kek", vec![GrantAccess], vec![kek_access]),
            ("unsupported".to_string(), vec![], vec![], human),
            row(
                "new-kek",
                vec![GrantAccess, Protect],
                vec![Drift::Unprotected],
            ),
        ];
        assert_eq!(got, expected);
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
    fn a_disk_exclusion_is_drift_repaired_by_protecting_again() {
        let now = Utc::now();
        let vms = vec![vm("a"), vm("b")];
        let mut excluded = item(&vms[0], Some(30), now);
        excluded.last_backup_status = Some("Failed".into());
        excluded.last_backup_error_code = Some("UserErrorEncryptedVmNotSupportedWithDiskEx".into());
        excluded.disk_exclusion = Some(DiskExclusionProperties {
            disk_lun_list: vec![1],
            is_inclusion_list: Some(false),
        });
        let mut reset = item(&vms[1], Some(3), now);
        reset.disk_exclusion = None;
        let items = vec![excluded, reset];
        let inputs = SweepInputs {
            vms: &vms,
            protected_items: &items,
            key_vaults_with_access: [kv().canonical()].into_iter().collect(),
            now: Some(now),
            ..Default::default()
        };
        let plans = plan(&rules(), &inputs);
        assert_eq!(plans.len(), 1, "{plans:?}");
        assert_eq!(plans[0].vm_id.name(), "a");
        assert!(plans[0].drift.contains(&Drift::DiskExclusionOnAde {
            luns: vec![1],
            inclusion_list: false
        }));
        assert_eq!(plans[0].actions, vec![Action::Protect, Action::BackupNow]);
        let kind = serde_json::to_value(&plans[0].drift[0]).expect("json");
        assert_eq!(kind["kind"], "disk-exclusion-on-ade");
    }

    #[test]
    fn a_certificate_kek_failure_needs_a_human_not_another_backup() {
        let now = Utc::now();
        let vms = vec![vm("cert")];
        let mut failed = item(&vms[0], Some(30), now);
        failed.last_backup_status = Some("Failed".into());
        failed.last_backup_error_code = Some("UserErrorKekFromCertificateNotSupported".into());
        let items = vec![failed];
        let inputs = SweepInputs {
            vms: &vms,
            protected_items: &items,
            key_vaults_with_access: [kv().canonical()].into_iter().collect(),
            now: Some(now),
            ..Default::default()
        };
        let plans = plan(&rules(), &inputs);
        assert_eq!(plans.len(), 1, "{plans:?}");
        assert!(plans[0].actions.is_empty(), "{:?}", plans[0].actions);
        let human = plans[0].needs_human.as_deref().unwrap_or_default();
        assert!(
            human.starts_with("unsupported: kek-certificate: "),
            "{human}"
        );
        assert!(
            human.contains("UserErrorKekFromCertificateNotSupported"),
            "{human}"
        );
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
