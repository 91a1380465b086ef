//! W3C trace context: [`TraceContextLayer`] gives every span a trace id (the invocation's
//! operation id when it has one), so outbound messages can carry a `traceparent` that continues
//! the invocation's trace ([`current_traceparent`]).

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

/// The W3C trace context of a span: stored in the span's extensions by [`TraceContextLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl TraceContext {
    /// A fresh root context (random trace and span ids, never all-zero, which W3C forbids).
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_random(),
            span_id: nonzero_random(),
        }
    }

    /// `00-{trace-id}-{parent-id}-01` (version 00, sampled).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex::encode(self.trace_id),
            hex::encode(self.span_id)
        )
    }

    /// Parses a W3C `traceparent` (version 00 only; all-zero ids are invalid per the spec).
    pub fn parse_traceparent(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || flags.len() != 2 {
            return None;
        }
        hex::decode(flags).ok()?;
        Some(Self {
            trace_id: parse_id::<16>(trace)?,
            span_id: parse_id::<8>(parent)?,
        })
    }
}

/// Lowercase hex only (W3C), exactly `N` bytes, not all zero.
fn parse_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    (out != [0u8; N]).then_some(out)
}

fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        rand::fill(&mut bytes[..]);
        if bytes != [0u8; N] {
            return bytes;
        }
    }
}

/// Gives each new span a [`TraceContext`]: the trace id comes from the span's own `traceparent`
/// field, or its `operation_id` field when that is a 32-hex-digit trace id, else from the
/// parent span, else a new trace starts; the span id is always fresh.
pub struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut visitor = TraceFieldVisitor::default();
        attrs.record(&mut visitor);
        let parent_trace = span
            .parent()
            .and_then(|p| p.extensions().get::<TraceContext>().map(|c| c.trace_id));
        let trace_id = visitor
            .trace_id
            .or(parent_trace)
            .unwrap_or_else(nonzero_random);
        span.extensions_mut().insert(TraceContext {
            trace_id,
            span_id: nonzero_random(),
        });
    }
}

#[derive(Default)]
struct TraceFieldVisitor {
    trace_id: Option<[u8; 16]>,
}

impl TraceFieldVisitor {
    fn consider(&mut self, field: &Field, value: &str) {
        match field.name() {
            "traceparent" => {
                if let Some(ctx) = TraceContext::parse_traceparent(value) {
                    self.trace_id = Some(ctx.trace_id);
                }
            }
            // An explicit `traceparent` wins over an operation id.
            "operation_id" if self.trace_id.is_none() => {
                self.trace_id = parse_id::<16>(&value.trim().to_ascii_lowercase());
            }
            _ => {}
        }
    }
}

impl Visit for TraceFieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.consider(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "traceparent" | "operation_id") {
            let text = format!("{value:?}");
            self.consider(field, text.trim_matches('"'));
        }
    }
}

/// The `traceparent` for work started inside the current span: its trace id and its span id as
/// the parent id. `None` outside any span, or when the installed subscriber is not the one
/// built here (no [`TraceContextLayer`]).
pub fn current_traceparent() -> Option<String> {
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let registry = dispatch.downcast_ref::<Registry>()?;
            let span = registry.span(id)?;
            let found = span
                .scope()
                .find_map(|s| s.extensions().get::<TraceContext>().copied());
            found.map(|c| c.traceparent())
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::super::{build_subscriber, invocation_span, LogFormat};
    use super::*;
    use std::io;
    use tracing_subscriber::EnvFilter;

    #[test]
    fn traceparent_round_trips_and_rejects_invalid() {
        let ctx = TraceContext::new_root();
        let tp = ctx.traceparent();
        assert_eq!(TraceContext::parse_traceparent(&tp), Some(ctx));
        for bad in [
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert_eq!(TraceContext::parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn current_traceparent_follows_the_operation_id() {
        let subscriber = build_subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            io::sink as fn() -> io::Sink,
        );
        tracing::subscriber::with_default(subscriber, || {
            assert_eq!(current_traceparent(), None, "no span, no context");
            let op = "4bf92f3577b34da6a3ce929d0e0e4736";
            let outer = invocation_span("protect", op, "corr-1");
            let _g = outer.enter();
            let tp_outer = current_traceparent().expect("inside a span");
            assert!(tp_outer.starts_with(&format!("00-{op}-")), "{tp_outer}");
            let inner = tracing::info_span!("arm_call");
            let _g2 = inner.enter();
            let tp_inner = current_traceparent().expect("inside a span");
            assert!(tp_inner.starts_with(&format!("00-{op}-")), "{tp_inner}");
            assert_ne!(tp_inner, tp_outer, "child span gets its own parent id");
        });
    }

    #[test]
    fn span_without_trace_id_starts_a_new_trace() {
        let subscriber = build_subscriber(
            LogFormat::Json,
            EnvFilter::new("info"),
            io::sink as fn() -> io::Sink,
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = invocation_span("protect", "not-a-trace-id", "c");
            let _g = span.enter();
            let tp = current_traceparent().expect("inside a span");
            assert!(TraceContext::parse_traceparent(&tp).is_some(), "{tp}");
        });
    }
}
