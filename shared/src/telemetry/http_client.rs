//! The exporters' HTTP client, built on first use instead of at start-up.
//!
//! A `reqwest::blocking::Client` starts its own runtime thread and loads the TLS trust roots
//! when it is built: a few milliseconds a process start would otherwise pay before it can answer
//! `/healthz` (issue 13: start-up with export within 10% of without). [`LazyHttpClient`] builds
//! it the first time an exporter sends — on the exporter's own background thread (the batch span
//! processor's, the periodic metric reader's), never on the async runtime — and shares it between
//! the span and metric exporters (one client, one connection pool, one runtime thread).

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
        self.client()?.send_bytes(request).await
    }
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
    fn nothing_is_built_until_the_first_request() {
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
        let result = std::thread::spawn(move || {
            futures::executor::block_on(client.send_bytes(request)).map(|r| r.status())
        })
        .join()
        .expect("exporter thread");
        assert!(result.is_err(), "nothing listens: {result:?}");
        assert!(shared.is_built());
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
