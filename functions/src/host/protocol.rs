//! The Azure Functions custom-handler wire protocol.
//!
//! The Functions host POSTs every invocation to `/{FunctionName}` with a JSON body
//! `{"Data": {...}, "Metadata": {...}}` and expects `{"Outputs": {...}, "Logs": [...],
//! "ReturnValue": ...}` back. Sources used to pin the shapes down:
//! - MicrosoftDocs/azure-docs `articles/azure-functions/functions-custom-handlers.md`
//!   ("Request payload", "Response payload" and the `order` example).
//! - Azure/azure-functions-host `ScriptInvocationContextExtensions.ToHttpScriptInvocationContext`:
//!   every metadata value that is not a JSON object is sent as `JsonConvert.SerializeObject(value)`,
//!   i.e. strings arrive *JSON-encoded inside a string* (`"MessageId": "\"abc\""`) and numbers as
//!   strings (`"DeliveryCount": "1"`); trigger data that is a `byte[]` arrives base64-encoded.
//! - Azure/azure-sdk-for-net `ServiceBusTriggerBindingStrategy.GetBindingContract` (extension 5.x):
//!   the Service Bus metadata names `DeliveryCount`, `DeadLetterSource`, `LockToken`,
//!   `ExpiresAtUtc`, `ExpiresAt`, `EnqueuedTimeUtc`, `EnqueuedTime`, `MessageId`, `ContentType`,
//!   `ReplyTo`, `SequenceNumber`, `To`, `Subject`, `Label`, `CorrelationId`,
//!   `ApplicationProperties`, `UserProperties`, `SessionId`, `PartitionKey`, ... plus `sys`.
//! - MicrosoftDocs/azure-docs `functions-bindings-timer.md`: the timer payload
//!   `{"Schedule": {"AdjustForDST": true}, "ScheduleStatus": {"Last", "Next", "LastUpdated"},
//!   "IsPastDue": false}`.
//! - Azure/azure-functions-host issues 6997 and 7391: Service Bus / timer timestamps do not always
//!   come as RFC 3339; the parser here accepts the variants and never fails an invocation over a
//!   timer's *status* timestamps.
//!
//! Because the real host is that loose, parsing is tolerant in *encoding* (JSON-in-a-string,
//! number-or-string, metadata names matched case-insensitively like the host's binding data) and
//! strict in *meaning*: a value that cannot be what the field says is a [`ProtocolError`] naming the
//! field and the rule, which the server turns into a 400.

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::trigger::{DeadLetter, ServiceBusMessage, TimerInfo, TriggerInput, TriggerSpec};

/// Header carrying the Functions invocation id on every request from the host.
pub const INVOCATION_ID_HEADER: &str = "x-azure-functions-invocationid";

/// A payload that is not a valid invocation for the function's trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid invocation payload: {field} {rule}")]
pub struct ProtocolError {
    /// Dotted path of the offending field, e.g. `Metadata.DeliveryCount`.
    pub field: String,
    /// The rule it breaks, phrased to follow the field name.
    pub rule: String,
}

impl ProtocolError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

/// The response body the host expects. `Outputs` is always an object (this app declares no output
/// bindings), `Logs` go to the invocation log, `ReturnValue` carries the dead-letter request (see
/// [`DeadLetter`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationResponse {
    #[serde(rename = "Outputs", default)]
    pub outputs: Map<String, Value>,
    #[serde(rename = "Logs", default, deserialize_with = "null_as_empty")]
    pub logs: Vec<String>,
    #[serde(rename = "ReturnValue", default)]
    pub return_value: Value,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl InvocationResponse {
    pub fn success(logs: Vec<String>, return_value: Value) -> Self {
        Self {
            outputs: Map::new(),
            logs,
            return_value,
        }
    }

    /// The dead-letter request in `ReturnValue`, if any.
    pub fn dead_letter(&self) -> Option<DeadLetter> {
        self.return_value
            .get("deadLetter")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }
}

/// Parses a raw request body into the typed input for `spec`.
pub fn parse_invocation(spec: &TriggerSpec, body: &[u8]) -> Result<TriggerInput, ProtocolError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::new("body", format!("must be a JSON object ({e})")))?;
    let root = root
        .as_object()
        .ok_or_else(|| ProtocolError::new("body", "must be a JSON object"))?;
    let data = match get_ci(root, "Data") {
        Some(Value::Object(d)) => d,
        Some(_) => return Err(ProtocolError::new("Data", "must be a JSON object")),
        None => return Err(ProtocolError::new("Data", "is required")),
    };
    let empty = Map::new();
    let metadata = match get_ci(root, "Metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => &empty,
        Some(_) => return Err(ProtocolError::new("Metadata", "must be a JSON object")),
    };
    let binding = spec.binding();
    let field = format!("Data.{binding}");
    let value = match get_ci(data, binding) {
        None => {
            return Err(ProtocolError::new(
                field,
                "is required (the trigger binding's name in function.json)",
            ))
        }
        Some(Value::Null) => return Err(ProtocolError::new(field, "must not be null")),
        Some(v) => v,
    };
    match spec {
        TriggerSpec::ServiceBus { queue, .. } => {
            parse_service_bus(queue, &field, value, metadata).map(TriggerInput::ServiceBus)
        }
        TriggerSpec::Timer { .. } => parse_timer(&field, value).map(TriggerInput::Timer),
    }
}

fn parse_service_bus(
    queue: &str,
    field: &str,
    value: &Value,
    meta: &Map<String, Value>,
) -> Result<ServiceBusMessage, ProtocolError> {
    let body = decode_body(field, value)?;
    let message_id = meta_string(meta, "MessageId")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProtocolError::new("Metadata.MessageId", "is required and non-empty"))?;
    let delivery_count = meta_integer(meta, "DeliveryCount")?
        .ok_or_else(|| ProtocolError::new("Metadata.DeliveryCount", "is required"))?;
    let delivery_count = u32::try_from(delivery_count)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ProtocolError::new("Metadata.DeliveryCount", "must be an integer of at least 1")
        })?;
    let enqueued_time = match meta_time(meta, "EnqueuedTimeUtc")? {
        Some(t) => Some(t),
        None => meta_time(meta, "EnqueuedTime")?,
    };
    let expires_at = match meta_time(meta, "ExpiresAtUtc")? {
        Some(t) => Some(t),
        None => meta_time(meta, "ExpiresAt")?,
    };
    let subject = match meta_string(meta, "Subject")? {
        Some(s) => Some(s),
        None => meta_string(meta, "Label")?,
    };
    let user_properties = match meta_object(meta, "ApplicationProperties")? {
        Some(p) => p,
        None => meta_object(meta, "UserProperties")?.unwrap_or_default(),
    };
    Ok(ServiceBusMessage {
        queue: queue.to_string(),
        body,
        message_id,
        delivery_count,
        correlation_id: meta_string(meta, "CorrelationId")?.filter(|s| !s.is_empty()),
        content_type: meta_string(meta, "ContentType")?.filter(|s| !s.is_empty()),
        subject: subject.filter(|s| !s.is_empty()),
        enqueued_time,
        expires_at,
        sequence_number: meta_integer(meta, "SequenceNumber")?,
        user_properties,
    })
}

/// Decodes the trigger value into the message body bytes.
///
/// The host hands a message over as: a JSON object/array (it deserialised a JSON body), a string
/// (text body — possibly JSON-encoded once more by `JsonConvert.SerializeObject`), or a base64
/// string (binary body). Every message this app sends is JSON, so a string that is not JSON but
/// decodes from base64 to a JSON document is taken as that document; any other string is the text
/// body as is.
pub fn decode_body(field: &str, value: &Value) -> Result<Vec<u8>, ProtocolError> {
    match value {
        Value::Object(_) | Value::Array(_) | Value::Number(_) | Value::Bool(_) => {
            serde_json::to_vec(value).map_err(|e| ProtocolError::new(field, e.to_string()))
        }
        Value::Null => Err(ProtocolError::new(field, "must not be null")),
        Value::String(s) => {
            let s = unwrap_json_string(s);
            if looks_like_json_document(s.as_bytes()) {
                return Ok(s.into_bytes());
            }
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                if looks_like_json_document(&bytes) {
                    return Ok(bytes);
                }
            }
            Ok(s.into_bytes())
        }
    }
}

fn looks_like_json_document(bytes: &[u8]) -> bool {
    let trimmed = bytes.trim_ascii_start();
    matches!(trimmed.first(), Some(b'{') | Some(b'['))
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// Undoes the host's `JsonConvert.SerializeObject` on a string: `"\"abc\""` becomes `abc`.
/// A string that is not a single JSON string literal is returned unchanged.
fn unwrap_json_string(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        if let Ok(inner) = serde_json::from_str::<String>(t) {
            return inner;
        }
    }
    s.to_string()
}

fn get_ci<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn meta_field(key: &str) -> String {
    format!("Metadata.{key}")
}

fn meta_string(meta: &Map<String, Value>, key: &str) -> Result<Option<String>, ProtocolError> {
    match get_ci(meta, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(unwrap_json_string(s))),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(ProtocolError::new(meta_field(key), "must be a string")),
    }
}

fn meta_integer(meta: &Map<String, Value>, key: &str) -> Result<Option<i64>, ProtocolError> {
    let bad = || ProtocolError::new(meta_field(key), "must be an integer");
    match get_ci(meta, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(bad),
        Some(Value::String(s)) => unwrap_json_string(s)
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn meta_time(meta: &Map<String, Value>, key: &str) -> Result<Option<DateTime<Utc>>, ProtocolError> {
    match meta_string(meta, key)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => parse_time(&s).map(Some).ok_or_else(|| {
            ProtocolError::new(
                meta_field(key),
                "must be a date-time (RFC 3339, or ISO 8601 without offset meaning UTC)",
            )
        }),
    }
}

fn meta_object(
    meta: &Map<String, Value>,
    key: &str,
) -> Result<Option<Map<String, Value>>, ProtocolError> {
    let bad = || ProtocolError::new(meta_field(key), "must be a JSON object");
    match get_ci(meta, key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(Value::String(s)) => {
            let inner = unwrap_json_string(s);
            match serde_json::from_str::<Value>(&inner) {
                Ok(Value::Object(m)) => Ok(Some(m)),
                Ok(Value::Null) => Ok(None),
                _ => Err(bad()),
            }
        }
        Some(_) => Err(bad()),
    }
}

/// Parses the timestamp variants the host emits: RFC 3339 with any fraction (the host writes
/// 7 digits), ISO 8601 without offset (taken as UTC, as `...Utc` fields are), and the .NET
/// invariant `MM/dd/yyyy HH:mm:ss`.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%m/%d/%Y %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&n));
        }
    }
    None
}

fn parse_timer(field: &str, value: &Value) -> Result<TimerInfo, ProtocolError> {
    let owned;
    let obj = match value {
        Value::Object(m) => m,
        Value::String(s) => match serde_json::from_str::<Value>(&unwrap_json_string(s)) {
            Ok(Value::Object(m)) => {
                owned = m;
                &owned
            }
            _ => return Err(ProtocolError::new(field, "must be a TimerInfo JSON object")),
        },
        _ => return Err(ProtocolError::new(field, "must be a TimerInfo JSON object")),
    };
    let is_past_due = match get_ci(obj, "IsPastDue") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return Err(ProtocolError::new(
                format!("{field}.IsPastDue"),
                "must be a boolean",
            ))
        }
    };
    let adjust_for_dst = match get_ci(obj, "Schedule") {
        Some(Value::Object(s)) => get_ci(s, "AdjustForDST").and_then(Value::as_bool),
        _ => None,
    };
    // Status timestamps are informational; a malformed one (host issue 7391) must not fail the sweep.
    let status_time = |key: &str| -> Option<DateTime<Utc>> {
        match get_ci(obj, "ScheduleStatus") {
            Some(Value::Object(st)) => match get_ci(st, key) {
                Some(Value::String(s)) => parse_time(&unwrap_json_string(s)),
                _ => None,
            },
            _ => None,
        }
    };
    Ok(TimerInfo {
        is_past_due,
        adjust_for_dst,
        last: status_time("Last"),
        next: status_time("Next"),
        last_updated: status_time("LastUpdated"),
    })
}

/// Request builders shaped exactly like the Functions host's, for the embedded local host and tests.
pub mod build {
    use super::*;

    /// What the local host knows about a delivery.
    #[derive(Debug, Clone, Default)]
    pub struct Delivery<'a> {
        pub message_id: &'a str,
        pub delivery_count: u32,
        pub correlation_id: Option<&'a str>,
        pub content_type: Option<&'a str>,
        pub enqueued_time: Option<DateTime<Utc>>,
        pub sequence_number: Option<i64>,
        pub application_properties: Map<String, Value>,
    }

    /// `{"Data": {binding: body-as-text}, "Metadata": {...}}` with metadata values encoded the way
    /// the host encodes them (JSON inside strings, properties as objects).
    pub fn service_bus_request(binding: &str, body: &[u8], d: &Delivery<'_>) -> Value {
        let data_value = match std::str::from_utf8(body) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => Value::String(base64::engine::general_purpose::STANDARD.encode(body)),
        };
        let enc = |v: Value| Value::String(v.to_string());
        let mut meta = Map::new();
        meta.insert("MessageId".into(), enc(Value::from(d.message_id)));
        meta.insert("DeliveryCount".into(), enc(Value::from(d.delivery_count)));
        if let Some(c) = d.correlation_id {
            meta.insert("CorrelationId".into(), enc(Value::from(c)));
        }
        if let Some(c) = d.content_type {
            meta.insert("ContentType".into(), enc(Value::from(c)));
        }
        if let Some(t) = d.enqueued_time {
            meta.insert(
                "EnqueuedTimeUtc".into(),
                enc(Value::from(
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                )),
            );
        }
        if let Some(n) = d.sequence_number {
            meta.insert("SequenceNumber".into(), enc(Value::from(n)));
        }
        meta.insert(
            "ApplicationProperties".into(),
            Value::Object(d.application_properties.clone()),
        );
        meta.insert(
            "UserProperties".into(),
            Value::Object(d.application_properties.clone()),
        );
        let mut data = Map::new();
        data.insert(binding.to_string(), data_value);
        serde_json::json!({ "Data": data, "Metadata": meta })
    }

    /// `{"Data": {binding: TimerInfo}, "Metadata": {}}` as the host sends for a timer trigger.
    pub fn timer_request(binding: &str, is_past_due: bool, last: Option<DateTime<Utc>>) -> Value {
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let mut data = Map::new();
        data.insert(
            binding.to_string(),
            serde_json::json!({
                "Schedule": { "AdjustForDST": true },
                "ScheduleStatus": last.map(|l| serde_json::json!({
                    "Last": fmt(l),
                    "Next": fmt(l),
                    "LastUpdated": fmt(l),
                })),
                "IsPastDue": is_past_due,
            }),
        );
        serde_json::json!({ "Data": data, "Metadata": {} })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SB: TriggerSpec = TriggerSpec::ServiceBus {
        queue: "backup-vm",
        binding: "message",
    };
    const TIMER: TriggerSpec = TriggerSpec::Timer {
        schedule: "0 */30 * * * *",
        binding: "timer",
    };

    fn parse(spec: &TriggerSpec, v: Value) -> Result<TriggerInput, ProtocolError> {
        parse_invocation(spec, v.to_string().as_bytes())
    }

    fn sb(v: Value) -> ServiceBusMessage {
        match parse(&SB, v).expect("valid") {
            TriggerInput::ServiceBus(m) => m,
            other => panic!("expected service bus, got {other:?}"),
        }
    }

    #[test]
    fn service_bus_payload_as_the_host_encodes_it() {
        // Metadata values as JsonConvert.SerializeObject leaves them: strings inside strings.
        let m = sb(json!({
            "Data": { "message": "\"{\\\"vmId\\\":\\\"x\\\"}\"" },
            "Metadata": {
                "MessageId": "\"m-1\"",
                "DeliveryCount": "2",
                "CorrelationId": "\"c-1\"",
                "ContentType": "\"application/json\"",
                "EnqueuedTimeUtc": "\"2024-05-01T10:00:00.1234567Z\"",
                "ExpiresAtUtc": "\"9999-12-31T23:59:59.9999999Z\"",
                "SequenceNumber": "42",
                "LockToken": "\"00000000-0000-0000-0000-000000000000\"",
                "ApplicationProperties": { "traceparent": "00-abc-def-01" },
                "UserProperties": { "traceparent": "00-abc-def-01" },
                "sys": { "MethodName": "BackupVm", "UtcNow": "2024-05-01T10:00:01Z", "RandGuid": "r" }
            }
        }));
        assert_eq!(m.body, br#"{"vmId":"x"}"#);
        assert_eq!(m.message_id, "m-1");
        assert_eq!(m.delivery_count, 2);
        assert_eq!(m.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.sequence_number, Some(42));
        assert_eq!(m.queue, "backup-vm");
        assert_eq!(
            m.enqueued_time.map(|t| t.to_rfc3339()),
            Some("2024-05-01T10:00:00.123456700+00:00".to_string())
        );
        assert!(m.expires_at.is_some());
        assert_eq!(m.user_properties["traceparent"], "00-abc-def-01");
    }

    #[test]
    fn service_bus_payload_with_plain_values_and_object_body() {
        let m = sb(json!({
            "Data": { "message": { "vmId": "x" } },
            "Metadata": { "messageId": "m-2", "deliveryCount": 1, "EnqueuedTimeUtc": "2024-05-01T10:00:00" }
        }));
        assert_eq!(m.json::<Value>().expect("json"), json!({"vmId": "x"}));
        assert_eq!(m.message_id, "m-2");
        assert_eq!(m.delivery_count, 1);
        assert!(m.enqueued_time.is_some());
        assert!(m.user_properties.is_empty());
    }

    #[test]
    fn base64_binary_body_is_decoded_when_it_holds_json() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"a":1}"#);
        let m = sb(json!({
            "Data": { "message": b64 },
            "Metadata": { "MessageId": "m", "DeliveryCount": 1 }
        }));
        assert_eq!(m.body, br#"{"a":1}"#);
        // Text that merely happens to be valid base64 but not JSON stays text.
        let m = sb(json!({
            "Data": { "message": "abcd" },
            "Metadata": { "MessageId": "m", "DeliveryCount": 1 }
        }));
        assert_eq!(m.body, b"abcd");
    }

    #[test]
    fn docs_queue_example_shape_parses_as_text_body() {
        // The request-payload example in functions-custom-handlers.md.
        let spec = TriggerSpec::ServiceBus {
            queue: "q",
            binding: "myQueueItem",
        };
        let v = json!({
            "Data": { "myQueueItem": "{ message: \"Message sent\" }" },
            "Metadata": {
                "DequeueCount": 1, "MessageId": "800ae4b3-bdd2-4c08-badd-f08e5a34b865", "DeliveryCount": 1,
                "sys": { "MethodName": "QueueTrigger", "UtcNow": "2019-10-09T17:58:32.2205399Z",
                         "RandGuid": "24ad4c06-24ad-4e5b-8294-3da9714877e9" }
            }
        });
        let TriggerInput::ServiceBus(m) = parse(&spec, v).expect("valid") else {
            panic!("service bus expected")
        };
        assert_eq!(m.body, b"{ message: \"Message sent\" }");
    }

    #[test]
    fn malformed_payloads_name_the_field_and_rule() {
        let cases = [
            (json!([1]), "body"),
            (json!({}), "Data"),
            (json!({"Data": "x"}), "Data"),
            (json!({"Data": {}}), "Data.message"),
            (json!({"Data": {"message": null}}), "Data.message"),
            (
                json!({"Data": {"message": "{}"}, "Metadata": 3}),
                "Metadata",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {}}),
                "Metadata.MessageId",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": "m"}}),
                "Metadata.DeliveryCount",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": "m", "DeliveryCount": "two"}}),
                "Metadata.DeliveryCount",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": "m", "DeliveryCount": 0}}),
                "Metadata.DeliveryCount",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": "m", "DeliveryCount": 1, "EnqueuedTimeUtc": "yesterday"}}),
                "Metadata.EnqueuedTimeUtc",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": "m", "DeliveryCount": 1, "ApplicationProperties": 5}}),
                "Metadata.ApplicationProperties",
            ),
            (
                json!({"Data": {"message": "{}"}, "Metadata": {"MessageId": ["m"], "DeliveryCount": 1}}),
                "Metadata.MessageId",
            ),
        ];
        for (payload, field) in cases {
            let err = parse(&SB, payload.clone()).expect_err(&payload.to_string());
            assert_eq!(err.field, field, "payload {payload}");
            assert!(!err.rule.is_empty());
        }
        let err = parse_invocation(&SB, b"not json").expect_err("not json");
        assert_eq!(err.field, "body");
    }

    #[test]
    fn timer_payload_from_the_docs() {
        let v = json!({
            "Data": { "timer": {
                "Schedule": { "AdjustForDST": true },
                "ScheduleStatus": {
                    "Last": "2016-10-04T10:15:00+00:00",
                    "LastUpdated": "2016-10-04T10:16:00+00:00",
                    "Next": "2016-10-04T10:20:00+00:00"
                },
                "IsPastDue": false
            }},
            "Metadata": { "sys": { "MethodName": "PolicySweep" } }
        });
        let TriggerInput::Timer(t) = parse(&TIMER, v).expect("valid") else {
            panic!("timer expected")
        };
        assert!(!t.is_past_due);
        assert_eq!(t.adjust_for_dst, Some(true));
        assert_eq!(
            t.next.map(|n| n.to_rfc3339()),
            Some("2016-10-04T10:20:00+00:00".into())
        );
    }

    #[test]
    fn timer_tolerates_null_status_and_bad_status_times_but_not_bad_past_due() {
        let v =
            json!({"Data": {"timer": {"Schedule": {}, "ScheduleStatus": null, "IsPastDue": true}}});
        let TriggerInput::Timer(t) = parse(&TIMER, v).expect("valid") else {
            panic!()
        };
        assert!(t.is_past_due && t.last.is_none());
        let v =
            json!({"Data": {"timer": {"ScheduleStatus": {"Last": "garbage"}, "IsPastDue": false}}});
        assert!(parse(&TIMER, v).is_ok());
        let v = json!({"Data": {"timer": {"IsPastDue": 3}}});
        assert_eq!(
            parse(&TIMER, v).expect_err("bad").field,
            "Data.timer.IsPastDue"
        );
        let v = json!({"Data": {"timer": 17}});
        assert_eq!(parse(&TIMER, v).expect_err("bad").field, "Data.timer");
    }

    #[test]
    fn builders_round_trip_through_the_parser() {
        let d = build::Delivery {
            message_id: "id-1",
            delivery_count: 3,
            correlation_id: Some("corr"),
            content_type: Some("application/json"),
            enqueued_time: Some(Utc::now()),
            sequence_number: Some(7),
            application_properties: Map::from_iter([("k".to_string(), json!("v"))]),
        };
        let req = build::service_bus_request("message", br#"{"x":1}"#, &d);
        let m = sb(req);
        assert_eq!((m.message_id.as_str(), m.delivery_count), ("id-1", 3));
        assert_eq!(m.body, br#"{"x":1}"#);
        assert_eq!(m.user_properties["k"], "v");
        let req = build::timer_request("timer", true, Some(Utc::now()));
        let TriggerInput::Timer(t) = parse(&TIMER, req).expect("valid") else {
            panic!()
        };
        assert!(t.is_past_due && t.last.is_some());
    }

    #[test]
    fn response_shape_and_dead_letter_accessor() {
        let r = InvocationResponse::success(vec!["a".into()], Value::Null);
        assert_eq!(
            serde_json::to_value(&r).expect("ser"),
            json!({"Outputs": {}, "Logs": ["a"], "ReturnValue": null})
        );
        let r: InvocationResponse = serde_json::from_value(json!({
            "Outputs": {}, "Logs": null,
            "ReturnValue": {"deadLetter": {"reason": "BadBody", "description": "d"}}
        }))
        .expect("de");
        assert_eq!(
            r.dead_letter(),
            Some(DeadLetter {
                reason: "BadBody".into(),
                description: "d".into()
            })
        );
    }
}
