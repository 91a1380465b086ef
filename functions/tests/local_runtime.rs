//! The local Functions host against an in-process fake custom handler (`--handler-url`).

use ade_backup_functions::local::queue::NewMessage;
use ade_backup_functions::local::{self, ExitReason, LocalArgs, LocalHooks};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

type Calls = Arc<Mutex<Vec<(String, Value)>>>;

/// Fake handler behaviour per function name:
/// `Ok*` → 200, `Poison*` → 500 + deadLetter, `Fail*` → 500, `FanOut*` → sends to `work` then 200.
async fn fake(
    State((calls, sb)): State<(Calls, Arc<Mutex<Option<String>>>)>,
    Path(function): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    calls
        .lock()
        .expect("calls")
        .push((function.clone(), body.clone()));
    if function.starts_with("Poison") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(
                json!({"Outputs": {}, "Logs": ["bad input"], "ReturnValue": {"deadLetter": {"reason": "InvalidEvent", "description": "field subject missing"}}}),
            ),
        );
    }
    if function.starts_with("Fail") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"Outputs": {}, "Logs": ["transient: ARM 503"], "ReturnValue": null})),
        );
    }
    if function.starts_with("FanOut") {
        let base = sb.lock().expect("sb").clone().expect("sb url known");
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(format!("{base}work/messages"))
            .header("Authorization", "Bearer local")
            .header("BrokerProperties", r#"{"MessageId":"child-1"}"#)
            .header("Content-Type", "application/json")
            .body(r#"{"from":"fanout"}"#)
            .send()
            .await
            .expect("send to local SB");
        assert_eq!(resp.status(), 201);
    }
    (
        StatusCode::OK,
        Json(json!({"Outputs": {}, "Logs": [], "ReturnValue": null})),
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    project: std::path::PathBuf,
    state: std::path::PathBuf,
    report: std::path::PathBuf,
    handler_url: String,
    calls: Calls,
    sb: Arc<Mutex<Option<String>>>,
}

async fn fixture(functions: &[(&str, &str)]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let project = dir.path().join("app");
    std::fs::create_dir_all(&project).expect("mkdir");
    std::fs::write(
        project.join("host.json"),
        r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"ade-backup","arguments":["serve"]}}}"#,
    )
    .expect("host.json");
    for (name, function_json) in functions {
        std::fs::create_dir_all(project.join(name)).expect("mkdir");
        std::fs::write(project.join(name).join("function.json"), function_json).expect("write");
    }
    let calls: Calls = Arc::default();
    let sb: Arc<Mutex<Option<String>>> = Arc::default();
    let app = Router::new()
        .route("/{function}", post(fake))
        .with_state((calls.clone(), sb.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fixture {
        state: dir.path().join("state"),
        report: dir.path().join("out/report.json"),
        _dir: dir,
        project,
        handler_url: format!("http://{addr}"),
        calls,
        sb,
    }
}

fn sb_function(queue: &str) -> String {
    format!(
        r#"{{"bindings":[{{"type":"serviceBusTrigger","direction":"in","name":"message","queueName":"{queue}","connection":"ServiceBusConnection"}}]}}"#
    )
}

fn args(f: &Fixture) -> LocalArgs {
    LocalArgs {
        project_dir: f.project.clone(),
        state_dir: f.state.clone(),
        handler_url: Some(f.handler_url.clone()),
        until_idle: true,
        idle_horizon: 0.5,
        report: Some(f.report.clone()),
        max_runtime: Some(30.0),
        ..LocalArgs::default()
    }
}

fn seed(ids: &'static [&'static str], queue: &'static str) -> LocalHooks {
    LocalHooks {
        before_child: Some(Box::new(move |handles| {
            Box::pin(async move {
                for id in ids {
                    handles
                        .queue
                        .send(
                            queue,
                            NewMessage {
                                message_id: Some(id.to_string()),
                                content_type: Some("application/json".into()),
                                body: format!(r#"{{"id":"{id}"}}"#).into_bytes(),
                                properties: [("traceparent".to_string(), "00-abc".to_string())]
                                    .into(),
                                ..NewMessage::default()
                            },
                        )
                        .map_err(|e| e.to_string())?;
                }
                Ok(vec![])
            })
        })),
        ..LocalHooks::default()
    }
}

/// Undoes the host's `JsonConvert.SerializeObject` of a scalar.
fn host_value(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

fn calls_to(calls: &Calls, function: &str) -> Vec<Value> {
    calls
        .lock()
        .expect("calls")
        .iter()
        .filter(|(f, _)| f == function)
        .map(|(_, v)| v.clone())
        .collect()
}

#[tokio::test]
async fn until_idle_delivers_everything_and_writes_the_report() {
    let ok = sb_function("events");
    let f = fixture(&[("OkEvents", ok.as_str())]).await;
    let outcome = local::run_with(args(&f), seed(&["e1", "e2", "e3"], "events"))
        .await
        .expect("run");
    assert_eq!(outcome.exit_reason, ExitReason::Idle);
    let report = &outcome.functions["OkEvents"];
    assert_eq!(
        (report.invocations, report.completed, report.abandoned),
        (3, 3, 0)
    );
    assert_eq!(report.queue.as_deref(), Some("events"));
    assert_eq!(outcome.queues["events"].remaining, 0);

    let calls = calls_to(&f.calls, "OkEvents");
    assert_eq!(calls.len(), 3);
    let mut ids: Vec<String> = calls
        .iter()
        .map(|c| {
            host_value(&c["Metadata"]["MessageId"])
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    let first = &calls[0];
    // The host serializes the text body once more: a JSON string holding the JSON text.
    let text = host_value(&first["Data"]["message"]);
    let parsed: Value =
        serde_json::from_str(text.as_str().expect("text body")).expect("body is the JSON sent");
    assert_eq!(parsed["id"], host_value(&first["Metadata"]["MessageId"]));
    assert_eq!(first["Metadata"]["DeliveryCount"], json!("1"));
    assert_eq!(
        first["Metadata"]["ContentType"],
        json!("\"application/json\"")
    );
    assert_eq!(
        first["Metadata"]["UserProperties"]["traceparent"],
        json!("00-abc")
    );
    assert!(host_value(&first["Metadata"]["LockToken"]).is_string());
    assert!(host_value(&first["Metadata"]["SequenceNumber"]).is_u64());
    assert_eq!(first["Metadata"]["sys"]["MethodName"], json!("OkEvents"));

    let written: Value =
        serde_json::from_slice(&std::fs::read(&f.report).expect("report written")).expect("json");
    assert_eq!(written["exitReason"], json!("idle"));
    assert_eq!(written["functions"]["OkEvents"]["completed"], json!(3));
    assert!(written["durationMs"].is_u64());
    assert_eq!(written["deadLetters"], json!([]));
}

#[tokio::test]
async fn timer_run_on_startup_fires_once_then_idles() {
    let timer = r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"0 0 0 1 1 *","runOnStartup":true}]}"#;
    let f = fixture(&[("OkSweep", timer)]).await;
    let outcome = local::run(args(&f)).await.expect("run");
    assert_eq!(outcome.exit_reason, ExitReason::Idle);
    let r = &outcome.functions["OkSweep"];
    assert_eq!(
        (r.trigger.as_str(), r.invocations, r.completed),
        ("timerTrigger", 1, 1)
    );
    let calls = calls_to(&f.calls, "OkSweep");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["Data"]["timer"]["IsPastDue"], json!(false));
    assert!(calls[0]["Data"]["timer"]["ScheduleStatus"]["Next"]
        .as_str()
        .expect("next")
        .contains("-01-01T00:00:00"));
}

#[tokio::test]
async fn timer_without_run_on_startup_fires_on_schedule() {
    // Every second: always due within a 5 s horizon, so the run ends by max-runtime.
    let timer = r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"t","schedule":"* * * * * *"}]}"#;
    let f = fixture(&[("OkTick", timer)]).await;
    let outcome = local::run(LocalArgs {
        max_runtime: Some(2.5),
        idle_horizon: 5.0,
        ..args(&f)
    })
    .await
    .expect("run");
    assert_eq!(outcome.exit_reason, ExitReason::MaxRuntime);
    let n = outcome.functions["OkTick"].completed;
    assert!((1..=4).contains(&n), "ticks: {n}");
}

#[tokio::test]
async fn poison_answer_dead_letters_at_once_with_its_reason() {
    let poison = sb_function("events");
    let f = fixture(&[("PoisonEvents", poison.as_str())]).await;
    let outcome = local::run_with(args(&f), seed(&["bad-1"], "events"))
        .await
        .expect("run");
    let r = &outcome.functions["PoisonEvents"];
    assert_eq!((r.invocations, r.dead_lettered, r.abandoned), (1, 1, 0));
    assert_eq!(outcome.dead_letters.len(), 1);
    let dl = &outcome.dead_letters[0];
    assert_eq!(dl.message_id, "bad-1");
    assert_eq!(dl.queue, "events");
    assert_eq!(dl.reason, "InvalidEvent");
    assert_eq!(dl.description, "field subject missing");
    assert_eq!(dl.delivery_count, 1);
    let written: Value =
        serde_json::from_slice(&std::fs::read(&f.report).expect("report")).expect("json");
    assert_eq!(written["deadLetters"][0]["reason"], json!("InvalidEvent"));
}

#[tokio::test]
async fn transient_failures_are_redelivered_then_dead_lettered_after_max() {
    let failing = sb_function("events");
    let f = fixture(&[("FailEvents", failing.as_str())]).await;
    let outcome = local::run_with(
        LocalArgs {
            max_delivery_count: 3,
            ..args(&f)
        },
        seed(&["flaky"], "events"),
    )
    .await
    .expect("run");
    let calls = calls_to(&f.calls, "FailEvents");
    let counts: Vec<u64> = calls
        .iter()
        .map(|c| {
            host_value(&c["Metadata"]["DeliveryCount"])
                .as_u64()
                .expect("count")
        })
        .collect();
    assert_eq!(counts, [1, 2, 3]);
    let r = &outcome.functions["FailEvents"];
    assert_eq!((r.invocations, r.abandoned, r.dead_lettered), (3, 3, 1));
    assert_eq!(outcome.dead_letters.len(), 1);
    assert_eq!(outcome.dead_letters[0].reason, "MaxDeliveryCountExceeded");
    assert_eq!(outcome.dead_letters[0].delivery_count, 3);
}

#[tokio::test]
async fn hooks_seed_through_the_endpoint_fan_out_and_extend_the_report() {
    let fan = sb_function("incoming");
    let ok = sb_function("work");
    let f = fixture(&[("FanOutIncoming", fan.as_str()), ("OkWork", ok.as_str())]).await;
    let sb_slot = f.sb.clone();
    let hooks = LocalHooks {
        extra_env: vec![("EXTRA".into(), "1".into())],
        before_child: Some(Box::new(move |handles| {
            Box::pin(async move {
                *sb_slot.lock().map_err(|e| e.to_string())? =
                    Some(handles.servicebus_endpoint.clone());
                // Seed the way an external publisher would: over the REST endpoint.
                let resp = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| e.to_string())?
                    .post(format!("{}incoming/messages", handles.servicebus_endpoint))
                    .header("Authorization", "Bearer seed")
                    .header("BrokerProperties", r#"{"MessageId":"root"}"#)
                    .body("{}")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status() != 201 {
                    return Err(format!("seed got {}", resp.status()));
                }
                Ok(vec![("SIM_URL".into(), "http://127.0.0.1:1".into())])
            })
        })),
        idle_check: None,
        before_report: Some(Box::new(|outcome| {
            outcome.extras.insert("simulator".into(), json!({"vms": 3}));
        })),
        progress: None,
    };
    let outcome = local::run_with(args(&f), hooks).await.expect("run");
    assert_eq!(outcome.functions["FanOutIncoming"].completed, 1);
    assert_eq!(outcome.functions["OkWork"].completed, 1);
    let work = calls_to(&f.calls, "OkWork");
    assert_eq!(
        host_value(&work[0]["Metadata"]["MessageId"]),
        json!("child-1")
    );
    let written: Value =
        serde_json::from_slice(&std::fs::read(&f.report).expect("report")).expect("json");
    assert_eq!(written["simulator"]["vms"], json!(3));
}

#[tokio::test]
async fn idle_check_hook_holds_the_run_open() {
    let ok = sb_function("events");
    let f = fixture(&[("OkEvents", ok.as_str())]).await;
    let started = std::time::Instant::now();
    let hooks = LocalHooks {
        idle_check: Some(Box::new(move || started.elapsed().as_millis() > 1500)),
        ..LocalHooks::default()
    };
    let outcome = local::run_with(args(&f), hooks).await.expect("run");
    assert_eq!(outcome.exit_reason, ExitReason::Idle);
    assert!(outcome.duration_ms >= 1500, "{}", outcome.duration_ms);
}

#[tokio::test]
async fn state_survives_a_restart_of_the_runtime() {
    let failing = sb_function("events");
    let f = fixture(&[("PoisonEvents", failing.as_str())]).await;
    local::run_with(args(&f), seed(&["p1"], "events"))
        .await
        .expect("first run");
    // Second run over the same state dir: the dead letter is still there, nothing redelivered.
    let outcome = local::run(args(&f)).await.expect("second run");
    assert_eq!(outcome.dead_letters.len(), 1);
    assert_eq!(outcome.dead_letters[0].message_id, "p1");
    assert_eq!(outcome.functions["PoisonEvents"].invocations, 0);
}

#[tokio::test]
async fn bad_function_json_is_a_named_error() {
    let bad = r#"{"bindings":[{"type":"serviceBusTrigger","name":"m"}]}"#;
    let f = fixture(&[("Broken", bad)]).await;
    let err = local::run(args(&f)).await.expect_err("missing queueName");
    let text = err.to_string();
    assert!(
        text.contains("queueName") && text.contains("Broken"),
        "{text}"
    );
}
