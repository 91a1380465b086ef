//! What Lambda's SQS event source mapping does, against moto: receive a batch from each watched
//! queue, invoke the function with it as an SQS event (through a
//! [`RuntimeApi`](crate::lambda_runtime_api::RuntimeApi)), then delete every record the answer's
//! `batchItemFailures` does not name. Named records stay, to come back after the queue's
//! visibility timeout. Also: AWS SDK clients configured for a [`Moto`].
//!
//! The event shape is Lambda's (AWS Lambda Developer Guide, "Using Lambda with Amazon SQS",
//! example SQS message event): `Records[]` with `messageId`, `receiptHandle`, `body`,
//! `attributes` (`ApproximateReceiveCount`, `SentTimestamp`, …), `messageAttributes`
//! (`stringValue`, `dataType`, …), `md5OfBody`, `eventSource: "aws:sqs"`, `eventSourceARN`,
//! `awsRegion`.

use crate::lambda_runtime_api::{InvocationResult, RuntimeApi};
use crate::moto::{Moto, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Map, Value};
use std::time::Duration;

fn credentials() -> aws_sdk_sqs::config::Credentials {
    aws_sdk_sqs::config::Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "moto")
}

/// An SQS client for `moto`.
pub fn sqs_client(moto: &Moto) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(credentials())
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// An S3 client for `moto` (path-style: the bucket is not a host name on loopback).
pub fn s3_client(moto: &Moto) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(credentials())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A Secrets Manager client for `moto`.
pub fn secrets_client(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new(REGION))
        .endpoint_url(moto.endpoint())
        .credentials_provider(credentials())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// Creates a standard queue with `visibility` seconds of visibility timeout; returns its URL.
pub async fn create_queue(client: &aws_sdk_sqs::Client, name: &str, visibility: u32) -> String {
    let out = client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.to_string(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"));
    out.queue_url().expect("queue URL").to_string()
}

/// Creates a bucket.
pub async fn create_bucket(client: &aws_sdk_s3::Client, name: &str) {
    client
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
}

/// Receives up to 10 messages (all attributes) from `url`, waiting up to `wait` seconds.
pub async fn receive(client: &aws_sdk_sqs::Client, url: &str, wait: i32) -> Vec<Message> {
    client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(wait)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"))
        .messages
        .unwrap_or_default()
}

/// The Lambda SQS event record of a received message.
pub fn record(m: &Message, arn: &str) -> Value {
    let attributes: Map<String, Value> = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let message_attributes: Map<String, Value> = m
        .message_attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        json!({
                            "stringValue": v.string_value(),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": v.data_type(),
                        }),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id(),
        "receiptHandle": m.receipt_handle(),
        "body": m.body(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": REGION,
    })
}

/// One watched queue.
#[derive(Debug, Clone)]
pub struct WatchedQueue {
    pub url: String,
    pub arn: String,
}

/// What one [`SqsEventSource::poll_once`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Round {
    /// Records handed to the function.
    pub delivered: usize,
    /// `messageId`s the function asked to retry.
    pub retried: Vec<String>,
    /// The raw answers (one per invocation).
    pub answers: Vec<InvocationResult>,
}

/// The event source mapping of several queues onto one function.
pub struct SqsEventSource {
    pub client: aws_sdk_sqs::Client,
    pub queues: Vec<WatchedQueue>,
}

impl SqsEventSource {
    pub fn new(client: aws_sdk_sqs::Client, queues: Vec<WatchedQueue>) -> Self {
        Self { client, queues }
    }

    /// One receive per queue; each non-empty batch is one invocation.
    pub async fn poll_once(&self, api: &RuntimeApi) -> Round {
        let mut round = Round::default();
        for q in &self.queues {
            let messages = receive(&self.client, &q.url, 0).await;
            if messages.is_empty() {
                continue;
            }
            let event =
                json!({"Records": messages.iter().map(|m| record(m, &q.arn)).collect::<Vec<_>>()});
            round.delivered += messages.len();
            let answer = api.invoke(event, Duration::from_secs(120)).await;
            let retry: Vec<String> = match &answer {
                InvocationResult::Response(v) => v["batchItemFailures"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                // A failed invocation retries the whole batch.
                InvocationResult::Error(_) => messages
                    .iter()
                    .filter_map(|m| m.message_id().map(str::to_string))
                    .collect(),
            };
            for m in &messages {
                let id = m.message_id().unwrap_or_default();
                if retry.iter().any(|r| r == id) {
                    continue;
                }
                if let Some(handle) = m.receipt_handle() {
                    self.client
                        .delete_message()
                        .queue_url(&q.url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("delete from {}: {e:?}", q.url));
                }
            }
            round.retried.extend(retry);
            round.answers.push(answer);
        }
        round
    }

    /// Polls until `done()` holds, pausing `pause` between empty rounds; panics after `timeout`.
    pub async fn run_until<F, Fut>(&self, api: &RuntimeApi, timeout: Duration, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the SQS event source did not reach the expected state within {timeout:?}"
            );
            if self.poll_once(api).await.delivered == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
