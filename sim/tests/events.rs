mod common;

use ade_backup_sim::scenario::{Action, AdeVariant, TimedAction};
use ade_backup_sim::{run_scenario, Fleet, RecordingSender, Scenario, SimOptions};
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::test]
async fn ade_extension_put_publishes_a_resource_write_success_event() {
    let h = Harness::sample().await;
    let rec = Arc::new(RecordingSender::new());
    h.sim.set_event_sink(rec.clone());
    let vm = vm_id(S1, "rg-app-plain", "plain-win-02");
    // A non-ADE extension publishes nothing.
    let (s, _, _) = h
        .put(&format!("{vm}/extensions/MicrosoftMonitoringAgent"), "2024-07-01", json!({"properties": {"publisher": "Microsoft.EnterpriseCloud.Monitoring", "type": "MicrosoftMonitoringAgent", "typeHandlerVersion": "1.0"}}))
        .await;
    assert_eq!(s, 201);
    assert!(rec.messages().is_empty());

    let kv = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-security/providers/Microsoft.KeyVault/vaults/kv-ade-ap-weu";
    let (s, _, _) = h
        .put(&format!("{vm}/extensions/AzureDiskEncryption"), "2024-07-01", json!({"properties": {"publisher": "Microsoft.Azure.Security", "type": "AzureDiskEncryption", "typeHandlerVersion": "2.2", "settings": {"EncryptionOperation": "EnableEncryption", "KeyVaultURL": "https://kv-ade-ap-weu.vault.azure.net/", "KeyVaultResourceId": kv, "VolumeType": "All"}}}))
        .await;
    assert_eq!(s, 201);
    let msgs = rec.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.queue, "vm-encryption-events");
    let body: Value = serde_json::from_slice(&m.body).expect("json");
    let ev = &body[0];
    assert_eq!(body.as_array().map(Vec::len), Some(1));
    assert_eq!(ev["id"], json!(m.message_id));
    assert_eq!(ev["eventType"], "Microsoft.Resources.ResourceWriteSuccess");
    assert_eq!(ev["topic"], format!("/subscriptions/{S1}"));
    assert_eq!(
        ev["subject"],
        format!("{vm}/extensions/AzureDiskEncryption")
    );
    assert_eq!(
        ev["data"]["operationName"],
        "Microsoft.Compute/virtualMachines/extensions/write"
    );
    assert_eq!(ev["data"]["status"], "Succeeded");
    assert_eq!(ev["data"]["resourceUri"], ev["subject"]);
    assert_eq!(ev["data"]["tenantId"], json!(h.sim.tenant_id()));
    assert_eq!(ev["metadataVersion"], "1");
    assert!(ev["data"]["httpRequest"]["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://management.azure.com/subscriptions/")));
    assert_eq!(h.sim.stats().events_published, 1);

    // The VM becomes encrypted once the extension finishes.
    h.advance_secs(11 * 60);
    let (_, _, v) = h
        .get(&format!("{vm}?$expand=instanceView"), "2024-07-01")
        .await;
    assert!(
        v["properties"]["storageProfile"]["osDisk"]["encryptionSettings"]["diskEncryptionKey"]
            ["secretUrl"]
            .is_string(),
        "{v}"
    );
}

#[tokio::test]
async fn scenario_enables_ade_sends_messages_and_removes_access() {
    let sim = ade_backup_sim::Simulator::new(
        Fleet::sample(),
        SimOptions {
            time_scale: 60_000.0,
            ..SimOptions::default()
        },
    );
    let rec = Arc::new(RecordingSender::new());
    let scenario = Scenario {
        name: "t".into(),
        actions: vec![
            TimedAction {
                at_seconds: 0.0,
                action: Action::EnableAde {
                    vm: "rg-app-web/web-win-02".into(),
                    variant: AdeVariant::Bek,
                    key_vault: "kv-ade-ap-weu".into(),
                    kek: None,
                },
            },
            TimedAction {
                at_seconds: 600.0,
                action: Action::SendMessage {
                    queue: "restore-requests".into(),
                    body: json!({"vm": "web-lnx-01"}),
                    message_id: Some("r1".into()),
                },
            },
            TimedAction {
                at_seconds: 1200.0,
                action: Action::RemoveAccessPolicy {
                    key_vault: "kv-ade-ap-weu".into(),
                    object_id: Some("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0".into()),
                },
            },
        ],
    };
    let start = sim.now();
    let report = run_scenario(&sim, &scenario, rec.clone())
        .await
        .expect("runs");
    assert_eq!(report.executed.len(), 3);
    assert!(sim.now() - start >= chrono::Duration::seconds(1200));
    let msgs = rec.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].queue, "vm-encryption-events");
    assert_eq!(
        (msgs[1].queue.as_str(), msgs[1].message_id.as_str()),
        ("restore-requests", "r1")
    );
    let state = sim.state();
    let policies = &state["world"]["key_vaults"]["kv-ade-ap-weu"]["access_policies"];
    assert_eq!(policies.as_array().map(Vec::len), Some(0), "{policies}");

    let bad = Scenario {
        name: "bad".into(),
        actions: vec![TimedAction {
            at_seconds: 0.0,
            action: Action::EnableAde {
                vm: "nope".into(),
                variant: AdeVariant::Bek,
                key_vault: "kv-ade-ap-weu".into(),
                kek: None,
            },
        }],
    };
    let err = run_scenario(&sim, &bad, rec).await.expect_err("unknown vm");
    assert!(err.to_string().contains("nope"), "{err}");
}
