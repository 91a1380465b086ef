//! Every rejection rule, answered on the ticket (or dead-lettered when there is no ticket).

use ade_backup_functions::handlers::Outcome;
use ade_backup_functions::records::{restore_key, RestoreOperation};
use ade_backup_shared::ids::TicketId;
use ade_backup_test_support::sim_stack::*;
use serde_json::{json, Value};

fn request(ticket: &str, vm: &str, extra: Value) -> Value {
    let mut v = json!({
        "version": 1,
        "ticketId": ticket,
        "vmResourceId": vm,
        "targetResourceGroup": format!("/subscriptions/{S1}/resourceGroups/rg-restore"),
        "stagingStorageAccountId": STAGING_WEU,
        "replyTo": REPLY_QUEUE
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

fn doc(stack: &SimStack, ticket: &str) -> Option<RestoreOperation> {
    let t = TicketId::parse(ticket).expect("ticket");
    stack
        .state
        .json(&restore_key(&t))
        .map(|v| serde_json::from_value(v).expect("a restore document"))
}

/// Submits and returns the last status update sent for `ticket`.
async fn answer(
    stack: &SimStack,
    ticket: &str,
    body: &Value,
) -> ade_backup_functions::records::RestoreStatusUpdate {
    stack.pump.enqueue(
        "restore-requests",
        &format!("msg-{ticket}-{}", stack.pump.deliveries().len()),
        serde_json::to_vec(body).expect("json"),
    );
    stack.pump(2000).await;
    stack
        .replies(REPLY_QUEUE)
        .into_iter()
        .filter(|(_, u)| u.ticket_id == ticket)
        .map(|(_, u)| u)
        .next_back()
        .unwrap_or_else(|| panic!("no answer for {ticket}"))
}

/// (ticket, request for `vm`, expected rejection code, expected field): one case per rule.
fn rejection_cases(vm: &str) -> Vec<(&'static str, Value, &'static str, &'static str)> {
    let other_sub = format!("/subscriptions/{S2}/resourceGroups/rg-restore");
    vec![
        (
            "R-REPLACE",
            request("R-REPLACE", vm, json!({"restoreType": "replaceExisting"})),
            "unsupported-restore-type",
            "restoreType",
        ),
        (
            "R-CREATE",
            request("R-CREATE", vm, json!({"restoreType": "createVm"})),
            "unsupported-restore-type",
            "restoreType",
        ),
        (
            "R-FILE",
            request("R-FILE", vm, json!({"restoreType": "fileLevel"})),
            "unsupported-restore-type",
            "restoreType",
        ),
        (
            "R-XSUB",
            request("R-XSUB", vm, json!({"targetResourceGroup": other_sub})),
            "cross-subscription",
            "targetResourceGroup",
        ),
        (
            "R-FORBID",
            request(
                "R-FORBID",
                vm,
                json!({"targetResourceGroup": format!("/subscriptions/{S1}/resourceGroups/rg-secret")}),
            ),
            "forbidden",
            "targetResourceGroup",
        ),
        (
            "R-RPID",
            request("R-RPID", vm, json!({"recoveryPoint": "123456789"})),
            "recovery-point-not-found",
            "recoveryPoint",
        ),
        (
            "R-RPOLD",
            request(
                "R-RPOLD",
                vm,
                json!({"recoveryPoint": {"before": "2001-01-01T00:00:00Z"}}),
            ),
            "recovery-point-not-found",
            "recoveryPoint",
        ),
        (
            "R-NOTPROT",
            request(
                "R-NOTPROT",
                &vm_id(S1, "rg-app-web", "web-lnx-02"),
                json!({}),
            ),
            "not-protected",
            "vmResourceId",
        ),
        (
            "R-BADFIELD",
            request("R-BADFIELD", vm, json!({"targetVmName": "-bad name"})),
            "invalid-field",
            "targetVmName",
        ),
    ]
}

#[tokio::test]
async fn each_rule_rejects_with_its_code_and_field() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    stack.protect(&vm).await;
    let restores = stack.sim.stats().writes.restores;
    for (ticket, body, code, field) in rejection_cases(&vm) {
        let u = answer(&stack, ticket, &body).await;
        assert_eq!(u.status, "rejected", "{ticket}: {u:?}");
        assert_eq!(
            (u.reason.as_deref(), u.field.as_deref()),
            (Some(code), Some(field)),
            "{ticket}: {}",
            u.message
        );
        assert!(
            u.next_action.is_some(),
            "{ticket}: a human knows what to do"
        );
        let d = doc(&stack, ticket).expect("a rejected ticket has a document");
        assert_eq!(d.status, "rejected");
        assert_eq!(d.history.len(), 1);
    }
    assert_eq!(
        stack.sim.stats().writes.restores,
        restores,
        "nothing restored"
    );
    // Answered, never dead-lettered.
    assert!(stack
        .pump
        .deliveries()
        .iter()
        .filter(|d| d.queue == "restore-requests")
        .all(|d| matches!(d.outcome, Outcome::Completed(_))));
}

#[tokio::test]
async fn a_message_without_a_readable_ticket_is_dead_lettered_with_the_reason() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    for (id, body) in [
        ("no-ticket-1", request("bad/ticket", &vm, json!({}))),
        ("no-ticket-2", json!({"hello": "world"})),
    ] {
        stack.pump.enqueue(
            "restore-requests",
            id,
            serde_json::to_vec(&body).expect("json"),
        );
        stack.pump(10).await;
        let d = stack.pump.deliveries().pop().expect("delivered");
        match &d.outcome {
            Outcome::Failed {
                dead_letter: Some(dl),
                ..
            } => {
                assert_eq!(dl.reason, "InvalidRestoreRequest");
                assert!(dl.description.contains("ticketId"), "{}", dl.description);
            }
            other => panic!("{id}: expected a dead letter, got {other:?}"),
        }
        assert!(stack
            .state
            .json(&format!("deadletters/restore-requests/{id}.json"))
            .is_some());
    }
    assert!(stack.replies(REPLY_QUEUE).is_empty());
    assert!(stack
        .state
        .keys("")
        .iter()
        .all(|k| !k.starts_with("restores/")));
}

#[tokio::test]
async fn a_reused_ticket_with_another_request_is_a_conflict_and_changes_nothing() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    stack.protect(&vm).await;
    let first = answer(
        &stack,
        "INC-C",
        &request("INC-C", &vm, json!({"recoveryPoint": "123"})),
    )
    .await;
    assert_eq!(first.reason.as_deref(), Some("recovery-point-not-found"));
    let before = doc(&stack, "INC-C").expect("document");
    let replies_before = stack.replies(REPLY_QUEUE).len();
    let u = answer(
        &stack,
        "INC-C",
        &request("INC-C", &vm, json!({"targetVmName": "other"})),
    )
    .await;
    assert_eq!(u.status, "rejected");
    assert_eq!(u.reason.as_deref(), Some("conflict"));
    assert_eq!(u.sequence, 0, "not part of the ticket's history");
    assert_eq!(stack.replies(REPLY_QUEUE).len(), replies_before + 1);
    assert_eq!(doc(&stack, "INC-C").expect("document"), before, "untouched");
    // The original request again: its existing status, no new document entry.
    let again = answer(
        &stack,
        "INC-C",
        &request("INC-C", &vm, json!({"recoveryPoint": "123"})),
    )
    .await;
    assert_eq!(again, first);
    assert_eq!(doc(&stack, "INC-C").expect("document"), before);
}

#[tokio::test]
async fn vault_and_disk_limit_rules_need_azure_and_the_protection_record() {
    let stack = SimStack::start().await;
    // Over the ADE restore limits: protection records the warning, the restore is refused with
    // what to do by hand.
    let big = vm_id(S1, "rg-app-big", "big-lnx-manydisks");
    let rec = stack.protect(&big).await;
    assert!(
        rec["warnings"].to_string().contains("ade-restore-limit"),
        "{rec}"
    );
    let u = answer(&stack, "INC-BIG", &request("INC-BIG", &big, json!({}))).await;
    assert_eq!(
        u.reason.as_deref(),
        Some("ade-restore-limit"),
        "{}",
        u.message
    );
    assert!(u
        .next_action
        .as_deref()
        .is_some_and(|n| n.contains("KeyVaultURL")));

    // A Key Vault without enabledForDiskEncryption.
    let legacy = vm_id(S2, "rg-legacy", "legacy-win-01");
    stack.protect(&legacy).await;
    let u = answer(
        &stack,
        "INC-KV",
        &request(
            "INC-KV",
            &legacy,
            json!({"targetResourceGroup": format!("/subscriptions/{S2}/resourceGroups/rg-restore"), "stagingStorageAccountId": STAGING_NEU}),
        ),
    )
    .await;
    assert_eq!(
        u.reason.as_deref(),
        Some("key-vault-not-enabled-for-disk-encryption"),
        "{}",
        u.message
    );
    assert!(u
        .next_action
        .as_deref()
        .is_some_and(|n| n.contains("--enabled-for-disk-encryption true")));
    assert_eq!(stack.sim.stats().writes.restores, 0);
}

#[tokio::test]
async fn a_rejection_quoting_a_sas_url_is_answered_with_the_signature_redacted() {
    let stack = SimStack::start().await;
    let vm = vm_id(S1, "rg-app-web", "web-win-01");
    // A SAS URL pasted into a field that the rejection message quotes.
    let sas = "https://stg1.blob.core.windows.net/c/t.json?sv=2022-11-02&sp=r&sig=S3cr3tSig%3D";
    let redacted = "https://stg1.blob.core.windows.net/c/t.json?[REDACTED]";
    let u = answer(
        &stack,
        "INC-SAS",
        &request("INC-SAS", &vm, json!({ "restoreType": sas })),
    )
    .await;
    assert_eq!(u.status, "rejected", "{u:?}");
    assert_eq!(u.reason.as_deref(), Some("invalid-field"));
    assert!(!u.message.contains("S3cr3tSig"), "{}", u.message);
    assert!(u.message.contains(redacted), "{}", u.message);
    let d = doc(&stack, "INC-SAS").expect("a rejected ticket has a document");
    let history = serde_json::to_string(&d.history).expect("json");
    assert!(!history.contains("S3cr3tSig"), "{history}");

    // Another malformed request under the same ticket is answered without being recorded
    // (sequence 0): redacted as well.
    let u = answer(
        &stack,
        "INC-SAS",
        &request(
            "INC-SAS",
            &vm,
            json!({ "restoreType": format!("{sas}&se=2031") }),
        ),
    )
    .await;
    assert_eq!(u.sequence, 0, "{u:?}");
    assert!(!u.message.contains("S3cr3tSig"), "{}", u.message);
    assert!(u.message.contains(redacted), "{}", u.message);
    // Nothing that left for the ticketing system carries the signature.
    for (_, reply) in stack.replies(REPLY_QUEUE) {
        let text = serde_json::to_string(&reply).expect("json");
        assert!(!text.contains("S3cr3tSig"), "{text}");
    }
}
