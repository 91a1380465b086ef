mod common;

use ade_backup_sim::world::codes;
use common::*;
use serde_json::{json, Value};

const SA: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stadebkpweu";

fn disk_states(vm: &Value) -> Vec<String> {
    vm["properties"]["instanceView"]["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .map(|d| {
            d["statuses"][1]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn restore(
    h: &Harness,
    rg: &str,
    vm: &str,
    rp: &str,
    recovery_type: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    h.post(
        &format!("{}/recoveryPoints/{rp}/restore", item_path(RSV_WEU, rg, vm)),
        RS_API,
        json!({"properties": {"objectType": "IaasVMRestoreRequest", "recoveryPointId": rp, "recoveryType": recovery_type, "sourceResourceId": vm_id(S1, rg, vm), "storageAccountId": SA, "region": "westeurope", "targetResourceGroupId": format!("/subscriptions/{S1}/resourceGroups/rg-restore"), "originalStorageAccountOption": false, "encryptionDetails": {"encryptionEnabled": true}}}),
    )
    .await
}

#[tokio::test]
async fn restore_disks_then_deploy_then_reinstall_ade_unlocks_linux_data_disks() {
    let h = Harness::sample().await;
    // web-lnx-01: Linux, BEK, protected in the fleet with an existing recovery point.
    let (_, _, rps) = h
        .get(
            &format!(
                "{}/recoveryPoints",
                item_path(RSV_WEU, "rg-app-web", "web-lnx-01")
            ),
            RS_API,
        )
        .await;
    let rp = &rps["value"][0];
    assert_eq!(rp["properties"]["isSourceVMEncrypted"], true);
    let rp_name = rp["name"].as_str().expect("rp").to_string();
    let secret_vault = rp["properties"]["keyAndSecret"]["bekDetails"]["secretVaultId"]
        .as_str()
        .expect("vault")
        .to_string();

    let (s, _, err) = restore(
        &h,
        "rg-app-web",
        "web-lnx-01",
        &rp_name,
        "AlternateLocation",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["code"], codes::RESTORE_ENCRYPTED_VM);

    let (s, headers, _) = restore(&h, "rg-app-web", "web-lnx-01", &rp_name, "RestoreDisks").await;
    assert_eq!(s, 202);
    h.advance_secs(10);
    let (_, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    let job_id = op["properties"]["jobId"].as_str().expect("job").to_string();
    assert_eq!(
        job(&h, RSV_WEU, &job_id).await["properties"]["status"],
        "InProgress"
    );
    h.advance_secs(31 * 60);
    let j = job(&h, RSV_WEU, &job_id).await;
    assert_eq!(j["properties"]["status"], "Completed", "{j}");
    assert_eq!(j["properties"]["operation"], "Restore");
    let bag = &j["properties"]["extendedInfo"]["propertyBag"];
    assert_eq!(bag["Target Storage Account Name"], "stadebkpweu");
    assert!(bag["Config Blob Uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://stadebkpweu.blob.core.windows.net/")));
    let template = bag["Template Blob Uri"]
        .as_str()
        .expect("template")
        .to_string();

    let dep = format!("/subscriptions/{S1}/resourcegroups/rg-restore/providers/Microsoft.Resources/deployments/restore-web-lnx-01");
    let (s, _, err) = h.put(&dep, "2024-03-01", json!({"properties": {"mode": "Incremental", "templateLink": {"uri": "https://example.invalid/t.json"}}})).await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["code"], "InvalidContentLink");
    let (s, headers, d) = h
        .put(&dep, "2024-03-01", json!({"properties": {"mode": "Incremental", "templateLink": {"uri": format!("{template}?sv=2022-11-02&sig=redacted")}, "parameters": {"VirtualMachineName": {"value": "web-lnx-01-restored"}}}}))
        .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["properties"]["provisioningState"], "Running");
    let status_url = header(&headers, "azure-asyncoperation");
    let (_, _, st) = h.get_abs(&status_url).await;
    assert_eq!(st["status"], "Running");
    h.advance_secs(4 * 60);
    let (_, _, st) = h.get_abs(&status_url).await;
    assert_eq!(st["status"], "Succeeded");
    let (_, _, d) = h.get(&dep, "2024-03-01").await;
    let new_vm = vm_id(S1, "rg-restore", "web-lnx-01-restored");
    assert_eq!(d["properties"]["outputResources"][0]["id"], new_vm);

    let (s, _, vm) = h
        .get(&format!("{new_vm}?$expand=instanceView"), "2024-07-01")
        .await;
    assert_eq!(s, 200);
    assert!(
        vm["properties"]["instanceView"]["extensions"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "restored VM has no ADE extension"
    );
    let states = disk_states(&vm);
    assert_eq!(
        states[0], "EncryptionState/notEncrypted",
        "Linux VolumeType Data leaves the OS disk alone"
    );
    assert!(
        states[1..].iter().all(|s| s == "EncryptionState/locked"),
        "{states:?}"
    );

    // Reinstalling ADE with the original settings unlocks the data disks.
    let kv_name = secret_vault.rsplit('/').next().expect("name");
    let (s, headers, _) = h
        .put(
            &format!("{new_vm}/extensions/AzureDiskEncryptionForLinux"),
            "2024-07-01",
            json!({"location": "westeurope", "properties": {"publisher": "Microsoft.Azure.Security", "type": "AzureDiskEncryptionForLinux", "typeHandlerVersion": "1.1", "autoUpgradeMinorVersion": true,
                "settings": {"EncryptionOperation": "EnableEncryption", "KeyVaultURL": format!("https://{kv_name}.vault.azure.net/"), "KeyVaultResourceId": secret_vault, "VolumeType": "Data"}}}),
        )
        .await;
    assert_eq!(s, 201);
    let op_url = header(&headers, "azure-asyncoperation");
    assert!(op_url.contains("/providers/Microsoft.Compute/locations/westeurope/operations/"));
    let (_, _, op) = h.get_abs(&op_url).await;
    assert_eq!(op["status"], "InProgress");
    h.advance_secs(11 * 60);
    let (_, _, op) = h.get_abs(&op_url).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    let (_, _, vm) = h
        .get(&format!("{new_vm}?$expand=instanceView"), "2024-07-01")
        .await;
    let states = disk_states(&vm);
    assert!(
        states[1..].iter().all(|s| s == "EncryptionState/encrypted"),
        "{states:?}"
    );
    let stats = h.sim.stats();
    assert_eq!(
        (
            stats.writes.restores,
            stats.writes.deployments,
            stats.writes.extension_puts
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn ade_settings_of_vms_over_the_disk_limits_fail_to_restore() {
    let h = Harness::sample().await;
    let bms = h.sim.backup_management_object_id();
    let kv = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-security/providers/Microsoft.KeyVault/vaults/kv-ade-ap-weu";
    let (s, _, _) = h.put(&format!("{kv}/accessPolicies/add"), "2023-07-01", json!({"properties": {"accessPolicies": [{"tenantId": h.sim.tenant_id(), "objectId": bms, "permissions": {"secrets": ["get", "list"]}}]}})).await;
    assert_eq!(s, 200);
    for vm in ["big-lnx-manydisks", "big-win-hugedisk"] {
        protect(&h, RSV_WEU, S1, "rg-app-big", vm).await;
        let job_id = backup_now(&h, RSV_WEU, "rg-app-big", vm).await;
        h.advance_secs(30 * 60);
        assert_eq!(
            job(&h, RSV_WEU, &job_id).await["properties"]["status"],
            "Completed",
            "backup of {vm}"
        );
        let (_, _, rps) = h
            .get(
                &format!("{}/recoveryPoints", item_path(RSV_WEU, "rg-app-big", vm)),
                RS_API,
            )
            .await;
        let rp = rps["value"][0]["name"].as_str().expect("rp").to_string();
        let (s, headers, _) = restore(&h, "rg-app-big", vm, &rp, "RestoreDisks").await;
        assert_eq!(s, 202);
        h.advance_secs(10);
        let (_, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
        let job_id = op["properties"]["jobId"].as_str().expect("job").to_string();
        h.advance_secs(31 * 60);
        let j = job(&h, RSV_WEU, &job_id).await;
        assert_eq!(j["properties"]["status"], "Failed", "{vm}");
        assert_eq!(
            j["properties"]["errorDetails"][0]["errorCode"],
            codes::ENCRYPTED_RESTORE_DISK_LIMITS
        );
    }
}
