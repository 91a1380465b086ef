//! The OpenTelemetry SDK behind `tracing`: which exporters run, chosen from the environment.
//!
//! - OTLP when an endpoint is configured: the `--otlp-endpoint` option, else
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`. The exporter
//!   itself honours `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION` and the per-signal forms.
//!   Over HTTP/protobuf by default, over gRPC when `OTEL_EXPORTER_OTLP_PROTOCOL` (or the signal's
//!   own `_PROTOCOL`) says `grpc` ([`super::grpc`]).
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

use super::grpc::GrpcRuntime;
use super::http_client::{export_timeout, LazyHttpClient};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::Arc;
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
    /// speak: OTLP leaves over `http/protobuf` (the default) or `grpc`; anything else (e.g.
    /// `http/json`) is exported as `http/protobuf`, which the warning says.
    pub fn protocol_warning(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
        PROTOCOL_VARS.iter().find_map(|k| {
            let v = lookup(k)?;
            let v = v.trim();
            (!v.is_empty() && OtlpProtocol::parse(v).is_none()).then(|| {
                format!(
                    "{k}={v:?} is not supported by this build: OTLP is exported over \
                     http/protobuf (port 4318 by default) or grpc (4317); using http/protobuf"
                )
            })
        })
    }

    pub fn any(&self) -> bool {
        self.otlp_endpoint.is_some() || self.otlp_from_env || self.app_insights.is_some()
    }
}

const PROTOCOL_VARS: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
];

/// How one OTLP signal leaves the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: `POST {endpoint}/v1/{signal}` (the default).
    #[default]
    HttpProtobuf,
    /// `grpc`: the OTLP collector services over HTTP/2 ([`super::grpc`]).
    Grpc,
}

impl OtlpProtocol {
    /// The specification's protocol names, case-insensitive; `None` for any other value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }

    /// For one signal: its own variable (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, ...), else
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`, else (or when unsupported) `http/protobuf`.
    pub fn resolve(signal_var: &str, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        set(signal_var)
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .and_then(|v| Self::parse(&v))
            .unwrap_or_default()
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
    /// The gRPC exporters' runtime, when a signal is exported over gRPC; kept as long as the
    /// providers are.
    _grpc: Option<Arc<GrpcRuntime>>,
}

impl OtelProviders {
    /// Providers for `targets` (no exporter at all when `targets` names none).
    pub fn build(targets: &ExportTargets) -> Result<Self, ExportError> {
        let resource = resource();
        let mut traces = SdkTracerProvider::builder().with_resource(resource.clone());
        let mut metrics = SdkMeterProvider::builder().with_resource(resource);
        // One HTTP client for every exporter, built on the first export (not at start-up).
        let client = LazyHttpClient::new(export_timeout(|k| std::env::var(k).ok(), EXPORT_TIMEOUT));
        let mut grpc = None;
        if targets.otlp_endpoint.is_some() || targets.otlp_from_env {
            let base = targets.otlp_endpoint.as_deref();
            let lookup = |k: &str| std::env::var(k).ok();
            let span_protocol = OtlpProtocol::resolve("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", lookup);
            let metric_protocol =
                OtlpProtocol::resolve("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", lookup);
            if span_protocol == OtlpProtocol::Grpc || metric_protocol == OtlpProtocol::Grpc {
                grpc = Some(Arc::new(GrpcRuntime::start()?));
            }
            traces = match (span_protocol, &grpc) {
                (OtlpProtocol::Grpc, Some(rt)) => {
                    traces.with_batch_exporter(rt.spans(base, EXPORT_TIMEOUT)?)
                }
                _ => traces.with_batch_exporter(otlp_spans(base, &client)?),
            };
            metrics = match (metric_protocol, &grpc) {
                (OtlpProtocol::Grpc, Some(rt)) => {
                    metrics.with_periodic_exporter(rt.metrics(base, EXPORT_TIMEOUT)?)
                }
                _ => metrics.with_periodic_exporter(otlp_metrics(base, &client)?),
            };
        }
        if let Some(conn) = &targets.app_insights {
            traces = traces.with_batch_exporter(app_insights(conn, &client)?);
            metrics = metrics.with_periodic_exporter(app_insights(conn, &client)?);
        }
        Ok(Self {
            tracer_provider: traces.build(),
            meter_provider: metrics.build(),
            exporting: targets.any(),
            _grpc: grpc,
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
    fn http_protobuf_and_grpc_are_spoken_anything_else_is_warned_about() {
        assert_eq!(ExportTargets::protocol_warning(env(&[])), None);
        let ok = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "GRPC"),
        ]);
        assert_eq!(ExportTargets::protocol_warning(ok), None);
        let json = env(&[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")]);
        let w = ExportTargets::protocol_warning(json).expect("a warning");
        assert!(
            w.contains("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL") && w.contains("http/json"),
            "{w}"
        );
    }

    #[test]
    fn each_signal_takes_its_own_protocol_else_the_general_one() {
        let traces = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
        let metrics = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
        assert_eq!(
            OtlpProtocol::resolve(traces, env(&[])),
            OtlpProtocol::HttpProtobuf
        );
        let general = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert_eq!(OtlpProtocol::resolve(traces, &general), OtlpProtocol::Grpc);
        let mixed = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            (metrics, "http/protobuf"),
        ]);
        assert_eq!(OtlpProtocol::resolve(traces, &mixed), OtlpProtocol::Grpc);
        assert_eq!(
            OtlpProtocol::resolve(metrics, &mixed),
            OtlpProtocol::HttpProtobuf
        );
        // Unsupported: the default, with the warning above.
        let json = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert_eq!(
            OtlpProtocol::resolve(traces, json),
            OtlpProtocol::HttpProtobuf
        );
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
