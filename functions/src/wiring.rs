//! Builds a handler [`Context`] from [`Settings`]: the one place that picks real backends.
//!
//! | setting | backend |
//! |---|---|
//! | `ADE_BACKUP_STATE=fs:DIR` | [`FsStateStore`] (embedded default) |
//! | `ADE_BACKUP_STATE=https://…/container` | [`BlobStateStore`] with the process credential |
//! | `ADE_BACKUP_SERVICEBUS_ENDPOINT` | [`ServiceBusSender`] (REST, Entra token) |
//! | `ADE_BACKUP_ARM_ENDPOINT`, `ADE_BACKUP_GRAPH_ENDPOINT` | [`ArmClient`] |
//! | `ADE_BACKUP_CREDENTIAL` | `managed-identity` (default; `AZURE_CLIENT_ID` picks a user-assigned identity), `azure-cli`, or `static` (local stack and tests only: `ADE_BACKUP_STATIC_TOKEN`, default `local`) |

use crate::context::{Context, SystemClock};
use crate::settings::{Settings, StateLocation};
use ade_backup_shared::arm::{ArmClient, ArmClientOptions};
use ade_backup_shared::credential::{AccessToken, AzureIdentityToken, StaticToken, TokenSource};
use ade_backup_shared::messaging::{ServiceBusSender, ServiceBusSenderOptions};
use ade_backup_shared::state::{BlobStateStore, BlobStateStoreOptions, FsStateStore, StateStore};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("setting ADE_BACKUP_CREDENTIAL is invalid: must be managed-identity, azure-cli or static, got {0:?}")]
    CredentialKind(String),
    #[error("could not create the {kind} credential: {reason}")]
    Credential { kind: &'static str, reason: String },
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

pub fn identity_from_env(get: impl Fn(&str) -> Option<String>) -> Result<Identity, WiringError> {
    let kind = get("ADE_BACKUP_CREDENTIAL").unwrap_or_else(|| "managed-identity".to_string());
    match kind.trim() {
        "managed-identity" => {
            let options = get("AZURE_CLIENT_ID")
                .filter(|s| !s.trim().is_empty())
                .map(|id| azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(id)),
                    ..Default::default()
                });
            let cred = azure_identity::ManagedIdentityCredential::new(options).map_err(|e| {
                WiringError::Credential {
                    kind: "managed-identity",
                    reason: e.to_string(),
                }
            })?;
            let azure: Arc<dyn azure_core::credentials::TokenCredential> = cred;
            Ok(Identity {
                tokens: Arc::new(AzureIdentityToken(azure.clone())),
                azure: Some(azure),
            })
        }
        "azure-cli" => {
            let cred = azure_identity::AzureCliCredential::new(None).map_err(|e| {
                WiringError::Credential {
                    kind: "azure-cli",
                    reason: e.to_string(),
                }
            })?;
            let azure: Arc<dyn azure_core::credentials::TokenCredential> = cred;
            Ok(Identity {
                tokens: Arc::new(AzureIdentityToken(azure.clone())),
                azure: Some(azure),
            })
        }
        "static" => Ok(Identity {
            tokens: Arc::new(StaticToken(AccessToken::new(
                get("ADE_BACKUP_STATIC_TOKEN").unwrap_or_else(|| "local".to_string()),
            ))),
            azure: None,
        }),
        other => Err(WiringError::CredentialKind(other.to_string())),
    }
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
    let options = ArmClientOptions {
        graph_endpoint: settings.graph_endpoint.clone(),
        ..Default::default()
    };
    ArmClient::new(
        settings.arm_endpoint.clone(),
        identity.tokens.clone(),
        options,
    )
    .map_err(|e| WiringError::Client(e.to_string()))
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
    let arm = arm_client(&settings, identity)?;
    Ok(Context {
        state,
        sender: Arc::new(sender),
        settings: Arc::new(settings),
        clock: Arc::new(SystemClock),
        arm: Arc::new(arm),
        bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
    })
}
