//! The Key Vault data-plane opt-ins of a restore (issue 14, items 3 and 4), both off unless set:
//!
//! | variable | rule |
//! |---|---|
//! | `ADE_BACKUP_RESTORE_KEY_MATERIAL` | `true`/`false` (default `false`): when a recovery point's BEK secret or KEK is gone from its vault, put it back from the restore job's `Encryption Info Blob Name` backup (needs `keys/restore/action` and `secrets/restore/action` on that vault) instead of rejecting with `key-material-missing` |
//! | `ADE_BACKUP_AAD_CLIENT_SECRET_URL` | `https://{vault}.vault.azure.net/secrets/{name}[/{version}]`: the Key Vault secret holding the client secret of the Azure AD application dual-pass ADE VMs were encrypted with; unset: dual-pass restores stop at `reinstall-needs-aad-credentials` |
//!
//! Both come from configuration only, never from a message.

use super::SettingsError;
use ade_backup_shared::ids::{KeyVaultObjectKind, KeyVaultUrl};

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyVaultSettings {
    pub restore_key_material: bool,
    pub aad_client_secret: Option<KeyVaultUrl>,
}

pub(super) fn parse(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<KeyVaultSettings, SettingsError> {
    const RESTORE: &str = "ADE_BACKUP_RESTORE_KEY_MATERIAL";
    const AAD: &str = "ADE_BACKUP_AAD_CLIENT_SECRET_URL";
    let restore_key_material = match get(RESTORE).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(SettingsError::Invalid {
                var: RESTORE,
                rule: format!("must be true or false, got {other:?}"),
            })
        }
    };
    let aad_client_secret = match get(AAD) {
        None => None,
        Some(v) => {
            let url = KeyVaultUrl::parse(&v).map_err(|e| SettingsError::Invalid {
                var: AAD,
                rule: format!("must be a Key Vault secret URL https://{{vault}}.vault.azure.net/secrets/{{name}}[/{{version}}]: {}", e.rule),
            })?;
            if url.kind() != KeyVaultObjectKind::Secret {
                return Err(SettingsError::Invalid {
                    var: AAD,
                    rule: "must name a secret (/secrets/...), not a key".into(),
                });
            }
            Some(url)
        }
    };
    Ok(KeyVaultSettings {
        restore_key_material,
        aad_client_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<KeyVaultSettings, SettingsError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(&|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn both_opt_ins_are_off_by_default() {
        assert_eq!(from(&[]).expect("defaults"), KeyVaultSettings::default());
    }

    #[test]
    fn the_aad_secret_must_be_a_key_vault_secret_url() {
        let s = from(&[
            ("ADE_BACKUP_RESTORE_KEY_MATERIAL", "true"),
            (
                "ADE_BACKUP_AAD_CLIENT_SECRET_URL",
                "https://kv-ops.vault.azure.net/secrets/ade-aad-app",
            ),
        ])
        .expect("valid");
        assert!(s.restore_key_material);
        assert_eq!(
            s.aad_client_secret.expect("url").object_name(),
            "ade-aad-app"
        );
        for (var, bad) in [
            ("ADE_BACKUP_RESTORE_KEY_MATERIAL", "yes"),
            (
                "ADE_BACKUP_AAD_CLIENT_SECRET_URL",
                "https://kv-ops.vault.azure.net/keys/k1",
            ),
            (
                "ADE_BACKUP_AAD_CLIENT_SECRET_URL",
                "http://kv-ops.vault.azure.net/secrets/s",
            ),
            (
                "ADE_BACKUP_AAD_CLIENT_SECRET_URL",
                "https://evil.example/secrets/s",
            ),
        ] {
            let e = from(&[(var, bad)]).expect_err(bad);
            assert!(
                matches!(e, SettingsError::Invalid { var: v, .. } if v == var),
                "{bad}: {e}"
            );
        }
    }
}
