//! OpenTelemetry end to end, through real processes exporting OTLP/HTTP to an in-process receiver
//! (test-support `otlp`): an inbound `traceparent` is continued by `serve`; one ADE event is one
//! trace through `ade-backup local` (OnVmEncryptionEvent → GrantKeyVaultAccess → BackupVm and
//! its polls), with parent/child links across the queues, a client span per ARM call and the
//! metrics.

use ade_backup_test_support::otlp::{OtlpReceiver, ReceivedSpan};
use ade_backup_test_support::serve_process::{
    irrelevant_event, service_bus_invocation, ServeProcess,
};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");
const CONSUMER: i32 = 5;
const PRODUCER: i32 = 4;
const CLIENT: i32 = 3;
const INBOUND_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const INBOUND_PARENT: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_traceparent_is_continued_by_serve() {
    let receiver = OtlpReceiver::start().await;
    inbound_traceparent_is_continued(receiver, &[]).await;
}

/// The same over OTLP/gRPC (a tonic collector), as a collector listening on 4317 only gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_leave_over_grpc_when_the_protocol_says_so() {
    let receiver = OtlpReceiver::start_grpc().await;
    inbound_traceparent_is_continued(receiver, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).await;
}

async fn inbound_traceparent_is_continued(receiver: OtlpReceiver, env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()));
    let serve = ServeProcess::spawn(Path::new(BIN), &env);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    serve.wait_healthy(&client).await;
    let traceparent = format!("00-{INBOUND_TRACE}-{INBOUND_PARENT}-01");
    for (id, props) in [
        ("m-traceparent", json!({ "traceparent": traceparent })),
        // The Azure SDKs' name for the same context, as an HTTP transport may lowercase it.
        ("m-diagnostic-id", json!({ "diagnostic-id": traceparent })),
        ("m-none", json!({})),
    ] {
        let resp = client
            .post(format!("{}/OnVmEncryptionEvent", serve.base))
            .json(&service_bus_invocation(id, &irrelevant_event(id), props))
            .send()
            .await
            .expect("invoke");
        assert_eq!(resp.status(), 200, "{id}");
    }
    let status = tokio::task::spawn_blocking(move || serve.stop())
        .await
        .expect("stop");
    assert!(status.success(), "{status}");

    let spans = receiver.spans();
    let invocation = |id: &str| -> ReceivedSpan {
        spans
            .iter()
            .find(|s| s.kind == CONSUMER && s.attr("message_id") == Some(id))
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no invocation span for {id} ({} export requests): {spans:#?}",
                    receiver.requests()
                )
            })
    };
    for id in ["m-traceparent", "m-diagnostic-id"] {
        let s = invocation(id);
        assert_eq!(s.name, "OnVmEncryptionEvent");
        assert_eq!(s.trace_id, INBOUND_TRACE, "{id} continues the trace: {s:?}");
        assert_eq!(s.parent_span_id, INBOUND_PARENT, "{id}: {s:?}");
        assert_eq!(s.attr("delivery_count"), Some("1"));
        assert_eq!(
            s.attr("messaging.destination.name"),
            Some("vm-encryption-events")
        );
        assert_eq!(s.service, "ade-backup");
    }
    let fresh = invocation("m-none");
    assert_ne!(fresh.trace_id, INBOUND_TRACE, "no context: a new trace");
    assert!(fresh.parent_span_id.is_empty(), "{fresh:?}");

    let completed: f64 = receiver
        .points()
        .iter()
        .filter(|p| {
            p.metric == "ade_backup.invocations"
                && p.attributes.get("function").map(String::as_str) == Some("OnVmEncryptionEvent")
                && p.attributes.get("outcome").map(String::as_str) == Some("completed")
        })
        .map(|p| p.value)
        .fold(0.0, f64::max);
    assert_eq!(completed, 3.0, "{:#?}", receiver.points());
}

fn sample_fleet() -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/fleets/sample.json"),
    )
    .expect("sample fleet");
    serde_json::from_str(&text).expect("fleet JSON")
}

/// Runs `ade-backup local` until idle with one VM getting ADE, exporting to `endpoint`.
fn run_local_with_one_ade_event(dir: &Path, endpoint: &str) -> Value {
    let mut fleet = sample_fleet();
    fleet["vms"].as_array_mut().expect("vms").push(json!({
        "subscription": "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011", "resourceGroup": "rg-e2e-weu",
        "name": "otel-vm", "location": "westeurope", "osType": "Linux",
        "vmSize": "Standard_D2s_v3", "osDiskSizeGb": 64, "dataDisks": [],
        "tags": {}, "ade": {"variant": "none"}, "powerState": "running"
    }));
    let scenario = json!({"name": "otel", "actions": [{"atSeconds": 0, "action": "enableAde",
        "vm": "rg-e2e-weu/otel-vm", "variant": "bek", "keyVault": "kv-ade-ap-weu"}]});
    let (fleet_path, scenario_path) = (dir.join("fleet.json"), dir.join("scenario.json"));
    let report_path = dir.join("report.json");
    std::fs::write(&fleet_path, fleet.to_string()).expect("write fleet");
    std::fs::write(&scenario_path, scenario.to_string()).expect("write scenario");
    let out = std::process::Command::new(BIN)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["local", "--until-idle", "--quiet", "--max-runtime", "180"])
        .args([
            "--idle-horizon",
            "3",
            "--sweep-every",
            "0",
            "--otlp-endpoint",
            endpoint,
        ])
        .arg("--state-dir")
        .arg(dir.join("state-dir"))
        .arg("--fleet")
        .arg(&fleet_path)
        .arg("--scenario")
        .arg(&scenario_path)
        .arg("--report")
        .arg(&report_path)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run ade-backup local");
    assert!(
        out.status.success(),
        "ade-backup local failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("report JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ade_event_is_one_trace_across_every_queue() {
    let receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, endpoint) = (dir.path().to_path_buf(), receiver.endpoint.clone());
    let report =
        tokio::task::spawn_blocking(move || run_local_with_one_ade_event(&path, &endpoint))
            .await
            .expect("local run");
    let vm = report["protection"]["vms"]
        .as_array()
        .and_then(|vms| {
            vms.iter()
                .find(|v| v["vm"].as_str().is_some_and(|id| id.ends_with("/otel-vm")))
        })
        .unwrap_or_else(|| panic!("otel-vm missing: {}", report["protection"]));
    assert_eq!(vm["status"], "protected", "{vm}");

    let spans = receiver.spans();
    let event = spans
        .iter()
        .find(|s| {
            s.name == "OnVmEncryptionEvent"
                && s.attr("vm_id").is_some_and(|v| v.ends_with("/otel-vm"))
        })
        .unwrap_or_else(|| panic!("no OnVmEncryptionEvent span for otel-vm"));
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == event.trace_id)
        .collect();
    let by_id: HashMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let invocations: Vec<&&ReceivedSpan> = trace.iter().filter(|s| s.kind == CONSUMER).collect();
    let functions: BTreeSet<&str> = invocations.iter().map(|s| s.name.as_str()).collect();
    for f in ["OnVmEncryptionEvent", "GrantKeyVaultAccess", "BackupVm"] {
        assert!(
            functions.contains(f),
            "{f} is not in the event's trace: {functions:?}"
        );
    }
    let backups = invocations.iter().filter(|s| s.name == "BackupVm").count();
    assert!(backups >= 3, "protect, backup now and the polls: {backups}");

    // The whole fan-out is this one trace: every invocation of the VM's protection operation.
    let op = invocations
        .iter()
        .find_map(|s| s.attr("operation_id"))
        .expect("protection invocations name their operation");
    for s in spans.iter().filter(|s| s.attr("operation_id") == Some(op)) {
        assert_eq!(
            s.trace_id, event.trace_id,
            "{} of {op} in another trace",
            s.name
        );
    }

    // Parent/child links across the queues: the trace has one root (the event's publisher: the
    // simulated Event Grid delivery, a `send` span) and every other span's parent is in it; each
    // invocation is the child of the `send` span of the message that triggered it.
    let roots: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    for s in &trace {
        assert!(
            s.parent_span_id.is_empty() || by_id.contains_key(s.parent_span_id.as_str()),
            "{} ({}) has a parent outside the trace",
            s.name,
            s.span_id
        );
    }
    for s in &invocations {
        let parent = by_id
            .get(s.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("{} ({}) has no parent", s.name, s.span_id));
        assert_eq!(
            parent.kind, PRODUCER,
            "{} is a child of a send: {parent:?}",
            s.name
        );
        let queue = s.attr("messaging.destination.name").expect("queue");
        assert_eq!(parent.name, format!("send {queue}"), "{}", s.name);
    }
    let steps: Vec<&&ReceivedSpan> = trace
        .iter()
        .filter(|s| s.name.starts_with("protect "))
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.name == "protect grant-key-vault-access"),
        "{steps:?}"
    );
    for s in &steps {
        let parent = by_id.get(s.parent_span_id.as_str()).expect("step parent");
        assert_eq!(
            parent.kind, CONSUMER,
            "a step runs inside its invocation: {s:?}"
        );
    }

    // One client span per ARM call, with its status and its route template (no resource names).
    let arm: Vec<&&ReceivedSpan> = trace.iter().filter(|s| s.kind == CLIENT).collect();
    assert!(arm.len() >= 5, "ARM calls in the trace: {}", arm.len());
    for s in &arm {
        let status = s
            .attr("http.response.status_code")
            .unwrap_or_else(|| panic!("{s:?}"));
        assert!(
            status.parse::<u16>().is_ok_and(|c| (200..600).contains(&c)),
            "{s:?}"
        );
        assert!(s.attr("http.request.method").is_some(), "{s:?}");
        let template = s.attr("url.template").expect("url.template");
        assert!(
            !template.contains("otel-vm") && !template.contains('?'),
            "{template}"
        );
        assert!(s.name.ends_with(template), "{} / {template}", s.name);
        assert!(by_id.contains_key(s.parent_span_id.as_str()), "{s:?}");
    }
    assert!(
        arm.iter()
            .any(|s| s.attr("http.request.method") == Some("PUT")),
        "the protection is a PUT"
    );

    let points = receiver.points();
    let has = |metric: &str, attr: Option<(&str, &str)>| {
        points.iter().any(|p| {
            p.metric == metric
                && p.value > 0.0
                && attr.is_none_or(|(k, v)| p.attributes.get(k).map(String::as_str) == Some(v))
        })
    };
    assert!(has(
        "ade_backup.invocations",
        Some(("function", "BackupVm"))
    ));
    assert!(has(
        "ade_backup.protections",
        Some(("outcome", "protected"))
    ));
    assert!(has("ade_backup.event_to_protected", None));
    assert!(has("ade_backup.arm.calls", Some(("class", "writes"))));
    assert!(has("ade_backup.arm.paced_wait", Some(("class", "reads"))));
}
