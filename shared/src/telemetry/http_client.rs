//! The exporters' HTTP client, built on first use instead of at start-up.
//!
//! A `reqwest::blocking::Client` starts its own runtime thread and loads the TLS trust roots
//! when it is built: a few milliseconds a process start would otherwise pay before it can answer
//! `/healthz` (issue 13: start-up with export within 10% of without). [`LazyHttpClient`] builds
//! it the first time an exporter sends — on the exporter's own background thread (the batch span
//! processor's, the periodic metric reader's), never on the async runtime — and shares it between
//! the span and metric exporters (one client, one connection pool, one runtime thread).
//!
//! The first export also lowers the exporter thread's scheduling priority (Linux: nice +10 for
//! that thread only, `setpriority(2)`; Linux's nice value is per thread): encoding and sending
//! telemetry is background work and, on a busy machine, must not take CPU from the handlers it
//! describes. The exporter still runs whenever a core is idle; under sustained saturation the
//! batch queue (2,048 spans) absorbs the delay, and spans beyond it are dropped, never waited for.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A blocking reqwest client built on the first request (see the module docs). Cloning shares it.
#[derive(Debug, Clone)]
pub struct LazyHttpClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    timeout: Duration,
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl LazyHttpClient {
    /// A client whose requests time out after `timeout` (nothing is built yet).
    pub fn new(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                timeout,
                client: OnceLock::new(),
            }),
        }
    }

    /// Whether the client has been built (it is on the first request).
    pub fn is_built(&self) -> bool {
        self.inner.client.get().is_some()
    }

    fn client(&self) -> Result<&reqwest::blocking::Client, HttpError> {
        self.inner
            .client
            .get_or_init(|| {
                reqwest::blocking::Client::builder()
                    .timeout(self.inner.timeout)
                    .build()
                    .map_err(|e| format!("cannot build the telemetry HTTP client: {e}"))
            })
            .as_ref()
            .map_err(|e| HttpError::from(e.clone()))
    }
}

#[async_trait::async_trait]
impl HttpClient for LazyHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        // The exporters call this from their own threads, blocking on the future: building and
        // using the blocking client here never blocks an async runtime worker.
        background_priority();
        self.client()?.send_bytes(request).await
    }
}

/// How much lower than the process the exporter threads run (nice +10: about a tenth of a
/// normal thread's CPU share when both want the same core).
pub const EXPORTER_NICE: i32 = 10;

thread_local! {
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lowers the calling (exporter) thread's priority by [`EXPORTER_NICE`], once per thread.
/// Best effort: where it is not possible nothing changes.
pub(super) fn background_priority() {
    if LOWERED.with(|l| l.replace(true)) {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority/setpriority take plain integers and touch no memory of ours; `who = 0`
    // with PRIO_PROCESS names the calling thread on Linux.
    unsafe {
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, current.saturating_add(EXPORTER_NICE));
    }
}

/// The calling thread's nice value (Linux), for tests.
#[cfg(all(test, target_os = "linux"))]
fn thread_nice() -> i32 {
    // SAFETY: as in `background_priority`.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// The export timeout: `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds, OpenTelemetry SDK
/// environment variables spec) when it is a number, else `default`.
pub fn export_timeout(lookup: impl Fn(&str) -> Option<String>, default: Duration) -> Duration {
    lookup("OTEL_EXPORTER_OTLP_TIMEOUT")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(default, Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn nothing_is_built_until_the_first_request_made_at_low_priority() {
        let main_nice = thread_nice();
        let client = LazyHttpClient::new(Duration::from_secs(1));
        let shared = client.clone();
        assert!(!client.is_built());
        // A port nothing listens on: the request fails, but the client now exists, for both.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let request = Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .body(Bytes::from_static(b"x"))
            .expect("request");
        let (result, nice) = std::thread::spawn(move || {
            let before = thread_nice();
            let r = futures::executor::block_on(client.send_bytes(request)).map(|r| r.status());
            (r, thread_nice() - before)
        })
        .join()
        .expect("exporter thread");
        assert!(result.is_err(), "nothing listens: {result:?}");
        assert!(shared.is_built());
        // +10, or less if the process already runs near the lowest priority (19).
        assert!(
            nice > 0 || thread_nice() == 19,
            "the exporter thread runs at lower priority: {nice}"
        );
        assert_eq!(thread_nice(), main_nice, "only that thread");
    }

    #[test]
    fn timeout_from_the_environment() {
        let d = Duration::from_secs(10);
        assert_eq!(export_timeout(|_| None, d), d);
        assert_eq!(
            export_timeout(|_| Some("2500".into()), d),
            Duration::from_millis(2500)
        );
        assert_eq!(export_timeout(|_| Some("soon".into()), d), d);
    }
}
