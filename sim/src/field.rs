//! Switches for the restore-side field failures of issue 14, as `Simulator` methods (tests) and
//! as the scenario action `fieldFault` ([`FieldFault`]): the restore daily limit, numeric
//! recovery-point tiers, stale snapshot keys, a restored VM whose agent never reports ready, and
//! Key Vault changes after protection (a deleted BEK secret or KEK, a vault no longer enabled for
//! disk encryption, a vault moved to another region), and dual-pass (Azure AD application) ADE.

use crate::{world, SimError, Simulator};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FieldFault {
    /// Restores of one protected item accepted in 24 h (`null`: no limit; default 10).
    #[serde(rename_all = "camelCase")]
    RestoreLimit { per_day: Option<u32> },
    /// Serve recovery-point tiers as numbers (older api-versions) or strings.
    #[serde(rename_all = "camelCase")]
    NumericTiers { on: bool },
    /// The newest recovery point of `vm` fails to restore from its snapshot tier (once).
    #[serde(rename_all = "camelCase")]
    StaleSnapshotKeys { vm: String },
    /// A VM of that name, once deployed, never has its guest agent report ready.
    #[serde(rename_all = "camelCase")]
    AgentNeverReady { vm_name: String },
    /// A deployment of a VM of that name fails (`SkuNotAvailable`) before the VM is created.
    #[serde(rename_all = "camelCase")]
    DeploymentFails { vm_name: String },
    /// Delete every BEK secret (`secrets`) or key (`keys`) of a Key Vault.
    #[serde(rename_all = "camelCase")]
    DeleteKeyMaterial { key_vault: String, what: String },
    /// Make a VM's ADE dual-pass (enabled with the Azure AD application `aadClientId`).
    #[serde(rename_all = "camelCase")]
    DualPassAde { vm: String, aad_client_id: String },
    /// Change a Key Vault after protection: its `enabledForDiskEncryption` and/or its region.
    #[serde(rename_all = "camelCase")]
    ChangeKeyVault {
        key_vault: String,
        #[serde(default)]
        enabled_for_disk_encryption: Option<bool>,
        #[serde(default)]
        location: Option<String>,
    },
}

impl Simulator {
    /// Turn one field failure on (or off).
    pub fn field_fault(&self, fault: &FieldFault) -> Result<(), SimError> {
        self.with_world(|w| match fault {
            FieldFault::RestoreLimit { per_day } => {
                w.field.restore_limit_per_day = *per_day;
                Ok(())
            }
            FieldFault::NumericTiers { on } => {
                w.field.numeric_tiers = *on;
                Ok(())
            }
            FieldFault::StaleSnapshotKeys { vm } => {
                let key = Self::resolve_vm(w, vm)?;
                let newest = w
                    .protected_items
                    .values()
                    .filter(|i| i.vm_key == key)
                    .flat_map(|i| i.recovery_points.iter())
                    .max_by_key(|r| r.time)
                    .map(|r| r.name.clone())
                    .ok_or_else(|| unknown("recovery point of VM", vm))?;
                w.field.stale_snapshot_keys.insert(newest);
                Ok(())
            }
            FieldFault::AgentNeverReady { vm_name } => {
                w.field.agent_never_ready.insert(world::lc(vm_name));
                Ok(())
            }
            FieldFault::DeploymentFails { vm_name } => {
                w.field.deployments_failing.insert(world::lc(vm_name));
                Ok(())
            }
            FieldFault::DualPassAde { vm, aad_client_id } => {
                let key = Self::resolve_vm(w, vm)?;
                let state = w.vms.get_mut(&key).ok_or_else(|| unknown("VM", vm))?;
                if !state.make_dual_pass(aad_client_id) {
                    return Err(unknown("ADE extension of VM", vm));
                }
                Ok(())
            }
            FieldFault::DeleteKeyMaterial { key_vault, what } => {
                let kv = w
                    .key_vaults
                    .get_mut(&world::lc(key_vault))
                    .ok_or_else(|| unknown("key vault", key_vault))?;
                match what.as_str() {
                    "secrets" => kv.secrets.clear(),
                    "keys" => kv.keys.clear(),
                    other => return Err(unknown("key material (secrets or keys)", other)),
                }
                Ok(())
            }
            FieldFault::ChangeKeyVault {
                key_vault,
                enabled_for_disk_encryption,
                location,
            } => {
                let kv = w
                    .key_vaults
                    .get_mut(&world::lc(key_vault))
                    .ok_or_else(|| unknown("key vault", key_vault))?;
                if let Some(e) = enabled_for_disk_encryption {
                    kv.enabled_for_disk_encryption = *e;
                }
                if let Some(l) = location {
                    kv.location = l.clone();
                }
                Ok(())
            }
        })
    }
}

/// Key Vault data-plane set-up and counters (issue 14, items 3 and 4).
impl Simulator {
    /// An Azure AD application dual-pass ADE VMs use: its client secret is stored as the
    /// secret `secret_name` of `key_vault`, and an ADE extension put with `AADClientID`
    /// `client_id` must carry that secret in `protectedSettings.AADClientSecret`.
    pub fn register_aad_application(
        &self,
        client_id: &str,
        key_vault: &str,
        secret_name: &str,
        secret: &str,
    ) -> Result<(), SimError> {
        self.with_world(|w| {
            let kv = w
                .key_vaults
                .get_mut(&world::lc(key_vault))
                .ok_or_else(|| unknown("key vault", key_vault))?;
            kv.secrets.insert(secret_name.to_string());
            let key = (world::lc(key_vault), world::lc(secret_name));
            w.kv_data.secret_values.insert(key, secret.to_string());
            w.kv_data
                .aad_apps
                .insert(world::lc(client_id), secret.to_string());
            Ok(())
        })
    }

    /// The next Encryption Info blob a restore job writes gets these `OsDiskKeyAndSecretDetails`
    /// fields (tampering by whoever can write to the staging account).
    pub fn tamper_next_encryption_info(&self, fields: serde_json::Value) {
        self.with_world(|w| w.kv_data.tamper_next_encryption_info = Some(fields));
    }

    /// (keys restored, secrets restored, restore conflicts, secret reads) so far.
    pub fn key_vault_data_counts(&self) -> (u64, u64, u64, u64) {
        self.with_world(|w| {
            let d = &w.kv_data;
            (
                d.keys_restored,
                d.secrets_restored,
                d.restore_conflicts,
                d.secret_reads,
            )
        })
    }

    /// Whether `key_vault` holds a secret (`secrets`) or key (`keys`) named `name`.
    pub fn key_vault_has(&self, key_vault: &str, what: &str, name: &str) -> bool {
        self.with_world(|w| {
            w.key_vaults
                .get(&world::lc(key_vault))
                .is_some_and(|kv| match what {
                    "keys" => kv.keys.contains_key(&world::lc(name)),
                    _ => kv.secrets.iter().any(|s| s.eq_ignore_ascii_case(name)),
                })
        })
    }
}

fn unknown(kind: &'static str, name: &str) -> SimError {
    SimError::Unknown {
        kind,
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_faults_read_from_scenario_json() {
        let f: FieldFault =
            serde_json::from_str(r#"{"kind": "restoreLimit", "perDay": 0}"#).expect("limit");
        assert_eq!(f, FieldFault::RestoreLimit { per_day: Some(0) });
        let f: FieldFault = serde_json::from_str(
            r#"{"kind": "changeKeyVault", "keyVault": "kv", "enabledForDiskEncryption": false}"#,
        )
        .expect("change");
        assert!(matches!(
            f,
            FieldFault::ChangeKeyVault {
                enabled_for_disk_encryption: Some(false),
                location: None,
                ..
            }
        ));
    }
}
