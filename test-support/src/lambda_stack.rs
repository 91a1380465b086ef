//! The AWS side of the Lambda build's tests, all real parts: moto (SQS queues with DLQs, the S3
//! state bucket), a local Lambda Runtime API, the real `ade-backup-lambda` process polling it,
//! and the SQS event source that feeds it. Every registry queue (and `notifications`) gets a
//! queue and a DLQ; queues have a short visibility timeout so a retried record is back quickly.

use crate::lambda_process::LambdaProcess;
use crate::lambda_runtime_api::{InvocationResult, RuntimeApi};
use crate::moto::Moto;
use crate::sqs_event_source::{
    create_bucket, create_queue, s3_client, sqs_client, SqsEventSource, WatchedQueue,
};
use ade_backup_functions::handlers::Registry;
use ade_backup_functions::trigger::TriggerSpec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The state bucket.
pub const BUCKET: &str = "ade-backup-state";
/// Seconds a received, unacknowledged record stays invisible.
pub const VISIBILITY_SECONDS: u32 = 2;

pub struct LambdaStack {
    pub moto: Moto,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    /// Logical queue name → queue.
    pub queues: BTreeMap<String, WatchedQueue>,
    /// Logical queue name → its DLQ's URL.
    pub dead_letter_queues: BTreeMap<String, String>,
    pub api: RuntimeApi,
    pub process: LambdaProcess,
    pub source: SqsEventSource,
    /// The environment `process` was started with.
    pub env: Vec<(String, String)>,
}

/// Stores `{"sharedSecret": shared}` in moto's Secrets Manager; its ARN.
async fn create_relay_secret(moto: &Moto, shared: &str) -> String {
    let out = crate::sqs_event_source::secrets_client(moto)
        .create_secret()
        .name("ade-backup-relay")
        .secret_string(serde_json::json!({"sharedSecret": shared}).to_string())
        .send()
        .await
        .expect("create the relay secret");
    out.arn().expect("secret ARN").to_string()
}

fn queue_names() -> Vec<String> {
    let mut names: Vec<String> = Registry::production()
        .specs()
        .filter_map(|s| match s.trigger {
            TriggerSpec::ServiceBus { queue, .. } => Some(queue.to_string()),
            TriggerSpec::Timer { .. } => None,
        })
        .collect();
    names.push("notifications".into());
    names
}

impl LambdaStack {
    /// Starts moto, creates the queues and the bucket, and starts `bin` with the stack's
    /// settings plus `extra` (e.g. `ADE_BACKUP_ARM_ENDPOINT`; an empty value unsets).
    pub async fn start(bin: &Path, extra: &[(&str, String)]) -> Self {
        Self::start_with_secret(bin, extra, None).await
    }

    /// [`LambdaStack::start`], with `secret` (the Entra credential JSON) stored in moto's
    /// Secrets Manager first and its ARN in `ADE_BACKUP_AZURE_SECRET_ARN` instead of the static
    /// test token.
    pub async fn start_with_secret(
        bin: &Path,
        extra: &[(&str, String)],
        secret: Option<&str>,
    ) -> Self {
        Self::start_inner(bin, extra, secret, None).await
    }

    /// `bin` as the Event Grid relay (`ADE_BACKUP_LAMBDA_MODE=relay`), its shared secret
    /// `{"sharedSecret": shared_secret}` stored in moto's Secrets Manager.
    pub async fn start_relay(bin: &Path, shared_secret: &str) -> Self {
        Self::start_inner(bin, &[], None, Some(shared_secret)).await
    }

    async fn start_inner(
        bin: &Path,
        extra: &[(&str, String)],
        secret: Option<&str>,
        relay_secret: Option<&str>,
    ) -> Self {
        let moto = Moto::start();
        let sqs = sqs_client(&moto);
        let s3 = s3_client(&moto);
        create_bucket(&s3, BUCKET).await;
        let mut queues = BTreeMap::new();
        let mut dead_letter_queues = BTreeMap::new();
        for name in queue_names() {
            let url = create_queue(&sqs, &name, VISIBILITY_SECONDS).await;
            let dlq = create_queue(&sqs, &format!("{name}-dlq"), VISIBILITY_SECONDS).await;
            let arn = Moto::queue_arn(&name);
            queues.insert(name.clone(), WatchedQueue { url, arn });
            dead_letter_queues.insert(name, dlq);
        }
        let api = RuntimeApi::start().await;
        let urls: BTreeMap<&String, &String> = queues.iter().map(|(k, q)| (k, &q.url)).collect();
        let mut env: Vec<(&str, String)> = moto.env();
        env.extend(api.env());
        env.extend([
            ("ADE_BACKUP_S3_STATE", format!("s3://{BUCKET}/")),
            ("ADE_BACKUP_S3_FORCE_PATH_STYLE", "true".into()),
            ("ADE_BACKUP_SQS_QUEUES", serde_json::json!(urls).to_string()),
            (
                "ADE_BACKUP_SQS_DEAD_LETTER_QUEUES",
                serde_json::json!(dead_letter_queues).to_string(),
            ),
            ("ADE_BACKUP_CREDENTIAL", "static".into()),
            ("ADE_BACKUP_STATIC_TOKEN", "sim-token".into()),
            // Nothing listens on port 9: Azure calls fail fast unless a test sets a simulator.
            ("ADE_BACKUP_ARM_ENDPOINT", "http://127.0.0.1:9".into()),
            ("ADE_BACKUP_GRAPH_ENDPOINT", "http://127.0.0.1:9".into()),
            ("ADE_BACKUP_ARM_RETRY_BUDGET_MS", "200".into()),
        ]);
        if let Some(secret) = secret {
            let out = crate::sqs_event_source::secrets_client(&moto)
                .create_secret()
                .name("ade-backup-entra")
                .secret_string(secret)
                .send()
                .await
                .expect("create the secret");
            env.retain(|(k, _)| {
                !k.starts_with("ADE_BACKUP_CREDENTIAL") && *k != "ADE_BACKUP_STATIC_TOKEN"
            });
            env.push((
                "ADE_BACKUP_AZURE_SECRET_ARN",
                out.arn().expect("secret ARN").to_string(),
            ));
        }
        if let Some(shared) = relay_secret {
            env.push(("ADE_BACKUP_LAMBDA_MODE", "relay".into()));
            let arn = create_relay_secret(&moto, shared).await;
            env.push(("ADE_BACKUP_RELAY_SECRET_ARN", arn));
        }
        for (k, v) in extra {
            env.retain(|(e, _)| e != k);
            if !v.is_empty() {
                env.push((k, v.clone()));
            }
        }
        let process = LambdaProcess::spawn(bin, &env);
        let source = SqsEventSource::new(sqs.clone(), queues.values().cloned().collect());
        let env = env.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Self {
            moto,
            sqs,
            s3,
            queues,
            dead_letter_queues,
            api,
            process,
            source,
            env,
        }
    }

    /// The Event Grid relay beside this stack's router: `bin` in relay mode with its own Runtime
    /// API, on the same moto and queues, its secret `{"sharedSecret": shared_secret}`.
    pub async fn start_relay_beside(
        &self,
        bin: &Path,
        shared_secret: &str,
    ) -> (RuntimeApi, LambdaProcess) {
        let arn = create_relay_secret(&self.moto, shared_secret).await;
        let api = RuntimeApi::start().await;
        let mut env: Vec<(&str, String)> = self
            .env
            .iter()
            .filter(|(k, _)| !k.starts_with("AWS_LAMBDA_"))
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        env.extend(api.env());
        env.push(("ADE_BACKUP_LAMBDA_MODE", "relay".into()));
        env.push(("ADE_BACKUP_RELAY_SECRET_ARN", arn));
        let process = LambdaProcess::spawn(bin, &env);
        (api, process)
    }

    /// Invokes the function with `event`; panics with the process log if it is not running.
    pub async fn invoke(&mut self, event: Value) -> InvocationResult {
        assert!(
            self.process.running(),
            "the Lambda process is not running; its log:\n{}",
            self.process.log()
        );
        let invoke = self.api.invoke(event, Duration::from_secs(120));
        invoke.await
    }

    /// The queue `name`'s URL.
    pub fn url(&self, name: &str) -> &str {
        &self.queues[name].url
    }

    /// Sends `body` to queue `name` with string message attributes `attrs`; returns its SQS id.
    pub async fn send(&self, name: &str, body: &str, attrs: &[(&str, &str)]) -> String {
        let mut send = self
            .sqs
            .send_message()
            .queue_url(self.url(name))
            .message_body(body);
        for (k, v) in attrs {
            let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*v)
                .build()
                .expect("attribute");
            send = send.message_attributes(*k, value);
        }
        let out = send.send().await.expect("send");
        out.message_id().expect("message id").to_string()
    }

    /// A state document from the bucket, as JSON.
    pub async fn state_json(&self, key: &str) -> Option<Value> {
        let out = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .ok()?;
        let bytes = out.body.collect().await.ok()?.into_bytes();
        serde_json::from_slice(&bytes).ok()
    }
}

/// A Lambda function URL request event (payload format 2.0) with `headers` (names lower-case,
/// as function URLs deliver them) and a text `body`.
pub fn function_url_request(method: &str, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.to_string())))
        .collect();
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "relayurlid",
            "domainName": "relayurlid.lambda-url.eu-west-1.on.aws",
            "domainPrefix": "relayurlid",
            "http": {"method": method, "path": "/", "protocol": "HTTP/1.1",
                     "sourceIp": "20.0.0.1", "userAgent": "aeg-system"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "02/Dec/2026:06:00:00 +0000",
            "timeEpoch": 1_796_191_200_000_i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}
