//! Builds a handler [`Context`] from [`Settings`]: the one place that picks real backends.
//!
//! | setting | backend |
//! |---|---|
//! | `ADE_BACKUP_STATE=fs:DIR` | [`FsStateStore`] (embedded default) |
//! | `ADE_BACKUP_STATE=https://…/container` | [`BlobStateStore`] with the process credential |
//! | `ADE_BACKUP_SERVICEBUS_ENDPOINT` | [`ServiceBusSender`] and [`ServiceBusDeadLetters`] (REST, Entra token) |
//! | `ADE_BACKUP_ARM_ENDPOINT`, `ADE_BACKUP_GRAPH_ENDPOINT` | [`ArmClient`] (and, when ARM is the loopback simulator, its Key Vault data plane at `{arm}/_keyvault/`) |
//! | `ADE_BACKUP_CREDENTIAL` | `managed-identity` (default; `AZURE_CLIENT_ID` picks a user-assigned identity), `azure-cli`, or `static` (local stack and tests only: `ADE_BACKUP_STATIC_TOKEN`) |

use crate::context::{Context, SystemClock};
use crate::settings::{Settings, StateLocation};
use ade_backup_shared::arm::{ArmClient, ArmClientOptions};
use ade_backup_shared::credential::TokenSource;
use ade_backup_shared::identity::{self, CredentialKind};
use ade_backup_shared::messaging::{
    ServiceBusDeadLetters, ServiceBusSender, ServiceBusSenderOptions,
};
use ade_backup_shared::state::{BlobStateStore, BlobStateStoreOptions, FsStateStore, StateStore};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("{0}")]
    CredentialKind(String),
    #[error("could not create the credential: {0}")]
    Credential(String),
    #[error("could not open the state store: {0}")]
    State(String),
    #[error("could not create a client: {0}")]
    Client(String),
}

/// The process identity, as an `azure_core` credential (for the Blob SDK) and a token source.
pub struct Identity {
    pub tokens: Arc<dyn TokenSource>,
    pub azure: Option<Arc<dyn azure_core::credentials::TokenCredential>>,
}

/// The process identity from `ADE_BACKUP_CREDENTIAL` (see [`CredentialKind::from_lookup`]).
pub fn identity_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Identity, WiringError> {
    let kind =
        CredentialKind::from_lookup(get).map_err(|e| WiringError::CredentialKind(e.to_string()))?;
    let azure =
        identity::azure_credential(&kind).map_err(|e| WiringError::Credential(e.to_string()))?;
    let tokens =
        identity::token_source(&kind).map_err(|e| WiringError::Credential(e.to_string()))?;
    Ok(Identity { tokens, azure })
}

pub fn state_store(
    location: &StateLocation,
    identity: &Identity,
) -> Result<Arc<dyn StateStore>, WiringError> {
    Ok(match location {
        StateLocation::Fs(dir) => {
            Arc::new(FsStateStore::new(dir.clone()).map_err(|e| WiringError::State(e.to_string()))?)
        }
        StateLocation::Blob { container_url } => Arc::new(
            BlobStateStore::new(
                container_url.clone(),
                identity.azure.clone(),
                BlobStateStoreOptions::default(),
            )
            .map_err(|e| WiringError::State(e.to_string()))?,
        ),
    })
}

pub fn arm_client(settings: &Settings, identity: &Identity) -> Result<ArmClient, WiringError> {
    let defaults = ArmClientOptions::default();
    let options = ArmClientOptions {
        graph_endpoint: settings.graph_endpoint.clone(),
        blob_endpoint: settings.blob_endpoint.clone(),
        key_vault_endpoint: key_vault_endpoint(settings),
        request_timeout: settings.workflow.arm_request_timeout,
        retry: ade_backup_shared::arm::RetryPolicy {
            max_elapsed: settings.workflow.arm_retry_budget,
            ..defaults.retry.clone()
        },
        ..defaults
    };
    ArmClient::new(
        settings.arm_endpoint.clone(),
        identity.tokens.clone(),
        options,
    )
    .map_err(|e| WiringError::Client(e.to_string()))
}

/// Key Vault data-plane requests go to the simulator only when ARM itself does (a loopback
/// `ADE_BACKUP_ARM_ENDPOINT`, i.e. `ade-backup local` or tests): `{arm}/_keyvault/{vault}/...`.
/// In Azure they go to the vault's own `https://{vault}.vault.azure.net/`.
fn key_vault_endpoint(settings: &Settings) -> Option<url::Url> {
    if !crate::settings::is_loopback(&settings.arm_endpoint) {
        return None;
    }
    let mut base = settings.arm_endpoint.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join("_keyvault/").ok()
}

/// The production context for `serve`.
pub fn context(settings: Settings, identity: &Identity) -> Result<Context, WiringError> {
    let state = state_store(&settings.state, identity)?;
    let sender = ServiceBusSender::new(
        settings.servicebus_endpoint.clone(),
        identity.tokens.clone(),
        ServiceBusSenderOptions::default(),
    )
    .map_err(|e| WiringError::Client(e.to_string()))?;
    let dead_letters = ServiceBusDeadLetters::new(
        settings.servicebus_endpoint.clone(),
        identity.tokens.clone(),
        ServiceBusSenderOptions::default(),
    )
    .map_err(|e| WiringError::Client(e.to_string()))?;
    let arm = arm_client(&settings, identity)?;
    Ok(Context {
        state,
        sender: Arc::new(sender),
        settings: Arc::new(settings),
        clock: Arc::new(SystemClock),
        arm: Arc::new(arm),
        bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
        reads: Default::default(),
        dead_letters: Some(Arc::new(dead_letters)),
    })
}
