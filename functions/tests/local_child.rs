//! The local host runs the custom handler as a real child process and survives its death:
//! a handler that crashes mid-invocation is restarted and the message is redelivered.

use ade_backup_functions::local::queue::NewMessage;
use ade_backup_functions::local::{self, ExitReason, LocalArgs, LocalHooks};
use serde_json::Value;

/// A minimal custom handler: `/healthz`, and `POST /Work` that dies (no answer) the first time
/// it is ever called, then answers 200. It records each delivery and its environment.
const HANDLER: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "env.json"), "w") as f:
    json.dump({k: os.environ.get(k) for k in [
        "FUNCTIONS_CUSTOMHANDLER_PORT", "ADE_BACKUP_STATE", "ADE_BACKUP_SERVICEBUS_ENDPOINT",
        "ADE_BACKUP_CREDENTIAL", "EXTRA_SETTING"]}, f)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        sys.stderr.write("handler: " + (a[0] % a[1:]) + "\n")
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(os.path.join(HERE, "calls.jsonl"), "a") as f:
            f.write(json.dumps({"path": self.path, "meta": body["Metadata"]}) + "\n")
        marker = os.path.join(HERE, "crashed-once")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        out = json.dumps({"Outputs": {}, "Logs": [], "ReturnValue": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

HTTPServer(("127.0.0.1", int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])), H).serve_forever()
"#;

#[tokio::test]
async fn killing_the_handler_mid_invocation_loses_no_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(app.join("Work")).expect("mkdir");
    std::fs::write(app.join("handler.py"), HANDLER).expect("handler");
    std::fs::write(
        app.join("host.json"),
        r#"{"version":"2.0","customHandler":{"description":{"defaultExecutablePath":"python3","arguments":["handler.py"]}}}"#,
    )
    .expect("host.json");
    std::fs::write(
        app.join("Work/function.json"),
        r#"{"bindings":[{"type":"serviceBusTrigger","direction":"in","name":"msg","queueName":"work"}]}"#,
    )
    .expect("function.json");

    let hooks = LocalHooks {
        extra_env: vec![("EXTRA_SETTING".into(), "yes".into())],
        before_child: Some(Box::new(|handles| {
            Box::pin(async move {
                handles
                    .queue
                    .send(
                        "work",
                        NewMessage {
                            message_id: Some("survivor".into()),
                            body: b"{}".to_vec(),
                            ..NewMessage::default()
                        },
                    )
                    .map_err(|e| e.to_string())?;
                Ok(vec![])
            })
        })),
        ..LocalHooks::default()
    };
    let state = dir.path().join("state");
    let outcome = local::run_with(
        LocalArgs {
            project_dir: app.clone(),
            state_dir: state.clone(),
            serve_bin: Some("python3".into()),
            until_idle: true,
            idle_horizon: 0.5,
            max_runtime: Some(60.0),
            quiet: true,
            ..LocalArgs::default()
        },
        hooks,
    )
    .await
    .expect("run");

    assert_eq!(outcome.exit_reason, ExitReason::Idle);
    assert_eq!(
        outcome.handler_restarts, 1,
        "the crashed handler was restarted"
    );
    let r = &outcome.functions["Work"];
    assert_eq!((r.invocations, r.abandoned, r.completed), (2, 1, 1));
    assert!(outcome.dead_letters.is_empty());

    let calls: Vec<Value> = std::fs::read_to_string(app.join("calls.jsonl"))
        .expect("calls recorded")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(calls.len(), 2);
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(c["path"], "/Work");
        // Scalars are encoded as the Functions host encodes them (JSON inside a string).
        assert_eq!(c["meta"]["MessageId"], "\"survivor\"");
        assert_eq!(c["meta"]["DeliveryCount"], (i + 1).to_string());
    }

    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(app.join("env.json")).expect("env recorded"))
            .expect("env json");
    let state_abs = std::fs::canonicalize(&state).expect("state dir exists");
    assert_eq!(
        env["ADE_BACKUP_STATE"],
        format!("fs:{}", state_abs.join("state").display())
    );
    assert_eq!(env["ADE_BACKUP_CREDENTIAL"], "static");
    assert_eq!(env["EXTRA_SETTING"], "yes");
    let sb = env["ADE_BACKUP_SERVICEBUS_ENDPOINT"].as_str().expect("sb");
    assert!(
        sb.starts_with("http://127.0.0.1:") && sb.ends_with('/'),
        "{sb}"
    );
    assert!(env["FUNCTIONS_CUSTOMHANDLER_PORT"].as_str().is_some());
    // --quiet: the handler's stderr went to the log file.
    let log = std::fs::read_to_string(state_abs.join("serve.log")).expect("serve.log");
    assert!(log.contains("handler: "), "{log}");
}

#[tokio::test]
async fn a_handler_that_never_becomes_ready_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::write(
        app.join("host.json"),
        r#"{"customHandler":{"description":{"arguments":["-c","sleep 30"]}}}"#,
    )
    .expect("host.json");
    let err = local::run(LocalArgs {
        project_dir: app,
        state_dir: dir.path().join("state"),
        serve_bin: Some("sh".into()),
        until_idle: true,
        handler_start_timeout: 1.0,
        max_runtime: Some(20.0),
        ..LocalArgs::default()
    })
    .await
    .expect_err("start timeout");
    assert!(err.to_string().contains("/healthz"), "{err}");
}

#[tokio::test]
async fn a_handler_that_keeps_crashing_at_start_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    std::fs::write(
        app.join("host.json"),
        r#"{"customHandler":{"description":{"arguments":["-c","exit 7"]}}}"#,
    )
    .expect("host.json");
    let err = local::run(LocalArgs {
        project_dir: app,
        state_dir: dir.path().join("state"),
        serve_bin: Some("sh".into()),
        until_idle: true,
        max_runtime: Some(30.0),
        ..LocalArgs::default()
    })
    .await
    .expect_err("crash loop");
    assert!(err.to_string().contains("exited 5 times"), "{err}");
}
