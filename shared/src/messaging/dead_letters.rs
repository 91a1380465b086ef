//! Reading a queue's dead-letter sub-queue (`{queue}/$DeadLetterQueue`): peek-lock the next
//! message, then complete (delete) or unlock it. The product's `RedriveDeadLetters` timer uses it
//! to give messages that Service Bus dead-lettered after `maxDeliveryCount` failed deliveries a
//! capped number of further attempts.
//!
//! [`ServiceBusDeadLetters`] is the REST client for it; the embedded local queue serves the same
//! wire format in `functions/src/local/sb_endpoint.rs`.
//!
//! Wire format (Service Bus REST runtime API, learn.microsoft.com/rest/api/servicebus/
//! peek-lock-message-non-destructive-read, .../unlock-message, .../delete-message, and
//! .../message-headers-and-properties):
//! - receive: `POST {endpoint}/{queue}/$DeadLetterQueue/messages/head?timeout=0`, empty body,
//!   `Authorization: Bearer <Entra token for https://servicebus.azure.net/.default>`.
//!   `201 Created` is a message: the body is the payload; `BrokerProperties` is a JSON object
//!   (`MessageId`, `SequenceNumber`, `LockToken`, `DeliveryCount`, `LockedUntilUtc`, optional
//!   `CorrelationId`, `EnqueuedTimeUtc` in RFC 1123, `Label`...); `Content-Type` is the message's;
//!   every application property is a header of its own whose value is JSON (strings quoted,
//!   numbers and booleans bare; bare text is taken as is). `204 No Content`: nothing to receive
//!   (`timeout=0`: the broker does not hold the request open waiting for a message).
//! - complete: `DELETE {endpoint}/{queue}/$DeadLetterQueue/messages/{sequenceNumber}/{lockToken}`,
//!   `200 OK`; unlock: `PUT` on the same URL, `200 OK`. `404`/`410` there mean the lock is gone
//!   (expired, or the message was settled): [`MessagingError::LockLost`].
//! - `401`/`403` → `Auth`; `429`/`5xx`, timeouts and connection failures → `Transient`; any other
//!   status (`410` on receive: the queue is gone) → `Rejected`. A `201` without a usable
//!   `BrokerProperties` (no `LockToken`, `SequenceNumber` or `MessageId`) is a protocol error,
//!   reported as `Rejected` with status 201 and the missing field named.
//!
//! The settle URL is built here from the queue name, the sequence number and the lock token
//! (which must be a UUID), never taken from the response's `Location` header: that header is
//! input, and following it would let whoever wrote it choose where the bearer token goes.
//! `$DeadLetterQueue` is a literal path segment and `$` is left unencoded, as Service Bus expects
//! (`$` is allowed in a URL path, and `url`'s path-segment encoding keeps it).
//!
//! No retries here, as in [`super::ServiceBusSender`]: the caller's next timer run retries, and a
//! message whose lock was taken but never settled returns to the dead-letter queue when the lock
//! expires.

use super::servicebus::{
    classify_failure, error_detail, read_error_body, validate_queue_name, Connection,
    ServiceBusConfigError, ServiceBusSenderOptions, BROKER_PROPERTIES_HEADER,
};
use super::{Broker, MessagingError};
use crate::credential::TokenSource;
use crate::http::read_bounded;
use crate::telemetry::redact;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument;
use url::Url;

/// The application property Service Bus sets on a dead-lettered message: why it was moved.
pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
/// The application property Service Bus sets on a dead-lettered message: the description.
pub const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";

/// A message peek-locked from a queue's dead-letter sub-queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetteredMessage {
    /// The queue whose dead-letter sub-queue held it (not the `$DeadLetterQueue` path).
    pub queue: String,
    pub message_id: String,
    pub sequence_number: i64,
    pub lock_token: String,
    pub delivery_count: u32,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub enqueued_time: Option<DateTime<Utc>>,
    pub body: Vec<u8>,
    /// Application properties as received (names lower-case over HTTP), string values unquoted;
    /// includes [`DEAD_LETTER_REASON`] and [`DEAD_LETTER_DESCRIPTION`].
    pub properties: BTreeMap<String, String>,
}

impl DeadLetteredMessage {
    /// An application property by name, case-insensitively.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Why the broker (or a receiver) dead-lettered it.
    pub fn reason(&self) -> Option<&str> {
        self.property(DEAD_LETTER_REASON)
    }

    pub fn description(&self) -> Option<&str> {
        self.property(DEAD_LETTER_DESCRIPTION)
    }
}

/// Peek-lock access to dead-letter sub-queues.
#[async_trait]
pub trait DeadLetterReceiver: Send + Sync {
    /// Peek-locks the oldest unlocked message of `{queue}/$DeadLetterQueue`; `None` when there is
    /// none (a locked message is skipped, as Service Bus does).
    async fn receive(&self, queue: &str) -> Result<Option<DeadLetteredMessage>, MessagingError>;
    /// Deletes the locked message for good.
    async fn complete(&self, message: &DeadLetteredMessage) -> Result<(), MessagingError>;
    /// Releases the lock: the message stays in the dead-letter sub-queue.
    async fn unlock(&self, message: &DeadLetteredMessage) -> Result<(), MessagingError>;
}

/// The dead-letter sub-queue's path segment (a literal, `$` included).
pub const DEAD_LETTER_QUEUE_SEGMENT: &str = "$DeadLetterQueue";

/// The largest message body [`DeadLetterReceiver::receive`] reads here: 1 MiB, the Premium
/// tier's default maximum message size (Standard's is 256 KB). A bigger body is refused with an
/// error, not buffered; the product's messages are small JSON documents.
pub const MAX_DEAD_LETTER_BODY_BYTES: usize = 1024 * 1024;

/// Response headers that belong to HTTP or to the Service Bus protocol, never application
/// properties (as well as any `x-ms-*` header).
const NON_PROPERTY_HEADERS: &[&str] = &[
    "brokerproperties",
    "connection",
    "content-length",
    "content-type",
    "date",
    "keep-alive",
    "location",
    "server",
    "strict-transport-security",
    "transfer-encoding",
];

/// Options of [`ServiceBusDeadLetters`]: the same as the sender's (request timeout, user agent).
pub type DeadLetterOptions = ServiceBusSenderOptions;

/// The Service Bus REST client for [`DeadLetterReceiver`] (see the module docs).
pub struct ServiceBusDeadLetters {
    conn: Connection,
}

impl std::fmt::Debug for ServiceBusDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.debug(f, "ServiceBusDeadLetters")
    }
}

/// Which settlement a lock URL is used for (the span and error texts name it).
#[derive(Debug, Clone, Copy)]
enum Settle {
    Complete,
    Unlock,
}

impl Settle {
    fn name(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Unlock => "unlock",
        }
    }
}

impl ServiceBusDeadLetters {
    /// The endpoint rules are the sender's (`Connection::new`): https, or http on loopback.
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenSource>,
        options: DeadLetterOptions,
    ) -> Result<Self, ServiceBusConfigError> {
        Ok(Self {
            conn: Connection::new(endpoint, credential, &options)?,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.conn.endpoint
    }

    /// `{endpoint}/{queue}/$DeadLetterQueue/messages/head?timeout=0`.
    pub fn receive_url(&self, queue: &str) -> Result<Url, MessagingError> {
        let mut url = self.dead_letter_url(queue, &["messages", "head"])?;
        url.query_pairs_mut().append_pair("timeout", "0");
        Ok(url)
    }

    /// `{endpoint}/{queue}/$DeadLetterQueue/messages/{sequence_number}/{lock_token}`: the URL
    /// that completes (`DELETE`) or unlocks (`PUT`) a locked message. The lock token must be a
    /// hyphenated UUID (as Service Bus issues them); it is sent as given.
    pub fn lock_url(
        &self,
        queue: &str,
        sequence_number: i64,
        lock_token: &str,
    ) -> Result<Url, MessagingError> {
        if sequence_number < 0 {
            return Err(MessagingError::Encode(format!(
                "sequence_number: must not be negative, got {sequence_number}"
            )));
        }
        if !is_hyphenated_uuid(lock_token) {
            return Err(MessagingError::Encode(format!(
                "lock_token: must be a UUID, got {:?}",
                bounded_text(lock_token)
            )));
        }
        let sequence = sequence_number.to_string();
        self.dead_letter_url(queue, &["messages", &sequence, lock_token])
    }

    /// `{endpoint}/{queue}/$DeadLetterQueue/{rest...}`, each segment percent-encoded as a path
    /// segment, after validating the queue name.
    fn dead_letter_url(&self, queue: &str, rest: &[&str]) -> Result<Url, MessagingError> {
        validate_queue_name(queue)?;
        let mut url = self.conn.endpoint.clone();
        {
            let mut segments =
                url.path_segments_mut()
                    .map_err(|()| MessagingError::InvalidQueue {
                        queue: queue.to_string(),
                        rule: "the endpoint URL cannot carry a path",
                    })?;
            segments
                .pop_if_empty()
                .push(queue)
                .push(DEAD_LETTER_QUEUE_SEGMENT)
                .extend(rest);
        }
        Ok(url)
    }

    async fn receive_in_span(
        &self,
        queue: &str,
    ) -> Result<Option<DeadLetteredMessage>, MessagingError> {
        let url = self.receive_url(queue)?;
        tracing::debug!(queue, "peek-locking a dead-lettered Service Bus message");
        let response = self.conn.send_empty(reqwest::Method::POST, url).await?;

        let status = response.status();
        match status {
            StatusCode::NO_CONTENT => return Ok(None),
            StatusCode::CREATED => {}
            s if s.is_success() => {
                return Err(protocol_error(
                    s,
                    "unexpected status for a peek-lock (201 or 204 expected)".to_string(),
                ))
            }
            s => {
                let body = read_error_body(response).await;
                return Err(classify_failure(s, &body));
            }
        }

        let mut message = parse_locked_message(queue, response.headers())?;
        message.body = match read_bounded(response, MAX_DEAD_LETTER_BODY_BYTES).await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) if e.is_too_large() => {
                return Err(protocol_error(
                    status,
                    format!(
                        "message {} (sequence number {}): {e}",
                        message.message_id, message.sequence_number
                    ),
                ))
            }
            Err(e) => {
                return Err(MessagingError::Transient {
                    broker: Broker::ServiceBus,
                    detail: format!("the message body could not be read: {e}"),
                    source: Some(Box::new(e)),
                })
            }
        };
        tracing::debug!(
            queue,
            message_id = %message.message_id,
            sequence_number = message.sequence_number,
            delivery_count = message.delivery_count,
            reason = message.reason().unwrap_or(""),
            "peek-locked a dead-lettered Service Bus message"
        );
        Ok(Some(message))
    }

    async fn settle_in_span(
        &self,
        message: &DeadLetteredMessage,
        how: Settle,
    ) -> Result<(), MessagingError> {
        // Everything that can be checked locally is checked before a token is requested.
        let url = self.lock_url(&message.queue, message.sequence_number, &message.lock_token)?;
        let method = match how {
            Settle::Complete => reqwest::Method::DELETE,
            Settle::Unlock => reqwest::Method::PUT,
        };
        let response = self.conn.send_empty(method, url).await?;

        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_error_body(response).await;
        Err(match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => MessagingError::LockLost {
                broker: Broker::ServiceBus,
                detail: format!(
                    "{} of message {} (sequence number {}) in {}/{DEAD_LETTER_QUEUE_SEGMENT} returned {status}: {}",
                    how.name(),
                    bounded_text(&message.message_id),
                    message.sequence_number,
                    message.queue,
                    error_detail(&body)
                ),
            },
            _ => classify_failure(status, &body),
        })
    }

    async fn settle(
        &self,
        message: &DeadLetteredMessage,
        how: Settle,
    ) -> Result<(), MessagingError> {
        let span = dead_letter_span(how.name(), &message.queue);
        let result = self
            .settle_in_span(message, how)
            .instrument(span.clone())
            .await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

#[async_trait]
impl DeadLetterReceiver for ServiceBusDeadLetters {
    async fn receive(&self, queue: &str) -> Result<Option<DeadLetteredMessage>, MessagingError> {
        let span = dead_letter_span("receive", queue);
        let result = self.receive_in_span(queue).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn complete(&self, message: &DeadLetteredMessage) -> Result<(), MessagingError> {
        self.settle(message, Settle::Complete).await
    }

    async fn unlock(&self, message: &DeadLetteredMessage) -> Result<(), MessagingError> {
        self.settle(message, Settle::Unlock).await
    }
}

/// One client span per call (OpenTelemetry messaging conventions: `{operation} {destination}`).
fn dead_letter_span(operation: &'static str, queue: &str) -> tracing::Span {
    tracing::info_span!(
        "dead_letter",
        otel.name = format!("{operation} {queue}/{DEAD_LETTER_QUEUE_SEGMENT}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        messaging.system = "servicebus",
        messaging.operation.name = operation,
        messaging.destination.name = queue,
    )
}

/// A `201` that does not describe a usable locked message: the broker (or whatever answered in
/// its place) broke the protocol. Reported like a rejection, with the status it came with.
fn protocol_error(status: StatusCode, detail: String) -> MessagingError {
    MessagingError::Rejected {
        broker: Broker::ServiceBus,
        status: status.as_u16(),
        body: redact(&format!("invalid peek-lock response: {detail}")).into_owned(),
        source: None,
    }
}

/// At most 128 characters of text taken from a response, for error messages.
fn bounded_text(s: &str) -> String {
    s.chars().take(128).collect()
}

/// Whether `s` is a UUID in the hyphenated 8-4-4-4-12 form (either case): only hex digits and
/// hyphens, so it needs no percent-encoding and cannot add path segments.
fn is_hyphenated_uuid(s: &str) -> bool {
    s.len() == 36
        && uuid::Uuid::try_parse(s)
            .is_ok_and(|u| u.hyphenated().to_string().eq_ignore_ascii_case(s))
}

/// The message a `201` describes, from its headers (the body is read afterwards).
fn parse_locked_message(
    queue: &str,
    headers: &HeaderMap,
) -> Result<DeadLetteredMessage, MessagingError> {
    let fail = |detail: String| protocol_error(StatusCode::CREATED, detail);
    let raw = headers
        .get(BROKER_PROPERTIES_HEADER)
        .ok_or_else(|| fail(format!("no {BROKER_PROPERTIES_HEADER} header")))?;
    let props: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw.as_bytes())
        .map_err(|e| {
            fail(format!(
                "the {BROKER_PROPERTIES_HEADER} header is not a JSON object: {e}"
            ))
        })?;
    let missing = |field: &str| fail(format!("{BROKER_PROPERTIES_HEADER} lacks {field}"));
    let wrong_type = |field: &str, expected: &str| {
        fail(format!(
            "{BROKER_PROPERTIES_HEADER}.{field} is not {expected}"
        ))
    };

    let lock_token = match props.get("LockToken") {
        None | Some(serde_json::Value::Null) => return Err(missing("LockToken")),
        Some(serde_json::Value::String(s)) if is_hyphenated_uuid(s) => s.clone(),
        Some(_) => return Err(wrong_type("LockToken", "a UUID string")),
    };
    let sequence_number = match props.get("SequenceNumber") {
        None | Some(serde_json::Value::Null) => return Err(missing("SequenceNumber")),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 0)
            .ok_or_else(|| wrong_type("SequenceNumber", "a non-negative integer"))?,
    };
    let message_id = match props.get("MessageId") {
        None | Some(serde_json::Value::Null) => return Err(missing("MessageId")),
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(wrong_type("MessageId", "a non-empty string")),
    };
    let delivery_count = match props.get("DeliveryCount") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| wrong_type("DeliveryCount", "a non-negative integer"))?,
    };
    let correlation_id = match props.get("CorrelationId") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(wrong_type("CorrelationId", "a string")),
    };
    // Informational only: a value that is not a date is dropped rather than failing a message
    // that can otherwise be redriven.
    let enqueued_time = match props.get("EnqueuedTimeUtc") {
        Some(serde_json::Value::String(s)) => {
            let parsed = parse_broker_time(s);
            if parsed.is_none() {
                tracing::debug!(
                    value = %bounded_text(s),
                    "ignoring an EnqueuedTimeUtc that is not an RFC 1123 date"
                );
            }
            parsed
        }
        _ => None,
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

    Ok(DeadLetteredMessage {
        queue: queue.to_string(),
        message_id,
        sequence_number,
        lock_token,
        delivery_count,
        correlation_id,
        content_type,
        enqueued_time,
        body: Vec::new(),
        properties: application_properties(headers),
    })
}

/// RFC 1123 (`Sun, 06 Nov 1994 08:49:37 GMT`, what Service Bus sends), or RFC 3339.
fn parse_broker_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .or_else(|_| DateTime::parse_from_rfc3339(s.trim()))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Every header that is neither HTTP's nor the protocol's, as an application property: a JSON
/// string value is unquoted, a JSON number or boolean kept as written, anything else (bare
/// text) taken as is.
fn application_properties(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !NON_PROPERTY_HEADERS.contains(&name) && !name.starts_with("x-ms-")
        })
        .map(|(name, value)| {
            let raw = String::from_utf8_lossy(value.as_bytes());
            (name.as_str().to_string(), property_value(&raw))
        })
        .collect()
}

fn property_value(raw: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(raw.trim()) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{AccessToken, StaticToken};
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    fn client(endpoint: &str) -> ServiceBusDeadLetters {
        ServiceBusDeadLetters::new(
            Url::parse(endpoint).expect("url"),
            Arc::new(StaticToken(AccessToken::new("t"))),
            DeadLetterOptions::default(),
        )
        .expect("client")
    }

    const LOCK: &str = "7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547";

    #[test]
    fn dead_letter_segment_keeps_the_dollar_sign() {
        let c = client("https://ns.servicebus.windows.net");
        assert_eq!(
            c.receive_url("fanout").expect("url").as_str(),
            "https://ns.servicebus.windows.net/fanout/$DeadLetterQueue/messages/head?timeout=0"
        );
        assert_eq!(
            c.lock_url("fanout", 42, LOCK).expect("url").as_str(),
            format!("https://ns.servicebus.windows.net/fanout/$DeadLetterQueue/messages/42/{LOCK}")
        );
        let local = client("http://127.0.0.1:9/local/");
        assert_eq!(
            local.receive_url("q").expect("url").as_str(),
            "http://127.0.0.1:9/local/q/$DeadLetterQueue/messages/head?timeout=0"
        );
    }

    #[test]
    fn endpoint_rules_are_the_senders() {
        let token: Arc<dyn TokenSource> = Arc::new(StaticToken(AccessToken::new("t")));
        for bad in [
            "http://ns.servicebus.windows.net/",
            "https://u:p@ns.servicebus.windows.net/",
            "https://ns.servicebus.windows.net/?sig=x",
        ] {
            assert!(
                ServiceBusDeadLetters::new(
                    Url::parse(bad).expect("url"),
                    token.clone(),
                    DeadLetterOptions::default()
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn lock_urls_refuse_what_could_change_the_path() {
        let c = client("https://ns.servicebus.windows.net/");
        for bad_token in [
            "",
            "not-a-uuid",
            "../../other/messages/1",
            "7da9cfd540d54bb18d64ec5a52e1c547",
            "{7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547}",
            "urn:uuid:7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547",
            "7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547/x",
        ] {
            assert!(
                matches!(
                    c.lock_url("q", 1, bad_token),
                    Err(MessagingError::Encode(_))
                ),
                "{bad_token:?}"
            );
        }
        assert!(matches!(
            c.lock_url("q", -1, LOCK),
            Err(MessagingError::Encode(_))
        ));
        assert!(matches!(
            c.lock_url("../x", 1, LOCK),
            Err(MessagingError::InvalidQueue { .. })
        ));
        assert!(c.lock_url("q", 0, &LOCK.to_uppercase()).is_ok());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn broker_properties_fields_and_defaults() {
        let h = headers(&[(
            "brokerproperties",
            &format!(
                r#"{{"LockToken":"{LOCK}","SequenceNumber":7,"MessageId":"m","EnqueuedTimeUtc":"Sun, 06 Nov 1994 08:49:37 GMT"}}"#
            ),
        )]);
        let m = parse_locked_message("q", &h).expect("parsed");
        assert_eq!(m.delivery_count, 0);
        assert_eq!(m.correlation_id, None);
        assert_eq!(m.content_type, None);
        assert_eq!(
            m.enqueued_time,
            Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 37).single()
        );
        assert!(m.properties.is_empty(), "{:?}", m.properties);
    }

    #[test]
    fn invalid_broker_properties_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not a JSON object"),
            ("[1]", "not a JSON object"),
            (r#"{"SequenceNumber":1,"MessageId":"m"}"#, "lacks LockToken"),
            (
                &format!(r#"{{"LockToken":"{LOCK}","MessageId":"m"}}"#),
                "lacks SequenceNumber",
            ),
            (
                &format!(r#"{{"LockToken":"{LOCK}","SequenceNumber":1}}"#),
                "lacks MessageId",
            ),
            (
                r#"{"LockToken":"../x","SequenceNumber":1,"MessageId":"m"}"#,
                "LockToken is not a UUID",
            ),
            (
                &format!(r#"{{"LockToken":"{LOCK}","SequenceNumber":"1","MessageId":"m"}}"#),
                "SequenceNumber is not",
            ),
            (
                &format!(
                    r#"{{"LockToken":"{LOCK}","SequenceNumber":1,"MessageId":"m","DeliveryCount":-1}}"#
                ),
                "DeliveryCount is not",
            ),
        ];
        for (raw, expected) in cases {
            let err = parse_locked_message("q", &headers(&[("brokerproperties", raw)]))
                .expect_err("invalid");
            match err {
                MessagingError::Rejected {
                    broker: Broker::ServiceBus,
                    status: 201,
                    body,
                    ..
                } => assert!(body.contains(expected), "{raw}: {body}"),
                other => panic!("{raw}: expected Rejected, got {other:?}"),
            }
        }
        let err = parse_locked_message("q", &HeaderMap::new()).expect_err("no header");
        assert!(
            err.to_string().contains("no BrokerProperties header"),
            "{err}"
        );
    }

    #[test]
    fn property_values_are_json_or_bare_text() {
        assert_eq!(property_value(r#""quoted \"x\"""#), r#"quoted "x""#);
        assert_eq!(property_value("42"), "42");
        assert_eq!(property_value("-1.5"), "-1.5");
        assert_eq!(property_value("true"), "true");
        assert_eq!(property_value("bare text"), "bare text");
        assert_eq!(property_value("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(property_value("null"), "null");
    }

    #[test]
    fn protocol_headers_are_not_properties() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("content-length", "3"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("server", "Microsoft-HTTPAPI/2.0"),
            ("location", "https://elsewhere/"),
            ("brokerproperties", "{}"),
            ("transfer-encoding", "chunked"),
            ("strict-transport-security", "max-age=31536000"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("x-ms-request-id", "abc"),
            ("ticket", "\"T-1\""),
        ]);
        let props = application_properties(&h);
        assert_eq!(
            props,
            BTreeMap::from([("ticket".to_string(), "T-1".to_string())])
        );
    }

    #[test]
    fn broker_times() {
        let at = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).single();
        assert_eq!(parse_broker_time("Tue, 02 Jan 2024 03:04:05 GMT"), at);
        assert_eq!(parse_broker_time("2024-01-02T03:04:05Z"), at);
        assert_eq!(parse_broker_time("yesterday"), None);
    }
}
