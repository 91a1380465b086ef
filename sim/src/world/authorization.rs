//! Microsoft.Authorization: role definitions (the built-in Key Vault roles plus custom ones),
//! role assignments, and the RBAC rules the simulator applies — an assignment covers its scope
//! and every scope below it, and actions match with `*` wildcards. Shapes follow
//! authorization `PutRoleAssignment.json` (2022-04-01).

use super::{lc, ts, World};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The five dataActions Azure Backup needs on an RBAC key vault.
pub const BACKUP_DATA_ACTIONS: [&str; 5] = [
    "Microsoft.KeyVault/vaults/keys/backup/action",
    "Microsoft.KeyVault/vaults/secrets/backup/action",
    "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "Microsoft.KeyVault/vaults/keys/read",
    "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
];
pub const KEY_VAULT_ADMINISTRATOR: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";

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
    /// The built-in Key Vault roles every tenant has, with their real GUIDs and dataActions.
    pub(super) fn add_builtin_roles(&mut self) {
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
            self.role_definitions
                .insert(lc(guid), builtin_role(guid, name, &actions));
        }
    }

    /// Whether a role definition grants all of [`BACKUP_DATA_ACTIONS`] (and denies none).
    pub(super) fn role_grants_backup(&self, role_definition_id: &str) -> bool {
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
}
