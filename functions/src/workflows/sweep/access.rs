//! Key Vault access, read from the same Resource Graph rows: which Key Vaults the ADE VMs use,
//! what Azure Backup needs on each ([`VaultNeed`]), and whether the Backup Management Service
//! already has it — through an access policy, or (RBAC vaults) through a role assignment at the
//! vault or above. Also finds the Backup Management Service's object id ([`bms_object_id`]).

use super::discover::str_at;
use super::SweepError;
use crate::context::Context;
use crate::domain::ade::AdeState;
use crate::domain::kv_access::{self, KeyMode};
use crate::domain::sweep_plan::FleetVm;
use ade_backup_shared::ids::ResourceId;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The Backup Management Service's object id (the protection workflow's lookup, shared).
pub(super) async fn bms_object_id(ctx: &Context) -> Result<uuid::Uuid, SweepError> {
    crate::workflows::protect::bms_object_id(ctx)
        .await
        .map_err(|e| SweepError::BmsObjectId(crate::engine::chain(&e)))
}

/// What Azure Backup needs on one Key Vault, summed over the VMs that use it.
#[derive(Default, Clone, Copy)]
struct VaultNeed {
    secrets: bool,
    keys: bool,
}

/// Access in place, per Key Vault (canonical id) the ADE VMs use.
#[derive(Default)]
pub(super) struct KeyVaultAccess {
    /// Key Vaults where the Backup Management Service's access is in place.
    pub(super) with_access: HashSet<String>,
    /// `enabledForDiskEncryption`, where the row has it.
    pub(super) disk_encryption: HashMap<String, bool>,
}

/// Reads the Key Vault rows (and, for RBAC vaults, the Backup Management Service's role
/// assignment rows) for the Key Vaults `vms` use; other Key Vaults are skipped.
pub(super) fn key_vault_access(
    kv_rows: &[Value],
    ra_rows: &[Value],
    vms: &[FleetVm],
    bms: uuid::Uuid,
) -> KeyVaultAccess {
    let needs = vault_needs(vms);
    let bms_s = bms.to_string();
    let mut out = KeyVaultAccess::default();
    let mut rbac_vaults = Vec::new();
    for row in kv_rows {
        let Some(id) = str_at(row, &["id"]).and_then(|s| ResourceId::parse(s).ok()) else {
            continue;
        };
        let Some(need) = needs.get(&id.canonical()).copied() else {
            continue;
        };
        if let Some(enabled) = row.get("enabledForDiskEncryption").and_then(Value::as_bool) {
            out.disk_encryption.insert(id.canonical(), enabled);
        }
        if row
            .get("enableRbacAuthorization")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            rbac_vaults.push(id);
        } else if access_policy_in_place(row, &bms_s, need) {
            out.with_access.insert(id.canonical());
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
            out.with_access.insert(vault.canonical());
        }
    }
    out
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
        .map(|a| a.iter().map(policy_entry).collect())
        .unwrap_or_default();
    let full = kv_access::required_permissions(KeyMode::BekKek);
    let required = kv_access::Permissions {
        keys: if need.keys { full.keys } else { vec![] },
        secrets: if need.secrets { full.secrets } else { vec![] },
    };
    kv_access::access_policy_in_place(&entries, bms, &required)
}

/// One entry of a Key Vault row's `accessPolicies`.
fn policy_entry(p: &Value) -> kv_access::PolicyEntry {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: &str = "00000000-0000-0000-0000-000000000001";

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
}
