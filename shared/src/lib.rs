//! ade-backup's shared library: the domain types every handler sees, the clients for Azure
//! (ARM, Blob state, Service Bus), retry/pacing policies and telemetry.
//!
//! Room plan: `ids` (parsed identifiers), `state` (optimistic-concurrency document store),
//! `messaging` (Service Bus sender + embedded local queue), `arm` (Azure Resource Manager client),
//! `keyvault` (Key Vault data plane: restore keys/secrets, read one secret), `credential` (Entra ID tokens), `http` (bounded response bodies), `telemetry` (JSON tracing
//! with redaction).

pub mod arm;
pub mod credential;
pub mod http;
pub mod identity;
pub mod ids;
pub mod keyvault;
pub mod messaging;
pub mod state;
pub mod telemetry;
