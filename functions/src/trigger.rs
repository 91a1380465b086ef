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

    /// The body parsed as JSON of type `T`; an error names the JSON path of the field that
    /// does not fit (`$` for the whole body).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, BodyError> {
        let mut de = serde_json::Deserializer::from_slice(&self.body);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| BodyError {
            path: json_path(e.path()),
            source: e.into_inner(),
        })?;
        de.end().map_err(|source| BodyError {
            path: "$".into(),
            source,
        })?;
        Ok(value)
    }
}

/// A message body that does not decode, with where.
#[derive(Debug, thiserror::Error)]
#[error("field `{path}`: {source}")]
pub struct BodyError {
    /// JSON path of the offending field: `$`, `$.phase`, `$.disks[2].lun`.
    pub path: String,
    #[source]
    pub source: serde_json::Error,
}

fn json_path(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out.push_str(&format!(".{key}")),
            Segment::Enum { variant } => out.push_str(&format!(".{variant}")),
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> ServiceBusMessage {
        ServiceBusMessage {
            queue: "q".into(),
            body: body.as_bytes().to_vec(),
            message_id: "m".into(),
            delivery_count: 1,
            correlation_id: None,
            content_type: None,
            subject: None,
            enqueued_time: None,
            expires_at: None,
            sequence_number: None,
            user_properties: Default::default(),
        }
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        disks: Vec<Disk>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Disk {
        lun: u32,
    }

    #[test]
    fn a_body_error_names_the_json_path() {
        let err = |b: &str| message(b).json::<Doc>().expect_err("does not fit");
        assert_eq!(
            err(r#"{"name": "a", "disks": [{"lun": 1}, {"lun": "x"}]}"#).path,
            "$.disks[1].lun"
        );
        assert_eq!(err(r#""text""#).path, "$");
        assert_eq!(err(r#"{"disks": []}"#).path, "$");
        assert!(err(r#"{"disks": []}"#).to_string().contains("`name`"));
        assert_eq!(err(r#"{"name": "a", "disks": []} x"#).path, "$");
        assert!(message(r#"{"name": "a", "disks": [{"lun": 2}]}"#)
            .json::<Doc>()
            .is_ok());
    }
}
