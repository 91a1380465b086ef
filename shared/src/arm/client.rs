//! `ArmClient`: configuration, the single `send` path (token → pacing → HTTP → classify, inside the
//! one retry policy), and the call counters.

use super::error::{parse_error_body, ArmError};
use super::pacing::{BucketKey, Pacer, PacingPolicy, RequestClass};
use super::retry::{self, AttemptError, Repeat, RetryPolicy};
use super::scope::{check_segment, id_segments, SubscriptionId};
use super::telemetry::{call_span, CallTrace};
use crate::credential::{TokenSource, ARM_SCOPE};
use crate::http::{read_bounded, BodyError};
use crate::ids::ResourceId;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

/// Default cap on one ARM / Graph response body. The biggest answers ade-backup reads are list
/// pages (`value` + `nextLink`, ARM pages at most 1,000 items; a VM with its instance view and
/// extensions is a few tens of KiB) and Resource Graph pages (at most 1,000 rows): a few MiB.
/// 32 MiB leaves an order of magnitude of headroom and still bounds what one call can cost.
pub const MAX_ARM_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// Client configuration. `Default` targets public Azure.
#[derive(Debug, Clone)]
pub struct ArmClientOptions {
    pub retry: RetryPolicy,
    pub pacing: PacingPolicy,
    /// Per-attempt timeout (connect + response).
    pub request_timeout: Duration,
    /// Microsoft Graph base (sovereign clouds and tests override it).
    pub graph_endpoint: Url,
    /// Token scope for ARM calls.
    pub arm_scope: String,
    /// Token scope for Graph calls.
    pub graph_scope: String,
    pub user_agent: String,
    /// Poll interval for long-running operations when the service sends no `Retry-After`.
    pub default_poll_interval: Duration,
    /// Where `https://{account}.blob.core.windows.net/...` is served instead (the simulator):
    /// `{blob_endpoint}/{account}/...`. `None` in Azure.
    pub blob_endpoint: Option<Url>,
    /// Where `https://{vault}.vault.azure.net/...` (the Key Vault data plane) is served instead
    /// (`{key_vault_endpoint}/{vault}/...`: the simulator). `None` in Azure.
    pub key_vault_endpoint: Option<Url>,
    /// Largest response body read from ARM or Graph ([`MAX_ARM_RESPONSE_BYTES`] by default): a
    /// larger success is a permanent `ResponseTooLarge` error, a larger error body is not read.
    pub max_response_bytes: usize,
}

impl Default for ArmClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            pacing: PacingPolicy::default(),
            request_timeout: Duration::from_secs(60),
            graph_endpoint: Url::parse("https://graph.microsoft.com")
                .expect("a literal URL parses"),
            arm_scope: ARM_SCOPE.to_string(),
            graph_scope: "https://graph.microsoft.com/.default".to_string(),
            user_agent: format!("ade-backup/{}", env!("CARGO_PKG_VERSION")),
            default_poll_interval: Duration::from_secs(10),
            blob_endpoint: None,
            key_vault_endpoint: None,
            max_response_bytes: MAX_ARM_RESPONSE_BYTES,
        }
    }
}

impl ArmClientOptions {
    /// Points Graph calls at another cloud (or a test server) and derives the token scope from
    /// its origin, e.g. `https://graph.microsoft.us` → `https://graph.microsoft.us/.default`.
    pub fn with_graph_endpoint(mut self, endpoint: Url) -> Self {
        self.graph_scope = format!("{}/.default", endpoint.origin().ascii_serialization());
        self.graph_endpoint = endpoint;
        self
    }
    /// ARM token scope for a sovereign cloud, e.g. `https://management.usgovcloudapi.net/.default`.
    pub fn with_arm_scope(mut self, scope: impl Into<String>) -> Self {
        self.arm_scope = scope.into();
        self
    }
}

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArmStats {
    /// HTTP attempts per operation name (retries included).
    pub calls: BTreeMap<String, u64>,
    /// Responses with status 429.
    pub throttled: u64,
    /// Retries performed (attempts after the first).
    pub retries: u64,
    /// Requests that had to wait for a pacing token.
    pub paced: u64,
    /// Total time spent waiting for pacing tokens, in milliseconds.
    pub paced_wait_ms: u64,
}

impl ArmStats {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// One line for benchmark and sweep summaries:
/// `arm calls=12 (compute.vm.get=10, lro.poll=2) 429s=1 retries=2 paced=3 (450 ms)`.
impl std::fmt::Display for ArmStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "arm calls={}", self.total_calls())?;
        if !self.calls.is_empty() {
            let per: Vec<String> = self.calls.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " ({})", per.join(", "))?;
        }
        write!(
            f,
            " 429s={} retries={} paced={} ({} ms)",
            self.throttled, self.retries, self.paced, self.paced_wait_ms
        )
    }
}

/// Which token a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    Arm,
    Graph,
}

/// One logical request, before retries.
pub(crate) struct Call {
    pub operation: &'static str,
    pub method: Method,
    pub url: Url,
    pub body: Option<Bytes>,
    pub repeat: Repeat,
    pub bucket: BucketKey,
    pub audience: Audience,
    /// Counts against Resource Graph's per-user quota (on top of `bucket`).
    pub graph_quota: bool,
}

impl Call {
    pub fn new(operation: &'static str, method: Method, url: Url, bucket_of: Bucket) -> Self {
        let class = RequestClass::of_method(&method);
        let bucket = match bucket_of {
            Bucket::Subscription(s) => BucketKey::Subscription(s, class),
            Bucket::Tenant => BucketKey::Tenant(class),
            Bucket::ResourceGraph => BucketKey::Tenant(RequestClass::Reads),
        };
        let repeat = if method == Method::POST {
            Repeat::NotIdempotent
        } else {
            Repeat::Idempotent
        };
        Self {
            operation,
            method,
            url,
            body: None,
            repeat,
            bucket,
            audience: Audience::Arm,
            graph_quota: matches!(bucket_of, Bucket::ResourceGraph),
        }
    }
    pub fn json<T: serde::Serialize>(mut self, body: &T) -> Result<Self, ArmError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ArmError::invalid("body", format!("cannot serialize: {e}")))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }
    /// Marks a POST as safe to repeat (query, refresh).
    pub fn safe_to_repeat(mut self) -> Self {
        self.repeat = Repeat::Idempotent;
        self
    }
    pub fn graph(mut self) -> Self {
        self.audience = Audience::Graph;
        self
    }
}

/// Which bucket family a call draws from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bucket {
    Subscription(SubscriptionId),
    Tenant,
    /// Resource Graph queries: tenant-level POSTs that only read, under the per-user quota.
    ResourceGraph,
}

/// A successful (2xx) response.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn json<T: DeserializeOwned>(&self, operation: &str) -> Result<T, ArmError> {
        serde_json::from_slice(&self.body).map_err(|e| ArmError::decode(operation, e))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Azure Resource Manager (and Microsoft Graph) client.
#[derive(Clone)]
pub struct ArmClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub endpoint: Url,
    pub http: reqwest::Client,
    pub credential: Arc<dyn TokenSource>,
    pub options: ArmClientOptions,
    pub pacer: Pacer,
    pub stats: Mutex<ArmStats>,
}

impl std::fmt::Debug for ArmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmClient")
            .field("endpoint", &self.inner.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl ArmClient {
    /// `endpoint`: `https://management.azure.com` in public Azure, the simulator's or a mock's base
    /// URL otherwise (a path prefix is kept).
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenSource>,
        options: ArmClientOptions,
    ) -> Result<Self, ArmError> {
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.cannot_be_a_base() {
            return Err(ArmError::invalid("endpoint", "must be an http(s) base URL"));
        }
        let http = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(15)))
            .build()
            .map_err(|e| ArmError::invalid("options", format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                http,
                credential,
                pacer: Pacer::new(options.pacing.clone()),
                options,
                stats: Mutex::new(ArmStats::default()),
            }),
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.inner.endpoint
    }

    pub fn options(&self) -> &ArmClientOptions {
        &self.inner.options
    }

    /// Counters since the client was built (shared by clones).
    pub fn stats(&self) -> ArmStats {
        self.lock_stats().clone()
    }

    /// The pacer (tests and diagnostics read bucket levels from it).
    pub fn pacer(&self) -> &Pacer {
        &self.inner.pacer
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, ArmStats> {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The only way a request leaves the client: every attempt takes a token, waits for pacing,
    /// is counted, and failures are classified and retried by the one policy.
    /// Each call is one client span (`arm::telemetry`); each attempt is counted in the metrics.
    pub(crate) async fn send(&self, call: &Call) -> Result<RawResponse, ArmError> {
        use tracing::Instrument;
        let policy = self.inner.options.retry.clone();
        let span = call_span(call);
        let trace = CallTrace::default();
        let result = retry::run(
            &policy,
            call.repeat,
            || self.attempt(call, &trace),
            |e, delay| {
                self.lock_stats().retries += 1;
                trace.retrying(e, delay);
                tracing::debug!(
                    operation = call.operation,
                    error = %e,
                    delay_ms = delay.as_millis() as u64,
                    "retrying ARM request"
                );
            },
        )
        .instrument(span.clone())
        .await;
        trace.finish(&span, &result);
        result
    }

    async fn attempt(&self, call: &Call, trace: &CallTrace) -> Result<RawResponse, AttemptError> {
        let no_retry = |error: ArmError| AttemptError {
            error,
            retry_after: None,
        };
        let scope = match call.audience {
            Audience::Arm => &self.inner.options.arm_scope,
            Audience::Graph => &self.inner.options.graph_scope,
        };
        // Pace first: a long pacing wait should not age the token we are about to send.
        let mut waited = self.inner.pacer.acquire(call.bucket).await;
        if call.graph_quota {
            waited += self.inner.pacer.acquire_graph_quota().await;
        }
        trace.paced(call, waited);
        let token = self
            .inner
            .credential
            .token(scope)
            .await
            .map_err(|e| no_retry(ArmError::Auth(e)))?;
        {
            let mut s = self.lock_stats();
            *s.calls.entry(call.operation.to_string()).or_default() += 1;
            if !waited.is_zero() {
                s.paced += 1;
                s.paced_wait_ms += waited.as_millis() as u64;
            }
        }
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = &call.body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        } else if call.method == Method::POST || call.method == Method::PUT {
            req = req.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                trace.answered(call, 0, None);
                return Err(no_retry(self.transport_error(call, e)));
            }
        };
        trace.answered(call, resp.status().as_u16(), Some(resp.headers()));
        self.answer(call, resp).await
    }

    /// An answer to one attempt: its body (read with the cap) on success, else the classified
    /// failure with the `Retry-After` Azure asked for.
    async fn answer(
        &self,
        call: &Call,
        resp: reqwest::Response,
    ) -> Result<RawResponse, AttemptError> {
        let no_retry = |error: ArmError| AttemptError {
            error,
            retry_after: None,
        };
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.observe_ratelimit(call, &headers);
        let body = match read_bounded(resp, self.inner.options.max_response_bytes).await {
            Ok(b) => Ok(b),
            Err(BodyError::Read(e)) => return Err(no_retry(self.transport_error(call, e))),
            Err(too_large) => Err(too_large.to_string()),
        };
        if (200..300).contains(&status) {
            return match body {
                Ok(body) => Ok(RawResponse {
                    status,
                    headers,
                    body,
                }),
                Err(why) => Err(no_retry(ArmError::Permanent {
                    operation: call.operation.to_string(),
                    status,
                    code: Some(RESPONSE_TOO_LARGE.into()),
                    message: why,
                })),
            };
        }
        if status == 429 {
            self.lock_stats().throttled += 1;
            // ARM's bucket is empty: make our other in-flight callers of the same bucket wait too.
            self.inner.pacer.observe_remaining(call.bucket, 0);
        }
        let retry_after = retry_after(&headers);
        // An error body over the cap is left unread; the status still classifies the failure.
        let error = match body {
            Ok(body) => classify(call.operation, status, retry_after, &body),
            Err(why) => classify_parts(
                call.operation,
                status,
                retry_after,
                None,
                format!("HTTP {status} ({why})"),
            ),
        };
        tracing::debug!(operation = call.operation, status, code = ?error.code(), "ARM request failed");
        Err(AttemptError { error, retry_after })
    }

    fn transport_error(&self, call: &Call, e: reqwest::Error) -> ArmError {
        if e.is_timeout() {
            ArmError::Timeout {
                operation: call.operation.to_string(),
                after: self.inner.options.request_timeout,
            }
        } else {
            // reqwest's Display names the URL; ours carry no secrets (tokens travel in headers)
            // but drop it anyway so a future SAS-bearing URL cannot leak.
            ArmError::Transient {
                operation: call.operation.to_string(),
                status: None,
                code: None,
                message: format!("connection failed: {}", e.without_url()),
            }
        }
    }

    fn observe_ratelimit(&self, call: &Call, headers: &HeaderMap) {
        let class = match call.bucket {
            BucketKey::Subscription(_, c) | BucketKey::Tenant(c) => c,
        };
        let name = match call.bucket {
            BucketKey::Subscription(..) => class.remaining_header().to_string(),
            BucketKey::Tenant(c) => format!(
                "x-ms-ratelimit-remaining-tenant-{}",
                match c {
                    RequestClass::Reads => "reads",
                    RequestClass::Writes => "writes",
                    RequestClass::Deletes => "deletes",
                }
            ),
        };
        let read = |h: &str| {
            headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        // Resource Graph reports its own per-user quota instead of the ARM bucket headers.
        let remaining = read(name.as_str()).or_else(|| match call.bucket {
            BucketKey::Tenant(_) => read("x-ms-user-quota-remaining"),
            BucketKey::Subscription(..) => None,
        });
        if let Some(n) = remaining {
            self.inner.pacer.observe_remaining(call.bucket, n);
        }
        if call.graph_quota {
            let quota = read("x-ms-user-quota-remaining");
            let resets = headers
                .get("x-ms-user-quota-resets-after")
                .and_then(|v| v.to_str().ok())
                .and_then(super::user_quota::parse_resets_after);
            if let (Some(n), Some(after)) = (quota, resets) {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                self.inner.pacer.observe_graph_quota(n, after);
            }
        }
    }

    /// Sends and decodes a JSON body.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ArmError> {
        self.send(call).await?.json(call.operation)
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        url: Url,
        bucket: Bucket,
    ) -> Result<T, ArmError> {
        self.send_json(&Call::new(operation, Method::GET, url, bucket))
            .await
    }

    /// PUTs `body` and decodes the answer. Every PUT we send names the resource it writes, so a
    /// repeat converges on the same state and the retry policy may repeat it.
    pub(crate) async fn put_json<T: DeserializeOwned, B: Serialize>(
        &self,
        operation: &'static str,
        url: Url,
        bucket: Bucket,
        body: &B,
    ) -> Result<T, ArmError> {
        self.send_json(&Call::new(operation, Method::PUT, url, bucket).json(body)?)
            .await
    }

    pub(crate) fn arm_url<'a>(
        &self,
        segments: impl IntoIterator<Item = &'a str>,
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ArmError> {
        super::scope::build_url(&self.inner.endpoint, segments, Some(api_version), query)
    }

    /// `id`'s URL with `tail` appended. Tail segments get the same check as any name segment, so
    /// no operation can put `/`, `..` or a query into a path, whatever it appends.
    pub(crate) fn id_url(
        &self,
        id: &ResourceId,
        tail: &[&str],
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ArmError> {
        self.checked_url(id_segments(id), tail, api_version, query)
    }

    /// `/subscriptions/{s}/{tail}`, for what is addressed above any resource id (vault lists,
    /// role definitions, resource group deployments).
    pub(crate) fn subscription_url(
        &self,
        subscription: SubscriptionId,
        tail: &[&str],
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ArmError> {
        let head = vec!["subscriptions".to_string(), subscription.to_string()];
        self.checked_url(head, tail, api_version, query)
    }

    fn checked_url(
        &self,
        mut segments: Vec<String>,
        tail: &[&str],
        api_version: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ArmError> {
        for t in tail {
            check_segment("path", t)?;
            segments.push((*t).to_string());
        }
        self.arm_url(segments.iter().map(String::as_str), api_version, query)
    }
}

/// The subscription bucket `id` draws from: ARM counts a resource's requests against the
/// subscription it lives in.
pub(crate) fn sub_bucket(id: &ResourceId) -> Result<Bucket, ArmError> {
    Ok(Bucket::Subscription(SubscriptionId::of(id)?))
}

/// `Retry-After` in seconds (ARM never sends the HTTP-date form; a date is ignored).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Error code of a success whose body is over [`ArmClientOptions::max_response_bytes`].
pub const RESPONSE_TOO_LARGE: &str = "ResponseTooLarge";

pub(crate) fn classify(
    operation: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> ArmError {
    let (code, message) = parse_error_body(body);
    let message = message.unwrap_or_else(|| format!("HTTP {status}"));
    classify_parts(operation, status, retry_after, code, message)
}

/// [`classify`] with the error body already parsed (or left unread).
fn classify_parts(
    operation: &str,
    status: u16,
    retry_after: Option<Duration>,
    code: Option<String>,
    message: String,
) -> ArmError {
    let operation = operation.to_string();
    // Checked first: Azure's anti-abuse limits are not transient whatever status carries them
    // (a 429 would otherwise be retried in a loop, burning the quota).
    if let Some(c) = code
        .as_deref()
        .filter(|c| super::error::is_service_limit_code(c))
    {
        return ArmError::ServiceLimit {
            operation,
            status,
            code: c.to_string(),
            message,
        };
    }
    match status {
        404 => ArmError::NotFound {
            operation,
            code,
            message,
        },
        429 => ArmError::Throttled {
            operation,
            retry_after,
        },
        408 | 500 | 502 | 503 | 504 => ArmError::Transient {
            operation,
            status: Some(status),
            code,
            message,
        },
        _ => ArmError::Permanent {
            operation,
            status,
            code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_endpoint_sets_scope() {
        let o = ArmClientOptions::default()
            .with_graph_endpoint(Url::parse("https://graph.microsoft.us/").expect("url"));
        assert_eq!(o.graph_scope, "https://graph.microsoft.us/.default");
        assert_eq!(ArmClientOptions::default().arm_scope, ARM_SCOPE);
    }

    #[test]
    fn stats_print_on_one_line() {
        let mut s = ArmStats::default();
        s.calls.insert("compute.vm.get".into(), 2);
        s.calls.insert("lro.poll".into(), 1);
        s.throttled = 1;
        assert_eq!(
            s.to_string(),
            "arm calls=3 (compute.vm.get=2, lro.poll=1) 429s=1 retries=0 paced=0 (0 ms)"
        );
    }

    #[test]
    fn classifies_statuses() {
        let body = br#"{"error":{"code":"ResourceNotFound","message":"x"}}"#;
        assert!(
            matches!(classify("op", 404, None, body), ArmError::NotFound { code: Some(c), .. } if c == "ResourceNotFound")
        );
        assert!(classify("op", 503, None, b"").is_transient());
        assert!(!classify("op", 400, None, b"").is_transient());
        let limit = br#"{"error":{"code":"CloudDosTimeboudLimitReached","message":"Please retry the operation tomorrow."}}"#;
        for status in [400, 429, 409] {
            let e = classify("op", status, Some(Duration::from_secs(1)), limit);
            assert!(e.is_service_limit() && !e.is_transient(), "{status}: {e:?}");
            assert!(!crate::arm::retry::is_retryable(
                &e,
                crate::arm::retry::Repeat::Idempotent
            ));
        }
        assert!(matches!(
            classify("op", 429, Some(Duration::from_secs(3)), b""),
            ArmError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
    }
}
