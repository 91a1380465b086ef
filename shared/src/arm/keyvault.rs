//! Microsoft.KeyVault (control plane): vault get, access policy add (merge).
//!
//! Shapes: keyvault 2023-07-01 examples getVault.json and updateAccessPoliciesAdd.json.

use super::client::{sub_bucket, ArmClient};
use super::common::null_vec;
use super::error::ArmError;
use super::scope::expect_type;
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const KEYVAULT_API_VERSION: &str = "2023-07-01";
pub const KEYVAULT_TYPE: &str = "Microsoft.KeyVault/vaults";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyVault {
    pub id: Option<String>,
    pub name: Option<String>,
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: KeyVaultProperties,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyVaultProperties {
    pub tenant_id: Option<String>,
    pub enable_rbac_authorization: Option<bool>,
    pub enabled_for_disk_encryption: Option<bool>,
    pub enabled_for_deployment: Option<bool>,
    pub enabled_for_template_deployment: Option<bool>,
    pub enable_soft_delete: Option<bool>,
    pub enable_purge_protection: Option<bool>,
    pub vault_uri: Option<String>,
    #[serde(deserialize_with = "null_vec")]
    pub access_policies: Vec<AccessPolicyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyEntry {
    pub tenant_id: String,
    pub object_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Permissions {
    #[serde(deserialize_with = "null_vec", skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(deserialize_with = "null_vec", skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(deserialize_with = "null_vec", skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<String>,
}

impl Permissions {
    /// True when every wanted key and secret permission is granted (case-insensitive; `all`
    /// counts as everything).
    pub fn covers(&self, keys: &[&str], secrets: &[&str]) -> bool {
        let has = |granted: &[String], want: &str| {
            granted
                .iter()
                .any(|g| g.eq_ignore_ascii_case(want) || g.eq_ignore_ascii_case("all"))
        };
        keys.iter().all(|k| has(&self.keys, k)) && secrets.iter().all(|s| has(&self.secrets, s))
    }
}

impl KeyVault {
    pub fn rbac_enabled(&self) -> bool {
        self.properties.enable_rbac_authorization == Some(true)
    }
    pub fn enabled_for_disk_encryption(&self) -> bool {
        self.properties.enabled_for_disk_encryption == Some(true)
    }
    /// Merged permissions of every policy for `object_id` (ARM may hold several entries).
    pub fn permissions_for(&self, object_id: &str) -> Permissions {
        let mut out = Permissions::default();
        for p in self
            .properties
            .access_policies
            .iter()
            .filter(|p| p.object_id.eq_ignore_ascii_case(object_id))
        {
            out.keys.extend(p.permissions.keys.iter().cloned());
            out.secrets.extend(p.permissions.secrets.iter().cloned());
            out.certificates
                .extend(p.permissions.certificates.iter().cloned());
        }
        out
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessPolicyUpdate<'a> {
    properties: AccessPolicyUpdateProps<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AccessPolicyUpdateProps<'a> {
    access_policies: &'a [AccessPolicyEntry],
}

/// The `accessPolicies/add` response: the policies that were sent.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessPolicyUpdateResult {
    pub id: Option<String>,
    pub properties: AccessPolicyUpdateResultProps,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessPolicyUpdateResultProps {
    #[serde(deserialize_with = "null_vec")]
    pub access_policies: Vec<AccessPolicyEntry>,
}

impl ArmClient {
    /// `GET vaults/{kv}`.
    pub async fn get_key_vault(&self, vault: &ResourceId) -> Result<KeyVault, ArmError> {
        expect_type("keyVaultId", vault, KEYVAULT_TYPE)?;
        let url = self.id_url(vault, &[], KEYVAULT_API_VERSION, &[])?;
        self.get_json("keyvault.vault.get", url, sub_bucket(vault)?)
            .await
    }

    /// `PUT vaults/{kv}/accessPolicies/add`: merges `policies` into the vault's (existing
    /// permissions of the same object id are extended, never removed). Idempotent.
    pub async fn add_key_vault_access_policies(
        &self,
        vault: &ResourceId,
        policies: &[AccessPolicyEntry],
    ) -> Result<AccessPolicyUpdateResult, ArmError> {
        expect_type("keyVaultId", vault, KEYVAULT_TYPE)?;
        if policies.is_empty() {
            return Err(ArmError::invalid("accessPolicies", "must not be empty"));
        }
        for p in policies {
            if uuid::Uuid::parse_str(&p.object_id).is_err()
                || uuid::Uuid::parse_str(&p.tenant_id).is_err()
            {
                return Err(ArmError::invalid(
                    "accessPolicies",
                    "tenantId and objectId must be GUIDs",
                ));
            }
        }
        let url = self.id_url(vault, &["accessPolicies", "add"], KEYVAULT_API_VERSION, &[])?;
        let body = AccessPolicyUpdate {
            properties: AccessPolicyUpdateProps {
                access_policies: policies,
            },
        };
        self.put_json(
            "keyvault.accessPolicies.add",
            url,
            sub_bucket(vault)?,
            &body,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_cover_case_insensitively() {
        let p = Permissions {
            keys: vec!["Get".into(), "List".into(), "Backup".into()],
            secrets: vec!["all".into()],
            certificates: vec![],
        };
        assert!(p.covers(&["get", "list", "backup"], &["get", "list", "backup"]));
        assert!(!p.covers(&["unwrapKey"], &[]));
    }
}
