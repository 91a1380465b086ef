//! OpenTelemetry in the in-process harness (SimStack: the real handlers, the simulator, the
//! QueuePump), with a test-local tracer provider and subscriber (test-support `otel_capture`,
//! installed for the test's one thread): traces chain across the pump's queues exactly as they do
//! across Service Bus — an ADE event is one trace through OnVmEncryptionEvent →
//! GrantKeyVaultAccess → BackupVm, a ticket one trace through OnRestoreRequest → RestoreVm →
//! RedeployVm, named in every status message and in `status --ticket` — and every JSON log line
//! names the span (the innermost one) it was written in.

use ade_backup_functions::status;
use ade_backup_shared::ids::TicketId;
use ade_backup_test_support::otel_capture::TraceCapture;
use ade_backup_test_support::otlp::ReceivedSpan;
use ade_backup_test_support::sim_stack::{restore_request, vm_id, SimStack, REPLY_QUEUE, S1};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const CONSUMER: i32 = 5;
const PRODUCER: i32 = 4;
const CLIENT: i32 = 3;
const INBOUND_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const INBOUND_PARENT: &str = "00f067aa0ba902b7";

fn inbound_properties() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "traceparent".to_string(),
        format!("00-{INBOUND_TRACE}-{INBOUND_PARENT}-01"),
    )])
}

/// The Event Grid event of an ADE extension write on web-lnx-02 (Linux, BEK+KEK on an
/// access-policy vault, not protected in the sample fleet).
fn ade_event_body() -> Vec<u8> {
    let ext = format!("/subscriptions/{S1}/resourceGroups/rg-app-web/providers/Microsoft.Compute/virtualMachines/web-lnx-02/extensions/AzureDiskEncryptionForLinux");
    serde_json::to_vec(&json!({
        "id": "evt-1", "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"}
    }))
    .expect("json")
}

/// The spans of one trace, by span id.
struct Trace<'a> {
    by_id: HashMap<&'a str, &'a ReceivedSpan>,
}

impl<'a> Trace<'a> {
    fn new(spans: &'a [ReceivedSpan], trace_id: &str) -> Self {
        Self {
            by_id: spans
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .map(|s| (s.span_id.as_str(), s))
                .collect(),
        }
    }

    fn invocations(&self, function: &str) -> Vec<&'a ReceivedSpan> {
        self.by_id
            .values()
            .filter(|s| s.kind == CONSUMER && s.name == function)
            .copied()
            .collect()
    }

    /// The names of `span`'s ancestors in this trace, nearest first.
    fn ancestors(&self, span: &ReceivedSpan) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut parent = span.parent_span_id.as_str();
        while let Some(p) = self.by_id.get(parent) {
            out.push(p.name.as_str());
            parent = p.parent_span_id.as_str();
        }
        out
    }

    /// Asserts that every invocation of `function` in the trace is the child of the `send` span
    /// of its queue, itself a descendant of an invocation of `caller`.
    fn assert_sent_by(&self, function: &str, caller: &str) {
        let invocations = self.invocations(function);
        assert!(!invocations.is_empty(), "no {function} in the trace");
        for s in invocations {
            let parent = self
                .by_id
                .get(s.parent_span_id.as_str())
                .unwrap_or_else(|| panic!("{function}'s parent is not in the trace: {s:?}"));
            assert_eq!(parent.kind, PRODUCER, "{function}: {parent:?}");
            let queue = s.attr("messaging.destination.name").expect("queue");
            assert_eq!(parent.name, format!("send {queue}"));
            assert!(
                self.ancestors(s).contains(&caller),
                "{function} descends from {caller}: {:?}",
                self.ancestors(s)
            );
        }
    }
}

/// Every JSON log line written inside a span names a span of the capture, in that span's trace;
/// returns the spans the lines named.
fn assert_log_lines_name_their_spans(capture: &TraceCapture) -> Vec<ReceivedSpan> {
    let spans = capture.spans();
    let by_id: HashMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut named = Vec::new();
    for line in capture.log_lines() {
        let Some(span_id) = line.get("span_id").and_then(|v| v.as_str()) else {
            continue;
        };
        let span = by_id
            .get(span_id)
            .unwrap_or_else(|| panic!("log line names no exported span: {line}"));
        assert_eq!(line["trace_id"], span.trace_id.as_str(), "{line}");
        named.push((*span).clone());
    }
    named
}

#[tokio::test(flavor = "current_thread")]
async fn an_ade_event_is_one_trace_across_the_pump_queues() {
    let capture = TraceCapture::new();
    // Debug logs too: the ARM client logs failed requests (a 404 is an answer) inside its span.
    let _installed = tracing::subscriber::set_default(
        capture.subscriber_logging("info,ade_backup_shared=debug,ade_backup_functions=debug"),
    );
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    stack.pump.enqueue_with_properties(
        "vm-encryption-events",
        "evt-1",
        ade_event_body(),
        inbound_properties(),
    );
    stack.pump(500).await;
    let rec = stack
        .state
        .json(&format!("vms/{S1}/rg-app-web/web-lnx-02.json"))
        .expect("vm record");
    assert_eq!(rec["status"], "protected", "{rec}");

    let spans = capture.spans();
    let trace = Trace::new(&spans, INBOUND_TRACE);
    let event = trace.invocations("OnVmEncryptionEvent");
    assert_eq!(
        event.len(),
        1,
        "the event's invocation continues the inbound trace"
    );
    assert_eq!(event[0].parent_span_id, INBOUND_PARENT);
    trace.assert_sent_by("GrantKeyVaultAccess", "OnVmEncryptionEvent");
    trace.assert_sent_by("BackupVm", "GrantKeyVaultAccess");
    // Every delivery the pump made is in the one trace: no hop started a new one.
    let consumers: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.kind == CONSUMER).collect();
    assert_eq!(consumers.len(), stack.pump.deliveries().len());
    for s in &consumers {
        assert_eq!(s.trace_id, INBOUND_TRACE, "{} left the trace", s.name);
    }

    // Logs name the innermost span: lines written inside an ARM call or a step name it, not only
    // the invocation.
    let named = assert_log_lines_name_their_spans(&capture);
    assert!(
        named.iter().any(|s| s.kind == CONSUMER),
        "invocation lines: {named:?}"
    );
    assert!(
        named.iter().any(|s| s.kind == CLIENT),
        "a line inside an ARM call span: {:?}",
        named.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_ticket_is_one_trace_through_restore_and_redeploy() {
    let capture = TraceCapture::new();
    let _installed = tracing::subscriber::set_default(capture.subscriber());
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    let rec = stack.protect(&vm).await;
    assert_eq!(rec["status"], "protected", "{rec}");
    let ticket = "INC-2001";
    let body = restore_request(ticket, &vm, json!({"targetVmName": "web-lnx-01-r"}));
    stack.pump.enqueue_with_properties(
        "restore-requests",
        "req-1",
        serde_json::to_vec(&body).expect("json"),
        inbound_properties(),
    );
    stack.pump(2000).await;
    let op = stack.restore_doc(ticket).expect("restore document");
    assert_eq!(op.status, "completed", "{:#?}", op.history);

    let spans = capture.spans();
    let trace = Trace::new(&spans, INBOUND_TRACE);
    let request = trace.invocations("OnRestoreRequest");
    assert_eq!(request.len(), 1);
    assert_eq!(request[0].parent_span_id, INBOUND_PARENT);
    trace.assert_sent_by("RestoreVm", "OnRestoreRequest");
    trace.assert_sent_by("RedeployVm", "RestoreVm");
    for s in spans.iter().filter(|s| s.attr("ticket_id") == Some(ticket)) {
        assert_eq!(
            s.trace_id, INBOUND_TRACE,
            "{} of the ticket left the trace",
            s.name
        );
    }

    // The trace id is in every status message, in the document's history and in `status`.
    let replies = stack.replies(REPLY_QUEUE);
    assert!(replies.len() >= 3, "{replies:?}");
    for (_, update) in &replies {
        assert_eq!(
            update.trace_id.as_deref(),
            Some(INBOUND_TRACE),
            "{update:?}"
        );
    }
    let t = TicketId::parse(ticket).expect("ticket");
    let doc = status::ticket_status(stack.state.as_ref(), &t)
        .await
        .expect("status reads")
        .expect("the ticket is known");
    assert!(doc
        .history
        .iter()
        .all(|u| u.trace_id.as_deref() == Some(INBOUND_TRACE)));
    let text = status::render_text(&doc);
    assert!(
        text.lines()
            .any(|l| l == format!("trace:    {INBOUND_TRACE}")),
        "{text}"
    );
}
