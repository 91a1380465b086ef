//! The Key Vault access Azure Backup needs to back up an ADE VM, and nothing more.
//!
//! Source: Azure docs "Back up and restore encrypted Azure VMs" (backup-azure-vms-encryption.md)
//! and the portal's "Azure Backup" access-policy template:
//! - access-policy vaults, BEK + KEK: keys `get, list, backup`; secrets `get, list, backup`;
//! - access-policy vaults, BEK only: secrets `get, list, backup`, no key permissions at all;
//! - RBAC vaults: a custom role with exactly five dataActions (below), assigned at the vault scope.
//!   A setting may choose the built-in Key Vault Administrator role instead.

use ade_backup_shared::ids::{deterministic_uuid, ResourceId};
use serde::{Deserialize, Serialize};

/// First-party app "Backup Management Service".
pub const BACKUP_MANAGEMENT_SERVICE_APP_ID: &str = "262044b1-e2ce-469f-a196-69ab7ada62d3";
/// Built-in "Key Vault Administrator" role definition id.
pub const KEY_VAULT_ADMINISTRATOR_ROLE: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
/// The dataActions of the least-privilege custom role (docs, RBAC section).
pub use ade_backup_shared::arm::BACKUP_KEY_VAULT_DATA_ACTIONS as BACKUP_ROLE_DATA_ACTIONS;
pub const BACKUP_ROLE_NAME: &str = "ade-backup: Azure Backup Key Vault reader";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyMode {
    /// BitLocker / dm-crypt key (BEK) as a secret only.
    BekOnly,
    /// BEK wrapped by a key-encryption key (KEK).
    BekKek,
}

/// Permission lists as Key Vault access policies spell them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<String>,
}

pub fn required_permissions(mode: KeyMode) -> Permissions {
    let three = || vec!["get".to_string(), "list".to_string(), "backup".to_string()];
    match mode {
        KeyMode::BekOnly => Permissions {
            keys: vec![],
            secrets: three(),
        },
        KeyMode::BekKek => Permissions {
            keys: three(),
            secrets: three(),
        },
    }
}

/// One existing access-policy entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEntry {
    pub object_id: String,
    pub permissions: Permissions,
}

fn covers(have: &[String], need: &[String]) -> bool {
    let all = have.iter().any(|h| h.eq_ignore_ascii_case("all"));
    all || need
        .iter()
        .all(|n| have.iter().any(|h| h.eq_ignore_ascii_case(n)))
}

/// True when the principal already has at least `required` (an equal or broader policy): then
/// no write is made. Entries of the same principal are summed, as Key Vault evaluates them.
pub fn access_policy_in_place(
    entries: &[PolicyEntry],
    object_id: &str,
    required: &Permissions,
) -> bool {
    let have = merged(entries, object_id);
    covers(&have.keys, &required.keys) && covers(&have.secrets, &required.secrets)
}

/// Every permission the principal holds, summed over its entries.
fn merged(entries: &[PolicyEntry], object_id: &str) -> Permissions {
    let mut out = Permissions::default();
    for e in entries
        .iter()
        .filter(|e| e.object_id.eq_ignore_ascii_case(object_id))
    {
        out.keys.extend(e.permissions.keys.iter().cloned());
        out.secrets.extend(e.permissions.secrets.iter().cloned());
    }
    out
}

/// The part of `required` the principal lacks (what an `accessPolicies/add` should carry). The
/// merge API adds to existing permissions, so sending only the missing part never widens anything.
pub fn missing_permissions(
    entries: &[PolicyEntry],
    object_id: &str,
    required: &Permissions,
) -> Permissions {
    let have = merged(entries, object_id);
    let miss = |have: &[String], need: &[String]| -> Vec<String> {
        need.iter()
            .filter(|n| !covers(have, std::slice::from_ref(n)))
            .cloned()
            .collect()
    };
    Permissions {
        keys: miss(&have.keys, &required.keys),
        secrets: miss(&have.secrets, &required.secrets),
    }
}

/// Which role a RBAC vault gets assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RbacRoleChoice {
    /// Least privilege: the five documented dataActions (default).
    #[default]
    CustomLeastPrivilege,
    /// Built-in Key Vault Administrator, for tenants that forbid custom roles.
    KeyVaultAdministrator,
}

/// Deterministic name (GUID) of the custom role in a subscription: created once, idempotently.
pub fn custom_role_definition_name(subscription: &str) -> String {
    custom_role_definition_uuid(subscription).to_string()
}

/// [`custom_role_definition_name`] as the GUID ARM takes.
pub fn custom_role_definition_uuid(subscription: &str) -> uuid::Uuid {
    deterministic_uuid(&[
        "role-definition",
        "ade-backup-kv-reader",
        &subscription.to_ascii_lowercase(),
    ])
}

/// [`BACKUP_MANAGEMENT_SERVICE_APP_ID`] as a GUID.
pub fn backup_management_service_app_id() -> uuid::Uuid {
    uuid::Uuid::from_u128(0x262044b1_e2ce_469f_a196_69ab7ada62d3)
}

/// Deterministic role-assignment name: a repeat of the same grant is a no-op PUT.
pub fn role_assignment_name(
    key_vault: &ResourceId,
    principal_object_id: &str,
    role_definition_id: &str,
) -> String {
    role_assignment_uuid(key_vault, principal_object_id, role_definition_id).to_string()
}

/// [`role_assignment_name`] as the GUID ARM takes.
pub fn role_assignment_uuid(
    key_vault: &ResourceId,
    principal_object_id: &str,
    role_definition_id: &str,
) -> uuid::Uuid {
    deterministic_uuid(&[
        "role-assignment",
        &key_vault.canonical(),
        &principal_object_id.to_ascii_lowercase(),
        &role_definition_id.to_ascii_lowercase(),
    ])
}

/// Role-definition id (full ARM id) for the chosen role in a subscription.
pub fn role_definition_id(choice: RbacRoleChoice, subscription: &str) -> String {
    let name = match choice {
        RbacRoleChoice::CustomLeastPrivilege => custom_role_definition_name(subscription),
        RbacRoleChoice::KeyVaultAdministrator => KEY_VAULT_ADMINISTRATOR_ROLE.to_string(),
    };
    format!(
        "/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{name}"
    )
}

/// Does a role (given its dataActions) grant what Azure Backup needs?
pub fn role_grants_backup(data_actions: &[String]) -> bool {
    let has = |need: &str| {
        data_actions.iter().any(|a| {
            a.eq_ignore_ascii_case(need)
                || a == "*"
                || a.eq_ignore_ascii_case("Microsoft.KeyVault/vaults/*")
                || (a.ends_with("/*")
                    && need
                        .to_ascii_lowercase()
                        .starts_with(&a[..a.len() - 1].to_ascii_lowercase()))
        })
    };
    BACKUP_ROLE_DATA_ACTIONS.iter().all(|n| has(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_id_guid_is_the_documented_one() {
        assert_eq!(
            backup_management_service_app_id().to_string(),
            BACKUP_MANAGEMENT_SERVICE_APP_ID
        );
    }

    fn entry(oid: &str, keys: &[&str], secrets: &[&str]) -> PolicyEntry {
        PolicyEntry {
            object_id: oid.to_string(),
            permissions: Permissions {
                keys: keys.iter().map(|s| s.to_string()).collect(),
                secrets: secrets.iter().map(|s| s.to_string()).collect(),
            },
        }
    }

    #[test]
    fn bek_only_needs_no_key_permissions() {
        let p = required_permissions(KeyMode::BekOnly);
        assert!(p.keys.is_empty());
        assert_eq!(p.secrets, ["get", "list", "backup"]);
        let p = required_permissions(KeyMode::BekKek);
        assert_eq!(p.keys, ["get", "list", "backup"]);
    }

    #[test]
    fn equal_or_broader_policy_skips_the_write() {
        let need = required_permissions(KeyMode::BekKek);
        let bms = "bms-oid";
        assert!(access_policy_in_place(
            &[entry(
                bms,
                &["Get", "List", "Backup"],
                &["get", "list", "backup"]
            )],
            bms,
            &need
        ));
        assert!(access_policy_in_place(
            &[entry(bms, &["all"], &["all"])],
            bms,
            &need
        ));
        // split across two entries of the same principal still counts
        assert!(access_policy_in_place(
            &[
                entry(bms, &["get", "list", "backup"], &[]),
                entry(bms, &[], &["get", "list", "backup"])
            ],
            bms,
            &need
        ));
        // another principal's policy does not count
        assert!(!access_policy_in_place(
            &[entry("someone", &["all"], &["all"])],
            bms,
            &need
        ));
        // partially there: only the missing part is added
        let miss = missing_permissions(&[entry(bms, &["get"], &["get", "list"])], bms, &need);
        assert_eq!(miss.keys, ["list", "backup"]);
        assert_eq!(miss.secrets, ["backup"]);
    }

    #[test]
    fn deterministic_role_names() {
        let kv = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv1").expect("id");
        let a = role_assignment_name(&kv, "OID", "/x/roleDefinitions/1");
        assert_eq!(a, role_assignment_name(&kv, "oid", "/x/roleDefinitions/1"));
        assert_ne!(a, role_assignment_name(&kv, "oid2", "/x/roleDefinitions/1"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
        assert!(
            role_definition_id(RbacRoleChoice::KeyVaultAdministrator, "s")
                .ends_with(KEY_VAULT_ADMINISTRATOR_ROLE)
        );
    }

    /// The built-in role GUIDs the code uses are the ones infra/ deploys (infra/roles.json, checked
    /// against Azure's published list by infra/tests/validate_infra.py).
    #[test]
    fn built_in_roles_match_the_shared_list() {
        let shared: serde_json::Value =
            serde_json::from_str(include_str!("../../../infra/roles.json")).expect("roles.json");
        assert_eq!(
            shared["builtInRoles"]["keyVaultAdministrator"].as_str(),
            Some(KEY_VAULT_ADMINISTRATOR_ROLE)
        );
    }

    #[test]
    fn role_coverage() {
        let five: Vec<String> = BACKUP_ROLE_DATA_ACTIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(role_grants_backup(&five));
        assert!(!role_grants_backup(&five[..4]));
        assert!(role_grants_backup(&[
            "Microsoft.KeyVault/vaults/*".to_string()
        ]));
    }
}
