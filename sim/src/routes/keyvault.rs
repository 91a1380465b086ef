//! Microsoft.KeyVault 2023-07-01: vault get, accessPolicies/add (merge).
//! Shapes: keyvault examples `getVault.json`, `updateAccessPoliciesAdd.json`.

use super::{route, Ctx, Reply, Route};
use crate::world::{lc, KvAccessPolicy, World};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const API: Option<&str> = Some("2023-07-01");

pub fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.keyvault/vaults/*", "keyvault.get", API, get),
        route(Method::PUT, "subscriptions/*/resourcegroups/*/providers/microsoft.keyvault/vaults/*/accesspolicies/*", "keyvault.accessPolicies.add", API, access_policies),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.keyvault/vaults/*/secrets/*", "keyvault.secret.get", API, secret_get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.keyvault/vaults/*/keys/*", "keyvault.key.get", API, key_get),
        route(Method::GET, "subscriptions/*/resourcegroups/*/providers/microsoft.keyvault/vaults/*/keys/*/versions/*", "keyvault.keyVersion.get", API, key_get),
    ]
}

/// `GET vaults/{kv}/secrets/{name}` (example `getSecret.json`): metadata, never the value.
fn secret_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(kv) = find(w, ctx) else {
        return not_found(ctx);
    };
    let name = ctx.param(3);
    match kv.secrets.iter().find(|s| s.eq_ignore_ascii_case(name)) {
        Some(s) => Reply::ok(json!({
            "id": format!("{}/secrets/{s}", kv.id),
            "name": s,
            "type": "Microsoft.KeyVault/vaults/secrets",
            "properties": {"attributes": {"enabled": true}, "secretUri": format!("{}secrets/{s}", kv.vault_uri())}
        })),
        None => object_not_found(ctx, "secrets"),
    }
}

/// `GET vaults/{kv}/keys/{name}` and `.../keys/{name}/versions/{version}` (example `getKey.json`;
/// the simulator keeps one version of a key, so any version of an existing key is found).
fn key_get(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(kv) = find(w, ctx) else {
        return not_found(ctx);
    };
    match kv.keys.get(&lc(ctx.param(3))) {
        Some((name, _)) => Reply::ok(json!({
            "id": format!("{}/keys/{name}", kv.id),
            "name": name,
            "type": "Microsoft.KeyVault/vaults/keys",
            "properties": {"attributes": {"enabled": true}, "kty": "RSA", "keyUri": format!("{}keys/{name}", kv.vault_uri())}
        })),
        None => object_not_found(ctx, "keys"),
    }
}

fn object_not_found(ctx: &Ctx, kind: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.KeyVault/vaults/{}/{kind}/{}' under resource group '{}' was not found.",
            ctx.param(2),
            ctx.param(3),
            ctx.param(1)
        ),
    )
}

fn find<'a>(w: &'a World, ctx: &Ctx) -> Option<&'a crate::world::KvState> {
    w.key_vaults.get(&lc(ctx.param(2))).filter(|kv| {
        kv.subscription.eq_ignore_ascii_case(ctx.param(0))
            && kv.resource_group.eq_ignore_ascii_case(ctx.param(1))
    })
}

fn not_found(ctx: &Ctx) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.KeyVault/vaults/{}' under resource group '{}' was not found.",
            ctx.param(2),
            ctx.param(1)
        ),
    )
}

fn get(w: &mut World, ctx: &Ctx) -> Reply {
    match find(w, ctx) {
        Some(kv) => Reply::ok(w.kv_json(kv)),
        None => not_found(ctx),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).map(lc).collect())
        .unwrap_or_default()
}

fn union(into: &mut Vec<String>, add: Vec<String>) {
    for a in add {
        if !into.iter().any(|x| x.eq_ignore_ascii_case(&a)) {
            into.push(a);
        }
    }
}

fn access_policies(w: &mut World, ctx: &Ctx) -> Reply {
    let kind = lc(ctx.param(3));
    if kind != "add" {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!(
                "operationKind '{}' is not supported by the simulator (only 'add').",
                ctx.param(3)
            ),
        );
    }
    let Some(kv) = find(w, ctx) else {
        return not_found(ctx);
    };
    if kv.deny_our_identity {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{0}' with object id '{0}' does not have authorization to perform action 'Microsoft.KeyVault/vaults/accessPolicies/write' over scope '{1}/accessPolicies/add' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                w.our_object_id, kv.id
            ),
        );
    }
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let parsed = match parse_access_policies(&body, &w.tenant_id) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let key = lc(ctx.param(2));
    let Some(kv) = w.key_vaults.get_mut(&key) else {
        return not_found(ctx);
    };
    merge_access_policies(&mut kv.access_policies, &parsed);
    let echoed: Vec<Value> = parsed.iter().map(KvAccessPolicy::to_json).collect();
    Reply::ok(json!({
        "id": format!("{}/accessPolicies/add", kv.id),
        "type": "Microsoft.KeyVault/vaults/accessPolicies",
        "properties": {"accessPolicies": echoed}
    }))
}

/// The access policies of an `accessPolicies/add` body; each needs an object id and the
/// vault's tenant. Permission names are kept lower-case.
fn parse_access_policies(body: &Value, tenant_id: &str) -> Result<Vec<KvAccessPolicy>, Reply> {
    let Some(policies) = body["properties"]["accessPolicies"].as_array() else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "properties.accessPolicies is required and must be an array.",
        ));
    };
    let mut parsed = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let (Some(tenant), Some(object)) = (p["tenantId"].as_str(), p["objectId"].as_str()) else {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("properties.accessPolicies[{i}] needs tenantId and objectId."),
            ));
        };
        if !tenant.eq_ignore_ascii_case(tenant_id) {
            return Err(Reply::error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("properties.accessPolicies[{i}].tenantId must be the vault's tenant {tenant_id}."),
            ));
        }
        parsed.push(KvAccessPolicy {
            tenant_id: tenant.to_string(),
            object_id: object.to_string(),
            keys: strings(&p["permissions"]["keys"]),
            secrets: strings(&p["permissions"]["secrets"]),
            certificates: strings(&p["permissions"]["certificates"]),
        });
    }
    Ok(parsed)
}

/// `add` merges: a principal's new permissions join those it already has.
fn merge_access_policies(policies: &mut Vec<KvAccessPolicy>, add: &[KvAccessPolicy]) {
    for p in add {
        match policies
            .iter_mut()
            .find(|e| e.object_id.eq_ignore_ascii_case(&p.object_id))
        {
            Some(existing) => {
                union(&mut existing.keys, p.keys.clone());
                union(&mut existing.secrets, p.secrets.clone());
                union(&mut existing.certificates, p.certificates.clone());
            }
            None => policies.push(p.clone()),
        }
    }
}
