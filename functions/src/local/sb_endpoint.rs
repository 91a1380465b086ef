//! The Service Bus REST "Send Message" API, served on loopback in front of the local queue, so
//! the product's `ServiceBusSender` and the simulator's Event Grid publisher talk to it exactly
//! as to `https://{namespace}.servicebus.windows.net/`.
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

use super::queue::{validate_queue_name, LocalQueue, LocalQueueError, NewMessage};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

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

/// The router; mount it at the root of a loopback listener.
pub fn router(queue: LocalQueue) -> Router {
    Router::new()
        .route("/{queue}/messages", post(send_message))
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
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authorized = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("SharedAccessSignature "))
        .is_some_and(|t| !t.trim().is_empty());
    if !authorized {
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
}
