mod common;

use ade_backup_sim::world::codes;
use common::*;
use serde_json::json;

const KV_AP: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-security/providers/Microsoft.KeyVault/vaults/kv-ade-ap-weu";
const KV_RBAC: &str = "/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg-security/providers/Microsoft.KeyVault/vaults/kv-ade-rbac-weu";

#[tokio::test]
async fn backup_job_progresses_and_creates_a_recovery_point() {
    let h = Harness::sample().await;
    protect(&h, RSV_WEU, S1, "rg-app-plain", "plain-win-02").await;
    let (s, _, item) = h
        .get(&item_path(RSV_WEU, "rg-app-plain", "plain-win-02"), RS_API)
        .await;
    assert_eq!(s, 200);
    assert_eq!(item["properties"]["protectionState"], "IRPending");
    assert_eq!(
        item["name"],
        "VM;iaasvmcontainerv2;rg-app-plain;plain-win-02"
    );

    let job_id = backup_now(&h, RSV_WEU, "rg-app-plain", "plain-win-02").await;
    let j = job(&h, RSV_WEU, &job_id).await;
    assert_eq!(j["properties"]["status"], "InProgress");
    assert_eq!(j["properties"]["operation"], "Backup");
    assert_eq!(j["properties"]["jobType"], "AzureIaaSVMJob");

    // A second backup while one runs is refused, as Azure does.
    let (_, headers, _) = h
        .post(
            &format!(
                "{}/backup",
                item_path(RSV_WEU, "rg-app-plain", "plain-win-02")
            ),
            RS_API,
            json!({"properties": {"objectType": "IaasVMBackupRequest"}}),
        )
        .await;
    h.advance_secs(10);
    let (_, _, op) = h.get_abs(&header(&headers, "azure-asyncoperation")).await;
    assert_eq!(op["status"], "Failed");
    assert_eq!(op["error"]["code"], codes::BACKUP_IN_PROGRESS);

    // After the snapshot phase: an instant RP exists, job still transferring.
    h.advance_secs(6 * 60);
    let rp_path = format!(
        "{}/recoveryPoints",
        item_path(RSV_WEU, "rg-app-plain", "plain-win-02")
    );
    let (_, _, rps) = h.get(&rp_path, RS_API).await;
    let tiers = &rps["value"][0]["properties"]["recoveryPointTierDetails"];
    assert_eq!(tiers.as_array().map(Vec::len), Some(1), "{rps}");
    assert_eq!(tiers[0]["type"], "InstantRP");
    assert_eq!(
        job(&h, RSV_WEU, &job_id).await["properties"]["status"],
        "InProgress"
    );

    h.advance_secs(20 * 60);
    let j = job(&h, RSV_WEU, &job_id).await;
    assert_eq!(j["properties"]["status"], "Completed");
    assert!(j["properties"]["endTime"].is_string());
    let (_, _, rps) = h.get(&rp_path, RS_API).await;
    assert_eq!(rps["value"].as_array().map(Vec::len), Some(1));
    let rp = &rps["value"][0]["properties"];
    assert_eq!(rp["objectType"], "IaasVMRecoveryPoint");
    assert_eq!(rp["isSourceVMEncrypted"], false);
    assert_eq!(rp["recoveryPointTierDetails"][1]["type"], "HardenedRP");
    let (_, _, item) = h
        .get(&item_path(RSV_WEU, "rg-app-plain", "plain-win-02"), RS_API)
        .await;
    assert_eq!(item["properties"]["protectionState"], "Protected");
    assert_eq!(item["properties"]["lastBackupStatus"], "Completed");

    let (_, _, jobs) = h
        .get(
            &format!(
                "{RSV_WEU}/backupJobs?$filter=operation eq 'Backup' and status eq 'Completed'"
            ),
            RS_API,
        )
        .await;
    let ids: Vec<&str> = jobs["value"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(ids, vec![job_id.as_str()]);
    assert!(
        jobs["value"][0]["properties"].get("extendedInfo").is_none(),
        "list omits extendedInfo"
    );
    let stats = h.sim.stats();
    assert_eq!(stats.writes.protection_puts, 1);
    assert_eq!(stats.writes.backup_now_calls, 2);
}

#[tokio::test]
async fn ade_backup_needs_key_vault_access_for_backup_management_service() {
    let h = Harness::sample().await;
    // BMS object id, resolved as a client would.
    let (s, _, sp) = h
        .send(
            reqwest::Method::GET,
            &format!(
                "{}/v1.0/servicePrincipals(appId='262044b1-e2ce-469f-a196-69ab7ada62d3')",
                h.base
            ),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let bms = sp["id"].as_str().expect("object id").to_string();
    assert_eq!(bms, h.sim.backup_management_object_id());

    // web-win-02: BEK in an access-policy vault without a BMS policy. Protection succeeds...
    protect(&h, RSV_WEU, S1, "rg-app-web", "web-win-02").await;
    let job_id = backup_now(&h, RSV_WEU, "rg-app-web", "web-win-02").await;
    h.advance_secs(30 * 60);
    let j = job(&h, RSV_WEU, &job_id).await;
    assert_eq!(j["properties"]["status"], "Failed");
    let code = j["properties"]["errorDetails"][0]["errorCode"]
        .as_str()
        .expect("code");
    assert_eq!(code, codes::KEY_VAULT_PERMISSIONS);
    assert!(code.eq_ignore_ascii_case("UserErrorKeyVaultPermissionsNotConfigured"));
    let (_, _, item) = h
        .get(&item_path(RSV_WEU, "rg-app-web", "web-win-02"), RS_API)
        .await;
    assert_eq!(item["properties"]["lastBackupStatus"], "Failed");
    assert_eq!(item["properties"]["healthStatus"], "ActionRequired");

    // ...until the access policy is added (merge: existing policies stay).
    let (s, _, added) = h
        .put(
            &format!("{KV_AP}/accessPolicies/add"),
            "2023-07-01",
            json!({"properties": {"accessPolicies": [{"tenantId": h.sim.tenant_id(), "objectId": bms, "permissions": {"secrets": ["get", "list"]}}]}}),
        )
        .await;
    assert_eq!(s, 200, "{added}");
    let (_, _, kv) = h.get(KV_AP, "2023-07-01").await;
    assert_eq!(
        kv["properties"]["accessPolicies"].as_array().map(Vec::len),
        Some(2),
        "merge keeps the existing policy"
    );
    assert_eq!(kv["properties"]["enabledForDiskEncryption"], true);

    let job_id = backup_now(&h, RSV_WEU, "rg-app-web", "web-win-02").await;
    h.advance_secs(30 * 60);
    assert_eq!(
        job(&h, RSV_WEU, &job_id).await["properties"]["status"],
        "Completed"
    );
    let (_, _, rps) = h
        .get(
            &format!(
                "{}/recoveryPoints",
                item_path(RSV_WEU, "rg-app-web", "web-win-02")
            ),
            RS_API,
        )
        .await;
    let rp = &rps["value"][0]["properties"];
    assert_eq!(rp["isSourceVMEncrypted"], true);
    assert!(rp["keyAndSecret"]["bekDetails"]["secretUrl"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://kv-ade-ap-weu.vault.azure.net/secrets/")));
    assert!(rp["keyAndSecret"].get("kekDetails").is_none());
    assert_eq!(h.sim.stats().writes.access_policy_writes, 1);
}

#[tokio::test]
async fn rbac_vault_needs_a_role_with_the_backup_data_actions() {
    let h = Harness::sample().await;
    let bms = h.sim.backup_management_object_id();
    protect(&h, RSV_WEU, S1, "rg-app-db", "db-win-02").await;
    let role_guid = "5c1f0d6e-8f1a-4c43-9a0b-2f6f1f3e7a10";
    let role_id = format!(
        "/subscriptions/{S1}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"
    );
    // A role missing one dataAction is not enough.
    let (s, _, _) = h
        .put(&role_id, "2022-04-01", json!({"properties": {"roleName": "ade-backup partial", "permissions": [{"actions": [], "dataActions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]}], "assignableScopes": [format!("/subscriptions/{S1}")]}}))
        .await;
    assert_eq!(s, 201);
    let ra =
        |guid: &str| format!("{KV_RBAC}/providers/Microsoft.Authorization/roleAssignments/{guid}");
    let body = json!({"properties": {"roleDefinitionId": role_id, "principalId": bms, "principalType": "ServicePrincipal"}});
    let (s, _, created) = h
        .put(
            &ra("0f6a4f5e-1111-4c1d-8f2a-3b4c5d6e7f80"),
            "2022-04-01",
            body.clone(),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(created["properties"]["scope"], KV_RBAC);
    let job_id = backup_now(&h, RSV_WEU, "rg-app-db", "db-win-02").await;
    h.advance_secs(30 * 60);
    assert_eq!(
        job(&h, RSV_WEU, &job_id).await["properties"]["errorDetails"][0]["errorCode"],
        codes::KEY_VAULT_PERMISSIONS
    );

    // Update the role to the five documented dataActions: now it works.
    let five = ade_backup_sim::world::BACKUP_DATA_ACTIONS;
    let (s, _, _) = h
        .put(&role_id, "2022-04-01", json!({"properties": {"roleName": "ade-backup partial", "permissions": [{"actions": [], "dataActions": five}], "assignableScopes": [format!("/subscriptions/{S1}")]}}))
        .await;
    assert_eq!(s, 200);
    let job_id = backup_now(&h, RSV_WEU, "rg-app-db", "db-win-02").await;
    h.advance_secs(30 * 60);
    assert_eq!(
        job(&h, RSV_WEU, &job_id).await["properties"]["status"],
        "Completed"
    );

    // Same GUID again: idempotent. Same principal+role+scope under another GUID: 409.
    let (s, _, _) = h
        .put(
            &ra("0f6a4f5e-1111-4c1d-8f2a-3b4c5d6e7f80"),
            "2022-04-01",
            body.clone(),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _, err) = h
        .put(
            &ra("9a8b7c6d-2222-4c1d-8f2a-3b4c5d6e7f80"),
            "2022-04-01",
            body,
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(err["error"]["code"], "RoleAssignmentExists");
    let (s, _, list) = h
        .get(
            &format!(
                "{KV_RBAC}/providers/Microsoft.Authorization/roleAssignments?$filter=atScope()"
            ),
            "2022-04-01",
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn kek_from_a_certificate_is_unsupported_and_denied_vaults_return_403() {
    let h = Harness::sample().await;
    // cert-win-01 is protected in the fleet; give BMS full access so only the KEK kind matters.
    let bms = h.sim.backup_management_object_id();
    let (s, _, _) = h
        .put(&format!("{KV_AP}/accessPolicies/add"), "2023-07-01", json!({"properties": {"accessPolicies": [{"tenantId": h.sim.tenant_id(), "objectId": bms, "permissions": {"keys": ["get", "list", "backup"], "secrets": ["get", "list", "backup"]}}]}}))
        .await;
    assert_eq!(s, 200);
    let job_id = backup_now(&h, RSV_WEU, "rg-app-cert", "cert-win-01").await;
    h.advance_secs(30 * 60);
    let j = job(&h, RSV_WEU, &job_id).await;
    assert_eq!(j["properties"]["status"], "Failed");
    assert_eq!(
        j["properties"]["errorDetails"][0]["errorCode"],
        codes::KEK_FROM_CERTIFICATE
    );

    let locked = format!("/subscriptions/{S2}/resourceGroups/rg-locked/providers/Microsoft.KeyVault/vaults/kv-ade-locked/accessPolicies/add");
    let (s, _, err) = h.put(&locked, "2023-07-01", json!({"properties": {"accessPolicies": [{"tenantId": h.sim.tenant_id(), "objectId": bms, "permissions": {"secrets": ["get"]}}]}})).await;
    assert_eq!(s, 403);
    assert_eq!(err["error"]["code"], "AuthorizationFailed");
    assert_eq!(
        h.sim.stats().writes.access_policy_writes,
        1,
        "a refused write is not counted"
    );
}
