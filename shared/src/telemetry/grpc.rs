//! OTLP over gRPC (tonic), for collectors that listen on 4317 only
//! (`OTEL_EXPORTER_OTLP_PROTOCOL=grpc`, or the per-signal `_TRACES_` / `_METRICS_` forms).
//!
//! The batch span processor and the periodic metric reader export from their own OS threads,
//! blocking on the exporter's future; a tonic channel needs a Tokio runtime for its connection
//! task. [`GrpcRuntime`] is that runtime: one current-thread runtime on its own low-priority
//! thread (`otel-grpc`, nice +10 like the HTTP exporters' threads), started only when a signal is
//! exported over gRPC, in whose context the channels are built. It stops when the last provider
//! holding it is dropped, after [`super::otel::OtelProviders::shutdown`] has flushed. Nothing of
//! this runs for OTLP/HTTP or Application Insights, so their start-up cost is unchanged.
//!
//! The endpoint is the one OTLP/HTTP would use without its `/v1/...` path: the command-line
//! option, else `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT`,
//! else `http://localhost:4317` (the exporter's own resolution). An `https` endpoint is verified
//! against the system's trust roots.

use super::otel::ExportError;
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// The runtime the gRPC channels live on (see the module docs).
#[derive(Debug)]
pub struct GrpcRuntime {
    handle: tokio::runtime::Handle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GrpcRuntime {
    /// Starts the runtime thread.
    pub fn start() -> Result<Self, ExportError> {
        let failed = |e: std::io::Error| ExportError::Otlp {
            signal: "gRPC",
            reason: format!("cannot start the exporter's runtime: {e}"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("otel-grpc".into())
            .spawn(move || {
                super::http_client::background_priority();
                // Runs the channels' connection tasks until told to stop (or every sender is gone).
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(failed)?;
        Ok(Self {
            handle,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The span exporter, its channel bound to this runtime.
    pub fn spans(
        &self,
        base: Option<&str>,
        timeout: Duration,
    ) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
        let _context = self.handle.enter();
        let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(base) = base {
            b = b.with_endpoint(base).with_timeout(timeout);
        }
        if is_https(base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env) {
            b = b.with_tls_config(ClientTlsConfig::new().with_native_roots());
        }
        b.build().map_err(|e| ExportError::Otlp {
            signal: "traces",
            reason: e.to_string(),
        })
    }

    /// The metric exporter, its channel bound to this runtime.
    pub fn metrics(
        &self,
        base: Option<&str>,
        timeout: Duration,
    ) -> Result<opentelemetry_otlp::MetricExporter, ExportError> {
        let _context = self.handle.enter();
        let mut b = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if let Some(base) = base {
            b = b.with_endpoint(base).with_timeout(timeout);
        }
        if is_https(base, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", env) {
            b = b.with_tls_config(ClientTlsConfig::new().with_native_roots());
        }
        b.build().map_err(|e| ExportError::Otlp {
            signal: "metrics",
            reason: e.to_string(),
        })
    }
}

impl Drop for GrpcRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Whether the endpoint the exporter will use (explicit, else the signal's variable, else the
/// general one) is `https`: only then is TLS configured (tonic refuses TLS on `http`).
fn is_https(
    explicit: Option<&str>,
    signal_var: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> bool {
    let set = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    explicit
        .map(str::to_string)
        .or_else(|| set(signal_var))
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_follows_the_endpoint_the_exporter_uses() {
        let none = |_: &str| None;
        assert!(!is_https(None, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", none));
        assert!(is_https(
            Some("https://collector:4317"),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            none
        ));
        let general = |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "HTTPS://collector:4317".to_string())
        };
        assert!(is_https(
            None,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            general
        ));
        // The signal's own variable wins over the general one.
        let both = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://plain:4317".to_string()),
            _ => Some("https://collector:4317".to_string()),
        };
        assert!(!is_https(None, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", both));
    }

    #[test]
    fn the_runtime_thread_stops_when_dropped() {
        let rt = GrpcRuntime::start().expect("runtime");
        let exporter = rt.spans(Some("http://127.0.0.1:9"), Duration::from_millis(100));
        assert!(exporter.is_ok(), "{exporter:?}");
        drop(exporter);
        drop(rt); // joins the thread: a hang here fails the test by timeout
    }
}
