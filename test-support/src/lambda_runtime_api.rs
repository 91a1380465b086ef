//! A local AWS Lambda Runtime API (the HTTP API a custom runtime polls), so tests run the real
//! Lambda binary (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:{port}`) the way Lambda runs it.
//!
//! Endpoints (AWS Lambda Developer Guide, "Using the Lambda runtime API for custom runtimes"):
//! - `GET /2018-06-01/runtime/invocation/next`: blocks until an event is queued; answers the
//!   event JSON with `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`;
//! - `POST /2018-06-01/runtime/invocation/{id}/response`: the handler's result, `202`;
//! - `POST /2018-06-01/runtime/invocation/{id}/error`: a failed invocation, `202`;
//! - `POST /2018-06-01/runtime/init/error`: the runtime failed to start, `202`.
//!
//! [`RuntimeApi::invoke`] queues one event and waits for its result.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

/// The function ARN the server reports to the runtime.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:ade-backup";

/// How one invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InvocationResult {
    /// `/response`: the handler's JSON result.
    Response(Value),
    /// `/error`: the runtime's error document (`errorType`, `errorMessage`).
    Error(Value),
}

#[derive(Default)]
struct Inner {
    pending: Mutex<VecDeque<(String, Value)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<InvocationResult>>>,
    init_errors: Mutex<Vec<Value>>,
    queued: Notify,
}

impl Inner {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The server; stops with its task when dropped.
pub struct RuntimeApi {
    inner: Arc<Inner>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves on a free loopback port.
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API");
        let addr = listener.local_addr().expect("runtime API address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr, task }
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The environment Lambda gives a custom runtime (with this server as its runtime API).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address()),
            ("AWS_LAMBDA_FUNCTION_NAME", "ade-backup".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/ade-backup".into()),
        ]
    }

    /// Queues `event` and waits up to `timeout` for the runtime's answer. Panics on timeout,
    /// naming any init error the runtime reported.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> InvocationResult {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        Inner::lock(&self.inner.waiting).insert(id.clone(), tx);
        Inner::lock(&self.inner.pending).push_back((id.clone(), event));
        self.inner.queued.notify_one();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            _ => panic!(
                "invocation {id} got no answer within {timeout:?}; init errors: {:?}",
                Inner::lock(&self.inner.init_errors)
            ),
        }
    }

    /// The init errors the runtime reported.
    pub fn init_errors(&self) -> Vec<Value> {
        Inner::lock(&self.inner.init_errors).clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn next(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    loop {
        let notified = inner.queued.notified();
        if let Some((id, event)) = Inner::lock(&inner.pending).pop_front() {
            let deadline = chrono::Utc::now().timestamp_millis() + 120_000;
            let mut headers = HeaderMap::new();
            let mut set = |name: &'static str, value: String| {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(name, v);
                }
            };
            set("lambda-runtime-aws-request-id", id);
            set("lambda-runtime-deadline-ms", deadline.to_string());
            set("lambda-runtime-invoked-function-arn", FUNCTION_ARN.into());
            set(
                "lambda-runtime-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into(),
            );
            set("content-type", "application/json".into());
            return (StatusCode::OK, headers, event.to_string());
        }
        notified.await;
    }
}

fn finish(inner: &Inner, id: &str, result: InvocationResult) -> StatusCode {
    match Inner::lock(&inner.waiting).remove(id) {
        Some(tx) => {
            let _ = tx.send(result);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn json_or_text(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    finish(&inner, &id, InvocationResult::Response(json_or_text(&body)))
}

async fn error(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: String,
) -> StatusCode {
    finish(&inner, &id, InvocationResult::Error(json_or_text(&body)))
}

async fn init_error(State(inner): State<Arc<Inner>>, body: String) -> StatusCode {
    Inner::lock(&inner.init_errors).push(json_or_text(&body));
    StatusCode::ACCEPTED
}
