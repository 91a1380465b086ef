//! What exporting telemetry costs a handler: the real `ade-backup serve` process with export
//! disabled (nothing configured) and enabled (OTLP/HTTP to an in-process receiver), measured for
//! start-up (spawn → `/healthz` answers) and per-invocation latency (an `OnVmEncryptionEvent`
//! that carries a `traceparent` and needs no Azure call: parse, span, metrics, answer).
//! Target (issue 13): enabled within 10% of disabled. Prints figures and ratios; asserts nothing.
//!
//! `cargo bench -p ade-backup-functions --bench otel_overhead`

use ade_backup_test_support::otlp::OtlpReceiver;
use ade_backup_test_support::serve_process::{
    irrelevant_event, service_bus_invocation, ServeProcess,
};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");
const STARTS: usize = 7;
const WARMUP: usize = 50;
const INVOCATIONS: usize = 1000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

struct Figures {
    start: Duration,
    median: Duration,
    p90: Duration,
    spans_received: usize,
}

async fn measure(endpoint: Option<&str>, receiver: &OtlpReceiver) -> Figures {
    let env: Vec<(&str, &str)> = endpoint
        .map(|e| vec![("OTEL_EXPORTER_OTLP_ENDPOINT", e)])
        .unwrap_or_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut starts = Vec::new();
    for _ in 0..STARTS {
        let t = Instant::now();
        let serve = ServeProcess::spawn(Path::new(BIN), &env);
        serve.wait_healthy(&client).await;
        starts.push(t.elapsed());
        drop(serve);
    }
    let before = receiver.spans().len();
    let serve = ServeProcess::spawn(Path::new(BIN), &env);
    serve.wait_healthy(&client).await;
    let url = format!("{}/OnVmEncryptionEvent", serve.base);
    let mut latencies = Vec::with_capacity(INVOCATIONS);
    for i in 0..WARMUP + INVOCATIONS {
        let id = format!("m-{i}");
        let trace = format!("00-{:032x}-00f067aa0ba902b7-01", i + 1);
        let payload =
            service_bus_invocation(&id, &irrelevant_event(&id), json!({ "traceparent": trace }));
        let t = Instant::now();
        let resp = client
            .post(&url)
            .json(&payload)
            .send()
            .await
            .expect("invoke");
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await;
        if i >= WARMUP {
            latencies.push(t.elapsed());
        }
    }
    let status = tokio::task::spawn_blocking(move || serve.stop())
        .await
        .expect("stop");
    assert!(status.success());
    Figures {
        start: median(starts),
        median: median(latencies.clone()),
        p90: percentile(latencies, 0.9),
        spans_received: receiver.spans().len() - before,
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let receiver = OtlpReceiver::start().await;
        let off = measure(None, &receiver).await;
        let on = measure(Some(&receiver.endpoint), &receiver).await;
        println!("otel_overhead: `ade-backup serve`, {STARTS} starts, {INVOCATIONS} invocations each");
        println!("  export disabled: start {:?}, invocation median {:?} p90 {:?} ({} spans exported)",
            off.start, off.median, off.p90, off.spans_received);
        println!("  export enabled:  start {:?}, invocation median {:?} p90 {:?} ({} spans exported)",
            on.start, on.median, on.p90, on.spans_received);
        println!("  ratio enabled/disabled: start {:.3}, invocation median {:.3}, p90 {:.3} (target <= 1.10)",
            ratio(on.start, off.start), ratio(on.median, off.median), ratio(on.p90, off.p90));
    });
}
