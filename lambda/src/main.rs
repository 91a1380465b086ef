//! The Lambda bootstrap: telemetry, the router (or, with `ADE_BACKUP_LAMBDA_MODE=relay`, the
//! Event Grid relay) from the environment, then the runtime loop (`lambda_runtime` polls
//! `AWS_LAMBDA_RUNTIME_API`). A start-up failure exits non-zero with the
//! error on stderr, which Lambda reports as the init error.

use ade_backup_lambda::config::LambdaConfig;
use ade_backup_lambda::relay::settings::{Mode, RelaySettings};
use ade_backup_lambda::relay::{self, Relay};
use ade_backup_lambda::sqs_sender::SqsSender;
use ade_backup_lambda::wiring;
use ade_backup_shared::telemetry::{self, LogFormat, TelemetryOptions};
use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init(TelemetryOptions {
        format: LogFormat::choose(
            false,
            std::env::var("ADE_BACKUP_LOG_FORMAT").ok().as_deref(),
        ),
        ..Default::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        if Mode::from_lookup(|k| std::env::var(k).ok())? == Mode::Relay {
            return run_relay().await;
        }
        let config = LambdaConfig::from_env()?;
        let sdk = wiring::sdk_config().await;
        let router = std::sync::Arc::new(wiring::router(config, &sdk).await?);
        lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
            let router = router.clone();
            async move {
                router
                    .handle(event.payload, &event.context.request_id)
                    .await
                    .map_err(lambda_runtime::Error::from)
            }
        }))
        .await
        .map_err(|e| anyhow::anyhow!("the Lambda runtime loop failed: {e}"))
    });
    drop(runtime);
    telemetry.shutdown();
    result
}

/// The relay: its secret from Secrets Manager, the SQS sender, then function URL requests.
async fn run_relay() -> anyhow::Result<()> {
    let settings = RelaySettings::from_lookup(|k| std::env::var(k).ok())?;
    let sdk = wiring::sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let key = relay::settings::load_key(&secrets, &settings.secret_arn).await?;
    let sender = SqsSender::new(aws_sdk_sqs::Client::new(&sdk), settings.queues);
    let relay = std::sync::Arc::new(Relay {
        key,
        sender: std::sync::Arc::new(sender),
    });
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<LambdaFunctionUrlRequest>| {
            let relay = relay.clone();
            async move { Ok::<_, lambda_runtime::Error>(relay.handle(event.payload).await) }
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("the Lambda runtime loop failed: {e}"))
}
