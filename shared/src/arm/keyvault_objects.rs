//! Microsoft.KeyVault (control plane) secrets and keys: whether the BEK secret and the KEK a
//! recovery point names still exist, before a restored VM is deployed that would need them.
//!
//! ARM's `GET vaults/{kv}/secrets/{name}` and `GET vaults/{kv}/keys/{name}` (keyvault 2023-07-01,
//! examples `getSecret.json`, `getKey.json`) return metadata only, never a secret value: they need
//! `Microsoft.KeyVault/vaults/secrets/read` and `.../keys/read`, no data-plane access. ARM reads a
//! secret by name (its current version); a key can be read at a version
//! (`keys/{name}/versions/{version}`).

use super::client::{sub_bucket, ArmClient};
use super::error::ArmError;
use super::keyvault::{KEYVAULT_API_VERSION, KEYVAULT_TYPE};
use super::scope::expect_type;
use crate::ids::ResourceId;
use serde::{Deserialize, Serialize};

/// A secret or key as ARM returns it (no value: ARM never returns one).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyVaultObject {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl ArmClient {
    /// `GET vaults/{kv}/secrets/{name}`: `Ok(false)` when the secret does not exist.
    pub async fn key_vault_secret_exists(
        &self,
        vault: &ResourceId,
        name: &str,
    ) -> Result<bool, ArmError> {
        self.key_vault_object_exists(vault, &["secrets", name], "keyvault.secret.get")
            .await
    }

    /// `GET vaults/{kv}/keys/{name}[/versions/{version}]`: `Ok(false)` when the key (or that
    /// version) does not exist.
    pub async fn key_vault_key_exists(
        &self,
        vault: &ResourceId,
        name: &str,
        version: Option<&str>,
    ) -> Result<bool, ArmError> {
        let tail: Vec<&str> = match version {
            Some(v) => vec!["keys", name, "versions", v],
            None => vec!["keys", name],
        };
        self.key_vault_object_exists(vault, &tail, "keyvault.key.get")
            .await
    }

    async fn key_vault_object_exists(
        &self,
        vault: &ResourceId,
        tail: &[&str],
        op: &'static str,
    ) -> Result<bool, ArmError> {
        expect_type("keyVaultId", vault, KEYVAULT_TYPE)?;
        let url = self.id_url(vault, tail, KEYVAULT_API_VERSION, &[])?;
        match self
            .get_json::<KeyVaultObject>(op, url, sub_bucket(vault)?)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
