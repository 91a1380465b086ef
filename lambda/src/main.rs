//! The Lambda bootstrap: telemetry, the router from the environment, then the runtime loop
//! (`lambda_runtime` polls `AWS_LAMBDA_RUNTIME_API`). A start-up failure exits non-zero with the
//! error on stderr, which Lambda reports as the init error.

use ade_backup_lambda::config::LambdaConfig;
use ade_backup_lambda::wiring;
use ade_backup_shared::telemetry::{self, LogFormat, TelemetryOptions};
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
