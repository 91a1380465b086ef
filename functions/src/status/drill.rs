//! `ade-backup status --drill ID`: a restore drill's document (result, why, RTO per step, the
//! clean-up resource by resource); and a VM's last drill (its drill index) for `status --vm`.
//! Reads the state store only.

use super::{cell, StatusError};
use crate::records::{drill_key, drill_vm_key, DrillRecord, DrillVmIndex};
use ade_backup_shared::ids::ResourceId;
use ade_backup_shared::state::{json, StateStore};
use std::fmt::Write as _;

async fn read<T: serde::de::DeserializeOwned>(
    state: &dyn StateStore,
    key: String,
) -> Result<Option<T>, StatusError> {
    json::get::<T>(state, &key)
        .await
        .map(|o| o.map(|(d, _)| d))
        .map_err(|source| StatusError::State { key, source })
}

/// The drill document `drill_id`, if that drill exists.
pub async fn drill_status(
    state: &dyn StateStore,
    drill_id: &str,
) -> Result<Option<DrillRecord>, StatusError> {
    read(state, drill_key(drill_id)).await
}

/// The VM's last drill, if it was ever drilled.
pub async fn last_drill(
    state: &dyn StateStore,
    vm: &ResourceId,
) -> Result<Option<DrillVmIndex>, StatusError> {
    read(state, drill_vm_key(vm)).await
}

fn secs(v: Option<i64>) -> String {
    v.map_or("-".to_string(), |s| format!("{s} s"))
}

/// A summary, the RTO per step, the checks, then the clean-up one resource per row.
pub fn render_drill_text(d: &DrillRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "drill:    {}", d.drill_id);
    let _ = writeln!(out, "vm:       {}", d.vm_id);
    let _ = writeln!(out, "status:   {}", d.status);
    let result = d.result.map_or("-", |r| r.as_str());
    let reason = d
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    let _ = writeln!(out, "result:   {result}{reason}");
    if let Some(m) = &d.message {
        let _ = writeln!(out, "message:  {}", cell(m));
    }
    let _ = writeln!(out, "group:    {}", d.drill_resource_group);
    let _ = writeln!(
        out,
        "started:  {}",
        d.created_at.format("%Y-%m-%d %H:%M:%S")
    );
    if let Some(f) = d.finished_at {
        let _ = writeln!(out, "finished: {}", f.format("%Y-%m-%d %H:%M:%S"));
    }
    let r = &d.rto;
    let _ = writeln!(
        out,
        "RTO:      restore job {}, deployment {}, ADE reinstall {}, verification {}, total {}",
        secs(r.restore_job_secs),
        secs(r.deployment_secs),
        secs(r.reinstall_secs),
        secs(r.verification_secs),
        secs(r.total_secs)
    );
    for c in &d.checks {
        let _ = writeln!(out, "check:    {}", cell(c));
    }
    let c = &d.cleanup;
    let _ = writeln!(out, "clean-up: {} after {} pass(es)", c.status, c.passes);
    for i in &c.items {
        let why = i.error.as_deref().map(cell).unwrap_or_default();
        let _ = writeln!(out, "  {:<9} {}  {why}", i.state.as_str(), i.id);
    }
    for r in &c.refused {
        let _ = writeln!(
            out,
            "  {:<9} {r}  not a drill resource of the drill group",
            "refused"
        );
    }
    for b in &c.blobs {
        let state = if b.deleted { "deleted" } else { "left" };
        let _ = writeln!(out, "  {state:<9} staging blob {}", b.uri);
    }
    out
}

/// TSV rows: one per clean-up resource (`id state failures error`), as `az -o tsv` prints a list.
pub fn drill_tsv_rows(d: &DrillRecord) -> serde_json::Value {
    serde_json::Value::Array(
        d.cleanup
            .items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "drill": d.drill_id, "id": i.id, "state": i.state,
                    "failures": i.failures, "error": i.error
                })
            })
            .collect(),
    )
}

/// One line per field of the VM's last drill, for `status --vm`.
pub fn render_last_drill(i: &DrillVmIndex) -> String {
    let result = i.result.map_or("-", |r| r.as_str());
    let reason = i
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(
        "  last drill: {} started {}: {} {result}{reason}, clean-up {}, RTO {}\n",
        i.last_drill_id,
        i.last_started.format("%Y-%m-%d %H:%M:%S"),
        i.status,
        i.cleanup,
        secs(i.total_rto_secs)
    )
}
