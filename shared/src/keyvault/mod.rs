//! Key Vault *data plane* client (`https://{vault}.vault.azure.net/...`, api-version 7.5), shaped
//! like the Azure SDK's `Client::new(vault_url, credential, options)`, for the three operations
//! ade-backup needs at restore time (issue 14, items 3 and 4):
//! - `POST {vault}/keys/restore` and `POST {vault}/secrets/restore` (`{"value": base64url}`): put a
//!   deleted KEK / BEK secret back from the backup blob Azure Backup kept with the recovery point.
//!   A `409 Conflict` (the key or secret exists again) is [`Restored::AlreadyExists`]: a restore
//!   is therefore safe to repeat, and the client's retry policy may repeat it.
//! - `GET {vault}/secrets/{name}/{version}`: read one configured secret (the AAD application's
//!   client secret of dual-pass ADE), returned as a [`SecretValue`] that never prints.
//!
//! Shapes: `Azure/azure-rest-api-specs` `specification/keyvault/data-plane/Microsoft.KeyVault/
//! stable/7.5/{keys,secrets}.json` (`RestoreKey`, `RestoreSecret`, `GetSecret`, `KeyVaultError`).
//!
//! Layout: `url` (which vault URLs are accepted, and where a request goes), `client` (the send
//! path: token for `https://vault.azure.net/.default` → HTTP → classify, inside the ARM client's
//! one retry policy, `crate::arm::retry`), `error` ([`KeyVaultError`]).

mod client;
mod error;
mod from_arm;
mod url;

pub use client::{
    KeyVaultClient, KeyVaultClientOptions, Restored, SecretValue, KEY_VAULT_API_VERSION,
};
pub use error::KeyVaultError;
pub use url::{VaultUrl, KEY_VAULT_DNS_SUFFIXES};
