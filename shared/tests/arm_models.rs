//! The models parse the shapes Azure documents (fixtures copied from azure-rest-api-specs
//! examples and Azure docs; see shared/src/arm/EXAMPLES.md).

use ade_backup_shared::arm::{
    BackupJob, BackupPolicy, KeyVault, ProtectedItem, RecoveryPoint, ResourceGraphPage,
    VirtualMachine,
};
use serde::de::DeserializeOwned;

fn fixture<T: DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/arm/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

#[derive(serde::Deserialize)]
struct List<T> {
    value: Vec<T>,
}

#[test]
fn vm_get_example() {
    let vm: VirtualMachine = fixture("vm_get.json");
    assert_eq!(vm.name.as_deref(), Some("myVM"));
    assert_eq!(vm.tags.get("myTag1").map(String::as_str), Some("tagValue1"));
    assert_eq!(vm.os_type(), Some("Windows"));
    assert_eq!(vm.disk_count(), 3);
    assert_eq!(vm.max_disk_size_gb(), Some(100));
    assert_eq!(vm.data_disks()[1].lun, 1);
    assert!(vm.ade_extension().is_none());
    assert!(!vm.has_ade_disk_settings());
    assert_eq!(
        vm.resources[0].properties.extension_type.as_deref(),
        Some("CustomScriptExtension")
    );
    // The example's id has a `{subscription-id}` placeholder: not a valid ResourceId.
    assert!(vm.resource_id().is_none());
}

#[test]
fn vm_with_ade_and_instance_view() {
    let vm: VirtualMachine = fixture("vm_get_ade_instance_view.json");
    assert!(vm.resource_id().is_some());
    assert_eq!(vm.power_state(), Some("running"));
    assert_eq!(vm.provisioning_status(), Some("succeeded"));
    assert!(vm.has_ade_disk_settings());
    assert_eq!(vm.max_disk_size_gb(), Some(4096));
    let os = vm.os_disk().expect("os disk");
    let enc = os
        .encryption_settings
        .as_ref()
        .expect("encryption settings");
    assert_eq!(enc.enabled, Some(true));
    assert!(enc
        .disk_encryption_key
        .as_ref()
        .and_then(|k| k.secret_url.as_deref())
        .is_some_and(|u| u.starts_with("https://kv-app-01.vault.azure.net/secrets/")));
    assert!(enc
        .key_encryption_key
        .as_ref()
        .and_then(|k| k.source_vault.as_ref())
        .and_then(|v| v.id.as_deref())
        .is_some_and(|id| id.ends_with("/vaults/kv-app-01")));
    let iv = vm.properties.instance_view.as_ref().expect("instance view");
    assert_eq!(iv.disks.len(), 2);
    assert_eq!(iv.disks[0].encryption_settings.len(), 1);
    assert!(
        iv.disks[1].encryption_settings.is_empty(),
        "null becomes empty"
    );
    assert_eq!(
        iv.extensions[0].extension_type.as_deref(),
        Some("Microsoft.Azure.Security.AzureDiskEncryptionForLinux")
    );
    let ade = vm.ade_extension().expect("ADE extension");
    let s = ade.ade_settings().expect("ADE settings");
    assert_eq!(s.volume_type.as_deref(), Some("Data"));
    assert!(s.has_kek());
    assert!(s.kek_vault_resource_id.is_some());
    assert_eq!(s.encryption_operation.as_deref(), Some("EnableEncryption"));
}

#[test]
fn key_vault_get_example() {
    let kv: KeyVault = fixture("keyvault_get.json");
    assert_eq!(kv.location.as_deref(), Some("westus"));
    assert!(kv.enabled_for_disk_encryption());
    assert!(!kv.rbac_enabled());
    let p = kv.permissions_for("00000000-0000-0000-0000-000000000000");
    assert!(p.covers(&["get", "list", "backup"], &["get", "list", "backup"]));
    assert!(kv
        .permissions_for("11111111-0000-0000-0000-000000000000")
        .keys
        .is_empty());
}

#[test]
fn resource_graph_page_example() {
    let page: ResourceGraphPage = fixture("resource_graph_next_page.json");
    assert_eq!(page.total_records, Some(386));
    assert_eq!(page.data.len(), 3);
    assert!(page.skip_token.is_some());
    assert_eq!(page.data[1]["name"], "AATest");
}

#[test]
fn recovery_points_list_example() {
    let list: List<RecoveryPoint> = fixture("recovery_points_list.json");
    assert_eq!(list.value.len(), 2);
    let old = &list.value[0];
    assert_eq!(old.name.as_deref(), Some("22244821112382"));
    assert!(!old.has_snapshot_tier());
    assert!(old.has_vault_tier());
    assert!(!old.is_encrypted());
    let enc = &list.value[1];
    assert!(enc.is_encrypted());
    assert!(enc.has_snapshot_tier() && enc.has_vault_tier());
    assert!(enc.properties.recovery_point_time.is_some());
    assert_eq!(enc.properties.os_type.as_deref(), Some("Windows"));
}

#[test]
fn recovery_point_key_and_secret_shape() {
    // swagger KeyAndSecretDetails (no spec example carries it); the backup blobs are ignored.
    let rp: RecoveryPoint = serde_json::from_value(serde_json::json!({
        "name": "1",
        "properties": {
            "objectType": "IaasVMRecoveryPoint",
            "isSourceVMEncrypted": true,
            "keyAndSecret": {
                "kekDetails": {"keyUrl": "https://kv1.vault.azure.net/keys/kek/1", "keyVaultId": "/subscriptions/x/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv1", "keyBackupData": "AAAA"},
                "bekDetails": {"secretUrl": "https://kv1.vault.azure.net/secrets/bek/2", "secretVaultId": "/subscriptions/x/resourceGroups/r/providers/Microsoft.KeyVault/vaults/kv1", "secretData": "BBBB"},
                "encryptionAlgorithm": "RSA-OAEP"
            }
        }
    }))
    .expect("parses");
    let ks = rp.properties.key_and_secret.expect("keyAndSecret");
    assert_eq!(
        ks.kek_details.and_then(|k| k.key_url).as_deref(),
        Some("https://kv1.vault.azure.net/keys/kek/1")
    );
    assert!(ks.bek_details.and_then(|b| b.secret_vault_id).is_some());
}

#[test]
fn backup_policies_and_rpo() {
    let list: List<BackupPolicy> = fixture("backup_policies_list_v2.json");
    for p in &list.value {
        assert_eq!(p.rpo(), Some(chrono::Duration::hours(24)), "{:?}", p.name);
    }
    let hourly: BackupPolicy = fixture("backup_policy_enhanced_hourly.json");
    assert_eq!(hourly.properties.policy_type.as_deref(), Some("V2"));
    assert_eq!(hourly.rpo(), Some(chrono::Duration::hours(4)));
}

#[test]
fn protected_item_example() {
    let item: ProtectedItem = fixture("protected_item_get.json");
    let p = &item.properties;
    assert_eq!(p.protection_state.as_deref(), Some("IRPending"));
    assert_eq!(
        p.protected_item_type.as_deref(),
        Some("Microsoft.Compute/virtualMachines")
    );
    assert!(p
        .policy_id
        .as_deref()
        .is_some_and(|s| s.ends_with("/backupPolicies/DefaultPolicy")));
    assert_eq!(p.health_status.as_deref(), Some("Passed"));
    assert!(p.last_backup_time.is_some());
    assert_eq!(p.last_backup_status.as_deref(), Some(""));
}

#[test]
fn backup_job_example() {
    let job: BackupJob = fixture("backup_job_get.json");
    assert_eq!(
        job.name.as_deref(),
        Some("7ddead57-bcb9-4269-ac31-6a1b57588700")
    );
    assert!(job.is_terminal() && job.succeeded());
    assert_eq!(job.property("VM Name"), Some("uttestvmub1"));
    assert_eq!(
        job.properties
            .extended_info
            .as_ref()
            .map(|e| e.tasks_list.len()),
        Some(2)
    );
    assert!(job.properties.end_time.is_some());
    // errorDetails: errorCode may be an integer (AzureIaaSVMErrorInfo) or a string.
    let failed: BackupJob = serde_json::from_value(serde_json::json!({
        "name": "j",
        "properties": {"status": "Failed", "errorDetails": [
            {"errorCode": "UserErrorKeyVaultPermissionsNotConfigured", "errorString": "kv", "recommendations": ["grant"]},
            {"errorCode": 400002, "errorString": "x"}
        ]}
    }))
    .expect("parses");
    assert!(failed.is_terminal() && !failed.succeeded());
    assert_eq!(
        failed.error_code(),
        Some("UserErrorKeyVaultPermissionsNotConfigured")
    );
    assert_eq!(
        failed.properties.error_details[1].error_code.as_deref(),
        Some("400002")
    );
}

#[test]
fn role_assignments_and_definition_examples() {
    use ade_backup_shared::arm::{RoleAssignment, RoleDefinition};
    let list: List<RoleAssignment> = fixture("role_assignments_list.json");
    let a = &list.value[0];
    assert_eq!(a.properties.principal_type.as_deref(), Some("User"));
    // Responses name the definition without the subscription prefix: compare by GUID.
    assert_eq!(
        a.role_definition_guid(),
        Some(uuid::Uuid::parse_str("0b5fe924-9a61-425c-96af-cfe6e287ca2d").expect("guid"))
    );
    let d: RoleDefinition = fixture("role_definition_put.json");
    assert_eq!(d.properties.role_name, "Role name");
    assert_eq!(d.properties.permissions[0].data_actions, ["dataAction"]);
    assert_eq!(d.properties.assignable_scopes, ["/subscriptions/subId"]);
}

#[test]
fn deployment_example() {
    use ade_backup_shared::arm::Deployment;
    let d: Deployment = fixture("deployment_put.json");
    assert_eq!(d.state(), Some("Accepted"));
    assert!(!d.is_terminal());
    assert!(d.properties.timestamp.is_some());
    let failed: Deployment = serde_json::from_value(serde_json::json!({
        "properties": {"provisioningState": "Failed", "error": {"code": "DeploymentFailed", "message": "x",
            "details": [{"code": "OSProvisioningTimedOut", "message": "y"}]}}
    }))
    .expect("parses");
    assert!(failed.is_terminal());
    assert_eq!(failed.root_error_code(), Some("OSProvisioningTimedOut"));
}

#[test]
fn protectable_items_example() {
    use ade_backup_shared::arm::ProtectableItem;
    let list: List<ProtectableItem> = fixture("protectable_items_list.json");
    assert_eq!(
        list.value[0].properties.friendly_name.as_deref(),
        Some("iaasvm-1")
    );
    assert_eq!(
        list.value[0].properties.protection_state.as_deref(),
        Some("NotProtected")
    );
}
