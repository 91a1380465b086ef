//! The `PolicySweep` timer function through the real custom-handler server, against the simulator.

use ade_backup_functions::handlers::Registry;
use ade_backup_sim::SimOptions;
use ade_backup_test_support::serve;
use ade_backup_test_support::simulator::healthy_fleet;
use ade_backup_test_support::sweep_harness::Harness;
use serde_json::{json, Value};

fn timer_payload() -> Value {
    json!({
        "Data": { "timer": {
            "Schedule": { "AdjustForDST": true },
            "ScheduleStatus": { "Last": "2024-05-01T09:30:00+00:00", "Next": "2024-05-01T10:00:00+00:00" },
            "IsPastDue": true
        }},
        "Metadata": { "sys": { "MethodName": "PolicySweep", "UtcNow": "2024-05-01T10:00:00Z" } }
    })
}

async fn invoke(h: &Harness) -> (u16, Value) {
    let served = serve(Registry::production(), h.ctx.clone()).await;
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("{}/PolicySweep", served.address))
        .json(&timer_payload())
        .send()
        .await
        .expect("server answers");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json body");
    let _ = served.shutdown.send(());
    let _ = served.server.await;
    (status, body)
}

#[tokio::test]
async fn the_timer_function_runs_a_sweep_and_returns_its_summary() {
    let h = Harness::start(healthy_fleet(1, 40, 21, 1), SimOptions::default(), &[]).await;
    h.grant_rbac().await;
    let (status, body) = invoke(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ReturnValue"]["result"], "completed", "{body}");
    assert_eq!(
        body["ReturnValue"]["outcomes"]["protection-started"], 1,
        "{body}"
    );
    let logs = body["Logs"].to_string();
    assert!(
        logs.contains("past due") && logs.contains("ARM calls"),
        "{logs}"
    );
    assert!(h.store.json("runs/sweep/latest.json").is_some());
}

#[tokio::test]
async fn no_configured_subscription_fails_the_invocation_naming_the_setting() {
    let h = Harness::start(
        healthy_fleet(1, 5, 22, 0),
        SimOptions::default(),
        &[("ADE_BACKUP_SUBSCRIPTIONS", String::new())],
    )
    .await;
    let (status, body) = invoke(&h).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body["Logs"]
            .to_string()
            .contains("ADE_BACKUP_SUBSCRIPTIONS"),
        "{body}"
    );
    // the failed run recorded its summary and released its lease: the next tick is not blocked
    let latest = h.store.json("runs/sweep/latest.json").expect("latest");
    assert_eq!(latest["last"]["status"], "failed");
    let (status, body) = invoke(&h).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        !body["Logs"].to_string().contains("skipped"),
        "the lease was released: {body}"
    );
}
