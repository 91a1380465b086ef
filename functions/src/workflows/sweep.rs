//! The scheduled policy sweep: reconcile every ADE VM in the configured subscriptions with the
//! protection rules, with as few ARM calls as Azure allows, and start only the work needed.
//!
//! One run:
//! 1. **Guard.** Take a lease on `runs/sweep/latest.json` (Blob: Lease Blob, 60 s, renewed every
//!    20 s by a background task while the run works). A live lease held by another run means
//!    "another sweep is running": this run exits without touching anything and says so in its
//!    return. A lease is not a write (it changes neither the document nor its ETag). A crashed
//!    run's lease lapses within a minute and the next tick takes over (the store reports the lease
//!    as `expired`, which the summary records); since the plan is recomputed from Azure every
//!    time, the next run redoes whatever was left undone. A run that loses its lease (a renewal
//!    failed and someone else took it) starts no further VM work.
//! 2. **Discovery** by Azure Resource Graph only (1,000 rows a page, `$skipToken`): VMs, ADE
//!    extensions, Key Vaults (access policies), the Backup Management Service's role assignments
//!    (RBAC vaults) and protected items, over all configured subscriptions at once; then one
//!    `GET backupPolicies/{p}` per distinct (vault, policy) for the RPO, cached for the run. An
//!    unchanged 10,000-VM fleet costs a few dozen calls, never one GET per VM.
//! 3. **Plan** with [`crate::domain::sweep_plan::plan`]. Per-VM records are read only for VMs the
//!    plan wants to act on (an `in-progress` record means work is already in flight).
//! 4. **Fan-out** with bounded concurrency: [`protect::evaluate_observed`] per VM that needs work
//!    (`repair` when Azure already protects it), handed what discovery already knows (VM, Key
//!    Vault access and settings, protection state, the vault's location) so the workflow reads
//!    none of it again. It reuses open operations, so nothing in flight is duplicated. VMs that
//!    need a human are listed in the summary. Healthy protected ADE VMs without a record
//!    (protected before ade-backup) are adopted: their ADE settings are recorded once (one `list`
//!    of `vms/` per run finds them).
//! 5. **Summary**: written into `latest.json` under the lease (the run's one write), then the
//!    lease is released. `runs/sweep/{runId}.json` is written only when something changed (work
//!    started, the drift picture differs from the last run's, or a VM failed). **An unchanged
//!    fleet costs exactly one state write (the summary), two state reads (the last summary, the
//!    list of VM records), two lease calls (acquire — on Blob with a properties read — and
//!    release) and zero ARM writes.**
//!
//! Resource Graph query and row shapes: `Azure/azure-rest-api-specs` resourcegraph 2022-10-01
//! examples `ResourcesFirstPageQuery.json` / `ResourcesNextPageQuery.json`, and docs/arm-surface.md
//! (the KQL subset the simulator implements, `project` included).

use super::protect::{self, ObservedVm, Origin, SweepFacts};
use crate::context::Context;
use crate::domain::ade::{self, AdeState, ExtensionObservation, OsType, VmObservation};
use crate::domain::kv_access::{self, KeyMode};
use crate::domain::sweep_plan::{self, Action, Drift, FleetVm, ProtectedItemView, VmPlan};
use crate::domain::sweep_scope::TagFilter;
use crate::engine::WorkflowError;
use crate::handlers::HandlerError;
use crate::records::{self, ProtectionStatus, VmRecord, SWEEP_LATEST_KEY};
use ade_backup_shared::arm::{queries, ArmError, ArmStats, GraphScope, SubscriptionId};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::{
    json, ETag, LeaseAcquired, LeaseId, LeaseState, StateError, StateStore,
};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many VMs are worked on at once. ARM pacing (per subscription) is the real limit; this only
/// bounds memory and open connections.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// The run lease's length: the longest the Blob service allows short of an infinite lease. A
/// running sweep renews it every third of this; a crashed run blocks the schedule at most this
/// long.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);
/// An `in-progress` VM record older than this is treated as stalled: the sweep evaluates the VM
/// again, which re-sends the operation's current step (duplicate detection and step claims keep
/// that idempotent) instead of waiting forever.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub concurrency: usize,
    pub lease: std::time::Duration,
    /// Explicit run id (tests); default: `sweep-{yyyymmddThhmmssZ}-{random}`.
    pub run_id: Option<String>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            lease: DEFAULT_LEASE,
            run_id: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("settings ADE_BACKUP_SUBSCRIPTIONS and ADE_BACKUP_MANAGEMENT_GROUPS are both empty: the sweep needs at least one subscription id or management group to reconcile")]
    NoSubscriptions,
    #[error("Resource Graph discovery failed while reading {what}: {source}")]
    Discovery {
        what: &'static str,
        #[source]
        source: ArmError,
    },
    #[error("could not find the Backup Management Service object id (set ADE_BACKUP_BMS_OBJECT_ID to skip the lookup): {0}")]
    BmsObjectId(String),
    #[error("state store: {0}")]
    State(#[from] StateError),
    /// Some already-protected VMs could not be recorded; the next run retries them.
    #[error("{adopted} recorded, {failed} failed (first: {first})")]
    Adoption {
        adopted: u64,
        failed: usize,
        first: String,
    },
}

impl From<SweepError> for HandlerError {
    fn from(e: SweepError) -> Self {
        // A timer run has no message to dead-letter: every failure is "try again next tick".
        HandlerError::Transient(e.to_string())
    }
}

/// `runs/sweep/latest.json` (its blob lease is the run guard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepLatest {
    pub last: Option<SweepSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeedsHuman {
    pub vm_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmFailure {
    pub vm_id: String,
    pub error: String,
}

/// ARM usage of one run (deltas of the process-wide client counters: work other handlers of the
/// same process did meanwhile is included).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmUsage {
    pub calls: u64,
    pub calls_by_operation: BTreeMap<String, u64>,
    pub throttled: u64,
    pub retries: u64,
    pub paced_wait_ms: u64,
}

impl ArmUsage {
    pub fn between(before: &ArmStats, after: &ArmStats) -> Self {
        let calls_by_operation: BTreeMap<String, u64> = after
            .calls
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(before.calls.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect();
        Self {
            calls: calls_by_operation.values().sum(),
            calls_by_operation,
            throttled: after.throttled.saturating_sub(before.throttled),
            retries: after.retries.saturating_sub(before.retries),
            paced_wait_ms: after.paced_wait_ms.saturating_sub(before.paced_wait_ms),
        }
    }
}

/// What one run did (the `last` of `latest.json`, and `runs/sweep/{runId}.json` when it changed
/// something).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `completed` or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// The previous run's lease lapsed without a release (it crashed or overran) and this run
    /// took over; `last_run_id` names the last run that did finish.
    pub took_over_expired_lease: bool,
    pub last_run_id: Option<String>,
    /// Subscriptions the run covered (management groups expanded).
    pub subscriptions: usize,
    /// The configured scope, as text: subscriptions, management groups, tag filter.
    #[serde(default)]
    pub scope: String,
    pub vms_seen: usize,
    pub ade_vms: usize,
    pub protected_items: usize,
    /// VMs per outcome: `protection-started`, `repair-started`, `in-flight`, `needs-human`,
    /// `reported` (drift kept as is, e.g. a changed policy), `failed`.
    pub outcomes: BTreeMap<String, u64>,
    /// VMs per drift kind.
    pub drift: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
    pub needs_human: Vec<NeedsHuman>,
    pub failures: Vec<VmFailure>,
    pub warnings: Vec<String>,
    pub arm: ArmUsage,
    /// State reads of this run.
    pub state_reads: u64,
    /// State (blob) writes of this run, the summary write and the history write included.
    pub state_writes: u64,
    /// Lease calls of this run (acquire, renewals, release): not writes.
    pub lease_calls: u64,
    pub changed: bool,
    /// Fingerprint of the drift picture; a run whose picture matches the last one and that
    /// started no work changed nothing.
    pub plan_digest: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum SweepOutcome {
    Completed(Box<SweepSummary>),
    /// Another run holds the lease; nothing was read from Azure or written.
    Skipped {
        reason: String,
    },
}

/// The dry-run report: the plan, and what discovery saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPlanReport {
    pub generated_at: DateTime<Utc>,
    /// The configured scope (subscriptions, management groups, tag filter).
    pub scope: String,
    /// Subscriptions the discovery covered (management groups expanded).
    pub subscriptions: Vec<String>,
    pub vms_seen: usize,
    pub ade_vms: usize,
    pub protected_items: usize,
    pub key_vaults: usize,
    pub key_vaults_with_access: usize,
    pub drift: BTreeMap<String, u64>,
    pub actions: BTreeMap<String, u64>,
    pub plans: Vec<VmPlan>,
    pub warnings: Vec<String>,
    pub arm: ArmUsage,
}

// ------------------------------------------------------------------------------ state counting

/// Counts the state operations of one run (the summary reports them).
struct CountingStore {
    inner: Arc<dyn StateStore>,
    reads: AtomicU64,
    writes: AtomicU64,
    lease_calls: AtomicU64,
}

#[async_trait]
impl StateStore for CountingStore {
    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.create(key, body).await
    }
    async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.replace(key, body, etag).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix).await
    }
    async fn acquire_lease(
        &self,
        key: &str,
        duration: std::time::Duration,
        proposed: &LeaseId,
    ) -> Result<LeaseAcquired, StateError> {
        self.lease_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.acquire_lease(key, duration, proposed).await
    }
    async fn renew_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.lease_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.renew_lease(key, lease).await
    }
    async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
        self.lease_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.release_lease(key, lease).await
    }
    async fn replace_leased(
        &self,
        key: &str,
        body: &[u8],
        lease: &LeaseId,
    ) -> Result<ETag, StateError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.replace_leased(key, body, lease).await
    }
}

// ---------------------------------------------------------------------------------- discovery

/// What Resource Graph said about the fleet.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub subscriptions: Vec<SubscriptionId>,
    pub vms_seen: usize,
    pub vms: Vec<FleetVm>,
    pub protected_items: Vec<ProtectedItemView>,
    pub key_vaults: usize,
    pub key_vaults_with_access: HashSet<String>,
    /// `enabledForDiskEncryption` per Key Vault (canonical id) the ADE VMs use.
    pub key_vault_disk_encryption: HashMap<String, bool>,
    pub rpo: HashMap<(String, String), Duration>,
    pub warnings: Vec<String>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// The Resource Graph scopes of the sweep: the configured subscriptions, and the configured
/// management groups (every subscription below them). Both may be set; rows are merged by id.
fn scopes(ctx: &Context) -> Result<Vec<GraphScope>, SweepError> {
    let mut scopes = Vec::new();
    if !ctx.settings.subscriptions.is_empty() {
        scopes.push(GraphScope::Subscriptions(
            ctx.settings
                .subscriptions
                .iter()
                .copied()
                .map(SubscriptionId::from_uuid)
                .collect(),
        ));
    }
    if !ctx.settings.management_groups.is_empty() {
        scopes.push(GraphScope::ManagementGroups(
            ctx.settings.management_groups.clone(),
        ));
    }
    if scopes.is_empty() {
        return Err(SweepError::NoSubscriptions);
    }
    Ok(scopes)
}

/// The configured scope in one line (for the summary and the dry run).
pub fn scope_text(ctx: &Context) -> String {
    let mut parts: Vec<String> = scopes(ctx)
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    if !ctx.settings.sweep_tags.is_empty() {
        parts.push(format!("VMs tagged {}", ctx.settings.sweep_tags));
    }
    parts.join("; ")
}

/// Every row of `query` over every scope, each resource once.
async fn query_scopes(
    arm: &ade_backup_shared::arm::ArmClient,
    scopes: &[GraphScope],
    query: &str,
) -> Result<Vec<Value>, ArmError> {
    if let [only] = scopes {
        return arm.resource_graph_query(only, query).await;
    }
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for scope in scopes {
        for row in arm.resource_graph_query(scope, query).await? {
            let id = str_at(&row, &["id"])
                .unwrap_or_default()
                .to_ascii_lowercase();
            if id.is_empty() || seen.insert(id) {
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

async fn bms_object_id(ctx: &Context) -> Result<uuid::Uuid, SweepError> {
    protect::bms_object_id(ctx)
        .await
        .map_err(|e| SweepError::BmsObjectId(crate::engine::chain(&e)))
}

/// The queries, projected to the columns the sweep reads (smaller pages).
fn vm_query(tags: &TagFilter) -> String {
    format!(
        "{}{} | project id, location, tags, storageProfile = properties.storageProfile",
        queries::VIRTUAL_MACHINES,
        tags.kql_conditions()
    )
}
fn extension_query() -> String {
    format!(
        "{} | project id, name, publisher = properties.publisher, extensionType = properties.type, typeHandlerVersion = properties.typeHandlerVersion, provisioningState = properties.provisioningState, settings = properties.settings",
        queries::ADE_EXTENSIONS
    )
}
fn key_vault_query() -> String {
    format!(
        "{} | project id, enableRbacAuthorization = properties.enableRbacAuthorization, enabledForDiskEncryption = properties.enabledForDiskEncryption, accessPolicies = properties.accessPolicies",
        queries::KEY_VAULTS
    )
}
fn protected_item_query() -> String {
    format!("{} | project id, properties", queries::PROTECTED_ITEMS)
}
fn role_assignment_query(bms: uuid::Uuid) -> String {
    format!(
        "{} | project id, scope = properties.scope, roleDefinitionId = properties.roleDefinitionId",
        queries::role_assignments_of(bms)
    )
}

/// `/subscriptions/s/.../virtualMachines/vm/extensions/x` → the VM id (canonical).
fn extension_parent(id: &str) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    let pos = lower.rfind("/extensions/")?;
    ResourceId::parse(&id[..pos]).ok().map(|r| r.canonical())
}

fn observation_from_rows(id: &ResourceId, vm: &Value, exts: &[&Value]) -> VmObservation {
    let sp = vm.get("storageProfile").cloned().unwrap_or(Value::Null);
    let os_disk = sp.get("osDisk").cloned().unwrap_or(Value::Null);
    let data_disks: Vec<Value> = sp
        .get("dataDisks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let os_disk_encryption_enabled = os_disk
        .get("encryptionSettings")
        .and_then(|e| e.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let disk_sizes_gb = std::iter::once(&os_disk)
        .chain(data_disks.iter())
        .filter_map(|d| d.get("diskSizeGB").and_then(Value::as_u64))
        .collect();
    let extensions = exts
        .iter()
        .map(|e| ExtensionObservation {
            name: str_at(e, &["name"]).unwrap_or_default().to_string(),
            publisher: str_at(e, &["publisher"]).unwrap_or_default().to_string(),
            extension_type: str_at(e, &["extensionType"])
                .unwrap_or_default()
                .to_string(),
            type_handler_version: str_at(e, &["typeHandlerVersion"]).map(str::to_string),
            provisioning_state: str_at(e, &["provisioningState"]).map(str::to_string),
            settings: e.get("settings").cloned().unwrap_or(Value::Null),
        })
        .collect();
    VmObservation {
        id: id.clone(),
        os_type: str_at(&os_disk, &["osType"]).and_then(OsType::parse),
        extensions,
        os_disk_encryption_enabled,
        // Resource Graph has no instance view: in-progress encryption shows as the extension's
        // provisioning state, which the classifier reads.
        disk_encryption_codes: vec![],
        disk_sizes_gb,
        disk_count: 1 + data_disks.len(),
        kek_is_certificate: None,
    }
}

fn protected_item_from_row(row: &Value) -> Option<ProtectedItemView> {
    let id = str_at(row, &["id"])?;
    let props = row.get("properties")?;
    let vm =
        str_at(props, &["sourceResourceId"]).or_else(|| str_at(props, &["virtualMachineId"]))?;
    let vm_id = ResourceId::parse(vm).ok()?;
    let pos = id.to_ascii_lowercase().find("/backupfabrics/")?;
    let vault_id = ResourceId::parse(&id[..pos]).ok()?;
    let policy = str_at(props, &["policyName"])
        .map(str::to_string)
        .or_else(|| {
            str_at(props, &["policyId"]).and_then(|p| p.rsplit('/').next().map(str::to_string))
        });
    let last_backup_status = str_at(props, &["lastBackupStatus"]).map(str::to_string);
    let failed = last_backup_status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("failed") || s.eq_ignore_ascii_case("unhealthy"));
    let last_backup_error_code = failed.then(|| backup_error_code(props)).flatten();
    let last_recovery_point = str_at(props, &["lastRecoveryPoint"])
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Some(ProtectedItemView {
        vm_id,
        vault_id,
        policy,
        protection_state: str_at(props, &["protectionState"])
            .unwrap_or("Unknown")
            .to_string(),
        last_backup_status,
        last_backup_error_code,
        last_recovery_point,
    })
}

/// The error code of a failed last backup, from the item's `healthDetails` (Azure Backup puts the
/// code in `title`, with a sentence in `message`).
fn backup_error_code(props: &Value) -> Option<String> {
    let details = props.get("healthDetails")?.as_array()?;
    for d in details {
        if let Some(t) = str_at(d, &["title"]) {
            if t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Some(t.to_string());
            }
        }
        if let Some(m) = str_at(d, &["message"]) {
            if let Some(code) = sweep_plan::KEY_VAULT_PERMISSION_ERRORS
                .iter()
                .find(|c| m.contains(*c))
            {
                return Some(code.to_string());
            }
        }
    }
    None
}

/// What Azure Backup needs on one Key Vault, summed over the VMs that use it.
#[derive(Default, Clone, Copy)]
struct VaultNeed {
    secrets: bool,
    keys: bool,
}

fn vault_needs(vms: &[FleetVm]) -> HashMap<String, VaultNeed> {
    let mut out: HashMap<String, VaultNeed> = HashMap::new();
    for vm in vms {
        if let AdeState::Encrypted { settings, .. } = &vm.ade {
            out.entry(settings.key_vault_resource_id.canonical())
                .or_default()
                .secrets = true;
            if settings.key_encryption_key_url.is_some() {
                let kek = settings
                    .kek_vault_resource_id
                    .as_ref()
                    .unwrap_or(&settings.key_vault_resource_id);
                out.entry(kek.canonical()).or_default().keys = true;
            }
        }
    }
    out
}

fn access_policy_in_place(row: &Value, bms: &str, need: VaultNeed) -> bool {
    let entries: Vec<kv_access::PolicyEntry> = row
        .get("accessPolicies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    let list = |k: &str| -> Vec<String> {
                        p.get("permissions")
                            .and_then(|x| x.get(k))
                            .and_then(Value::as_array)
                            .map(|v| {
                                v.iter()
                                    .filter_map(|s| s.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default()
                    };
                    kv_access::PolicyEntry {
                        object_id: str_at(p, &["objectId"]).unwrap_or_default().to_string(),
                        permissions: kv_access::Permissions {
                            keys: list("keys"),
                            secrets: list("secrets"),
                        },
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let full = kv_access::required_permissions(KeyMode::BekKek);
    let required = kv_access::Permissions {
        keys: if need.keys { full.keys } else { vec![] },
        secrets: if need.secrets { full.secrets } else { vec![] },
    };
    kv_access::access_policy_in_place(&entries, bms, &required)
}

/// Whether a role assignment of the Backup Management Service covers `vault`: at the vault or a
/// parent scope, with Key Vault Administrator or ade-backup's least-privilege role (the two roles
/// the grant step creates or accepts).
fn role_assignment_covers(vault: &ResourceId, scope: &str, role_definition_id: &str) -> bool {
    let vault_c = vault.canonical();
    let scope_c = scope.trim_end_matches('/').to_ascii_lowercase();
    let in_scope = vault_c == scope_c
        || (vault_c.starts_with(&scope_c) && vault_c.as_bytes().get(scope_c.len()) == Some(&b'/'));
    let role = role_definition_id.to_ascii_lowercase();
    let ours = kv_access::custom_role_definition_name(vault.subscription()).to_ascii_lowercase();
    in_scope && (role.ends_with(kv_access::KEY_VAULT_ADMINISTRATOR_ROLE) || role.ends_with(&ours))
}

/// Reads the fleet with Resource Graph (and one policy GET per distinct policy).
pub async fn discover(ctx: &Context) -> Result<Discovery, SweepError> {
    let scopes = scopes(ctx)?;
    let arm = &ctx.arm;
    let bms = bms_object_id(ctx).await?;
    let g = |what: &'static str| move |source| SweepError::Discovery { what, source };
    let tags = &ctx.settings.sweep_tags;
    let (vm_rows, ext_rows, kv_rows, item_rows, ra_rows) = tokio::try_join!(
        async {
            query_scopes(arm, &scopes, &vm_query(tags))
                .await
                .map_err(g("virtual machines"))
        },
        async {
            query_scopes(arm, &scopes, &extension_query())
                .await
                .map_err(g("ADE extensions"))
        },
        async {
            query_scopes(arm, &scopes, &key_vault_query())
                .await
                .map_err(g("key vaults"))
        },
        async {
            query_scopes(arm, &scopes, &protected_item_query())
                .await
                .map_err(g("protected items"))
        },
        async {
            query_scopes(arm, &scopes, &role_assignment_query(bms))
                .await
                .map_err(g("role assignments of the Backup Management Service"))
        },
    )?;
    let mut warnings = Vec::new();

    let mut exts_by_vm: HashMap<String, Vec<&Value>> = HashMap::new();
    for e in &ext_rows {
        if let Some(vm) = str_at(e, &["id"]).and_then(extension_parent) {
            exts_by_vm.entry(vm).or_default().push(e);
        }
    }
    let mut vms = Vec::new();
    let mut subs = BTreeSet::new();
    for row in &vm_rows {
        let Some(id) = str_at(row, &["id"]).and_then(|s| ResourceId::parse(s).ok()) else {
            warnings.push(format!(
                "a virtual machine row has no valid id: {}",
                str_at(row, &["id"]).unwrap_or("<none>")
            ));
            continue;
        };
        // The subscriptions actually covered (management groups expand to theirs).
        if let Ok(sub) = SubscriptionId::of(&id) {
            subs.insert(sub);
        }
        // Only VMs with an ADE extension can need anything; the rest cost no classification.
        let Some(exts) = exts_by_vm.get(&id.canonical()) else {
            continue;
        };
        let obs = observation_from_rows(&id, row, exts);
        let tags = row
            .get("tags")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        vms.push(FleetVm {
            location: str_at(row, &["location"]).unwrap_or_default().to_string(),
            tags,
            ade: ade::classify(&obs),
            restore_warnings: ade::restore_limit_warnings(&obs),
            id,
        });
    }

    let needs = vault_needs(&vms);
    let bms_s = bms.to_string();
    let mut key_vaults_with_access = HashSet::new();
    let mut key_vault_disk_encryption = HashMap::new();
    let mut rbac_vaults = Vec::new();
    for row in &kv_rows {
        let Some(id) = str_at(row, &["id"]).and_then(|s| ResourceId::parse(s).ok()) else {
            continue;
        };
        let Some(need) = needs.get(&id.canonical()).copied() else {
            continue;
        };
        if let Some(enabled) = row.get("enabledForDiskEncryption").and_then(Value::as_bool) {
            key_vault_disk_encryption.insert(id.canonical(), enabled);
        }
        if row
            .get("enableRbacAuthorization")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            rbac_vaults.push(id);
        } else if access_policy_in_place(row, &bms_s, need) {
            key_vaults_with_access.insert(id.canonical());
        }
    }
    for vault in rbac_vaults {
        let covered = ra_rows.iter().any(|ra| {
            role_assignment_covers(
                &vault,
                str_at(ra, &["scope"]).unwrap_or_default(),
                str_at(ra, &["roleDefinitionId"]).unwrap_or_default(),
            )
        });
        if covered {
            key_vaults_with_access.insert(vault.canonical());
        }
    }

    let ade_vms: HashSet<String> = vms.iter().map(|v| v.id.canonical()).collect();
    let protected_items: Vec<ProtectedItemView> = item_rows
        .iter()
        .filter_map(protected_item_from_row)
        .filter(|i| ade_vms.contains(&i.vm_id.canonical()))
        .collect();

    // RPO: one GET per distinct (vault, policy), concurrently; cached for the run.
    let mut distinct: BTreeMap<(String, String), ResourceId> = BTreeMap::new();
    for i in &protected_items {
        let Some(p) = i.policy.as_ref() else { continue };
        let key = (i.vault_id.canonical(), p.to_ascii_lowercase());
        if let std::collections::btree_map::Entry::Vacant(e) = distinct.entry(key) {
            if let Ok(id) = i.vault_id.child("backupPolicies", p) {
                e.insert(id);
            }
        }
    }
    // Futures built up front (not in a stream closure): keeps the handler future `Send` for
    // every lifetime (a closure returning a borrowing future trips rustc's higher-ranked check).
    let arm = ctx.arm.clone();
    let tasks: Vec<_> = distinct
        .into_iter()
        .map(|((v, p), id)| {
            let arm = arm.clone();
            Box::pin(async move {
                let r = arm.get_backup_policy(&id).await;
                (v, p, id, r)
            })
        })
        .collect();
    let fetched: Vec<_> = futures::stream::iter(tasks)
        .buffer_unordered(8)
        .collect()
        .await;
    let mut rpo = HashMap::new();
    for (v, p, id, r) in fetched {
        match r {
            Ok(pol) => match pol.rpo() {
                Some(d) => {
                    rpo.insert((v, p), d);
                }
                None => warnings.push(format!(
                    "backup policy {id} has no schedule the sweep understands; its items are held to a 24 h RPO"
                )),
            },
            Err(e) => warnings.push(format!(
                "could not read backup policy {id} ({e}); its items are held to a 24 h RPO"
            )),
        }
    }

    Ok(Discovery {
        subscriptions: subs.into_iter().collect(),
        vms_seen: vm_rows.len(),
        vms,
        protected_items,
        key_vaults: kv_rows.len(),
        key_vaults_with_access,
        key_vault_disk_encryption,
        rpo,
        warnings,
    })
}

// --------------------------------------------------------------------------------------- plan

/// Stable name of a drift kind (the serde tag).
pub fn drift_kind(d: &Drift) -> &'static str {
    match d {
        Drift::Unprotected => "unprotected",
        Drift::KeyVaultAccessRemoved { .. } => "key-vault-access-removed",
        Drift::ProtectionStopped { .. } => "protection-stopped",
        Drift::PolicyChanged { .. } => "policy-changed",
        Drift::RecoveryPointStale { .. } => "recovery-point-stale",
        Drift::NoRecoveryPoint => "no-recovery-point",
        Drift::LastJobFailed { .. } => "last-job-failed",
    }
}

pub fn action_name(a: Action) -> &'static str {
    match a {
        Action::GrantAccess => "grant-access",
        Action::Protect => "protect",
        Action::BackupNow => "backup-now",
    }
}

/// A drift fact that does not change from run to run while the drift lasts (no ages), so the
/// per-VM record is written when the drift picture changes, not on every run.
fn drift_fact(d: &Drift) -> String {
    match d {
        Drift::KeyVaultAccessRemoved { key_vault } => {
            format!("key-vault-access-removed: {key_vault}")
        }
        Drift::ProtectionStopped { state } => format!("protection-stopped: {state}"),
        Drift::PolicyChanged { expected, actual } => {
            format!("policy-changed: rule wants {expected}, Azure has {actual} (kept)")
        }
        Drift::RecoveryPointStale { rpo_hours, .. } => {
            format!("recovery-point-stale: older than the {rpo_hours} h RPO")
        }
        Drift::LastJobFailed { code } => format!("last-job-failed: {code}"),
        other => drift_kind(other).to_string(),
    }
}

fn inputs<'a>(
    d: &'a Discovery,
    open: HashSet<String>,
    now: DateTime<Utc>,
) -> sweep_plan::SweepInputs<'a> {
    sweep_plan::SweepInputs {
        vms: &d.vms,
        protected_items: &d.protected_items,
        key_vaults_with_access: d.key_vaults_with_access.clone(),
        rpo: d.rpo.clone(),
        open_operations: open,
        now: Some(now),
    }
}

/// Plans, then reads the per-VM records of the VMs the plan would act on (only those) to find
/// work already in flight, and plans again with that.
async fn plan_with_in_flight(
    ctx: &Context,
    d: &Discovery,
    now: DateTime<Utc>,
) -> Result<Vec<VmPlan>, SweepError> {
    let rules = &ctx.settings.workflow.protection_rules;
    let first = sweep_plan::plan(rules, &inputs(d, HashSet::new(), now));
    let to_check: Vec<ResourceId> = first
        .iter()
        .filter(|p| !p.actions.is_empty())
        .map(|p| p.vm_id.clone())
        .collect();
    if to_check.is_empty() {
        return Ok(first);
    }
    let stalled = Duration::from_std(STALLED_AFTER).unwrap_or_else(|_| Duration::hours(2));
    let tasks: Vec<_> = to_check
        .into_iter()
        .map(|vm| {
            let state = ctx.state.clone();
            Box::pin(async move {
                let rec =
                    json::get::<VmRecord>(state.as_ref(), &records::vm_record_key(&vm)).await?;
                Ok::<_, StateError>(rec.and_then(|(r, _)| {
                    (r.status == ProtectionStatus::InProgress && now - r.updated_at < stalled)
                        .then(|| vm.canonical())
                }))
            })
        })
        .collect();
    let results: Vec<Result<Option<String>, StateError>> = futures::stream::iter(tasks)
        .buffer_unordered(32)
        .collect()
        .await;
    let mut open = HashSet::new();
    for r in results {
        if let Some(vm) = r? {
            open.insert(vm);
        }
    }
    if open.is_empty() {
        return Ok(first);
    }
    Ok(sweep_plan::plan(rules, &inputs(d, open, now)))
}

fn count_plans(plans: &[VmPlan]) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut drift = BTreeMap::new();
    let mut actions = BTreeMap::new();
    for p in plans {
        let kinds: BTreeSet<&str> = p.drift.iter().map(drift_kind).collect();
        for k in kinds {
            *drift.entry(k.to_string()).or_insert(0) += 1;
        }
        for a in &p.actions {
            *actions.entry(action_name(*a).to_string()).or_insert(0) += 1;
        }
    }
    (drift, actions)
}

fn plan_digest(plans: &[VmPlan]) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = plans
        .iter()
        .map(|p| {
            let facts: Vec<String> = p.drift.iter().map(drift_fact).collect();
            let actions: Vec<&str> = p.actions.iter().map(|a| action_name(*a)).collect();
            format!(
                "{}|{}|{}|{}|{}",
                p.vm_id.canonical(),
                facts.join(","),
                actions.join(","),
                p.needs_human.as_deref().unwrap_or(""),
                p.in_flight
            )
        })
        .collect();
    lines.sort();
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// The dry run: discovery and plan, nothing written (state is only read, for in-flight work).
pub async fn plan_only(ctx: &Context) -> Result<SweepPlanReport, SweepError> {
    let before = ctx.arm.stats();
    let now = ctx.clock.now();
    let d = discover(ctx).await?;
    let plans = plan_with_in_flight(ctx, &d, now).await?;
    let (drift, actions) = count_plans(&plans);
    Ok(SweepPlanReport {
        generated_at: now,
        scope: scope_text(ctx),
        subscriptions: d.subscriptions.iter().map(|s| s.to_string()).collect(),
        vms_seen: d.vms_seen,
        ade_vms: d.vms.len(),
        protected_items: d.protected_items.len(),
        key_vaults: d.key_vaults,
        key_vaults_with_access: d.key_vaults_with_access.len(),
        drift,
        actions,
        plans,
        warnings: d.warnings,
        arm: ArmUsage::between(&before, &ctx.arm.stats()),
    })
}

/// The dry-run report as a text table (one line per VM that needs anything).
pub fn render_table(report: &SweepPlanReport) -> String {
    let mut rows: Vec<[String; 4]> =
        vec![["VM".into(), "DRIFT".into(), "ACTIONS".into(), "NOTE".into()]];
    for p in &report.plans {
        let drift: Vec<&str> = p.drift.iter().map(drift_kind).collect();
        let actions: Vec<&str> = p.actions.iter().map(|a| action_name(*a)).collect();
        let note = if let Some(h) = &p.needs_human {
            format!("needs a human: {h}")
        } else if p.in_flight {
            "work already in flight".to_string()
        } else if p.actions.is_empty() {
            "reported, kept as is".to_string()
        } else {
            String::new()
        };
        rows.push([
            format!("{}/{}", p.vm_id.resource_group(), p.vm_id.name()),
            if drift.is_empty() {
                "-".into()
            } else {
                drift.join(",")
            },
            if actions.is_empty() {
                "-".into()
            } else {
                actions.join(",")
            },
            note,
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let fmt_counts = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    out.push_str(&format!("\nscope: {}", report.scope));
    out.push_str(&format!(
        "\n{} VMs seen, {} with ADE, {} protected items, {} of {} key vaults with Azure Backup access\ndrift: {}\nactions: {}\n{} ARM calls, {} throttled (dry run: nothing was changed)\n",
        report.vms_seen,
        report.ade_vms,
        report.protected_items,
        report.key_vaults_with_access,
        report.key_vaults,
        fmt_counts(&report.drift),
        fmt_counts(&report.actions),
        report.arm.calls,
        report.arm.throttled
    ));
    for w in &report.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

// ---------------------------------------------------------------------------------- the run

fn new_run_id(now: DateTime<Utc>) -> String {
    format!(
        "sweep-{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

enum Claimed {
    Yes {
        lease: LeaseId,
        previous: Option<Box<SweepSummary>>,
        took_over: bool,
    },
    No {
        reason: String,
    },
}

/// Takes the run lease on `latest.json` (creating the document on the very first run) and reads
/// the last run's summary.
async fn claim(
    store: &dyn StateStore,
    duration: std::time::Duration,
) -> Result<Claimed, SweepError> {
    let proposed = LeaseId::new_random();
    let mut acquired = store
        .acquire_lease(SWEEP_LATEST_KEY, duration, &proposed)
        .await;
    if let Err(StateError::Missing { .. }) = acquired {
        match json::create(store, SWEEP_LATEST_KEY, &SweepLatest::default()).await {
            // Someone else created it at the same moment: the lease decides.
            Ok(_) | Err(StateError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        acquired = store
            .acquire_lease(SWEEP_LATEST_KEY, duration, &proposed)
            .await;
    }
    let got = match acquired {
        Ok(got) => got,
        Err(StateError::Leased { .. }) => {
            return Ok(Claimed::No {
                reason: format!(
                    "another sweep holds the lease on {SWEEP_LATEST_KEY} (a run still working, or one that crashed less than {} s ago); this run does nothing",
                    duration.as_secs()
                ),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let previous = match json::get::<SweepLatest>(store, SWEEP_LATEST_KEY).await {
        Ok(doc) => doc.and_then(|(d, _)| d.last),
        Err(StateError::Corrupt { .. }) => {
            // A damaged summary must not stop the schedule: this run's summary replaces it.
            tracing::warn!("{SWEEP_LATEST_KEY} is not a valid summary; it will be replaced");
            None
        }
        Err(e) => {
            let _ = store.release_lease(SWEEP_LATEST_KEY, &got.lease).await;
            return Err(e.into());
        }
    };
    Ok(Claimed::Yes {
        lease: got.lease,
        previous: previous.map(Box::new),
        took_over: matches!(got.previous, LeaseState::Expired | LeaseState::Broken),
    })
}

/// Keeps the run lease alive while the run works; `lost` turns true if a renewal finds the lease
/// taken (the run then starts no more VM work). Stops when dropped.
struct LeaseKeeper {
    lost: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    fn start(store: Arc<dyn StateStore>, lease: LeaseId, duration: std::time::Duration) -> Self {
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = lost.clone();
        let every = duration / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lease(SWEEP_LATEST_KEY, &lease).await {
                    Ok(()) => {}
                    Err(StateError::LeaseLost { .. }) => {
                        tracing::error!("the sweep lost its lease (a renewal came too late and another run took over): no further VM work is started");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    // A transient store error: the next renewal (a third of the lease later)
                    // still comes before the lease ends.
                    Err(e) => tracing::warn!("renewing the sweep lease failed: {e}"),
                }
            }
        });
        Self { lost, task }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes the summary under the lease and releases it. A lost lease still keeps the summary, in
/// the run's history document.
async fn finish(
    store: &dyn StateStore,
    lease: &LeaseId,
    summary: &SweepSummary,
) -> Result<(), SweepError> {
    let doc = SweepLatest {
        last: Some(summary.clone()),
    };
    match json::replace_leased(store, SWEEP_LATEST_KEY, &doc, lease).await {
        Ok(_) => {}
        Err(StateError::LeaseLost { .. }) => {
            tracing::warn!(
                run_id = summary.run_id,
                "the sweep lease was taken over before the run finished; its summary is kept in {}",
                records::sweep_run_key(&summary.run_id)
            );
            match json::create(store, &records::sweep_run_key(&summary.run_id), summary).await {
                Ok(_) | Err(StateError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        Err(e) => {
            let _ = store.release_lease(SWEEP_LATEST_KEY, lease).await;
            return Err(e.into());
        }
    }
    match store.release_lease(SWEEP_LATEST_KEY, lease).await {
        // Lapsed meanwhile: nothing to release.
        Ok(()) | Err(StateError::LeaseLost { .. }) => Ok(()),
        Err(e) => {
            // The lease lapses by itself within a minute.
            tracing::warn!("releasing the sweep lease failed: {e}");
            Ok(())
        }
    }
}

/// What happened to one VM of the plan.
enum VmResult {
    Started {
        repair: bool,
    },
    Failed(String),
    /// The run lost its lease before this VM's turn; the next run plans it again.
    NotStarted,
}

async fn work_vm(
    ctx: &Context,
    run_id: &str,
    p: &VmPlan,
    repair: bool,
    known: Option<(ObservedVm, SweepFacts)>,
) -> VmResult {
    let origin = Origin::Sweep(run_id.to_string());
    let evaluated = match &known {
        Some((vm, facts)) => protect::evaluate_observed(ctx, vm, origin, repair, Some(facts)).await,
        // Discovery could not tell everything (e.g. the vault could not be read): the workflow
        // reads for itself.
        None => protect::evaluate_with(ctx, &p.vm_id, origin, repair).await,
    };
    match evaluated {
        Ok(line) => {
            tracing::info!(vm = %p.vm_id, "{line}");
            VmResult::Started { repair }
        }
        Err(e) => VmResult::Failed(e.to_string()),
    }
}

/// Records the drift facts on the VM's record (no write when they are already there).
async fn record_drift(
    ctx: &Context,
    p: &VmPlan,
    protected_in_azure: bool,
) -> Result<(), WorkflowError> {
    if p.drift.is_empty() && p.needs_human.is_none() {
        return Ok(());
    }
    let facts: Vec<String> = p.drift.iter().map(drift_fact).collect();
    let actions: Vec<&str> = p.actions.iter().map(|a| action_name(*a)).collect();
    let sweep = serde_json::json!({
        "drift": facts,
        "actions": actions,
        "needsHuman": p.needs_human,
    });
    let needs_human = p.needs_human.clone();
    protect::upsert_vm_record(ctx, &p.vm_id, |r| {
        if !r.extra.is_object() {
            r.extra = Value::Object(Default::default());
        }
        if let Some(obj) = r.extra.as_object_mut() {
            obj.insert("sweep".to_string(), sweep.clone());
        }
        if let Some(h) = &needs_human {
            r.status = ProtectionStatus::Unsupported;
            let code = if h.starts_with("unsupported: ") {
                h.trim_start_matches("unsupported: ")
                    .split(':')
                    .next()
                    .unwrap_or("unsupported")
                    .to_string()
            } else {
                "no-protection-rule".to_string()
            };
            r.reason = Some(code);
            r.message = Some(h.clone());
        } else if r.status == ProtectionStatus::Unset && protected_in_azure {
            r.status = ProtectionStatus::Protected;
        }
    })
    .await
}

/// One scheduled run (what the `PolicySweep` timer calls).
pub async fn run(ctx: &Context) -> Result<SweepOutcome, SweepError> {
    run_with(ctx, SweepOptions::default()).await
}

pub async fn run_with(ctx: &Context, options: SweepOptions) -> Result<SweepOutcome, SweepError> {
    let started = std::time::Instant::now();
    let started_at = ctx.clock.now();
    let arm_before = ctx.arm.stats();
    let counting = Arc::new(CountingStore {
        inner: ctx.state.clone(),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        lease_calls: AtomicU64::new(0),
    });
    // Every state access of the run (the protection workflow's included) goes through the counter.
    let rctx = Context {
        state: counting.clone(),
        ..ctx.clone()
    };
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| new_run_id(started_at));
    let (lease, previous, took_over) = match claim(counting.as_ref(), options.lease).await? {
        Claimed::No { reason } => {
            tracing::info!(run_id, "{reason}");
            return Ok(SweepOutcome::Skipped { reason });
        }
        Claimed::Yes {
            lease,
            previous,
            took_over,
        } => (lease, previous, took_over),
    };
    let keeper = LeaseKeeper::start(counting.clone(), lease.clone(), options.lease);
    if took_over {
        tracing::warn!(run_id, last_finished = ?previous.as_ref().map(|p| p.run_id.clone()), "the previous sweep's lease expired without a release; taking over (the plan is recomputed, so what it left undone is redone)");
    }

    let mut summary = SweepSummary {
        run_id: run_id.clone(),
        started_at,
        finished_at: started_at,
        duration_ms: 0,
        status: "completed".into(),
        error: None,
        took_over_expired_lease: took_over,
        last_run_id: previous.as_ref().map(|p| p.run_id.clone()),
        subscriptions: ctx.settings.subscriptions.len(),
        scope: scope_text(ctx),
        vms_seen: 0,
        ade_vms: 0,
        protected_items: 0,
        outcomes: BTreeMap::new(),
        drift: BTreeMap::new(),
        actions: BTreeMap::new(),
        needs_human: vec![],
        failures: vec![],
        warnings: vec![],
        arm: ArmUsage::default(),
        state_reads: 0,
        state_writes: 0,
        lease_calls: 0,
        changed: false,
        plan_digest: String::new(),
    };

    let body = reconcile(
        &rctx,
        &run_id,
        options.concurrency.max(1),
        &keeper,
        &mut summary,
    )
    .await;
    drop(keeper);
    if let Err(e) = &body {
        summary.status = "failed".into();
        summary.error = Some(e.to_string());
        summary.changed = true;
    }
    if !summary.changed {
        // No previous run counts as "no drift": a healthy fleet's first run changes nothing.
        let before = previous
            .as_ref()
            .map(|p| p.plan_digest.clone())
            .unwrap_or_else(|| plan_digest(&[]));
        summary.changed = before != summary.plan_digest;
    }
    summary.finished_at = ctx.clock.now();
    summary.duration_ms = started.elapsed().as_millis() as i64;
    summary.arm = ArmUsage::between(&arm_before, &ctx.arm.stats());
    summary.state_reads = counting.reads.load(Ordering::Relaxed);
    // + the summary, + the history document when written; + the release.
    summary.state_writes = counting.writes.load(Ordering::Relaxed) + 1 + u64::from(summary.changed);
    summary.lease_calls = counting.lease_calls.load(Ordering::Relaxed) + 1;
    if summary.changed {
        json::create(
            counting.as_ref(),
            &records::sweep_run_key(&run_id),
            &summary,
        )
        .await
        .or_else(|e| match e {
            // A retried release of the same run: the history is already there.
            StateError::Conflict { .. } => Ok(ETag(String::new())),
            e => Err(e),
        })?;
    }
    finish(counting.as_ref(), &lease, &summary).await?;
    tracing::info!(
        run_id,
        changed = summary.changed,
        arm_calls = summary.arm.calls,
        throttled = summary.arm.throttled,
        state_writes = summary.state_writes,
        "sweep finished"
    );
    body?;
    Ok(SweepOutcome::Completed(Box::new(summary)))
}

/// Location of every Recovery Services vault the work targets: one GET per distinct vault (a
/// handful per run), instead of one per VM in the workflow. A vault that cannot be read is left
/// out; its VMs are evaluated the long way, which reports the problem per VM.
async fn target_vault_locations(ctx: &Context, work: &[&VmPlan]) -> HashMap<String, String> {
    let vaults: BTreeMap<String, ResourceId> = work
        .iter()
        .filter_map(|p| p.target.as_ref())
        .map(|t| (t.target.vault_id.canonical(), t.target.vault_id.clone()))
        .collect();
    let tasks: Vec<_> = vaults
        .into_iter()
        .map(|(key, id)| {
            let arm = ctx.arm.clone();
            Box::pin(async move { (key, arm.get_recovery_services_vault(&id).await) })
        })
        .collect();
    futures::stream::iter(tasks)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .filter_map(|(key, r)| match r {
            Ok(v) => Some((key, v.location.unwrap_or_default())),
            Err(e) => {
                tracing::warn!(
                    vault = key,
                    "could not read the Recovery Services vault: {e}"
                );
                None
            }
        })
        .collect()
}

/// What discovery already knows about a VM the plan wants to work on.
fn known_facts(
    p: &VmPlan,
    fleet: &HashMap<String, &FleetVm>,
    items: &HashMap<String, &ProtectedItemView>,
    vault_locations: &HashMap<String, String>,
    d: &Discovery,
) -> Option<(ObservedVm, SweepFacts)> {
    let vm = fleet.get(&p.vm_id.canonical())?;
    let target = p.target.as_ref()?;
    let vault_location = vault_locations.get(&target.target.vault_id.canonical())?;
    let key_vault_disk_encryption = match &vm.ade {
        AdeState::Encrypted { settings, .. } => d
            .key_vault_disk_encryption
            .get(&settings.key_vault_resource_id.canonical())
            .copied(),
        _ => None,
    };
    let unprotected = items
        .get(&p.vm_id.canonical())
        .is_none_or(|i| sweep_plan::protection_stopped(&i.protection_state));
    Some((
        ObservedVm {
            id: vm.id.clone(),
            location: vm.location.clone(),
            tags: vm.tags.clone(),
            ade: vm.ade.clone(),
            restore_warnings: vm.restore_warnings.clone(),
        },
        SweepFacts {
            vault_location: vault_location.clone(),
            key_vault_disk_encryption,
            access_in_place: !p.actions.contains(&Action::GrantAccess),
            unprotected,
        },
    ))
}

/// Healthy ADE VMs that Azure Backup protects but ade-backup has no record of (protected before
/// it was deployed, or by hand): their ADE settings are recorded now, from this run's Resource
/// Graph rows, while the VM exists — a restore after the VM is deleted still knows how to
/// reinstall ADE. Costs one `list` of the VM records per run; a record is written once per VM.
async fn adopt_unrecorded(
    ctx: &Context,
    d: &Discovery,
    items: &HashMap<String, &ProtectedItemView>,
    plans: &[VmPlan],
) -> Result<u64, SweepError> {
    // VMs the plan leaves alone: no plan at all (healthy), or drift that is only reported.
    let busy: HashSet<String> = plans
        .iter()
        .filter(|p| !p.actions.is_empty() || p.needs_human.is_some() || p.in_flight)
        .map(|p| p.vm_id.canonical())
        .collect();
    let rules = &ctx.settings.workflow.protection_rules;
    let candidates: Vec<_> = d
        .vms
        .iter()
        .filter(|vm| !busy.contains(&vm.id.canonical()))
        .filter_map(|vm| {
            let item = items
                .get(&vm.id.canonical())
                .filter(|i| !sweep_plan::protection_stopped(&i.protection_state))?;
            let AdeState::Encrypted { settings, .. } = &vm.ade else {
                return None;
            };
            let selection = rules.select(&crate::domain::rules::VmFacts {
                id: &vm.id,
                location: &vm.location,
                tags: &vm.tags,
            })?;
            Some((vm, *item, settings.clone(), selection))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    let recorded: HashSet<String> = ctx.state.list("vms/").await?.into_iter().collect();
    let tasks: Vec<_> = candidates
        .into_iter()
        .filter(|(vm, ..)| !recorded.contains(&records::vm_record_key(&vm.id)))
        .map(|(vm, item, settings, selection)| {
            let azure = records::ProtectionAzureIds {
                vault_id: Some(item.vault_id.to_string()),
                protected_item_id: ade_backup_shared::arm::recovery_services::protected_item_id(
                    &item.vault_id,
                    &vm.id,
                )
                .ok()
                .map(|id| id.to_string()),
                policy_id: item
                    .policy
                    .as_ref()
                    .and_then(|name| item.vault_id.child("backupPolicies", name).ok())
                    .map(|id| id.to_string()),
                ..Default::default()
            };
            let (ctx, vm_id, warnings) = (ctx.clone(), vm.id.clone(), vm.restore_warnings.clone());
            Box::pin(async move {
                protect::record_adoption(&ctx, &vm_id, &settings, &selection, warnings, azure).await
            })
        })
        .collect();
    let results: Vec<Result<(), WorkflowError>> = futures::stream::iter(tasks)
        .buffer_unordered(16)
        .collect()
        .await;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    let adopted = (results.len() - failed.len()) as u64;
    if let Some(first) = failed.first() {
        // The next run retries them: their records are still missing.
        return Err(SweepError::Adoption {
            adopted,
            failed: failed.len(),
            first: first.clone(),
        });
    }
    Ok(adopted)
}

/// Orders work round-robin over subscriptions. ARM throttles per subscription, and Resource
/// Graph returns a subscription's VMs together: in Graph order, every worker would queue on one
/// subscription's bucket while the others sit idle.
fn interleave_by_subscription(work: Vec<&VmPlan>) -> Vec<&VmPlan> {
    let mut groups: BTreeMap<String, std::collections::VecDeque<&VmPlan>> = BTreeMap::new();
    for p in work {
        groups
            .entry(p.vm_id.subscription().to_ascii_lowercase())
            .or_default()
            .push_back(p);
    }
    let mut out = Vec::new();
    loop {
        let mut took = false;
        for q in groups.values_mut() {
            if let Some(p) = q.pop_front() {
                out.push(p);
                took = true;
            }
        }
        if !took {
            return out;
        }
    }
}

async fn reconcile(
    ctx: &Context,
    run_id: &str,
    concurrency: usize,
    keeper: &LeaseKeeper,
    summary: &mut SweepSummary,
) -> Result<(), SweepError> {
    let now = ctx.clock.now();
    let d = discover(ctx).await?;
    summary.subscriptions = d.subscriptions.len();
    summary.vms_seen = d.vms_seen;
    summary.ade_vms = d.vms.len();
    summary.protected_items = d.protected_items.len();
    summary.warnings = d.warnings.clone();
    let plans = plan_with_in_flight(ctx, &d, now).await?;
    let (drift, actions) = count_plans(&plans);
    summary.drift = drift;
    summary.actions = actions;
    summary.plan_digest = plan_digest(&plans);

    // Azure's protected items by VM: what is protected, in which state.
    let items: HashMap<String, &ProtectedItemView> = d
        .protected_items
        .iter()
        .map(|i| (i.vm_id.canonical(), i))
        .collect();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut bump = |k: &str| *outcomes.entry(k.to_string()).or_insert(0) += 1;
    let mut work = Vec::new();
    for p in &plans {
        if let Some(h) = &p.needs_human {
            bump("needs-human");
            summary.needs_human.push(NeedsHuman {
                vm_id: p.vm_id.to_string(),
                reason: h.clone(),
            });
        } else if p.in_flight {
            bump("in-flight");
        } else if p.actions.is_empty() {
            bump("reported");
        } else {
            work.push(p);
        }
    }
    let vault_locations = target_vault_locations(ctx, &work).await;
    let fleet: HashMap<String, &FleetVm> = d.vms.iter().map(|v| (v.id.canonical(), v)).collect();
    let tasks: Vec<_> = interleave_by_subscription(work)
        .into_iter()
        .map(|p| {
            let in_azure = items.contains_key(&p.vm_id.canonical());
            let known = known_facts(p, &fleet, &items, &vault_locations, &d);
            let (ctx, run_id, p) = (ctx.clone(), run_id.to_string(), p.clone());
            let lost = keeper.lost.clone();
            Box::pin(async move {
                if lost.load(Ordering::SeqCst) {
                    return (p, VmResult::NotStarted, Ok(()));
                }
                let r = work_vm(&ctx, &run_id, &p, in_azure, known).await;
                let rec = record_drift(&ctx, &p, in_azure).await;
                (p, r, rec)
            })
        })
        .collect();
    let results: Vec<(VmPlan, VmResult, Result<(), WorkflowError>)> = futures::stream::iter(tasks)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for (p, r, rec) in results {
        match r {
            VmResult::Started { repair } => {
                summary.changed = true;
                bump(if repair {
                    "repair-started"
                } else {
                    "protection-started"
                });
            }
            VmResult::NotStarted => bump("not-started-lease-lost"),
            VmResult::Failed(e) => {
                summary.changed = true;
                bump("failed");
                summary.failures.push(VmFailure {
                    vm_id: p.vm_id.to_string(),
                    error: e,
                });
            }
        }
        if let Err(e) = rec {
            summary.warnings.push(format!(
                "{}: could not record the drift facts: {e}",
                p.vm_id
            ));
        }
    }
    // Drift without work (needs a human, reported): facts on the record, written only if new.
    for p in plans
        .iter()
        .filter(|p| p.actions.is_empty() && !p.in_flight)
    {
        if let Err(e) = record_drift(ctx, p, items.contains_key(&p.vm_id.canonical())).await {
            summary.warnings.push(format!(
                "{}: could not record the drift facts: {e}",
                p.vm_id
            ));
        }
    }
    match adopt_unrecorded(ctx, &d, &items, &plans).await {
        Ok(0) => {}
        Ok(n) => {
            summary.changed = true;
            outcomes.insert("adopted".to_string(), n);
        }
        Err(e) => summary
            .warnings
            .push(format!("could not record already-protected VMs: {e}")),
    }
    summary.outcomes = outcomes;
    summary.needs_human.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
    summary.failures.sort_by(|a, b| a.vm_id.cmp(&b.vm_id));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::state::FsStateStore;
    use serde_json::json;

    const S: &str = "00000000-0000-0000-0000-000000000001";

    fn fs_store() -> (tempfile::TempDir, Arc<dyn StateStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsStateStore::new(dir.path().to_path_buf()).expect("store");
        (dir, Arc::new(store))
    }

    fn summary(run_id: &str) -> SweepSummary {
        SweepSummary {
            run_id: run_id.into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            duration_ms: 0,
            status: "completed".into(),
            error: None,
            took_over_expired_lease: false,
            last_run_id: None,
            subscriptions: 1,
            scope: String::new(),
            vms_seen: 0,
            ade_vms: 0,
            protected_items: 0,
            outcomes: BTreeMap::new(),
            drift: BTreeMap::new(),
            actions: BTreeMap::new(),
            needs_human: vec![],
            failures: vec![],
            warnings: vec![],
            arm: ArmUsage::default(),
            state_reads: 0,
            state_writes: 0,
            lease_calls: 0,
            changed: false,
            plan_digest: String::new(),
        }
    }

    #[tokio::test]
    async fn a_second_claim_is_refused_while_the_first_holds_and_takes_over_once_it_lapses() {
        let (_dir, store) = fs_store();
        let short = std::time::Duration::from_millis(200);
        let Claimed::Yes { took_over, .. } = claim(store.as_ref(), short).await.expect("claim")
        else {
            panic!("the first claim wins")
        };
        assert!(!took_over);
        match claim(store.as_ref(), short).await.expect("claim") {
            Claimed::No { reason } => assert!(reason.contains("holds the lease"), "{reason}"),
            Claimed::Yes { .. } => panic!("a live lease must refuse a second run"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let Claimed::Yes { took_over, .. } = claim(store.as_ref(), short).await.expect("claim")
        else {
            panic!("a lapsed lease is taken over")
        };
        assert!(took_over, "the lapse is reported");
    }

    #[tokio::test]
    async fn a_run_that_lost_its_lease_keeps_its_summary_in_the_history_not_in_latest() {
        let (_dir, store) = fs_store();
        let short = std::time::Duration::from_millis(100);
        let Claimed::Yes { lease: ours, .. } = claim(store.as_ref(), short).await.expect("claim")
        else {
            panic!("claim")
        };
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let Claimed::Yes { lease: theirs, .. } =
            claim(store.as_ref(), std::time::Duration::from_secs(5))
                .await
                .expect("claim")
        else {
            panic!("takeover")
        };
        finish(store.as_ref(), &ours, &summary("late"))
            .await
            .expect("a lost lease is not an error");
        let history = json::get::<SweepSummary>(store.as_ref(), &records::sweep_run_key("late"))
            .await
            .expect("read");
        assert!(history.is_some(), "the late run's summary is kept");
        let (latest, _) = json::get::<SweepLatest>(store.as_ref(), SWEEP_LATEST_KEY)
            .await
            .expect("read")
            .expect("latest");
        assert!(latest.last.is_none(), "latest belongs to the new holder");
        finish(store.as_ref(), &theirs, &summary("current"))
            .await
            .expect("finish");
        let (latest, _) = json::get::<SweepLatest>(store.as_ref(), SWEEP_LATEST_KEY)
            .await
            .expect("read")
            .expect("latest");
        assert_eq!(latest.last.map(|l| l.run_id).as_deref(), Some("current"));
    }

    /// Renewals answer "lease lost" (someone else took it).
    struct StolenLease(Arc<dyn StateStore>);

    #[async_trait]
    impl StateStore for StolenLease {
        async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, ETag)>, StateError> {
            self.0.get(key).await
        }
        async fn create(&self, key: &str, body: &[u8]) -> Result<ETag, StateError> {
            self.0.create(key, body).await
        }
        async fn replace(&self, key: &str, body: &[u8], etag: &ETag) -> Result<ETag, StateError> {
            self.0.replace(key, body, etag).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StateError> {
            self.0.list(prefix).await
        }
        async fn acquire_lease(
            &self,
            key: &str,
            duration: std::time::Duration,
            proposed: &LeaseId,
        ) -> Result<LeaseAcquired, StateError> {
            self.0.acquire_lease(key, duration, proposed).await
        }
        async fn renew_lease(&self, key: &str, _lease: &LeaseId) -> Result<(), StateError> {
            Err(StateError::LeaseLost { key: key.into() })
        }
        async fn release_lease(&self, key: &str, lease: &LeaseId) -> Result<(), StateError> {
            self.0.release_lease(key, lease).await
        }
        async fn replace_leased(
            &self,
            key: &str,
            body: &[u8],
            lease: &LeaseId,
        ) -> Result<ETag, StateError> {
            self.0.replace_leased(key, body, lease).await
        }
    }

    #[tokio::test]
    async fn the_keeper_flags_a_lost_lease() {
        let (_dir, store) = fs_store();
        let stolen: Arc<dyn StateStore> = Arc::new(StolenLease(store));
        let keeper = LeaseKeeper::start(
            stolen,
            LeaseId::new_random(),
            std::time::Duration::from_millis(60),
        );
        assert!(!keeper.lost.load(Ordering::SeqCst));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            keeper.lost.load(Ordering::SeqCst),
            "renewal reported the loss"
        );
    }

    #[test]
    fn protected_item_rows_parse_with_vault_policy_and_error_code() {
        let row = json!({
            "id": format!("/subscriptions/{S}/resourceGroups/rg-b/providers/Microsoft.RecoveryServices/vaults/rsv/backupFabrics/Azure/protectionContainers/iaasvmcontainer;iaasvmcontainerv2;rg;vm1/protectedItems/vm;iaasvmcontainerv2;rg;vm1"),
            "properties": {
                "sourceResourceId": format!("/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"),
                "policyId": "x/backupPolicies/DefaultPolicy",
                "protectionState": "Protected",
                "lastBackupStatus": "Failed",
                "lastRecoveryPoint": "2024-05-01T10:00:00Z",
                "healthDetails": [{"code": 0, "title": "UserErrorKeyVaultPermissionsNotConfigured", "message": "m"}]
            }
        });
        let v = protected_item_from_row(&row).expect("parses");
        assert_eq!(v.vm_id.name(), "vm1");
        assert_eq!(v.vault_id.name(), "rsv");
        assert_eq!(v.policy.as_deref(), Some("DefaultPolicy"));
        assert_eq!(
            v.last_backup_error_code.as_deref(),
            Some("UserErrorKeyVaultPermissionsNotConfigured")
        );
        assert!(v.last_recovery_point.is_some());
    }

    #[test]
    fn role_assignment_scope_must_contain_the_vault() {
        let kv = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv1"
        ))
        .expect("kv");
        let admin = format!(
            "/subscriptions/{S}/providers/Microsoft.Authorization/roleDefinitions/{}",
            kv_access::KEY_VAULT_ADMINISTRATOR_ROLE
        );
        let ours =
            kv_access::role_definition_id(kv_access::RbacRoleChoice::CustomLeastPrivilege, S);
        assert!(role_assignment_covers(&kv, &kv.to_string(), &admin));
        assert!(role_assignment_covers(
            &kv,
            &format!("/subscriptions/{S}/resourceGroups/RG-KV"),
            &ours
        ));
        assert!(!role_assignment_covers(
            &kv,
            &format!("/subscriptions/{S}/resourceGroups/rg-k"),
            &ours
        ));
        assert!(!role_assignment_covers(&kv, &kv.to_string(), "/providers/Microsoft.Authorization/roleDefinitions/acdd72a7-3385-48ef-bd42-f606fba81ae7"));
    }

    #[test]
    fn access_policy_needs_depend_on_the_key_mode() {
        let bms = "11111111-1111-1111-1111-111111111111";
        let row = json!({"accessPolicies": [{"objectId": bms, "permissions": {"secrets": ["Get", "List", "Backup"], "keys": []}}]});
        assert!(access_policy_in_place(
            &row,
            bms,
            VaultNeed {
                secrets: true,
                keys: false
            }
        ));
        assert!(!access_policy_in_place(
            &row,
            bms,
            VaultNeed {
                secrets: true,
                keys: true
            }
        ));
        assert!(!access_policy_in_place(
            &row,
            "22222222-2222-2222-2222-222222222222",
            VaultNeed {
                secrets: true,
                keys: false
            }
        ));
    }

    #[test]
    fn vm_rows_become_observations_the_classifier_accepts() {
        let id = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        ))
        .expect("id");
        let vm = json!({"id": id.to_string(), "storageProfile": {"osDisk": {"osType": "Linux", "diskSizeGB": 128}, "dataDisks": [{"diskSizeGB": 5000}]}});
        let ext = json!({
            "id": format!("{id}/extensions/AzureDiskEncryptionForLinux"),
            "name": "AzureDiskEncryptionForLinux",
            "publisher": "Microsoft.Azure.Security",
            "extensionType": "AzureDiskEncryptionForLinux",
            "provisioningState": "Succeeded",
            "settings": {"KeyVaultURL": "https://kv1.vault.azure.net/", "KeyVaultResourceId": format!("/subscriptions/{S}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv1"), "VolumeType": "All"}
        });
        assert_eq!(
            extension_parent(ext["id"].as_str().expect("id")),
            Some(id.canonical())
        );
        let obs = observation_from_rows(&id, &vm, &[&ext]);
        assert_eq!(obs.disk_count, 2);
        assert_eq!(obs.disk_sizes_gb, vec![128, 5000]);
        assert!(matches!(
            ade::classify(&obs),
            AdeState::Encrypted {
                mode: KeyMode::BekOnly,
                ..
            }
        ));
    }

    #[test]
    fn digest_ignores_recovery_point_age() {
        let id = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        ))
        .expect("id");
        let mk = |age| VmPlan {
            vm_id: id.clone(),
            actions: vec![Action::BackupNow],
            drift: vec![Drift::RecoveryPointStale {
                age_hours: age,
                rpo_hours: 24,
            }],
            needs_human: None,
            in_flight: false,
            target: None,
        };
        assert_eq!(plan_digest(&[mk(40)]), plan_digest(&[mk(41)]));
        assert_ne!(plan_digest(&[mk(40)]), plan_digest(&[]));
    }
}
