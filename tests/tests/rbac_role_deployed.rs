//! RBAC-model Key Vaults when ade-backup's identity may not write role definitions (the
//! least-privilege deployment: infra/protected-subscription.bicep creates the custom Key Vault
//! backup role and grants no `roleDefinitions/write`). The refused PUT is not a failure: the
//! assignment uses the role the deployment created; when the deployment did not create it, the VM
//! is blocked with the fix, never left half-protected.

use ade_backup_functions::domain::kv_access;
use ade_backup_shared::arm::authorization::RoleDefinitionProperties;
use ade_backup_shared::arm::scope::SubscriptionId;
use ade_backup_sim::{FaultConfig, FaultRule};
use ade_backup_test_support::sim_stack::{vm_id, SimStack, S1};
use std::collections::BTreeMap;
use std::time::Duration;

/// db-win-02: Windows, BEK only, on the RBAC vault kv-ade-rbac-weu, not protected in the sample.
fn db_win_02() -> String {
    vm_id(S1, "rg-app-db", "db-win-02")
}

/// Every role-definition write is refused with 403, as for an identity without
/// `Microsoft.Authorization/roleDefinitions/write`.
fn refuse_role_definition_writes(stack: &SimStack) {
    let mut operations = BTreeMap::new();
    operations.insert(
        "roleDefinition.put".to_string(),
        FaultRule {
            error_rate: 1.0,
            error_status: 403,
            ..FaultRule::default()
        },
    );
    stack
        .sim
        .set_faults(FaultConfig {
            operations,
            seed: Some(7),
            ..FaultConfig::default()
        })
        .expect("valid faults");
}

/// What the Bicep deployment does: the custom role, under the GUID the code computes.
async fn deploy_custom_role(stack: &SimStack) {
    let sub = SubscriptionId::parse(S1).expect("subscription");
    let props = RoleDefinitionProperties::backup_key_vault_reader(
        &format!("{} ({S1})", kv_access::BACKUP_ROLE_NAME),
        sub,
    );
    stack
        .ctx
        .arm
        .put_role_definition(sub, kv_access::custom_role_definition_uuid(S1), &props)
        .await
        .expect("the deployment creates the role");
}

#[tokio::test]
async fn a_refused_role_definition_write_uses_the_role_the_deployment_created() {
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    deploy_custom_role(&stack).await;
    let created = stack.sim.stats().writes.role_definition_writes;
    refuse_role_definition_writes(&stack);

    let rec = stack.protect(&db_win_02()).await;

    assert_eq!(rec["status"], "protected", "{rec}");
    let s = stack.sim.stats();
    assert_eq!(
        s.writes.role_definition_writes, created,
        "the refused PUT changed nothing"
    );
    assert_eq!(s.writes.role_assignment_writes, 1, "one assignment: {s:?}");
    assert_eq!(s.writes.protection_puts, 1);
    assert_eq!(s.writes.backup_now_calls, 1);
}

#[tokio::test]
async fn without_the_deployed_role_the_vm_is_blocked_with_the_fix() {
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    refuse_role_definition_writes(&stack);

    let rec = stack.protect(&db_win_02()).await;

    assert_eq!(rec["status"], "blocked", "{rec}");
    let text = rec.to_string();
    assert!(
        text.contains("protected-subscription.bicep")
            && text.contains("roleDefinitions/write")
            && text.contains(&kv_access::custom_role_definition_name(S1)),
        "the record names the role, the missing right and the fix: {rec}"
    );
    let s = stack.sim.stats();
    assert_eq!(s.writes.role_assignment_writes, 0, "{s:?}");
    assert_eq!(s.writes.protection_puts, 0, "never protected half-way");
    assert_eq!(s.writes.backup_now_calls, 0);
}
