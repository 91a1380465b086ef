//! What a sender on `restore-requests` cannot make ade-backup do (issue 11): each test here failed
//! on the version before the fix it names.

use ade_backup_functions::status;
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
