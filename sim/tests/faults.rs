mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_are_injected_at_the_configured_rate() {
    let h = Harness::sample().await;
    let (s, _, _) = h
        .send(
            reqwest::Method::POST,
            &format!("{}/_sim/faults", h.base),
            Some(json!({"seed": 11, "operations": {"vm.get": {"errorRate": 0.3}}})),
        )
        .await;
    assert_eq!(s, 200);
    let url = h.url(&vm_id(S1, "rg-app-web", "web-win-01"), "2024-07-01");
    let mut errors = 0;
    for chunk in 0..10 {
        let _ = chunk;
        let rs =
            futures::future::join_all((0..100).map(|_| h.send(reqwest::Method::GET, &url, None)))
                .await;
        errors += rs.iter().filter(|r| r.0 == 500).count();
        assert!(rs.iter().all(|r| r.0 == 200 || r.0 == 500));
    }
    assert!(
        (250..=350).contains(&errors),
        "30% of 1000 calls should fail, got {errors}"
    );
    // Other operations are untouched.
    let (s, _, _) = h.get(RSV_WEU, RS_API).await;
    assert_eq!(s, 200);
    let (_, _, stats) = h
        .send(
            reqwest::Method::GET,
            &format!("{}/_sim/stats", h.base),
            None,
        )
        .await;
    assert_eq!(stats["faultsInjected"], errors as u64);
    assert_eq!(stats["calls"]["vm.get"], 1000);

    // Invalid configs are rejected with the field named.
    let (s, _, err) = h
        .send(
            reqwest::Method::POST,
            &format!("{}/_sim/faults", h.base),
            Some(json!({"default": {"errorRate": 2.0}})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(err["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("default.errorRate")));
}

#[tokio::test]
async fn latency_and_timeouts_are_injected() {
    let h = Harness::sample().await;
    h.sim
        .set_faults(ade_backup_sim::FaultConfig {
            operations: [
                (
                    "keyvault.get".to_string(),
                    ade_backup_sim::FaultRule {
                        latency_ms: 200,
                        ..Default::default()
                    },
                ),
                (
                    "rs.vault.get".to_string(),
                    ade_backup_sim::FaultRule {
                        timeout_rate: 1.0,
                        timeout_ms: 300,
                        ..Default::default()
                    },
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .expect("valid");
    let t = std::time::Instant::now();
    let (s, _, _) = h.get("/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-security/providers/Microsoft.KeyVault/vaults/kv-ade-ap-weu", "2023-07-01").await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(200));
    let short = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .expect("client");
    let err = short
        .get(h.url(RSV_WEU, RS_API))
        .bearer_auth("t")
        .send()
        .await;
    assert!(err.is_err_and(|e| e.is_timeout()));
    let (s, _, _) = h.get(RSV_WEU, RS_API).await;
    assert_eq!(s, 504);
}
