//! The in-memory Azure world and its behaviour over simulated time.
//!
//! This file owns [`World`] itself: its construction from a [`Fleet`], the clock [`World::tick`],
//! ids, error codes and the small helpers every service shares. Each Azure service's state and
//! behaviour lives in its own module, as `routes/` serves them: `compute` (VMs, disks,
//! extensions), `ade` (Azure Disk Encryption), `keyvault`, `authorization` (RBAC),
//! `recovery_services` (vaults, protected items, recovery points), `backup_jobs` (backup,
//! protection and restore jobs), `deployments`, `operations` (async operation status) and
//! `simple_resources` (storage accounts, virtual networks). Their items are re-exported here,
//! so `crate::world::X` names everything.

mod ade;
mod authorization;
mod backup_jobs;
mod compute;
mod deletions;
mod deployments;
mod field;
mod keyvault;
pub mod keyvault_data;
mod operations;
mod recovery_services;
mod simple_resources;
mod source_vm;

pub use ade::{ade_extension_names, Encryption};
pub use authorization::{
    action_matches, scope_covers, RoleAssignment, RoleDef, BACKUP_DATA_ACTIONS,
    KEY_VAULT_ADMINISTRATOR,
};
pub use backup_jobs::{Job, JobKind, JobStatus, RestoredDisks};
pub use compute::{vm_resource_id, Disk, ExtState, Extension, VmState};
pub use deletions::{nic_id, AttachedResource, DISK_TYPE, NIC_TYPE};
pub use deployments::{Deployment, DeploymentState};
pub use field::{FieldSwitches, RESTORE_LIMIT_CODE, SNAPSHOT_KEYS_CODE};
pub use keyvault::{KvAccessPolicy, KvState};
pub use operations::{OpKindState, OpStatus, Operation};
pub use recovery_services::{
    container_name, item_name, ProtectedItem, RecoveryPoint, RsVault, PROTECTION_STOPPED_STATE,
};
pub use simple_resources::SimpleResource;
pub use source_vm::{daily_limit_body, GuestModel, DAILY_LIMIT_CODE, ON_DEMAND_BACKUPS_PER_DAY};

use crate::fleet::{self, Fleet};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
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

/// The ARM id of resource `name` of type `rtype` (`Provider/type`) in a resource group.
pub fn resource_id_of(sub: &str, rg: &str, rtype: &str, name: &str) -> String {
    resource_id(sub, rg, rtype, name)
}

fn resource_id(sub: &str, rg: &str, rtype: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{rtype}/{name}")
}

/// An ISO 8601 duration as ARM reports one (`PT12.345S`).
fn iso_duration(d: Duration) -> String {
    let secs = d.num_milliseconds().max(0) as f64 / 1000.0;
    format!("PT{secs:.3}S")
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
    /// Restore-side field failures that are switched on (see `field`).
    pub field: FieldSwitches,
    pub storage_accounts: BTreeMap<String, SimpleResource>,
    pub virtual_networks: BTreeMap<String, SimpleResource>,
    /// Managed disks and NICs of restored VMs, by lower-case id (see `deletions`).
    pub attached: BTreeMap<String, AttachedResource>,
    /// Lower-case ids of every DELETE request, in order (see `deletions`).
    pub delete_requests: Vec<String>,
    /// Ids of every resource actually deleted, in order.
    pub deleted: Vec<String>,
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
    /// `routes::resource_graph`): continuation pages read the rows their first page matched (rendered page by page).
    #[serde(skip)]
    pub graph_snapshots: std::collections::VecDeque<(
        u64,
        std::sync::Arc<Vec<crate::routes::resource_graph::RowRef>>,
    )>,
    /// When each protected item's on-demand backups were accepted (see `source_vm`).
    pub on_demand_backups: BTreeMap<String, Vec<DateTime<Utc>>>,
    /// Where a Backup now past the daily limit is refused: the trigger call (400, default) or,
    /// when set, the trigger's long-running operation (`Failed` with the same error).
    pub daily_limit_in_operation: bool,
    /// Serve ids as Azure Backup spells them (issue 14, item 7): child ids of a vault with
    /// `resourcegroups/{RG upper-cased}/providers/microsoft.recoveryservices`, and the
    /// `Location` / `Azure-AsyncOperation` headers of protected-item operations with
    /// `iaasvmcontainer;iaasVMContainerV2;{RG};{vm}` / `vm;iaasVMContainerV2;{RG};{vm}`, while
    /// item bodies say `IaasVMContainer;iaasvmcontainerv2;…` (see `recovery_services`).
    pub varied_casing: bool,
    /// The Key Vault data plane (secret values, backups, Encryption Info blobs); never
    /// serialized (it holds secret values).
    #[serde(skip)]
    pub kv_data: keyvault_data::KvDataPlane,
}

impl World {
    /// The world a fleet description starts as: built-in roles, then the fleet's key vaults,
    /// storage accounts, virtual networks, Recovery Services vaults and VMs (VMs last: their
    /// encryption and protection refer to the vaults).
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
            field: FieldSwitches::default(),
            storage_accounts: BTreeMap::new(),
            virtual_networks: BTreeMap::new(),
            attached: BTreeMap::new(),
            delete_requests: Vec::new(),
            deleted: Vec::new(),
            durations,
            active_jobs: BTreeSet::new(),
            active_extensions: BTreeSet::new(),
            active_deployments: BTreeSet::new(),
            counter: 0,
            graph_snapshots: Default::default(),
            kv_data: Default::default(),
            on_demand_backups: BTreeMap::new(),
            daily_limit_in_operation: false,
            varied_casing: false,
        };
        w.add_builtin_roles();
        for kv in &fleet.key_vaults {
            w.add_fleet_key_vault(kv);
        }
        w.add_fleet_simple_resources(fleet);
        for rsv in &fleet.recovery_services_vaults {
            w.add_fleet_rs_vault(rsv);
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

    /// A fresh id for a Resource Graph snapshot.
    pub fn new_snapshot_id(&mut self) -> u64 {
        self.next_number()
    }

    /// A deterministic-per-run unique GUID.
    pub fn new_guid(&mut self) -> String {
        let n = self.next_number();
        ade_backup_shared::ids::deterministic_uuid(&[&self.tenant_id, "sim", &n.to_string()])
            .to_string()
    }

    /// Advance every time-dependent object to `now`: extensions finish provisioning, jobs move
    /// on (see `backup_jobs`), deployments complete.
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
}
