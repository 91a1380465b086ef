//! Service Bus sender over the REST "Send Message" API with an Entra ID token.
//!
//! Why not `azure_messaging_servicebus` 0.21 (the only Service Bus crate on crates.io): it signs
//! requests with SAS keys only and builds `https://{namespace}.servicebus.windows.net` itself, so
//! it can neither use a managed identity nor talk to the embedded local queue. This sender does
//! exactly what ade-backup needs: `POST {endpoint}/{queue}/messages` with
//! `Authorization: Bearer <token for https://servicebus.azure.net/.default>`, the
//! `BrokerProperties` header (JSON: `MessageId`, `CorrelationId`, `ScheduledEnqueueTimeUtc` in
//! RFC 1123 form), one header per application property (value JSON-quoted) and the body.
//! Service Bus answers 201 Created.
//!
//! It does not retry: the handler that sends fails, its own message is redelivered, and the
//! deterministic `MessageId` makes the repeat harmless (duplicate detection).

use super::{MessageSender, MessagingError, OutboundMessage};
use crate::credential::{TokenSource, SERVICE_BUS_SCOPE};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub struct ServiceBusSenderOptions {
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for ServiceBusSenderOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            user_agent: format!("ade-backup/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

pub struct ServiceBusSender {
    endpoint: Url,
    credential: Arc<dyn TokenSource>,
    http: reqwest::Client,
}

/// Service Bus entity names: letters, digits, `.`, `-`, `_`; start and end with a letter or
/// digit; at most 260 characters. (No `/`: a queue name is one path segment here.)
pub fn validate_queue_name(queue: &str) -> Result<(), MessagingError> {
    let bad = |rule| {
        Err(MessagingError::InvalidQueue {
            queue: queue.chars().take(100).collect(),
            rule,
        })
    };
    if queue.is_empty() || queue.len() > 260 {
        return bad("must be 1 to 260 characters");
    }
    if !queue
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return bad("only letters, digits, '.', '-' and '_' are allowed");
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(queue.chars().next()) || !edge_ok(queue.chars().last()) {
        return bad("must start and end with a letter or digit");
    }
    Ok(())
}

/// RFC 1123 time as Service Bus expects in `ScheduledEnqueueTimeUtc`.
pub fn rfc1123(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A W3C `traceparent` (version 00, sampled) for messages that carry none.
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

impl ServiceBusSender {
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenSource>,
        options: ServiceBusSenderOptions,
    ) -> Result<Self, MessagingError> {
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .user_agent(options.user_agent)
            .build()
            .map_err(|e| MessagingError::Transient(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            endpoint,
            credential,
            http,
        })
    }

    fn url(&self, queue: &str) -> Result<Url, MessagingError> {
        validate_queue_name(queue)?;
        let mut url = self.endpoint.clone();
        url.path_segments_mut()
            .map_err(|_| MessagingError::InvalidQueue {
                queue: queue.to_string(),
                rule: "the endpoint cannot take a path",
            })?
            .pop_if_empty()
            .push(queue)
            .push("messages");
        Ok(url)
    }
}

#[async_trait]
impl MessageSender for ServiceBusSender {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        let url = self.url(&message.queue)?;
        let token = self
            .credential
            .token(SERVICE_BUS_SCOPE)
            .await
            .map_err(|e| MessagingError::Auth(e.to_string()))?;
        let mut broker = serde_json::Map::new();
        broker.insert("MessageId".into(), message.message_id.clone().into());
        if let Some(c) = &message.correlation_id {
            broker.insert("CorrelationId".into(), c.clone().into());
        }
        if let Some(t) = message.scheduled_enqueue_time {
            broker.insert("ScheduledEnqueueTimeUtc".into(), rfc1123(t).into());
        }
        let mut req = self
            .http
            .post(url)
            .bearer_auth(token.secret())
            .header(
                "BrokerProperties",
                serde_json::Value::Object(broker).to_string(),
            )
            .header(reqwest::header::CONTENT_TYPE, &message.content_type);
        let mut props = message.properties.clone();
        props
            .entry("traceparent".to_string())
            .or_insert_with(new_traceparent);
        for (k, v) in &props {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                MessagingError::Encode(format!(
                    "application property name {k:?} is not a valid header name"
                ))
            })?;
            let value = serde_json::Value::String(v.clone()).to_string();
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                MessagingError::Encode(format!(
                    "application property {k:?} has a value that cannot be a header"
                ))
            })?;
            req = req.header(name, value);
        }
        let resp = req.body(message.body).send().await.map_err(|e| {
            // reqwest errors name the URL; ours carries no secret (the token is a header).
            MessagingError::Transient(format!("sending to {}: {e}", message.queue))
        })?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect();
        Err(match status {
            401 | 403 => MessagingError::Auth(format!("Service Bus answered {status}: {text}")),
            408 | 429 | 500..=599 => {
                MessagingError::Transient(format!("Service Bus answered {status}: {text}"))
            }
            _ => MessagingError::Rejected { status, body: text },
        })
    }
}
