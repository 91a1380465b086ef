//! The fleet file: the initial world the simulator serves (schema: `sim/schema/fleet.schema.json`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// App id of the first-party "Backup Management Service" application.
pub const BACKUP_MANAGEMENT_SERVICE_APP_ID: &str = "262044b1-e2ce-469f-a196-69ab7ada62d3";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("could not read fleet file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("fleet file {path} is not valid fleet JSON: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("invalid fleet: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fleet {
    pub tenant_id: String,
    /// Object id of the Backup Management Service principal in this tenant.
    pub backup_management_service_object_id: String,
    /// Object id of the identity ade-backup runs as (used in `denyOurIdentity` errors and events).
    #[serde(default = "default_our_object_id")]
    pub our_object_id: String,
    pub subscriptions: Vec<Subscription>,
    #[serde(default)]
    pub key_vaults: Vec<KeyVault>,
    #[serde(default)]
    pub recovery_services_vaults: Vec<RecoveryServicesVault>,
    #[serde(default)]
    pub storage_accounts: Vec<StorageAccount>,
    #[serde(default)]
    pub virtual_networks: Vec<VirtualNetwork>,
    #[serde(default)]
    pub vms: Vec<Vm>,
}

fn default_our_object_id() -> String {
    "7d7c1f52-3f0b-4c5e-9a57-6d0a1c2b3e4f".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    pub regions: Vec<String>,
    /// Names of the management groups the subscription sits under (its parent and every
    /// ancestor): a Resource Graph query scoped to any of them sees the subscription.
    #[serde(default)]
    pub management_groups: Vec<String>,
    /// The subscription registered `Microsoft.Compute/EncryptionAtHost` (Microsoft.Features).
    /// Azure's default is not registered; the simulator's is registered so fleets that do not
    /// care see VMs that can move, and a fleet says `false` to show the fix.
    #[serde(default = "yes")]
    pub encryption_at_host_registered: bool,
    /// VM sizes the Resource SKUs API reports restricted for this subscription
    /// (`NotAvailableForSubscription`), by region.
    #[serde(default)]
    pub restricted_sizes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyVaultModel {
    AccessPolicy,
    Rbac,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVault {
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub model: KeyVaultModel,
    #[serde(default = "yes")]
    pub enabled_for_disk_encryption: bool,
    /// Writes by our identity (access policies, role assignments at this vault) get 403.
    #[serde(default)]
    pub deny_our_identity: bool,
    #[serde(default)]
    pub access_policies: Vec<AccessPolicy>,
    /// Secret names that exist in the vault (BEK secrets are added when ADE encrypts a VM).
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub keys: Vec<Key>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub object_id: String,
    #[serde(default)]
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Permissions {
    pub keys: Vec<String>,
    pub secrets: Vec<String>,
    pub certificates: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub name: String,
    /// A key that backs a Key Vault certificate (unsupported as a KEK by Azure Backup).
    #[serde(default)]
    pub from_certificate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryServicesVault {
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    #[serde(default)]
    pub policies: Vec<BackupPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicy {
    pub name: String,
    pub schedule: Schedule,
    pub retention: Retention,
    #[serde(default = "two")]
    pub instant_rp_retention_days: u32,
}

fn two() -> u32 {
    2
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "frequency")]
pub enum Schedule {
    /// Once a day at `time` (HH:MM, UTC).
    Daily { time: String },
    /// Every `intervalHours` hours inside a window starting at `startTime` (HH:MM, UTC).
    Hourly {
        #[serde(rename = "intervalHours")]
        interval_hours: u32,
        #[serde(rename = "startTime")]
        start_time: String,
        #[serde(rename = "windowHours")]
        window_hours: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    pub daily_days: u32,
    #[serde(default)]
    pub weekly_weeks: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageAccount {
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetwork {
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub subnets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OsType {
    Windows,
    Linux,
}

impl OsType {
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Windows => "Windows",
            OsType::Linux => "Linux",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    Running,
    Stopped,
    Deallocated,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Stopped => "stopped",
            PowerState::Deallocated => "deallocated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDisk {
    pub size_gb: u32,
}

/// How a VM is encrypted with Azure Disk Encryption when the fleet is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "variant", rename_all = "kebab-case")]
pub enum Ade {
    #[default]
    None,
    /// BEK only: the disk encryption secret lives in `keyVault`.
    Bek {
        #[serde(rename = "keyVault")]
        key_vault: String,
    },
    /// BEK wrapped by a KEK (`kek` key in `kekVault`, default `keyVault`).
    BekKek {
        #[serde(rename = "keyVault")]
        key_vault: String,
        #[serde(rename = "kekVault", default)]
        kek_vault: Option<String>,
        kek: String,
    },
    /// Like `bek-kek`, but the KEK is the key of a Key Vault certificate.
    KekCertificate {
        #[serde(rename = "keyVault")]
        key_vault: String,
        #[serde(rename = "kekVault", default)]
        kek_vault: Option<String>,
        kek: String,
    },
}

impl Ade {
    /// The vault holding the BEK and, with a KEK, (the vault holding the KEK, the KEK's name);
    /// `None` without ADE.
    pub fn vaults(&self) -> Option<(&str, Option<(&str, &str)>)> {
        match self {
            Ade::None => None,
            Ade::Bek { key_vault } => Some((key_vault, None)),
            Ade::BekKek {
                key_vault,
                kek_vault,
                kek,
            }
            | Ade::KekCertificate {
                key_vault,
                kek_vault,
                kek,
            } => Some((
                key_vault,
                Some((kek_vault.as_deref().unwrap_or(key_vault), kek)),
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Vm {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub os_type: OsType,
    #[serde(default = "default_size")]
    pub vm_size: String,
    #[serde(default = "default_os_disk")]
    pub os_disk_size_gb: u32,
    #[serde(default)]
    pub data_disks: Vec<DataDisk>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub ade: Ade,
    /// Dual-pass ADE: the extension was enabled with this Azure AD application (its settings carry
    /// `AADClientID`, its version is the AAD one). Needs `ade` other than `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ade_aad_client_id: Option<String>,
    #[serde(default = "running")]
    pub power_state: PowerState,
    #[serde(default)]
    pub protection: Option<Protection>,
    /// The VM agent as the instance view reports it (Azure Backup snapshots through it).
    #[serde(default)]
    pub vm_agent: VmAgent,
    /// The VM's disks are unmanaged (VHDs in a storage account, retired 30 September 2025).
    #[serde(default)]
    pub unmanaged_disks: bool,
}

/// The VM agent of a fleet VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAgent {
    /// `ProvisioningState/succeeded`, `Ready`.
    #[default]
    Ready,
    /// Installed but unresponsive: `ProvisioningState/Unavailable`, `Not Ready`.
    NotReady,
    /// Not installed (custom image without the agent): no `vmAgent` in the instance view.
    Absent,
}

fn default_size() -> String {
    "Standard_D2s_v3".to_string()
}
fn default_os_disk() -> u32 {
    128
}
fn running() -> PowerState {
    PowerState::Running
}

/// A protected item that already exists when the fleet is loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protection {
    pub vault: String,
    pub policy: String,
    /// Ages (hours before simulation start) of existing recovery points; the newest one decides
    /// whether the item is stale.
    #[serde(default)]
    pub recovery_point_ages_hours: Vec<u32>,
    /// LUNs of data disks excluded from backup (`extendedProperties.diskExclusionProperties`);
    /// an encrypted VM's backups then fail with `UserErrorEncryptedVmNotSupportedWithDiskEx`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_disk_luns: Vec<u32>,
}

impl Fleet {
    pub fn load(path: &Path) -> Result<Fleet, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let fleet: Fleet = serde_json::from_str(&text).map_err(|source| FleetError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        fleet.validate()?;
        Ok(fleet)
    }

    /// The bundled sample fleet (`sim/fleets/sample.json`).
    pub fn sample() -> Fleet {
        // The file is part of this crate and covered by a test, so it always parses.
        serde_json::from_str(include_str!("../fleets/sample.json")).unwrap_or_else(|e| {
            tracing::error!(error = %e, "bundled sample fleet does not parse");
            Fleet::generate(1, 0, 0)
        })
    }

    /// Cross-reference checks serde cannot express.
    pub fn validate(&self) -> Result<(), FleetError> {
        let subs: BTreeSet<String> = self
            .subscriptions
            .iter()
            .map(|s| s.id.to_ascii_lowercase())
            .collect();
        if subs.len() != self.subscriptions.len() {
            return bad("subscriptions[].id must be unique".into());
        }
        let has_sub = |s: &str| subs.contains(&s.to_ascii_lowercase());
        let mut kv_names = BTreeSet::new();
        for kv in &self.key_vaults {
            if !has_sub(&kv.subscription) {
                return bad(format!(
                    "keyVaults[{}].subscription {} is not in subscriptions",
                    kv.name, kv.subscription
                ));
            }
            if !kv_names.insert(kv.name.to_ascii_lowercase()) {
                return bad(format!("keyVaults[].name {} is not unique", kv.name));
            }
        }
        for rsv in &self.recovery_services_vaults {
            if !has_sub(&rsv.subscription) {
                return bad(format!(
                    "recoveryServicesVaults[{}].subscription {} is not in subscriptions",
                    rsv.name, rsv.subscription
                ));
            }
        }
        for sa in &self.storage_accounts {
            if !has_sub(&sa.subscription) {
                return bad(format!(
                    "storageAccounts[{}].subscription {} is not in subscriptions",
                    sa.name, sa.subscription
                ));
            }
        }
        let mut vm_ids = BTreeSet::new();
        for vm in &self.vms {
            let at = format!("vms[{}/{}]", vm.resource_group, vm.name);
            if !has_sub(&vm.subscription) {
                return bad(format!(
                    "{at}.subscription {} is not in subscriptions",
                    vm.subscription
                ));
            }
            if !vm_ids.insert(
                format!("{}/{}/{}", vm.subscription, vm.resource_group, vm.name)
                    .to_ascii_lowercase(),
            ) {
                return bad(format!("{at} is defined twice"));
            }
            self.validate_vm_ade(vm, &at)?;
            self.validate_vm_protection(vm, &at)?;
        }
        Ok(())
    }

    /// A VM's ADE names fleet key vaults, and its KEK is a key of its vault that comes from a
    /// certificate exactly when the variant says so.
    fn validate_vm_ade(&self, vm: &Vm, at: &str) -> Result<(), FleetError> {
        if vm.ade_aad_client_id.is_some() && vm.ade.vaults().is_none() {
            return bad(format!(
                "{at}.adeAadClientId needs ade (dual-pass ADE is still ADE)"
            ));
        }
        let kv = |n: &str| {
            self.key_vaults
                .iter()
                .find(|k| k.name.eq_ignore_ascii_case(n))
        };
        let Some((key_vault, kek)) = vm.ade.vaults() else {
            return Ok(());
        };
        if kv(key_vault).is_none() {
            return bad(format!("{at}.ade.keyVault {key_vault} is not in keyVaults"));
        }
        let Some((kek_vault_name, kek)) = kek else {
            return Ok(());
        };
        let Some(kekv) = kv(kek_vault_name) else {
            return bad(format!(
                "{at}.ade.kekVault {kek_vault_name} is not in keyVaults"
            ));
        };
        let Some(key) = kekv.keys.iter().find(|k| k.name.eq_ignore_ascii_case(kek)) else {
            return bad(format!(
                "{at}.ade.kek {kek} is not a key of vault {kek_vault_name}"
            ));
        };
        let wants_cert = matches!(vm.ade, Ade::KekCertificate { .. });
        if key.from_certificate != wants_cert {
            return bad(format!(
                "{at}.ade.kek {kek}: variant {} needs fromCertificate={wants_cert}",
                if wants_cert {
                    "kek-certificate"
                } else {
                    "bek-kek"
                }
            ));
        }
        Ok(())
    }

    /// A VM's protection names a vault in the VM's subscription and one of its policies.
    fn validate_vm_protection(&self, vm: &Vm, at: &str) -> Result<(), FleetError> {
        let Some(p) = &vm.protection else {
            return Ok(());
        };
        let Some(rsv) = self.recovery_services_vaults.iter().find(|r| {
            r.name.eq_ignore_ascii_case(&p.vault)
                && r.subscription.eq_ignore_ascii_case(&vm.subscription)
        }) else {
            return bad(format!(
                "{at}.protection.vault {} is not a vault in the VM's subscription",
                p.vault
            ));
        };
        if !rsv
            .policies
            .iter()
            .any(|pol| pol.name.eq_ignore_ascii_case(&p.policy))
        {
            return bad(format!(
                "{at}.protection.policy {} is not a policy of vault {}",
                p.policy, p.vault
            ));
        }
        Ok(())
    }

    /// A large synthetic fleet: `subs` subscriptions over two regions, `vms` VMs spread across
    /// them, about a third ADE-encrypted (BEK and BEK+KEK, access-policy and RBAC vaults), half of
    /// them protected. Deterministic for a given seed.
    pub fn generate(subs: usize, vms: usize, seed: u64) -> Fleet {
        let mut rng = StdRng::seed_from_u64(seed);
        let uuid = |rng: &mut StdRng| uuid::Uuid::from_u128(rng.random::<u128>()).to_string();
        let subs = subs.max(1);
        let tenant_id = uuid(&mut rng);
        let bms = uuid(&mut rng);
        let mut fleet = Fleet {
            tenant_id,
            backup_management_service_object_id: bms.clone(),
            our_object_id: default_our_object_id(),
            subscriptions: Vec::new(),
            key_vaults: Vec::new(),
            recovery_services_vaults: Vec::new(),
            storage_accounts: Vec::new(),
            virtual_networks: Vec::new(),
            vms: Vec::new(),
        };
        for s in 0..subs {
            let sub = uuid(&mut rng);
            fleet.add_generated_subscription(s, sub);
        }
        for i in 0..vms {
            let s = i % subs;
            let sub = fleet.subscriptions[s].id.clone();
            fleet.vms.push(generated_vm(&mut rng, i, (s, subs), sub));
        }
        fleet
    }

    /// Generated subscription number `s` (id `sub`) and, in each region, an access-policy and
    /// an RBAC key vault (each with a `kek` key), a Recovery Services vault and a storage
    /// account.
    fn add_generated_subscription(&mut self, s: usize, sub: String) {
        self.subscriptions.push(Subscription {
            id: sub.clone(),
            display_name: format!("gen-sub-{s}"),
            regions: GENERATED_REGIONS.iter().map(|r| r.to_string()).collect(),
            // Even subscriptions under mg-prod, odd under mg-dev, all under mg-root.
            management_groups: vec![
                "mg-root".to_string(),
                if s.is_multiple_of(2) {
                    "mg-prod"
                } else {
                    "mg-dev"
                }
                .to_string(),
            ],
            encryption_at_host_registered: true,
            restricted_sizes: BTreeMap::new(),
        });
        for (ri, region) in GENERATED_REGIONS.iter().enumerate() {
            let rg = format!("rg-sec-{ri}");
            for (prefix, model) in [
                ("kv-ap", KeyVaultModel::AccessPolicy),
                ("kv-rbac", KeyVaultModel::Rbac),
            ] {
                self.key_vaults.push(KeyVault {
                    name: format!("{prefix}-{s}-{ri}"),
                    subscription: sub.clone(),
                    resource_group: rg.clone(),
                    location: region.to_string(),
                    model,
                    enabled_for_disk_encryption: true,
                    deny_our_identity: false,
                    access_policies: Vec::new(),
                    secrets: Vec::new(),
                    keys: vec![Key {
                        name: "kek".into(),
                        from_certificate: false,
                    }],
                });
            }
            self.recovery_services_vaults.push(RecoveryServicesVault {
                name: format!("rsv-{s}-{ri}"),
                subscription: sub.clone(),
                resource_group: "rg-backup".into(),
                location: region.to_string(),
                policies: vec![default_policy()],
            });
            self.storage_accounts.push(StorageAccount {
                name: format!("stgrestore{s}x{ri}"),
                subscription: sub.clone(),
                resource_group: "rg-backup".into(),
                location: region.to_string(),
            });
        }
    }
}

/// The regions a generated fleet spreads over.
const GENERATED_REGIONS: [&str; 2] = ["westeurope", "northeurope"];

/// Generated VM number `i` in subscription number `s` of `subs` (id `sub`): random OS, ADE
/// (none, BEK or BEK+KEK), protection and data disks, drawn from `rng` in a fixed order.
fn generated_vm(rng: &mut StdRng, i: usize, (s, subs): (usize, usize), sub: String) -> Vm {
    let ri = (i / subs) % GENERATED_REGIONS.len();
    let os_type = if rng.random_bool(0.5) {
        OsType::Linux
    } else {
        OsType::Windows
    };
    let ade = match rng.random_range(0..6) {
        0 => Ade::Bek {
            key_vault: format!("kv-ap-{s}-{ri}"),
        },
        1 => Ade::BekKek {
            key_vault: format!("kv-rbac-{s}-{ri}"),
            kek_vault: None,
            kek: "kek".into(),
        },
        _ => Ade::None,
    };
    let protection = rng.random_bool(0.5).then(|| Protection {
        vault: format!("rsv-{s}-{ri}"),
        policy: "DefaultPolicy".into(),
        recovery_point_ages_hours: vec![rng.random_range(1..96)],
        excluded_disk_luns: vec![],
    });
    let disks = rng.random_range(0..4);
    Vm {
        subscription: sub,
        resource_group: format!("rg-app-{}", i % 50),
        name: format!("vm-{i:05}"),
        location: GENERATED_REGIONS[ri].to_string(),
        os_type,
        vm_size: default_size(),
        os_disk_size_gb: 128,
        data_disks: (0..disks)
            .map(|_| DataDisk {
                size_gb: [128, 256, 512, 1024][rng.random_range(0..4)],
            })
            .collect(),
        tags: BTreeMap::new(),
        ade,
        ade_aad_client_id: None,
        power_state: PowerState::Running,
        vm_agent: VmAgent::Ready,
        unmanaged_disks: false,
        protection,
    }
}

/// A fleet check that failed.
fn bad(message: String) -> Result<(), FleetError> {
    Err(FleetError::Invalid(message))
}

fn default_policy() -> BackupPolicy {
    BackupPolicy {
        name: "DefaultPolicy".into(),
        schedule: Schedule::Daily {
            time: "22:00".into(),
        },
        retention: Retention {
            daily_days: 30,
            weekly_weeks: None,
        },
        instant_rp_retention_days: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_fleet_parses_validates_and_covers_the_cases() {
        let f: Fleet = serde_json::from_str(include_str!("../fleets/sample.json"))
            .expect("sample fleet parses");
        f.validate().expect("sample fleet is consistent");
        assert_eq!(f.subscriptions.len(), 2);
        assert!(f.vms.len() >= 24, "a few dozen VMs, got {}", f.vms.len());
        let has = |p: &dyn Fn(&Vm) -> bool| f.vms.iter().any(p);
        assert!(has(&|v| matches!(v.ade, Ade::None)));
        assert!(has(&|v| matches!(v.ade, Ade::Bek { .. })));
        assert!(has(&|v| matches!(v.ade, Ade::BekKek { .. })));
        assert!(has(&|v| matches!(v.ade, Ade::KekCertificate { .. })));
        assert!(has(
            &|v| v.os_type == OsType::Windows && !matches!(v.ade, Ade::None)
        ));
        assert!(has(
            &|v| v.os_type == OsType::Linux && !matches!(v.ade, Ade::None)
        ));
        assert!(has(&|v| v.protection.is_some()));
        assert!(has(&|v| v.protection.is_none()));
        assert!(has(&|v| v.data_disks.len() + 1 > 16));
        assert!(has(&|v| v.data_disks.iter().any(|d| d.size_gb > 4097)));
        assert!(f.key_vaults.iter().any(|k| k.model == KeyVaultModel::Rbac));
        assert!(f
            .key_vaults
            .iter()
            .any(|k| k.model == KeyVaultModel::AccessPolicy));
        assert!(f.key_vaults.iter().any(|k| !k.enabled_for_disk_encryption));
        let regions: BTreeSet<_> = f.vms.iter().map(|v| v.location.clone()).collect();
        assert!(regions.len() >= 2);
    }

    #[test]
    fn generate_is_deterministic_and_valid() {
        let a = Fleet::generate(4, 10_000, 42);
        let b = Fleet::generate(4, 10_000, 42);
        assert_eq!(a, b);
        assert_eq!(a.vms.len(), 10_000);
        assert_eq!(a.subscriptions.len(), 4);
        a.validate().expect("generated fleet is consistent");
        assert_ne!(a, Fleet::generate(4, 10_000, 43));
    }

    #[test]
    fn validation_names_the_bad_reference() {
        let mut f = Fleet::generate(1, 1, 1);
        f.vms[0].ade = Ade::Bek {
            key_vault: "nope".into(),
        };
        let err = f.validate().expect_err("unknown key vault").to_string();
        assert!(err.contains("ade.keyVault nope"), "{err}");
    }
}
