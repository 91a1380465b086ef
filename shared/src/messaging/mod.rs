//! Outbound messages: fan-out to workers, scheduled follow-ups, replies to ticketing systems.
//!
//! `MessageSender` is implemented by `ServiceBusSender` (Service Bus REST send API, Entra token),
//! which also talks to the embedded local queue's Service-Bus-compatible endpoint in
//! `ade-backup local`, so the wire format is the same everywhere.

pub mod servicebus;
pub use servicebus::{ServiceBusConfigError, ServiceBusSender, ServiceBusSenderOptions};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One message to send. `message_id` must be deterministic for the logical action it stands for
/// (Service Bus duplicate detection is by `MessageId` only).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub queue: String,
    pub message_id: String,
    pub correlation_id: Option<String>,
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Application properties (Service Bus "custom properties"), e.g. `traceparent`.
    pub properties: BTreeMap<String, String>,
}

impl OutboundMessage {
    /// A JSON message with the given deterministic id.
    pub fn json<T: serde::Serialize>(
        queue: impl Into<String>,
        message_id: impl Into<String>,
        body: &T,
    ) -> Result<Self, MessagingError> {
        Ok(Self {
            queue: queue.into(),
            message_id: message_id.into(),
            correlation_id: None,
            scheduled_enqueue_time: None,
            content_type: "application/json".to_string(),
            body: serde_json::to_vec(body).map_err(|e| MessagingError::Encode(e.to_string()))?,
            properties: BTreeMap::new(),
        })
    }
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }
    pub fn scheduled_at(mut self, at: DateTime<Utc>) -> Self {
        self.scheduled_enqueue_time = Some(at);
        self
    }
    pub fn with_property(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.properties.insert(k.into(), v.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("could not encode message: {0}")]
    Encode(String),
    #[error("invalid queue name {queue:?}: {rule}")]
    InvalidQueue { queue: String, rule: &'static str },
    #[error("Service Bus authentication failed: {0}")]
    Auth(String),
    #[error("Service Bus rejected the message ({status}): {body}")]
    Rejected { status: u16, body: String },
    #[error("Service Bus unavailable (will be retried by the caller's delivery): {0}")]
    Transient(String),
}

#[async_trait]
pub trait MessageSender: Send + Sync {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError>;
}
