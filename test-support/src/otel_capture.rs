//! Test-local OpenTelemetry for the in-process harness: [`TraceCapture`] is a tracer provider
//! whose spans are kept in memory (a simple processor: each span as it ends) and the production
//! subscriber (`ade_backup_shared::telemetry::subscriber_with_tracer`, JSON logs into a buffer)
//! on top of it. A test installs it for its own thread only
//! (`let _g = tracing::subscriber::set_default(capture.subscriber())` in a current-thread
//! runtime), so nothing is process-wide and tests running in parallel do not see each other.
//! Spans come back in the same flattened form as the OTLP receiver's ([`ReceivedSpan`]).

use crate::otlp::ReceivedSpan;
use ade_backup_shared::telemetry::{self, LogFormat, TelemetryOptions};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spans and log lines of one test (see the module docs).
pub struct TraceCapture {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    logs: LogBuffer,
    provider: SdkTracerProvider,
}

#[derive(Debug, Clone, Default)]
struct MemoryExporter(Arc<Mutex<Vec<ReceivedSpan>>>);

impl SpanExporter for MemoryExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        lock(&self.0).extend(batch.into_iter().map(flatten));
        Ok(())
    }
}

/// OTLP's `SpanKind` numbers, as the receiver reports them.
fn kind(k: &SpanKind) -> i32 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn flatten(s: SpanData) -> ReceivedSpan {
    let parent = s.parent_span_id;
    ReceivedSpan {
        trace_id: s.span_context.trace_id().to_string(),
        parent_span_id: if parent == opentelemetry::trace::SpanId::INVALID {
            String::new()
        } else {
            parent.to_string()
        },
        span_id: s.span_context.span_id().to_string(),
        name: s.name.into_owned(),
        kind: kind(&s.span_kind),
        status: match s.status {
            opentelemetry::trace::Status::Unset => 0,
            opentelemetry::trace::Status::Ok => 1,
            opentelemetry::trace::Status::Error { .. } => 2,
        },
        service: telemetry::otel::SERVICE_NAME.to_string(),
        attributes: s
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.as_str().into_owned()))
            .collect(),
    }
}

/// Where the subscriber writes its JSON log lines.
#[derive(Debug, Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Default for TraceCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceCapture {
    pub fn new() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(MemoryExporter(spans.clone()))
            .build();
        Self {
            spans,
            logs: LogBuffer::default(),
            provider,
        }
    }

    /// The production subscriber (JSON logs at `info`) exporting to this capture.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        self.subscriber_logging("info")
    }

    /// [`TraceCapture::subscriber`] with the log filter `filter` (an `EnvFilter` directive; the
    /// spans exported do not depend on it).
    pub fn subscriber_logging(
        &self,
        filter: &str,
    ) -> impl tracing::Subscriber + Send + Sync + 'static {
        let options = TelemetryOptions {
            format: LogFormat::Json,
            filter: Some(filter.into()),
            otlp_endpoint: None,
        };
        let logs = self.logs.clone();
        telemetry::subscriber_with_tracer(
            &options,
            move || logs.clone(),
            self.provider.tracer(telemetry::otel::TRACER_NAME),
        )
        .expect("the subscriber builds")
    }

    /// Every span that has ended, in the order they ended.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.spans).clone()
    }

    /// Every log line written so far, parsed.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let bytes = lock(&self.logs.0).clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))
            })
            .collect()
    }
}
