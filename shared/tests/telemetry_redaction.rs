//! End-to-end redaction: events go through the subscriber `telemetry` builds (the same one
//! `init` installs), into a buffer, and nothing secret comes out.

use ade_backup_shared::telemetry::{
    self, invocation_span, redact, LogFormat, TelemetryOptions, REDACTED,
};
use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn contents(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf8 output")
    }
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = BufferWriter;
    fn make_writer(&'a self) -> Self::Writer {
        BufferWriter(self.0.clone())
    }
}

const SAS_SIG: &str = "AbCdEf0123456789%2Bsecret%3D";
const SAS_SKOID: &str = "11111111-2222-3333-4444-555555555555";
const BEARER: &str = "opaque-bearer-value-123";
const JWT: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tIn0.c2lnbmF0dXJlLWJ5dGVz";
const ACCOUNT_KEY: &str = "Zm9vYmFyYmF6cXV4c2VjcmV0a2V5MTIzNDU2Nzg5MA==";
const CLIENT_SECRET: &str = "cl13nt-s3cr3t~value";

fn secrets() -> [&'static str; 6] {
    [SAS_SIG, SAS_SKOID, BEARER, JWT, ACCOUNT_KEY, CLIENT_SECRET]
}

fn emit_secret_laden_events() {
    let sas_url = format!(
        "https://acct.blob.core.windows.net/state/vm1.json?sv=2022-11-02&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=rw&skoid={SAS_SKOID}&sig={SAS_SIG}"
    );
    let span = invocation_span("protect_vm", "msg-1", 1);
    telemetry::continue_trace(&span, |k| {
        (k == "traceparent")
            .then(|| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into())
    });
    span.record("correlation_id", "ticket-42");
    let _entered = span.enter();
    tracing::info!(url = %sas_url, "uploading state");
    tracing::warn!("request headers: Authorization: Bearer {BEARER}");
    tracing::info!(token = JWT, "got token");
    tracing::error!(
        conn = format!("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"),
        "bad connection string"
    );
    tracing::info!(
        body = format!("grant_type=client_credentials&client_secret={CLIENT_SECRET}&scope=x"),
        "token request"
    );
    tracing::info!(
        local = format!("http://127.0.0.1:10000/devstoreaccount1/state/x?sig={SAS_SIG}&se=1"),
        "local blob"
    );
}

#[test]
fn json_output_has_no_secrets_and_carries_span_fields() {
    let buffer = Buffer::default();
    let options = TelemetryOptions {
        format: LogFormat::Json,
        filter: Some("info".to_string()),
        otlp_endpoint: None,
    };
    let subscriber =
        telemetry::subscriber_with_writer(&options, buffer.clone()).expect("subscriber");
    tracing::subscriber::with_default(subscriber, emit_secret_laden_events);

    let out = buffer.contents();
    for secret in secrets() {
        assert!(!out.contains(secret), "secret {secret:?} leaked:\n{out}");
    }
    assert!(out.contains(REDACTED), "{out}");

    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "one JSON object per event per line:\n{out}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(
            line.contains(REDACTED),
            "every event here had a secret: {line}"
        );
        let span = &v["span"];
        assert_eq!(span["function"], "protect_vm", "{line}");
        assert_eq!(span["message_id"], "msg-1", "{line}");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{line}");
        let span_id = v["span_id"].as_str().unwrap_or_default();
        assert!(
            span_id.len() == 16 && span_id != "00f067aa0ba902b7",
            "the invocation's own span id: {line}"
        );
        assert_eq!(span["correlation_id"], "ticket-42", "{line}");
        assert_eq!(v["spans"][0]["function"], "protect_vm", "{line}");
    }

    let first: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(
        first["url"],
        "https://acct.blob.core.windows.net/state/vm1.json?[REDACTED]"
    );
    assert_eq!(first["message"], "uploading state");
    assert_eq!(first["level"], "INFO");
    let second: serde_json::Value = serde_json::from_str(lines[1]).expect("json");
    assert_eq!(
        second["message"],
        "request headers: Authorization: Bearer [REDACTED]"
    );
}

#[test]
fn pretty_output_has_no_secrets() {
    let buffer = Buffer::default();
    let options = TelemetryOptions {
        format: LogFormat::Pretty,
        filter: Some("info".to_string()),
        otlp_endpoint: None,
    };
    let subscriber =
        telemetry::subscriber_with_writer(&options, buffer.clone()).expect("subscriber");
    tracing::subscriber::with_default(subscriber, emit_secret_laden_events);

    let out = buffer.contents();
    assert!(!out.is_empty());
    for secret in secrets() {
        assert!(!out.contains(secret), "secret {secret:?} leaked:\n{out}");
    }
    assert!(out.contains(REDACTED), "{out}");
    assert!(out.contains("protect_vm"), "span fields shown: {out}");
}

#[test]
fn filter_option_drops_lower_levels() {
    let buffer = Buffer::default();
    let options = TelemetryOptions {
        format: LogFormat::Json,
        filter: Some("warn".to_string()),
        otlp_endpoint: None,
    };
    let subscriber =
        telemetry::subscriber_with_writer(&options, buffer.clone()).expect("subscriber");
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("quiet");
        tracing::warn!("loud");
    });
    let out = buffer.contents();
    assert!(!out.contains("quiet"), "{out}");
    assert!(out.contains("loud"), "{out}");
}

#[test]
fn redact_leaves_plain_text_borrowed() {
    let s = "backup of vm1 finished in 42s; next run 2024-01-02T03:04:05Z";
    assert!(matches!(redact(s), Cow::Borrowed(x) if x == s));
}

#[test]
fn redact_masks_each_kind() {
    let cases = [
        (
            format!("https://a.blob.core.windows.net/c/b?sv=1&sig={SAS_SIG}"),
            SAS_SIG,
        ),
        (format!("Authorization: Bearer {BEARER}"), BEARER),
        (format!("id_token {JWT} end"), JWT),
        (
            format!("AccountName=a;AccountKey={ACCOUNT_KEY};"),
            ACCOUNT_KEY,
        ),
        (format!("client_secret={CLIENT_SECRET}"), CLIENT_SECRET),
        (
            "SharedAccessSignature sr=ns.servicebus.windows.net&sig=zzz&se=1&skn=send".to_string(),
            "sig=zzz",
        ),
    ];
    for (input, secret) in cases {
        let out = redact(&input);
        assert!(matches!(out, Cow::Owned(_)), "{input}");
        assert!(!out.contains(secret), "{out}");
        assert!(out.contains(REDACTED), "{out}");
    }
}
