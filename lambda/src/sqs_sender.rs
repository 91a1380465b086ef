//! `SqsSender`: `MessageSender` over Amazon SQS `SendMessage`.
//!
//! How an [`OutboundMessage`] maps onto SQS (Amazon SQS Developer Guide and API reference,
//! `SendMessage`):
//! - the body must be text (SQS bodies are Unicode), so a body that is not UTF-8 is refused;
//! - ade-backup's own message fields travel as String message attributes
//!   ([`attr::MESSAGE_ID`] … [`attr::DUE_AT`]); `traceparent` as its own attribute (the current
//!   span's, or a new root); SQS allows 10 attributes per message, so at most 5 application
//!   properties fit besides ours;
//! - FIFO queues (`.fifo`): `MessageDeduplicationId` and `MessageGroupId` are the SHA-256 of the
//!   deterministic message id, so a resend within SQS's 5-minute deduplication window is dropped
//!   and unrelated messages do not queue behind each other. FIFO queues take no per-message
//!   delay (`DelaySeconds` is per queue there), so a scheduled message to a FIFO queue is refused;
//! - a scheduled message gets `DelaySeconds` = the remaining delay, at most 900 (SQS's maximum,
//!   15 minutes), and always carries its due time in [`attr::DUE_AT`]: a receiver that gets it
//!   before then sends it on again with the rest of the delay ([`crate::delay`]), so any delay is
//!   a chain of hops of at most 15 minutes.
//!
//! No retries here, as for Service Bus: the SDK's standard retry (throttling, 5xx) is the one
//! place, and the caller's at-least-once delivery resends.

use crate::delay;
use crate::queues::QueueMap;
use ade_backup_shared::messaging::{
    Broker, BrokerSource, MessageSender, MessagingError, OutboundMessage,
};
use ade_backup_shared::telemetry::current_traceparent;
use async_trait::async_trait;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_sdk_sqs::Client;
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Message attribute names of ade-backup's fields.
pub mod attr {
    /// The deterministic message id (SQS assigns its own `MessageId`).
    pub const MESSAGE_ID: &str = "ade-message-id";
    pub const CORRELATION_ID: &str = "ade-correlation-id";
    pub const CONTENT_TYPE: &str = "ade-content-type";
    /// RFC 3339 due time of a scheduled message.
    pub const DUE_AT: &str = "ade-due-at";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
}

/// SQS's limit of message attributes per message.
pub const MAX_ATTRIBUTES: usize = 10;

/// Sends to the queues of a [`QueueMap`].
#[derive(Debug, Clone)]
pub struct SqsSender {
    client: Client,
    queues: QueueMap,
}

fn encode_err(what: &str, rule: &str) -> MessagingError {
    MessagingError::Encode(format!("{what}: {rule}"))
}

fn string_attr(value: &str) -> Result<MessageAttributeValue, MessagingError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| MessagingError::Encode(e.to_string()))
}

/// SQS attribute names: up to 256 of `A-Za-z0-9_-.`, not starting with `AWS.`/`Amazon.`, no
/// leading/trailing or double period.
fn check_attribute_name(name: &str) -> Result<(), MessagingError> {
    let lower = name.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
        && !lower.starts_with("ade-");
    if ok {
        Ok(())
    } else {
        Err(encode_err(
            &format!("application property {name:?}"),
            "SQS attribute names are 1-256 of A-Z a-z 0-9 _ - . (no leading, trailing or double \
             period, not AWS./Amazon./ade- prefixed)",
        ))
    }
}

/// The message attributes of `message`, ours first.
pub fn attributes(
    message: &OutboundMessage,
) -> Result<BTreeMap<String, MessageAttributeValue>, MessagingError> {
    let mut out = BTreeMap::new();
    out.insert(
        attr::MESSAGE_ID.to_string(),
        string_attr(&message.message_id)?,
    );
    out.insert(
        attr::CONTENT_TYPE.to_string(),
        string_attr(&message.content_type)?,
    );
    if let Some(c) = &message.correlation_id {
        out.insert(attr::CORRELATION_ID.to_string(), string_attr(c)?);
    }
    if let Some(at) = message.scheduled_enqueue_time {
        out.insert(
            attr::DUE_AT.to_string(),
            string_attr(&at.to_rfc3339_opts(SecondsFormat::Millis, true))?,
        );
    }
    for (k, v) in &message.properties {
        if k.eq_ignore_ascii_case(attr::TRACEPARENT) {
            out.insert(attr::TRACEPARENT.to_string(), string_attr(v)?);
            continue;
        }
        check_attribute_name(k)?;
        out.insert(k.clone(), string_attr(v)?);
    }
    if !out.contains_key(attr::TRACEPARENT) {
        let tp = current_traceparent().unwrap_or_else(new_root_traceparent);
        out.insert(attr::TRACEPARENT.to_string(), string_attr(&tp)?);
    }
    if out.len() > MAX_ATTRIBUTES {
        return Err(encode_err(
            &format!("message {}", message.message_id),
            &format!(
                "{} message attributes; SQS allows {MAX_ATTRIBUTES}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

/// A fresh root `traceparent` (random, never all-zero ids, as W3C requires).
fn new_root_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().as_u128().max(1);
    let span = (uuid::Uuid::new_v4().as_u128() as u64).max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

/// The FIFO deduplication and group id of a message id: its SHA-256, hex (64 characters, inside
/// SQS's 128-character, restricted-alphabet limit whatever the id holds).
pub fn fifo_id(message_id: &str) -> String {
    hex::encode(Sha256::digest(message_id.as_bytes()))
}

fn send_error<E>(queue: &str, e: SdkError<E, HttpResponse>) -> MessagingError
where
    E: std::error::Error + Send + Sync + 'static,
{
    // Only an error the service answered with is classified by its status; anything else
    // (dispatch, timeout, unparseable response) is transient.
    let status = match &e {
        SdkError::ServiceError(_) => e.raw_response().map(|r| r.status().as_u16()),
        _ => None,
    };
    let detail = format!("SendMessage to {queue}: {}", DisplayErrorContext(&e));
    let source = Some(Box::new(e) as BrokerSource);
    let broker = Broker::Sqs;
    match status {
        Some(401 | 403) => MessagingError::Auth {
            broker,
            detail,
            source,
        },
        Some(status) if status < 500 && status != 429 => MessagingError::Rejected {
            broker,
            status,
            body: detail,
            source,
        },
        _ => MessagingError::Transient {
            broker,
            detail,
            source,
        },
    }
}

impl SqsSender {
    pub fn new(client: Client, queues: QueueMap) -> Self {
        Self { client, queues }
    }

    /// Sends `message` as of `now` (the delay is computed from it).
    pub async fn send_at(
        &self,
        message: OutboundMessage,
        now: DateTime<Utc>,
    ) -> Result<(), MessagingError> {
        let queue =
            self.queues
                .get(&message.queue)
                .ok_or_else(|| MessagingError::InvalidQueue {
                    queue: message.queue.clone(),
                    rule: "not in ADE_BACKUP_SQS_QUEUES",
                })?;
        let delay = message
            .scheduled_enqueue_time
            .map_or(0, |due| delay::hop_seconds(due, now));
        if queue.is_fifo() && delay > 0 {
            return Err(MessagingError::InvalidQueue {
                queue: message.queue.clone(),
                rule: "a FIFO queue takes no per-message delay; scheduled messages need a standard queue",
            });
        }
        let body = String::from_utf8(message.body.clone()).map_err(|_| {
            encode_err(
                &format!("message {}", message.message_id),
                "SQS bodies must be UTF-8 text",
            )
        })?;
        let mut send = self
            .client
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .set_message_attributes(Some(attributes(&message)?.into_iter().collect()));
        if queue.is_fifo() {
            let id = fifo_id(&message.message_id);
            send = send.message_deduplication_id(&id).message_group_id(id);
        } else if delay > 0 {
            send = send.delay_seconds(delay);
        }
        send.send()
            .await
            .map(|_| ())
            .map_err(|e| send_error(&message.queue, e))
    }
}

#[async_trait]
impl MessageSender for SqsSender {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        self.send_at(message, Utc::now()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> OutboundMessage {
        OutboundMessage::json("backup-vm", "m-1", &serde_json::json!({"a": 1})).expect("json")
    }

    #[test]
    fn attributes_carry_ids_due_time_and_a_traceparent() {
        let due = DateTime::parse_from_rfc3339("2030-01-01T00:20:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let m = msg().with_correlation_id("c-1").scheduled_at(due);
        let a = attributes(&m).expect("attributes");
        let s = |k: &str| a.get(k).and_then(|v| v.string_value()).map(str::to_string);
        assert_eq!(s(attr::MESSAGE_ID).as_deref(), Some("m-1"));
        assert_eq!(s(attr::CORRELATION_ID).as_deref(), Some("c-1"));
        assert_eq!(s(attr::DUE_AT).as_deref(), Some("2030-01-01T00:20:00.000Z"));
        let tp = s(attr::TRACEPARENT).expect("traceparent");
        assert_eq!(tp.len(), 55, "{tp}");
        let kept = msg().with_property(
            "TraceParent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let a = attributes(&kept).expect("attributes");
        assert_eq!(
            a.get(attr::TRACEPARENT).and_then(|v| v.string_value()),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }

    #[test]
    fn bad_or_too_many_properties_are_refused() {
        for bad in ["AWS.x", "a b", ".a", "a..b", "ade-message-id", ""] {
            assert!(
                attributes(&msg().with_property(bad, "v")).is_err(),
                "{bad:?}"
            );
        }
        let mut m = msg();
        for i in 0..8 {
            m = m.with_property(format!("p{i}"), "v");
        }
        let e = attributes(&m).expect_err("11 attributes").to_string();
        assert!(e.contains("SQS allows 10"), "{e}");
    }

    #[test]
    fn fifo_ids_are_deterministic_and_fit() {
        assert_eq!(fifo_id("m-1"), fifo_id("m-1"));
        assert_ne!(fifo_id("m-1"), fifo_id("m-2"));
        assert_eq!(fifo_id(&"x".repeat(500)).len(), 64);
    }
}
