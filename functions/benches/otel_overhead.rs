//! What exporting telemetry costs a handler: the real `ade-backup serve` process with export
//! disabled (nothing configured) and enabled (OTLP/HTTP to an in-process receiver), measured for
//! start-up (spawn → `/healthz` answers), per-invocation latency (an `OnVmEncryptionEvent` that
//! carries a `traceparent` and needs no Azure call: parse, span, metrics, answer) and the
//! process's CPU time per invocation (which includes the exporter's background thread).
//!
//! Machine noise (other processes on the same cores) must hit both sides alike, so the two are
//! interleaved in one run: start-ups alternate off/on (the order flips every pair); the two
//! processes run side by side and each invocation round calls both, in alternating order. The
//! receiver runs on its own runtime and only stores what it is sent (decoding happens after the
//! measurement). Target (issue 13): enabled within 10% of disabled. Prints figures and ratios;
//! asserts nothing. `OTEL_OVERHEAD_AA=1` runs both sides with export disabled: the ratios of that
//! run are the machine's noise floor. `OTEL_OVERHEAD_PROTOCOL=grpc` exports over OTLP/gRPC.
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
const START_PAIRS: usize = 30;
const WARMUP: usize = 200;
const INVOCATIONS: usize = 3000;

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// The process's CPU time (user + system, all threads) from `/proc/{pid}/stat`, in clock ticks
/// (USER_HZ, 100 per second on Linux); `None` where there is no procfs.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// `OTEL_OVERHEAD_AA=1`: both sides run with export disabled — an A/A run whose ratios show
/// the machine's noise floor, to read the real run's ratios against.
fn aa_run() -> bool {
    std::env::var("OTEL_OVERHEAD_AA").is_ok_and(|v| v == "1")
}

/// `OTEL_OVERHEAD_PROTOCOL=grpc`: the enabled side exports over OTLP/gRPC (to the receiver's
/// gRPC form) instead of HTTP/protobuf.
fn grpc_run() -> bool {
    std::env::var("OTEL_OVERHEAD_PROTOCOL").is_ok_and(|v| v.eq_ignore_ascii_case("grpc"))
}

fn env_for(endpoint: Option<&str>) -> Vec<(&str, &str)> {
    let mut env = Vec::new();
    if let Some(e) = endpoint.filter(|_| !aa_run()) {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", e));
        if grpc_run() {
            env.push(("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"));
        }
    }
    env
}

/// Polls `/healthz` every millisecond (finer than `ServeProcess::wait_healthy`, whose 20 ms
/// steps would swamp the difference being measured).
async fn wait_healthy_fine(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("{base}/healthz");
    loop {
        if let Ok(resp) = client.get(&url).send().await {
            if resp.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "serve did not come up at {base}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Start-up figures of one side: wall time to `/healthz` and the CPU time the process used
/// until then (less sensitive to other processes on the machine than wall time).
#[derive(Default)]
struct StartUps {
    wall: Vec<Duration>,
    cpu_ticks: Vec<u64>,
}

/// Start-ups `[off, on]`, interleaved pair by pair.
async fn start_ups(client: &reqwest::Client, endpoint: &str) -> [StartUps; 2] {
    let mut out = [StartUps::default(), StartUps::default()];
    for pair in 0..START_PAIRS {
        for k in 0..2 {
            let side = (pair + k) % 2;
            let env = env_for((side == 1).then_some(endpoint));
            let t = Instant::now();
            let serve = ServeProcess::spawn(Path::new(BIN), &env);
            wait_healthy_fine(client, &serve.base).await;
            out[side].wall.push(t.elapsed());
            if let Some(c) = cpu_ticks(serve.pid()) {
                out[side].cpu_ticks.push(c);
            }
        }
    }
    out
}

async fn invoke(client: &reqwest::Client, url: &str, i: usize) -> Duration {
    let id = format!("m-{i}");
    let trace = format!("00-{:032x}-00f067aa0ba902b7-01", i + 1);
    let payload =
        service_bus_invocation(&id, &irrelevant_event(&id), json!({ "traceparent": trace }));
    let t = Instant::now();
    let resp = client
        .post(url)
        .json(&payload)
        .send()
        .await
        .expect("invoke");
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await;
    t.elapsed()
}

struct Invocations {
    latencies: [Vec<Duration>; 2],
    /// CPU ticks each process used during the measured invocations.
    cpu: [Option<u64>; 2],
}

/// Per-invocation latencies `[off, on]`, the two processes called alternately.
async fn invocations(client: &reqwest::Client, endpoint: &str) -> Invocations {
    let serves = [
        ServeProcess::spawn(Path::new(BIN), &env_for(None)),
        ServeProcess::spawn(Path::new(BIN), &env_for(Some(endpoint))),
    ];
    for s in &serves {
        s.wait_healthy(client).await;
    }
    let urls = serves
        .each_ref()
        .map(|s| format!("{}/OnVmEncryptionEvent", s.base));
    let mut latencies = [
        Vec::with_capacity(INVOCATIONS),
        Vec::with_capacity(INVOCATIONS),
    ];
    let mut cpu_before = [None, None];
    for i in 0..WARMUP + INVOCATIONS {
        if i == WARMUP {
            cpu_before = serves.each_ref().map(|s| cpu_ticks(s.pid()));
        }
        for k in 0..2 {
            let side = (i + k) % 2;
            let d = invoke(client, &urls[side], i).await;
            if i >= WARMUP {
                latencies[side].push(d);
            }
        }
    }
    let cpu_after = serves.each_ref().map(|s| cpu_ticks(s.pid()));
    let cpu = [0, 1].map(|k| Some(cpu_after[k]?.saturating_sub(cpu_before[k]?)));
    for serve in serves {
        let status = tokio::task::spawn_blocking(move || serve.stop())
            .await
            .expect("stop");
        assert!(status.success());
    }
    Invocations { latencies, cpu }
}

fn main() {
    // The receiver on its own runtime (one thread), apart from the client that measures.
    let receiver_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("receiver runtime");
    let receiver = if grpc_run() {
        receiver_rt.block_on(OtlpReceiver::start_grpc())
    } else {
        receiver_rt.block_on(OtlpReceiver::start())
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let endpoint = receiver.endpoint.clone();
    let starts = rt.block_on(start_ups(&client, &endpoint));
    let inv = rt.block_on(invocations(&client, &endpoint));
    let spans = receiver.spans().len();

    println!(
        "otel_overhead{}{}: `ade-backup serve`, {START_PAIRS} start-up pairs, {INVOCATIONS} invocation \
         rounds (off/on interleaved); {spans} spans exported",
        if aa_run() { " (A/A: export disabled on both sides)" } else { "" },
        if grpc_run() { " (OTLP/gRPC)" } else { "" }
    );
    let [s_off, s_on] = starts.each_ref().map(|s| percentile(&s.wall, 0.5));
    let [c_off, c_on] = starts
        .each_ref()
        .map(|s| s.cpu_ticks.iter().sum::<u64>() as f64 * 10.0 / s.cpu_ticks.len().max(1) as f64);
    let [m_off, m_on] = inv.latencies.each_ref().map(|l| percentile(l, 0.5));
    let [p_off, p_on] = inv.latencies.each_ref().map(|l| percentile(l, 0.9));
    println!(
        "  export disabled: start median {s_off:?}, invocation median {m_off:?} p90 {p_off:?}"
    );
    println!("  export enabled:  start median {s_on:?}, invocation median {m_on:?} p90 {p_on:?}");
    // Robust to the machine's load swings: each pair's two start-ups ran back to back.
    let pair_ratios: Vec<f64> = starts[0]
        .wall
        .iter()
        .zip(&starts[1].wall)
        .map(|(off, on)| ratio(*on, *off))
        .collect();
    let mut sorted = pair_ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let [min_off, min_on] = starts.each_ref().map(|s| percentile(&s.wall, 0.0));
    println!(
        "  start-up wall: fastest disabled {min_off:?}, enabled {min_on:?}; median of per-pair ratios {:.3}",
        sorted[sorted.len() / 2]
    );
    println!(
        "  start-up CPU (mean, 10 ms ticks): disabled {c_off:.1} ms, enabled {c_on:.1} ms, ratio {:.3}",
        c_on / c_off.max(f64::MIN_POSITIVE)
    );
    if let [Some(c_off), Some(c_on)] = inv.cpu {
        let per = |ticks: u64| ticks as f64 * 10_000.0 / INVOCATIONS as f64;
        println!(
            "  CPU per invocation (whole process, 10 ms ticks): disabled {:.0} µs, enabled {:.0} µs, ratio {:.3}",
            per(c_off),
            per(c_on),
            c_on as f64 / c_off.max(1) as f64
        );
    }
    println!(
        "  ratio enabled/disabled: start {:.3}, invocation median {:.3}, p90 {:.3} (target <= 1.10)",
        ratio(s_on, s_off),
        ratio(m_on, m_off),
        ratio(p_on, p_off)
    );
    drop(receiver);
    receiver_rt.shutdown_background();
}
