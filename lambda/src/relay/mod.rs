//! The Event Grid → SQS relay: a Lambda function URL that Event Grid delivers to as a webhook
//! (Event Grid cannot deliver to SQS), putting each accepted ADE-relevant event on the
//! `vm-encryption-events` queue through the same [`MessageSender`] the router uses.
//!
//! One request, in this order (Azure docs "Webhook event delivery" and "CloudEvents v1.0 schema
//! with Event Grid"):
//! 1. **Authentication**, before anything else: the header [`KEY_HEADER`] (an Event Grid static
//!    delivery attribute, `deliveryAttributeMappings`) must equal the shared secret
//!    ([`settings::RelayKey`], compared in constant time); missing or wrong → 401. The value is
//!    never logged.
//! 2. `OPTIONS` → the CloudEvents abuse-protection handshake: `WebHook-Request-Origin` is echoed
//!    in `WebHook-Allowed-Origin` (200).
//! 3. `POST` only (else 405); the body (base64 when the function URL says so) at most
//!    [`MAX_BODY_BYTES`] (else 413).
//! 4. An Event Grid schema array whose first event is a `SubscriptionValidationEvent` → 200
//!    `{"validationResponse": data.validationCode}`.
//! 5. Otherwise a JSON array of events (Event Grid schema, or a CloudEvents batch) or one
//!    CloudEvent. Each event is checked by the product's own parser
//!    ([`ade_backup_functions::domain::events::parse`], as `OnVmEncryptionEvent` will parse it),
//!    so a malformed event is refused here rather than dead-lettered later. One bad event → 400
//!    naming it (`[index].field`) and **nothing** is enqueued: Event Grid does not retry a 400
//!    and dead-letters the whole delivery when the subscription has a dead-letter destination.
//! 6. Events about a VM or its ADE extension are sent to the queue with the Event Grid event id
//!    as message id (deterministic deduplication on a FIFO queue) and `traceparent` (the
//!    CloudEvents distributed-tracing attribute, else the request header) when valid; others are
//!    acknowledged and dropped (the handler would ignore them). Any send failure → 503, and Event
//!    Grid retries the delivery: events already sent are sent again with the same id (dropped
//!    by FIFO deduplication; on a standard queue handled again, idempotently).

pub mod settings;

use ade_backup_functions::domain::events::{self, EventError, EventHint};
use ade_backup_shared::messaging::{MessageSender, OutboundMessage};
use ade_backup_shared::telemetry::is_valid_traceparent;
use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest, LambdaFunctionUrlResponse,
};
use base64::Engine;
use serde_json::{json, Value};
use settings::{RelayKey, EVENTS_QUEUE};
use std::sync::Arc;

/// The delivery header carrying the shared secret.
pub const KEY_HEADER: &str = "x-ade-relay-key";
/// Event Grid's largest batch is 1,024 KB (`preferredBatchSizeInKilobytes`); nothing larger is a
/// delivery.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const VALIDATION_EVENT: &str = "Microsoft.EventGrid.SubscriptionValidationEvent";
const MAX_VALIDATION_CODE_CHARS: usize = 512;
const MAX_ORIGIN_CHARS: usize = 255;

/// Why a request was refused (the response's status and `error` text).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("missing or wrong {KEY_HEADER}")]
    Unauthorized,
    #[error("method {0} is not allowed (POST events, OPTIONS handshake)")]
    Method(String),
    #[error("body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("{field}: {rule}")]
    Request { field: &'static str, rule: String },
    #[error("event rejected, nothing enqueued: {0}")]
    Event(#[source] EventError),
    #[error("event {event_id} could not be enqueued: {source}")]
    Enqueue {
        event_id: String,
        #[source]
        source: ade_backup_shared::messaging::MessagingError,
    },
}

impl RelayError {
    pub fn status(&self) -> i64 {
        match self {
            RelayError::Unauthorized => 401,
            RelayError::Method(_) => 405,
            RelayError::TooLarge => 413,
            RelayError::Request { .. } | RelayError::Event(_) => 400,
            RelayError::Enqueue { .. } => 503,
        }
    }
}

/// The relay: the shared secret and the sender to the events queue.
pub struct Relay {
    pub key: RelayKey,
    pub sender: Arc<dyn MessageSender>,
}

fn empty(status: i64) -> LambdaFunctionUrlResponse {
    LambdaFunctionUrlResponse {
        status_code: status,
        headers: Default::default(),
        body: None,
        is_base64_encoded: false,
        cookies: Vec::new(),
    }
}

fn response(status: i64, body: Value) -> LambdaFunctionUrlResponse {
    let mut r = empty(status);
    r.body = Some(body.to_string());
    r.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn header<'a>(req: &'a LambdaFunctionUrlRequest, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

impl Relay {
    /// Answers one function URL request; never fails (every refusal is a status).
    pub async fn handle(&self, req: LambdaFunctionUrlRequest) -> LambdaFunctionUrlResponse {
        match self.try_handle(&req).await {
            Ok(r) => r,
            Err(e) => {
                let status = e.status();
                if status >= 500 {
                    tracing::error!(status, "relay: {e}");
                } else {
                    tracing::warn!(status, "relay: {e}");
                }
                response(status, json!({"error": e.to_string()}))
            }
        }
    }

    async fn try_handle(
        &self,
        req: &LambdaFunctionUrlRequest,
    ) -> Result<LambdaFunctionUrlResponse, RelayError> {
        let presented = req.headers.get(KEY_HEADER).map(|v| v.as_bytes());
        if !presented.is_some_and(|p| self.key.matches(p)) {
            return Err(RelayError::Unauthorized);
        }
        let method = req.request_context.http.method.as_deref().unwrap_or("");
        if method.eq_ignore_ascii_case("OPTIONS") {
            return cloudevents_handshake(req);
        }
        if !method.eq_ignore_ascii_case("POST") {
            return Err(RelayError::Method(method.chars().take(16).collect()));
        }
        let body = body_bytes(req)?;
        let value: Value = serde_json::from_slice(&body).map_err(|e| RelayError::Request {
            field: "body",
            rule: format!(
                "must be JSON ({:?} error at column {})",
                e.classify(),
                e.column()
            ),
        })?;
        if let Some(code) = validation_code(&value)? {
            tracing::info!("relay: Event Grid subscription validation answered");
            return Ok(response(200, json!({"validationResponse": code})));
        }
        let items = match value {
            Value::Array(items) => items,
            one @ Value::Object(_) => vec![one],
            _ => {
                return Err(RelayError::Request {
                    field: "body",
                    rule: "must be an event object or an array of events".into(),
                })
            }
        };
        let total = items.len();
        let messages = to_messages(items, header(req, "traceparent"))?;
        let (enqueued, ignored) = (messages.len(), total - messages.len());
        self.enqueue(messages).await?;
        Ok(response(
            200,
            json!({"enqueued": enqueued, "ignored": ignored}),
        ))
    }

    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<(), RelayError> {
        let sends = messages.into_iter().map(|m| async move {
            let event_id = m.message_id.clone();
            self.sender
                .send(m)
                .await
                .map_err(|source| RelayError::Enqueue { event_id, source })
        });
        futures::future::try_join_all(sends).await.map(|_| ())
    }
}

/// The body's bytes, decoded and within [`MAX_BODY_BYTES`].
fn body_bytes(req: &LambdaFunctionUrlRequest) -> Result<Vec<u8>, RelayError> {
    let raw = req.body.as_deref().unwrap_or("");
    if !req.is_base64_encoded {
        return match raw.len() > MAX_BODY_BYTES {
            true => Err(RelayError::TooLarge),
            false => Ok(raw.as_bytes().to_vec()),
        };
    }
    if raw.len() > MAX_BODY_BYTES.div_ceil(3) * 4 {
        return Err(RelayError::TooLarge);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| RelayError::Request {
            field: "body",
            rule: "isBase64Encoded is set but the body is not base64".into(),
        })?;
    match bytes.len() > MAX_BODY_BYTES {
        true => Err(RelayError::TooLarge),
        false => Ok(bytes),
    }
}

/// `WebHook-Request-Origin` → `WebHook-Allowed-Origin` (CloudEvents webhook abuse protection).
fn cloudevents_handshake(
    req: &LambdaFunctionUrlRequest,
) -> Result<LambdaFunctionUrlResponse, RelayError> {
    let origin = header(req, "webhook-request-origin").ok_or(RelayError::Request {
        field: "WebHook-Request-Origin",
        rule: "is required on an OPTIONS validation request".into(),
    })?;
    let host_like = !origin.is_empty()
        && origin.len() <= MAX_ORIGIN_CHARS
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if !host_like {
        return Err(RelayError::Request {
            field: "WebHook-Request-Origin",
            rule: "must be a host name".into(),
        });
    }
    let mut r = empty(200);
    let value = http::HeaderValue::from_str(origin).map_err(|_| RelayError::Request {
        field: "WebHook-Request-Origin",
        rule: "must be a valid header value".into(),
    })?;
    r.headers.insert("webhook-allowed-origin", value);
    Ok(r)
}

/// The validation code when `value` is an Event Grid subscription validation delivery.
fn validation_code(value: &Value) -> Result<Option<String>, RelayError> {
    let Some(first) = value.as_array().and_then(|a| a.first()) else {
        return Ok(None);
    };
    if first.get("eventType").and_then(Value::as_str) != Some(VALIDATION_EVENT) {
        return Ok(None);
    }
    match first
        .pointer("/data/validationCode")
        .and_then(Value::as_str)
    {
        Some(code) if !code.is_empty() && code.chars().count() <= MAX_VALIDATION_CODE_CHARS => {
            Ok(Some(code.to_string()))
        }
        _ => Err(RelayError::Request {
            field: "[0].data.validationCode",
            rule: format!(
                "must be a non-empty string of at most {MAX_VALIDATION_CODE_CHARS} characters"
            ),
        }),
    }
}

/// Every event checked by the product's parser; the relevant ones as messages.
fn to_messages(
    items: Vec<Value>,
    request_traceparent: Option<&str>,
) -> Result<Vec<OutboundMessage>, RelayError> {
    if items.is_empty() {
        return Err(RelayError::Event(EventError::Field {
            field: "$".into(),
            rule: "an event array must not be empty".into(),
        }));
    }
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        if !item.is_object() {
            return Err(RelayError::Event(EventError::Field {
                field: format!("[{index}]"),
                rule: "must be an event object".into(),
            }));
        }
        let body = serde_json::to_vec(&item).map_err(|e| RelayError::Request {
            field: "body",
            rule: e.to_string(),
        })?;
        let hint = match events::parse(&body) {
            Ok(hints) => hints.into_iter().next(),
            Err(e) => return Err(RelayError::Event(at_index(e, index))),
        };
        let event_id = match hint {
            Some(EventHint::CheckVm { event_id, .. }) => event_id,
            Some(EventHint::Irrelevant { event_id, why }) => {
                tracing::debug!(event_id = %event_id, %why, "relay: event ignored");
                continue;
            }
            None => continue,
        };
        let traceparent = item
            .get("traceparent")
            .and_then(Value::as_str)
            .or(request_traceparent)
            .filter(|t| is_valid_traceparent(t));
        let mut message = OutboundMessage {
            queue: EVENTS_QUEUE.to_string(),
            message_id: event_id,
            correlation_id: None,
            scheduled_enqueue_time: None,
            content_type: "application/json".into(),
            body,
            properties: Default::default(),
        };
        if let Some(t) = traceparent {
            message = message.with_property("traceparent", t);
        }
        out.push(message);
    }
    Ok(out)
}

fn at_index(e: EventError, index: usize) -> EventError {
    match e {
        EventError::Field { field, rule } => EventError::Field {
            field: match field.as_str() {
                "$" => format!("[{index}]"),
                f => format!("[{index}].{f}"),
            },
            rule,
        },
        EventError::TooLarge { size, limit } => EventError::Field {
            field: format!("[{index}]"),
            rule: format!("event is {size} bytes; the limit is {limit} bytes"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_functions::handlers::Registry;
    use ade_backup_test_support::lambda_stack::function_url_request;
    use ade_backup_test_support::pump::{PumpOptions, QueuePump};

    const SECRET: &str = "unit-relay-secret-0123456789abcdef";
    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn relay() -> (Relay, Arc<QueuePump>) {
        let pump = Arc::new(QueuePump::new(
            &Registry::production(),
            PumpOptions::service_bus(),
        ));
        let json = format!(r#"{{"sharedSecret":"{SECRET}"}}"#);
        let key = RelayKey::parse("arn:r", &json).expect("key");
        let sender: Arc<dyn MessageSender> = pump.clone();
        (Relay { key, sender }, pump)
    }

    fn request(body: &[u8], base64: bool) -> LambdaFunctionUrlRequest {
        let text = match base64 {
            true => base64::engine::general_purpose::STANDARD.encode(body),
            false => String::from_utf8(body.to_vec()).expect("utf-8"),
        };
        let mut v = function_url_request("POST", &[(KEY_HEADER, SECRET)], Some(&text));
        v["isBase64Encoded"] = Value::Bool(base64);
        serde_json::from_value(v).expect("a function URL request")
    }

    fn cloud_event(id: &str) -> Value {
        let vm = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1";
        json!({"specversion": "1.0", "id": id, "type": "Microsoft.Resources.ResourceWriteSuccess",
               "source": "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011", "subject": vm,
               "time": "2026-12-02T06:00:00Z", "traceparent": TP,
               "data": {"resourceUri": vm, "status": "Succeeded"}})
    }

    #[tokio::test]
    async fn a_base64_cloudevent_is_enqueued_with_its_own_traceparent() {
        let (relay, pump) = relay();
        let body = serde_json::to_vec(&cloud_event("ce-1")).expect("json");
        let r = relay.handle(request(&body, true)).await;
        assert_eq!(r.status_code, 200, "{:?}", r.body);
        let sent = pump.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0].queue.as_str(), sent[0].message_id.as_str()),
            (EVENTS_QUEUE, "ce-1")
        );
        assert_eq!(
            sent[0].properties.get("traceparent").map(String::as_str),
            Some(TP)
        );
        assert_eq!(sent[0].body, body);
    }

    #[tokio::test]
    async fn bodies_that_are_not_deliveries_are_refused_before_sending() {
        let (relay, pump) = relay();
        let mut bad_time = cloud_event("ce-2");
        bad_time["time"] = json!("yesterday");
        let mut bad_version = cloud_event("ce-3");
        bad_version["specversion"] = json!("0.3");
        let cases: Vec<(LambdaFunctionUrlRequest, i64, &str)> = vec![
            (request(b"%%%", false), 400, "body"),
            (
                request(&serde_json::to_vec(&bad_time).expect("json"), false),
                400,
                "[0].time",
            ),
            (
                request(&serde_json::to_vec(&bad_version).expect("json"), false),
                400,
                "[0].specversion",
            ),
            (
                request(&vec![b' '; MAX_BODY_BYTES + 1], true),
                413,
                "larger",
            ),
            (
                request(&vec![b' '; MAX_BODY_BYTES + 1], false),
                413,
                "larger",
            ),
        ];
        for (req, status, needle) in cases {
            let r = relay.handle(req).await;
            let body = r.body.unwrap_or_default();
            assert_eq!(r.status_code, status, "{body}");
            assert!(body.contains(needle), "{needle}: {body}");
        }
        let mut not_b64 = request(b"[]", false);
        not_b64.is_base64_encoded = true;
        not_b64.body = Some("***".into());
        assert_eq!(relay.handle(not_b64).await.status_code, 400);
        assert!(pump.sent().is_empty());
    }
}
