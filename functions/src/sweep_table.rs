//! `ade-backup sweep --dry-run`: the sweep's plan report
//! ([`crate::workflows::sweep::SweepPlanReport`]) as a readable table, one line per VM that needs
//! anything, followed by the totals and the warnings.

use crate::workflows::sweep::{action_name, drift_kind, SweepPlanReport};
use std::collections::BTreeMap;

/// The dry-run report as a text table (one line per VM that needs anything).
pub fn render_table(report: &SweepPlanReport) -> String {
    let mut out = aligned(&rows(report));
    out.push_str(&footer(report));
    out
}

/// The header and one row per plan: VM, drift kinds, actions, note.
fn rows(report: &SweepPlanReport) -> Vec<[String; 4]> {
    let mut rows: Vec<[String; 4]> =
        vec![["VM".into(), "DRIFT".into(), "ACTIONS".into(), "NOTE".into()]];
    for p in &report.plans {
        let drift: Vec<&str> = p.drift.iter().map(drift_kind).collect();
        let actions: Vec<&str> = p.actions.iter().map(|a| action_name(*a)).collect();
        let note = if let Some(h) = &p.needs_human {
            format!("needs a human: {h}")
        } else if p.in_flight {
            "work already in flight".to_string()
        } else if p.actions.is_empty() {
            "reported, kept as is".to_string()
        } else {
            String::new()
        };
        rows.push([
            format!("{}/{}", p.vm_id.resource_group(), p.vm_id.name()),
            or_dash(&drift),
            or_dash(&actions),
            note,
        ]);
    }
    rows
}

/// The names, comma-separated; `-` for none.
fn or_dash(names: &[&str]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

/// The rows with their first three columns padded to the widest cell, trailing blanks trimmed.
fn aligned(rows: &[[String; 4]]) -> String {
    let mut widths = [0usize; 4];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Scope, totals, ARM usage and the warnings.
fn footer(report: &SweepPlanReport) -> String {
    let mut out = format!("\nscope: {}", report.scope);
    out.push_str(&format!(
        "\n{} VMs seen, {} with ADE, {} protected items, {} of {} key vaults with Azure Backup access\ndrift: {}\nactions: {}\n{} ARM calls, {} throttled (dry run: nothing was changed)\n",
        report.vms_seen,
        report.ade_vms,
        report.protected_items,
        report.key_vaults_with_access,
        report.key_vaults,
        counts(&report.drift),
        counts(&report.actions),
        report.arm.calls,
        report.arm.throttled
    ));
    for w in &report.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

/// `kind=n kind=n`, or `none`.
fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "none".to_string()
    } else {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A finished (or skipped) run as text: the summary's headline numbers, what needs a human and
/// the warnings (`ade-backup sweep` without `--dry-run`; `-o json` prints the whole summary).
pub fn render_outcome(outcome: &crate::workflows::sweep::SweepOutcome) -> String {
    use crate::workflows::sweep::SweepOutcome;
    use std::fmt::Write;
    let s = match outcome {
        SweepOutcome::Skipped { reason } => return format!("sweep skipped: {reason}\n"),
        SweepOutcome::Completed(s) => s,
    };
    let counts = |m: &BTreeMap<String, u64>| {
        let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run        {} ({}, {} ms)",
        s.run_id, s.status, s.duration_ms
    );
    let _ = writeln!(
        out,
        "scope      {} ({} subscriptions)",
        s.scope, s.subscriptions
    );
    let _ = writeln!(
        out,
        "VMs        {} seen, {} ADE, {} protected items",
        s.vms_seen, s.ade_vms, s.protected_items
    );
    let _ = writeln!(out, "drift      {}", counts(&s.drift));
    let _ = writeln!(out, "outcomes   {}", counts(&s.outcomes));
    let _ = writeln!(
        out,
        "ARM        {} calls, {} throttled",
        s.arm.calls, s.arm.throttled
    );
    let _ = writeln!(
        out,
        "state      {} reads, {} writes",
        s.state_reads, s.state_writes
    );
    if let Some(e) = &s.error {
        let _ = writeln!(out, "error      {e}");
    }
    for n in &s.needs_human {
        let _ = writeln!(out, "needs a human: {}: {}", n.vm_id, n.reason);
    }
    for f in &s.failures {
        let _ = writeln!(out, "failed: {}: {}", f.vm_id, f.error);
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sweep_plan::{Action, Drift, VmPlan};
    use crate::workflows::sweep::ArmUsage;
    use ade_backup_shared::ids::ResourceId;
    use chrono::{TimeZone, Utc};

    fn plan(rg: &str, vm: &str, actions: Vec<Action>, drift: Vec<Drift>) -> VmPlan {
        VmPlan {
            vm_id: ResourceId::parse(&format!(
                "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}"
            ))
            .expect("id"),
            actions,
            drift,
            needs_human: None,
            in_flight: false,
            target: None,
        }
    }

    fn report() -> SweepPlanReport {
        let in_flight = VmPlan {
            in_flight: true,
            ..plan(
                "rg",
                "vm3",
                vec![Action::BackupNow],
                vec![Drift::RecoveryPointStale {
                    age_hours: 40,
                    rpo_hours: 24,
                }],
            )
        };
        let needs_human = VmPlan {
            needs_human: Some("unsupported: dual-pass: old ADE".into()),
            ..plan("rg", "vm4", vec![], vec![])
        };
        SweepPlanReport {
            generated_at: Utc
                .with_ymd_and_hms(2024, 5, 1, 10, 0, 0)
                .single()
                .expect("time"),
            scope: "subscriptions 1; VMs tagged env=prod".into(),
            subscriptions: vec!["00000000-0000-0000-0000-000000000001".into()],
            vms_seen: 12,
            ade_vms: 5,
            protected_items: 3,
            key_vaults: 4,
            key_vaults_with_access: 2,
            drift: BTreeMap::from([
                ("unprotected".to_string(), 2),
                ("recovery-point-stale".to_string(), 1),
            ]),
            actions: BTreeMap::new(),
            plans: vec![
                plan(
                    "rg-web",
                    "web-01",
                    vec![Action::GrantAccess, Action::Protect],
                    vec![
                        Drift::Unprotected,
                        Drift::KeyVaultAccessRemoved {
                            key_vault: "kv".into(),
                        },
                    ],
                ),
                plan(
                    "rg",
                    "a-much-longer-vm-name",
                    vec![],
                    vec![Drift::PolicyChanged {
                        expected: "a".into(),
                        actual: "b".into(),
                    }],
                ),
                in_flight,
                needs_human,
                plan(
                    "rg",
                    "vm5",
                    vec![],
                    vec![
                        Drift::NoRecoveryPoint,
                        Drift::LastJobFailed { code: "X".into() },
                        Drift::ProtectionStopped { state: "S".into() },
                    ],
                ),
            ],
            warnings: vec!["one".into(), "two words".into()],
            arm: ArmUsage {
                calls: 7,
                throttled: 1,
                ..Default::default()
            },
        }
    }

    /// The table as the dry run has always printed it, byte for byte.
    #[test]
    fn the_table_is_aligned_with_notes_totals_and_warnings() {
        let expected = concat!(
            "VM                        DRIFT                                                 ACTIONS               NOTE\n",
            "rg-web/web-01             unprotected,key-vault-access-removed                  grant-access,protect\n",
            "rg/a-much-longer-vm-name  policy-changed                                        -                     reported, kept as is\n",
            "rg/vm3                    recovery-point-stale                                  backup-now            work already in flight\n",
            "rg/vm4                    -                                                     -                     needs a human: unsupported: dual-pass: old ADE\n",
            "rg/vm5                    no-recovery-point,last-job-failed,protection-stopped  -                     reported, kept as is\n",
            "\n",
            "scope: subscriptions 1; VMs tagged env=prod\n",
            "12 VMs seen, 5 with ADE, 3 protected items, 2 of 4 key vaults with Azure Backup access\n",
            "drift: recovery-point-stale=1 unprotected=2\n",
            "actions: none\n",
            "7 ARM calls, 1 throttled (dry run: nothing was changed)\n",
            "warning: one\n",
            "warning: two words\n",
        );
        assert_eq!(render_table(&report()), expected);
    }
}
