//! W3C trace context across queues, on top of `tracing-opentelemetry`: an invocation span
//! continues the trace a message names ([`continue_trace`]); everything sent inside carries the
//! current context ([`current_traceparent`]); logs and status messages name the trace
//! ([`current_trace_id`]).
//!
//! The `traceparent` format (W3C Trace Context, www.w3.org/TR/trace-context):
//! `00-{32 hex trace id}-{16 hex parent span id}-{2 hex flags}`. Azure SDKs put the same value in
//! the `Diagnostic-Id` application property of a Service Bus message (azure-sdk
//! "Distributed tracing conventions"); a `Diagnostic-Id` in the older hierarchical form
//! (`|abc.1.`) is not a W3C context and is ignored.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The application property (and HTTP header) that carries the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The Azure SDKs' name for the same context on Service Bus and Event Hubs messages.
pub const DIAGNOSTIC_ID: &str = "Diagnostic-Id";
const TRACESTATE: &str = "tracestate";

/// Makes `span` (not yet entered) a child of the context in `traceparent` (or, lacking it,
/// `Diagnostic-Id`), looked up with `property`. Returns the parent's trace id when one was
/// continued; with no valid context the span starts a new trace.
pub fn continue_trace(
    span: &tracing::Span,
    property: impl Fn(&str) -> Option<String>,
) -> Option<TraceId> {
    let parent = property(TRACEPARENT)
        .and_then(|tp| extract(&tp, property(TRACESTATE)))
        .or_else(|| property(DIAGNOSTIC_ID).and_then(|d| extract(&d, None)))?;
    let trace_id = parent.span().span_context().trace_id();
    span.set_parent(parent).ok()?;
    Some(trace_id)
}

/// The producer span of sending one message (OpenTelemetry messaging conventions: kind
/// `producer`, named `send {queue}`). The `traceparent` a message carries is taken inside it
/// ([`current_traceparent`]), so the consumer's invocation span is its child. Every
/// `MessageSender` opens it: the Service Bus client and the tests' in-process queues alike.
pub fn send_span(queue: &str, message_id: &str) -> tracing::Span {
    tracing::info_span!(
        "send",
        otel.name = format!("send {queue}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "servicebus",
        messaging.operation.type = "send",
        messaging.destination.name = queue,
        messaging.message.id = message_id,
    )
}

/// The context a `traceparent` value names, if it is a valid W3C one.
fn extract(traceparent: &str, tracestate: Option<String>) -> Option<opentelemetry::Context> {
    let mut carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.trim().to_string())]);
    if let Some(ts) = tracestate {
        carrier.insert(TRACESTATE.to_string(), ts);
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` for work started inside the current span: its trace id, and its span id as
/// the parent id. `None` outside any span or when no OpenTelemetry layer is installed.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The current trace id (32 lowercase hex digits), for logs, status messages and records.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span id (16 lowercase hex digits).
pub fn current_span_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_string())
}

/// Whether `s` is a W3C `traceparent` (version 00 form; all-zero ids are invalid).
pub fn is_valid_traceparent(s: &str) -> bool {
    extract(s, None).is_some()
}

#[cfg(test)]
mod tests {
    use super::super::{invocation_span, test_subscriber};
    use super::*;

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_validation_follows_w3c() {
        assert!(is_valid_traceparent(TP));
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "|0af7651916cd43dd.1.",
            "",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn an_invocation_continues_the_message_trace_and_children_inherit_it() {
        tracing::subscriber::with_default(test_subscriber(), || {
            assert_eq!(current_traceparent(), None, "no span, no context");
            let span = invocation_span("BackupVm", "m-1", 1);
            let props = HashMap::from([(TRACEPARENT.to_string(), TP.to_string())]);
            let continued = continue_trace(&span, |k| props.get(k).cloned());
            assert_eq!(
                continued.map(|t| t.to_string()).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let _g = span.enter();
            let outer = current_traceparent().expect("inside a span");
            assert!(outer.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
            assert!(
                !outer.contains("b7ad6b7169203331"),
                "a new span id: {outer}"
            );
            let step = tracing::info_span!("step");
            let _g2 = step.enter();
            let inner = current_traceparent().expect("inside a span");
            assert!(inner.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
            assert_ne!(inner, outer, "a child span has its own id");
            assert_eq!(
                current_trace_id().as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
        });
    }

    #[test]
    fn diagnostic_id_is_used_when_there_is_no_traceparent() {
        tracing::subscriber::with_default(test_subscriber(), || {
            let span = invocation_span("BackupVm", "m-1", 1);
            let props = HashMap::from([
                (TRACEPARENT.to_string(), "garbage".to_string()),
                (DIAGNOSTIC_ID.to_string(), TP.to_string()),
            ]);
            assert!(continue_trace(&span, |k| props.get(k).cloned()).is_some());
            let _g = span.enter();
            assert_eq!(
                current_trace_id().as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
        });
    }

    #[test]
    fn without_a_context_a_new_trace_starts() {
        tracing::subscriber::with_default(test_subscriber(), || {
            let span = invocation_span("BackupVm", "m-1", 1);
            assert_eq!(continue_trace(&span, |_| None), None);
            let _g = span.enter();
            let tp = current_traceparent().expect("a fresh trace");
            assert!(is_valid_traceparent(&tp), "{tp}");
        });
    }
}
