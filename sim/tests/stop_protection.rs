//! Stop protection (retain data) and resume, and the disk selection of the protect PUT: the ARM PUT shape of
//! `AzureIaasVm/StopProtection.json`, the `stopProtection` scenario action, Backup now refused
//! while stopped, Resource Graph rows, and resuming with a policy.

mod common;

use ade_backup_sim::scenario::{Action, Scenario, TimedAction};
use ade_backup_sim::world::codes;
use ade_backup_sim::{run_scenario, RecordingSender};
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

fn stop_body(source: &str) -> Value {
    // As az cli sends it (`policyId: ""`); the spec example leaves policyId out.
    json!({"properties": {
        "protectedItemType": "Microsoft.Compute/virtualMachines",
        "sourceResourceId": source,
        "protectionState": "ProtectionStopped",
        "policyId": ""
    }})
}

fn protect_body(policy: &str, source: &str) -> Value {
    json!({"properties": {
        "protectedItemType": "Microsoft.Compute/virtualMachines",
        "sourceResourceId": source,
        "policyId": format!("{RSV_WEU}/backupPolicies/{policy}")
    }})
}

/// PUT `body` on the item, let the LRO finish, and return the operation's job id.
async fn put_and_wait(h: &Harness, rg: &str, vm: &str, body: Value) -> String {
    let (status, headers, _) = h.put(&item_path(RSV_WEU, rg, vm), RS_API, body).await;
    assert_eq!(status, 202, "PUT {vm}");
    assert!(header(&headers, "location").contains("/operationResults/"));
    h.advance_secs(120);
    let (s, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    assert_eq!(s, 200);
    assert_eq!(op["status"], "Succeeded", "{op}");
    op["properties"]["jobId"]
        .as_str()
        .expect("jobId")
        .to_string()
}

async fn item(h: &Harness, rg: &str, vm: &str) -> Value {
    let (s, _, i) = h.get(&item_path(RSV_WEU, rg, vm), RS_API).await;
    assert_eq!(s, 200, "{i}");
    i
}

async fn graph_item(h: &Harness, vm: &str) -> Value {
    let (s, _, v) = h
        .send(
            reqwest::Method::POST,
            &h.url("/providers/Microsoft.ResourceGraph/resources", "2022-10-01"),
            Some(json!({"query": format!("recoveryservicesresources | where type =~ 'microsoft.recoveryservices/vaults/backupfabrics/protectioncontainers/protecteditems' and properties.friendlyName =~ '{vm}' | project id, state = properties.protectionState, policyId = properties.policyId, policyName = properties.policyName")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let rows = v["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{v}");
    rows[0].clone()
}

/// Backup now on the item; returns the final async operation body.
async fn backup_now_op(h: &Harness, rg: &str, vm: &str) -> Value {
    let (status, headers, _) = h
        .post(
            &format!("{}/backup", item_path(RSV_WEU, rg, vm)),
            RS_API,
            json!({"properties": {"objectType": "IaasVMBackupRequest"}}),
        )
        .await;
    assert_eq!(status, 202);
    h.advance_secs(10);
    let (_, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    op
}

#[tokio::test]
async fn stop_via_put_retains_data_refuses_backup_and_resumes_with_a_policy() {
    let h = Harness::sample().await;
    let (rg, vm) = ("rg-app-web", "web-win-01");
    let source = vm_id(S1, rg, vm);
    assert_eq!(
        item(&h, rg, vm).await["properties"]["protectionState"],
        "Protected"
    );

    let job_id = put_and_wait(&h, rg, vm, stop_body(&source)).await;
    let j = job(&h, RSV_WEU, &job_id).await;
    assert_eq!(j["properties"]["operation"], "DisableBackup");
    assert_eq!(j["properties"]["status"], "Completed");

    let stopped = item(&h, rg, vm).await;
    let p = &stopped["properties"];
    assert_eq!(p["protectionState"], "ProtectionStopped");
    assert_eq!(p["policyId"], "");
    assert_eq!(p["policyName"], "");
    assert_eq!(p["extendedInfo"]["recoveryPointCount"], 3, "{stopped}");
    let (_, _, rps) = h
        .get(
            &format!("{}/recoveryPoints", item_path(RSV_WEU, rg, vm)),
            RS_API,
        )
        .await;
    assert_eq!(rps["value"].as_array().map(Vec::len), Some(3), "retained");

    let row = graph_item(&h, vm).await;
    assert_eq!(row["state"], "ProtectionStopped", "{row}");
    assert_eq!(row["policyId"], "", "{row}");
    assert_eq!(row["policyName"], "", "{row}");

    // The policy no longer counts the stopped item.
    let (_, _, policy) = h
        .get(&format!("{RSV_WEU}/backupPolicies/DefaultPolicy"), RS_API)
        .await;
    let count_stopped = policy["properties"]["protectedItemsCount"].clone();

    let op = backup_now_op(&h, rg, vm).await;
    assert_eq!(op["status"], "Failed", "{op}");
    assert_eq!(op["error"]["code"], codes::PROTECTION_STOPPED);

    // Resume: a PUT with a policy, as for a new protection.
    put_and_wait(&h, rg, vm, protect_body("DefaultPolicy", &source)).await;
    let resumed = item(&h, rg, vm).await;
    let p = &resumed["properties"];
    assert_eq!(p["protectionState"], "Protected", "kept recovery points");
    assert_eq!(p["policyName"], "DefaultPolicy");
    assert_eq!(
        p["policyId"],
        format!("{RSV_WEU}/backupPolicies/DefaultPolicy")
    );
    assert_eq!(p["extendedInfo"]["recoveryPointCount"], 3);
    assert_eq!(graph_item(&h, vm).await["state"], "Protected");
    let (_, _, policy) = h
        .get(&format!("{RSV_WEU}/backupPolicies/DefaultPolicy"), RS_API)
        .await;
    assert_eq!(
        policy["properties"]["protectedItemsCount"].as_u64(),
        count_stopped.as_u64().map(|c| c + 1)
    );
    let op = backup_now_op(&h, rg, vm).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(h.sim.stats().writes.protection_puts, 2);
}

#[tokio::test]
async fn a_stopped_item_without_recovery_points_resumes_as_ir_pending() {
    let h = Harness::sample().await;
    let (rg, vm) = ("rg-app-plain", "plain-win-02");
    let source = vm_id(S1, rg, vm);
    protect(&h, RSV_WEU, S1, rg, vm).await;
    put_and_wait(&h, rg, vm, stop_body(&source)).await;
    assert_eq!(
        item(&h, rg, vm).await["properties"]["protectionState"],
        "ProtectionStopped"
    );
    put_and_wait(&h, rg, vm, protect_body("EnhancedPolicy", &source)).await;
    let p = item(&h, rg, vm).await["properties"].clone();
    assert_eq!(p["protectionState"], "IRPending");
    assert_eq!(p["policyName"], "EnhancedPolicy");
}

#[tokio::test]
async fn stop_requests_that_cannot_apply_are_rejected() {
    let h = Harness::sample().await;
    // Not protected: nothing to stop.
    let (s, _, e) = h
        .put(
            &item_path(RSV_WEU, "rg-app-web", "web-win-02"),
            RS_API,
            stop_body(&vm_id(S1, "rg-app-web", "web-win-02")),
        )
        .await;
    assert_eq!(s, 404, "{e}");
    assert_eq!(e["error"]["code"], "BMSUserErrorObjectNotFound");
    // sourceResourceId of another VM.
    let (s, _, e) = h
        .put(
            &item_path(RSV_WEU, "rg-app-web", "web-win-01"),
            RS_API,
            stop_body(&vm_id(S1, "rg-app-web", "web-lnx-01")),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sourceResourceId")),
        "{e}"
    );
    // A state the simulator does not model.
    let mut body = stop_body(&vm_id(S1, "rg-app-web", "web-win-01"));
    body["properties"]["protectionState"] = json!("BackupsSuspended");
    let (s, _, e) = h
        .put(
            &item_path(RSV_WEU, "rg-app-web", "web-win-01"),
            RS_API,
            body,
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("protectionState")),
        "{e}"
    );
    // Without protectionState a PUT must name a policy.
    let mut body = stop_body(&vm_id(S1, "rg-app-web", "web-win-01"));
    body["properties"]
        .as_object_mut()
        .expect("object")
        .remove("protectionState");
    let (s, _, e) = h
        .put(
            &item_path(RSV_WEU, "rg-app-web", "web-win-01"),
            RS_API,
            body,
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("policyId")),
        "{e}"
    );
    assert_eq!(
        item(&h, "rg-app-web", "web-win-01").await["properties"]["protectionState"],
        "Protected",
        "rejected requests change nothing"
    );
}

#[tokio::test]
async fn scenario_stops_protection_like_an_operator() {
    let h = Harness::sample().await;
    let rec = Arc::new(RecordingSender::new());
    let scenario = Scenario {
        name: "stop".into(),
        actions: vec![TimedAction {
            at_seconds: 0.0,
            action: Action::StopProtection {
                vm: "rg-app-web/web-lnx-01".into(),
            },
        }],
    };
    let report = run_scenario(&h.sim, &scenario, rec.clone())
        .await
        .expect("runs");
    assert_eq!(
        report.executed,
        vec!["stopProtection rg-app-web/web-lnx-01"]
    );
    let p = item(&h, "rg-app-web", "web-lnx-01").await["properties"].clone();
    assert_eq!(p["protectionState"], "ProtectionStopped");
    assert_eq!(p["policyId"], "");
    assert_eq!(p["extendedInfo"]["recoveryPointCount"], 1);
    let via_api = h
        .sim
        .protected_item(&vm_id(S1, "rg-app-web", "web-lnx-01"))
        .expect("known VM")
        .expect("protected item");
    assert_eq!(
        via_api["properties"]["protectionState"],
        "ProtectionStopped"
    );
    let (_, _, jobs) = h
        .get(
            &format!("{RSV_WEU}/backupJobs?$filter=operation eq 'DisableBackup'"),
            RS_API,
        )
        .await;
    assert_eq!(jobs["value"].as_array().map(Vec::len), Some(1), "{jobs}");
    assert!(rec.messages().is_empty(), "stopping publishes no event");

    let unprotected = Scenario {
        name: "unprotected".into(),
        actions: vec![TimedAction {
            at_seconds: 0.0,
            action: Action::StopProtection {
                vm: "web-win-02".into(),
            },
        }],
    };
    let err = run_scenario(&h.sim, &unprotected, rec)
        .await
        .expect_err("web-win-02 is not protected");
    assert!(err.to_string().contains("web-win-02"), "{err}");
    assert!(h
        .sim
        .protected_item("web-win-02")
        .expect("known VM")
        .is_none());
}

fn with_disks(mut body: Value, ext: Value) -> Value {
    body["properties"]["extendedProperties"] = ext;
    body
}

async fn selection(h: &Harness, rg: &str, vm: &str) -> Value {
    item(h, rg, vm).await["properties"]["extendedProperties"]["diskExclusionProperties"].clone()
}

/// recoveryservicesbackup `AzureIaaSVMProtectedItem.extendedProperties.diskExclusionProperties`:
/// a PUT without `extendedProperties` keeps the selection (as a policy change does); the reset
/// forms of az cli (`extendedProperties` without the selection) and Az PowerShell (an exclusion
/// list with no LUN) clear it; an encrypted VM refuses a selection that leaves disks out.
#[tokio::test]
async fn a_disk_selection_is_kept_by_a_plain_put_and_cleared_by_either_reset_form() {
    let h = Harness::sample().await;
    let (rg, vm) = ("rg-app-plain", "plain-win-02");
    let source = vm_id(S1, rg, vm);
    let exclude =
        json!({"diskExclusionProperties": {"diskLunList": [0], "isInclusionList": false}});
    let body = || protect_body("DefaultPolicy", &source);
    put_and_wait(&h, rg, vm, with_disks(body(), exclude.clone())).await;
    assert_eq!(selection(&h, rg, vm).await["diskLunList"], json!([0]));
    put_and_wait(&h, rg, vm, body()).await;
    assert_eq!(
        selection(&h, rg, vm).await["diskLunList"],
        json!([0]),
        "kept"
    );
    put_and_wait(&h, rg, vm, with_disks(body(), json!({}))).await;
    assert!(selection(&h, rg, vm).await.is_null(), "az cli reset");
    put_and_wait(&h, rg, vm, with_disks(body(), exclude.clone())).await;
    let reset = json!({"diskExclusionProperties": {"diskLunList": [], "isInclusionList": false}});
    put_and_wait(&h, rg, vm, with_disks(body(), reset.clone())).await;
    assert!(selection(&h, rg, vm).await.is_null(), "PowerShell reset");

    let (rg, vm) = ("rg-app-web", "web-win-01");
    let source = vm_id(S1, rg, vm);
    let body = protect_body("DefaultPolicy", &source);
    let (status, _, err) = h
        .put(
            &item_path(RSV_WEU, rg, vm),
            RS_API,
            with_disks(body.clone(), exclude),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], codes::DISK_EXCLUSION);
    put_and_wait(&h, rg, vm, with_disks(body, reset)).await;
    assert!(selection(&h, rg, vm).await.is_null());
}

/// Ids as Azure Backup spells them (issue 14, item 7): with `varied_casing`, a protect PUT's
/// headers say `iaasvmcontainer;iaasVMContainerV2;{RG};{vm}` under `resourcegroups/{RG}`, the
/// item's body says `IaasVMContainer;iaasvmcontainerv2;…` / `VM;iaasvmcontainerv2;…`, and the
/// headers still lead to the operation.
#[tokio::test]
async fn varied_casing_spells_item_ids_as_azure_backup_does() {
    let h = Harness::start(
        ade_backup_sim::Fleet::sample(),
        ade_backup_sim::SimOptions {
            throttling: false,
            varied_casing: true,
            ..Default::default()
        },
    )
    .await;
    let (rg, vm) = ("rg-app-plain", "plain-win-02");
    let source = vm_id(S1, rg, vm);
    let (status, headers, _) = h
        .put(
            &item_path(RSV_WEU, rg, vm),
            RS_API,
            protect_body("DefaultPolicy", &source),
        )
        .await;
    assert_eq!(status, 202);
    let location = header(&headers, "location");
    assert!(
        location.contains("/resourcegroups/RG-BACKUP/providers/microsoft.recoveryservices/")
            && location.contains("/protectionContainers/iaasvmcontainer;iaasVMContainerV2;RG-APP-PLAIN;plain-win-02/protectedItems/vm;iaasVMContainerV2;RG-APP-PLAIN;plain-win-02/"),
        "{location}"
    );
    h.advance_secs(120);
    let (s, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    assert_eq!((s, op["status"].as_str()), (200, Some("Succeeded")), "{op}");
    let body = item(&h, rg, vm).await;
    let id = body["id"].as_str().expect("id");
    assert!(
        id.contains("/resourcegroups/RG-BACKUP/")
            && id.ends_with("/protectionContainers/IaasVMContainer;iaasvmcontainerv2;rg-app-plain;plain-win-02/protectedItems/VM;iaasvmcontainerv2;rg-app-plain;plain-win-02"),
        "{id}"
    );
}
