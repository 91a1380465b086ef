//! What a handler receives, whatever carried it: a Service Bus message or a timer tick
//! ([`TriggerInput`]), how a function is triggered ([`TriggerSpec`]), and the one thing a failed
//! delivery can ask of its transport ([`DeadLetter`]). The Functions wire format that produces
//! these lives in `host::protocol`; the handlers, the engine and the workflows only see this
//! module, so no layer below the host depends on the host.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a function is triggered, as declared in its `function.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerSpec {
    /// `serviceBusTrigger` on `queue`; the message arrives in `Data[binding]`.
    ServiceBus {
        queue: &'static str,
        binding: &'static str,
    },
    /// `timerTrigger` with a 6-field NCRONTAB `schedule`; `TimerInfo` arrives in `Data[binding]`.
    Timer {
        schedule: &'static str,
        binding: &'static str,
    },
}

impl TriggerSpec {
    pub fn binding(&self) -> &'static str {
        match self {
            TriggerSpec::ServiceBus { binding, .. } | TriggerSpec::Timer { binding, .. } => binding,
        }
    }
}

/// A parsed invocation: what a handler receives.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerInput {
    ServiceBus(ServiceBusMessage),
    Timer(TimerInfo),
}

impl TriggerInput {
    /// The Service Bus `MessageId`, if this is a message.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            TriggerInput::ServiceBus(m) => Some(&m.message_id),
            TriggerInput::Timer(_) => None,
        }
    }
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            TriggerInput::ServiceBus(m) => m.correlation_id.as_deref(),
            TriggerInput::Timer(_) => None,
        }
    }
}

/// One Service Bus message as delivered by the trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceBusMessage {
    /// The queue this function is bound to (from the registry, not from the payload).
    pub queue: String,
    /// The message body, decoded from the host's encoding (see `host::protocol::decode_body`).
    pub body: Vec<u8>,
    pub message_id: String,
    /// 1 on first delivery; Service Bus increments it on every abandon or lock expiry.
    pub delivery_count: u32,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub subject: Option<String>,
    pub enqueued_time: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub sequence_number: Option<i64>,
    /// Application properties (`ApplicationProperties`, or `UserProperties` on older extensions).
    pub user_properties: Map<String, Value>,
}

impl ServiceBusMessage {
    /// An application property's string value; names are matched case-insensitively (HTTP
    /// transports lowercase them: `Diagnostic-Id` can arrive as `diagnostic-id`).
    pub fn property(&self, name: &str) -> Option<String> {
        self.user_properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string)
    }

    /// The body parsed as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The timer trigger's `TimerInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerInfo {
    pub is_past_due: bool,
    pub adjust_for_dst: Option<bool>,
    pub last: Option<DateTime<Utc>>,
    pub next: Option<DateTime<Utc>>,
    pub last_updated: Option<DateTime<Utc>>,
}

/// A request to dead-letter the message immediately, carried as
/// `ReturnValue: {"deadLetter": {"reason": ..., "description": ...}}` on a 500 response.
///
/// Contract: the embedded local host (`ade-backup local`) honours it and dead-letters with this
/// reason at once. The Azure Functions host ignores `ReturnValue` on a failed invocation and
/// abandons the message, so Service Bus redelivers it and dead-letters it after
/// `maxDeliveryCount` with reason `MaxDeliveryCountExceeded`; the original reason is not lost
/// because the dispatcher records it first at `deadletters/{queue}/{messageId}.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub reason: String,
    pub description: String,
}
