//! Microsoft.RecoveryServices 2023-04-01 actions that start backup jobs, and the jobs
//! themselves: Backup now, restore disks from a recovery point, and listing (with `$filter`)
//! or getting jobs. Shapes from recoveryservicesbackup 2023-04-01 example
//! `AzureIaasVm/TriggerRestore_RestoreDisks_IaasVMRestoreRequest_IdentityBasedRestoreDetails.json`.
//! Vaults, protected items and recovery points are served by `recovery_services`.

use super::recovery_services::{
    bad, item_not_found, item_request, lro, vault_key, vault_not_found, API, PAGE,
};
use super::{paged, route, Ctx, Reply, Route};
use crate::world::{codes, daily_limit_body, lc, ProtectedItem, RsVault, SimpleResource, World};
use axum::http::{Method, StatusCode};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

pub fn routes() -> Vec<Route> {
    // Patterns are spelled out because `route` needs 'static strings.
    vec![
        route(Method::POST, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*/backup", "rs.backupNow", API, backup_now),
        route(Method::POST, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupfabrics/azure/protectioncontainers/*/protecteditems/*/recoverypoints/*/restore", "rs.restore", API, restore),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupjobs", "rs.jobs.list", API, jobs_list),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.recoveryservices/vaults/*/backupjobs/*", "rs.jobs.get", API, job_get),
    ]
}

fn backup_now(w: &mut World, ctx: &Ctx) -> Reply {
    let ((key, _, _), body) = match item_request(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if body["properties"]["objectType"].as_str() != Some("IaasVMBackupRequest") {
        return bad(
            "BMSUserErrorInvalidInput",
            "properties.objectType must be 'IaasVMBackupRequest'.",
        );
    }
    let Some(item) = w.protected_items.get(&key).cloned() else {
        return item_not_found(ctx);
    };
    let result = match w.take_on_demand_slot(&key, ctx.now) {
        Err(f) if w.daily_limit_in_operation => Err(f),
        Err(f) => return Reply::json(StatusCode::BAD_REQUEST, daily_limit_body(&f)),
        Ok(()) => w.start_backup(&key, ctx.now).map(Some),
    };
    let op = w.timed_operation(ctx.now, result, None);
    lro(ctx, w, &item, &op)
}

/// Restore disks from a recovery point to a staging storage account in the vault's region; the
/// job writes the template a deployment turns into the VM (see `world::backup_jobs`).
fn restore(w: &mut World, ctx: &Ctx) -> Reply {
    let vkey = vault_key(ctx);
    let Some(vault) = w.rs_vaults.get(&vkey).cloned() else {
        return vault_not_found(ctx);
    };
    let ((key, _, _), body) = match item_request(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let props = &body["properties"];
    if props["objectType"].as_str() != Some("IaasVMRestoreRequest") {
        return bad(
            "BMSUserErrorInvalidInput",
            "properties.objectType must be 'IaasVMRestoreRequest'.",
        );
    }
    let Some(item) = w.protected_items.get(&key).cloned() else {
        return item_not_found(ctx);
    };
    let rp_name = ctx.param(5).to_string();
    let Some(rp) = item.recovery_points.iter().find(|r| r.name == rp_name) else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            "UserErrorRecoveryPointNotFound",
            format!("Recovery point {rp_name} was not found."),
        );
    };
    let encrypted = rp.encryption.is_some();
    let checked = check_recovery_type(props, encrypted)
        .and_then(|()| staging_account(w, props, &vault))
        .and_then(|sa| Ok((sa, restore_target(props, &item, &vault)?)));
    let (sa, (target_sub, target_rg)) = match checked {
        Ok(c) => c,
        Err(r) => return r,
    };
    if encrypted && !target_sub.eq_ignore_ascii_case(&vault.subscription) {
        return bad(
            "UserErrorCrossSubscriptionRestoreNotSupportedForEncryptedVm",
            "Encrypted VMs can only be restored in the vault's subscription.",
        );
    }
    if let Err(f) = w.check_restore_limit(&key, ctx.now) {
        return bad(&f.code, f.message);
    }
    let job = w.start_restore(
        &key,
        rp_name,
        sa.name.clone(),
        target_sub,
        target_rg,
        ctx.now,
    );
    let op = w.timed_operation(ctx.now, Ok(Some(job)), None);
    lro(ctx, w, &item, &op)
}

/// Only `RestoreDisks` is simulated, and it is the only restore Azure allows for encrypted VMs.
fn check_recovery_type(props: &Value, encrypted: bool) -> Result<(), Reply> {
    let recovery_type = props["recoveryType"].as_str().unwrap_or("");
    if encrypted && recovery_type != "RestoreDisks" {
        return Err(bad(
            codes::RESTORE_ENCRYPTED_VM,
            format!("Restore type '{recovery_type}' is not supported for encrypted VMs. Use recoveryType 'RestoreDisks' and create the VM from the restored disks."),
        ));
    }
    if recovery_type != "RestoreDisks" {
        return Err(bad("BMSUserErrorInvalidInput", format!("properties.recoveryType '{recovery_type}' is not supported by the simulator; use 'RestoreDisks'.")));
    }
    Ok(())
}

/// The staging storage account (`storageAccountId`): it must exist in the vault's region.
fn staging_account(w: &World, props: &Value, vault: &RsVault) -> Result<SimpleResource, Reply> {
    let Some(sa_id) = props["storageAccountId"].as_str() else {
        return Err(bad(
            "BMSUserErrorInvalidInput",
            "properties.storageAccountId is required for RestoreDisks.",
        ));
    };
    let Some(sa) = w.storage_accounts.get(&lc(sa_id)).cloned() else {
        return Err(bad(
            "UserErrorStorageAccountNotFound",
            format!("properties.storageAccountId {sa_id} does not exist."),
        ));
    };
    if !sa.location.eq_ignore_ascii_case(&vault.location) {
        return Err(bad(
            "UserErrorStorageAccountInDifferentRegion",
            format!(
                "Storage account {} must be in the vault's region {}.",
                sa.name, vault.location
            ),
        ));
    }
    Ok(sa)
}

/// The (subscription, resource group) to restore into: `targetResourceGroupId`, else the
/// source VM's resource group in the vault's subscription.
fn restore_target(
    props: &Value,
    item: &ProtectedItem,
    vault: &RsVault,
) -> Result<(String, String), Reply> {
    let Some(id) = props["targetResourceGroupId"].as_str() else {
        let vm_rg = item
            .source_id
            .split('/')
            .nth(4)
            .unwrap_or_default()
            .to_string();
        return Ok((vault.subscription.clone(), vm_rg));
    };
    let parts: Vec<&str> = id.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [s, sub, r, rg]
            if s.eq_ignore_ascii_case("subscriptions")
                && r.eq_ignore_ascii_case("resourceGroups") =>
        {
            Ok((sub.to_string(), rg.to_string()))
        }
        _ => Err(bad(
            "BMSUserErrorInvalidInput",
            format!("properties.targetResourceGroupId '{id}' is not a resource group id."),
        )),
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %I:%M:%S %p", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// `$filter` clauses `key eq 'value'` joined by `and`.
fn filter_clauses(filter: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let lower = filter.to_ascii_lowercase();
    let mut rest_l = lower.as_str();
    let mut rest = filter;
    while !rest.trim().is_empty() {
        let Some(eq) = rest_l.find(" eq ") else {
            return Err(format!(
                "$filter clause '{}' is not of the form key eq 'value'",
                rest.trim()
            ));
        };
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 4..].trim_start();
        let skipped = rest.len() - after.len();
        let Some(stripped) = after.strip_prefix('\'') else {
            return Err(format!("$filter value for {key} must be quoted"));
        };
        let Some(end) = stripped.find('\'') else {
            return Err(format!("$filter value for {key} is not terminated"));
        };
        out.push((key.to_ascii_lowercase(), stripped[..end].to_string()));
        let consumed = skipped + 1 + end + 1;
        rest = &rest[consumed..];
        rest_l = &rest_l[consumed..];
        let t = rest_l.trim_start();
        if let Some(next) = t.strip_prefix("and ") {
            let cut = rest_l.len() - next.len();
            rest = &rest[cut..];
            rest_l = &rest_l[cut..];
        } else if !t.is_empty() {
            return Err(format!("unexpected '{}' in $filter", rest.trim()));
        }
    }
    Ok(out)
}

fn jobs_list(w: &mut World, ctx: &Ctx) -> Reply {
    let vkey = vault_key(ctx);
    if !w.rs_vaults.contains_key(&vkey) {
        return vault_not_found(ctx);
    }
    let clauses = match filter_clauses(ctx.query("$filter").unwrap_or("")) {
        Ok(c) => c,
        Err(e) => return bad("BMSUserErrorInvalidFilter", e),
    };
    let mut jobs: Vec<_> = w.jobs.values().filter(|j| j.vault_key == vkey).collect();
    for (k, v) in &clauses {
        let t = parse_time(v);
        jobs.retain(|j| match k.as_str() {
            "operation" => j.operation().eq_ignore_ascii_case(v),
            "status" => j.status.as_str().eq_ignore_ascii_case(v),
            "backupmanagementtype" => v.eq_ignore_ascii_case("AzureIaasVM"),
            "starttime" => t.is_none_or(|t| j.start >= t),
            "endtime" => t.is_none_or(|t| j.start <= t),
            "entityfriendlyname" => j.entity_friendly_name.eq_ignore_ascii_case(v),
            _ => true,
        });
    }
    jobs.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)));
    let items: Vec<Value> = jobs
        .into_iter()
        .map(|j| w.job_json(j, false, ctx.now))
        .collect();
    Reply::ok(paged(ctx, items, PAGE))
}

fn job_get(w: &mut World, ctx: &Ctx) -> Reply {
    let vkey = vault_key(ctx);
    match w
        .jobs
        .get(&lc(ctx.param(3)))
        .filter(|j| j.vault_key == vkey)
    {
        Some(j) => Reply::ok(w.job_json(j, true, ctx.now)),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "BMSUserErrorJobNotFound",
            format!("Job {} was not found in the vault.", ctx.param(3)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_filters_parse() {
        let c = filter_clauses("operation eq 'Backup' and status eq 'InProgress' and startTime eq '2024-01-01 10:00:00 AM'").expect("parses");
        assert_eq!(c.len(), 3);
        assert_eq!(c[0], ("operation".into(), "Backup".into()));
        assert_eq!(c[2].1, "2024-01-01 10:00:00 AM");
        assert!(parse_time(&c[2].1).is_some());
        assert!(filter_clauses("operation = 'x'").is_err());
    }
}
