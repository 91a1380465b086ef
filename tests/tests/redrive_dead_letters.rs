//! The dead-letter redrive end to end: real handlers against the simulator (`SimStack`), a real
//! dead-letter queue behind the Service Bus REST endpoint of `ade-backup local`, and the
//! product's REST client between them.

use ade_backup_functions::context::{Clock, Context};
use ade_backup_functions::handlers::{
    FunctionSpec, HandlerError, HandlerOutput, Registry, MESSAGE_BINDING,
};
use ade_backup_functions::records::{redrive_key, RedriveOutcome, RedriveRecord};
use ade_backup_functions::trigger::{TriggerInput, TriggerSpec};
use ade_backup_functions::workflows::redrive::{self, MAX_DELIVERY_COUNT_EXCEEDED};
use ade_backup_test_support::dead_letters::DeadLetterQueues;
use ade_backup_test_support::sim_stack::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

const FLAKY_QUEUE: &str = "flaky-work";
/// Calls of [`always_transient`] by message id (ids are unique across this file's tests).
static FLAKY_CALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

/// A function that always fails transiently: what a long outage looks like to the redrive.
async fn always_transient(input: TriggerInput, _: &Context) -> Result<HandlerOutput, HandlerError> {
    let id = input.message_id().unwrap_or_default().to_string();
    *FLAKY_CALLS.lock().expect("calls").entry(id).or_default() += 1;
    Err(HandlerError::Transient("the backend is still down".into()))
}

fn calls(id: &str) -> u32 {
    FLAKY_CALLS
        .lock()
        .expect("calls")
        .get(id)
        .copied()
        .unwrap_or(0)
}

fn flaky_spec() -> FunctionSpec {
    FunctionSpec {
        name: "FlakyWork",
        trigger: TriggerSpec::ServiceBus {
            queue: FLAKY_QUEUE,
            binding: MESSAGE_BINDING,
        },
        handler: ade_backup_functions::handler_fn!(always_transient),
    }
}

async fn stack_with_dead_letters(extra: &[(&str, &str)]) -> (SimStack, DeadLetterQueues) {
    let mut stack = SimStack::start_with(extra).await;
    let dlq = DeadLetterQueues::start(Duration::from_secs(60)).await;
    stack.ctx.dead_letters = Some(dlq.receiver.clone());
    (stack, dlq)
}

fn record(stack: &SimStack, queue: &str, id: &str) -> Option<RedriveRecord> {
    stack
        .state
        .json(&redrive_key(queue, id))
        .map(|v| serde_json::from_value(v).expect("a redrive record"))
}

#[tokio::test]
async fn a_restore_request_whose_deliveries_ran_out_is_redriven_once_and_the_ticket_completes() {
    let (stack, dlq) = stack_with_dead_letters(&[]).await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    assert_eq!(stack.protect(&vm).await["status"], "protected");
    let body = serde_json::to_vec(&restore_request(
        "INC-7001",
        &vm,
        json!({"targetVmName": "web-lnx-01-r"}),
    ))
    .expect("json");
    dlq.dead_letter(
        "restore-requests",
        "req-7001",
        &body,
        MAX_DELIVERY_COUNT_EXCEEDED,
    );

    let summary = redrive::run(&stack.ctx, Registry::production().specs()).await;
    assert_eq!(summary.examined, 1, "{summary:?}");
    assert_eq!(summary.completed, ["restore-requests/req-7001"]);
    assert!(summary.errors.is_empty(), "{summary:?}");
    assert!(dlq.dead_lettered("restore-requests").is_empty());
    let rec = record(&stack, "restore-requests", "req-7001").expect("record");
    assert_eq!(
        (rec.attempts, rec.last_outcome),
        (1, RedriveOutcome::Completed)
    );
    assert_eq!(rec.function, "OnRestoreRequest");

    // The redriven request started the ticket; the workers it fanned out to finish it.
    let before = stack.sim.stats().writes;
    stack.pump(2000).await;
    let op = stack.restore_doc("INC-7001").expect("restore document");
    assert_eq!(op.status, "completed", "{:#?}", op.history);
    assert_eq!(stack.sim.stats().writes.restores - before.restores, 1);

    // A second run finds nothing and redoes nothing.
    let again = redrive::run(&stack.ctx, Registry::production().specs()).await;
    assert_eq!((again.examined, again.completed.len()), (0, 0), "{again:?}");
    assert_eq!(stack.sim.stats().writes.restores - before.restores, 1);
}

#[tokio::test]
async fn poison_verdicts_and_other_reasons_stay_dead_lettered_for_a_human() {
    let (stack, dlq) = stack_with_dead_letters(&[]).await;
    // Dead-lettered by the local host with ade-backup's own poison reason.
    dlq.dead_letter("backup-vm", "bad-1", b"{}", "InvalidWorkerMessage");
    // Deliveries ran out, but the request is invalid: the handler judges it poison.
    dlq.dead_letter(
        "restore-requests",
        "bad-2",
        br#"{"version": 1, "ticketId": "../etc"}"#,
        MAX_DELIVERY_COUNT_EXCEEDED,
    );
    let registry = Registry::production();
    let first = redrive::run(&stack.ctx, registry.specs()).await;
    assert_eq!(first.examined, 2, "{first:?}");
    assert!(first.completed.is_empty(), "{first:?}");
    assert_eq!(first.left.get("not-a-delivery-failure"), Some(&1));
    assert_eq!(first.left.get("poison"), Some(&1));
    let rec = record(&stack, "restore-requests", "bad-2").expect("record");
    assert_eq!(
        (rec.attempts, rec.last_outcome),
        (1, RedriveOutcome::Poison)
    );
    assert!(record(&stack, "backup-vm", "bad-1").is_none());

    // Both stay, unlocked, and the next run looks again without running the poison one again.
    let second = redrive::run(&stack.ctx, registry.specs()).await;
    assert_eq!(second.examined, 2, "{second:?}");
    assert_eq!(second.left.get("poison"), Some(&1));
    assert_eq!(
        record(&stack, "restore-requests", "bad-2").map(|r| r.attempts),
        Some(1)
    );
    assert_eq!(dlq.dead_lettered("backup-vm"), ["bad-1"]);
    assert_eq!(dlq.dead_lettered("restore-requests"), ["bad-2"]);
}

#[tokio::test]
async fn attempts_back_off_and_stop_at_the_cap() {
    let (stack, dlq) = stack_with_dead_letters(&[
        ("ADE_BACKUP_REDRIVE_MAX_ATTEMPTS", "2"),
        ("ADE_BACKUP_REDRIVE_BACKOFF_MS", "60000"),
    ])
    .await;
    dlq.dead_letter(FLAKY_QUEUE, "w-1", b"{}", MAX_DELIVERY_COUNT_EXCEEDED);
    let registry = Registry::empty().with(flaky_spec());
    let calls = || calls("w-1");

    let first = redrive::run(&stack.ctx, registry.specs()).await;
    assert_eq!(first.failed, ["flaky-work/w-1"], "{first:?}");
    assert_eq!(calls(), 1);
    let rec = record(&stack, FLAKY_QUEUE, "w-1").expect("record");
    assert_eq!(
        (rec.attempts, rec.last_outcome),
        (1, RedriveOutcome::Failed)
    );
    assert!(
        rec.last_error
            .as_deref()
            .is_some_and(|e| e.contains("the backend is still down")),
        "{rec:?}"
    );

    // Within the backoff: left alone.
    stack.clock.advance(chrono::Duration::seconds(59));
    let waiting = redrive::run(&stack.ctx, registry.specs()).await;
    assert_eq!(waiting.left.get("backing-off"), Some(&1), "{waiting:?}");
    assert_eq!(calls(), 1);

    stack.clock.advance(chrono::Duration::seconds(1));
    let second = redrive::run(&stack.ctx, registry.specs()).await;
    assert_eq!(second.failed, ["flaky-work/w-1"], "{second:?}");
    assert_eq!(calls(), 2);

    // The cap: no third attempt, however long it waits; the message stays for a human.
    stack.clock.advance(chrono::Duration::days(1));
    let spent = redrive::run(&stack.ctx, registry.specs()).await;
    assert_eq!(spent.left.get("attempts-spent"), Some(&1), "{spent:?}");
    assert_eq!(calls(), 2);
    assert_eq!(dlq.dead_lettered(FLAKY_QUEUE), ["w-1"]);
    assert_eq!(
        record(&stack, FLAKY_QUEUE, "w-1").map(|r| r.attempts),
        Some(2)
    );
}

#[tokio::test]
async fn a_crash_during_an_attempt_counts_and_a_lost_delete_is_finished_without_rerunning() {
    let (stack, dlq) = stack_with_dead_letters(&[("ADE_BACKUP_REDRIVE_BACKOFF_MS", "0")]).await;
    let now = stack.clock.now();
    let written = |id: &str, attempts: u32, outcome: RedriveOutcome| RedriveRecord {
        queue: FLAKY_QUEUE.into(),
        message_id: id.into(),
        function: "FlakyWork".into(),
        attempts,
        first_attempt_at: now,
        last_attempt_at: now,
        last_outcome: outcome,
        last_error: None,
    };
    // `running` is what a process killed during its attempt leaves behind.
    let put = |id: &str, r: RedriveRecord| {
        let v = serde_json::to_value(r).expect("json");
        stack.state.put_json(&redrive_key(FLAKY_QUEUE, id), &v);
    };
    put("crashed", written("crashed", 3, RedriveOutcome::Running));
    // `completed` with the dead letter still there: the delete was lost after the work was done.
    put("done", written("done", 1, RedriveOutcome::Completed));
    dlq.dead_letter(FLAKY_QUEUE, "crashed", b"{}", MAX_DELIVERY_COUNT_EXCEEDED);
    dlq.dead_letter(FLAKY_QUEUE, "done", b"{}", MAX_DELIVERY_COUNT_EXCEEDED);

    let summary = redrive::run(&stack.ctx, Registry::empty().with(flaky_spec()).specs()).await;
    assert_eq!(summary.left.get("attempts-spent"), Some(&1), "{summary:?}");
    assert_eq!(summary.completed, ["flaky-work/done"]);
    assert_eq!(
        (calls("crashed"), calls("done")),
        (0, 0),
        "nothing ran again"
    );
    assert_eq!(
        record(&stack, FLAKY_QUEUE, "crashed").map(|r| r.attempts),
        Some(3)
    );
    assert_eq!(dlq.dead_lettered(FLAKY_QUEUE), ["crashed"]);
}

#[tokio::test]
async fn without_a_receiver_or_with_zero_attempts_a_run_only_says_why() {
    let stack = SimStack::start().await;
    let summary = redrive::run(&stack.ctx, Registry::production().specs()).await;
    assert_eq!(
        summary.skipped,
        Some("no dead-letter receiver is configured")
    );
    let (stack, dlq) = stack_with_dead_letters(&[("ADE_BACKUP_REDRIVE_MAX_ATTEMPTS", "0")]).await;
    dlq.dead_letter("backup-vm", "m-1", b"{}", MAX_DELIVERY_COUNT_EXCEEDED);
    let summary = redrive::run(&stack.ctx, Registry::production().specs()).await;
    assert_eq!(
        summary.skipped,
        Some("ADE_BACKUP_REDRIVE_MAX_ATTEMPTS is 0")
    );
    assert_eq!(summary.examined, 0);
    assert_eq!(dlq.dead_lettered("backup-vm"), ["m-1"]);
}
