//! The in-memory Azure world and its behaviour over simulated time.
//!
//! Shapes follow `Azure/azure-rest-api-specs` examples: compute `VirtualMachine_Get_WithInstanceView`
//! (2024-07-01), keyvault `updateAccessPoliciesAdd.json` / `getVault.json` (2023-07-01),
//! authorization `PutRoleAssignment.json` (2022-04-01), recoveryservicesbackup 2023-04-01
//! `AzureIaasVm/RecoveryPoints_List.json`, `ProtectedItemOperationStatus.json`,
//! `BackupProtectableItems_List.json`, `Common/RefreshContainers.json`,
//! `TriggerRestore_RestoreDisks_IaasVMRestoreRequest_IdentityBasedRestoreDetails.json`.

use crate::fleet::{self, Ade, Fleet, KeyVaultModel, OsType, PowerState};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Error codes the simulator returns. Codes marked "sim" are not named by Azure's docs; Azure's
/// documented spelling is used where one exists (note `Keyvault`, lower-case v, as in
/// backup-azure-vms-troubleshoot.md).
pub mod codes {
    pub const KEY_VAULT_PERMISSIONS: &str = "UserErrorKeyvaultPermissionsNotConfigured";
    /// sim: "keys that are part of a certificate aren't supported" (backup-azure-vms-encryption.md).
    pub const KEK_FROM_CERTIFICATE: &str = "UserErrorKekFromCertificateNotSupported";
    /// sim: ADE settings of VMs with >16 disks or a disk >4097 GB cannot be restored.
    pub const ENCRYPTED_RESTORE_DISK_LIMITS: &str = "UserErrorEncryptedVmRestoreDiskLimitExceeded";
    pub const RESTORE_ENCRYPTED_VM: &str = "UserErrorRestoreEncryptedVmNotSupported";
    pub const DISK_EXCLUSION: &str = "UserErrorEncryptedVmNotSupportedWithDiskEx";
    pub const BACKUP_IN_PROGRESS: &str = "UserErrorBackupOperationInProgress";
    pub const VM_NOT_FOUND: &str = "UserErrorVmNotFound";
    /// sim: Backup now on an item whose protection was stopped (retain data). Azure refuses it
    /// (the portal greys the action out) but no error code is documented; the code is our choice.
    pub const PROTECTION_STOPPED: &str = "BMSUserErrorProtectionStopped";
}

/// `protectionState` of an item whose protection was stopped with its data retained.
pub const PROTECTION_STOPPED_STATE: &str = "ProtectionStopped";

/// The five dataActions Azure Backup needs on an RBAC key vault.
pub const BACKUP_DATA_ACTIONS: [&str; 5] = [
    "Microsoft.KeyVault/vaults/keys/backup/action",
    "Microsoft.KeyVault/vaults/secrets/backup/action",
    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "Microsoft.KeyVault/vaults/keys/read",
    "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
];
pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";

/// Simulated durations of long operations.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Durations {
    pub backup_snapshot_secs: i64,
    pub backup_transfer_secs: i64,
    pub restore_secs: i64,
    pub configure_protection_secs: i64,
    pub refresh_secs: i64,
    pub ade_extension_secs: i64,
    pub other_extension_secs: i64,
    pub deployment_secs: i64,
    pub lro_accept_secs: i64,
}

impl Default for Durations {
    fn default() -> Self {
        Self {
            backup_snapshot_secs: 5 * 60,
            backup_transfer_secs: 15 * 60,
            restore_secs: 30 * 60,
            configure_protection_secs: 60,
            refresh_secs: 30,
            ade_extension_secs: 10 * 60,
            other_extension_secs: 60,
            deployment_secs: 3 * 60,
            lro_accept_secs: 5,
        }
    }
}

pub fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn iso_duration(d: Duration) -> String {
    let secs = d.num_milliseconds().max(0) as f64 / 1000.0;
    format!("PT{secs:.3}S")
}

pub fn vm_resource_id(sub: &str, rg: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}")
}

pub fn container_name(rg: &str, vm: &str) -> String {
    format!("IaasVMContainer;iaasvmcontainerv2;{};{}", lc(rg), lc(vm))
}

pub fn item_name(rg: &str, vm: &str) -> String {
    format!("VM;iaasvmcontainerv2;{};{}", lc(rg), lc(vm))
}

/// A failure with an Azure-style code.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Disk {
    pub name: String,
    pub lun: Option<u32>,
    pub size_gb: u32,
}

/// ADE settings as applied to a VM (and recorded in recovery points).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Encryption {
    pub key_vault_url: String,
    pub key_vault_id: String,
    pub secret_url: String,
    pub kek_url: Option<String>,
    pub kek_vault_id: Option<String>,
    pub volume_type: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum ExtState {
    Creating,
    Succeeded,
    Failed(String),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Extension {
    pub name: String,
    pub publisher: String,
    pub ext_type: String,
    pub type_handler_version: String,
    pub settings: Value,
    pub state: ExtState,
    pub ready_at: DateTime<Utc>,
}

impl Extension {
    pub fn is_ade(&self) -> bool {
        self.publisher
            .eq_ignore_ascii_case("Microsoft.Azure.Security")
            && (self.ext_type.eq_ignore_ascii_case("AzureDiskEncryption")
                || self
                    .ext_type
                    .eq_ignore_ascii_case("AzureDiskEncryptionForLinux"))
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VmState {
    pub id: String,
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub location: String,
    pub os_type: OsType,
    pub vm_size: String,
    pub vm_id: String,
    pub os_disk: Disk,
    pub data_disks: Vec<Disk>,
    pub tags: BTreeMap<String, String>,
    pub power_state: PowerState,
    pub extensions: BTreeMap<String, Extension>,
    pub encryption: Option<Encryption>,
    /// Data disks restored from an ADE backup of a Linux VM stay locked until the ADE extension
    /// is reinstalled with the settings they were encrypted with.
    pub data_disks_locked: bool,
    pub restored_encryption: Option<Encryption>,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KvAccessPolicy {
    pub tenant_id: String,
    pub object_id: String,
    pub keys: Vec<String>,
    pub secrets: Vec<String>,
    pub certificates: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KvState {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub model: KeyVaultModel,
    pub enabled_for_disk_encryption: bool,
    pub deny_our_identity: bool,
    pub access_policies: Vec<KvAccessPolicy>,
    pub secrets: BTreeSet<String>,
    /// lower-case key name -> (name, fromCertificate)
    pub keys: BTreeMap<String, (String, bool)>,
}

impl KvState {
    pub fn vault_uri(&self) -> String {
        format!("https://{}.vault.azure.net/", self.name)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleDef {
    pub id: String,
    pub name: String,
    pub body: Value,
}

impl RoleDef {
    fn data_actions(&self) -> (Vec<String>, Vec<String>) {
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        if let Some(perms) = self.body["properties"]["permissions"].as_array() {
            for p in perms {
                for (field, out) in [("dataActions", &mut allow), ("notDataActions", &mut deny)] {
                    if let Some(a) = p[field].as_array() {
                        out.extend(a.iter().filter_map(|v| v.as_str()).map(lc));
                    }
                }
            }
        }
        (allow, deny)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleAssignment {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub role_definition_id: String,
    pub principal_id: String,
    pub principal_type: String,
    pub created: DateTime<Utc>,
}

impl RoleAssignment {
    pub fn to_json(&self, created_by: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": self.role_definition_id,
                "principalId": self.principal_id,
                "principalType": self.principal_type,
                "scope": self.scope,
                "condition": null,
                "conditionVersion": null,
                "createdOn": ts(self.created),
                "updatedOn": ts(self.created),
                "createdBy": created_by,
                "updatedBy": created_by,
                "delegatedManagedIdentityResourceId": null,
                "description": null
            }
        })
    }
}

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
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum JobStatus {
    InProgress,
    Completed,
    Failed,
}

#[derive(Debug, Clone, serde::Serialize)]
pub enum JobKind {
    ConfigureBackup,
    /// Stop protection (retain data): Azure's job `operation` is `DisableBackup`.
    DisableBackup,
    Backup {
        snapshot_at: DateTime<Utc>,
        snapshot_done: bool,
        rp_name: Option<String>,
    },
    Restore {
        rp_name: String,
        storage_account: String,
        target_subscription: String,
        target_rg: String,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    pub id: String,
    pub vault_key: String,
    pub item_key: String,
    pub entity_friendly_name: String,
    pub kind: JobKind,
    pub start: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub status: JobStatus,
    pub ended: Option<DateTime<Utc>>,
    pub error: Option<Failure>,
    pub property_bag: BTreeMap<String, String>,
}

impl Job {
    pub fn operation(&self) -> &'static str {
        match self.kind {
            JobKind::ConfigureBackup => "ConfigureBackup",
            JobKind::DisableBackup => "DisableBackup",
            JobKind::Backup { .. } => "Backup",
            JobKind::Restore { .. } => "Restore",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub enum OpKindState {
    /// Status follows the extension's provisioning state.
    Extension { vm_key: String, ext: String },
    /// Status follows the deployment.
    Deployment { key: String },
    /// Succeeds (or fails) at `done_at`.
    Timed {
        done_at: DateTime<Utc>,
        result: Result<Option<String>, Failure>,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Operation {
    pub id: String,
    pub start: DateTime<Utc>,
    pub kind: OpKindState,
    /// Body of the final `Location` poll (200), if any; otherwise 204.
    pub result_item: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum OpStatus {
    InProgress,
    Succeeded { job_id: Option<String> },
    Failed(Failure),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoredDisks {
    pub template_uri: String,
    pub config_uri: String,
    pub storage_account: String,
    pub target_subscription: String,
    pub target_rg: String,
    pub rp: RecoveryPoint,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum DeploymentState {
    Running,
    Succeeded,
    Failed(Failure),
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub template_uri: String,
    pub vm_name: String,
    pub start: DateTime<Utc>,
    pub done_at: DateTime<Utc>,
    pub state: DeploymentState,
    pub correlation_id: String,
    pub output_vm: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SimpleResource {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub rtype: &'static str,
    pub properties: Value,
}

#[derive(Debug, serde::Serialize)]
pub struct World {
    pub tenant_id: String,
    pub bms_object_id: String,
    pub our_object_id: String,
    pub subscriptions: BTreeMap<String, fleet::Subscription>,
    pub vms: BTreeMap<String, VmState>,
    pub key_vaults: BTreeMap<String, KvState>,
    pub role_definitions: BTreeMap<String, RoleDef>,
    pub role_assignments: BTreeMap<String, RoleAssignment>,
    pub rs_vaults: BTreeMap<String, RsVault>,
    pub protected_items: BTreeMap<String, ProtectedItem>,
    pub jobs: BTreeMap<String, Job>,
    pub operations: BTreeMap<String, Operation>,
    pub deployments: BTreeMap<String, Deployment>,
    pub restored: BTreeMap<String, RestoredDisks>,
    pub storage_accounts: BTreeMap<String, SimpleResource>,
    pub virtual_networks: BTreeMap<String, SimpleResource>,
    #[serde(skip)]
    pub durations: Durations,
    #[serde(skip)]
    active_jobs: BTreeSet<String>,
    #[serde(skip)]
    active_extensions: BTreeSet<(String, String)>,
    #[serde(skip)]
    active_deployments: BTreeSet<String>,
    #[serde(skip)]
    counter: u64,
    /// Resource Graph result snapshots behind outstanding `$skipToken`s (see
    /// `routes::resource_graph`): continuation pages read the snapshot their first page took.
    #[serde(skip)]
    pub graph_snapshots: std::collections::VecDeque<(u64, std::sync::Arc<Vec<Value>>)>,
}

fn builtin_role(guid: &str, role_name: &str, data_actions: &[&str]) -> RoleDef {
    let id = format!("/providers/Microsoft.Authorization/roleDefinitions/{guid}");
    RoleDef {
        id: id.clone(),
        name: guid.to_string(),
        body: json!({
            "id": id,
            "name": guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": role_name,
                "type": "BuiltInRole",
                "permissions": [{"actions": [], "notActions": [], "dataActions": data_actions, "notDataActions": []}],
                "assignableScopes": ["/"]
            }
        }),
    }
}

impl World {
    pub fn from_fleet(fleet: &Fleet, now: DateTime<Utc>, durations: Durations) -> World {
        let mut w = World {
            tenant_id: fleet.tenant_id.clone(),
            bms_object_id: fleet.backup_management_service_object_id.clone(),
            our_object_id: fleet.our_object_id.clone(),
            subscriptions: fleet
                .subscriptions
                .iter()
                .map(|s| (lc(&s.id), s.clone()))
                .collect(),
            vms: BTreeMap::new(),
            key_vaults: BTreeMap::new(),
            role_definitions: BTreeMap::new(),
            role_assignments: BTreeMap::new(),
            rs_vaults: BTreeMap::new(),
            protected_items: BTreeMap::new(),
            jobs: BTreeMap::new(),
            operations: BTreeMap::new(),
            deployments: BTreeMap::new(),
            restored: BTreeMap::new(),
            storage_accounts: BTreeMap::new(),
            virtual_networks: BTreeMap::new(),
            durations,
            active_jobs: BTreeSet::new(),
            active_extensions: BTreeSet::new(),
            active_deployments: BTreeSet::new(),
            counter: 0,
            graph_snapshots: Default::default(),
        };
        for (guid, name, actions) in [
            (
                KEY_VAULT_ADMINISTRATOR,
                "Key Vault Administrator",
                vec!["Microsoft.KeyVault/vaults/*"],
            ),
            (
                "4633458b-17de-408a-b874-0445c86b69e6",
                "Key Vault Secrets User",
                vec![
                    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                    "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
                ],
            ),
            (
                "12338af0-0e69-4776-bea7-57ae8d297424",
                "Key Vault Crypto User",
                vec![
                    "Microsoft.KeyVault/vaults/keys/read",
                    "Microsoft.KeyVault/vaults/keys/update/action",
                    "Microsoft.KeyVault/vaults/keys/backup/action",
                    "Microsoft.KeyVault/vaults/keys/encrypt/action",
                    "Microsoft.KeyVault/vaults/keys/decrypt/action",
                    "Microsoft.KeyVault/vaults/keys/wrap/action",
                    "Microsoft.KeyVault/vaults/keys/unwrap/action",
                    "Microsoft.KeyVault/vaults/keys/sign/action",
                    "Microsoft.KeyVault/vaults/keys/verify/action",
                ],
            ),
            (
                "21090545-7ca7-4776-b22c-e363652d74d2",
                "Key Vault Reader",
                vec![
                    "Microsoft.KeyVault/vaults/*/read",
                    "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
                ],
            ),
        ] {
            w.role_definitions
                .insert(lc(guid), builtin_role(guid, name, &actions));
        }
        for kv in &fleet.key_vaults {
            let id = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}",
                kv.subscription, kv.resource_group, kv.name
            );
            w.key_vaults.insert(
                lc(&kv.name),
                KvState {
                    id,
                    name: kv.name.clone(),
                    subscription: kv.subscription.clone(),
                    resource_group: kv.resource_group.clone(),
                    location: kv.location.clone(),
                    model: kv.model,
                    enabled_for_disk_encryption: kv.enabled_for_disk_encryption,
                    deny_our_identity: kv.deny_our_identity,
                    access_policies: kv
                        .access_policies
                        .iter()
                        .map(|p| KvAccessPolicy {
                            tenant_id: fleet.tenant_id.clone(),
                            object_id: p.object_id.clone(),
                            keys: p.permissions.keys.clone(),
                            secrets: p.permissions.secrets.clone(),
                            certificates: p.permissions.certificates.clone(),
                        })
                        .collect(),
                    secrets: kv.secrets.iter().cloned().collect(),
                    keys: kv
                        .keys
                        .iter()
                        .map(|k| (lc(&k.name), (k.name.clone(), k.from_certificate)))
                        .collect(),
                },
            );
        }
        for sa in &fleet.storage_accounts {
            let id = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{}",
                sa.subscription, sa.resource_group, sa.name
            );
            w.storage_accounts.insert(
                lc(&id),
                SimpleResource {
                    id: id.clone(),
                    name: sa.name.clone(),
                    subscription: sa.subscription.clone(),
                    resource_group: sa.resource_group.clone(),
                    location: sa.location.clone(),
                    rtype: "Microsoft.Storage/storageAccounts",
                    properties: json!({
                        "provisioningState": "Succeeded",
                        "primaryEndpoints": {"blob": format!("https://{}.blob.core.windows.net/", sa.name)}
                    }),
                },
            );
        }
        for vn in &fleet.virtual_networks {
            let id = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}",
                vn.subscription, vn.resource_group, vn.name
            );
            let subnets: Vec<Value> = vn
                .subnets
                .iter()
                .map(|s| json!({"id": format!("{id}/subnets/{s}"), "name": s}))
                .collect();
            w.virtual_networks.insert(
                lc(&id),
                SimpleResource {
                    id: id.clone(),
                    name: vn.name.clone(),
                    subscription: vn.subscription.clone(),
                    resource_group: vn.resource_group.clone(),
                    location: vn.location.clone(),
                    rtype: "Microsoft.Network/virtualNetworks",
                    properties: json!({"provisioningState": "Succeeded", "subnets": subnets}),
                },
            );
        }
        for rsv in &fleet.recovery_services_vaults {
            let id = format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
                rsv.subscription, rsv.resource_group, rsv.name
            );
            w.rs_vaults.insert(
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
        for vm in &fleet.vms {
            w.add_fleet_vm(vm, now);
        }
        w
    }

    fn next_number(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A deterministic-per-run unique GUID.
    /// A fresh id for a Resource Graph snapshot.
    pub fn new_snapshot_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub fn new_guid(&mut self) -> String {
        let n = self.next_number();
        ade_backup_shared::ids::deterministic_uuid(&[&self.tenant_id, "sim", &n.to_string()])
            .to_string()
    }

    fn add_fleet_vm(&mut self, vm: &fleet::Vm, now: DateTime<Utc>) {
        let id = vm_resource_id(&vm.subscription, &vm.resource_group, &vm.name);
        let vm_id = ade_backup_shared::ids::deterministic_uuid(&["vm", &lc(&id)]).to_string();
        let mut state = VmState {
            id: id.clone(),
            subscription: vm.subscription.clone(),
            resource_group: vm.resource_group.clone(),
            name: vm.name.clone(),
            location: vm.location.clone(),
            os_type: vm.os_type,
            vm_size: vm.vm_size.clone(),
            vm_id,
            os_disk: Disk {
                name: format!("{}_OsDisk_1", vm.name),
                lun: None,
                size_gb: vm.os_disk_size_gb,
            },
            data_disks: vm
                .data_disks
                .iter()
                .enumerate()
                .map(|(i, d)| Disk {
                    name: format!("{}_DataDisk_{i}", vm.name),
                    lun: Some(i as u32),
                    size_gb: d.size_gb,
                })
                .collect(),
            tags: vm.tags.clone(),
            power_state: vm.power_state,
            extensions: BTreeMap::new(),
            encryption: None,
            data_disks_locked: false,
            restored_encryption: None,
            created: now - Duration::days(90),
        };
        let (kv_name, kek) = match &vm.ade {
            Ade::None => (None, None),
            Ade::Bek { key_vault } => (Some(key_vault.clone()), None),
            Ade::BekKek {
                key_vault,
                kek_vault,
                kek,
            }
            | Ade::KekCertificate {
                key_vault,
                kek_vault,
                kek,
            } => (
                Some(key_vault.clone()),
                Some((
                    kek_vault.clone().unwrap_or_else(|| key_vault.clone()),
                    kek.clone(),
                )),
            ),
        };
        if let Some(kv_name) = kv_name {
            let settings = self.ade_settings_for(
                &kv_name,
                kek.as_ref().map(|(v, k)| (v.as_str(), k.as_str())),
                vm.os_type,
            );
            if let Some(settings) = settings {
                if let Ok(enc) = self.apply_ade(&mut state, &settings) {
                    state.encryption = Some(enc);
                }
                let (ext_name, ext_type, ver) = ade_extension_names(vm.os_type);
                state.extensions.insert(
                    lc(ext_name),
                    Extension {
                        name: ext_name.to_string(),
                        publisher: "Microsoft.Azure.Security".into(),
                        ext_type: ext_type.into(),
                        type_handler_version: ver.into(),
                        settings,
                        state: ExtState::Succeeded,
                        ready_at: state.created,
                    },
                );
            }
        }
        let key = lc(&id);
        if let Some(p) = &vm.protection {
            if let Some(vault_key) = self
                .rs_vaults
                .values()
                .find(|r| {
                    r.name.eq_ignore_ascii_case(&p.vault)
                        && r.subscription.eq_ignore_ascii_case(&vm.subscription)
                })
                .map(|r| lc(&r.id))
            {
                let mut item = ProtectedItem {
                    vault_key: vault_key.clone(),
                    name: item_name(&vm.resource_group, &vm.name),
                    container: container_name(&vm.resource_group, &vm.name),
                    vm_key: key.clone(),
                    source_id: id.clone(),
                    vm_name: vm.name.clone(),
                    policy: Some(p.policy.clone()),
                    protection_state: "Protected".into(),
                    last_backup_status: None,
                    last_backup_time: None,
                    recovery_points: Vec::new(),
                    health_error: None,
                    created: now - Duration::days(60),
                };
                let mut ages = p.recovery_point_ages_hours.clone();
                ages.sort_unstable_by(|a, b| b.cmp(a));
                for age in ages {
                    let time = now - Duration::hours(age as i64);
                    let rp = self.snapshot_rp(&state, time, 2);
                    let mut rp = rp;
                    rp.hardened_at = Some(time + Duration::minutes(20));
                    item.recovery_points.push(rp);
                    item.last_backup_status = Some("Completed".into());
                    item.last_backup_time = Some(time);
                }
                if item.recovery_points.is_empty() {
                    item.protection_state = "IRPending".into();
                }
                self.protected_items
                    .insert(format!("{vault_key}|{}", lc(&item.name)), item);
            }
        }
        self.vms.insert(key, state);
    }

    /// Extension settings ADE would be configured with for a vault (and optional KEK).
    pub fn ade_settings_for(
        &self,
        kv_name: &str,
        kek: Option<(&str, &str)>,
        os: OsType,
    ) -> Option<Value> {
        let kv = self.key_vaults.get(&lc(kv_name))?;
        let mut s = json!({
            "EncryptionOperation": "EnableEncryption",
            "KeyVaultURL": kv.vault_uri(),
            "KeyVaultResourceId": kv.id,
            "KeyEncryptionAlgorithm": "RSA-OAEP",
            "VolumeType": if os == OsType::Windows { "All" } else { "Data" },
            "ResizeOSDisk": false
        });
        if let Some((kek_vault, key)) = kek {
            let kv2 = self.key_vaults.get(&lc(kek_vault))?;
            let (key_name, _) = kv2.keys.get(&lc(key))?;
            let version = ade_backup_shared::ids::deterministic_uuid(&["kek", &kv2.name, key_name])
                .simple()
                .to_string();
            s["KeyEncryptionKeyURL"] =
                json!(format!("{}keys/{key_name}/{version}", kv2.vault_uri()));
            s["KekVaultResourceId"] = json!(kv2.id);
        }
        Some(s)
    }

    fn snapshot_rp(
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

    /// Validate ADE settings against the world and produce the resulting encryption state.
    fn apply_ade(&mut self, vm: &mut VmState, settings: &Value) -> Result<Encryption, String> {
        let str_of = |k: &str| settings.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kv_id = str_of("KeyVaultResourceId")
            .ok_or("settings.KeyVaultResourceId is required for EnableEncryption")?;
        let kv_url =
            str_of("KeyVaultURL").ok_or("settings.KeyVaultURL is required for EnableEncryption")?;
        let kv_name = kv_id.rsplit('/').next().unwrap_or_default().to_string();
        let kv = self
            .key_vaults
            .get(&lc(&kv_name))
            .ok_or_else(|| format!("Key vault {kv_id} was not found"))?;
        if !kv_url
            .to_ascii_lowercase()
            .starts_with(&lc(&kv.vault_uri()).trim_end_matches('/').to_string())
        {
            return Err(format!(
                "KeyVaultURL {kv_url} does not belong to KeyVaultResourceId {kv_id}"
            ));
        }
        if !kv.enabled_for_disk_encryption {
            return Err(format!(
                "Key vault {} is not enabled for disk encryption (properties.enabledForDiskEncryption is false); the disk encryption secret cannot be stored or read",
                kv.name
            ));
        }
        let kek_url = str_of("KeyEncryptionKeyURL").filter(|s| !s.is_empty());
        let kek_vault_id = str_of("KekVaultResourceId").filter(|s| !s.is_empty());
        if let Some(url) = &kek_url {
            let parsed = ade_backup_shared::ids::KeyVaultUrl::parse(url)
                .map_err(|e| format!("KeyEncryptionKeyURL is not a key URL: {e}"))?;
            let kv2 = self
                .key_vaults
                .get(&lc(parsed.vault_name()))
                .ok_or_else(|| format!("Key vault {} (KEK) was not found", parsed.vault_name()))?;
            if !kv2.keys.contains_key(&lc(parsed.object_name())) {
                return Err(format!(
                    "Key {} was not found in vault {}",
                    parsed.object_name(),
                    kv2.name
                ));
            }
        }
        let volume_type = str_of("VolumeType").unwrap_or_else(|| "All".into());
        if let (true, Some(orig)) = (vm.data_disks_locked, vm.restored_encryption.clone()) {
            let same_vault = orig.key_vault_id.eq_ignore_ascii_case(&kv.id);
            let same_kek = match (&orig.kek_url, &kek_url) {
                (None, None) => true,
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => false,
            };
            if !(same_vault && same_kek) {
                return Err(
                    "Failed to unlock the data volumes: the passphrase in the given key vault / KEK does not match the one the disks were encrypted with".into(),
                );
            }
            vm.data_disks_locked = false;
            return Ok(Encryption {
                volume_type,
                ..orig
            });
        }
        let secret = ade_backup_shared::ids::deterministic_uuid(&[
            "bek",
            &lc(&vm.id),
            &self.counter.to_string(),
        ]);
        let version = ade_backup_shared::ids::deterministic_uuid(&["bekv", &secret.to_string()])
            .simple()
            .to_string();
        let kv_uri = kv.vault_uri();
        let kv_full_id = kv.id.clone();
        if let Some(kvm) = self.key_vaults.get_mut(&lc(&kv_name)) {
            kvm.secrets.insert(secret.to_string());
        }
        Ok(Encryption {
            key_vault_url: kv_uri.clone(),
            key_vault_id: kv_full_id,
            secret_url: format!("{kv_uri}secrets/{secret}/{version}"),
            kek_url,
            kek_vault_id,
            volume_type,
        })
    }

    // ---------- time ----------

    /// Advance every time-dependent object to `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        let due: Vec<(String, String)> = self
            .active_extensions
            .iter()
            .filter(|(vm, ext)| {
                self.vms
                    .get(vm)
                    .and_then(|v| v.extensions.get(ext))
                    .is_none_or(|e| e.ready_at <= now)
            })
            .cloned()
            .collect();
        for (vm_key, ext) in due {
            self.active_extensions
                .remove(&(vm_key.clone(), ext.clone()));
            self.complete_extension(&vm_key, &ext);
        }
        let jobs: Vec<String> = self.active_jobs.iter().cloned().collect();
        for id in jobs {
            self.progress_job(&id, now);
        }
        let deps: Vec<String> = self
            .active_deployments
            .iter()
            .filter(|k| self.deployments.get(*k).is_none_or(|d| d.done_at <= now))
            .cloned()
            .collect();
        for key in deps {
            self.active_deployments.remove(&key);
            self.complete_deployment(&key);
        }
    }

    fn complete_extension(&mut self, vm_key: &str, ext_key: &str) {
        let Some(mut vm) = self.vms.remove(vm_key) else {
            return;
        };
        if let Some(ext) = vm.extensions.get(ext_key).cloned() {
            let mut state = ExtState::Succeeded;
            if ext.is_ade() {
                let op = ext.settings["EncryptionOperation"].as_str().unwrap_or("");
                if op.eq_ignore_ascii_case("EnableEncryption") {
                    match self.apply_ade(&mut vm, &ext.settings) {
                        Ok(enc) => vm.encryption = Some(enc),
                        Err(msg) => state = ExtState::Failed(msg),
                    }
                } else if op.eq_ignore_ascii_case("DisableEncryption") {
                    vm.encryption = None;
                }
            }
            if let Some(e) = vm.extensions.get_mut(ext_key) {
                e.state = state;
            }
        }
        self.vms.insert(vm_key.to_string(), vm);
    }

    /// Put (create or update) a VM extension; returns the operation id.
    pub fn put_extension(
        &mut self,
        vm_key: &str,
        ext: Extension,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let secs = if ext.is_ade() {
            self.durations.ade_extension_secs
        } else {
            self.durations.other_extension_secs
        };
        let key = lc(&ext.name);
        let vm = self.vms.get_mut(vm_key)?;
        let ext = Extension {
            ready_at: now + Duration::seconds(secs),
            state: ExtState::Creating,
            ..ext
        };
        vm.extensions.insert(key.clone(), ext);
        self.active_extensions
            .insert((vm_key.to_string(), key.clone()));
        let op = self.new_guid();
        self.operations.insert(
            op.clone(),
            Operation {
                id: op.clone(),
                start: now,
                kind: OpKindState::Extension {
                    vm_key: vm_key.to_string(),
                    ext: key,
                },
                result_item: None,
            },
        );
        Some(op)
    }

    pub fn op_status(&self, op: &Operation, now: DateTime<Utc>) -> OpStatus {
        match &op.kind {
            OpKindState::Extension { vm_key, ext } => {
                match self.vms.get(vm_key).and_then(|v| v.extensions.get(ext)) {
                    None => OpStatus::Failed(Failure::new("NotFound", "The extension was deleted")),
                    Some(e) => match &e.state {
                        ExtState::Creating => OpStatus::InProgress,
                        ExtState::Succeeded => OpStatus::Succeeded { job_id: None },
                        ExtState::Failed(m) => OpStatus::Failed(Failure::new(
                            "VMExtensionProvisioningError",
                            format!("VM has reported a failure when processing extension '{}'. Error message: \"{m}\"", e.name),
                        )),
                    },
                }
            }
            OpKindState::Deployment { key } => match self.deployments.get(key).map(|d| &d.state) {
                Some(DeploymentState::Running) => OpStatus::InProgress,
                Some(DeploymentState::Succeeded) => OpStatus::Succeeded { job_id: None },
                Some(DeploymentState::Failed(f)) => OpStatus::Failed(f.clone()),
                None => {
                    OpStatus::Failed(Failure::new("DeploymentNotFound", "deployment was deleted"))
                }
            },
            OpKindState::Timed { done_at, result } => {
                if now < *done_at {
                    OpStatus::InProgress
                } else {
                    match result {
                        Ok(job_id) => OpStatus::Succeeded {
                            job_id: job_id.clone(),
                        },
                        Err(f) => OpStatus::Failed(f.clone()),
                    }
                }
            }
        }
    }

    pub fn timed_operation(
        &mut self,
        now: DateTime<Utc>,
        result: Result<Option<String>, Failure>,
        result_item: Option<String>,
    ) -> String {
        let op = self.new_guid();
        self.operations.insert(
            op.clone(),
            Operation {
                id: op.clone(),
                start: now,
                kind: OpKindState::Timed {
                    done_at: now + Duration::seconds(self.durations.lro_accept_secs),
                    result,
                },
                result_item,
            },
        );
        op
    }

    // ---------- key vault permissions ----------

    /// Whether the Backup Management Service can back up a VM encrypted with `enc`.
    pub fn check_backup_access(&self, enc: &Encryption) -> Result<(), Failure> {
        let kv_name = enc.key_vault_id.rsplit('/').next().unwrap_or_default();
        let bek_vault = self.key_vaults.get(&lc(kv_name)).ok_or_else(|| {
            Failure::new(
                "UserErrorKeyVaultNotFound",
                format!(
                    "Key vault {} referenced by the VM's disk encryption settings was not found",
                    enc.key_vault_id
                ),
            )
        })?;
        let kek = match &enc.kek_url {
            Some(url) => {
                let parsed = ade_backup_shared::ids::KeyVaultUrl::parse(url).map_err(|e| {
                    Failure::new(
                        "UserErrorKeyVaultNotFound",
                        format!("KEK URL is invalid: {e}"),
                    )
                })?;
                let kv = self
                    .key_vaults
                    .get(&lc(parsed.vault_name()))
                    .ok_or_else(|| {
                        Failure::new(
                            "UserErrorKeyVaultNotFound",
                            format!(
                                "Key vault {} holding the KEK was not found",
                                parsed.vault_name()
                            ),
                        )
                    })?;
                if kv
                    .keys
                    .get(&lc(parsed.object_name()))
                    .is_some_and(|(_, from_cert)| *from_cert)
                {
                    return Err(Failure::new(
                        codes::KEK_FROM_CERTIFICATE,
                        format!("The key encryption key {url} belongs to a certificate. Azure Backup supports only standalone keys as KEK for encrypted VMs."),
                    ));
                }
                Some(kv)
            }
            None => None,
        };
        let denied = || {
            Failure::new(
                codes::KEY_VAULT_PERMISSIONS,
                "Backup doesn't have sufficient permissions to the key vault for backup of encrypted VMs.",
            )
        };
        let kek_same_vault = kek.is_some_and(|k| k.id.eq_ignore_ascii_case(&bek_vault.id));
        if !self.vault_allows_backup(bek_vault, true, kek_same_vault) {
            return Err(denied());
        }
        if let Some(kv) = kek {
            if !kek_same_vault && !self.vault_allows_backup(kv, false, true) {
                return Err(denied());
            }
        }
        Ok(())
    }

    fn vault_allows_backup(&self, kv: &KvState, secrets: bool, keys: bool) -> bool {
        match kv.model {
            KeyVaultModel::AccessPolicy => {
                let has = |list: &[String], need: &[&str]| {
                    need.iter().all(|n| {
                        list.iter()
                            .any(|p| p.eq_ignore_ascii_case(n) || p.eq_ignore_ascii_case("all"))
                    })
                };
                kv.access_policies.iter().any(|p| {
                    p.object_id.eq_ignore_ascii_case(&self.bms_object_id)
                        && (!secrets || has(&p.secrets, &["get", "list"]))
                        && (!keys || has(&p.keys, &["get", "list", "backup"]))
                })
            }
            KeyVaultModel::Rbac => {
                let scope = lc(&kv.id);
                self.role_assignments.values().any(|ra| {
                    ra.principal_id.eq_ignore_ascii_case(&self.bms_object_id)
                        && scope_covers(&lc(&ra.scope), &scope)
                        && self.role_grants_backup(&ra.role_definition_id)
                })
            }
        }
    }

    fn role_grants_backup(&self, role_definition_id: &str) -> bool {
        let guid = lc(role_definition_id.rsplit('/').next().unwrap_or_default());
        let Some(def) = self.role_definitions.get(&guid) else {
            return false;
        };
        let (allow, deny) = def.data_actions();
        BACKUP_DATA_ACTIONS.iter().all(|need| {
            let need = lc(need);
            allow.iter().any(|a| action_matches(a, &need))
                && !deny.iter().any(|d| action_matches(d, &need))
        })
    }

    // ---------- recovery services ----------

    pub fn start_backup(&mut self, item_key: &str, now: DateTime<Utc>) -> Result<String, Failure> {
        let item = self
            .protected_items
            .get(item_key)
            .ok_or_else(|| Failure::new("BMSUserErrorItemNotFound", "protected item not found"))?;
        if item
            .protection_state
            .eq_ignore_ascii_case(PROTECTION_STOPPED_STATE)
        {
            return Err(Failure::new(
                codes::PROTECTION_STOPPED,
                format!(
                    "Protection of {} is stopped; resume protection with a backup policy before taking a backup.",
                    item.vm_name
                ),
            ));
        }
        if self.jobs.values().any(|j| {
            j.item_key == item_key
                && j.status == JobStatus::InProgress
                && matches!(j.kind, JobKind::Backup { .. })
        }) {
            return Err(Failure::new(
                codes::BACKUP_IN_PROGRESS,
                "Another backup operation is already in progress on this item. Wait for it to finish.",
            ));
        }
        let (vault_key, name) = (item.vault_key.clone(), item.vm_name.clone());
        let id = self.new_guid();
        let snapshot_at = now + Duration::seconds(self.durations.backup_snapshot_secs);
        let end_at = snapshot_at + Duration::seconds(self.durations.backup_transfer_secs);
        let mut bag = BTreeMap::new();
        bag.insert("VM Name".to_string(), name.clone());
        bag.insert("Backup Size".to_string(), "0 MB".to_string());
        self.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                vault_key,
                item_key: item_key.to_string(),
                entity_friendly_name: name,
                kind: JobKind::Backup {
                    snapshot_at,
                    snapshot_done: false,
                    rp_name: None,
                },
                start: now,
                end_at,
                status: JobStatus::InProgress,
                ended: None,
                error: None,
                property_bag: bag,
            },
        );
        self.active_jobs.insert(id.clone());
        Ok(id)
    }

    pub fn start_configure_job(
        &mut self,
        item_key: &str,
        vault_key: &str,
        vm_name: &str,
        now: DateTime<Utc>,
    ) -> String {
        self.start_protection_job(JobKind::ConfigureBackup, item_key, vault_key, vm_name, now)
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

    fn start_protection_job(
        &mut self,
        kind: JobKind,
        item_key: &str,
        vault_key: &str,
        vm_name: &str,
        now: DateTime<Utc>,
    ) -> String {
        let id = self.new_guid();
        let mut bag = BTreeMap::new();
        bag.insert("VM Name".to_string(), vm_name.to_string());
        self.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                vault_key: vault_key.to_string(),
                item_key: item_key.to_string(),
                entity_friendly_name: vm_name.to_string(),
                kind,
                start: now,
                end_at: now + Duration::seconds(self.durations.configure_protection_secs),
                status: JobStatus::InProgress,
                ended: None,
                error: None,
                property_bag: bag,
            },
        );
        self.active_jobs.insert(id.clone());
        id
    }

    pub fn start_restore(
        &mut self,
        item_key: &str,
        rp_name: String,
        storage_account: String,
        target_subscription: String,
        target_rg: String,
        now: DateTime<Utc>,
    ) -> String {
        let (vault_key, name) = self
            .protected_items
            .get(item_key)
            .map(|i| (i.vault_key.clone(), i.vm_name.clone()))
            .unwrap_or_default();
        let id = self.new_guid();
        let mut bag = BTreeMap::new();
        bag.insert("Job Type".to_string(), "Recover disks".to_string());
        bag.insert(
            "Target Storage Account Name".to_string(),
            storage_account.clone(),
        );
        bag.insert("Recovery point time ".to_string(), String::new());
        self.jobs.insert(
            id.clone(),
            Job {
                id: id.clone(),
                vault_key,
                item_key: item_key.to_string(),
                entity_friendly_name: name,
                kind: JobKind::Restore {
                    rp_name,
                    storage_account,
                    target_subscription,
                    target_rg,
                },
                start: now,
                end_at: now + Duration::seconds(self.durations.restore_secs),
                status: JobStatus::InProgress,
                ended: None,
                error: None,
                property_bag: bag,
            },
        );
        self.active_jobs.insert(id.clone());
        id
    }

    fn finish_job(&mut self, id: &str, at: DateTime<Utc>, error: Option<Failure>) {
        self.active_jobs.remove(id);
        if let Some(job) = self.jobs.get_mut(id) {
            job.status = if error.is_some() {
                JobStatus::Failed
            } else {
                JobStatus::Completed
            };
            job.ended = Some(at);
            job.error = error;
        }
    }

    fn progress_job(&mut self, id: &str, now: DateTime<Utc>) {
        let Some(job) = self.jobs.get(id).cloned() else {
            self.active_jobs.remove(id);
            return;
        };
        match &job.kind {
            JobKind::ConfigureBackup | JobKind::DisableBackup => {
                if job.end_at <= now {
                    self.finish_job(id, job.end_at, None);
                }
            }
            JobKind::Backup {
                snapshot_at,
                snapshot_done,
                ..
            } => {
                if !snapshot_done && *snapshot_at <= now {
                    self.backup_snapshot(id, &job, *snapshot_at);
                }
                let still_running = self
                    .jobs
                    .get(id)
                    .is_some_and(|j| j.status == JobStatus::InProgress);
                if still_running && job.end_at <= now {
                    let rp_name = match self.jobs.get(id).map(|j| &j.kind) {
                        Some(JobKind::Backup { rp_name, .. }) => rp_name.clone(),
                        _ => None,
                    };
                    if let (Some(item), Some(rp_name)) =
                        (self.protected_items.get_mut(&job.item_key), rp_name)
                    {
                        if let Some(rp) =
                            item.recovery_points.iter_mut().find(|r| r.name == rp_name)
                        {
                            rp.hardened_at = Some(job.end_at);
                        }
                        item.last_backup_status = Some("Completed".into());
                        item.protection_state = "Protected".into();
                        item.health_error = None;
                    }
                    self.finish_job(id, job.end_at, None);
                }
            }
            JobKind::Restore { .. } => {
                if job.end_at <= now {
                    let result = self.restore_outcome(&job);
                    self.finish_job(id, job.end_at, result.err());
                }
            }
        }
    }

    fn backup_snapshot(&mut self, id: &str, job: &Job, at: DateTime<Utc>) {
        let Some(item) = self.protected_items.get(&job.item_key).cloned() else {
            self.finish_job(
                id,
                at,
                Some(Failure::new(
                    "BMSUserErrorItemNotFound",
                    "protected item was removed",
                )),
            );
            return;
        };
        let Some(vm) = self.vms.get(&item.vm_key).cloned() else {
            let f = Failure::new(
                codes::VM_NOT_FOUND,
                format!("Virtual machine {} doesn't exist.", item.source_id),
            );
            self.mark_item_failed(&job.item_key, at, &f);
            self.finish_job(id, at, Some(f));
            return;
        };
        if let Some(enc) = vm.encryption.as_ref().or(vm.restored_encryption.as_ref()) {
            if let Err(f) = self.check_backup_access(enc) {
                self.mark_item_failed(&job.item_key, at, &f);
                self.finish_job(id, at, Some(f));
                return;
            }
        }
        let instant_days = self
            .rs_vaults
            .get(&item.vault_key)
            .and_then(|v| v.policies.get(&lc(item.policy.as_deref()?)))
            .map(|p| p.instant_rp_retention_days)
            .unwrap_or(2);
        let rp = self.snapshot_rp(&vm, at, instant_days);
        let rp_name = rp.name.clone();
        if let Some(item) = self.protected_items.get_mut(&job.item_key) {
            item.recovery_points.push(rp);
            item.last_backup_time = Some(at);
        }
        if let Some(j) = self.jobs.get_mut(id) {
            j.kind = JobKind::Backup {
                snapshot_at: at,
                snapshot_done: true,
                rp_name: Some(rp_name),
            };
            let total: u32 =
                vm.os_disk.size_gb + vm.data_disks.iter().map(|d| d.size_gb).sum::<u32>();
            j.property_bag.insert(
                "Backup Size".into(),
                format!("{} MB", total as u64 * 1024 / 10),
            );
        }
    }

    fn mark_item_failed(&mut self, item_key: &str, at: DateTime<Utc>, f: &Failure) {
        if let Some(item) = self.protected_items.get_mut(item_key) {
            item.last_backup_status = Some("Failed".into());
            item.last_backup_time = Some(at);
            item.health_error = Some(f.clone());
        }
    }

    fn restore_outcome(&mut self, job: &Job) -> Result<(), Failure> {
        let JobKind::Restore {
            rp_name,
            storage_account,
            target_subscription,
            target_rg,
        } = &job.kind
        else {
            return Ok(());
        };
        let rp = self
            .protected_items
            .get(&job.item_key)
            .and_then(|i| i.recovery_points.iter().find(|r| &r.name == rp_name))
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    "UserErrorRecoveryPointNotFound",
                    "recovery point no longer exists",
                )
            })?;
        if rp.encryption.is_some() {
            let disks = 1 + rp.data_disks.len();
            let biggest = rp
                .data_disks
                .iter()
                .map(|d| d.size_gb)
                .chain([rp.os_disk.size_gb])
                .max()
                .unwrap_or(0);
            if disks > 16 || biggest > 4097 {
                return Err(Failure::new(
                    codes::ENCRYPTED_RESTORE_DISK_LIMITS,
                    format!("Restoring the disk encryption settings failed: the VM has {disks} disks (limit 16) and its largest disk is {biggest} GB (limit 4097 GB). Restore the disks and reattach the encryption settings manually."),
                ));
            }
        }
        let guid = self.new_guid();
        let container = format!("{}-{}", lc(&rp.vm_name), &guid[..8]);
        let base = format!("https://{storage_account}.blob.core.windows.net/{container}");
        let template_uri = format!("{base}/azuredeploy{guid}.json");
        let config_uri = format!("{base}/config{guid}.json");
        self.restored.insert(
            lc(&template_uri),
            RestoredDisks {
                template_uri: template_uri.clone(),
                config_uri: config_uri.clone(),
                storage_account: storage_account.clone(),
                target_subscription: target_subscription.clone(),
                target_rg: target_rg.clone(),
                rp,
            },
        );
        if let Some(j) = self.jobs.get_mut(&job.id) {
            let bag = &mut j.property_bag;
            bag.insert("Config Blob Name".into(), format!("config{guid}.json"));
            bag.insert("Config Blob Container Name".into(), container.clone());
            bag.insert("Config Blob Uri".into(), config_uri);
            bag.insert("Template Blob Uri".into(), template_uri);
            bag.insert("Target resource group".into(), target_rg.clone());
        }
        Ok(())
    }

    // ---------- deployments ----------

    pub fn start_deployment(&mut self, dep: Deployment) -> String {
        let key = lc(&dep.id);
        self.deployments.insert(key.clone(), dep);
        self.active_deployments.insert(key.clone());
        let op = self.new_guid();
        self.operations.insert(
            op.clone(),
            Operation {
                id: op.clone(),
                start: Utc::now(),
                kind: OpKindState::Deployment { key },
                result_item: None,
            },
        );
        op
    }

    fn complete_deployment(&mut self, key: &str) {
        let Some(dep) = self.deployments.get(key).cloned() else {
            return;
        };
        let Some(restored) = self.restored.get(&lc(&dep.template_uri)).cloned() else {
            self.set_deployment(
                key,
                DeploymentState::Failed(Failure::new("InvalidContentLink", "template is gone")),
                None,
            );
            return;
        };
        let id = vm_resource_id(&dep.subscription, &dep.resource_group, &dep.vm_name);
        if self.vms.contains_key(&lc(&id)) {
            self.set_deployment(
                key,
                DeploymentState::Failed(Failure::new(
                    "Conflict",
                    format!("A virtual machine named {} already exists in resource group {}; the restored disks cannot be attached to it.", dep.vm_name, dep.resource_group),
                )),
                None,
            );
            return;
        }
        let rp = restored.rp;
        let locked =
            rp.encryption.is_some() && rp.os_type == OsType::Linux && !rp.data_disks.is_empty();
        let vm = VmState {
            id: id.clone(),
            subscription: dep.subscription.clone(),
            resource_group: dep.resource_group.clone(),
            name: dep.vm_name.clone(),
            location: rp.location.clone(),
            os_type: rp.os_type,
            vm_size: rp.vm_size.clone(),
            vm_id: ade_backup_shared::ids::deterministic_uuid(&[
                "vm",
                &lc(&id),
                &dep.correlation_id,
            ])
            .to_string(),
            os_disk: Disk {
                name: format!("{}-osdisk-{}", dep.vm_name, rp.name),
                ..rp.os_disk.clone()
            },
            data_disks: rp
                .data_disks
                .iter()
                .map(|d| Disk {
                    name: format!(
                        "{}-datadisk-{}-{}",
                        dep.vm_name,
                        d.lun.unwrap_or(0),
                        rp.name
                    ),
                    ..d.clone()
                })
                .collect(),
            tags: BTreeMap::new(),
            power_state: PowerState::Running,
            extensions: BTreeMap::new(),
            encryption: None,
            data_disks_locked: locked,
            restored_encryption: rp.encryption.clone(),
            created: dep.done_at,
        };
        self.vms.insert(lc(&id), vm);
        self.set_deployment(key, DeploymentState::Succeeded, Some(id));
    }

    fn set_deployment(&mut self, key: &str, state: DeploymentState, vm: Option<String>) {
        if let Some(d) = self.deployments.get_mut(key) {
            d.state = state;
            d.output_vm = vm;
        }
    }

    // ---------- rendering ----------

    pub fn vm_json(&self, vm: &VmState, instance_view: bool, now: DateTime<Utc>) -> Value {
        let disk_id = |name: &str| {
            format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/disks/{name}",
                vm.subscription, vm.resource_group
            )
        };
        let enc = vm.encryption.as_ref().or(vm.restored_encryption.as_ref());
        let enc_settings = |e: &Encryption| {
            let mut v = json!({
                "enabled": true,
                "diskEncryptionKey": {"secretUrl": e.secret_url, "sourceVault": {"id": e.key_vault_id}}
            });
            if let (Some(k), Some(kv)) = (&e.kek_url, &e.kek_vault_id) {
                v["keyEncryptionKey"] = json!({"keyUrl": k, "sourceVault": {"id": kv}});
            }
            v
        };
        let os_encrypted = vm
            .encryption
            .as_ref()
            .is_some_and(|e| !e.volume_type.eq_ignore_ascii_case("Data"))
            || (vm.restored_encryption.is_some() && vm.os_type == OsType::Windows);
        let mut os_disk = json!({
            "osType": vm.os_type.as_str(),
            "name": vm.os_disk.name,
            "createOption": "FromImage",
            "caching": "ReadWrite",
            "managedDisk": {"storageAccountType": "Premium_LRS", "id": disk_id(&vm.os_disk.name)},
            "deleteOption": "Detach",
            "diskSizeGB": vm.os_disk.size_gb
        });
        if let (true, Some(e)) = (os_encrypted, enc) {
            os_disk["encryptionSettings"] = enc_settings(e);
        }
        let data_disks: Vec<Value> = vm
            .data_disks
            .iter()
            .map(|d| {
                json!({
                    "lun": d.lun.unwrap_or(0),
                    "name": d.name,
                    "createOption": "Attach",
                    "caching": "None",
                    "managedDisk": {"storageAccountType": "Premium_LRS", "id": disk_id(&d.name)},
                    "deleteOption": "Detach",
                    "diskSizeGB": d.size_gb,
                    "toBeDetached": false
                })
            })
            .collect();
        let mut props = json!({
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": vm.vm_size},
            "storageProfile": {"osDisk": os_disk, "dataDisks": data_disks},
            "osProfile": {
                "computerName": vm.name,
                "adminUsername": "azureuser",
                "allowExtensionOperations": true,
                "requireGuestProvisionSignal": true
            },
            "networkProfile": {"networkInterfaces": [{"id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}-nic", vm.subscription, vm.resource_group, vm.name)}]},
            "provisioningState": "Succeeded",
            "timeCreated": ts(vm.created)
        });
        if vm.os_type == OsType::Windows {
            props["osProfile"]["windowsConfiguration"] =
                json!({"provisionVMAgent": true, "enableAutomaticUpdates": true});
        } else {
            props["osProfile"]["linuxConfiguration"] =
                json!({"disablePasswordAuthentication": true, "provisionVMAgent": true});
        }
        if instance_view {
            props["instanceView"] = self.instance_view(vm, now);
        }
        let resources: Vec<Value> = vm
            .extensions
            .values()
            .map(|e| json!({"id": format!("{}/extensions/{}", vm.id, e.name)}))
            .collect();
        let mut out = json!({
            "name": vm.name,
            "id": vm.id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": vm.location,
            "tags": vm.tags,
            "properties": props
        });
        if !resources.is_empty() {
            out["resources"] = json!(resources);
        }
        out
    }

    /// Per-disk encryption state as the instance view reports it.
    pub fn disk_states(&self, vm: &VmState) -> Vec<(Disk, &'static str)> {
        let mut out = Vec::new();
        let enc_vol = vm.encryption.as_ref().map(|e| lc(&e.volume_type));
        let os_state = match (&enc_vol, &vm.restored_encryption) {
            (Some(v), _) if v != "data" => "encrypted",
            (None, Some(_)) if vm.os_type == OsType::Windows => "encrypted",
            _ => "notEncrypted",
        };
        out.push((vm.os_disk.clone(), os_state));
        for d in &vm.data_disks {
            let st = if vm.data_disks_locked {
                "locked"
            } else {
                match &enc_vol {
                    Some(v) if v != "os" => "encrypted",
                    _ => "notEncrypted",
                }
            };
            out.push((d.clone(), st));
        }
        out
    }

    fn instance_view(&self, vm: &VmState, now: DateTime<Utc>) -> Value {
        let enc = vm.encryption.as_ref().or(vm.restored_encryption.as_ref());
        let disks: Vec<Value> = self
            .disk_states(vm)
            .into_iter()
            .map(|(d, st)| {
                let mut v = json!({
                    "name": d.name,
                    "statuses": [
                        {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": ts(vm.created)},
                        {"code": format!("EncryptionState/{st}"), "level": if st == "locked" { "Warning" } else { "Info" },
                         "displayStatus": match st { "encrypted" => "Encryption is enabled on disk", "locked" => "Disk is encrypted but locked: the Azure Disk Encryption extension is not installed", _ => "Encryption is not enabled on disk" }}
                    ]
                });
                if let (true, Some(e)) = (st != "notEncrypted", enc) {
                    let mut es = json!({"diskEncryptionKey": {"secretUrl": e.secret_url, "sourceVault": {"id": e.key_vault_id}}, "enabled": true});
                    if let (Some(k), Some(kv)) = (&e.kek_url, &e.kek_vault_id) {
                        es["keyEncryptionKey"] = json!({"keyUrl": k, "sourceVault": {"id": kv}});
                    }
                    v["encryptionSettings"] = json!([es]);
                }
                v
            })
            .collect();
        let extensions: Vec<Value> = vm
            .extensions
            .values()
            .map(|e| {
                let (code, level, display, msg) = match &e.state {
                    ExtState::Creating => ("ProvisioningState/transitioning", "Info", "Provisioning in progress", "Enable in progress".to_string()),
                    ExtState::Succeeded => ("ProvisioningState/succeeded", "Info", "Provisioning succeeded", if e.is_ade() { "Encryption succeeded for data volumes".to_string() } else { "Enable succeeded".to_string() }),
                    ExtState::Failed(m) => ("ProvisioningState/failed", "Error", "Provisioning failed", m.clone()),
                };
                json!({
                    "name": e.name,
                    "type": format!("{}.{}", e.publisher, e.ext_type),
                    "typeHandlerVersion": e.type_handler_version,
                    "statuses": [{"code": code, "level": level, "displayStatus": display, "message": msg, "time": ts(e.ready_at.min(now))}]
                })
            })
            .collect();
        let (power_code, power_display) = match vm.power_state {
            PowerState::Running => ("PowerState/running", "VM running"),
            PowerState::Stopped => ("PowerState/stopped", "VM stopped"),
            PowerState::Deallocated => ("PowerState/deallocated", "VM deallocated"),
        };
        json!({
            "computerName": vm.name,
            "osName": if vm.os_type == OsType::Windows { "Windows Server 2022 Datacenter" } else { "ubuntu" },
            "osVersion": if vm.os_type == OsType::Windows { "10.0.20348" } else { "22.04" },
            "vmAgent": {"vmAgentVersion": "2.7.41491.1102", "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready", "message": "GuestAgent is running and processing the extensions.", "time": ts(now)}]},
            "disks": disks,
            "extensions": extensions,
            "hyperVGeneration": "V2",
            "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded", "time": ts(vm.created)},
                {"code": power_code, "level": "Info", "displayStatus": power_display}
            ]
        })
    }

    pub fn extension_json(&self, vm: &VmState, e: &Extension) -> Value {
        let state = match e.state {
            ExtState::Creating => "Creating",
            ExtState::Succeeded => "Succeeded",
            ExtState::Failed(_) => "Failed",
        };
        json!({
            "name": e.name,
            "id": format!("{}/extensions/{}", vm.id, e.name),
            "type": "Microsoft.Compute/virtualMachines/extensions",
            "location": vm.location,
            "properties": {
                "autoUpgradeMinorVersion": true,
                "provisioningState": state,
                "publisher": e.publisher,
                "type": e.ext_type,
                "typeHandlerVersion": e.type_handler_version,
                "settings": e.settings
            }
        })
    }

    pub fn kv_json(&self, kv: &KvState) -> Value {
        let policies: Vec<Value> = kv
            .access_policies
            .iter()
            .map(|p| json!({"tenantId": p.tenant_id, "objectId": p.object_id, "permissions": {"keys": p.keys, "secrets": p.secrets, "certificates": p.certificates}}))
            .collect();
        json!({
            "id": kv.id,
            "name": kv.name,
            "type": "Microsoft.KeyVault/vaults",
            "location": kv.location,
            "tags": {},
            "properties": {
                "sku": {"family": "A", "name": "standard"},
                "tenantId": self.tenant_id,
                "accessPolicies": policies,
                "enabledForDeployment": false,
                "enabledForDiskEncryption": kv.enabled_for_disk_encryption,
                "enabledForTemplateDeployment": false,
                "enableSoftDelete": true,
                "softDeleteRetentionInDays": 90,
                "enableRbacAuthorization": kv.model == KeyVaultModel::Rbac,
                "enablePurgeProtection": true,
                "vaultUri": kv.vault_uri(),
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled"
            }
        })
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
        let vault_id = self
            .rs_vaults
            .get(&item.vault_key)
            .map(|v| v.id.clone())
            .unwrap_or_default();
        format!(
            "{vault_id}/backupFabrics/Azure/protectionContainers/{}/protectedItems/{}",
            item.container, item.name
        )
    }

    pub fn protected_item_json(&self, item: &ProtectedItem) -> Value {
        let vault_id = self
            .rs_vaults
            .get(&item.vault_key)
            .map(|v| v.id.clone())
            .unwrap_or_default();
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
                }
            }
        })
    }

    pub fn recovery_point_json(
        &self,
        item: &ProtectedItem,
        rp: &RecoveryPoint,
        now: DateTime<Utc>,
    ) -> Value {
        let mut tiers = vec![
            json!({"type": "InstantRP", "status": if now < rp.instant_until { "Valid" } else { "Deleted" }}),
        ];
        if rp.hardened_at.is_some_and(|h| h <= now) {
            tiers.push(json!({"type": "HardenedRP", "status": "Valid"}));
        }
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

    pub fn job_json(&self, job: &Job, extended: bool, now: DateTime<Utc>) -> Value {
        let vault_id = self
            .rs_vaults
            .get(&job.vault_key)
            .map(|v| v.id.clone())
            .unwrap_or_default();
        let status = match job.status {
            JobStatus::InProgress => "InProgress",
            JobStatus::Completed => "Completed",
            JobStatus::Failed => "Failed",
        };
        let end = job.ended.unwrap_or(now);
        let mut props = json!({
            "jobType": "AzureIaaSVMJob",
            "entityFriendlyName": job.entity_friendly_name,
            "backupManagementType": "AzureIaasVM",
            "operation": job.operation(),
            "status": status,
            "startTime": ts(job.start),
            "activityId": ade_backup_shared::ids::deterministic_uuid(&["activity", &job.id]).to_string(),
            "duration": iso_duration(end - job.start),
            "virtualMachineVersion": "Compute",
            "actionsInfo": if job.status == JobStatus::InProgress { json!(["Cancellable"]) } else { json!([]) },
            "errorDetails": match &job.error {
                Some(f) => json!([{"errorCode": f.code, "errorString": f.message, "recommendations": [recommendation(&f.code)]}]),
                None => json!([]),
            }
        });
        if let Some(e) = job.ended {
            props["endTime"] = json!(ts(e));
        }
        if extended {
            let tasks: Vec<Value> = match &job.kind {
                JobKind::Backup {
                    snapshot_at,
                    snapshot_done,
                    ..
                } => {
                    let snap_status = if *snapshot_done {
                        "Completed"
                    } else if job.status == JobStatus::Failed {
                        "Failed"
                    } else {
                        "InProgress"
                    };
                    let xfer_status = match (&job.status, snapshot_done) {
                        (JobStatus::Completed, _) => "Completed",
                        (JobStatus::Failed, _) => "Cancelled",
                        (_, true) => "InProgress",
                        _ => "NotStarted",
                    };
                    vec![
                        json!({"taskId": "Take Snapshot", "status": snap_status, "startTime": ts(job.start), "endTime": if *snapshot_done { json!(ts(*snapshot_at)) } else { Value::Null }}),
                        json!({"taskId": "Transfer data to vault", "status": xfer_status}),
                    ]
                }
                JobKind::Restore { .. } => {
                    vec![json!({"taskId": "Transfer data", "status": status})]
                }
                JobKind::ConfigureBackup | JobKind::DisableBackup => vec![],
            };
            let mut bag: Map<String, Value> = job
                .property_bag
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            bag.retain(|k, _| !k.trim().is_empty());
            props["extendedInfo"] = json!({"tasksList": tasks, "propertyBag": bag});
            if let Some(f) = &job.error {
                props["extendedInfo"]["dynamicErrorMessage"] = json!(f.message);
            }
        }
        json!({
            "id": format!("{vault_id}/backupJobs/{}", job.id),
            "name": job.id,
            "type": "Microsoft.RecoveryServices/vaults/backupJobs",
            "properties": props
        })
    }

    pub fn deployment_json(&self, d: &Deployment, now: DateTime<Utc>) -> Value {
        let (state, error) = match &d.state {
            DeploymentState::Running => ("Running", None),
            DeploymentState::Succeeded => ("Succeeded", None),
            DeploymentState::Failed(f) => ("Failed", Some(f)),
        };
        let end = if d.state == DeploymentState::Running {
            now
        } else {
            d.done_at
        };
        let mut props = json!({
            "provisioningState": state,
            "timestamp": ts(end),
            "duration": iso_duration(end - d.start),
            "correlationId": d.correlation_id,
            "mode": "Incremental",
            "templateLink": {"uri": d.template_uri},
            "parameters": {"VirtualMachineName": {"type": "String", "value": d.vm_name}},
            "outputResources": d.output_vm.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()
        });
        if let Some(f) = error {
            props["error"] = json!({"code": "DeploymentFailed", "message": "At least one resource deployment operation failed.", "details": [{"code": f.code, "message": f.message}]});
        }
        json!({"id": d.id, "name": d.name, "type": "Microsoft.Resources/deployments", "properties": props})
    }
}

fn recommendation(code: &str) -> &'static str {
    match code {
        codes::KEY_VAULT_PERMISSIONS => "Grant the Backup Management Service get and list on secrets (and get, list, backup on keys when a KEK is used) in the key vault, or assign it a role with the required dataActions on RBAC vaults, then retry.",
        codes::KEK_FROM_CERTIFICATE => "Re-encrypt the VM with a standalone key as KEK.",
        codes::ENCRYPTED_RESTORE_DISK_LIMITS => "Create the VM from the restored disks and reapply the disk encryption settings by hand.",
        _ => "Retry the operation. If the issue persists, contact Microsoft support.",
    }
}

/// Whether an assignment at `assignment_scope` applies at `target` (same scope or an ancestor).
pub fn scope_covers(assignment_scope: &str, target: &str) -> bool {
    let a = assignment_scope.trim_end_matches('/');
    let t = target.trim_end_matches('/');
    a.is_empty() || t == a || t.starts_with(&format!("{a}/"))
}

/// RBAC action matching with `*` wildcards (case-insensitive).
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p = lc(pattern);
    let a = lc(action);
    if !p.contains('*') {
        return p == a;
    }
    let parts: Vec<&str> = p.split('*').collect();
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else if let Some(pos) = rest.find(part) {
            rest = &rest[pos + part.len()..];
        } else {
            return false;
        }
    }
    true
}

pub fn ade_extension_names(os: OsType) -> (&'static str, &'static str, &'static str) {
    match os {
        OsType::Windows => ("AzureDiskEncryption", "AzureDiskEncryption", "2.2"),
        OsType::Linux => (
            "AzureDiskEncryptionForLinux",
            "AzureDiskEncryptionForLinux",
            "1.1",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_actions() {
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/*",
            "microsoft.keyvault/vaults/keys/read"
        ));
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/backup/action"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/secrets/read"
        ));
    }

    #[test]
    fn scopes_cover_descendants_only() {
        assert!(scope_covers(
            "/subscriptions/a",
            "/subscriptions/a/resourcegroups/r"
        ));
        assert!(scope_covers(
            "/subscriptions/a/resourcegroups/r",
            "/subscriptions/a/resourcegroups/r"
        ));
        assert!(!scope_covers(
            "/subscriptions/a/resourcegroups/r",
            "/subscriptions/a/resourcegroups/r2"
        ));
    }

    #[test]
    fn sample_fleet_ade_vms_are_encrypted_with_their_vaults() {
        let w = World::from_fleet(&Fleet::sample(), Utc::now(), Durations::default());
        let kek_vm = w.vms.values().find(|v| v.name == "web-lnx-02").expect("vm");
        let enc = kek_vm.encryption.as_ref().expect("encrypted");
        assert!(enc
            .kek_url
            .as_deref()
            .is_some_and(|u| u.contains("/keys/kek-weu/")));
        assert!(enc
            .secret_url
            .starts_with("https://kv-ade-ap-weu.vault.azure.net/secrets/"));
        // Fleet ADE on a vault not enabled for disk encryption cannot have succeeded.
        let legacy = w
            .vms
            .values()
            .find(|v| v.name == "legacy-lnx-01")
            .expect("vm");
        assert!(legacy.encryption.is_none());
    }

    #[test]
    fn backup_access_follows_access_policies() {
        let mut w = World::from_fleet(&Fleet::sample(), Utc::now(), Durations::default());
        let enc = w
            .vms
            .values()
            .find(|v| v.name == "web-lnx-02")
            .and_then(|v| v.encryption.clone())
            .expect("enc");
        let err = w.check_backup_access(&enc).expect_err("no policy yet");
        assert_eq!(err.code, codes::KEY_VAULT_PERMISSIONS);
        let bms = w.bms_object_id.clone();
        let tenant = w.tenant_id.clone();
        let kv = w.key_vaults.get_mut("kv-ade-ap-weu").expect("kv");
        kv.access_policies.push(KvAccessPolicy {
            tenant_id: tenant.clone(),
            object_id: bms.clone(),
            keys: vec![],
            secrets: vec!["get".into(), "list".into()],
            certificates: vec![],
        });
        assert!(
            w.check_backup_access(&enc).is_err(),
            "KEK needs key permissions"
        );
        let kv = w.key_vaults.get_mut("kv-ade-ap-weu").expect("kv");
        kv.access_policies.last_mut().expect("policy").keys =
            vec!["Get".into(), "List".into(), "Backup".into()];
        w.check_backup_access(&enc).expect("allowed");
    }
}
