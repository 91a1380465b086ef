//! The OpenTelemetry SDK behind `tracing`: which exporters run, chosen from the environment.
//!
//! - OTLP over HTTP/protobuf when an endpoint is configured: the `--otlp-endpoint` option, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`. The exporter
//!   itself honours `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION` and the per-signal forms.
//! - Application Insights when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set
//!   (`opentelemetry-application-insights`, the connection string's ingestion endpoint).
//! - Neither: no exporter, nothing leaves the process; spans still get W3C ids so outbound
//!   messages carry a `traceparent`. `OTEL_SDK_DISABLED=true` also turns every exporter off.
//!
//! The resource honours `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (service name
//! `ade-backup` otherwise); the sampler `OTEL_TRACES_SAMPLER` / `_ARG` (parent-based always-on by
//! default). The exporters share one HTTP client, built on the first export on an exporter
//! thread ([`super::http_client`]), so start-up does not pay for it. Spans go through batch processors and metrics through a periodic reader: both export
//! on their own background thread, so a handler never waits for (or fails because of) export.
//! [`OtelProviders::shutdown`] flushes both.

use super::http_client::{export_timeout, LazyHttpClient};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// Default `service.name`.
pub const SERVICE_NAME: &str = "ade-backup";
/// Instrumentation scope of the spans.
pub const TRACER_NAME: &str = "ade-backup";

/// Where telemetry goes, resolved from options and environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportTargets {
    /// OTLP/HTTP base URL (`/v1/traces` and `/v1/metrics` are appended), if given explicitly.
    pub otlp_endpoint: Option<String>,
    /// True when the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables name an endpoint.
    pub otlp_from_env: bool,
    pub app_insights: Option<String>,
}

impl ExportTargets {
    /// Reads the environment through `lookup`; `explicit` (a command-line option) wins.
    pub fn resolve(explicit: Option<&str>, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Self::default();
        }
        let otlp_endpoint = explicit
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_end_matches('/').to_string());
        let otlp_from_env = otlp_endpoint.is_none()
            && [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            ]
            .iter()
            .any(|k| set(k).is_some());
        Self {
            otlp_endpoint,
            otlp_from_env,
            app_insights: set("APPLICATIONINSIGHTS_CONNECTION_STRING"),
        }
    }

    /// A warning for an `OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}PROTOCOL` this build does not
    /// speak: OTLP leaves over HTTP/protobuf only (gRPC would add tonic and its stack to every
    /// build: README "Observability"), so a collector's gRPC port (4317) will not answer.
    pub fn protocol_warning(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
        [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ]
        .iter()
        .find_map(|k| {
            let v = lookup(k)?;
            let v = v.trim();
            (!v.is_empty() && !v.eq_ignore_ascii_case("http/protobuf")).then(|| {
                format!(
                    "{k}={v:?} is not supported by this build: OTLP is exported over \
                     http/protobuf (point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP \
                     port, 4318 by default)"
                )
            })
        })
    }

    pub fn any(&self) -> bool {
        self.otlp_endpoint.is_some() || self.otlp_from_env || self.app_insights.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot build the OTLP {signal} exporter: {reason}")]
    Otlp {
        signal: &'static str,
        reason: String,
    },
    #[error("APPLICATIONINSIGHTS_CONNECTION_STRING is not usable: {0}")]
    AppInsights(String),
}

/// The installed providers; keep them for the life of the process and call
/// [`shutdown`](Self::shutdown) before exiting.
#[derive(Debug, Clone)]
pub struct OtelProviders {
    pub tracer_provider: SdkTracerProvider,
    pub meter_provider: SdkMeterProvider,
    exporting: bool,
}

impl OtelProviders {
    /// Providers for `targets` (no exporter at all when `targets` names none).
    pub fn build(targets: &ExportTargets) -> Result<Self, ExportError> {
        let resource = resource();
        let mut traces = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut metrics = SdkMeterProvider::builder().with_resource(resource);
        // One HTTP client for every exporter, built on the first export (not at start-up).
        let client = LazyHttpClient::new(export_timeout(|k| std::env::var(k).ok(), EXPORT_TIMEOUT));
        if targets.otlp_endpoint.is_some() || targets.otlp_from_env {
            let base = targets.otlp_endpoint.as_deref();
            traces = traces.with_batch_exporter(otlp_spans(base, &client)?);
            metrics = metrics.with_periodic_exporter(otlp_metrics(base, &client)?);
        }
        if let Some(conn) = &targets.app_insights {
            traces = traces.with_batch_exporter(app_insights(conn, &client)?);
            metrics = metrics.with_periodic_exporter(app_insights(conn, &client)?);
        }
        Ok(Self {
            tracer_provider: traces.build(),
            meter_provider: metrics.build(),
            exporting: targets.any(),
        })
    }

    /// Whether any exporter runs.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    pub fn tracer(&self) -> SdkTracer {
        self.tracer_provider.tracer(TRACER_NAME)
    }

    /// Flushes what is buffered and stops the exporters. Blocks up to the exporters' timeouts;
    /// call it outside the async runtime (or from a blocking context).
    pub fn shutdown(&self) {
        if let Err(e) = self.tracer_provider.shutdown() {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
        if let Err(e) = self.meter_provider.shutdown() {
            eprintln!("telemetry: flushing metrics failed: {e}");
        }
    }
}

fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder.with_service_name(SERVICE_NAME).build()
    }
}

/// Export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` does not say otherwise.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

fn otlp_spans(
    base: Option<&str>,
    client: &LazyHttpClient,
) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let mut b = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(base) = base {
        b = b
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT);
    }
    b.build().map_err(|e| ExportError::Otlp {
        signal: "traces",
        reason: e.to_string(),
    })
}

fn otlp_metrics(
    base: Option<&str>,
    client: &LazyHttpClient,
) -> Result<opentelemetry_otlp::MetricExporter, ExportError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let mut b = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
    if let Some(base) = base {
        b = b
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_timeout(EXPORT_TIMEOUT);
    }
    b.build().map_err(|e| ExportError::Otlp {
        signal: "metrics",
        reason: e.to_string(),
    })
}

type AppInsightsExporter = opentelemetry_application_insights::Exporter<LazyHttpClient>;

fn app_insights(
    connection_string: &str,
    client: &LazyHttpClient,
) -> Result<AppInsightsExporter, ExportError> {
    // The connection string's own text is never echoed: it holds the instrumentation key.
    opentelemetry_application_insights::Exporter::new_from_connection_string(
        connection_string,
        client.clone(),
    )
    .map_err(|e| ExportError::AppInsights(crate::telemetry::redact_owned(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn nothing_configured_exports_nothing() {
        let t = ExportTargets::resolve(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert!(!t.any(), "{t:?}");
    }

    #[test]
    fn explicit_endpoint_wins_and_env_is_honoured() {
        let t = ExportTargets::resolve(
            Some("http://localhost:4318/"),
            env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")]),
        );
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://localhost:4318"));
        assert!(!t.otlp_from_env);
        let t = ExportTargets::resolve(
            None,
            env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            )]),
        );
        assert!(t.otlp_from_env && t.any());
        let t = ExportTargets::resolve(
            None,
            env(&[(
                "APPLICATIONINSIGHTS_CONNECTION_STRING",
                "InstrumentationKey=00000000-0000-0000-0000-000000000000",
            )]),
        );
        assert!(t.app_insights.is_some() && t.any());
    }

    #[test]
    fn only_http_protobuf_is_spoken() {
        assert_eq!(ExportTargets::protocol_warning(env(&[])), None);
        let ok = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert_eq!(ExportTargets::protocol_warning(ok), None);
        let grpc = env(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")]);
        let w = ExportTargets::protocol_warning(grpc).expect("a warning");
        assert!(
            w.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") && w.contains("4318"),
            "{w}"
        );
        let json = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert!(ExportTargets::protocol_warning(json).is_some());
    }

    #[test]
    fn sdk_disabled_turns_everything_off() {
        let t = ExportTargets::resolve(
            Some("http://localhost:4318"),
            env(&[
                ("OTEL_SDK_DISABLED", "TRUE"),
                (
                    "APPLICATIONINSIGHTS_CONNECTION_STRING",
                    "InstrumentationKey=x",
                ),
            ]),
        );
        assert!(!t.any());
    }
}
