//! The Key Vault *data plane* of the simulated vaults (keys/secrets backup and restore, get
//! secret; routes in `routes::keyvault_data`), and the `Encryption Info` blob a restore-disks
//! job of an encrypted VM leaves in the staging account (backup-azure-restore-key-secret.md:
//! JSON with `OsDiskKeyAndSecretDetails` { `SecretUrl`, `KeyVaultSecretBackupData`, `KeyUrl`,
//! `KeyBackupData` }, the backup data base64).
//!
//! Backup blobs are opaque to clients and round-trip: `POST .../backup` produces one, `POST
//! .../restore` accepts one of the same kind and subscription (else `400 BadParameter`, as Key
//! Vault answers a corrupt blob) and answers `409 Conflict` when the object exists.

use super::{lc, Encryption, World};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const MAGIC: &str = "SIMKVBACKUP1";

/// What the data plane holds besides the vaults' object names, and what it counted.
#[derive(Debug, Default, Clone)]
pub struct KvDataPlane {
    /// (vault, secret), lower case → the secret's value (only for secrets given one).
    pub secret_values: BTreeMap<(String, String), String>,
    /// Azure AD application client id (lower case) → its client secret.
    pub aad_apps: BTreeMap<String, String>,
    /// Staging-account blob URI (lower case) → the Encryption Info JSON.
    pub encryption_blobs: BTreeMap<String, Value>,
    pub keys_restored: u64,
    pub secrets_restored: u64,
    pub restore_conflicts: u64,
    pub secret_reads: u64,
    /// Fields the next Encryption Info blob gets in `OsDiskKeyAndSecretDetails` (a writer with
    /// access to the staging account tampering with it), then cleared.
    pub tamper_next_encryption_info: Option<Value>,
}

/// Key or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Key,
    Secret,
}

impl ObjectKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Secret => "secret",
        }
    }
}

/// A data-plane refusal: HTTP status, Key Vault error code, message.
pub type KvFailure = (u16, &'static str, String);

/// An opaque backup blob of `name` in a vault of `subscription`.
pub fn backup_blob(kind: ObjectKind, subscription: &str, name: &str) -> Vec<u8> {
    let inner = format!("{MAGIC}|{}|{}|{name}", kind.as_str(), lc(subscription));
    base64::engine::general_purpose::STANDARD
        .encode(inner)
        .into_bytes()
}

/// `(subscription, name)` of a blob of `kind`, if it is one.
fn read_blob(kind: ObjectKind, blob: &[u8]) -> Option<(String, String)> {
    let inner = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .ok()?;
    let inner = String::from_utf8(inner).ok()?;
    let mut parts = inner.splitn(4, '|');
    let ok = parts.next() == Some(MAGIC) && parts.next() == Some(kind.as_str());
    let (sub, name) = (parts.next()?, parts.next()?);
    ok.then(|| (sub.to_string(), name.to_string()))
}

impl World {
    /// `POST {vault}/{keys|secrets}/{name}/backup`.
    pub fn kv_backup(
        &self,
        vault: &str,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<u8>, KvFailure> {
        let kv = self.key_vaults.get(&lc(vault)).ok_or_else(vault_missing)?;
        let exists = match kind {
            ObjectKind::Key => kv.keys.contains_key(&lc(name)),
            ObjectKind::Secret => kv.secrets.iter().any(|s| s.eq_ignore_ascii_case(name)),
        };
        if !exists {
            return Err(not_found(kind, name));
        }
        Ok(backup_blob(kind, &kv.subscription, name))
    }

    /// `POST {vault}/{keys|secrets}/restore`: the object's id on success.
    pub fn kv_restore(
        &mut self,
        vault: &str,
        kind: ObjectKind,
        blob: &[u8],
    ) -> Result<String, KvFailure> {
        let corrupt = || {
            (
                400,
                "BadParameter",
                "Backup blob contains invalid or corrupt version.".to_string(),
            )
        };
        let (sub, name) = read_blob(kind, blob).ok_or_else(corrupt)?;
        let kv = self
            .key_vaults
            .get_mut(&lc(vault))
            .ok_or_else(vault_missing)?;
        if !kv.subscription.eq_ignore_ascii_case(&sub) {
            return Err((
                403,
                "Forbidden",
                "The backup blob belongs to another subscription than the vault.".into(),
            ));
        }
        let exists = match kind {
            ObjectKind::Key => kv.keys.contains_key(&lc(&name)),
            ObjectKind::Secret => kv.secrets.iter().any(|s| s.eq_ignore_ascii_case(&name)),
        };
        if exists {
            self.kv_data.restore_conflicts += 1;
            let what = kind.as_str();
            return Err((409, "Conflict", format!("There was a conflict restoring the {what} '{name}'. Probable Cause: a {what} with the same name already exists.")));
        }
        let id = match kind {
            ObjectKind::Key => {
                kv.keys.insert(lc(&name), (name.clone(), false));
                self.kv_data.keys_restored += 1;
                format!("{}keys/{name}", kv.vault_uri())
            }
            ObjectKind::Secret => {
                kv.secrets.insert(name.clone());
                self.kv_data.secrets_restored += 1;
                format!("{}secrets/{name}", kv.vault_uri())
            }
        };
        Ok(id)
    }

    /// `GET {vault}/secrets/{name}[/{version}]`: its value (any version of a known secret).
    pub fn kv_get_secret(
        &mut self,
        vault: &str,
        name: &str,
    ) -> Result<(String, String), KvFailure> {
        let kv = self.key_vaults.get(&lc(vault)).ok_or_else(vault_missing)?;
        if !kv.secrets.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return Err(not_found(ObjectKind::Secret, name));
        }
        let value = self
            .kv_data
            .secret_values
            .get(&(lc(vault), lc(name)))
            .cloned()
            .unwrap_or_else(|| format!("sim-secret-value-of-{name}"));
        let id = format!("{}secrets/{name}", kv.vault_uri());
        self.kv_data.secret_reads += 1;
        Ok((id, value))
    }

    /// The Encryption Info JSON of a recovery point encrypted with `enc` (the backups Azure
    /// Backup took of its BEK secret and KEK).
    pub fn encryption_info(&self, enc: &Encryption) -> Value {
        let b64 = |v: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(v);
        let sub_of = |vault_id: &str| vault_id.split('/').nth(2).unwrap_or_default().to_string();
        let secret_name = object_name(&enc.secret_url);
        let mut d = json!({
            "SecretUrl": enc.secret_url,
            "KeyVaultSecretBackupData": b64(backup_blob(ObjectKind::Secret, &sub_of(&enc.key_vault_id), &secret_name)),
        });
        if let (Some(url), Some(vault_id)) = (&enc.kek_url, &enc.kek_vault_id) {
            d["KeyUrl"] = json!(url);
            d["KeyBackupData"] = json!(b64(backup_blob(
                ObjectKind::Key,
                &sub_of(vault_id),
                &object_name(url)
            )));
        }
        json!({"OsDiskKeyAndSecretDetails": d})
    }

    /// [`World::encryption_info`] with the pending tampering applied (once).
    pub fn written_encryption_info(&mut self, enc: &Encryption) -> Value {
        let mut info = self.encryption_info(enc);
        if let Some(Value::Object(patch)) = self.kv_data.tamper_next_encryption_info.take() {
            for (k, v) in patch {
                info["OsDiskKeyAndSecretDetails"][k] = v;
            }
        }
        info
    }
}

impl World {
    /// A dual-pass (AAD) ADE extension put must carry its application's client secret in
    /// `protectedSettings.AADClientSecret` (when the simulator knows the application).
    pub fn check_aad_credentials(
        &self,
        ext: &super::compute::Extension,
        props: &Value,
    ) -> Result<(), crate::routes::Reply> {
        use axum::http::StatusCode;
        let Some(client) = ext.settings["AADClientID"]
            .as_str()
            .filter(|_| ext.is_ade())
        else {
            return Ok(());
        };
        let sent = props["protectedSettings"]["AADClientSecret"].as_str();
        let bad = |m: &str| {
            Err(crate::routes::Reply::error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                m,
            ))
        };
        match (sent, self.kv_data.aad_apps.get(&lc(client))) {
            (None, _) => bad("protectedSettings.AADClientSecret is required by AAD (dual-pass) Azure Disk Encryption."),
            (Some(s), Some(known)) if s != known => bad("AADSTS7000215: Invalid client secret provided."),
            _ => Ok(()),
        }
    }
}

/// `https://kv/secrets/{name}/{version}` → `{name}`.
fn object_name(url: &str) -> String {
    url.split('/').nth(4).unwrap_or_default().to_string()
}

fn vault_missing() -> KvFailure {
    (404, "VaultNotFound", "The vault was not found.".into())
}

fn not_found(kind: ObjectKind, name: &str) -> KvFailure {
    match kind {
        ObjectKind::Key => (
            404,
            "KeyNotFound",
            format!("A key with (name/id) {name} was not found in this key vault."),
        ),
        ObjectKind::Secret => (
            404,
            "SecretNotFound",
            format!("A secret with (name/id) {name} was not found in this key vault."),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::world::Durations;
    use chrono::Utc;

    #[test]
    fn backups_round_trip_and_a_second_restore_conflicts() {
        let mut w = World::from_fleet(&Fleet::sample(), Utc::now(), Durations::default());
        let kv = w.key_vaults.get("kv-ade-ap-weu").expect("kv").clone();
        let secret = kv.secrets.iter().next().expect("a secret").clone();
        let blob = w
            .kv_backup(&kv.name, ObjectKind::Secret, &secret)
            .expect("backup");
        assert_eq!(
            w.kv_restore(&kv.name, ObjectKind::Secret, &blob)
                .expect_err("exists")
                .0,
            409
        );
        w.key_vaults
            .get_mut("kv-ade-ap-weu")
            .expect("kv")
            .secrets
            .clear();
        let id = w
            .kv_restore(&kv.name, ObjectKind::Secret, &blob)
            .expect("restored");
        assert!(id.ends_with(&format!("secrets/{secret}")), "{id}");
        assert_eq!(
            w.kv_restore(&kv.name, ObjectKind::Key, &blob)
                .expect_err("kind")
                .0,
            400
        );
        assert_eq!(
            w.kv_restore(&kv.name, ObjectKind::Secret, b"garbage")
                .expect_err("corrupt")
                .1,
            "BadParameter"
        );
        assert_eq!(w.kv_data.secrets_restored, 1);
    }
}
