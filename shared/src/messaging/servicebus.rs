//! `ServiceBusSender`: the Service Bus REST "Send Message" operation with an Entra ID token.
//!
//! Wire format (Service Bus REST reference, "Send Message" and "Message headers and
//! properties", learn.microsoft.com/rest/api/servicebus/send-message-to-queue and
//! .../message-headers-and-properties):
//! - `POST {endpoint}/{queue}/messages`, expect `201 Created`;
//! - `Authorization: Bearer <Entra token for https://servicebus.azure.net/.default>`;
//! - `Content-Type` = the message's content type, body = the payload bytes;
//! - `BrokerProperties: {"MessageId":..,"CorrelationId":..,"ScheduledEnqueueTimeUtc":..}` where
//!   the time is RFC 1123 (`Sun, 06 Nov 1994 08:49:37 GMT`, as in the docs' example);
//! - each application ("custom") property in its own header named after the property; string
//!   values are sent in double quotes (the Microsoft `azure-sb` Node.js REST client does
//!   `'"' + value + '"'` for strings, and received messages show them quoted), so we send a
//!   JSON string literal;
//! - documented responses: 400 bad request, 401 authorization failure, 403 quota exceeded or
//!   message too large (with Entra, also a missing `Send` right), 410 entity does not exist,
//!   500 internal error.
//!
//! Entity-name rule from Service Bus's own 400 response: "Entity segments can contain only
//! letters, numbers, periods (.), hyphens (-), and underscores (_)"; names are at most 260
//! characters.
//!
//! Why not `azure_messaging_servicebus` 0.21: its `QueueClient` takes a SAS policy name and key
//! and signs every request with `SharedAccessSignature sr=...&sig=...` (see
//! `service_bus/mod.rs::finalize_request` / `generate_signature`) — there is no way to pass an
//! Entra token, and we run keyless with managed identity. It also hard-codes
//! `https://{namespace}.servicebus.windows.net/{queue}/messages`, so it cannot target the
//! embedded local queue on loopback http, and it sends custom property values unquoted. The
//! send operation is one POST; a thin client keeps the wire format under our tests.
//!
//! No retries here: the caller's at-least-once delivery (the triggering Service Bus message is
//! abandoned and redelivered, or the handler's own retry) resends, and the deterministic
//! `MessageId` lets duplicate detection drop the repeat. Retrying inside the sender as well
//! would multiply attempts and hold the peek-lock longer.

use super::{Broker, MessageSender, MessagingError, OutboundMessage};
use crate::credential::{TokenSource, SERVICE_BUS_SCOPE};
use crate::http::read_bounded;
use crate::telemetry::{current_traceparent, redact};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Header carrying the broker properties as JSON.
pub const BROKER_PROPERTIES_HEADER: &str = "BrokerProperties";
/// The application property that carries the W3C trace context.
pub const TRACEPARENT_PROPERTY: &str = "traceparent";
/// Service Bus limits entity names to 260 characters.
pub const MAX_QUEUE_NAME_LEN: usize = 260;
/// Service Bus limits `MessageId` to 128 characters.
pub const MAX_MESSAGE_ID_LEN: usize = 128;
/// How much of an error response body we keep for the error message.
const MAX_ERROR_BODY_CHARS: usize = 1024;
/// How much of an error response body we read at all: Service Bus error bodies are a few hundred
/// bytes of XML, and only the first [`MAX_ERROR_BODY_CHARS`] characters are kept.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Headers an application property must not overwrite: the ones this sender sets itself, and
/// the ones HTTP or the client manage.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "brokerproperties",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "expect",
    "host",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-ms-retrypolicy",
];

#[derive(Debug, Clone)]
pub struct ServiceBusSenderOptions {
    /// Whole-request timeout (connect + send + response).
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for ServiceBusSenderOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            user_agent: format!("ade-backup/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Errors building a sender (configuration), distinct from per-send `MessagingError`s.
#[derive(Debug, thiserror::Error)]
pub enum ServiceBusConfigError {
    #[error("invalid Service Bus endpoint {endpoint}: {rule}")]
    InvalidEndpoint {
        endpoint: String,
        rule: &'static str,
    },
    #[error("could not build the HTTP client for Service Bus: {0}")]
    HttpClient(String),
}

/// What every Service Bus REST client here holds: the namespace endpoint (validated), the
/// credential and one HTTP client with the request timeout.
pub(super) struct Connection {
    pub(super) endpoint: Url,
    pub(super) credential: Arc<dyn TokenSource>,
    pub(super) client: reqwest::Client,
    pub(super) request_timeout: Duration,
}

impl Connection {
    /// `endpoint` is the namespace URL (`https://{ns}.servicebus.windows.net/`) or the local
    /// queue's loopback URL (`http://127.0.0.1:{port}/`). Plain http is accepted only for
    /// loopback hosts, because every request carries a bearer token.
    pub(super) fn new(
        endpoint: Url,
        credential: Arc<dyn TokenSource>,
        options: &ServiceBusSenderOptions,
    ) -> Result<Self, ServiceBusConfigError> {
        validate_endpoint(&endpoint)?;
        Ok(Self {
            client: http_client(options)?,
            endpoint,
            credential,
            request_timeout: options.request_timeout,
        })
    }

    /// An authorized request without a body (`Content-Length: 0`, which Service Bus expects on
    /// the runtime API's bodyless POST, PUT and DELETE); a transport failure is transient.
    pub(super) async fn send_empty(
        &self,
        method: reqwest::Method,
        url: Url,
    ) -> Result<reqwest::Response, MessagingError> {
        let auth = bearer_header(self.credential.as_ref()).await?;
        self.client
            .request(method, url)
            .header(AUTHORIZATION, auth)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await
            .map_err(|e| transport_error(e, self.request_timeout))
    }

    /// `Debug` for a client: its endpoint only (never the credential).
    pub(super) fn debug(&self, f: &mut std::fmt::Formatter<'_>, name: &str) -> std::fmt::Result {
        f.debug_struct(name)
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

pub struct ServiceBusSender {
    conn: Connection,
}

impl std::fmt::Debug for ServiceBusSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.conn.debug(f, "ServiceBusSender")
    }
}

impl ServiceBusSender {
    /// See [`Connection::new`] for the endpoint rules.
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenSource>,
        options: ServiceBusSenderOptions,
    ) -> Result<Self, ServiceBusConfigError> {
        Ok(Self {
            conn: Connection::new(endpoint, credential, &options)?,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.conn.endpoint
    }

    /// `{endpoint}/{queue}/messages`, built segment by segment after validating the name.
    pub fn messages_url(&self, queue: &str) -> Result<Url, MessagingError> {
        validate_queue_name(queue)?;
        let mut url = self.conn.endpoint.clone();
        {
            let mut segments =
                url.path_segments_mut()
                    .map_err(|()| MessagingError::InvalidQueue {
                        queue: queue.to_string(),
                        rule: "the endpoint URL cannot carry a path",
                    })?;
            segments.pop_if_empty().push(queue).push("messages");
        }
        Ok(url)
    }
}

#[async_trait]
impl MessageSender for ServiceBusSender {
    async fn send(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        use tracing::Instrument;
        // The producer span: the message's `traceparent` names it, so the consumer's invocation
        // span is its child (OpenTelemetry messaging conventions: `send {destination}`).
        let span = crate::telemetry::send_span(&message.queue, &message.message_id);
        let result = self.send_in_span(message).instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

impl ServiceBusSender {
    async fn send_in_span(&self, message: OutboundMessage) -> Result<(), MessagingError> {
        // Everything that can be checked locally is checked before a token is requested or a
        // byte is sent.
        let url = self.messages_url(&message.queue)?;
        let mut headers = message_headers(&message)?;
        if !has_traceparent(&message) {
            let traceparent = current_traceparent().unwrap_or_else(new_root_traceparent);
            headers.insert(
                HeaderName::from_static(TRACEPARENT_PROPERTY),
                property_header_value(TRACEPARENT_PROPERTY, &traceparent)?,
            );
        }

        headers.insert(
            AUTHORIZATION,
            bearer_header(self.conn.credential.as_ref()).await?,
        );

        tracing::debug!(
            queue = %message.queue,
            message_id = %message.message_id,
            scheduled = ?message.scheduled_enqueue_time,
            "sending Service Bus message"
        );
        let response = self
            .conn
            .client
            .post(url)
            .headers(headers)
            .body(message.body)
            .send()
            .await
            .map_err(|e| transport_error(e, self.conn.request_timeout))?;

        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_error_body(response).await;
        Err(classify_failure(status, &body))
    }
}

/// The HTTP client of every Service Bus REST client here: whole-request timeout, our user agent,
/// and no redirects (Service Bus never redirects these operations; following one could hand
/// the bearer token to another origin).
pub(super) fn http_client(
    options: &ServiceBusSenderOptions,
) -> Result<reqwest::Client, ServiceBusConfigError> {
    reqwest::Client::builder()
        .timeout(options.request_timeout)
        .user_agent(options.user_agent.as_str())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ServiceBusConfigError::HttpClient(e.to_string()))
}

/// `Bearer <Entra token for SERVICE_BUS_SCOPE>`, marked sensitive (never printed by `Debug`).
/// A fresh token per request: caching and refreshing are the token source's job.
pub(super) async fn bearer_header(
    credential: &dyn TokenSource,
) -> Result<HeaderValue, MessagingError> {
    let token = credential
        .token(SERVICE_BUS_SCOPE)
        .await
        .map_err(|e| MessagingError::Auth {
            broker: Broker::ServiceBus,
            detail: "no Entra ID token".to_string(),
            source: Some(Box::new(e)),
        })?;
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.secret())).map_err(|_| {
        MessagingError::Auth {
            broker: Broker::ServiceBus,
            detail: "the token source returned a token that is not a valid HTTP header value"
                .to_string(),
            source: None,
        }
    })?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// An error response's body, at most [`MAX_ERROR_BODY_BYTES`] of it. The body only explains the
/// status: one that cannot be read (or is over the cap) is described instead, and the status
/// still classifies the failure.
pub(super) async fn read_error_body(response: reqwest::Response) -> String {
    match read_bounded(response, MAX_ERROR_BODY_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.is_too_large() => format!("({e})"),
        Err(_) => String::new(),
    }
}

/// A request that got no HTTP response (timeout, connection refused or reset): transient.
pub(super) fn transport_error(e: reqwest::Error, request_timeout: Duration) -> MessagingError {
    let what = if e.is_timeout() {
        format!("no response within {request_timeout:?}")
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    // The URL in reqwest's message names only the endpoint and queue; redact anyway in case
    // a proxy or endpoint override carries a query. The kept source has no URL at all.
    MessagingError::Transient {
        broker: Broker::ServiceBus,
        detail: redact(&format!("{what}: {e}")).into_owned(),
        source: Some(Box::new(e.without_url())),
    }
}

/// 401/403 → `Auth`; 429/5xx → `Transient`; any other status → `Rejected`.
pub(super) fn classify_failure(status: StatusCode, body: &str) -> MessagingError {
    let detail = error_detail(body);
    match status.as_u16() {
        401 | 403 => MessagingError::Auth {
            broker: Broker::ServiceBus,
            detail: format!("returned {status}: {detail}"),
            source: None,
        },
        429 | 500..=599 => MessagingError::Transient {
            broker: Broker::ServiceBus,
            detail: format!("returned {status}: {detail}"),
            source: None,
        },
        code => MessagingError::Rejected {
            broker: Broker::ServiceBus,
            status: code,
            body: detail,
            source: None,
        },
    }
}

/// The useful part of a Service Bus error body (`<Error><Code>..</Code><Detail>..</Detail>`),
/// bounded and redacted.
pub(super) fn error_detail(body: &str) -> String {
    let trimmed = body.trim();
    let text = match (trimmed.find("<Detail>"), trimmed.find("</Detail>")) {
        (Some(start), Some(end)) if start + "<Detail>".len() <= end => {
            &trimmed[start + "<Detail>".len()..end]
        }
        _ => trimmed,
    };
    let bounded: String = text.chars().take(MAX_ERROR_BODY_CHARS).collect();
    let bounded = if bounded.is_empty() {
        "(empty response body)".to_string()
    } else {
        bounded
    };
    redact(&bounded).into_owned()
}

pub(super) fn validate_endpoint(endpoint: &Url) -> Result<(), ServiceBusConfigError> {
    let fail = |rule| ServiceBusConfigError::InvalidEndpoint {
        endpoint: endpoint.as_str().to_string(),
        rule,
    };
    if endpoint.cannot_be_a_base() || endpoint.host_str().is_none() {
        return Err(fail("must be an absolute http(s) URL with a host"));
    }
    if !endpoint.username().is_empty() || endpoint.password().is_some() {
        return Err(fail("must not carry credentials"));
    }
    if endpoint.query().is_some() || endpoint.fragment().is_some() {
        return Err(fail("must not have a query or fragment"));
    }
    match endpoint.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(endpoint) => Ok(()),
        "http" => Err(fail(
            "plain http is only allowed for loopback hosts (the embedded local queue); use https",
        )),
        _ => Err(fail("scheme must be https (or http on loopback)")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Service Bus entity-name rules for a single (non-hierarchical) queue name.
pub fn validate_queue_name(queue: &str) -> Result<(), MessagingError> {
    let fail = |rule| MessagingError::InvalidQueue {
        queue: queue.to_string(),
        rule,
    };
    if queue.is_empty() {
        return Err(fail("must not be empty"));
    }
    if queue.len() > MAX_QUEUE_NAME_LEN {
        return Err(fail("must be at most 260 characters"));
    }
    if !queue
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(fail(
            "may contain only letters, digits, periods, hyphens and underscores (no slashes: this sender addresses one queue, never a path)",
        ));
    }
    let first_last_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !first_last_ok(queue.bytes().next()) || !first_last_ok(queue.bytes().last()) {
        return Err(fail("must start and end with a letter or digit"));
    }
    Ok(())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct BrokerProperties<'a> {
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_enqueue_time_utc: Option<String>,
}

/// RFC 1123 date as Service Bus shows it: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn rfc1123(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn encode_err(field: &str, rule: impl std::fmt::Display) -> MessagingError {
    MessagingError::Encode(format!("{field}: {rule}"))
}

fn message_headers(message: &OutboundMessage) -> Result<HeaderMap, MessagingError> {
    let id_len = message.message_id.chars().count();
    if id_len == 0 || id_len > MAX_MESSAGE_ID_LEN {
        return Err(encode_err(
            "message_id",
            format_args!("must be 1 to {MAX_MESSAGE_ID_LEN} characters, got {id_len}"),
        ));
    }
    let broker = BrokerProperties {
        message_id: &message.message_id,
        correlation_id: message.correlation_id.as_deref(),
        scheduled_enqueue_time_utc: message.scheduled_enqueue_time.map(rfc1123),
    };
    let broker_json =
        serde_json::to_string(&broker).map_err(|e| encode_err("BrokerProperties", e))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("brokerproperties"),
        HeaderValue::from_str(&broker_json).map_err(|_| {
            encode_err(
                "message_id/correlation_id",
                "must not contain control characters",
            )
        })?,
    );
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&message.content_type)
            .map_err(|_| encode_err("content_type", "is not a valid HTTP header value"))?,
    );
    for (name, value) in &message.properties {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            encode_err(
                &format!("application property {name:?}"),
                "name must be a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
            )
        })?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(encode_err(
                &format!("application property {name:?}"),
                "name collides with a header the sender or HTTP sets",
            ));
        }
        headers.append(header, property_header_value(name, value)?);
    }
    Ok(headers)
}

/// A string application property as a header value: a JSON string literal, ASCII only, since
/// header bytes outside ASCII are not reliably decoded on the other side.
fn property_header_value(name: &str, value: &str) -> Result<HeaderValue, MessagingError> {
    if !value.is_ascii() {
        return Err(encode_err(
            &format!("application property {name:?}"),
            "value must be ASCII (it travels as an HTTP header)",
        ));
    }
    let quoted = serde_json::to_string(value)
        .map_err(|e| encode_err(&format!("application property {name:?}"), e))?;
    HeaderValue::from_str(&quoted).map_err(|_| {
        encode_err(
            &format!("application property {name:?}"),
            "value is not a valid HTTP header value",
        )
    })
}

/// A fresh root `traceparent` for a message sent with no OpenTelemetry layer installed (random,
/// never all-zero ids, as W3C requires).
fn new_root_traceparent() -> String {
    let trace = rand::random::<u128>().max(1);
    let span = rand::random::<u64>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

fn has_traceparent(message: &OutboundMessage) -> bool {
    message
        .properties
        .keys()
        .any(|k| k.eq_ignore_ascii_case(TRACEPARENT_PROPERTY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rfc1123_matches_the_docs_example() {
        let at = Utc
            .with_ymd_and_hms(1994, 11, 6, 8, 49, 37)
            .single()
            .expect("valid date");
        assert_eq!(rfc1123(at), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn queue_names_follow_entity_rules() {
        for ok in ["q", "fanout", "work-items_v2.prod", &"a".repeat(260)] {
            assert!(validate_queue_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-q",
            "q-",
            ".q",
            "..",
            "a/b",
            "../admin",
            "q?x=1",
            "q#f",
            "q%2F",
            "q b",
            "é",
            "$management",
            &"a".repeat(261),
        ] {
            assert!(
                matches!(
                    validate_queue_name(bad),
                    Err(MessagingError::InvalidQueue { .. })
                ),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn endpoint_rules() {
        let ok = |s: &str| validate_endpoint(&Url::parse(s).expect("url")).is_ok();
        assert!(ok("https://ns.servicebus.windows.net/"));
        assert!(ok("https://ns.servicebus.usgovcloudapi.net"));
        assert!(ok("http://127.0.0.1:7071/"));
        assert!(ok("http://localhost:7071/queue-api/"));
        assert!(ok("http://[::1]:8080/"));
        assert!(!ok("http://ns.servicebus.windows.net/"));
        assert!(!ok("https://user:pw@ns.servicebus.windows.net/"));
        assert!(!ok("https://ns.servicebus.windows.net/?sig=x"));
        assert!(!ok("ftp://127.0.0.1/"));
        assert!(!ok("mailto:a@b"));
    }

    #[test]
    fn messages_url_keeps_a_base_path() {
        let sender = ServiceBusSender::new(
            Url::parse("http://127.0.0.1:9/local/").expect("url"),
            Arc::new(crate::credential::StaticToken(
                crate::credential::AccessToken::new("t"),
            )),
            ServiceBusSenderOptions::default(),
        )
        .expect("sender");
        assert_eq!(
            sender.messages_url("fanout").expect("url").as_str(),
            "http://127.0.0.1:9/local/fanout/messages"
        );
        let sender = ServiceBusSender::new(
            Url::parse("https://ns.servicebus.windows.net").expect("url"),
            Arc::new(crate::credential::StaticToken(
                crate::credential::AccessToken::new("t"),
            )),
            ServiceBusSenderOptions::default(),
        )
        .expect("sender");
        assert_eq!(
            sender.messages_url("q").expect("url").as_str(),
            "https://ns.servicebus.windows.net/q/messages"
        );
    }

    #[test]
    fn error_detail_extracts_and_bounds() {
        assert_eq!(
            error_detail("<Error><Code>400</Code><Detail>Bad thing. TrackingId:1</Detail></Error>"),
            "Bad thing. TrackingId:1"
        );
        assert_eq!(error_detail("  "), "(empty response body)");
        assert_eq!(error_detail(&"x".repeat(5000)).len(), MAX_ERROR_BODY_CHARS);
        assert_eq!(error_detail("echo Bearer abc"), "echo Bearer [REDACTED]");
    }

    #[test]
    fn status_classification() {
        assert!(matches!(
            classify_failure(StatusCode::UNAUTHORIZED, ""),
            MessagingError::Auth { .. }
        ));
        assert!(matches!(
            classify_failure(StatusCode::FORBIDDEN, ""),
            MessagingError::Auth { .. }
        ));
        for s in [400u16, 404, 410, 413, 409] {
            let status = StatusCode::from_u16(s).expect("status");
            assert!(
                matches!(classify_failure(status, "x"), MessagingError::Rejected { status, .. } if status == s),
                "{s}"
            );
        }
        for s in [429u16, 500, 503] {
            let status = StatusCode::from_u16(s).expect("status");
            assert!(
                matches!(
                    classify_failure(status, ""),
                    MessagingError::Transient { .. }
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn reserved_and_invalid_property_names_are_rejected() {
        let base = OutboundMessage::json("q", "id-1", &1).expect("msg");
        for name in [
            "Authorization",
            "content-type",
            "BrokerProperties",
            "bad name",
            "",
        ] {
            let m = base.clone().with_property(name, "v");
            assert!(
                matches!(message_headers(&m), Err(MessagingError::Encode(_))),
                "{name:?}"
            );
        }
        let m = base.clone().with_property("x", "é");
        assert!(matches!(
            message_headers(&m),
            Err(MessagingError::Encode(_))
        ));
        let mut long = base.clone();
        long.message_id = "x".repeat(129);
        assert!(matches!(
            message_headers(&long),
            Err(MessagingError::Encode(_))
        ));
        let mut empty = base;
        empty.message_id.clear();
        assert!(matches!(
            message_headers(&empty),
            Err(MessagingError::Encode(_))
        ));
    }
}
