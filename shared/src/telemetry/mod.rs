//! Telemetry: structured logs through `tracing`, with redaction of anything secret-looking.
//!
//! `init` installs one subscriber for the whole process:
//! - JSON (one object per line on stderr, what the Functions host and Log Analytics ingest; each
//!   line names the W3C `trace_id` and `span_id` of the innermost span it was written in) or a
//!   human-readable form;
//! - a filter from the option, else `RUST_LOG`, else `info`;
//! - a [`RedactingMakeWriter`] between the formatter and stderr, so every formatted line passes
//!   through [`redact`] — a SAS URL or token that some code (ours or a dependency's) logs by
//!   mistake never reaches the log sink;
//! - [`redact`] / [`redact_owned`] are also what every other text leaving the process passes
//!   through: the custom handler's `Logs` and error responses, dead-letter reasons and records,
//!   and the status messages sent to ticketing systems;
//! - the OpenTelemetry layer (`tracing-opentelemetry`): every span is an OpenTelemetry span with
//!   W3C ids, exported by [`otel`] when an exporter is configured (OTLP, Application Insights)
//!   and kept in-process otherwise, so outbound messages always carry a `traceparent` that
//!   continues the invocation's trace ([`current_traceparent`], [`continue_trace`]);
//! - OpenTelemetry metrics ([`metrics()`]) through the same exporters.
//!
//! `init` returns a [`Telemetry`] guard: call [`Telemetry::shutdown`] before the process exits so
//! buffered spans and metrics are flushed.

use json_ids::JsonWithSpanIds;
use std::io;
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

/// What replaces a secret in log output.
pub const REDACTED: &str = "[REDACTED]";

/// Filter used when neither the option nor `RUST_LOG` says otherwise. The OpenTelemetry SDK's
/// own diagnostics (`opentelemetry*` targets) only from `warn`: export failures still show.
pub const DEFAULT_FILTER: &str = "info,opentelemetry=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (production, Azure Functions).
    #[default]
    Json,
    /// Multi-line, for a developer's terminal.
    Pretty,
}

impl LogFormat {
    /// Human-readable on a terminal, JSON lines otherwise (a pipe, a file, the Functions host);
    /// `setting` (`ADE_BACKUP_LOG_FORMAT`: `json` or `pretty`, any case) overrides the guess.
    pub fn choose(stderr_is_terminal: bool, setting: Option<&str>) -> LogFormat {
        match setting.map(str::trim) {
            Some(s) if s.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(s) if s.eq_ignore_ascii_case("pretty") => LogFormat::Pretty,
            _ if stderr_is_terminal => LogFormat::Pretty,
            _ => LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,ade_backup_shared=debug`. Takes precedence over
    /// `RUST_LOG` because an explicit setting (CLI flag, app setting) is the more deliberate one.
    pub filter: Option<String>,
    /// OTLP/HTTP base URL (e.g. `http://localhost:4318`); overrides `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?} (from {source_name}): {reason}")]
    InvalidFilter {
        filter: String,
        source_name: &'static str,
        reason: String,
    },
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInitialized(String),
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// What [`init`] installed. Dropping it does not flush: call [`shutdown`](Self::shutdown).
#[derive(Debug, Clone)]
pub struct Telemetry {
    providers: OtelProviders,
}

impl Telemetry {
    /// Whether spans and metrics leave the process.
    pub fn exporting(&self) -> bool {
        self.providers.exporting()
    }
    /// Flushes and stops the exporters (blocking; call it outside the async runtime).
    pub fn shutdown(&self) {
        self.providers.shutdown();
    }
}

/// Installs the process-wide subscriber (writing to stderr), the OpenTelemetry providers chosen
/// from `options` and the environment, and the global meter provider [`metrics()`] reads. Call
/// once, at startup, before the async runtime starts.
pub fn init(options: TelemetryOptions) -> Result<Telemetry, TelemetryError> {
    let filter = resolve_filter(&options, std::env::var("RUST_LOG").ok())?;
    let targets =
        ExportTargets::resolve(options.otlp_endpoint.as_deref(), |k| std::env::var(k).ok());
    if targets.any() {
        if let Some(w) = ExportTargets::protocol_warning(|k| std::env::var(k).ok()) {
            eprintln!("warning: {w}");
        }
    }
    // A misconfigured exporter must not cost the process its logs: run without export.
    let providers = OtelProviders::build(&targets).or_else(|e| {
        eprintln!("warning: telemetry is not exported: {e}");
        OtelProviders::build(&ExportTargets::default())
    })?;
    build_subscriber(options.format, filter, io::stderr, providers.tracer())
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialized(e.to_string()))?;
    opentelemetry::global::set_meter_provider(providers.meter_provider.clone());
    opentelemetry::global::set_tracer_provider(providers.tracer_provider.clone());
    Ok(Telemetry { providers })
}

/// The subscriber `init` installs, with any writer and no exporter (spans get W3C ids and stay
/// in-process): for tests, and for hosts that want to install it themselves (e.g. with
/// `tracing::subscriber::with_default`). The writer is wrapped in [`RedactingMakeWriter`] here,
/// so no caller can forget it.
pub fn subscriber_with_writer<W>(
    options: &TelemetryOptions,
    make_writer: W,
) -> Result<impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let tracer = OtelProviders::build(&ExportTargets::default())?.tracer();
    subscriber_with_tracer(options, make_writer, tracer)
}

/// [`subscriber_with_writer`] whose spans go to `tracer`: a test builds its own tracer provider
/// (e.g. with an in-memory exporter) and installs the subscriber for its thread only
/// (`tracing::subscriber::set_default`), with no process-wide state.
pub fn subscriber_with_tracer<W>(
    options: &TelemetryOptions,
    make_writer: W,
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> Result<impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = resolve_filter(options, std::env::var("RUST_LOG").ok())?;
    Ok(build_subscriber(
        options.format,
        filter,
        make_writer,
        tracer,
    ))
}

fn build_subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    make_writer: W,
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let writer = RedactingMakeWriter::new(make_writer);
    // The log filter applies to the log output only: spans are exported whatever the log level
    // (an operator who sets RUST_LOG=warn still gets traces), with their own filter.
    let (json, pretty) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(JsonWithSpanIds::new(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(true),
                    ))
                    .with_writer(writer)
                    .with_filter(filter),
            ),
            None,
        ),
        LogFormat::Pretty => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .pretty()
                    // ANSI styling puts escape codes between a field name and its value, which
                    // would let `client_secret=...` slip past the redaction patterns.
                    .with_ansi(false)
                    .with_writer(writer)
                    .with_filter(filter),
            ),
        ),
    };
    Registry::default()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_location(false)
                // The module path is no use in a trace (the span name and `function` say what
                // ran): one attribute less on every span, built, exported and stored.
                .with_target(false)
                .with_tracked_inactivity(false)
                // Entering a span makes its context the thread's current OpenTelemetry context:
                // what the JSON log lines read their `trace_id` / `span_id` from (`json_ids`).
                .with_context_activation(true)
                .with_filter(span_filter()),
        )
        .with(json)
        .with(pretty)
}

/// What becomes an OpenTelemetry span (or span event): ade-backup's own spans and events at
/// `info` and above. Dependencies' spans (HTTP internals, the exporter's own requests) stay out,
/// so the exporter never traces itself.
fn span_filter() -> Targets {
    Targets::new()
        .with_target("ade_backup_shared", LevelFilter::INFO)
        .with_target("ade_backup_functions", LevelFilter::INFO)
        .with_target("ade_backup", LevelFilter::INFO)
}

fn resolve_filter(
    options: &TelemetryOptions,
    rust_log: Option<String>,
) -> Result<EnvFilter, TelemetryError> {
    let (directive, source_name) = match (&options.filter, rust_log) {
        (Some(f), _) if !f.trim().is_empty() => (f.clone(), "TelemetryOptions::filter"),
        (_, Some(env)) if !env.trim().is_empty() => (env, "RUST_LOG"),
        _ => (DEFAULT_FILTER.to_string(), "default"),
    };
    EnvFilter::try_new(&directive).map_err(|e| TelemetryError::InvalidFilter {
        filter: directive.clone(),
        source_name,
        reason: e.to_string(),
    })
}

/// The span of one function invocation (OpenTelemetry kind `consumer`, named after the
/// function): every event inside it (and inside its child spans) carries `function` and
/// `message_id` in the JSON output (`span` and `spans` keys), and the W3C `trace_id` / `span_id`
/// of the innermost span at the top level. Call [`continue_trace`] on it before it is entered;
/// `vm_id`, `ticket_id`, `correlation_id` and `invocation_id` are recorded by whoever knows them.
pub fn invocation_span(function: &str, message_id: &str, delivery_count: u32) -> tracing::Span {
    tracing::info_span!(
        "invocation",
        otel.name = function,
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        function = function,
        message_id = message_id,
        delivery_count = delivery_count,
        messaging.system = "servicebus",
        messaging.destination.name = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        invocation_id = tracing::field::Empty,
        operation_id = tracing::field::Empty,
        vm_id = tracing::field::Empty,
        ticket_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

mod grpc;
pub mod http_client;
mod json_ids;
mod metrics;
pub mod otel;
mod redact;
mod trace;

pub use metrics::{metrics, Metrics, METER_NAME};
pub use otel::{ExportError, ExportTargets, OtelProviders};
pub use redact::{redact, redact_json, redact_owned, RedactingMakeWriter, RedactingWriter};
pub use trace::{
    continue_trace, current_span_id, current_trace_id, current_traceparent, is_valid_traceparent,
    send_span, DIAGNOSTIC_ID, TRACEPARENT,
};

/// A subscriber with the OpenTelemetry layer and no exporter, for unit tests.
#[cfg(test)]
pub(crate) fn test_subscriber() -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a> {
    let tracer = OtelProviders::build(&ExportTargets::default())
        .expect("no exporter to build")
        .tracer();
    build_subscriber(
        LogFormat::Json,
        EnvFilter::new("info"),
        io::sink as fn() -> io::Sink,
        tracer,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_readable_on_a_terminal_and_json_elsewhere_unless_set() {
        assert_eq!(LogFormat::choose(true, None), LogFormat::Pretty);
        assert_eq!(LogFormat::choose(false, None), LogFormat::Json);
        assert_eq!(LogFormat::choose(true, Some("JSON")), LogFormat::Json);
        assert_eq!(
            LogFormat::choose(false, Some(" pretty ")),
            LogFormat::Pretty
        );
        assert_eq!(LogFormat::choose(false, Some("xml")), LogFormat::Json);
    }

    #[test]
    fn filter_precedence_and_errors() {
        let opts = TelemetryOptions {
            format: LogFormat::Json,
            filter: Some("debug".into()),
            otlp_endpoint: None,
        };
        assert!(resolve_filter(&opts, Some("warn".into())).is_ok());
        let bad = TelemetryOptions {
            format: LogFormat::Json,
            filter: Some("info,[[[".into()),
            otlp_endpoint: None,
        };
        let err = resolve_filter(&bad, None).expect_err("invalid directive");
        assert!(
            err.to_string().contains("TelemetryOptions::filter"),
            "{err}"
        );
        let err = resolve_filter(&TelemetryOptions::default(), Some("=,=[".into()))
            .expect_err("invalid RUST_LOG");
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_name_the_innermost_span() {
        let buffer = Buffer::default();
        let writer = {
            let b = buffer.clone();
            move || b.clone()
        };
        let options = TelemetryOptions {
            filter: Some("info".into()),
            ..TelemetryOptions::default()
        };
        let subscriber = subscriber_with_writer(&options, writer).expect("subscriber");
        let (outer, inner, trace) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let invocation = invocation_span("BackupVm", "m-1", 1);
            let _g = invocation.enter();
            let outer = current_span_id().expect("invocation span id");
            tracing::info!("in the invocation");
            let step = tracing::info_span!("step");
            let _g2 = step.enter();
            tracing::info!("in the step");
            let inner = current_span_id().expect("step span id");
            (outer, inner, current_trace_id().expect("trace id"))
        });
        assert_ne!(outer, inner);
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].get("span_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["span_id"], outer.as_str());
        assert_eq!(lines[1]["trace_id"], trace.as_str());
        assert_eq!(lines[2]["span_id"], inner.as_str(), "the step's own id");
        assert_eq!(lines[2]["trace_id"], trace.as_str());
        // The invocation's fields are still there, in the span list.
        assert_eq!(lines[2]["spans"][0]["message_id"], "m-1");
        assert_eq!(lines[2]["message"], "in the step");
    }
}
