//! The report's "Restore drills" section: per protected VM its latest drill (result, reason,
//! clean-up, RTO), the drill counts, and the lists a human acts on: protected VMs never drilled,
//! and VMs whose last drill failed (or whose clean-up left resources behind). Built from the
//! VMs' drill indexes (`drill-vms/`) and the VM records.

use crate::records::{
    CleanupStatus, DrillResult, DrillStatus, DrillVmIndex, ProtectionStatus, VmRecord,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drills {
    /// Protected VMs with at least one drill.
    pub drilled: u64,
    pub passed: u64,
    pub failed: u64,
    pub running: u64,
    /// Mean total RTO of the passed drills, in seconds.
    pub mean_rto_secs: Option<i64>,
    /// Latest drill per VM.
    pub rows: Vec<DrillRow>,
    /// Protected VMs never drilled (ids).
    pub never_drilled: Vec<String>,
    /// VMs whose last drill failed or whose clean-up failed.
    pub last_failed: Vec<DrillRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrillRow {
    pub vm_id: String,
    pub drill_id: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub status: String,
    pub result: String,
    pub reason: String,
    pub cleanup: String,
    pub total_rto_secs: Option<i64>,
}

pub fn build(vms: &[VmRecord], indexes: &[DrillVmIndex]) -> Drills {
    let mut d = Drills::default();
    let mut rows: Vec<DrillRow> = indexes
        .iter()
        .map(|i| DrillRow {
            vm_id: i.vm_id.to_string(),
            drill_id: i.last_drill_id.clone(),
            started: i.last_started,
            status: i.status.to_string(),
            result: i.result.map(|r| r.to_string()).unwrap_or_default(),
            reason: i.reason.clone().unwrap_or_default(),
            cleanup: i.cleanup.to_string(),
            total_rto_secs: i.total_rto_secs,
        })
        .collect();
    rows.sort_by(|a, b| {
        a.vm_id
            .to_ascii_lowercase()
            .cmp(&b.vm_id.to_ascii_lowercase())
    });
    d.drilled = indexes.len() as u64;
    d.running = indexes
        .iter()
        .filter(|i| i.status != DrillStatus::Done)
        .count() as u64;
    let done = || indexes.iter().filter(|i| i.status == DrillStatus::Done);
    d.passed = done()
        .filter(|i| i.result == Some(DrillResult::Passed))
        .count() as u64;
    d.failed = done()
        .filter(|i| i.result != Some(DrillResult::Passed))
        .count() as u64;
    let rtos: Vec<i64> = done()
        .filter(|i| i.result == Some(DrillResult::Passed))
        .filter_map(|i| i.total_rto_secs)
        .collect();
    d.mean_rto_secs = (!rtos.is_empty()).then(|| rtos.iter().sum::<i64>() / rtos.len() as i64);
    d.last_failed = rows
        .iter()
        .filter(|r| {
            r.status == DrillStatus::Done.as_str()
                && (r.result != DrillResult::Passed.as_str()
                    || r.cleanup != CleanupStatus::Done.as_str())
        })
        .cloned()
        .collect();
    let drilled = |v: &VmRecord| {
        let id = v.vm_id.to_string();
        indexes
            .iter()
            .any(|i| i.vm_id.to_string().eq_ignore_ascii_case(&id))
    };
    d.never_drilled = vms
        .iter()
        .filter(|v| v.status == ProtectionStatus::Protected && !drilled(v))
        .map(|v| v.vm_id.to_string())
        .collect();
    d.never_drilled.sort();
    d.rows = rows;
    d
}

/// The table lines of the section.
pub fn table_lines(d: &Drills) -> Vec<String> {
    let mut out = vec![format!(
        "{:<26} {} VMs drilled ({} passed, {} failed, {} running); mean RTO {}; {} protected VMs never drilled",
        "restore drills",
        d.drilled,
        d.passed,
        d.failed,
        d.running,
        d.mean_rto_secs.map(|s| format!("{s} s")).unwrap_or_else(|| "-".into()),
        d.never_drilled.len()
    )];
    for r in &d.last_failed {
        out.push(format!(
            "  last drill failed: {} — {} {} (clean-up {})",
            r.vm_id, r.drill_id, r.reason, r.cleanup
        ));
    }
    for v in &d.never_drilled {
        out.push(format!("  never drilled: {v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ade_backup_shared::ids::ResourceId;
    use chrono::Utc;

    fn id(n: &str) -> ResourceId {
        ResourceId::parse(&format!("/subscriptions/3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{n}")).expect("id")
    }

    fn index(
        n: &str,
        result: Option<DrillResult>,
        cleanup: CleanupStatus,
        rto: i64,
    ) -> DrillVmIndex {
        DrillVmIndex {
            vm_id: id(n),
            rule: None,
            last_drill_id: format!("drill-{n}"),
            last_started: Utc::now(),
            status: DrillStatus::Done,
            result,
            reason: (result != Some(DrillResult::Passed)).then(|| "key-material-missing".into()),
            cleanup,
            total_rto_secs: Some(rto),
            finished_at: None,
        }
    }

    #[test]
    fn lists_never_drilled_and_last_failed_for_humans() {
        let mut protected = VmRecord::new(id("c"), Utc::now());
        protected.status = ProtectionStatus::Protected;
        let mut a = VmRecord::new(id("a"), Utc::now());
        a.status = ProtectionStatus::Protected;
        let idx = [
            index("a", Some(DrillResult::Passed), CleanupStatus::Done, 100),
            index("b", Some(DrillResult::Failed), CleanupStatus::Done, 50),
            index("d", Some(DrillResult::Passed), CleanupStatus::Failed, 300),
        ];
        let d = build(&[protected, a], &idx);
        assert_eq!((d.drilled, d.passed, d.failed), (3, 2, 1));
        assert_eq!(d.mean_rto_secs, Some(200));
        assert_eq!(d.never_drilled.len(), 1);
        assert!(d.never_drilled[0].ends_with("/c"));
        let failed: Vec<&str> = d.last_failed.iter().map(|r| r.drill_id.as_str()).collect();
        assert_eq!(failed, ["drill-b", "drill-d"]);
        let lines = table_lines(&d).join("\n");
        assert!(
            lines.contains("never drilled") && lines.contains("drill-b key-material-missing"),
            "{lines}"
        );
    }
}
