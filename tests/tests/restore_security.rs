//! What a sender on `restore-requests` cannot make ade-backup do (issue 11): each test here failed
//! on the version before the fix it names.

use ade_backup_functions::records::RestoreStep;
use ade_backup_functions::status;
use ade_backup_shared::arm::RestoreDisksRequest;
use ade_backup_shared::ids::ResourceId;
use ade_backup_test_support::sim_stack::*;
use serde_json::json;

fn web_vm() -> String {
    vm_id(S1, "rg-app-web", "web-lnx-01")
}

#[tokio::test]
async fn a_reply_queue_that_refuses_statuses_never_stalls_the_restore() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    stack.pump.refuse(REPLY_QUEUE);
    let body = restore_request("INC-REPLY", &vm, json!({}));
    stack.submit("req-reply", &body).await;
    let op = stack.restore_doc("INC-REPLY").expect("recorded");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    let all: Vec<u32> = op.history.iter().map(|u| u.sequence).collect();
    assert_eq!(
        op.undelivered, all,
        "every status is recorded as undelivered"
    );
    let err = op.reply_error.clone().expect("the reply error is recorded");
    assert!(err.contains("404") && err.contains(REPLY_QUEUE), "{err}");
    assert!(status::render_text(&op).contains("reply failed"));
    assert!(stack.replies(REPLY_QUEUE).is_empty());

    // The queue comes back: the next status the ticket gets (here the answer to a repeat of the
    // request) delivers everything that was missed, in order.
    stack.pump.accept(REPLY_QUEUE);
    stack.submit("req-reply-again", &body).await;
    let op = stack.restore_doc("INC-REPLY").expect("recorded");
    assert!(op.undelivered.is_empty(), "{:?}", op.undelivered);
    assert_eq!(op.reply_error, None);
    let mut got: Vec<u32> = stack
        .replies(REPLY_QUEUE)
        .into_iter()
        .filter(|(_, u)| u.ticket_id == "INC-REPLY")
        .map(|(_, u)| u.sequence)
        .collect();
    got.dedup();
    assert_eq!(got, all);
}

#[tokio::test]
async fn a_conflicting_request_without_reply_to_does_not_answer_into_the_original_queue() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    stack
        .submit("req-a", &restore_request("INC-CONF", &vm, json!({})))
        .await;
    let before = stack.replies(REPLY_QUEUE).len();
    let mut other = restore_request("INC-CONF", &vm, json!({"targetVmName": "other-name"}));
    other.as_object_mut().expect("object").remove("replyTo");
    stack.submit("req-b", &other).await;
    assert_eq!(
        stack.replies(REPLY_QUEUE).len(),
        before,
        "the original requester's queue got an answer it did not ask for"
    );
    let op = stack.restore_doc("INC-CONF").expect("recorded");
    assert_eq!(op.status, "completed", "the first restore is unchanged");
}

#[tokio::test]
async fn a_slow_restore_trigger_is_not_taken_over_while_its_azure_call_runs() {
    // The configured lease (1 s) is shorter than one ARM call may take with its retries: the
    // claim must outlive the call, or a second delivery starts a second restore job.
    let stack = SimStack::start_with(&[("ADE_BACKUP_STEP_LEASE_MS", "1000")]).await;
    let vm = web_vm();
    stack.protect(&vm).await;
    let body = serde_json::to_vec(&restore_request("INC-SLOW", &vm, json!({}))).expect("json");
    stack.pump.enqueue("restore-requests", "req-slow", body);
    stack.pump_until(100, |m| m.queue == "restore-vm").await;
    let trigger = stack.pump.take_next().expect("the restore trigger");
    let slow = ade_backup_sim::FaultRule {
        latency_ms: 800,
        ..Default::default()
    };
    let faults = ade_backup_sim::FaultConfig {
        operations: [("rs.restore".to_string(), slow)].into_iter().collect(),
        ..Default::default()
    };
    stack.sim.set_faults(faults).expect("faults");
    let before = stack.sim.stats().writes.restores;
    let first = stack.deliver(&trigger, 1);
    let second = async {
        // Once the first delivery holds the step (its Azure call now takes 800 ms)...
        for _ in 0..500 {
            let op = stack.restore_doc("INC-SLOW").expect("recorded");
            if op.steps.claimed_at(RestoreStep::RestoreDisks).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // ...time passes beyond the configured lease, well inside one call's retry budget; the
        // message lock expired, so Service Bus hands the same message to another invocation.
        stack.sim.advance(std::time::Duration::from_secs(5));
        stack.deliver(&trigger, 2).await
    };
    let (a, b) = tokio::join!(first, second);
    assert!(format!("{a:?}").contains("Completed"), "{a:?}");
    assert!(format!("{b:?}").contains("in progress elsewhere"), "{b:?}");
    stack
        .sim
        .set_faults(ade_backup_sim::FaultConfig::default())
        .expect("faults");
    stack.pump(2000).await;
    assert_eq!(
        stack.sim.stats().writes.restores - before,
        1,
        "one restore job, not two"
    );
    let op = stack.restore_doc("INC-SLOW").expect("recorded");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
}

#[tokio::test]
async fn a_target_vm_name_that_exists_is_rejected_before_any_restore_job() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    let before = stack.sim.stats().writes.restores;
    let body = restore_request(
        "INC-EXISTS",
        &vm,
        json!({"targetResourceGroup": format!("/subscriptions/{S1}/resourceGroups/rg-app-web"), "targetVmName": "web-lnx-01"}),
    );
    stack.submit("req-exists", &body).await;
    let op = stack.restore_doc("INC-EXISTS").expect("recorded");
    assert_eq!(op.status, "rejected", "{:#?}", op.history);
    let last = op.history.last().expect("history");
    assert_eq!(last.reason.as_deref(), Some("target-exists"));
    assert_eq!(last.field.as_deref(), Some("targetVmName"));
    assert_eq!(
        stack.sim.stats().writes.restores,
        before,
        "no restore job ran"
    );
}

#[tokio::test]
async fn status_updates_never_carry_the_template_url() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    stack
        .submit("req-url", &restore_request("INC-URL", &vm, json!({})))
        .await;
    let op = stack.restore_doc("INC-URL").expect("recorded");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    let template = op
        .azure
        .template_blob_uri
        .clone()
        .expect("kept in the document");
    let replies = stack.replies(REPLY_QUEUE);
    assert!(!replies.is_empty());
    for (m, _) in replies {
        let text = String::from_utf8_lossy(&m.body);
        assert!(!text.contains(&template), "{text}");
        assert!(!text.contains("blob.core.windows.net"), "{text}");
    }
}

#[tokio::test]
async fn reply_to_names_only_a_configured_reply_queue() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    let before = stack.sim.stats().writes.restores;
    // ade-backup's own work queues, another team's queue, and a name the sender would refuse.
    let cases = [
        ("INC-RT-1", "restore-vm", "reply-to-not-allowed"),
        ("INC-RT-2", "grant-key-vault-access", "reply-to-not-allowed"),
        ("INC-RT-3", "payroll-commands", "reply-to-not-allowed"),
        ("INC-RT-4", "ticket-status-", "invalid-field"),
    ];
    for (ticket, reply_to, _) in &cases {
        let body = restore_request(ticket, &vm, json!({ "replyTo": reply_to }));
        stack.submit(&format!("req-{ticket}"), &body).await;
    }
    for (ticket, reply_to, code) in &cases {
        let op = stack.restore_doc(ticket).expect("recorded");
        assert_eq!(op.status, "rejected", "{ticket}: {:#?}", op.history);
        let last = op.history.last().expect("history");
        assert_eq!(last.field.as_deref(), Some("replyTo"), "{ticket}");
        assert_eq!(last.reason.as_deref(), Some(*code), "{ticket}");
        assert_eq!(op.reply_to, None, "{ticket}: no reply destination recorded");
        let sent: Vec<_> = stack
            .pump
            .sent()
            .into_iter()
            .filter(|m| m.queue.eq_ignore_ascii_case(reply_to))
            .filter(|m| String::from_utf8_lossy(&m.body).contains(ticket))
            .collect();
        assert!(sent.is_empty(), "{ticket}: a message went to {reply_to}");
    }
    assert!(
        stack.pump.dead_lettered().is_empty(),
        "{:?}",
        stack.pump.dead_lettered()
    );
    assert_eq!(stack.sim.stats().writes.restores, before, "no restore ran");
}

#[tokio::test]
async fn a_same_named_vms_restore_job_is_never_adopted() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    // A VM with the same name in another resource group, protected in the same vault, whose
    // restore job runs while this ticket's trigger is retried.
    let twin: ade_backup_sim::fleet::Vm = serde_json::from_value(json!({
        "subscription": S1, "resourceGroup": "rg-app-twin", "name": "web-lnx-01",
        "location": "westeurope", "osType": "Linux", "dataDisks": [{"sizeGb": 128}],
        "ade": {"variant": "bek", "keyVault": "kv-ade-ap-weu"},
        "protection": {"vault": "rsv-weu", "policy": "DefaultPolicy", "recoveryPointAgesHours": [5]}
    }))
    .expect("a fleet VM");
    stack.sim.add_vm(&twin);
    let twin_id = ResourceId::parse(&vm_id(S1, "rg-app-twin", "web-lnx-01")).expect("id");
    let vault = ResourceId::parse(RSV_WEU).expect("vault");
    let points = stack
        .ctx
        .arm
        .list_recovery_points(&vault, &twin_id)
        .await
        .expect("twin's points");
    let rp = points[0].name.clone().expect("rp name");
    let staging = ResourceId::parse(STAGING_WEU).expect("staging");
    let request = RestoreDisksRequest::new(&rp, &twin_id, "westeurope", &staging).expect("req");
    stack
        .ctx
        .arm
        .begin_restore(&vault, &twin_id, &request)
        .await
        .expect("the twin's restore starts");
    let before = stack.sim.stats().writes.restores;

    let body = serde_json::to_vec(&restore_request("INC-TWIN", &vm, json!({}))).expect("json");
    stack.pump.enqueue("restore-requests", "req-twin", body);
    stack.pump_until(100, |m| m.queue == "restore-vm").await;
    // The first trigger attempt claims the step, then fails before starting a job.
    let down = ade_backup_sim::FaultRule {
        error_rate: 1.0,
        error_status: 503,
        ..Default::default()
    };
    let faults = ade_backup_sim::FaultConfig {
        operations: [("rs.recoveryPoints.list".to_string(), down)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    stack.sim.set_faults(faults).expect("faults");
    stack.pump(1).await;
    stack
        .sim
        .set_faults(ade_backup_sim::FaultConfig::default())
        .expect("faults");
    stack.pump(2000).await;

    let op = stack.restore_doc("INC-TWIN").expect("recorded");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert!(
        op.steps.attempts(RestoreStep::RestoreDisks) >= 2,
        "the trigger was retried"
    );
    assert_eq!(
        stack.sim.stats().writes.restores - before,
        1,
        "this ticket started its own restore job instead of adopting the twin's"
    );
    let job = op.azure.restore_job_id.clone().expect("job");
    let job = stack
        .ctx
        .arm
        .get_backup_job(&vault, &job)
        .await
        .expect("the job");
    assert!(job.is_for_vm(&ResourceId::parse(&vm).expect("id")));
}

/// Overwrites the template blob of `ticket` in the simulator, as anyone with write access to the
/// staging account could.
async fn replace_template(stack: &SimStack, ticket: &str, template: serde_json::Value) {
    let op = stack.restore_doc(ticket).expect("recorded");
    let uri =
        url::Url::parse(&op.azure.template_blob_uri.expect("template recorded")).expect("url");
    let account = uri
        .host_str()
        .and_then(|h| h.split('.').next())
        .expect("account");
    let base = stack
        .ctx
        .arm
        .endpoint()
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let put = format!("{base}/_blob/{account}{}", uri.path());
    let resp = reqwest::Client::new()
        .put(put)
        .bearer_auth("attacker")
        .header("x-ms-version", "2021-08-06")
        .header("x-ms-blob-type", "BlockBlob")
        .json(&template)
        .send()
        .await
        .expect("put blob");
    assert_eq!(resp.status().as_u16(), 201);
}

#[tokio::test]
async fn a_replaced_template_is_never_deployed() {
    let stack = SimStack::start().await;
    let vm = web_vm();
    stack.protect(&vm).await;
    let schema = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#";
    let nested = json!({"$schema": schema, "resources": [
        {"type": "Microsoft.Compute/virtualMachines", "name": "x"},
        {"type": "Microsoft.Authorization/roleAssignments", "name": "owner-for-me"}
    ]});
    let plain_vm = json!({"$schema": schema, "resources": [
        {"type": "Microsoft.Compute/virtualMachines", "name": "[parameters('VirtualMachineName')]"}
    ]});
    // A role assignment slipped in, and a harmless-looking VM template in place of the real one:
    // both are another template than the one the restore job wrote.
    for (ticket, template) in [("INC-TPL-1", nested), ("INC-TPL-2", plain_vm)] {
        let before = stack.sim.stats().writes.deployments;
        let body = serde_json::to_vec(&restore_request(ticket, &vm, json!({}))).expect("json");
        stack
            .pump
            .enqueue("restore-requests", &format!("req-{ticket}"), body);
        stack.pump_until(2000, |m| m.queue == "redeploy-vm").await;
        replace_template(&stack, ticket, template).await;
        stack.pump(2000).await;
        let op = stack.restore_doc(ticket).expect("recorded");
        assert_eq!(op.status, "failed", "{ticket}: {:#?}", op.history);
        let last = op.history.last().expect("history");
        assert_eq!(
            last.reason.as_deref(),
            Some("restore-template-rejected"),
            "{ticket}"
        );
        assert_eq!(
            stack.sim.stats().writes.deployments,
            before,
            "{ticket}: nothing was deployed"
        );
    }
}
