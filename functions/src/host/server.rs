//! The axum adapter between the Functions host and the dispatch core. Deliberately thin: parse,
//! dispatch, render.
//!
//! | request | response |
//! |---|---|
//! | `GET /healthz` | 200 `{"status": "ok", "functions": [...]}` |
//! | `POST /{FunctionName}`, handler Ok | 200 `{"Outputs": {}, "Logs": [...], "ReturnValue": ...}` |
//! | handler `Transient` error | 500, the error in `Logs`, `ReturnValue: null` → host abandons, Service Bus redelivers |
//! | handler `Poison` | 500, `ReturnValue: {"deadLetter": {"reason", "description"}}` (see [`crate::handlers`]) |
//! | unknown function | 404 naming it |
//! | malformed payload | 400 naming the field and the rule |
//! | body over [`MAX_BODY_BYTES`] | 413 |
//! | handler panic | 500; the server keeps serving |
//!
//! Error responses carry `{"error": {"code", "message", "field"?, "rule"?}}` plus the invocation
//! response keys, so a host that reads `Logs` sees the message too.
//!
//! Nothing secret leaves in a response: [`dispatch_invocation`] redacts the outcome it returns (logs,
//! return value, dead-letter reason and description), and [`error_response`] redacts its texts.
//!
//! The server listens on loopback only: the Functions host is the only intended caller.

use crate::context::Context;
use crate::handlers::{dispatch_invocation, FunctionSpec, Outcome, Registry};
use crate::host::protocol::{
    parse_invocation, InvocationResponse, TriggerInput, INVOCATION_ID_HEADER,
};
use ade_backup_shared::telemetry::redact_owned;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

/// Largest invocation body accepted. Service Bus messages are at most 256 KiB (standard) or
/// 100 MiB (premium, but this app sends small JSON); 2 MiB leaves room for the host's encoding.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    ctx: Context,
}

/// The router, for embedding (`ade-backup local`) and tests.
pub fn router(registry: Registry, ctx: Context) -> Router {
    let state = AppState {
        registry: Arc::new(registry),
        ctx,
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/{function}", post(invoke))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` resolves; in-flight invocations finish first.
pub async fn run(
    listener: TcpListener,
    registry: Registry,
    ctx: Context,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(listener, router(registry, ctx))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Binds `127.0.0.1:port` and serves until SIGTERM or ctrl-c.
pub async fn serve(port: u16, registry: Registry, ctx: Context) -> Result<(), ServeError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!(%addr, functions = ?registry.names(), "custom handler listening");
    run(listener, registry, ctx, shutdown_signal()).await?;
    tracing::info!("custom handler stopped");
    Ok(())
}

/// Resolves on ctrl-c or (on Unix) SIGTERM, which is how the Functions host stops its worker.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown requested; finishing in-flight invocations");
}

#[derive(Debug, Serialize)]
struct ErrorDetail {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: ErrorDetail,
    #[serde(rename = "Outputs")]
    outputs: Map<String, Value>,
    #[serde(rename = "Logs")]
    logs: Vec<String>,
    #[serde(rename = "ReturnValue")]
    return_value: Value,
}

/// An error answer. Its texts can quote the request (a function name, a field's value), so they
/// are redacted like everything else that leaves the process.
fn error_response(status: StatusCode, error: ErrorDetail) -> Response {
    let error = ErrorDetail {
        message: redact_owned(error.message),
        field: error.field.map(redact_owned),
        rule: error.rule.map(redact_owned),
        ..error
    };
    let body = ErrorBody {
        logs: vec![error.message.clone()],
        error,
        outputs: Map::new(),
        return_value: Value::Null,
    };
    (status, Json(body)).into_response()
}

async fn healthz(State(app): State<AppState>) -> Response {
    Json(serde_json::json!({ "status": "ok", "functions": app.registry.names() })).into_response()
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        ErrorDetail {
            code: "NotFound",
            message: "no such route: invocations are POST /{FunctionName}, health is GET /healthz"
                .into(),
            field: None,
            rule: None,
        },
    )
}

async fn invoke(
    State(app): State<AppState>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(spec) = app.registry.get(&function) else {
        return unknown_function(&app.registry, &function);
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return body_rejected(spec, rejection),
    };
    let invocation_id = headers
        .get(INVOCATION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string);

    let input = match parse_invocation(&spec.trigger, &body) {
        Ok(input) => input,
        Err(e) => {
            tracing::warn!(
                function = spec.name,
                operation_id = invocation_id.as_deref().unwrap_or(""),
                field = %e.field,
                rule = %e.rule,
                "malformed invocation payload"
            );
            return error_response(
                StatusCode::BAD_REQUEST,
                ErrorDetail {
                    code: "MalformedPayload",
                    message: format!("{}: {e}", spec.name),
                    field: Some(e.field),
                    rule: Some(e.rule),
                },
            );
        }
    };

    run_invocation(spec, input, &app.ctx, invocation_id.as_deref()).await
}

/// 404 naming the function and the ones that exist.
fn unknown_function(registry: &Registry, function: &str) -> Response {
    tracing::warn!(function = %function, "invocation of an unknown function");
    error_response(
        StatusCode::NOT_FOUND,
        ErrorDetail {
            code: "FunctionNotFound",
            message: format!(
                "no function named {function:?} is registered (known: {})",
                registry.names().join(", ")
            ),
            field: None,
            rule: None,
        },
    )
}

/// 413 when the body is over [`MAX_BODY_BYTES`], else 400.
fn body_rejected(spec: &FunctionSpec, rejection: BytesRejection) -> Response {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        tracing::warn!(function = spec.name, "invocation body too large");
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorDetail {
                code: "PayloadTooLarge",
                message: format!(
                    "the invocation body for {} exceeds the {MAX_BODY_BYTES}-byte limit",
                    spec.name
                ),
                field: Some("body".into()),
                rule: Some(format!("must be at most {MAX_BODY_BYTES} bytes")),
            },
        );
    }
    error_response(
        StatusCode::BAD_REQUEST,
        ErrorDetail {
            code: "MalformedPayload",
            message: format!("could not read the invocation body: {rejection}"),
            field: Some("body".into()),
            rule: Some("must be readable".into()),
        },
    )
}

/// Dispatches a parsed invocation and renders the handler's outcome: 200 with its logs and
/// return value, or 500 (with `deadLetter` when the message is poison).
/// The invocation span, its trace continuation and the outcome's log line are [`dispatch_invocation`]'s.
async fn run_invocation(
    spec: &FunctionSpec,
    input: TriggerInput,
    ctx: &Context,
    invocation_id: Option<&str>,
) -> Response {
    match dispatch_invocation(spec, input, ctx, invocation_id).await {
        Outcome::Completed(out) => {
            let resp = InvocationResponse::success(out.logs, out.return_value);
            (StatusCode::OK, Json(resp)).into_response()
        }
        Outcome::Failed {
            logs, dead_letter, ..
        } => {
            let return_value = match dead_letter {
                Some(d) => serde_json::json!({ "deadLetter": d }),
                None => Value::Null,
            };
            let resp = InvocationResponse {
                outputs: Map::new(),
                logs,
                return_value,
            };
            (StatusCode::INTERNAL_SERVER_ERROR, Json(resp)).into_response()
        }
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    // The panic text stays in the process log; the response only says a handler crashed.
    tracing::error!(panic = %detail, "handler panicked; answering 500 and continuing to serve");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorDetail {
            code: "HandlerPanicked",
            message: "the handler panicked; the message will be redelivered".into(),
            field: None,
            rule: None,
        },
    )
}
