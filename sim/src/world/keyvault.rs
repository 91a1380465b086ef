//! Microsoft.KeyVault: key vaults (access-policy or RBAC model), their secrets and keys, and
//! the check Azure Backup makes before backing up an encrypted VM — can the Backup Management
//! Service read the BEK secret (and the KEK) through an access policy or a role assignment?
//! Shapes follow keyvault `updateAccessPoliciesAdd.json` / `getVault.json` (2023-07-01).

use super::{codes, lc, resource_id, scope_covers, Encryption, Failure, World};
use crate::fleet::{self, KeyVaultModel};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, serde::Serialize)]
pub struct KvAccessPolicy {
    pub tenant_id: String,
    pub object_id: String,
    pub keys: Vec<String>,
    pub secrets: Vec<String>,
    pub certificates: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KvState {
    pub id: String,
    pub name: String,
    pub subscription: String,
    pub resource_group: String,
    pub location: String,
    pub model: KeyVaultModel,
    pub enabled_for_disk_encryption: bool,
    pub deny_our_identity: bool,
    pub access_policies: Vec<KvAccessPolicy>,
    pub secrets: BTreeSet<String>,
    /// lower-case key name -> (name, fromCertificate)
    pub keys: BTreeMap<String, (String, bool)>,
}

impl KvAccessPolicy {
    /// The policy as a vault's `properties.accessPolicies[]` shows it.
    pub fn to_json(&self) -> Value {
        json!({"tenantId": self.tenant_id, "objectId": self.object_id, "permissions": {"keys": self.keys, "secrets": self.secrets, "certificates": self.certificates}})
    }
}

impl KvState {
    pub fn vault_uri(&self) -> String {
        format!("https://{}.vault.azure.net/", self.name)
    }
}

impl World {
    /// Add a fleet's key vault (keyed by lower-case name, as vault names are global).
    pub(super) fn add_fleet_key_vault(&mut self, kv: &fleet::KeyVault) {
        let id = resource_id(
            &kv.subscription,
            &kv.resource_group,
            "Microsoft.KeyVault/vaults",
            &kv.name,
        );
        let access_policies = kv
            .access_policies
            .iter()
            .map(|p| KvAccessPolicy {
                tenant_id: self.tenant_id.clone(),
                object_id: p.object_id.clone(),
                keys: p.permissions.keys.clone(),
                secrets: p.permissions.secrets.clone(),
                certificates: p.permissions.certificates.clone(),
            })
            .collect();
        self.key_vaults.insert(
            lc(&kv.name),
            KvState {
                id,
                name: kv.name.clone(),
                subscription: kv.subscription.clone(),
                resource_group: kv.resource_group.clone(),
                location: kv.location.clone(),
                model: kv.model,
                enabled_for_disk_encryption: kv.enabled_for_disk_encryption,
                deny_our_identity: kv.deny_our_identity,
                access_policies,
                secrets: kv.secrets.iter().cloned().collect(),
                keys: kv
                    .keys
                    .iter()
                    .map(|k| (lc(&k.name), (k.name.clone(), k.from_certificate)))
                    .collect(),
            },
        );
    }

    /// Whether the Backup Management Service can back up a VM encrypted with `enc`.
    pub fn check_backup_access(&self, enc: &Encryption) -> Result<(), Failure> {
        let kv_name = enc.key_vault_id.rsplit('/').next().unwrap_or_default();
        let bek_vault = self.key_vaults.get(&lc(kv_name)).ok_or_else(|| {
            Failure::new(
                "UserErrorKeyVaultNotFound",
                format!(
                    "Key vault {} referenced by the VM's disk encryption settings was not found",
                    enc.key_vault_id
                ),
            )
        })?;
        let kek = match &enc.kek_url {
            Some(url) => Some(self.kek_vault_for_backup(url)?),
            None => None,
        };
        let denied = || {
            Failure::new(
                codes::KEY_VAULT_PERMISSIONS,
                "Backup doesn't have sufficient permissions to the key vault for backup of encrypted VMs.",
            )
        };
        let kek_same_vault = kek.is_some_and(|k| k.id.eq_ignore_ascii_case(&bek_vault.id));
        if !self.vault_allows_backup(bek_vault, true, kek_same_vault) {
            return Err(denied());
        }
        if let Some(kv) = kek {
            if !kek_same_vault && !self.vault_allows_backup(kv, false, true) {
                return Err(denied());
            }
        }
        Ok(())
    }

    /// The vault holding the KEK at `url`, if Azure Backup can use that key as a KEK at all.
    fn kek_vault_for_backup(&self, url: &str) -> Result<&KvState, Failure> {
        let parsed = ade_backup_shared::ids::KeyVaultUrl::parse(url).map_err(|e| {
            Failure::new(
                "UserErrorKeyVaultNotFound",
                format!("KEK URL is invalid: {e}"),
            )
        })?;
        let kv = self
            .key_vaults
            .get(&lc(parsed.vault_name()))
            .ok_or_else(|| {
                Failure::new(
                    "UserErrorKeyVaultNotFound",
                    format!(
                        "Key vault {} holding the KEK was not found",
                        parsed.vault_name()
                    ),
                )
            })?;
        if kv
            .keys
            .get(&lc(parsed.object_name()))
            .is_some_and(|(_, from_cert)| *from_cert)
        {
            return Err(Failure::new(
                codes::KEK_FROM_CERTIFICATE,
                format!("The key encryption key {url} belongs to a certificate. Azure Backup supports only standalone keys as KEK for encrypted VMs."),
            ));
        }
        Ok(kv)
    }

    /// Whether the Backup Management Service may read `kv`'s secrets and/or keys, by an access
    /// policy or (RBAC vaults) a role assignment at or above the vault.
    fn vault_allows_backup(&self, kv: &KvState, secrets: bool, keys: bool) -> bool {
        match kv.model {
            KeyVaultModel::AccessPolicy => {
                let has = |list: &[String], need: &[&str]| {
                    need.iter().all(|n| {
                        list.iter()
                            .any(|p| p.eq_ignore_ascii_case(n) || p.eq_ignore_ascii_case("all"))
                    })
                };
                kv.access_policies.iter().any(|p| {
                    p.object_id.eq_ignore_ascii_case(&self.bms_object_id)
                        && (!secrets || has(&p.secrets, &["get", "list"]))
                        && (!keys || has(&p.keys, &["get", "list", "backup"]))
                })
            }
            KeyVaultModel::Rbac => {
                let scope = lc(&kv.id);
                self.role_assignments.values().any(|ra| {
                    ra.principal_id.eq_ignore_ascii_case(&self.bms_object_id)
                        && scope_covers(&lc(&ra.scope), &scope)
                        && self.role_grants_backup(&ra.role_definition_id)
                })
            }
        }
    }

    pub fn kv_json(&self, kv: &KvState) -> Value {
        let policies: Vec<Value> = kv
            .access_policies
            .iter()
            .map(KvAccessPolicy::to_json)
            .collect();
        json!({
            "id": kv.id,
            "name": kv.name,
            "type": "Microsoft.KeyVault/vaults",
            "location": kv.location,
            "tags": {},
            "properties": {
                "sku": {"family": "A", "name": "standard"},
                "tenantId": self.tenant_id,
                "accessPolicies": policies,
                "enabledForDeployment": false,
                "enabledForDiskEncryption": kv.enabled_for_disk_encryption,
                "enabledForTemplateDeployment": false,
                "enableSoftDelete": true,
                "softDeleteRetentionInDays": 90,
                "enableRbacAuthorization": kv.model == KeyVaultModel::Rbac,
                "enablePurgeProtection": true,
                "vaultUri": kv.vault_uri(),
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled"
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::world::Durations;
    use chrono::Utc;

    #[test]
    fn backup_access_follows_access_policies() {
        let mut w = World::from_fleet(&Fleet::sample(), Utc::now(), Durations::default());
        let enc = w
            .vms
            .values()
            .find(|v| v.name == "web-lnx-02")
            .and_then(|v| v.encryption.clone())
            .expect("enc");
        let err = w.check_backup_access(&enc).expect_err("no policy yet");
        assert_eq!(err.code, codes::KEY_VAULT_PERMISSIONS);
        let bms = w.bms_object_id.clone();
        let tenant = w.tenant_id.clone();
        let kv = w.key_vaults.get_mut("kv-ade-ap-weu").expect("kv");
        kv.access_policies.push(KvAccessPolicy {
            tenant_id: tenant.clone(),
            object_id: bms.clone(),
            keys: vec![],
            secrets: vec!["get".into(), "list".into()],
            certificates: vec![],
        });
        assert!(
            w.check_backup_access(&enc).is_err(),
            "KEK needs key permissions"
        );
        let kv = w.key_vaults.get_mut("kv-ade-ap-weu").expect("kv");
        kv.access_policies.last_mut().expect("policy").keys =
            vec!["Get".into(), "List".into(), "Backup".into()];
        w.check_backup_access(&enc).expect("allowed");
    }
}
