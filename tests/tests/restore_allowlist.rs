//! The restore allowlist covers the source VM, the target and the network: a request is refused
//! `forbidden` on the field outside it, before anything is restored, and an allowed one completes.
//! Ids and names in the allowlist compare case-insensitively.

use ade_backup_functions::records::RestoreStatusUpdate;
use ade_backup_test_support::sim_stack::*;
use serde_json::json;

/// The sample fleet's network: `vnet-weu` in `rg-network` of S1, subnets `default` and `restore`.
fn subnet(rg: &str, name: &str) -> String {
    format!("/subscriptions/{S1}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/vnet-weu/subnets/{name}")
}

/// VMs of rg-app-web may be restored into rg-restore (staging in rg-backup), joining only the
/// subnet `vnet-weu/restore` — written in other letter cases than the requests use.
fn allowlist() -> String {
    json!({"entries": [{
        "subscription": S1.to_ascii_uppercase(),
        "sourceResourceGroups": ["RG-APP-WEB"],
        "resourceGroups": ["Rg-Restore", "RG-BACKUP"],
        "subnets": [subnet("RG-NETWORK", "RESTORE")],
    }]})
    .to_string()
}

/// A stack with the allowlist `allow` in which `vm` is protected.
async fn stack_protecting(allow: &str, vm: &str) -> SimStack {
    let stack = SimStack::start_with(&[("ADE_BACKUP_RESTORE_ALLOWLIST", allow)]).await;
    assert_eq!(stack.protect(vm).await["status"], "protected");
    stack
}

/// Restore jobs the simulator has started so far.
fn restores(stack: &SimStack) -> u64 {
    stack.sim.stats().writes.restores
}

/// Submits a request to restore `vm` (with the fields of `extra`) and returns the last status
/// sent for `ticket`.
async fn answer(
    stack: &SimStack,
    ticket: &str,
    vm: &str,
    extra: serde_json::Value,
) -> RestoreStatusUpdate {
    let body = restore_request(ticket, vm, extra);
    stack.submit(&format!("msg-{ticket}"), &body).await;
    stack
        .replies(REPLY_QUEUE)
        .into_iter()
        .map(|(_, u)| u)
        .rfind(|u| u.ticket_id == ticket)
        .unwrap_or_else(|| panic!("no answer for {ticket}"))
}

/// Asserts `u` is a `forbidden` refusal on `field` whose next action names `list`.
fn assert_forbidden(u: &RestoreStatusUpdate, field: &str, list: &str) {
    assert_eq!(u.status, "rejected", "{u:?}");
    assert_eq!(
        (u.reason.as_deref(), u.field.as_deref()),
        (Some("forbidden"), Some(field)),
        "{}",
        u.message
    );
    assert!(
        u.next_action.as_deref().is_some_and(|n| n.contains(list)),
        "{:?}",
        u.next_action
    );
}

#[tokio::test]
async fn a_vm_outside_the_source_groups_is_refused_on_vm_resource_id() {
    let vm = vm_id(S1, "rg-app-db", "db-win-01");
    let stack = stack_protecting(&allowlist(), &vm).await;
    let before = restores(&stack);
    let u = answer(&stack, "INC-SRC", &vm, json!({})).await;
    assert_forbidden(&u, "vmResourceId", "sourceResourceGroups");
    assert!(u.message.contains("rg-app-db"), "{}", u.message);
    assert_eq!(
        stack.restore_doc("INC-SRC").expect("a document").status,
        "rejected"
    );
    assert_eq!(restores(&stack), before, "nothing restored");
}

#[tokio::test]
async fn a_subnet_outside_the_allowlist_is_refused_on_target_subnet_id() {
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    let stack = stack_protecting(&allowlist(), &vm).await;
    let before = restores(&stack);
    // Another subnet of the allowed one's network, and a subnet in another resource group.
    for (ticket, other) in [
        ("INC-NET-1", subnet("rg-network", "default")),
        ("INC-NET-2", subnet("rg-app-web", "restore")),
    ] {
        let u = answer(&stack, ticket, &vm, json!({"targetSubnetId": other})).await;
        assert_forbidden(&u, "targetSubnetId", "subnets");
    }
    assert_eq!(restores(&stack), before, "nothing restored");
}

#[tokio::test]
async fn an_allowed_vm_target_and_subnet_restore_to_completion() {
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    let stack = stack_protecting(&allowlist(), &vm).await;
    let joining = json!({"targetSubnetId": subnet("rg-network", "restore")});
    let u = answer(&stack, "INC-OK", &vm, joining).await;
    assert_eq!(u.status, "completed", "{u:?}");
    let doc = stack.restore_doc("INC-OK").expect("a document");
    assert!(doc
        .request
        .and_then(|r| r.target_subnet_id)
        .is_some_and(|s| s.name() == "restore"));
}

#[tokio::test]
async fn an_entry_without_source_groups_lets_no_vm_be_restored() {
    // The format before the source side existed: targets only. Nothing is restorable until the
    // operator names the sources (`["*"]` for every resource group).
    let legacy = json!({"entries": [
        {"subscription": S1, "resourceGroups": ["rg-restore", "rg-backup"]}
    ]})
    .to_string();
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    let stack = stack_protecting(&legacy, &vm).await;
    let u = answer(&stack, "INC-LEGACY", &vm, json!({})).await;
    assert_forbidden(&u, "vmResourceId", "sourceResourceGroups");
}
