//! Builds the [`Router`] from [`LambdaConfig`]: the one place that picks the AWS backends (S3
//! state, SQS sender, the Entra credential from Secrets Manager) and puts them into the same
//! handler [`Context`] the Azure Functions host builds.

use crate::config::{ConfigError, CredentialSource, LambdaConfig};
use crate::router::Router;
use crate::s3_state::S3StateStore;
use crate::secrets::{self, SecretError};
use crate::sqs_sender::SqsSender;
use ade_backup_functions::context::{Context, SystemClock};
use ade_backup_functions::handlers::Registry;
use ade_backup_functions::trigger::TriggerSpec;
use ade_backup_functions::wiring::{self as azure_wiring, Identity, WiringError};
use ade_backup_shared::state::StateError;
use aws_config::{BehaviorVersion, SdkConfig};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Wiring(#[from] WiringError),
    #[error("invalid S3 state location: {0}")]
    State(#[from] StateError),
    #[error(
        "ADE_BACKUP_SQS_QUEUES has no URL for queue {queue:?}, which function {function} reads"
    )]
    UnmappedQueue {
        queue: &'static str,
        function: &'static str,
    },
}

/// The AWS SDK configuration from the environment (Lambda's role credentials, region, and
/// `AWS_ENDPOINT_URL` for emulators).
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

async fn identity(config: &LambdaConfig, sdk: &SdkConfig) -> Result<Identity, StartError> {
    match &config.credential {
        CredentialSource::SecretsManager { arn } => {
            let client = aws_sdk_secretsmanager::Client::new(sdk);
            let secret = secrets::load(&client, arn).await?;
            Ok(secret.credential(
                &secrets::authority_host_from_env(),
                azure_core::http::ClientOptions::default(),
            )?)
        }
        CredentialSource::Environment => {
            Ok(azure_wiring::identity_from_env(|k| std::env::var(k).ok())?)
        }
    }
}

/// Every queue a registry function reads must be mapped (else its messages could never arrive).
fn check_queues(config: &LambdaConfig, registry: &Registry) -> Result<(), StartError> {
    for spec in registry.specs() {
        if let TriggerSpec::ServiceBus { queue, .. } = spec.trigger {
            if config.queues.get(queue).is_none() {
                return Err(StartError::UnmappedQueue {
                    queue,
                    function: spec.name,
                });
            }
        }
    }
    Ok(())
}

/// The production router.
pub async fn router(config: LambdaConfig, sdk: &SdkConfig) -> Result<Router, StartError> {
    let registry = Registry::production();
    check_queues(&config, &registry)?;
    let identity = identity(&config, sdk).await?;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(config.force_path_style)
            .build(),
    );
    let state = S3StateStore::new(s3, config.bucket.clone(), config.prefix.clone())?;
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let sender = SqsSender::new(sqs.clone(), config.queues.clone());
    let dead_letters = SqsSender::new(sqs, config.dead_letter_queues.clone());
    let arm = azure_wiring::arm_client(&config.settings, &identity)?;
    let ctx = Context {
        state: Arc::new(state),
        sender: Arc::new(sender),
        settings: Arc::new(config.settings),
        clock: Arc::new(SystemClock),
        arm: Arc::new(arm),
        bms_object_id: Arc::new(tokio::sync::OnceCell::new()),
        dead_letters: None,
        reads: Default::default(),
    };
    Ok(Router {
        registry,
        queues: config.queues,
        ctx,
        dead_letters: Arc::new(dead_letters),
    })
}
