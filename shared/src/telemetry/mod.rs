//! Telemetry: structured logs through `tracing`, with redaction of anything secret-looking.
//!
//! `init` installs one subscriber for the whole process:
//! - JSON (one object per line on stderr, what the Functions host and Log Analytics ingest) or a
//!   human-readable form;
//! - a filter from the option, else `RUST_LOG`, else `info`;
//! - a [`RedactingMakeWriter`] between the formatter and stderr, so every formatted line passes
//!   through [`redact`] — a SAS URL or token that some code (ours or a dependency's) logs by
//!   mistake never reaches the log sink;
//! - [`redact`] / [`redact_owned`] are also what every other text leaving the process passes
//!   through: the custom handler's `Logs` and error responses, dead-letter reasons and records,
//!   and the status messages sent to ticketing systems;
//! - a small layer that gives every span a W3C trace context, so outbound messages can carry a
//!   `traceparent` that continues the invocation's trace ([`current_traceparent`]).

use std::io;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

/// What replaces a secret in log output.
pub const REDACTED: &str = "[REDACTED]";

/// Filter used when neither the option nor `RUST_LOG` says otherwise.
pub const DEFAULT_FILTER: &str = "info";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line (production, Azure Functions).
    #[default]
    Json,
    /// Multi-line, for a developer's terminal.
    Pretty,
}

#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,ade_backup_shared=debug`. Takes precedence over
    /// `RUST_LOG` because an explicit setting (CLI flag, app setting) is the more deliberate one.
    pub filter: Option<String>,
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
}

/// Installs the process-wide subscriber, writing to stderr. Call once, at startup.
pub fn init(options: TelemetryOptions) -> Result<(), TelemetryError> {
    let filter = resolve_filter(&options, std::env::var("RUST_LOG").ok())?;
    build_subscriber(options.format, filter, io::stderr)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialized(e.to_string()))
}

/// The subscriber `init` installs, with any writer: for tests, and for hosts that want to
/// install it themselves (e.g. with `tracing::subscriber::with_default`). The writer is wrapped
/// in [`RedactingMakeWriter`] here, so no caller can forget it.
pub fn subscriber_with_writer<W>(
    options: &TelemetryOptions,
    make_writer: W,
) -> Result<impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = resolve_filter(options, std::env::var("RUST_LOG").ok())?;
    Ok(build_subscriber(options.format, filter, make_writer))
}

fn build_subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    make_writer: W,
) -> impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let writer = RedactingMakeWriter::new(make_writer);
    let (json, pretty) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(writer),
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
                    .with_writer(writer),
            ),
        ),
    };
    Registry::default()
        .with(filter)
        .with(TraceContextLayer)
        .with(json)
        .with(pretty)
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

/// A span for one function invocation: every event inside it (and inside its child spans)
/// carries `function`, `operation_id` and `correlation_id` in the JSON output (`span` and
/// `spans` keys). If `operation_id` is a 32-hex-digit W3C trace id (what the Functions host and
/// Application Insights use), outbound messages sent inside continue that trace.
pub fn invocation_span(function: &str, operation_id: &str, correlation_id: &str) -> tracing::Span {
    tracing::info_span!(
        "invocation",
        function = function,
        operation_id = operation_id,
        correlation_id = correlation_id
    )
}

mod redact;
mod trace;

pub use redact::{redact, redact_json, redact_owned, RedactingMakeWriter, RedactingWriter};
pub use trace::{current_traceparent, TraceContext, TraceContextLayer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_precedence_and_errors() {
        let opts = TelemetryOptions {
            format: LogFormat::Json,
            filter: Some("debug".into()),
        };
        assert!(resolve_filter(&opts, Some("warn".into())).is_ok());
        let bad = TelemetryOptions {
            format: LogFormat::Json,
            filter: Some("info,[[[".into()),
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
}
