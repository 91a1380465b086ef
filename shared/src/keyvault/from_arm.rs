//! A Key Vault client that shares the ARM client's identity, connection pool, retry policy and
//! request timeout (one configuration of how ade-backup talks to Azure).

use super::{KeyVaultClient, KeyVaultClientOptions, KeyVaultError};
use crate::arm::ArmClient;

impl ArmClient {
    /// A data-plane client for the vault at `vault_url` (`https://{vault}.vault.azure.net/`).
    pub fn key_vault(&self, vault_url: &str) -> Result<KeyVaultClient, KeyVaultError> {
        let o = &self.inner.options;
        let options = KeyVaultClientOptions {
            retry: o.retry.clone(),
            request_timeout: o.request_timeout,
            endpoint: o.key_vault_endpoint.clone(),
            user_agent: o.user_agent.clone(),
            ..KeyVaultClientOptions::default()
        };
        KeyVaultClient::with_http(
            vault_url,
            self.inner.credential.clone(),
            options,
            self.inner.http.clone(),
        )
    }
}
