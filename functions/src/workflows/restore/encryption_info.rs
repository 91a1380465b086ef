//! The `Encryption Info Blob Name` blob a restore-disks job of an ADE VM leaves in the staging
//! account, parsed as untrusted input: whoever can write to the staging account can change it.
//! Shape (backup-azure-restore-key-secret.md, "Restore key and secret"): JSON with
//! `OsDiskKeyAndSecretDetails` { `SecretUrl`, `KeyVaultSecretBackupData` (base64 of the BEK
//! secret's Key Vault backup), `SecretData` (the wrapped BEK value, for `Set-AzKeyVaultSecret`),
//! `KeyUrl`, `KeyBackupData` (base64 of the KEK's Key Vault backup) }.
//!
//! Rules: each backup at most [`MAX_BACKUP_BYTES`] decoded; the secret and key URLs must name
//! exactly the recovery point's BEK secret and KEK (same vault, same name): a blob that names
//! another vault or object is refused, and nothing is restored. Errors name the field and the
//! rule, never a value (the backups are key material).

use ade_backup_shared::ids::KeyVaultUrl;
use base64::Engine;
use serde::Deserialize;

/// Largest decoded backup accepted (a Key Vault key or secret backup is a few KiB to tens of KiB).
pub const MAX_BACKUP_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Encryption Info blob: {field} {rule}")]
pub struct EncryptionInfoError {
    pub field: &'static str,
    pub rule: String,
}

fn err(field: &'static str, rule: impl Into<String>) -> EncryptionInfoError {
    EncryptionInfoError {
        field,
        rule: rule.into(),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Raw {
    os_disk_key_and_secret_details: Option<RawDetails>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawDetails {
    secret_url: Option<String>,
    key_vault_secret_backup_data: Option<String>,
    secret_data: Option<String>,
    key_url: Option<String>,
    key_backup_data: Option<String>,
}

/// What the blob offers for the recovery point's key material (backups decoded, URLs checked).
pub struct Backups {
    /// The BEK secret's Key Vault backup (`None`: the blob has only `SecretData`, or nothing).
    pub secret: Option<Vec<u8>>,
    /// The blob carries the wrapped BEK value only (BEK + KEK VMs): restoring it means a new
    /// secret version, which ade-backup does not do.
    pub secret_data_only: bool,
    /// The KEK's Key Vault backup.
    pub key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Backups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backups")
            .field("secret_bytes", &self.secret.as_ref().map(Vec::len))
            .field("key_bytes", &self.key.as_ref().map(Vec::len))
            .finish()
    }
}

/// Parses `json` and checks it against the recovery point's BEK secret and (optional) KEK.
pub fn parse(
    json: &serde_json::Value,
    bek: &KeyVaultUrl,
    kek: Option<&KeyVaultUrl>,
) -> Result<Backups, EncryptionInfoError> {
    let raw: Raw = serde_json::from_value(json.clone()).map_err(|e| {
        err(
            "(document)",
            format!(
                "is not the expected JSON object (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let d = raw
        .os_disk_key_and_secret_details
        .ok_or_else(|| err("OsDiskKeyAndSecretDetails", "is missing"))?;
    same_object(
        "OsDiskKeyAndSecretDetails.SecretUrl",
        d.secret_url.as_deref(),
        bek,
    )?;
    let secret = decode(
        "OsDiskKeyAndSecretDetails.KeyVaultSecretBackupData",
        d.key_vault_secret_backup_data.as_deref(),
    )?;
    let key = match kek {
        Some(kek) => {
            same_object(
                "OsDiskKeyAndSecretDetails.KeyUrl",
                d.key_url.as_deref(),
                kek,
            )?;
            decode(
                "OsDiskKeyAndSecretDetails.KeyBackupData",
                d.key_backup_data.as_deref(),
            )?
        }
        None => None,
    };
    Ok(Backups {
        secret_data_only: secret.is_none()
            && d.secret_data.as_deref().is_some_and(|s| !s.is_empty()),
        secret,
        key,
    })
}

/// `url` must be present and name the same vault and object as `want` (a version, when both
/// have one, must match too).
fn same_object(
    field: &'static str,
    url: Option<&str>,
    want: &KeyVaultUrl,
) -> Result<(), EncryptionInfoError> {
    let url = url.ok_or_else(|| err(field, "is missing"))?;
    let got = KeyVaultUrl::parse(url)
        .map_err(|e| err(field, format!("is not a Key Vault object URL: {}", e.rule)))?;
    let same = got.kind() == want.kind()
        && got.vault_name().eq_ignore_ascii_case(want.vault_name())
        && got.object_name().eq_ignore_ascii_case(want.object_name())
        && match (got.version(), want.version()) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => true,
        };
    if !same {
        return Err(err(
            field,
            format!(
                "names {}/{} in vault {}, not the recovery point's {}/{} in vault {}",
                kind(&got),
                got.object_name(),
                got.vault_name(),
                kind(want),
                want.object_name(),
                want.vault_name()
            ),
        ));
    }
    Ok(())
}

fn kind(u: &KeyVaultUrl) -> &'static str {
    match u.kind() {
        ade_backup_shared::ids::KeyVaultObjectKind::Secret => "secret",
        ade_backup_shared::ids::KeyVaultObjectKind::Key => "key",
    }
}

/// Base64 (standard or URL-safe, padded or not), at most [`MAX_BACKUP_BYTES`] decoded.
fn decode(field: &'static str, v: Option<&str>) -> Result<Option<Vec<u8>>, EncryptionInfoError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.len() > MAX_BACKUP_BYTES.div_ceil(3) * 4 + 4 {
        return Err(err(
            field,
            format!("is larger than {MAX_BACKUP_BYTES} bytes decoded"),
        ));
    }
    let e = base64::engine::general_purpose::STANDARD;
    let u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes = e
        .decode(v)
        .or_else(|_| u.decode(v.trim_end_matches('=')))
        .map_err(|_| err(field, "is not base64"))?;
    if bytes.is_empty() || bytes.len() > MAX_BACKUP_BYTES {
        return Err(err(
            field,
            format!("must be 1 to {MAX_BACKUP_BYTES} bytes decoded"),
        ));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bek() -> KeyVaultUrl {
        KeyVaultUrl::parse("https://kv-app.vault.azure.net/secrets/bek-1/0123abcd").expect("bek")
    }
    fn kek() -> KeyVaultUrl {
        KeyVaultUrl::parse("https://kv-app.vault.azure.net/keys/kek-1/99aa").expect("kek")
    }

    #[test]
    fn reads_both_backups_of_a_bek_and_kek_vm() {
        let doc = json!({"OsDiskKeyAndSecretDetails": {
            "SecretUrl": "https://kv-app.vault.azure.net/secrets/bek-1/0123abcd",
            "KeyVaultSecretBackupData": "AAEC",
            "KeyUrl": "https://KV-App.vault.azure.net/keys/kek-1/99aa",
            "KeyBackupData": "-_8"
        }});
        let b = parse(&doc, &bek(), Some(&kek())).expect("valid");
        assert_eq!(b.secret.as_deref(), Some(&[0u8, 1, 2][..]));
        assert_eq!(b.key.as_deref(), Some(&[0xfbu8, 0xff][..]));
        assert!(!format!("{b:?}").contains("AAEC"));
    }

    #[test]
    fn refuses_another_vault_or_object_tampering_and_oversize_naming_the_field() {
        let base = json!({"OsDiskKeyAndSecretDetails": {
            "SecretUrl": "https://kv-app.vault.azure.net/secrets/bek-1/0123abcd",
            "KeyVaultSecretBackupData": "AAEC"
        }});
        let with = |k: &str, v: serde_json::Value| {
            let mut d = base.clone();
            d["OsDiskKeyAndSecretDetails"][k] = v;
            d
        };
        let cases = [
            (
                with(
                    "SecretUrl",
                    json!("https://kv-evil.vault.azure.net/secrets/bek-1/0123abcd"),
                ),
                "SecretUrl",
                "kv-evil",
            ),
            (
                with(
                    "SecretUrl",
                    json!("https://kv-app.vault.azure.net/secrets/other/0123abcd"),
                ),
                "SecretUrl",
                "other",
            ),
            (
                with("SecretUrl", json!("https://evil.example/secrets/bek-1")),
                "SecretUrl",
                "Key Vault",
            ),
            (
                with("KeyVaultSecretBackupData", json!("not base64 !!")),
                "KeyVaultSecretBackupData",
                "base64",
            ),
            (
                with(
                    "KeyVaultSecretBackupData",
                    json!("A".repeat(MAX_BACKUP_BYTES * 2)),
                ),
                "KeyVaultSecretBackupData",
                "larger",
            ),
            (
                with("KeyVaultSecretBackupData", json!(7)),
                "(document)",
                "JSON",
            ),
            (json!({"Other": 1}), "OsDiskKeyAndSecretDetails", "missing"),
        ];
        for (doc, field, rule) in cases {
            let e = parse(&doc, &bek(), None).expect_err(field);
            assert!(e.field.ends_with(field), "{field}: {e}");
            assert!(e.to_string().contains(rule), "{field}: {e}");
            assert!(!e.to_string().contains("AAEC"));
        }
        let e = parse(&base, &bek(), Some(&kek())).expect_err("KEK URL missing");
        assert!(e.field.ends_with("KeyUrl"), "{e}");
    }

    #[test]
    fn a_wrapped_bek_without_its_backup_is_reported() {
        let doc = json!({"OsDiskKeyAndSecretDetails": {
            "SecretUrl": "https://kv-app.vault.azure.net/secrets/bek-1/0123abcd",
            "SecretData": "d3JhcHBlZA=="
        }});
        let b = parse(&doc, &bek(), None).expect("valid");
        assert!(b.secret.is_none() && b.secret_data_only);
    }
}
