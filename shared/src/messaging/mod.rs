//! Outbound messages: fan-out to workers, scheduled follow-ups, replies to ticketing systems.
//!
//! `MessageSender` is implemented by `ServiceBusSender` (Service Bus REST send API, Entra token),
//! which also talks to the embedded local queue's Service-Bus-compatible endpoint in
//! `ade-backup local`, so the wire format is the same everywhere.

pub mod dead_letters;
pub mod servicebus;
pub use dead_letters::{
    DeadLetterReceiver, DeadLetteredMessage, ServiceBusDeadLetters, DEAD_LETTER_DESCRIPTION,
    DEAD_LETTER_REASON,
};
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

/// The broker a sender talks to: every broker-side error names the one actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// Azure Service Bus (and the embedded local queue, which speaks its REST API).
    ServiceBus,
    /// Amazon SQS (the Lambda build).
    Sqs,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ServiceBus => "Service Bus",
            Self::Sqs => "SQS",
        })
    }
}

/// The error underneath a broker failure (the HTTP client's or the SDK's), kept as the source.
pub type BrokerSource = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("could not encode message: {0}")]
    Encode(String),
    #[error("invalid queue name {queue:?}: {rule}")]
    InvalidQueue { queue: String, rule: &'static str },
    #[error("{broker} authentication failed: {detail}")]
    Auth {
        broker: Broker,
        detail: String,
        #[source]
        source: Option<BrokerSource>,
    },
    #[error("{broker} rejected the message ({status}): {body}")]
    Rejected {
        broker: Broker,
        status: u16,
        body: String,
        #[source]
        source: Option<BrokerSource>,
    },
    /// The peek-lock is no longer held (expired, or settled by someone else): the message is
    /// back in its queue for the next receiver.
    #[error("{broker} lock lost: {detail}")]
    LockLost { broker: Broker, detail: String },
    #[error("{broker} unavailable (will be retried by the caller's delivery): {detail}")]
    Transient {
        broker: Broker,
        detail: String,
        #[source]
        source: Option<BrokerSource>,
    },
}

impl MessagingError {
    /// The broker whose failure this is (`None` for encoding and queue-name errors).
    pub fn broker(&self) -> Option<Broker> {
        match self {
            Self::Auth { broker, .. }
            | Self::Rejected { broker, .. }
            | Self::LockLost { broker, .. }
            | Self::Transient { broker, .. } => Some(*broker),
            Self::Encode(_) | Self::InvalidQueue { .. } => None,
        }
    }
}

#[async_trait]
pub trait MessageSender: Send + Sync {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError>;
}
