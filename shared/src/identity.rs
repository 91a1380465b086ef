//! Which Entra ID identity the process uses, chosen from the environment.
//!
//! - `managed-identity` (default): the Function App's system-assigned identity, or a
//!   user-assigned one when `AZURE_CLIENT_ID` names it — what runs in Azure, keyless.
//! - `azure-cli`: the developer's `az login`, for running against real Azure from a laptop.
//! - `static`: a fixed bearer token from `ADE_BACKUP_STATIC_TOKEN`, for the local simulator and
//!   queue (which accept any token) and tests.
//!
//! Constructors are those of `azure_identity` 1.0.0 (`ManagedIdentityCredential::new(Option<
//! ManagedIdentityCredentialOptions>)` with `UserAssignedId::ClientId`, `AzureCliCredential::new(
//! Option<AzureCliCredentialOptions>)`). The CLI credential runs `az` through its default
//! executor (a std process on a helper thread), so the crate's `tokio` feature is not needed.
//! It does not cache tokens: each `token()` call runs `az` once.

use crate::credential::{
    AccessToken, AzureIdentityToken, CredentialError, StaticToken, TokenSource,
};
use azure_identity::{
    AzureCliCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use std::sync::Arc;

pub const CREDENTIAL_VAR: &str = "ADE_BACKUP_CREDENTIAL";
pub const CLIENT_ID_VAR: &str = "AZURE_CLIENT_ID";
pub const STATIC_TOKEN_VAR: &str = "ADE_BACKUP_STATIC_TOKEN";
/// Accepted values of `ADE_BACKUP_CREDENTIAL`, in the order the error message lists them.
pub const CREDENTIAL_VALUES: &[&str] = &["managed-identity", "azure-cli", "static"];

#[derive(Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// `client_id` selects a user-assigned identity; `None` is the system-assigned one.
    ManagedIdentity {
        client_id: Option<String>,
    },
    AzureCli,
    /// A fixed bearer token.
    Static(String),
}

impl std::fmt::Debug for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
            Self::AzureCli => f.write_str("AzureCli"),
            Self::Static(_) => f.write_str("Static(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityConfigError {
    #[error("{var}={value:?} is not a credential kind; allowed values: {allowed}", var = CREDENTIAL_VAR, allowed = CREDENTIAL_VALUES.join(", "))]
    UnknownKind { value: String },
    #[error("{var} must be the client id (a GUID) of a user-assigned managed identity, got {value:?}", var = CLIENT_ID_VAR)]
    InvalidClientId { value: String },
    #[error("{kind_var}=static requires {token_var} to be set to a non-empty bearer token", kind_var = CREDENTIAL_VAR, token_var = STATIC_TOKEN_VAR)]
    MissingStaticToken,
}

impl CredentialKind {
    /// Reads `ADE_BACKUP_CREDENTIAL`, `AZURE_CLIENT_ID` and `ADE_BACKUP_STATIC_TOKEN`.
    pub fn from_env() -> Result<Self, IdentityConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As `from_env`, with the variables supplied by `lookup` (tests, or a settings file).
    /// Empty or whitespace-only values count as unset, because app settings often exist with
    /// an empty value.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, IdentityConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let kind = get(CREDENTIAL_VAR).unwrap_or_else(|| "managed-identity".to_string());
        let client_id = get(CLIENT_ID_VAR);
        match kind.to_ascii_lowercase().as_str() {
            "managed-identity" => {
                if let Some(id) = &client_id {
                    uuid::Uuid::parse_str(id)
                        .map_err(|_| IdentityConfigError::InvalidClientId { value: id.clone() })?;
                }
                Ok(Self::ManagedIdentity { client_id })
            }
            // `AZURE_CLIENT_ID` is ignored here: developer shells often carry it for other
            // tools (EnvironmentCredential), and refusing would make `azure-cli` unusable there.
            "azure-cli" => Ok(Self::AzureCli),
            "static" => get(STATIC_TOKEN_VAR)
                .map(Self::Static)
                .ok_or(IdentityConfigError::MissingStaticToken),
            _ => Err(IdentityConfigError::UnknownKind { value: kind }),
        }
    }
}

/// The `azure_core` credential for `kind` (the Blob SDK takes one); `None` for a static token.
/// Construction does not contact Entra ID; the first token request does, and reports failures.
pub fn azure_credential(
    kind: &CredentialKind,
) -> Result<Option<Arc<dyn azure_core::credentials::TokenCredential>>, CredentialError> {
    let unavailable = |what: &str, e: azure_core::Error| CredentialError::Unavailable {
        // No scope is requested yet; name the step instead so the message stays readable.
        scope: "(none: building the credential)".to_string(),
        reason: format!("{what}: {e}"),
    };
    Ok(match kind {
        CredentialKind::ManagedIdentity { client_id } => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                ..Default::default()
            };
            Some(
                ManagedIdentityCredential::new(Some(options))
                    .map_err(|e| unavailable("ManagedIdentityCredential", e))?,
            )
        }
        CredentialKind::AzureCli => {
            Some(AzureCliCredential::new(None).map_err(|e| unavailable("AzureCliCredential", e))?)
        }
        CredentialKind::Static(_) => None,
    })
}

/// Builds the token source for `kind` (see [`azure_credential`]).
pub fn token_source(kind: &CredentialKind) -> Result<Arc<dyn TokenSource>, CredentialError> {
    Ok(match (kind, azure_credential(kind)?) {
        (_, Some(credential)) => Arc::new(AzureIdentityToken(credential)),
        (CredentialKind::Static(token), None) => {
            Arc::new(StaticToken(AccessToken::new(token.clone())))
        }
        (_, None) => Arc::new(StaticToken(AccessToken::new(String::new()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<CredentialKind, IdentityConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CredentialKind::from_lookup(|name| map.get(name).cloned())
    }

    const GUID: &str = "5b6f0c7e-3d1a-4c2b-9e8f-0a1b2c3d4e5f";

    #[test]
    fn default_is_system_assigned_managed_identity() {
        assert_eq!(
            parse(&[]),
            Ok(CredentialKind::ManagedIdentity { client_id: None })
        );
        assert_eq!(
            parse(&[(CREDENTIAL_VAR, "  ")]),
            Ok(CredentialKind::ManagedIdentity { client_id: None })
        );
    }

    #[test]
    fn user_assigned_managed_identity_from_client_id() {
        assert_eq!(
            parse(&[(CLIENT_ID_VAR, GUID)]),
            Ok(CredentialKind::ManagedIdentity {
                client_id: Some(GUID.to_string())
            })
        );
        assert_eq!(
            parse(&[(CREDENTIAL_VAR, "Managed-Identity"), (CLIENT_ID_VAR, GUID)]),
            Ok(CredentialKind::ManagedIdentity {
                client_id: Some(GUID.to_string())
            })
        );
        assert_eq!(
            parse(&[(CLIENT_ID_VAR, "")]),
            Ok(CredentialKind::ManagedIdentity { client_id: None })
        );
    }

    #[test]
    fn invalid_client_id_names_the_variable() {
        let err = parse(&[(CLIENT_ID_VAR, "my-identity")]).expect_err("not a guid");
        assert_eq!(
            err,
            IdentityConfigError::InvalidClientId {
                value: "my-identity".into()
            }
        );
        assert!(err.to_string().contains("AZURE_CLIENT_ID"), "{err}");
        assert!(err.to_string().contains("GUID"), "{err}");
    }

    #[test]
    fn azure_cli_and_static() {
        assert_eq!(
            parse(&[(CREDENTIAL_VAR, "azure-cli")]),
            Ok(CredentialKind::AzureCli)
        );
        assert_eq!(
            parse(&[
                (CREDENTIAL_VAR, "static"),
                (STATIC_TOKEN_VAR, "local-token")
            ]),
            Ok(CredentialKind::Static("local-token".into()))
        );
    }

    #[test]
    fn static_without_token_is_an_error_naming_both_variables() {
        for vars in [
            &[(CREDENTIAL_VAR, "static")][..],
            &[(CREDENTIAL_VAR, "static"), (STATIC_TOKEN_VAR, " ")][..],
        ] {
            let err = parse(vars).expect_err("no token");
            assert_eq!(err, IdentityConfigError::MissingStaticToken);
            let msg = err.to_string();
            assert!(msg.contains("ADE_BACKUP_CREDENTIAL=static"), "{msg}");
            assert!(msg.contains("ADE_BACKUP_STATIC_TOKEN"), "{msg}");
        }
    }

    #[test]
    fn unknown_kind_lists_allowed_values() {
        let err = parse(&[(CREDENTIAL_VAR, "client-secret")]).expect_err("unknown");
        let msg = err.to_string();
        assert!(msg.contains("ADE_BACKUP_CREDENTIAL"), "{msg}");
        assert!(msg.contains("\"client-secret\""), "{msg}");
        assert!(msg.contains("managed-identity, azure-cli, static"), "{msg}");
    }

    #[test]
    fn client_id_is_ignored_by_other_kinds() {
        assert_eq!(
            parse(&[(CREDENTIAL_VAR, "azure-cli"), (CLIENT_ID_VAR, "not-a-guid")]),
            Ok(CredentialKind::AzureCli)
        );
    }

    #[test]
    fn debug_never_shows_the_static_token() {
        let kind = CredentialKind::Static("very-secret".into());
        assert_eq!(format!("{kind:?}"), "Static(<redacted>)");
    }

    #[tokio::test]
    async fn static_kind_yields_the_token() {
        let source = token_source(&CredentialKind::Static("t0k".into())).expect("source");
        let token = source
            .token(crate::credential::SERVICE_BUS_SCOPE)
            .await
            .expect("token");
        assert_eq!(token.secret(), "t0k");
    }

    #[test]
    fn azure_identity_credentials_build_without_network() {
        assert!(token_source(&CredentialKind::ManagedIdentity { client_id: None }).is_ok());
        assert!(token_source(&CredentialKind::ManagedIdentity {
            client_id: Some(GUID.into())
        })
        .is_ok());
        assert!(token_source(&CredentialKind::AzureCli).is_ok());
    }
}
