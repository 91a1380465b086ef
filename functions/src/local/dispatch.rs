//! Plays the Functions host's trigger side: delivers queue messages and timer ticks to the custom
//! handler as `POST /{FunctionName}` with `{"Data":{..},"Metadata":{..}}`
//! (functions-custom-handlers.md, "Request payload"), and settles each message from the answer:
//! 2xx → complete; 5xx / other status / connection error → abandon (Service Bus dead-letters after
//! max deliveries); a failed answer whose `ReturnValue.deadLetter = {reason, description}` →
//! dead-letter at once with that reason (ade-backup's poison contract, README "Failure contract").
//!
//! Service Bus trigger metadata uses the names of the Functions Service Bus trigger
//! (functions-bindings-service-bus-trigger.md, "Message metadata"): `MessageId`, `DeliveryCount`,
//! `EnqueuedTimeUtc`, `SequenceNumber`, `LockToken`, `ContentType`, `CorrelationId`,
//! `ApplicationProperties` / `UserProperties`, plus the host's `sys` block.
//! Values are encoded as the host's HTTP worker encodes them: the text body and scalar metadata
//! JSON-serialized into strings (`"DeliveryCount": "1"`, `"MessageId": "\"id\""`), objects
//! (`ApplicationProperties`, `sys`, the timer's `TimerInfo`) as objects.

use super::queue::{AbandonOutcome, LocalQueue, LocalQueueError, ReceivedMessage};
use ade_backup_shared::http::read_bounded;
use ade_backup_shared::telemetry::redact_owned;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Reported in `x-azure-functions-hostversion`; identifies the embedded host, not a real one.
const HOST_VERSION: &str = "4.0.0-ade-backup-local";
/// Largest failed answer read from the handler: ade-backup's are a few KiB (`Logs` and the
/// dead-letter request).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Longest wait, after a delivery found no handler, for the supervisor to mark it down.
const UNREACHABLE_SETTLE: Duration = Duration::from_secs(2);
/// Characters of the handler's first log line kept in an abandon reason.
const MAX_LOG_CHARS: usize = 200;

/// Per-function counters for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunctionReport {
    /// `serviceBusTrigger` or `timerTrigger`.
    pub trigger: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    pub invocations: u64,
    pub completed: u64,
    pub abandoned: u64,
    pub dead_lettered: u64,
    /// Timer invocations that did not answer 2xx (timers are not retried).
    pub failed: u64,
    /// Completed messages by the delivery that completed them (`DeliveryCount`): how many
    /// deliveries crashes and failures cost, against the queue's maxDeliveryCount.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub completed_at_delivery: BTreeMap<u32, u64>,
}

pub(crate) struct Shared {
    pub queue: LocalQueue,
    pub client: reqwest::Client,
    pub handler: watch::Receiver<Option<String>>,
    pub reports: Mutex<BTreeMap<String, FunctionReport>>,
    /// In-flight invocations plus timers that still owe their `runOnStartup` run.
    pub busy: AtomicUsize,
    /// Next due time per timer function.
    pub timer_next: Mutex<BTreeMap<String, Option<DateTime<Utc>>>>,
    pub function_timeout: Duration,
    pub max_auto_lock_renewal: Duration,
}

impl Shared {
    pub(crate) fn update(&self, function: &str, f: impl FnOnce(&mut FunctionReport)) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        f(reports.entry(function.to_string()).or_default());
    }

    /// Waits until the handler is up; `None` when asked to stop first.
    async fn handler_url(&self, stop: &mut watch::Receiver<bool>) -> Option<String> {
        let mut handler = self.handler.clone();
        loop {
            if *stop.borrow() {
                return None;
            }
            if let Some(url) = handler.borrow_and_update().clone() {
                return Some(url);
            }
            tokio::select! {
                r = handler.changed() => { if r.is_err() { return None; } }
                _ = stop.changed() => {}
            }
        }
    }

    /// After `url` gave no answer: waits until the supervisor has noticed (the handler is down
    /// or another child is up), at most `max` (a handler given by URL is never replaced).
    /// A delivery that failed because the child died is then settled, and nothing more is
    /// handed to the dead child: a crash costs each in-flight message one delivery, as in the
    /// Functions host, not one per retry during the restart.
    async fn handler_replaced(&self, url: &str, max: Duration) {
        let mut handler = self.handler.clone();
        let replaced = async {
            loop {
                if handler.borrow_and_update().as_deref() != Some(url) {
                    return;
                }
                if handler.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(max, replaced).await;
    }
}

/// What the handler's answer means for the message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Complete,
    Abandon(String),
    /// No HTTP answer at all (the handler died or is restarting).
    Unreachable(String),
    DeadLetter {
        reason: String,
        description: String,
    },
}

fn now_string(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn sys(function: &str, now: DateTime<Utc>) -> Value {
    json!({"MethodName": function, "UtcNow": now_string(now), "RandGuid": Uuid::new_v4().to_string()})
}

/// Encodes a scalar the way the Functions host's HTTP worker does
/// (`JsonConvert.SerializeObject(value)`): strings end up JSON-encoded inside a string and
/// numbers as strings; objects stay objects.
fn host_scalar(v: Value) -> Value {
    match v {
        Value::Object(_) | Value::Null => v,
        other => Value::String(other.to_string()),
    }
}

/// The Service Bus invocation exactly as the Functions host's HTTP worker builds it
/// (Azure/azure-functions-host `ScriptInvocationContextExtensions.ToHttpScriptInvocationContext`:
/// input and metadata values go through `GetHttpScriptInvocationContextValue`, i.e. objects as
/// objects, everything else `JsonConvert.SerializeObject`-ed, `DateTime` as an ISO string).
pub(crate) fn service_bus_payload(function: &str, binding: &str, rx: &ReceivedMessage) -> Value {
    let m = &rx.message;
    let body = String::from_utf8_lossy(&m.body).into_owned();
    let mut data = serde_json::Map::new();
    data.insert(binding.to_string(), host_scalar(Value::String(body)));
    let mut meta = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        meta.insert(k.to_string(), v);
    };
    put("MessageId", host_scalar(json!(m.message_id)));
    put("DeliveryCount", host_scalar(json!(m.delivery_count)));
    put("SequenceNumber", host_scalar(json!(m.sequence_number)));
    put("LockToken", host_scalar(json!(rx.lock_token.to_string())));
    put("EnqueuedTimeUtc", json!(now_string(m.enqueued_time)));
    put("LockedUntilUtc", json!(now_string(rx.locked_until)));
    if let Some(c) = &m.content_type {
        put("ContentType", host_scalar(json!(c)));
    }
    if let Some(c) = &m.correlation_id {
        put("CorrelationId", host_scalar(json!(c)));
    }
    if let Some(t) = m.scheduled_enqueue_time {
        put("ScheduledEnqueueTimeUtc", json!(now_string(t)));
    }
    put("ApplicationProperties", json!(m.properties));
    put("UserProperties", json!(m.properties));
    put("sys", sys(function, Utc::now()));
    json!({"Data": data, "Metadata": meta})
}

pub(crate) fn timer_payload(
    function: &str,
    binding: &str,
    last: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
    is_past_due: bool,
) -> Value {
    let now = Utc::now();
    let mut data = serde_json::Map::new();
    data.insert(
        binding.to_string(),
        json!({
            "Schedule": {"AdjustForDST": true},
            "ScheduleStatus": {
                "Last": last.map(now_string),
                "Next": next.map(now_string),
                "LastUpdated": now_string(now),
            },
            "IsPastDue": is_past_due,
        }),
    );
    json!({"Data": data, "Metadata": {"sys": sys(function, now)}})
}

/// Reads the `deadLetter` request out of a failed response body. `ReturnValue` may be an object
/// or a string holding JSON (the response table types it as a string).
pub(crate) fn dead_letter_request(body: &str) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(body).ok()?;
    let rv = match v.get("ReturnValue")? {
        Value::String(s) => serde_json::from_str::<Value>(s).ok()?,
        other => other.clone(),
    };
    let dl = rv.get("deadLetter")?;
    let reason = dl.get("reason")?.as_str()?.trim();
    if reason.is_empty() {
        return None;
    }
    let description = dl
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Some((reason.to_string(), description.to_string()))
}

fn first_log(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let line = v.get("Logs")?.as_array()?.iter().find_map(Value::as_str)?;
    Some(line.to_string())
}

/// What a failed answer (`status`, `body`) means for the message. Its texts leave the process
/// (stored with the dead letter, printed), so they are redacted here, the log line before it is
/// shortened so no secret is cut past recognition.
pub(crate) fn failed_verdict(status: u16, body: &str) -> Verdict {
    if let Some((reason, description)) = dead_letter_request(body) {
        return Verdict::DeadLetter {
            reason: redact_owned(reason),
            description: redact_owned(description),
        };
    }
    match first_log(body) {
        Some(log) => {
            let log: String = redact_owned(log).chars().take(MAX_LOG_CHARS).collect();
            Verdict::Abandon(format!("HTTP {status}: {log}"))
        }
        None => Verdict::Abandon(format!("HTTP {status}")),
    }
}

async fn post(shared: &Shared, url: &str, function: &str, payload: &Value) -> Verdict {
    let response = shared
        .client
        .post(format!("{url}/{function}"))
        // The headers the host's HTTP worker adds to every invocation (DefaultHttpWorkerService.AddHeaders).
        .header("x-azure-functions-invocationid", Uuid::new_v4().to_string())
        .header("x-azure-functions-hostversion", HOST_VERSION)
        .json(payload)
        .timeout(shared.function_timeout)
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Verdict::Complete,
        Ok(r) => {
            let status = r.status().as_u16();
            let body = match read_bounded(r, MAX_ANSWER_BYTES).await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) if e.is_too_large() => {
                    return Verdict::Abandon(format!("HTTP {status}: {e}"))
                }
                Err(_) => String::new(),
            };
            failed_verdict(status, &body)
        }
        Err(e) if e.is_timeout() => Verdict::Abandon(format!(
            "no answer within functionTimeout ({} s)",
            shared.function_timeout.as_secs()
        )),
        Err(e) => Verdict::Unreachable(format!("handler unreachable: {e}")),
    }
}

/// Delivers one queue's messages to its function until `stop`, then drains in-flight work.
pub(crate) async fn run_queue_function(
    shared: Arc<Shared>,
    function: String,
    binding: String,
    queue_name: String,
    concurrency: usize,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        // The handler as it is once a slot is free (waiting for the slot can outlast a child).
        let Some(url) = shared.handler_url(&mut stop).await else {
            break;
        };
        let q = shared.queue.clone();
        let name = queue_name.clone();
        // Count as busy before the lock is taken so the idle check never sees a gap.
        shared.busy.fetch_add(1, Ordering::SeqCst);
        let received = tokio::task::spawn_blocking(move || q.receive(&name)).await;
        match received {
            Ok(Ok(Some(rx))) => {
                let shared = shared.clone();
                let (function, binding, queue_name) =
                    (function.clone(), binding.clone(), queue_name.clone());
                tasks.spawn(async move {
                    invoke_message(&shared, &function, &binding, &queue_name, &url, rx).await;
                    shared.busy.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                });
            }
            other => {
                shared.busy.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
                match other {
                    Ok(Err(e)) => {
                        eprintln!("[local] {function}: receive from {queue_name} failed: {e}")
                    }
                    Err(e) => eprintln!("[local] {function}: receive task failed: {e}"),
                    Ok(Ok(_)) => {}
                }
                tokio::select! {
                    _ = shared.queue.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn invoke_message(
    shared: &Arc<Shared>,
    function: &str,
    binding: &str,
    queue_name: &str,
    url: &str,
    rx: ReceivedMessage,
) {
    let started = Instant::now();
    shared.update(function, |r| r.invocations += 1);
    let payload = service_bus_payload(function, binding, &rx);

    let renewer = renew_lock_while_running(shared, queue_name, rx.lock_token);
    let mut verdict = post(shared, url, function, &payload).await;
    renewer.abort();
    if let Verdict::Unreachable(why) = verdict {
        // The message is offered again only once the supervisor has seen the child go, so
        // no other delivery goes to the dead child in the meantime.
        shared.handler_replaced(url, UNREACHABLE_SETTLE).await;
        verdict = Verdict::Abandon(why);
    }

    let m = &rx.message;
    let ms = started.elapsed().as_millis();
    let head = format!(
        "[local] {function} msg={} delivery={}",
        m.message_id, m.delivery_count
    );
    let settle = match settle(shared, queue_name, rx.lock_token, &verdict).await {
        Ok(r) => r,
        Err(_) => {
            eprintln!("{head} → settling panicked; the lock will expire and it is redelivered");
            return;
        }
    };
    if let Err(e) = settle {
        // Typically the lock expired during a very long run: the message is (or will be)
        // redelivered, so the work must be idempotent — which the handlers are.
        println!("{head} → could not settle ({e}) ({ms} ms)");
        shared.update(function, |r| r.abandoned += 1);
        return;
    }
    record_settled(
        shared,
        function,
        &head,
        (ms, m.delivery_count),
        &verdict,
        settle,
    );
}

/// Renews the message's lock while the function runs, up to maxAutoLockRenewalDuration, as the
/// host does. Abort the task when the answer is in.
fn renew_lock_while_running(
    shared: &Shared,
    queue_name: &str,
    token: Uuid,
) -> tokio::task::JoinHandle<()> {
    let lock_duration = shared.queue.options().lock_duration;
    let (q, name) = (shared.queue.clone(), queue_name.to_string());
    let max = shared.max_auto_lock_renewal;
    tokio::spawn(async move {
        let every = (lock_duration / 2).max(Duration::from_millis(50));
        let begun = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            if begun.elapsed() + every > max {
                return;
            }
            let (q, name) = (q.clone(), name.clone());
            if !matches!(
                tokio::task::spawn_blocking(move || q.renew_lock(&name, token)).await,
                Ok(Ok(_))
            ) {
                return;
            }
        }
    })
}

/// Settles the message as the verdict says; `Some(outcome)` for an abandon.
async fn settle(
    shared: &Shared,
    queue_name: &str,
    token: Uuid,
    verdict: &Verdict,
) -> Result<Result<Option<AbandonOutcome>, LocalQueueError>, tokio::task::JoinError> {
    let (q, name) = (shared.queue.clone(), queue_name.to_string());
    let verdict = verdict.clone();
    tokio::task::spawn_blocking(move || match verdict {
        Verdict::Complete => q.complete(&name, token).map(|_| None),
        Verdict::Abandon(_) | Verdict::Unreachable(_) => q.abandon(&name, token).map(Some),
        Verdict::DeadLetter {
            reason,
            description,
        } => q
            .dead_letter(&name, token, &reason, &description)
            .map(|_| None),
    })
    .await
}

/// Counts and logs a settled message.
fn record_settled(
    shared: &Shared,
    function: &str,
    head: &str,
    (ms, delivery): (u128, u32),
    verdict: &Verdict,
    settle: Result<Option<AbandonOutcome>, LocalQueueError>,
) {
    match (verdict, settle) {
        (Verdict::Complete, _) => {
            shared.update(function, |r| {
                r.completed += 1;
                *r.completed_at_delivery.entry(delivery).or_default() += 1;
            });
            println!("{head} → completed ({ms} ms)");
        }
        (
            Verdict::Abandon(why) | Verdict::Unreachable(why),
            Ok(Some(AbandonOutcome::DeadLettered)),
        ) => {
            shared.update(function, |r| {
                r.abandoned += 1;
                r.dead_lettered += 1;
            });
            println!(
                "{head} → abandoned ({why}); dead-lettered MaxDeliveryCountExceeded ({ms} ms)"
            );
        }
        (Verdict::Abandon(why) | Verdict::Unreachable(why), _) => {
            shared.update(function, |r| r.abandoned += 1);
            println!("{head} → abandoned ({why}) ({ms} ms)");
        }
        (Verdict::DeadLetter { reason, .. }, _) => {
            shared.update(function, |r| r.dead_lettered += 1);
            println!("{head} → dead-lettered: {reason} ({ms} ms)");
        }
    }
}

/// Fires a timer function on `runOnStartup` and then on every occurrence of its schedule.
/// Runs are sequential, so a long run delays the next tick instead of overlapping it (the
/// Functions host holds a singleton lock per timer function).
pub(crate) async fn run_timer_function(
    shared: Arc<Shared>,
    function: String,
    binding: String,
    schedule: cron::Schedule,
    run_on_startup: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut last: Option<DateTime<Utc>> = None;
    let next_after = |t: DateTime<Utc>| schedule.after(&t).next();
    if run_on_startup {
        // `busy` was raised for this run by the caller, so the idle check waits for it.
        if let Some(url) = shared.handler_url(&mut stop).await {
            let now = Utc::now();
            fire_timer(
                &shared,
                &function,
                &binding,
                &url,
                last,
                next_after(now),
                false,
            )
            .await;
            last = Some(now);
        }
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
    loop {
        let next = next_after(Utc::now());
        {
            let mut t = shared.timer_next.lock().unwrap_or_else(|p| p.into_inner());
            t.insert(function.clone(), next);
        }
        let Some(due) = next else { return };
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        shared.busy.fetch_add(1, Ordering::SeqCst);
        if let Some(url) = shared.handler_url(&mut stop).await {
            // Past due when the handler was down long enough to miss the next occurrence too.
            let now = Utc::now();
            let past_due = next_after(due).is_some_and(|n| n <= now);
            fire_timer(
                &shared,
                &function,
                &binding,
                &url,
                last,
                next_after(now),
                past_due,
            )
            .await;
            last = Some(due);
        }
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn fire_timer(
    shared: &Shared,
    function: &str,
    binding: &str,
    url: &str,
    last: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
    past_due: bool,
) {
    let started = Instant::now();
    shared.update(function, |r| r.invocations += 1);
    let payload = timer_payload(function, binding, last, next, past_due);
    let verdict = post(shared, url, function, &payload).await;
    let ms = started.elapsed().as_millis();
    match verdict {
        Verdict::Complete => {
            shared.update(function, |r| r.completed += 1);
            println!("[local] {function} timer → completed ({ms} ms)");
        }
        Verdict::Abandon(why) | Verdict::Unreachable(why) => {
            shared.update(function, |r| r.failed += 1);
            println!("[local] {function} timer → failed ({why}) ({ms} ms)");
        }
        Verdict::DeadLetter { reason, .. } => {
            shared.update(function, |r| r.failed += 1);
            println!("[local] {function} timer → failed ({reason}) ({ms} ms)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dead_letter_request_from_object_or_string_return_value() {
        let obj = r#"{"Outputs":{},"Logs":["bad"],"ReturnValue":{"deadLetter":{"reason":"InvalidEvent","description":"no subject"}}}"#;
        assert_eq!(
            dead_letter_request(obj),
            Some(("InvalidEvent".into(), "no subject".into()))
        );
        let s = r#"{"ReturnValue":"{\"deadLetter\":{\"reason\":\"R\"}}"}"#;
        assert_eq!(dead_letter_request(s), Some(("R".into(), String::new())));
        assert_eq!(dead_letter_request(r#"{"ReturnValue":null}"#), None);
        assert_eq!(
            dead_letter_request(r#"{"ReturnValue":{"deadLetter":{"reason":""}}}"#),
            None
        );
        assert_eq!(dead_letter_request("not json"), None);
    }

    #[test]
    fn failed_answers_are_redacted_before_they_are_stored_or_printed() {
        let sas = "https://stg.blob.core.windows.net/c/t.json?sv=2022-11-02&sig=S3CR3T%3D";
        let answer = json!({
            "Logs": [format!("poison message (Bad): template {sas}")],
            "ReturnValue": {"deadLetter": {
                "reason": "Bad",
                "description": format!("template {sas} AZURE_CLIENT_SECRET=hunter2"),
            }},
        });
        match failed_verdict(500, &answer.to_string()) {
            Verdict::DeadLetter {
                reason,
                description,
            } => {
                assert_eq!(reason, "Bad");
                assert_eq!(
                    description,
                    "template https://stg.blob.core.windows.net/c/t.json?[REDACTED] AZURE_CLIENT_SECRET=[REDACTED]"
                );
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
        // The first log line of an abandoned answer is redacted before it is shortened.
        let padding = "x".repeat(170);
        let answer =
            json!({"Logs": [format!("{padding} Bearer abcdefghijklmnopqrstuvwxyz0123456789")]});
        let Verdict::Abandon(why) = failed_verdict(503, &answer.to_string()) else {
            panic!("expected an abandon");
        };
        assert!(why.starts_with("HTTP 503: "), "{why}");
        assert!(!why.contains("abcdefghij"), "{why}");
        assert!(why.ends_with("Bearer [REDACTED]"), "{why}");
    }

    /// A child that died: messages in flight when it went cost one delivery each; nothing is
    /// delivered until a new child is up, which then gets every message at delivery 2 at most.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_handler_costs_each_in_flight_message_one_delivery_and_is_sent_nothing_more() {
        use super::super::queue::{LocalQueueOptions, NewMessage};
        let dir = tempfile::tempdir().expect("temp dir");
        let options = LocalQueueOptions {
            lock_duration: Duration::from_secs(30),
            max_delivery_count: 10,
            ..LocalQueueOptions::default()
        };
        let queue = LocalQueue::open(dir.path(), options).expect("queue");
        queue.ensure_queue("q").expect("queue name");
        for i in 0..6 {
            let m = NewMessage {
                message_id: Some(format!("m{i}")),
                body: b"{}".to_vec(),
                ..NewMessage::default()
            };
            queue.send("q", m).expect("send");
        }
        // A port nothing listens on: the child is gone.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
        drop(dead);
        let (handler_tx, handler_rx) = watch::channel(Some(dead_url));
        let shared = Arc::new(Shared {
            queue: queue.clone(),
            client: reqwest::Client::new(),
            handler: handler_rx,
            reports: Mutex::new(BTreeMap::new()),
            busy: AtomicUsize::new(0),
            timer_next: Mutex::new(BTreeMap::new()),
            function_timeout: Duration::from_secs(10),
            max_auto_lock_renewal: Duration::from_secs(60),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = tokio::spawn(run_queue_function(
            shared.clone(),
            "F".into(),
            "msg".into(),
            "q".into(),
            2,
            stop_rx,
        ));
        let max_count = |q: &LocalQueue| {
            q.messages("q")
                .expect("messages")
                .iter()
                .map(|m| m.delivery_count)
                .max()
                .unwrap_or(0)
        };
        // The two deliveries in flight find no answer, and wait for the supervisor.
        let until = Instant::now() + Duration::from_secs(10);
        while shared
            .reports
            .lock()
            .expect("reports")
            .get("F")
            .map_or(0, |r| r.invocations)
            < 2
        {
            assert!(Instant::now() < until, "no delivery was attempted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The supervisor notices: down. The two are abandoned; nothing else is sent while down.
        handler_tx.send(None).expect("watch");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let report = shared.reports.lock().expect("reports").get("F").cloned();
        assert_eq!(
            report.as_ref().map(|r| (r.invocations, r.abandoned)),
            Some((2, 2))
        );
        assert_eq!(max_count(&queue), 1, "{:?}", queue.messages("q"));

        // A new child answers: every message completes, none past its second delivery.
        let seen = Arc::new(Mutex::new(Vec::<u32>::new()));
        let app = axum::Router::new().route(
            "/F",
            axum::routing::post({
                let seen = seen.clone();
                move |axum::Json(v): axum::Json<Value>| async move {
                    let count = v["Metadata"]["DeliveryCount"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    seen.lock().expect("seen").push(count);
                    axum::Json(json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let live_url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        handler_tx.send(Some(live_url)).expect("watch");
        let until = Instant::now() + Duration::from_secs(10);
        while !queue.messages("q").expect("messages").is_empty() {
            assert!(
                Instant::now() < until,
                "messages left: {:?}",
                queue.messages("q")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut seen = seen.lock().expect("seen").clone();
        seen.sort_unstable();
        assert_eq!(seen, vec![1, 1, 1, 1, 2, 2]);
        // The queue settles before the report counts the completion: wait for the count.
        let completed = || {
            let reports = shared.reports.lock().expect("reports");
            reports.get("F").map_or(0, |r| r.completed)
        };
        let until = Instant::now() + Duration::from_secs(10);
        while completed() < 6 {
            assert!(
                Instant::now() < until,
                "completions counted: {}",
                completed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = shared.reports.lock().expect("reports").get("F").cloned();
        assert_eq!(
            report.map(|r| r.completed_at_delivery),
            Some(BTreeMap::from([(1, 4), (2, 2)]))
        );
        stop_tx.send(true).expect("stop");
        worker.await.expect("worker");
    }

    #[test]
    fn timer_payload_shape() {
        let p = timer_payload("Sweep", "timer", None, None, false);
        assert_eq!(p["Data"]["timer"]["IsPastDue"], json!(false));
        assert_eq!(p["Data"]["timer"]["Schedule"]["AdjustForDST"], json!(true));
        assert_eq!(p["Metadata"]["sys"]["MethodName"], json!("Sweep"));
    }
}
