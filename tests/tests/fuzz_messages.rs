//! Fuzzing every queue's handler (issue 15, scenario 5): generated and mutated messages from
//! seeds of the real shapes (the Event Grid event, a restore request, and the follow-ups the
//! real workflows sent: grants, backups, restores, redeploys), each wrapped in a host invocation
//! payload, parsed by the host protocol and dispatched to the production handlers against the
//! simulator. Plus mutated host payloads themselves.
//!
//! Per message: no panic, no hang (10 s each), and an outcome that is either a completion or a
//! dead-letter with a reason recorded at `deadletters/{queue}/{messageId}.json`; a body that
//! cannot be decoded is dead-lettered with a description that names the offending field (or
//! the body, for one that is not JSON at all). Figures are printed.
//!
//! `ADE_BACKUP_FUZZ_MESSAGES` sets the count per queue (default 500; the scenario's full run is
//! 10,000: `ADE_BACKUP_FUZZ_MESSAGES=10000 cargo test -p ade-backup-tests --test fuzz_messages
//! -- --nocapture`).

use ade_backup_functions::handlers::{self, Disposition, Outcome, Registry};
use ade_backup_functions::host::protocol::{build, parse_invocation, TriggerSpec};
use ade_backup_test_support::fuzz::{Fuzzer, Mutant};
use ade_backup_test_support::sim_stack::{restore_request, SimStack, S1};
use ade_backup_test_support::simulator::vm_id;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PER_MESSAGE: Duration = Duration::from_secs(10);

fn queue_of(trigger: &TriggerSpec) -> Option<&'static str> {
    match trigger {
        TriggerSpec::ServiceBus { queue, .. } => Some(queue),
        TriggerSpec::Timer { .. } => None,
    }
}

fn count() -> usize {
    std::env::var("ADE_BACKUP_FUZZ_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

/// The event Event Grid delivers when ADE writes its extension on web-lnx-02.
fn ade_event() -> Value {
    let ext = format!("/subscriptions/{S1}/resourceGroups/rg-app-web/providers/Microsoft.Compute/virtualMachines/web-lnx-02/extensions/AzureDiskEncryptionForLinux");
    json!({
        "id": "evt-seed", "subject": ext, "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2026-11-28T10:00:00Z", "topic": format!("/subscriptions/{S1}"),
        "dataVersion": "2", "metadataVersion": "1",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded", "subscriptionId": S1}
    })
}

/// Seeds per queue: the outside messages, and every follow-up the real workflows sent while
/// protecting a VM and restoring another.
async fn seeds(stack: &SimStack) -> BTreeMap<String, Vec<Value>> {
    let event = ade_event();
    stack.pump.enqueue(
        "vm-encryption-events",
        "evt-seed",
        serde_json::to_vec(&event).expect("json"),
    );
    stack.pump(500).await;
    let vm = vm_id(S1, "rg-app-web", "web-lnx-01");
    stack.protect(&vm).await;
    let request = restore_request("INC-FUZZ", &vm, json!({"targetVmName": "web-lnx-01-f"}));
    stack.submit("req-seed", &request).await;
    let mut seeds: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in stack.pump.sent() {
        if let Ok(v) = serde_json::from_slice::<Value>(&m.body) {
            seeds.entry(m.queue.clone()).or_default().push(v);
        }
    }
    seeds.insert("vm-encryption-events".into(), vec![event]);
    seeds.insert("restore-requests".into(), vec![request]);
    // No drill runs here (drills are off without ADE_BACKUP_DRILL_TARGETS): the drill worker's
    // message in each of its phases, as the schedule sends it.
    let drill = |phase: &str, poll: u32| json!({"drillId": "drill-20261201-3f2b6c1e", "phase": phase, "poll": poll});
    seeds.insert(
        "drill-vm".into(),
        vec![
            drill("start", 0),
            drill("await-restore", 3),
            drill("verify", 0),
            drill("cleanup", 1),
        ],
    );
    seeds
}

#[derive(Default, Debug)]
struct Tally {
    completed: usize,
    dead_lettered: usize,
    transient: usize,
    reasons: BTreeMap<String, usize>,
    /// One description per reason (printed).
    examples: BTreeMap<String, String>,
    slowest: Duration,
}

/// Whether a decode failure's description names what was wrong: a field (in backticks, as a
/// JSON path where `$` is the whole message, or as `field: rule`) or the body itself.
fn names_the_field(description: &str) -> bool {
    let leading_field = description.split_once(": ").is_some_and(|(f, _)| {
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "$._[]".contains(c))
    });
    leading_field
        || description.contains('`')
        || description.contains('$')
        || description.contains("body")
}

/// Delivers one mutant to `queue`'s function the way the host would, and checks its outcome.
async fn deliver(
    stack: &SimStack,
    registry: &Registry,
    queue: &str,
    n: usize,
    m: &Mutant,
    tally: &mut Tally,
) {
    let spec = registry
        .specs()
        .find(|s| queue_of(&s.trigger) == Some(queue))
        .expect("a function for the queue")
        .clone();
    let message_id = format!("fuzz-{queue}-{n}");
    let payload = build::service_bus_request(
        "message",
        &m.body,
        &build::Delivery {
            message_id: &message_id,
            delivery_count: 1,
            ..Default::default()
        },
    );
    let bytes = serde_json::to_vec(&payload).expect("payload");
    let input = parse_invocation(&spec.trigger, &bytes).unwrap_or_else(|e| {
        panic!(
            "{queue} #{n} ({}): the host payload is refused: {e}",
            m.what
        )
    });
    let ctx = stack.ctx.clone();
    let started = Instant::now();
    let run = tokio::spawn(async move { handlers::dispatch(&spec, input, &ctx).await });
    let outcome = match tokio::time::timeout(PER_MESSAGE, run).await {
        Err(_) => panic!("{queue} #{n} ({}): hung for {PER_MESSAGE:?}", m.what),
        Ok(Err(e)) => panic!("{queue} #{n} ({}): the handler panicked: {e}", m.what),
        Ok(Ok(o)) => o,
    };
    tally.slowest = tally.slowest.max(started.elapsed());
    match outcome {
        Outcome::Completed(_) => tally.completed += 1,
        Outcome::Failed {
            error:
                Disposition::Poison {
                    reason,
                    description,
                },
            dead_letter,
            ..
        } => {
            let dl = dead_letter.unwrap_or_else(|| {
                panic!("{queue} #{n} ({}): poison without a dead-letter", m.what)
            });
            assert_eq!(dl.reason, reason);
            assert!(!reason.is_empty() && !description.is_empty());
            let key = format!("deadletters/{queue}/{message_id}.json");
            let record = stack
                .state
                .json(&key)
                .unwrap_or_else(|| panic!("{queue} #{n}: no dead-letter record at {key}"));
            assert_eq!(record["reason"], reason.as_str(), "{record}");
            if reason == "InvalidWorkerMessage" {
                assert!(
                    description.contains("field `$"),
                    "{queue} #{n} ({}): {description}",
                    m.what
                );
            }
            if reason.starts_with("Invalid") || reason.contains("Malformed") {
                assert!(
                    names_the_field(&description),
                    "{queue} #{n} ({}): {reason}: {description}",
                    m.what
                );
            }
            tally.dead_lettered += 1;
            tally
                .examples
                .entry(reason.clone())
                .or_insert_with(|| description.chars().take(160).collect());
            *tally.reasons.entry(reason).or_default() += 1;
        }
        Outcome::Failed { error, .. } => {
            tally.transient += 1;
            *tally
                .reasons
                .entry(format!(
                    "transient: {}",
                    error.to_string().chars().take(80).collect::<String>()
                ))
                .or_default() += 1;
        }
    }
}

#[tokio::test]
async fn every_queue_survives_generated_and_mutated_messages() {
    let stack = SimStack::start().await;
    stack.sim.advance(Duration::from_secs(60));
    let seeds = seeds(&stack).await;
    let registry = Registry::production();
    let queues: Vec<&str> = registry
        .specs()
        .filter_map(|s| queue_of(&s.trigger))
        .collect();
    let n = count();
    let mut fuzzer = Fuzzer::new(15);
    for queue in queues {
        let seeds = seeds
            .get(queue)
            .unwrap_or_else(|| panic!("no seed message for {queue}: {:?}", seeds.keys()));
        let mut tally = Tally::default();
        let t = Instant::now();
        for i in 0..n {
            let m = if i % 20 == 19 {
                let v = fuzzer.value();
                Mutant {
                    body: serde_json::to_vec(&v).expect("json"),
                    what: "generated".into(),
                }
            } else {
                fuzzer.mutate(&seeds[i % seeds.len()])
            };
            deliver(&stack, &registry, queue, i, &m, &mut tally).await;
            // The follow-ups valid mutants schedule are not delivered: this is about the input.
            stack.pump.lose_pending();
        }
        println!(
            "fuzz {queue}: {n} messages from {} seed(s) in {:.1} s (slowest {} ms): {} completed, {} dead-lettered, {} transient; reasons {:?}",
            seeds.len(),
            t.elapsed().as_secs_f64(),
            tally.slowest.as_millis(),
            tally.completed,
            tally.dead_lettered,
            tally.transient,
            tally.reasons
        );
        for (reason, d) in &tally.examples {
            println!("  e.g. {reason}: {d}");
        }
        assert_eq!(tally.completed + tally.dead_lettered + tally.transient, n);
        assert!(tally.dead_lettered > n / 4, "{queue}: {tally:?}");
    }
}

/// Mutated host payloads (the invocation envelope itself): refused with the field named, or
/// parsed into a message the handler then judges; never a panic.
#[tokio::test]
async fn mutated_host_payloads_are_refused_with_the_field_named() {
    let registry = Registry::production();
    let mut fuzzer = Fuzzer::new(16);
    let n = count();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut parsed = 0;
    for spec in registry.specs() {
        let body = br#"{"operationId":"op-1"}"#;
        let seed = match queue_of(&spec.trigger) {
            Some(_) => build::service_bus_request(
                "message",
                body,
                &build::Delivery {
                    message_id: "m-1",
                    delivery_count: 1,
                    correlation_id: Some("c-1"),
                    content_type: Some("application/json"),
                    enqueued_time: None,
                    sequence_number: Some(7),
                    ..Default::default()
                },
            ),
            None => build::timer_request("timer", false, None),
        };
        for _ in 0..n {
            let m = fuzzer.mutate(&seed);
            match parse_invocation(&spec.trigger, &m.body) {
                Ok(_) => parsed += 1,
                Err(e) => {
                    assert!(!e.field.is_empty() && !e.rule.is_empty(), "{e:?}");
                    *refused.entry(e.field.clone()).or_default() += 1;
                }
            }
        }
    }
    let total: usize = refused.values().sum();
    println!(
        "host payloads: {} mutated over {} functions: {parsed} parsed, {total} refused; fields named {refused:?}",
        n * registry.specs().count(),
        registry.specs().count()
    );
    assert!(
        total > n / 2 && parsed > n / 10,
        "{parsed} parsed, {refused:?}"
    );
}
