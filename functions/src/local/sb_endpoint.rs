//! The Service Bus REST "Send Message" API, served on loopback in front of the local queue, so
//! the product's `ServiceBusSender` and the simulator's Event Grid publisher talk to it exactly
//! as to `https://{namespace}.servicebus.windows.net/`; and the runtime API on dead-letter
//! sub-queues (peek-lock, delete, unlock), for the product's dead-letter receiver.
//!
//! Wire format (Service Bus REST reference, "Send Message" and "Message headers and properties",
//! learn.microsoft.com/rest/api/servicebus/send-message-to-queue and
//! .../message-headers-and-properties; example in that page: `BrokerProperties:
//! {"Label":"M1","State":"Active","TimeToLive":10}`, custom properties `Priority: High`):
//! - `POST /{queue}/messages[?timeout=..&api-version=..]`, body = message payload → `201 Created`.
//! - `Authorization`: Entra `Bearer <jwt>` or `SharedAccessSignature ...`; missing → 401. The
//!   local endpoint checks presence and scheme only (there is no identity to check against).
//! - `BrokerProperties`: JSON object; `MessageId`, `CorrelationId`, `ScheduledEnqueueTimeUtc`
//!   (RFC 1123, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`) are honoured, other names are ignored as
//!   Service Bus ignores unknown broker properties.
//! - Every other non-standard header is a custom (application) property; string values arrive
//!   JSON-quoted (`"abc"`), numbers and booleans bare; bare text is accepted as is.
//! - Message larger than 256 KiB (Standard tier, the tier in `infra/main.bicep`) → 403, the code
//!   the reference gives for "quota exceeded or message too large".
//!
//! Dead-letter sub-queue (REST reference "Peek-Lock Message (Non-Destructive Read)", "Delete
//! Message", "Unlock Message"; the sub-queue's path is `{queue}/$DeadLetterQueue`, the segment
//! matched case-insensitively), same authorization check:
//! - `POST /{queue}/$DeadLetterQueue/messages/head[?timeout=..]` → `204` when no dead letter is
//!   free (at once: `timeout` is ignored, there is no long poll), else `201` with the payload as
//!   body, its `Content-Type`, `BrokerProperties` (`DeliveryCount` = locks taken on it in the
//!   sub-queue, `LockToken`, `LockedUntilUtc`, `MessageId`, `SequenceNumber`, `CorrelationId`,
//!   `EnqueuedTimeUtc` of the original send), `Location:
//!   {base}{queue}/$DeadLetterQueue/messages/{SequenceNumber}/{LockToken}`, and one header per
//!   application property with a JSON string value (`traceparent: "00-..."`), including
//!   `DeadLetterReason` and `DeadLetterErrorDescription`.
//! - `DELETE /{queue}/$DeadLetterQueue/messages/{seq}/{lockToken}` deletes it; `PUT` on the same
//!   path unlocks it. `200`, or `404` when the lock is not held (expired, wrong token, gone);
//!   a `seq` that is not a sequence number or a token that is not a UUID → `400`.

use super::queue::{
    validate_queue_name, LocalQueue, LocalQueueError, NewMessage, ReceivedDeadLetter,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use uuid::Uuid;

/// Standard-tier maximum message size.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Headers that are part of HTTP or of the Service Bus protocol, never custom properties.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "accept-language",
    "authorization",
    "brokerproperties",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "date",
    "expect",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "user-agent",
];

#[derive(Debug, thiserror::Error)]
pub enum SendRejection {
    #[error("Authorization header missing or not 'Bearer <token>' / 'SharedAccessSignature ...'")]
    Unauthorized,
    #[error("invalid queue name {queue:?}: {rule}")]
    InvalidQueue { queue: String, rule: &'static str },
    #[error("BrokerProperties header: {0}")]
    BrokerProperties(String),
    #[error("message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte Standard tier limit")]
    TooLarge { size: usize },
    #[error("custom property header {name:?} is not valid UTF-8 text")]
    PropertyEncoding { name: String },
    #[error("local queue failure: {0}")]
    Queue(LocalQueueError),
}

impl IntoResponse for SendRejection {
    fn into_response(self) -> Response {
        let status = match &self {
            SendRejection::Unauthorized => StatusCode::UNAUTHORIZED,
            SendRejection::TooLarge { .. } => StatusCode::FORBIDDEN,
            SendRejection::Queue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// The path segment of a queue's dead-letter sub-queue.
pub const DEAD_LETTER_QUEUE_SEGMENT: &str = "$DeadLetterQueue";

/// Why a dead-letter sub-queue request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterRejection {
    #[error("Authorization header missing or not 'Bearer <token>' / 'SharedAccessSignature ...'")]
    Unauthorized,
    #[error("invalid queue name {queue:?}: {rule}")]
    InvalidQueue { queue: String, rule: &'static str },
    #[error("no sub-queue {segment:?}: only {{queue}}/{DEAD_LETTER_QUEUE_SEGMENT} is served")]
    UnknownSubQueue { segment: String },
    #[error("{0:?} is not a sequence number")]
    BadSequenceNumber(String),
    #[error("{0:?} is not a lock token (a UUID)")]
    BadLockToken(String),
    #[error("no message with that sequence number is locked by that lock token (expired, settled or never taken)")]
    LockLost,
    #[error("local queue failure: {0}")]
    Queue(LocalQueueError),
}

impl From<LocalQueueError> for DeadLetterRejection {
    fn from(e: LocalQueueError) -> Self {
        match e {
            LocalQueueError::InvalidQueueName { queue, rule } => Self::InvalidQueue { queue, rule },
            LocalQueueError::LockLost { .. } => Self::LockLost,
            other => Self::Queue(other),
        }
    }
}

impl IntoResponse for DeadLetterRejection {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnknownSubQueue { .. } | Self::LockLost => StatusCode::NOT_FOUND,
            Self::Queue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// The router; mount it at the root of a loopback listener.
pub fn router(queue: LocalQueue) -> Router {
    Router::new()
        .route("/{queue}/messages", post(send_message))
        // `$DeadLetterQueue` is captured and compared (any case, percent-encoded or not).
        .route(
            "/{queue}/{sub_queue}/messages/head",
            post(receive_dead_letter),
        )
        .route(
            "/{queue}/{sub_queue}/messages/{sequence_number}/{lock_token}",
            delete(complete_dead_letter).put(unlock_dead_letter),
        )
        .with_state(queue)
}

/// Binds `127.0.0.1:{port}` (0 = any free port) and serves the router in a background task.
/// Returns the base URL with a trailing slash, as `ADE_BACKUP_SERVICEBUS_ENDPOINT` expects.
pub async fn serve(
    queue: LocalQueue,
    port: u16,
) -> std::io::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let app = router(queue);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("[local] Service Bus endpoint stopped: {e}");
        }
    });
    Ok((format!("http://{addr}/"), task))
}

async fn send_message(
    State(queue): State<LocalQueue>,
    Path(queue_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, SendRejection> {
    let message = parse_send_request(&queue_name, &headers, &body)?;
    // fsync happens inside send; keep it off the async worker threads.
    let name = queue_name.clone();
    tokio::task::spawn_blocking(move || queue.send(&name, message))
        .await
        .map_err(|_| SendRejection::Queue(LocalQueueError::Internal("send task panicked")))?
        .map_err(SendRejection::Queue)?;
    // A duplicate is accepted and dropped, as Service Bus does: same 201.
    Ok(StatusCode::CREATED)
}

/// Validates and converts one Send Message request into a queue message.
pub fn parse_send_request(
    queue_name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<NewMessage, SendRejection> {
    if !authorized(headers) {
        return Err(SendRejection::Unauthorized);
    }
    validate_queue_name(queue_name).map_err(|e| match e {
        LocalQueueError::InvalidQueueName { queue, rule } => {
            SendRejection::InvalidQueue { queue, rule }
        }
        other => SendRejection::Queue(other),
    })?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(SendRejection::TooLarge { size: body.len() });
    }
    let mut message = NewMessage {
        body: body.to_vec(),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        ..NewMessage::default()
    };
    if let Some(raw) = headers.get("brokerproperties") {
        let raw = raw
            .to_str()
            .map_err(|_| SendRejection::BrokerProperties("not valid UTF-8 text".into()))?;
        apply_broker_properties(&mut message, raw)?;
    }
    message.properties = custom_properties(headers)?;
    Ok(message)
}

/// `Authorization: Bearer <token>` or `SharedAccessSignature ...` is present (see module docs).
fn authorized(headers: &HeaderMap) -> bool {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    auth.strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("SharedAccessSignature "))
        .is_some_and(|t| !t.trim().is_empty())
}

fn apply_broker_properties(message: &mut NewMessage, raw: &str) -> Result<(), SendRejection> {
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| SendRejection::BrokerProperties(format!("not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(SendRejection::BrokerProperties(
            "must be a JSON object".into(),
        ));
    };
    let text = |field: &str| -> Result<Option<String>, SendRejection> {
        match map.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SendRejection::BrokerProperties(format!(
                "{field} must be a string"
            ))),
        }
    };
    message.message_id = text("MessageId")?.filter(|s| !s.is_empty());
    message.correlation_id = text("CorrelationId")?.filter(|s| !s.is_empty());
    if let Some(when) = text("ScheduledEnqueueTimeUtc")? {
        message.scheduled_enqueue_time = Some(parse_rfc1123(&when).ok_or_else(|| {
            SendRejection::BrokerProperties(format!(
                "ScheduledEnqueueTimeUtc {when:?} must be an RFC 1123 date such as \
                 'Sun, 06 Nov 1994 08:49:37 GMT'"
            ))
        })?);
    }
    Ok(())
}

/// RFC 1123 (`Sun, 06 Nov 1994 08:49:37 GMT`), which RFC 2822 parsing accepts.
pub fn parse_rfc1123(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Formats a time the way `ScheduledEnqueueTimeUtc` expects it.
pub fn format_rfc1123(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn custom_properties(headers: &HeaderMap) -> Result<BTreeMap<String, String>, SendRejection> {
    let mut properties = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if RESERVED_HEADERS.contains(&name) || name.starts_with("x-ms-") {
            continue;
        }
        let raw = value
            .to_str()
            .map_err(|_| SendRejection::PropertyEncoding {
                name: name.to_string(),
            })?;
        let value = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v.to_string(),
            _ => raw.to_string(),
        };
        // HTTP lower-cases header names on the wire (HTTP/2) or in `http`; the property name
        // arrives lower-case either way.
        properties.insert(name.to_string(), value);
    }
    Ok(properties)
}

/// Authorization, queue name and sub-queue segment of a dead-letter request; the queue's
/// stored (lower-case) name.
fn dead_letter_queue_name(
    headers: &HeaderMap,
    queue_name: &str,
    sub_queue: &str,
) -> Result<String, DeadLetterRejection> {
    if !authorized(headers) {
        return Err(DeadLetterRejection::Unauthorized);
    }
    let name = validate_queue_name(queue_name)?;
    if !sub_queue.eq_ignore_ascii_case(DEAD_LETTER_QUEUE_SEGMENT) {
        return Err(DeadLetterRejection::UnknownSubQueue {
            segment: sub_queue.to_string(),
        });
    }
    Ok(name)
}

/// Runs a queue operation (it fsyncs) on the blocking pool.
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, LocalQueueError> + Send + 'static,
) -> Result<T, DeadLetterRejection> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|_| DeadLetterRejection::Queue(LocalQueueError::Internal("queue task panicked")))?
        .map_err(DeadLetterRejection::from)
}

async fn receive_dead_letter(
    State(queue): State<LocalQueue>,
    Path((queue_name, sub_queue)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, DeadLetterRejection> {
    let name = dead_letter_queue_name(&headers, &queue_name, &sub_queue)?;
    let queue_for_task = name.clone();
    let received = blocking(move || queue.receive_dead_letter(&queue_for_task)).await?;
    let Some(received) = received else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    Ok(dead_letter_response(
        &received,
        &name,
        &base_url(&headers, &uri),
    ))
}

async fn complete_dead_letter(
    State(queue): State<LocalQueue>,
    Path(path): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, DeadLetterRejection> {
    let (name, seq, token) = settle_target(&headers, path)?;
    blocking(move || queue.complete_dead_letter(&name, seq, token)).await?;
    Ok(StatusCode::OK)
}

async fn unlock_dead_letter(
    State(queue): State<LocalQueue>,
    Path(path): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, DeadLetterRejection> {
    let (name, seq, token) = settle_target(&headers, path)?;
    blocking(move || queue.unlock_dead_letter(&name, seq, token)).await?;
    Ok(StatusCode::OK)
}

/// Queue, sequence number and lock token of a delete / unlock request.
fn settle_target(
    headers: &HeaderMap,
    (queue_name, sub_queue, seq, token): (String, String, String, String),
) -> Result<(String, u64, Uuid), DeadLetterRejection> {
    let name = dead_letter_queue_name(headers, &queue_name, &sub_queue)?;
    let seq = seq
        .parse::<u64>()
        .map_err(|_| DeadLetterRejection::BadSequenceNumber(seq.clone()))?;
    let token = Uuid::parse_str(&token).map_err(|_| DeadLetterRejection::BadLockToken(token))?;
    Ok((name, seq, token))
}

/// `http://{Host}/`, the base the client used (the `Location` of a locked message starts with it).
fn base_url(headers: &HeaderMap, uri: &Uri) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "127.0.0.1".to_string());
    format!("http://{host}/")
}

/// The `201` of a peek-lock on the dead-letter sub-queue (see module docs).
fn dead_letter_response(received: &ReceivedDeadLetter, queue: &str, base: &str) -> Response {
    let dead_letter = &received.dead_letter;
    let message = &dead_letter.message;
    let mut broker = serde_json::json!({
        "DeliveryCount": dead_letter.receive_count,
        "LockToken": received.lock_token.to_string(),
        "LockedUntilUtc": format_rfc1123(received.locked_until),
        "MessageId": message.message_id,
        "SequenceNumber": message.sequence_number,
        "EnqueuedTimeUtc": format_rfc1123(message.enqueued_time),
    });
    if let Some(correlation_id) = &message.correlation_id {
        broker["CorrelationId"] = correlation_id.clone().into();
    }
    let mut headers = HeaderMap::new();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    // Application properties first, so a property cannot stand in for a protocol header.
    for (name, value) in &message.properties {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if RESERVED_HEADERS.contains(&name.as_str()) || name == header::LOCATION {
            continue;
        }
        set(name, &json_header_string(value));
    }
    set(
        HeaderName::from_static("deadletterreason"),
        &json_header_string(&dead_letter.reason),
    );
    set(
        HeaderName::from_static("deadlettererrordescription"),
        &json_header_string(&dead_letter.description),
    );
    set(
        HeaderName::from_static("brokerproperties"),
        &ascii_json(&broker.to_string()),
    );
    set(
        header::LOCATION,
        &format!(
            "{base}{queue}/{DEAD_LETTER_QUEUE_SEGMENT}/messages/{}/{}",
            message.sequence_number, received.lock_token
        ),
    );
    if let Some(content_type) = &message.content_type {
        set(header::CONTENT_TYPE, content_type);
    }
    // A `Body`, not bytes: axum would add `Content-Type: application/octet-stream` to bytes.
    let body = axum::body::Body::from(message.body.clone());
    (StatusCode::CREATED, headers, body).into_response()
}

/// `s` as a JSON string literal in printable ASCII, so it is a valid header value and the
/// client's JSON parser gets `s` back.
fn json_header_string(s: &str) -> String {
    ascii_json(&serde_json::Value::from(s).to_string())
}

/// JSON text with every character outside printable ASCII `\u`-escaped. Valid for serde_json's
/// output: it escapes control characters itself, so what is left outside printable ASCII sits
/// inside string literals, where `\u` escapes mean the same characters.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if matches!(c, ' '..='~') {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_round_trips() {
        let t = parse_rfc1123("Sun, 06 Nov 1994 08:49:37 GMT").expect("parses");
        assert_eq!(t.to_rfc3339(), "1994-11-06T08:49:37+00:00");
        assert_eq!(format_rfc1123(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert!(parse_rfc1123("1994-11-06T08:49:37Z").is_none());
    }

    #[test]
    fn property_header_values_are_ascii_json_strings() {
        for s in [
            "00-abc",
            "",
            "quote \" back \\ slash",
            "line\nbreak\ttab\u{7f}",
            "été € 😀",
        ] {
            let encoded = json_header_string(s);
            assert!(HeaderValue::from_str(&encoded).is_ok(), "{encoded}");
            let decoded: String = serde_json::from_str(&encoded).expect("JSON string");
            assert_eq!(decoded, s);
        }
        assert_eq!(json_header_string("00-abc"), r#""00-abc""#);
        let doc = ascii_json(&serde_json::json!({"MessageId": "é"}).to_string());
        assert_eq!(doc, r#"{"MessageId":"\u00e9"}"#);
    }
}
