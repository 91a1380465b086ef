//! Entra ID tokens for ARM, Service Bus, Storage and Key Vault.
//!
//! Every outbound client takes an `Arc<dyn TokenSource>` so the same code runs with a managed
//! identity in Azure, the developer's Azure CLI login on a laptop, and a fixed token against the
//! local simulator and queue (which accept any bearer token).

use async_trait::async_trait;
use std::sync::Arc;

/// ARM's scope.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Service Bus data-plane scope.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";
/// Key Vault data-plane scope (public cloud; sovereign clouds use their own resource).
pub const KEY_VAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// Azure Storage data-plane scope.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The identity could not produce a token (no managed identity endpoint, CLI not logged in,
    /// tenant refused). The message never contains the token itself.
    #[error("could not acquire an Entra ID token for scope {scope}: {reason}")]
    Unavailable { scope: String, reason: String },
}

/// A bearer token, wrapped so it never prints.
#[derive(Clone)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }
    /// The raw token, for an `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self, scope: &str) -> Result<AccessToken, CredentialError>;
}

/// A fixed token: for the local simulator and queue, and for tests.
pub struct StaticToken(pub AccessToken);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self, _scope: &str) -> Result<AccessToken, CredentialError> {
        Ok(self.0.clone())
    }
}

/// Adapter over any `azure_core` credential (managed identity, Azure CLI, ...).
pub struct AzureIdentityToken(pub Arc<dyn azure_core::credentials::TokenCredential>);

#[async_trait]
impl TokenSource for AzureIdentityToken {
    async fn token(&self, scope: &str) -> Result<AccessToken, CredentialError> {
        self.0
            .get_token(&[scope], None)
            .await
            .map(|t| AccessToken::new(t.token.secret().to_string()))
            .map_err(|e| CredentialError::Unavailable {
                scope: scope.to_string(),
                reason: e.to_string(),
            })
    }
}
