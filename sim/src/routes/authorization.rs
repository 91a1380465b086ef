//! Microsoft.Authorization 2022-04-01: role definition put/get, role assignment put and list at
//! scope. Shapes: authorization examples `PutRoleDefinition.json`, `PutRoleAssignment.json`,
//! `GetRoleAssignmentsForScope.json`.

use super::{route, Ctx, Reply, Route};
use crate::world::{lc, scope_covers, RoleAssignment, RoleDef, World};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const API: Option<&str> = Some("2022-04-01");

pub fn routes() -> Vec<Route> {
    vec![
        route(
            Method::PUT,
            "subscriptions/*/providers/microsoft.authorization/roledefinitions/*",
            "roleDefinition.put",
            API,
            role_definition_put,
        ),
        route(
            Method::GET,
            "subscriptions/*/providers/microsoft.authorization/roledefinitions/*",
            "roleDefinition.get",
            API,
            role_definition_get,
        ),
        route(
            Method::PUT,
            "**/providers/microsoft.authorization/roleassignments/*",
            "roleAssignment.put",
            API,
            role_assignment_put,
        ),
        route(
            Method::GET,
            "**/providers/microsoft.authorization/roleassignments",
            "roleAssignment.list",
            API,
            role_assignment_list,
        ),
    ]
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

fn role_definition_put(w: &mut World, ctx: &Ctx) -> Reply {
    let guid = ctx.param(1);
    if !is_guid(guid) {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleDefinitionId",
            format!("The role definition ID '{guid}' is not valid; it must be a GUID."),
        );
    }
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let props = &body["properties"];
    if props["roleName"].as_str().is_none_or(str::is_empty) {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "RoleDefinitionNameNullOrEmpty",
            "properties.roleName is required.",
        );
    }
    if !props["permissions"].is_array() {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidPermissions",
            "properties.permissions must be an array.",
        );
    }
    if let Some(other) = w.role_definitions.values().find(|d| {
        d.body["properties"]["roleName"].as_str() == props["roleName"].as_str()
            && !d.name.eq_ignore_ascii_case(guid)
    }) {
        return Reply::error(
            StatusCode::CONFLICT,
            "RoleDefinitionWithSameNameExists",
            format!(
                "A custom role with the same name already exists in this directory (id {}).",
                other.name
            ),
        );
    }
    let id = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        ctx.param(0)
    );
    let existed = w.role_definitions.contains_key(&lc(guid));
    let mut stored = json!({
        "id": id,
        "name": guid,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": props.clone()
    });
    stored["properties"]["type"] = json!("CustomRole");
    stored["properties"]["createdOn"] = json!(crate::world::ts(ctx.now));
    stored["properties"]["updatedOn"] = json!(crate::world::ts(ctx.now));
    w.role_definitions.insert(
        lc(guid),
        RoleDef {
            id,
            name: guid.to_string(),
            body: stored.clone(),
        },
    );
    Reply::json(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        stored,
    )
}

fn role_definition_get(w: &mut World, ctx: &Ctx) -> Reply {
    match w.role_definitions.get(&lc(ctx.param(1))) {
        Some(d) => Reply::ok(d.body.clone()),
        None => Reply::error(
            StatusCode::NOT_FOUND,
            "RoleDefinitionDoesNotExist",
            "The specified role definition does not exist.",
        ),
    }
}

fn scope_exists(w: &World, scope: &str) -> Result<Option<bool>, ()> {
    // Returns Some(deny_our_identity) for key vault scopes, None for other known scopes.
    let l = lc(scope);
    if let Some(kv) = w.key_vaults.values().find(|k| lc(&k.id) == l) {
        return Ok(Some(kv.deny_our_identity));
    }
    let parts: Vec<&str> = l.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["subscriptions", s] | ["subscriptions", s, "resourcegroups", _]
            if w.subscriptions.contains_key(*s) =>
        {
            Ok(None)
        }
        _ => Err(()),
    }
}

fn role_assignment_put(w: &mut World, ctx: &Ctx) -> Reply {
    let scope = ctx.param(0).to_string();
    let name = ctx.param(1).to_string();
    if let Err(reply) = check_assignment_target(w, &scope, &name) {
        return reply;
    }
    let body = match ctx.json_body() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let props = &body["properties"];
    let (Some(role), Some(principal)) = (
        props["roleDefinitionId"].as_str(),
        props["principalId"].as_str(),
    ) else {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "properties.roleDefinitionId and properties.principalId are required.",
        );
    };
    let role_guid = lc(role.rsplit('/').next().unwrap_or_default());
    if !w.role_definitions.contains_key(&role_guid) {
        return Reply::error(
            StatusCode::BAD_REQUEST,
            "RoleDefinitionDoesNotExist",
            format!("The specified role definition with ID '{role_guid}' does not exist."),
        );
    }
    let principal_type = props["principalType"]
        .as_str()
        .unwrap_or("ServicePrincipal")
        .to_string();
    let id = format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}");
    if let Some(reply) = existing_assignment(w, &id, &scope, principal, &role_guid) {
        return reply;
    }
    let ra = RoleAssignment {
        id: id.clone(),
        name,
        scope,
        role_definition_id: role.to_string(),
        principal_id: principal.to_string(),
        principal_type,
        created: ctx.now,
    };
    let out = ra.to_json(&w.our_object_id);
    w.role_assignments.insert(lc(&id), ra);
    Reply::json(StatusCode::CREATED, out)
}

/// A role assignment needs a GUID name and a scope the simulator has; a scope may deny our
/// identity the write.
fn check_assignment_target(w: &World, scope: &str, name: &str) -> Result<(), Reply> {
    if !is_guid(name) {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "InvalidRoleAssignmentId",
            format!("The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID."),
        ));
    }
    let deny = match scope_exists(w, scope) {
        Ok(d) => d.unwrap_or(false),
        Err(()) => {
            return Err(Reply::error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("The scope '{scope}' does not exist in the simulator."),
            ))
        }
    };
    if deny {
        return Err(Reply::error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!("The client '{0}' with object id '{0}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/write' over scope '{scope}/providers/Microsoft.Authorization/roleAssignments/{name}' or the scope is invalid. If access was recently granted, please refresh your credentials.", w.our_object_id),
        ));
    }
    Ok(())
}

/// The answer when assignment `id` exists (idempotent 201 if it is the same, else 409) or the
/// same principal already has the role at `scope` under another name (409).
fn existing_assignment(
    w: &World,
    id: &str,
    scope: &str,
    principal: &str,
    role_guid: &str,
) -> Option<Reply> {
    let same_role = |a: &str| lc(a.rsplit('/').next().unwrap_or_default()) == role_guid;
    if let Some(existing) = w.role_assignments.get(&lc(id)) {
        if existing.principal_id.eq_ignore_ascii_case(principal)
            && same_role(&existing.role_definition_id)
        {
            return Some(Reply::json(
                StatusCode::CREATED,
                existing.to_json(&w.our_object_id),
            ));
        }
        return Some(Reply::error(
            StatusCode::CONFLICT,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        ));
    }
    if w.role_assignments.values().any(|a| {
        lc(&a.scope) == lc(scope)
            && a.principal_id.eq_ignore_ascii_case(principal)
            && same_role(&a.role_definition_id)
    }) {
        return Some(Reply::error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ));
    }
    None
}

fn role_assignment_list(w: &mut World, ctx: &Ctx) -> Reply {
    let scope = lc(ctx.param(0));
    let filter = ctx.query("$filter").unwrap_or("").to_string();
    let at_scope = filter.contains("atScope()");
    let principal = filter
        .split("principalId eq '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .map(lc);
    let items: Vec<Value> = w
        .role_assignments
        .values()
        .filter(|a| {
            let s = lc(&a.scope);
            // atScope(): at or above the scope; otherwise also below it.
            scope_covers(&s, &scope) || (!at_scope && scope_covers(&scope, &s))
        })
        .filter(|a| principal.as_ref().is_none_or(|p| lc(&a.principal_id) == *p))
        .map(|a| a.to_json(&w.our_object_id))
        .collect();
    Reply::ok(json!({"value": items}))
}
