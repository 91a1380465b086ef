//! Discovery: what Azure Resource Graph says about the fleet. The sweep's scopes (subscriptions,
//! management groups), its KQL queries, the parsing of their rows into VM observations and
//! protected items, and one backup-policy GET per distinct (vault, policy) for the RPO. Whether
//! the Backup Management Service can read each Key Vault is [`super::access`]'s part.

use super::access;
use super::SweepError;
use crate::context::Context;
use crate::domain::ade::{self, ExtensionObservation, OsType, VmObservation};
use crate::domain::sweep_plan::{self, FleetVm, ProtectedItemView};
use crate::domain::sweep_scope::TagFilter;
use ade_backup_shared::arm::{
    queries, ArmClient, ArmError, DiskExclusionProperties, GraphScope, SubscriptionId,
};
use ade_backup_shared::ids::ResourceId;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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

/// The non-empty string at `path` in a row.
pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// The Resource Graph scopes of the sweep: the configured subscriptions, and the configured
/// management groups (every subscription below them). Both may be set; rows are merged by id.
/// Empty when nothing is configured (the sweep refuses to run then; the report reads nothing).
pub fn configured_scopes(ctx: &Context) -> Vec<GraphScope> {
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
    scopes
}

fn scopes(ctx: &Context) -> Result<Vec<GraphScope>, SweepError> {
    let scopes = configured_scopes(ctx);
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

/// Every row of `query` over every scope, each resource once, handed to `f` page by page (no
/// page is kept: the fleet is never held as rows). Returns how many rows `f` was given.
async fn each_row(
    arm: &ArmClient,
    scopes: &[GraphScope],
    query: &str,
    mut f: impl FnMut(Value) + Send,
) -> Result<usize, ArmError> {
    // Only overlapping scopes (subscriptions and management groups) can repeat a resource.
    let mut seen: Option<HashSet<String>> = (scopes.len() > 1).then(HashSet::new);
    let mut given = 0usize;
    for scope in scopes {
        arm.resource_graph_each(scope, query, |row| {
            if let Some(seen) = seen.as_mut() {
                let id = str_at(&row, &["id"])
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if !id.is_empty() && !seen.insert(id) {
                    return;
                }
            }
            given += 1;
            f(row)
        })
        .await?;
    }
    Ok(given)
}

/// Every row of a query with a small result (key vaults, role assignments), each resource once.
async fn query_scopes(
    arm: &ArmClient,
    scopes: &[GraphScope],
    query: &str,
) -> Result<Vec<Value>, ArmError> {
    let mut rows = Vec::new();
    each_row(arm, scopes, query, |r| rows.push(r)).await?;
    Ok(rows)
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

/// A VM's ADE extension rows, each kept as its compact JSON text until the VM's own row
/// arrives: one allocation per extension instead of a parsed object's dozen or so (a
/// 100,000-VM fleet has tens of thousands of them, all held while the VM rows stream).
type ExtensionRows = HashMap<String, Vec<Box<str>>>;

/// The ADE extensions by VM (canonical id), and the small results read alongside them.
struct FirstRows {
    exts_by_vm: ExtensionRows,
    key_vaults: Vec<Value>,
    role_assignments: Vec<Value>,
}

fn discovery_error(what: &'static str) -> impl Fn(ArmError) -> SweepError {
    move |source| SweepError::Discovery { what, source }
}

/// ADE extensions (only the ADE publisher's: a fraction of the fleet), key vaults and role
/// assignments, at once.
async fn first_rows(
    arm: &ArmClient,
    scopes: &[GraphScope],
    bms: uuid::Uuid,
) -> Result<FirstRows, SweepError> {
    let g = discovery_error;
    let (exts_by_vm, key_vaults, role_assignments) = tokio::try_join!(
        async {
            let mut by_vm = ExtensionRows::new();
            each_row(arm, scopes, &extension_query(), |e| {
                if let Some(vm) = str_at(&e, &["id"]).and_then(extension_parent) {
                    by_vm
                        .entry(vm)
                        .or_insert_with(|| Vec::with_capacity(1))
                        .push(e.to_string().into_boxed_str());
                }
            })
            .await
            .map_err(g("ADE extensions"))?;
            Ok::<_, SweepError>(by_vm)
        },
        async {
            query_scopes(arm, scopes, &key_vault_query())
                .await
                .map_err(g("key vaults"))
        },
        async {
            query_scopes(arm, scopes, &role_assignment_query(bms))
                .await
                .map_err(g("role assignments of the Backup Management Service"))
        },
    )?;
    Ok(FirstRows {
        exts_by_vm,
        key_vaults,
        role_assignments,
    })
}

/// What the VM rows gave: the ADE VMs, classified, the subscriptions the rows cover
/// (management groups expand to theirs), and how many VM rows there were.
#[derive(Default)]
struct FleetRows {
    vms: Vec<FleetVm>,
    subs: BTreeSet<SubscriptionId>,
    seen: usize,
}

/// A VM's canonical id, hashed: the protected-item stream's filter (8 bytes a VM instead of
/// its id; a collision only lets an item through to the exact filter in [`discover`]).
fn id_hash(canonical: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canonical.hash(&mut h);
    h.finish()
}

/// Streams the VM rows (turning each ADE VM into a [`FleetVm`] as its page arrives, and
/// dropping its extension rows then: the two never both exist for the whole fleet) and the
/// protected items of the VMs with an ADE extension, at once.
async fn fleet_rows(
    arm: &ArmClient,
    scopes: &[GraphScope],
    tags: &TagFilter,
    mut exts_by_vm: ExtensionRows,
    warnings: &mut Vec<String>,
) -> Result<(FleetRows, Vec<ProtectedItemView>), SweepError> {
    let g = discovery_error;
    let ade_vms: HashSet<u64> = exts_by_vm.keys().map(|k| id_hash(k)).collect();
    let ((fleet, vm_warnings), items) = tokio::try_join!(
        async {
            let mut fleet = FleetRows::default();
            let mut warnings = Vec::new();
            fleet.seen = each_row(arm, scopes, &vm_query(tags), |row| {
                fleet_vm_row(&row, &mut exts_by_vm, &mut fleet, &mut warnings)
            })
            .await
            .map_err(g("virtual machines"))?;
            drop(exts_by_vm);
            Ok::<_, SweepError>((fleet, warnings))
        },
        async {
            let mut items = Vec::new();
            each_row(arm, scopes, &protected_item_query(), |row| {
                if let Some(i) = protected_item_from_row(&row)
                    .filter(|i| ade_vms.contains(&id_hash(&i.vm_id.canonical())))
                {
                    items.push(i);
                }
            })
            .await
            .map_err(g("protected items"))?;
            Ok::<_, SweepError>(items)
        },
    )?;
    warnings.extend(vm_warnings);
    Ok((fleet, items))
}

/// Reads the fleet with Resource Graph (and one policy GET per distinct policy). Rows are
/// consumed as their pages arrive; what is kept is one compact entry per ADE VM and item.
pub async fn discover(ctx: &Context) -> Result<Discovery, SweepError> {
    let scopes = scopes(ctx)?;
    let bms = access::bms_object_id(ctx).await?;
    let first = first_rows(&ctx.arm, &scopes, bms).await?;
    let mut warnings = Vec::new();
    let (fleet, mut protected_items) = fleet_rows(
        &ctx.arm,
        &scopes,
        &ctx.settings.sweep_tags,
        first.exts_by_vm,
        &mut warnings,
    )
    .await?;
    // Items of ADE VMs the tag filter left out are no concern of the sweep.
    let ade_vms: HashSet<String> = fleet.vms.iter().map(|v| v.id.canonical()).collect();
    protected_items.retain(|i| ade_vms.contains(&i.vm_id.canonical()));
    drop(ade_vms);
    let access =
        access::key_vault_access(&first.key_vaults, &first.role_assignments, &fleet.vms, bms);
    let rpo = policy_rpos(ctx, &protected_items, &mut warnings).await;
    Ok(Discovery {
        subscriptions: fleet.subs.into_iter().collect(),
        vms_seen: fleet.seen,
        vms: fleet.vms,
        protected_items,
        key_vaults: first.key_vaults.len(),
        key_vaults_with_access: access.with_access,
        key_vault_disk_encryption: access.disk_encryption,
        rpo,
        warnings,
    })
}

/// One VM row: its subscription counts as covered; a VM with an ADE extension becomes a
/// [`FleetVm`]. A row without a valid id is a warning.
fn fleet_vm_row(
    row: &Value,
    exts_by_vm: &mut ExtensionRows,
    fleet: &mut FleetRows,
    warnings: &mut Vec<String>,
) {
    let Some(id) = str_at(row, &["id"]).and_then(|s| ResourceId::parse(s).ok()) else {
        warnings.push(format!(
            "a virtual machine row has no valid id: {}",
            str_at(row, &["id"]).unwrap_or("<none>")
        ));
        return;
    };
    if let Ok(sub) = SubscriptionId::of(&id) {
        fleet.subs.insert(sub);
    }
    // Only VMs with an ADE extension can need anything; the rest cost no classification.
    if let Some(rows) = exts_by_vm.remove(&id.canonical()) {
        let exts: Vec<ExtensionObservation> = rows
            .iter()
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .map(|e| extension_from_row(&e))
            .collect();
        fleet.vms.push(fleet_vm(id, row, &exts));
    }
}

/// One ADE VM from its row and its extensions' rows.
fn fleet_vm(id: ResourceId, row: &Value, exts: &[ExtensionObservation]) -> FleetVm {
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
    FleetVm {
        location: str_at(row, &["location"]).unwrap_or_default().to_string(),
        tags,
        ade: ade::classify(&obs),
        restore_warnings: ade::restore_limit_warnings(&obs),
        id,
    }
}

/// `/subscriptions/s/.../virtualMachines/vm/extensions/x` → the VM id (canonical).
fn extension_parent(id: &str) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    let pos = lower.rfind("/extensions/")?;
    ResourceId::parse(&id[..pos]).ok().map(|r| r.canonical())
}

fn observation_from_rows(
    id: &ResourceId,
    vm: &Value,
    exts: &[ExtensionObservation],
) -> VmObservation {
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
    VmObservation {
        id: id.clone(),
        os_type: str_at(&os_disk, &["osType"]).and_then(OsType::parse),
        extensions: exts.to_vec(),
        os_disk_encryption_enabled,
        // Resource Graph has no instance view: in-progress encryption shows as the extension's
        // provisioning state, which the classifier reads.
        disk_encryption_codes: vec![],
        disk_sizes_gb,
        disk_count: 1 + data_disks.len(),
        kek_is_certificate: None,
        unmanaged_disks: crate::domain::source_vm::storage_profile_has_unmanaged_disks(&sp),
    }
}

fn extension_from_row(e: &Value) -> ExtensionObservation {
    ExtensionObservation {
        name: str_at(e, &["name"]).unwrap_or_default().to_string(),
        publisher: str_at(e, &["publisher"]).unwrap_or_default().to_string(),
        extension_type: str_at(e, &["extensionType"])
            .unwrap_or_default()
            .to_string(),
        type_handler_version: str_at(e, &["typeHandlerVersion"]).map(str::to_string),
        provisioning_state: str_at(e, &["provisioningState"]).map(str::to_string),
        settings: e.get("settings").cloned().unwrap_or(Value::Null),
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
        disk_exclusion: disk_exclusion(props),
    })
}

/// The item's disk selection when it leaves data disks out. A selection that cannot be read is
/// reported as one (with no LUN): re-protecting with every disk is harmless, a backup that fails
/// every day is not.
fn disk_exclusion(props: &Value) -> Option<DiskExclusionProperties> {
    let sel = props
        .get("extendedProperties")?
        .get("diskExclusionProperties")?;
    if sel.is_null() {
        return None;
    }
    let parsed = serde_json::from_value::<DiskExclusionProperties>(sel.clone()).unwrap_or(
        DiskExclusionProperties {
            disk_lun_list: vec![],
            is_inclusion_list: Some(true),
        },
    );
    parsed.excludes_disks().then_some(parsed)
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

/// RPO per (vault canonical id, policy name lower-case): one GET per distinct (vault, policy),
/// concurrently; cached for the run. A policy that cannot be read or understood is a warning
/// (its items are held to the default RPO).
async fn policy_rpos(
    ctx: &Context,
    items: &[ProtectedItemView],
    warnings: &mut Vec<String>,
) -> HashMap<(String, String), Duration> {
    // Futures built up front (not in a stream closure): keeps the handler future `Send` for
    // every lifetime (a closure returning a borrowing future trips rustc's higher-ranked check).
    let tasks: Vec<_> = distinct_policies(items)
        .into_iter()
        .map(|((v, p), id)| {
            let arm = ctx.arm.clone();
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
    rpo
}

/// Each (vault, policy) the items use once, with the policy's resource id.
fn distinct_policies(items: &[ProtectedItemView]) -> BTreeMap<(String, String), ResourceId> {
    let mut distinct: BTreeMap<(String, String), ResourceId> = BTreeMap::new();
    for i in items {
        let Some(p) = i.policy.as_ref() else { continue };
        let key = (i.vault_id.canonical(), p.to_ascii_lowercase());
        if let std::collections::btree_map::Entry::Vacant(e) = distinct.entry(key) {
            if let Ok(id) = i.vault_id.child("backupPolicies", p) {
                e.insert(id);
            }
        }
    }
    distinct
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ade::AdeState;
    use crate::domain::kv_access::KeyMode;
    use serde_json::json;

    const S: &str = "00000000-0000-0000-0000-000000000001";

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

    /// Ids as Azure Backup spells them (issue 14, item 7) and the item's disk selection.
    #[test]
    fn a_row_in_azure_s_casing_names_the_same_vault_and_vm_and_its_disk_exclusion() {
        let row = json!({
            "id": format!("/subscriptions/{S}/resourcegroups/RG-B/providers/microsoft.recoveryservices/vaults/rsv/backupFabrics/Azure/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg;vm1/protectedItems/VM;iaasvmcontainerv2;rg;vm1"),
            "properties": {
                "virtualMachineId": format!("/subscriptions/{S}/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/VM1"),
                "protectionState": "Protected",
                "extendedProperties": {"diskExclusionProperties": {"diskLunList": [2], "isInclusionList": false}}
            }
        });
        let v = protected_item_from_row(&row).expect("parses");
        let vault = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg-b/providers/Microsoft.RecoveryServices/vaults/rsv"
        ))
        .expect("vault");
        let vm = ResourceId::parse(&format!(
            "/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
        ))
        .expect("vm");
        assert_eq!(v.vault_id.canonical(), vault.canonical());
        assert_eq!(v.vm_id.canonical(), vm.canonical());
        let sel = v.disk_exclusion.expect("exclusion");
        assert_eq!(sel.disk_lun_list, vec![2]);
        let mut reset = row.clone();
        reset["properties"]["extendedProperties"] =
            json!({"diskExclusionProperties": {"diskLunList": [], "isInclusionList": false}});
        let v = protected_item_from_row(&reset).expect("parses");
        assert!(
            v.disk_exclusion.is_none(),
            "an empty exclusion list backs up every disk"
        );
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
        let obs = observation_from_rows(&id, &vm, &[extension_from_row(&ext)]);
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
}
