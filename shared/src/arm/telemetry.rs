//! What the single send path reports about each ARM/Graph call: one OpenTelemetry client span per
//! logical call (HTTP semantic conventions: `http.request.method`, `url.template` — the route
//! template, never the raw URL — `server.address`, `http.response.status_code`,
//! `http.request.resend_count`, plus the paced and throttled waits and Azure's
//! `x-ms-request-id` / `x-ms-correlation-request-id`), and the per-attempt metrics (calls, 429s
//! and pacing waits by subscription and request class).

use super::client::{Audience, Call};
use super::error::ArmError;
use super::pacing::{BucketKey, RequestClass};
use crate::telemetry::metrics;
use reqwest::header::HeaderMap;
use std::sync::Mutex;
use std::time::Duration;
use tracing::field::Empty;

/// The route template of an ARM or Graph URL: collection and provider segments are kept, the
/// names after them become placeholders, the query (api-version, filters) is dropped:
/// `/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines/{name}`.
pub(crate) fn route_template(path: &str, audience: Audience) -> String {
    let mut segments = path.split('/').filter(|s| !s.is_empty()).peekable();
    let mut out = String::new();
    if audience == Audience::Graph {
        // `/v1.0/...`: the version is a literal.
        if let Some(v) = segments.next() {
            out.push('/');
            out.push_str(v);
        }
    }
    while let Some(seg) = segments.next() {
        out.push('/');
        out.push_str(seg);
        if seg.eq_ignore_ascii_case("providers") {
            // The resource provider namespace is part of the route.
            if let Some(ns) = segments.next() {
                out.push('/');
                out.push_str(ns);
            }
            continue;
        }
        if segments.next().is_some() {
            out.push_str(match seg.to_ascii_lowercase().as_str() {
                "subscriptions" => "/{subscriptionId}",
                "resourcegroups" => "/{resourceGroupName}",
                _ => "/{name}",
            });
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `(subscription, class)` labels of a call's pacing bucket (`tenant` for tenant-level calls).
pub(crate) fn bucket_labels(bucket: BucketKey) -> (String, &'static str) {
    let class = |c: RequestClass| match c {
        RequestClass::Reads => "reads",
        RequestClass::Writes => "writes",
        RequestClass::Deletes => "deletes",
    };
    match bucket {
        BucketKey::Subscription(s, c) => (s.to_string(), class(c)),
        BucketKey::Tenant(c) => ("tenant".to_string(), class(c)),
    }
}

/// The span of one logical call (all its attempts).
pub(crate) fn call_span(call: &Call) -> tracing::Span {
    let template = route_template(call.url.path(), call.audience);
    let method = call.method.as_str();
    tracing::info_span!(
        "arm",
        otel.name = format!("{method} {template}"),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = method,
        url.template = %template,
        server.address = call.url.host_str().unwrap_or(""),
        azure.operation = call.operation,
        http.response.status_code = Empty,
        http.request.resend_count = Empty,
        ade.arm.paced_wait_ms = Empty,
        ade.arm.throttled_wait_ms = Empty,
        ade.arm.throttled = Empty,
        azure.request_id = Empty,
        azure.correlation_request_id = Empty,
        azure.error_code = Empty,
        error.type = Empty,
    )
}

/// What the attempts of one call add up to; written into the span when the call ends.
#[derive(Debug, Default)]
pub(crate) struct CallTrace {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    retries: u64,
    throttled: u64,
    paced: Duration,
    throttled_wait: Duration,
    status: Option<u16>,
    request_id: Option<String>,
    correlation_id: Option<String>,
}

impl CallTrace {
    fn with(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// An attempt waited `waited` for its pacing token.
    pub fn paced(&self, call: &Call, waited: Duration) {
        let (sub, class) = bucket_labels(call.bucket);
        metrics().arm_paced_wait(&sub, class, waited);
        self.with(|c| c.paced += waited);
    }

    /// An attempt got an HTTP answer (or none: `status` 0).
    pub fn answered(&self, call: &Call, status: u16, headers: Option<&HeaderMap>) {
        let (sub, class) = bucket_labels(call.bucket);
        metrics().arm_call(&sub, class, status);
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        self.with(|c| {
            if status != 0 {
                c.status = Some(status);
            }
            if status == 429 {
                c.throttled += 1;
            }
            c.request_id = header("x-ms-request-id").or(c.request_id.take());
            c.correlation_id = header("x-ms-correlation-request-id").or(c.correlation_id.take());
        });
    }

    /// A retry is scheduled after `delay`.
    pub fn retrying(&self, error: &ArmError, delay: Duration) {
        let throttled = matches!(error, ArmError::Throttled { .. });
        self.with(|c| {
            c.retries += 1;
            if throttled {
                c.throttled_wait += delay;
            }
        });
    }

    /// Writes the totals and the outcome into `span`.
    pub fn finish<T>(&self, span: &tracing::Span, result: &Result<T, ArmError>) {
        self.with(|c| {
            if let Some(s) = c.status {
                span.record("http.response.status_code", i64::from(s));
            }
            span.record("http.request.resend_count", c.retries);
            span.record("ade.arm.paced_wait_ms", c.paced.as_millis() as u64);
            span.record(
                "ade.arm.throttled_wait_ms",
                c.throttled_wait.as_millis() as u64,
            );
            span.record("ade.arm.throttled", c.throttled);
            if let Some(id) = &c.request_id {
                span.record("azure.request_id", id.as_str());
            }
            if let Some(id) = &c.correlation_id {
                span.record("azure.correlation_request_id", id.as_str());
            }
        });
        if let Err(e) = result {
            span.record("otel.status_code", "ERROR");
            let kind = match e.status() {
                Some(s) => s.to_string(),
                None => "transport".to_string(),
            };
            span.record("error.type", kind.as_str());
            if let Some(code) = e.code() {
                span.record("azure.error_code", code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_hide_names_and_queries() {
        assert_eq!(
            route_template(
                "/subscriptions/3f2b/resourceGroups/rg-1/providers/Microsoft.Compute/virtualMachines/vm-1",
                Audience::Arm
            ),
            "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachines/{name}"
        );
        assert_eq!(
            route_template(
                "/Subscriptions/s/resourceGroups/rg/providers/Microsoft.RecoveryServices/vaults/v/backupFabrics/Azure/protectionContainers/c/protectedItems/i/backup",
                Audience::Arm
            ),
            "/Subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/Microsoft.RecoveryServices/vaults/{name}/backupFabrics/{name}/protectionContainers/{name}/protectedItems/{name}/backup"
        );
        assert_eq!(
            route_template(
                "/providers/Microsoft.ResourceGraph/resources",
                Audience::Arm
            ),
            "/providers/Microsoft.ResourceGraph/resources"
        );
        assert_eq!(
            route_template("/v1.0/servicePrincipals", Audience::Graph),
            "/v1.0/servicePrincipals"
        );
        assert_eq!(route_template("/", Audience::Arm), "/");
    }
}
