//! The report as CSV / TSV (one row per ADE VM: what a spreadsheet filters on) and as a terminal
//! table (the headline numbers per section).

use super::model::*;
use std::collections::BTreeMap;
use std::fmt::Write;

/// CSV cell (RFC 4180 quoting; a leading `= + - @` is prefixed with `'` so a spreadsheet never
/// takes a VM name or reason from the state for a formula).
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// TSV cell: tabs and line breaks become spaces.
fn tsv_cell(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

const VM_COLUMNS: [&str; 13] = [
    "vmId",
    "outcome",
    "reason",
    "region",
    "size",
    "encryptionAtHost",
    "moveReadiness",
    "rpoHours",
    "lastRecoveryPoint",
    "freshness",
    "recoveryPoints",
    "pointsPastRetirement",
    "retainedPastRetirement",
];

/// One row per ADE VM, the columns of [`VM_COLUMNS`].
fn vm_rows(r: &FleetReport) -> Vec<[String; 13]> {
    let fresh: BTreeMap<&str, &FreshnessRow> =
        r.freshness.iter().map(|f| (f.vm_id.as_str(), f)).collect();
    let human: BTreeMap<&str, &NeedsHumanRow> = r
        .needs_human
        .iter()
        .map(|n| (n.vm_id.as_str(), n))
        .collect();
    // Per VM: how many points outlive the retirement, and the last of their expiries.
    let mut retained: BTreeMap<&str, (u64, Option<&RetentionRow>)> = BTreeMap::new();
    for x in &r.retirement.retained_past_retirement {
        let e = retained.entry(x.vm_id.as_str()).or_default();
        e.0 += 1;
        if e.1.is_none_or(|l| l.retained_until < x.retained_until) {
            e.1 = Some(x);
        }
    }
    let points: BTreeMap<&str, u64> = r
        .retirement
        .recovery_points
        .iter()
        .map(|p| (p.vm_id.as_str(), p.count))
        .collect();
    r.retirement
        .encryption_at_host
        .iter()
        .map(|e| {
            let f = fresh.get(e.vm_id.as_str());
            let h = human.get(e.vm_id.as_str());
            [
                e.vm_id.clone(),
                h.map_or_else(
                    || {
                        if f.is_some() {
                            "protected".into()
                        } else {
                            String::new()
                        }
                    },
                    |h| h.status.clone(),
                ),
                h.map(|h| h.reason.clone()).unwrap_or_default(),
                e.region.clone(),
                e.size.clone(),
                e.encryption_at_host.as_str().into(),
                e.readiness.as_str().into(),
                f.map(|f| f.rpo_hours.to_string()).unwrap_or_default(),
                f.and_then(|f| f.last_recovery_point)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                f.map(|f| f.freshness.as_str().to_string())
                    .unwrap_or_default(),
                points
                    .get(e.vm_id.as_str())
                    .map(u64::to_string)
                    .unwrap_or_default(),
                retained
                    .get(e.vm_id.as_str())
                    .map(|x| x.0.to_string())
                    .unwrap_or_default(),
                retained
                    .get(e.vm_id.as_str())
                    .and_then(|x| x.1)
                    .map(|x| x.retained_until.to_rfc3339())
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

pub fn csv(r: &FleetReport) -> String {
    delimited(r, ",", csv_cell)
}

pub fn tsv(r: &FleetReport) -> String {
    delimited(r, "\t", tsv_cell)
}

fn delimited(r: &FleetReport, sep: &str, cell: fn(&str) -> String) -> String {
    let mut s = VM_COLUMNS.join(sep);
    s.push('\n');
    for row in vm_rows(r) {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        s.push_str(&cells.join(sep));
        s.push('\n');
    }
    s
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The terminal table: one line per headline number.
pub fn table(r: &FleetReport) -> String {
    let mut s = String::new();
    let t = &r.retirement;
    let stale = r
        .freshness
        .iter()
        .filter(|f| f.freshness != Freshness::Fresh)
        .count();
    let lines: Vec<(&str, String)> = vec![
        (
            "generated",
            r.generated_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
        (
            "ADE VMs",
            format!(
                "{} ({})",
                r.coverage.ade_vms,
                counts(&r.coverage.by_outcome)
            ),
        ),
        ("sweeps in trend", r.sweeps.len().to_string()),
        ("need a human", r.needs_human.len().to_string()),
        (
            "behind their RPO",
            format!("{stale} of {} protected", r.freshness.len()),
        ),
        (
            "restore tickets",
            format!("{} ({})", r.restores.tickets, counts(&r.restores.by_status)),
        ),
        ("dead letters", r.dead_letters.len().to_string()),
        (
            "ADE retirement",
            format!("{} ({} days left)", t.retirement_date, t.days_left),
        ),
        (
            "ADE disks",
            format!(
                "{} ({} VMs not yet seen by a sweep)",
                t.ade_disks, t.vms_without_facts
            ),
        ),
        ("ADE Key Vaults", t.key_vaults.len().to_string()),
        (
            "encryption at host",
            format!(
                "{} supported, {} not, {} unknown",
                t.eah_count(HostEncryption::Supported),
                t.eah_count(HostEncryption::NotSupported),
                t.eah_count(HostEncryption::Unknown)
            ),
        ),
        (
            "can move to enc. at host",
            format!(
                "{} of {}",
                t.readiness_count(super::readiness::MoveReadiness::CanMove),
                t.encryption_at_host.len()
            ),
        ),
        (
            "ADE recovery points",
            t.recovery_points
                .iter()
                .map(|p| p.count)
                .sum::<u64>()
                .to_string(),
        ),
        (
            "retained past retirement",
            t.retained_past_retirement.len().to_string(),
        ),
    ];
    for (k, v) in lines {
        let _ = writeln!(s, "{k:<26} {v}");
    }
    for n in &r.needs_human {
        let _ = writeln!(
            s,
            "  needs a human: {} — {} ({}; {})",
            n.vm_id, n.reason, n.fix, n.doc.url
        );
    }
    for line in super::drills::table_lines(&r.drills) {
        let _ = writeln!(s, "{line}");
    }
    for w in &r.warnings {
        let _ = writeln!(s, "  gap: {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_break_rows_or_become_formulas() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=cmd()"), "'=cmd()");
        assert_eq!(tsv_cell("a\tb\nc"), "a b c");
    }
}
