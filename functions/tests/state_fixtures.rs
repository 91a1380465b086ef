//! State documents written by the version before typed statuses and steps (kept as fixtures in
//! `fixtures/state-v1/`, taken from a real `ade-backup local` run) still load, and are written
//! back exactly as they were: the typed records serialize to the same JSON.

use ade_backup_functions::records::{
    ProtectStep, ProtectionOperation, ProtectionStatus, RestoreOperation, RestoreStatus,
    RestoreStep, VmRecord,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".json"))
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).expect("fixture");
            (n, serde_json::from_str(&text).expect("fixture JSON"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no {prefix} fixtures");
    out
}

/// Loads `doc` as `T` and checks that writing it back gives the same JSON.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str, doc: &Value) -> T {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(&back, doc, "{name} is not written back as it was");
    typed
}

#[test]
fn protection_operations_load_and_round_trip() {
    let mut seen = Vec::new();
    for (name, doc) in fixtures("protect-operation-") {
        let op: ProtectionOperation = round_trip(&name, &doc);
        assert_eq!(op.status, doc["status"].as_str().expect("status"));
        if op.status == ProtectionStatus::Protected {
            assert!(op.steps.is_done(ProtectStep::TrackBackupJob), "{name}");
            assert!(op.azure.recovery_point_id.is_some(), "{name}");
        }
        seen.push(op.status);
    }
    for st in [
        ProtectionStatus::Protected,
        ProtectionStatus::Blocked,
        ProtectionStatus::Unsupported,
    ] {
        assert!(seen.contains(&st), "a fixture with status {st}");
    }
}

#[test]
fn vm_records_load_and_round_trip() {
    let mut seen = Vec::new();
    for (name, doc) in fixtures("vm-record-") {
        let rec: VmRecord = round_trip(&name, &doc);
        assert_eq!(rec.status, doc["status"].as_str().expect("status"));
        seen.push(rec.status);
    }
    assert!(
        seen.contains(&ProtectionStatus::Unset),
        "a record with no status yet"
    );
    assert!(seen.contains(&ProtectionStatus::Protected));
}

#[test]
fn restore_documents_load_and_round_trip() {
    let mut seen = Vec::new();
    for (name, doc) in fixtures("restore-") {
        let op: RestoreOperation = round_trip(&name, &doc);
        assert_eq!(op.status, doc["status"].as_str().expect("status"));
        if op.status == RestoreStatus::Completed {
            assert!(op.steps.is_done(RestoreStep::Verify), "{name}");
            let d = op.steps.detail(RestoreStep::RestoreDisks);
            assert!(
                d.job_id.is_some() && d.pending.is_some(),
                "{name}: typed detail"
            );
        }
        for u in &op.history {
            assert_eq!(u.ticket_id, op.ticket_id.as_str());
        }
        seen.push(op.status);
    }
    assert!(seen.contains(&RestoreStatus::Completed));
    assert!(seen.contains(&RestoreStatus::Rejected));
}

#[test]
fn a_step_named_by_its_poll_phase_in_older_documents_still_loads() {
    let (name, mut doc) = fixtures("restore-completed-linux").pop().expect("fixture");
    let last = doc["history"]
        .as_array_mut()
        .and_then(|h| h.last_mut())
        .expect("history");
    last["step"] = Value::from("deploy-poll");
    let op: RestoreOperation = serde_json::from_value(doc).expect(&name);
    assert_eq!(
        op.history.last().and_then(|u| u.step),
        Some(RestoreStep::Deploy)
    );
}
