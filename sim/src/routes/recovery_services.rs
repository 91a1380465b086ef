//! Microsoft.RecoveryServices 2023-04-01 vaults and protection: vaults, policies, container
//! refresh, protectable and protected items (protect, stop protection), their operation status
//! and recovery points. Backup now, restore and the jobs they start are in `backup_jobs`.
//! Shapes from recoveryservicesbackup 2023-04-01 examples:
//! `AzureIaasVm/BackupProtectableItems_List.json`,
//! `AzureIaasVm/ProtectedItemOperationStatus.json`, `AzureIaasVm/RecoveryPoints_List.json`,
//! `Common/RefreshContainers.json`, `Common/RefreshContainers_OperationResults.json`,
//! `AzureIaasVm/StopProtection.json` (stop protection, retain data).

use super::{paged, route, Ctx, Reply, Route};
use crate::world::{
    codes, container_name, item_name, lc, ts, OpStatus, ProtectedItem, RsVault, VmState, World,
    PROTECTION_STOPPED_STATE,
};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

pub(super) const API: Option<&str> = Some("2023-04-01");
pub(super) const PAGE: usize = 200;

pub fn routes() -> Vec<Route> {
    const V: &str =
        "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*";
    // Patterns are spelled out because `route` needs 'static strings.
    vec![
        route(Method::GET, "subscriptions/*/providers/microsoft.recoveryservices/vaults", "rs.vaults.list", API, vaults_list),
        route(Method::GET, V, "rs.vault.get", API, vault_get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backuppolicies/*", "rs.policy.get", API, policy_get),
        route(Method::POST, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/refreshcontainers", "rs.refreshContainers", API, refresh),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/operationresults/*", "rs.refreshContainers.result", API, refresh_result),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupprotectableitems", "rs.protectableItems.list", API, protectable_list),
        route(Method::PUT, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*", "rs.protectedItem.put", API, protected_item_put),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*", "rs.protectedItem.get", API, protected_item_get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*/operationsstatus/*", "rs.operationStatus.get", API, operation_status),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*/operationresults/*", "rs.operationResult.get", API, operation_result),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*/recoverypoints", "rs.recoveryPoints.list", API, recovery_points_list),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*/recoverypoints/*", "rs.recoveryPoint.get", API, recovery_point_get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupprotecteditems", "rs.protectedItems.list", API, protected_items_list),
    ]
}

pub(super) fn vault_key(ctx: &Ctx) -> String {
    lc(&format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.RecoveryServices/vaults/{}",
        ctx.param(0),
        ctx.param(1),
        ctx.param(2)
    ))
}

pub(super) fn vault_not_found(ctx: &Ctx) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.RecoveryServices/vaults/{}' under resource group '{}' was not found.",
            ctx.param(2),
            ctx.param(1)
        ),
    )
}

pub(super) fn item_not_found(ctx: &Ctx) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "BMSUserErrorObjectNotFound",
        format!(
            "Protected item {} was not found in the vault.",
            ctx.param(4)
        ),
    )
}

pub(super) fn bad(code: &str, msg: impl Into<String>) -> Reply {
    Reply::error(StatusCode::BAD_REQUEST, code, msg)
}

fn vaults_list(w: &mut World, ctx: &Ctx) -> Reply {
    let sub = lc(ctx.param(0));
    let items: Vec<Value> = w
        .rs_vaults
        .values()
        .filter(|v| lc(&v.subscription) == sub)
        .map(|v| w.rs_vault_json(v))
        .collect();
    Reply::ok(json!({"value": items}))
}

fn vault_get(w: &mut World, ctx: &Ctx) -> Reply {
    match w.rs_vaults.get(&vault_key(ctx)) {
        Some(v) => Reply::ok(w.rs_vault_json(v)),
        None => vault_not_found(ctx),
    }
}

fn policy_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(v) = w.rs_vaults.get(&vault_key(ctx)) else {
        return vault_not_found(ctx);
    };
    match v.policies.get(&lc(ctx.param(3))) {
        Some(p) => Reply::ok(w.policy_json(v, p)),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "BMSUserErrorPolicyNotFound",
            format!(
                "Backup policy {} was not found in vault {}.",
                ctx.param(3),
                v.name
            ),
        ),
    }
}

fn refresh(w: &mut World, ctx: &Ctx) -> Reply {
    let key = vault_key(ctx);
    let Some(v) = w.rs_vaults.get(&key) else {
        return vault_not_found(ctx);
    };
    let (sub, loc, vault_id) = (lc(&v.subscription), lc(&v.location), v.id.clone());
    let found: Vec<String> = w
        .vms
        .iter()
        .filter(|(_, vm)| lc(&vm.subscription) == sub && lc(&vm.location) == loc)
        .map(|(k, _)| k.clone())
        .collect();
    if let Some(v) = w.rs_vaults.get_mut(&key) {
        v.discovered = found.into_iter().collect();
    }
    let op = w.timed_operation(ctx.now, Ok(None), None);
    Reply::empty(StatusCode::ACCEPTED)
        .header(
            "Location",
            ctx.url(&format!(
                "{vault_id}/backupFabrics/Azure/operationResults/{op}"
            )),
        )
        .header("Retry-After", "1")
}

fn refresh_result(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(op) = w.operations.get(ctx.param(3)) else {
        return Reply::not_found(&format!("operationResults/{}", ctx.param(3)));
    };
    match w.op_status(op, ctx.now) {
        OpStatus::InProgress => Reply::empty(StatusCode::ACCEPTED)
            .header(
                "Location",
                format!("{}{}?api-version={}", ctx.base, ctx.path, ctx.api_version),
            )
            .header("Retry-After", "1"),
        OpStatus::Succeeded { .. } => Reply::empty(StatusCode::NO_CONTENT),
        OpStatus::Failed(f) => bad(&f.code, f.message),
    }
}

fn protectable_list(w: &mut World, ctx: &Ctx) -> Reply {
    let key = vault_key(ctx);
    let Some(v) = w.rs_vaults.get(&key) else {
        return vault_not_found(ctx);
    };
    let protected: std::collections::BTreeSet<&String> =
        w.protected_items.values().map(|i| &i.vm_key).collect();
    let items: Vec<Value> = v
        .discovered
        .iter()
        .filter(|k| !protected.contains(k))
        .filter_map(|k| w.vms.get(k))
        .map(|vm| {
            let container = container_name(&vm.resource_group, &vm.name);
            let item = item_name(&vm.resource_group, &vm.name);
            json!({
                "id": format!("{}/backupFabrics/Azure/protectionContainers/{container}/protectableItems/{item}", v.id),
                "name": item,
                "type": "Microsoft.RecoveryServices/vaults/backupFabrics/protectionContainers/protectableItems",
                "properties": {
                    "friendlyName": vm.name,
                    "virtualMachineId": vm.id,
                    "protectionState": "NotProtected",
                    "protectableItemType": "Microsoft.Compute/virtualMachines",
                    "backupManagementType": "AzureIaasVM",
                    "workloadType": "VM"
                }
            })
        })
        .collect();
    Reply::ok(paged(ctx, items, PAGE))
}

/// Resolve container + item names to the item key and (rg, vm) they name.
pub(super) fn item_ref(ctx: &Ctx) -> Result<(String, String, String), Reply> {
    let container = lc(ctx.param(3));
    let item = lc(ctx.param(4));
    let parts: Vec<&str> = item.split(';').collect();
    let (rg, vm) = match parts.as_slice() {
        ["vm", "iaasvmcontainerv2", rg, vm] => (rg.to_string(), vm.to_string()),
        _ => {
            return Err(bad(
                "BMSUserErrorInvalidInput",
                format!("Protected item name '{}' must be vm;iaasvmcontainerv2;{{resourceGroup}};{{vmName}}.", ctx.param(4)),
            ))
        }
    };
    if container != lc(&container_name(&rg, &vm)) {
        return Err(bad(
            "BMSUserErrorInvalidInput",
            format!(
                "Container name '{}' does not match protected item '{}'.",
                ctx.param(3),
                ctx.param(4)
            ),
        ));
    }
    Ok((format!("{}|{item}", vault_key(ctx)), rg, vm))
}

/// The protected item a request addresses (see [`item_ref`]) and the request's JSON body.
pub(super) fn item_request(ctx: &Ctx) -> Result<((String, String, String), Value), Reply> {
    let item = item_ref(ctx)?;
    let body = ctx.json_body()?;
    Ok((item, body))
}

pub(super) fn lro(ctx: &Ctx, w: &World, item: &ProtectedItem, op: &str) -> Reply {
    let id = w.protected_item_header_id(item);
    Reply::empty(StatusCode::ACCEPTED)
        .header(
            "Azure-AsyncOperation",
            ctx.url(&format!("{id}/operationsStatus/{op}")),
        )
        .header("Location", ctx.url(&format!("{id}/operationResults/{op}")))
        .header("Retry-After", "1")
}

/// Protect a VM, or give an existing item a policy (resuming it if it was stopped): `PUT` of
/// the protected item with `sourceResourceId` and `policyId`. With `protectionState:
/// "ProtectionStopped"` it stops protection instead (see [`stop_protection`]).
fn protected_item_put(w: &mut World, ctx: &Ctx) -> Reply {
    let vkey = vault_key(ctx);
    let Some(vault) = w.rs_vaults.get(&vkey).cloned() else {
        return vault_not_found(ctx);
    };
    let ((key, rg, vm_name), body) = match item_request(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let props = &body["properties"];
    if !props["protectedItemType"]
        .as_str()
        .is_some_and(|t| t.eq_ignore_ascii_case("Microsoft.Compute/virtualMachines"))
    {
        return bad(
            "BMSUserErrorInvalidInput",
            "properties.protectedItemType must be 'Microsoft.Compute/virtualMachines'.",
        );
    }
    let Some(source) = props["sourceResourceId"].as_str() else {
        return bad(
            "BMSUserErrorInvalidInput",
            "properties.sourceResourceId is required.",
        );
    };
    let requested_state = props["protectionState"].as_str().unwrap_or("");
    if requested_state.eq_ignore_ascii_case(PROTECTION_STOPPED_STATE) {
        return stop_protection(w, ctx, &key, source);
    }
    let checked = requested_policy(props, requested_state, &vault).and_then(|policy| {
        let vm = protectable_vm(w, ctx, &vault, &vkey, source, (&rg, &vm_name))?;
        Ok((policy, vm))
    });
    let (policy, vm) = match checked {
        Ok(c) => c,
        Err(r) => return r,
    };
    let selection = match requested_disks(props, &vm) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let encrypted = vm.encryption.is_some() || vm.restored_encryption.is_some();
    if encrypted && selection.as_ref().is_some_and(|l| !l.is_empty()) {
        return bad(
            codes::DISK_EXCLUSION,
            "Selective disk backup is not supported for encrypted VMs.",
        );
    }
    let item = match w.set_item_policy(&key, &policy) {
        Some(existing) => existing,
        None => {
            let item = ProtectedItem::new(&vkey, &vm, &policy, ctx.now);
            w.protected_items.insert(key.clone(), item.clone());
            item
        }
    };
    if let (Some(excluded), Some(i)) = (selection, w.protected_items.get_mut(&key)) {
        i.excluded_disk_luns = excluded;
    }
    let job = w.start_configure_job(&key, &vkey, &vm.name, ctx.now);
    let op = w.timed_operation(ctx.now, Ok(Some(job)), Some(key));
    lro(ctx, w, &item, &op)
}

/// The data disk LUNs a protect request leaves out of the backup: `None` keeps the item's
/// selection (no `extendedProperties`, as `az backup item set-policy` sends), `Some(vec![])` backs
/// up every disk (`extendedProperties` without `diskExclusionProperties`, as `az backup protection
/// update-for-vm --disk-list-setting resetexclusionsettings` sends, or an exclusion list with no
/// LUN, as Az PowerShell's `-ResetExclusionSettings` sends). An inclusion list leaves out every
/// other data disk (an empty one: "OS disk only"; the sim keeps the LUNs left out). Spec: recoveryservicesbackup
/// `AzureIaaSVMProtectedItem.extendedProperties.diskExclusionProperties` {diskLunList,
/// isInclusionList}.
fn requested_disks(props: &Value, vm: &VmState) -> Result<Option<Vec<u32>>, Reply> {
    let Some(ext) = props.get("extendedProperties").filter(|e| !e.is_null()) else {
        return Ok(None);
    };
    let sel = &ext["diskExclusionProperties"];
    if sel.is_null() {
        return Ok(Some(vec![]));
    }
    let invalid = || {
        bad(
            "BMSUserErrorInvalidInput",
            "properties.extendedProperties.diskExclusionProperties.diskLunList must be an array of LUNs (non-negative integers).",
        )
    };
    let luns = match &sel["diskLunList"] {
        Value::Null => vec![],
        Value::Array(a) => a
            .iter()
            .map(|l| l.as_u64().and_then(|l| u32::try_from(l).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(invalid)?,
        _ => return Err(invalid()),
    };
    if sel["isInclusionList"].as_bool() == Some(true) {
        let left_out = vm
            .data_disks
            .iter()
            .filter_map(|d| d.lun)
            .filter(|l| !luns.contains(l))
            .collect();
        return Ok(Some(left_out));
    }
    Ok(Some(luns))
}

/// The name of the vault's policy a protect request names (`policyId`); the request may leave
/// `protectionState` out or ask for Protected / IRPending, nothing else.
fn requested_policy(
    props: &Value,
    requested_state: &str,
    vault: &RsVault,
) -> Result<String, Reply> {
    if !(requested_state.is_empty()
        || requested_state.eq_ignore_ascii_case("Protected")
        || requested_state.eq_ignore_ascii_case("IRPending"))
    {
        return Err(bad(
            "BMSUserErrorInvalidInput",
            format!("properties.protectionState '{requested_state}' is not supported by the simulator: send ProtectionStopped to stop protection, or leave it out and send a policyId to protect."),
        ));
    }
    let Some(policy_id) = props["policyId"].as_str().filter(|p| !p.is_empty()) else {
        return Err(bad(
            "BMSUserErrorInvalidInput",
            "properties.policyId is required to protect (or resume protecting) a VM.",
        ));
    };
    let policy_name = policy_id.rsplit('/').next().unwrap_or_default();
    match vault.policies.get(&lc(policy_name)) {
        Some(policy) => Ok(policy.name.clone()),
        None => Err(bad(
            "BMSUserErrorPolicyNotFound",
            format!(
                "properties.policyId {policy_id} is not a policy of vault {}.",
                vault.name
            ),
        )),
    }
}

/// The VM `source` names, if vault `vkey` may protect it: it exists, is the VM the item name
/// (`rg`, `vm_name`) stands for, shares the vault's subscription and region, and no other
/// vault protects it.
fn protectable_vm(
    w: &World,
    ctx: &Ctx,
    vault: &RsVault,
    vkey: &str,
    source: &str,
    (rg, vm_name): (&str, &str),
) -> Result<VmState, Reply> {
    let vm_key = lc(source);
    let Some(vm) = w.vms.get(&vm_key).cloned() else {
        return Err(bad(
            codes::VM_NOT_FOUND,
            format!("properties.sourceResourceId {source} does not exist."),
        ));
    };
    if lc(&vm.resource_group) != rg || lc(&vm.name) != vm_name {
        return Err(bad(
            "BMSUserErrorInvalidInput",
            format!(
                "properties.sourceResourceId {source} does not match protected item {}.",
                ctx.param(4)
            ),
        ));
    }
    if !lc(&vm.subscription).eq(&lc(&vault.subscription))
        || !lc(&vm.location).eq(&lc(&vault.location))
    {
        return Err(bad(
            "BMSUserErrorVmAndVaultInDifferentRegionOrSubscription",
            format!(
                "VM {} ({}) must be in the same subscription and region as vault {} ({}).",
                vm.name, vm.location, vault.name, vault.location
            ),
        ));
    }
    if let Some(other) = w
        .protected_items
        .values()
        .find(|i| i.vm_key == vm_key && i.vault_key != vkey)
    {
        let other_vault = w
            .rs_vaults
            .get(&other.vault_key)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        return Err(bad(
            "UserErrorVmAlreadyProtected",
            format!(
                "VM {} is already protected by vault {other_vault}.",
                vm.name
            ),
        ));
    }
    Ok(vm)
}

/// Stop protection and retain data: `PUT` of the protected item with
/// `properties.protectionState: "ProtectionStopped"` and `sourceResourceId`, no policy
/// (recoveryservicesbackup 2023-04-01 example `AzureIaasVm/StopProtection.json`; az cli's
/// `backup protection disable --delete-backup-data false` sends `policyId: ""`). Any policyId
/// sent along is ignored: a stopped item has none. The VM itself may already be gone.
fn stop_protection(w: &mut World, ctx: &Ctx, key: &str, source: &str) -> Reply {
    let Some(item) = w.protected_items.get(key).cloned() else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            "BMSUserErrorObjectNotFound",
            format!(
                "Protected item {} was not found in the vault; only a protected item can have its protection stopped.",
                ctx.param(4)
            ),
        );
    };
    if !item.source_id.eq_ignore_ascii_case(source) {
        return bad(
            "BMSUserErrorInvalidInput",
            format!(
                "properties.sourceResourceId {source} does not match protected item {}.",
                ctx.param(4)
            ),
        );
    }
    let job = match w.stop_protection(key, ctx.now) {
        Ok(j) => j,
        Err(f) => return bad(&f.code, f.message),
    };
    let op = w.timed_operation(ctx.now, Ok(Some(job)), Some(key.to_string()));
    lro(ctx, w, &item, &op)
}

fn protected_item_get(w: &mut World, ctx: &Ctx) -> Reply {
    let (key, _, _) = match item_ref(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match w.protected_items.get(&key) {
        Some(i) => Reply::ok(w.protected_item_json(i)),
        None => item_not_found(ctx),
    }
}

fn operation_status(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(op) = w.operations.get(ctx.param(5)) else {
        return Reply::not_found(&format!("operationsStatus/{}", ctx.param(5)));
    };
    let mut body = json!({"id": op.id, "name": op.id, "startTime": ts(op.start)});
    match w.op_status(op, ctx.now) {
        OpStatus::InProgress => body["status"] = json!("InProgress"),
        OpStatus::Succeeded { job_id } => {
            body["status"] = json!("Succeeded");
            body["endTime"] = json!(ts(ctx.now));
            if let Some(j) = job_id {
                body["properties"] =
                    json!({"objectType": "OperationStatusJobExtendedInfo", "jobId": j});
            }
        }
        OpStatus::Failed(f) => {
            body["status"] = json!("Failed");
            body["endTime"] = json!(ts(ctx.now));
            body["error"] = json!({"code": f.code, "message": f.message});
        }
    }
    Reply::ok(body)
}

fn operation_result(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(op) = w.operations.get(ctx.param(5)).cloned() else {
        return Reply::not_found(&format!("operationResults/{}", ctx.param(5)));
    };
    match w.op_status(&op, ctx.now) {
        OpStatus::InProgress => Reply::empty(StatusCode::ACCEPTED)
            .header(
                "Location",
                format!("{}{}?api-version={}", ctx.base, ctx.path, ctx.api_version),
            )
            .header("Retry-After", "1"),
        OpStatus::Succeeded { .. } => match op
            .result_item
            .as_ref()
            .and_then(|k| w.protected_items.get(k))
        {
            Some(item) => Reply::ok(w.protected_item_json(item)),
            None => Reply::empty(StatusCode::NO_CONTENT),
        },
        OpStatus::Failed(f) => bad(&f.code, f.message),
    }
}

fn recovery_points_list(w: &mut World, ctx: &Ctx) -> Reply {
    let (key, _, _) = match item_ref(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(item) = w.protected_items.get(&key) else {
        return item_not_found(ctx);
    };
    let mut rps: Vec<_> = item.recovery_points.iter().collect();
    rps.sort_by_key(|r| std::cmp::Reverse(r.time));
    let items: Vec<Value> = rps
        .into_iter()
        .map(|rp| w.recovery_point_json(item, rp, ctx.now))
        .collect();
    Reply::ok(paged(ctx, items, PAGE))
}

fn recovery_point_get(w: &mut World, ctx: &Ctx) -> Reply {
    let (key, _, _) = match item_ref(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let found = w.protected_items.get(&key).and_then(|i| {
        i.recovery_points
            .iter()
            .find(|r| r.name == ctx.param(5))
            .map(|r| (i, r))
    });
    match found {
        Some((i, rp)) => Reply::ok(w.recovery_point_json(i, rp, ctx.now)),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "UserErrorRecoveryPointNotFound",
            format!("Recovery point {} was not found.", ctx.param(5)),
        ),
    }
}

fn protected_items_list(w: &mut World, ctx: &Ctx) -> Reply {
    let vkey = vault_key(ctx);
    if !w.rs_vaults.contains_key(&vkey) {
        return vault_not_found(ctx);
    }
    let items: Vec<Value> = w
        .protected_items
        .values()
        .filter(|i| i.vault_key == vkey)
        .map(|i| w.protected_item_json(i))
        .collect();
    Reply::ok(paged(ctx, items, PAGE))
}
