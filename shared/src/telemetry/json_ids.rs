//! JSON log lines that name the span they were written in: `tracing-subscriber`'s JSON format,
//! plus top-level `trace_id` and `span_id` — the W3C ids of the innermost span (an ARM call, a
//! workflow step), not only the invocation's (whose ids stay in its `span` / `spans` fields).
//! A log line and the span it belongs to then join on `span_id` in any backend (Application
//! Insights' `operation_ParentId`, a log search next to a trace view).

use opentelemetry::trace::TraceContextExt;
use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format with the current span's ids (see the module docs).
pub struct JsonWithSpanIds<T> {
    inner: Format<Json, T>,
}

impl<T> JsonWithSpanIds<T> {
    pub fn new(inner: Format<Json, T>) -> Self {
        Self { inner }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonWithSpanIds<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    Format<Json, T>: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match current_ids() {
            Some((trace_id, span_id)) => writer.write_str(&with_ids(line, &trace_id, &span_id)),
            None => writer.write_str(&line),
        }
    }
}

/// The W3C ids of the innermost entered span that is an OpenTelemetry span. The OpenTelemetry
/// layer attaches a span's context as the thread's current context when the span is entered
/// (context activation), so this reads a thread-local: no span lookup, and no call back into the
/// dispatcher (which `tracing` refuses while it is dispatching this event).
fn current_ids() -> Option<(String, String)> {
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid()
            .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
    })
}

/// `line` (one JSON object and a newline) with `trace_id` and `span_id` added as its first
/// keys. Both are hex digits, so they need no escaping.
fn with_ids(line: String, trace_id: &str, span_id: &str) -> String {
    let Some(rest) = line.strip_prefix('{') else {
        return line;
    };
    let sep = if rest.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    format!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"{sep}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_the_first_keys() {
        let line = with_ids("{\"level\":\"INFO\"}\n".into(), "ab", "cd");
        assert_eq!(
            line,
            "{\"trace_id\":\"ab\",\"span_id\":\"cd\",\"level\":\"INFO\"}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["span_id"], "cd");
        assert_eq!(
            with_ids("{}\n".into(), "ab", "cd"),
            "{\"trace_id\":\"ab\",\"span_id\":\"cd\"}\n"
        );
        assert_eq!(with_ids("not json".into(), "ab", "cd"), "not json");
    }
}
