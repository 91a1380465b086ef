//! The report as one self-contained HTML page: inline CSS and inline SVG, no script, no external
//! asset, and a Content-Security-Policy that forbids loading anything (safe to mail and to open
//! offline). Every string from the state (VM names, reasons, ticket ids) is untrusted and escaped.

use super::model::*;
use super::svg::{self, esc};
use std::fmt::Write;

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#212121;max-width:1100px}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f5f5f5}.num{text-align:right}.kpi{display:inline-block;margin:0 24px 8px 0}\
.kpi b{display:block;font-size:24px}.warn{color:#b71c1c}svg text{font:12px system-ui,sans-serif}\
code{font-size:12px;white-space:nowrap}";

/// The whole page.
pub fn render(r: &FleetReport) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="viewport" content="width=device-width"><title>ade-backup fleet report</title><style>{STYLE}</style></head><body>"#
    );
    let _ = write!(
        s,
        "<h1>ade-backup fleet report</h1><p>Generated {} · ARM facts from {}</p>",
        r.generated_at.format("%Y-%m-%d %H:%M UTC"),
        r.facts_gathered_at
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "no sweep yet".into())
    );
    kpis(&mut s, r);
    coverage(&mut s, r);
    drift(&mut s, r);
    freshness(&mut s, r);
    restores(&mut s, r);
    drills(&mut s, r);
    retirement(&mut s, r);
    dead_letters(&mut s, r);
    if !r.warnings.is_empty() {
        s.push_str("<h2>Gaps</h2><ul>");
        for w in &r.warnings {
            let _ = write!(s, r#"<li class="warn">{}</li>"#, esc(w));
        }
        s.push_str("</ul>");
    }
    s.push_str("</body></html>\n");
    s
}

fn kpi(s: &mut String, id: &str, label: &str, value: &str) {
    let _ = write!(
        s,
        r#"<span class="kpi" data-kpi="{}"><b>{}</b>{}</span>"#,
        esc(id),
        esc(value),
        esc(label)
    );
}

fn kpis(s: &mut String, r: &FleetReport) {
    s.push_str("<div>");
    kpi(s, "ade-vms", "ADE VMs", &r.coverage.ade_vms.to_string());
    let protected = r.coverage.by_outcome.get("protected").copied().unwrap_or(0);
    kpi(s, "protected", "protected", &protected.to_string());
    kpi(
        s,
        "needs-human",
        "need a human",
        &r.needs_human.len().to_string(),
    );
    let stale = r
        .freshness
        .iter()
        .filter(|f| f.freshness != Freshness::Fresh)
        .count();
    kpi(s, "stale", "behind their RPO", &stale.to_string());
    kpi(
        s,
        "days-left",
        "days to ADE retirement",
        &r.retirement.days_left.to_string(),
    );
    s.push_str("</div>");
}

/// A link to a documentation page (`rel=noreferrer`: a click sends nothing about the report).
fn doc_link(d: &DocLink) -> String {
    format!(
        r#"<a href="{}" rel="noreferrer">{}</a>"#,
        esc(&d.url),
        esc(&d.title)
    )
}

/// A table from a header and rows of already-escaped cells.
fn table(s: &mut String, id: &str, head: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = write!(s, r#"<table data-table="{}"><tr>"#, esc(id));
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for row in rows {
        s.push_str("<tr>");
        for c in row {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

fn coverage(s: &mut String, r: &FleetReport) {
    s.push_str("<h2>Coverage</h2><p>ADE VMs by outcome, per subscription and region.</p>");
    let rows: Vec<(String, Vec<(String, u64)>)> = r
        .coverage
        .groups
        .iter()
        .map(|g| {
            (
                format!("{} · {}", short_sub(&g.subscription), g.region),
                g.by_outcome.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            )
        })
        .collect();
    s.push_str(&svg::stacked("coverage", "ADE VMs by outcome", &rows));
    legend(s, r.coverage.by_outcome.keys().map(String::as_str));
    s.push_str("<h3>Trend across the last sweeps</h3>");
    let trend: Vec<(String, Vec<(String, u64)>)> = r
        .sweeps
        .iter()
        .map(|p| {
            (
                p.finished_at.format("%m-%d %H:%M:%S").to_string(),
                vec![
                    ("protected-items".to_string(), p.protected_items),
                    (
                        "unprotected-ade-vms".to_string(),
                        p.ade_vms.saturating_sub(p.protected_items),
                    ),
                ],
            )
        })
        .collect();
    s.push_str(&svg::stacked(
        "coverage-trend",
        "protected items per sweep",
        &trend,
    ));
    legend(s, ["protected-items", "unprotected-ade-vms"].into_iter());
}

fn legend<'a>(s: &mut String, keys: impl Iterator<Item = &'a str>) {
    s.push_str("<p>");
    for k in keys {
        let _ = write!(
            s,
            r#"<span style="color:{}">■</span> {} &nbsp; "#,
            svg::colour(k),
            esc(k)
        );
    }
    s.push_str("</p>");
}

/// A VM as `resourceGroup/name`, its full resource id in the tooltip.
fn vm_cell(id: &str) -> String {
    let parts: Vec<&str> = id.split('/').collect();
    let short = match parts.as_slice() {
        [.., "resourceGroups", rg, "providers", _, _, name] => format!("{rg}/{name}"),
        _ => id.to_string(),
    };
    format!(r#"<code title="{}">{}</code>"#, esc(id), esc(&short))
}

fn short_sub(sub: &str) -> String {
    sub.split('-').next().unwrap_or(sub).to_string()
}

fn drift(s: &mut String, r: &FleetReport) {
    s.push_str("<h2>Drift</h2><p>Drift found and repairs started per sweep.</p>");
    let rows: Vec<(String, Vec<(String, u64)>)> = r
        .sweeps
        .iter()
        .map(|p| {
            (
                p.finished_at.format("%m-%d %H:%M:%S").to_string(),
                vec![
                    ("drift-found".to_string(), p.drift_found),
                    ("repair-started".to_string(), p.repair_started),
                    ("needs-human".to_string(), p.needs_human),
                ],
            )
        })
        .collect();
    s.push_str(&svg::stacked("drift", "drift per sweep", &rows));
    legend(
        s,
        ["drift-found", "repair-started", "needs-human"].into_iter(),
    );
    let _ = write!(
        s,
        "<h3>VMs that need a human ({})</h3>",
        r.needs_human.len()
    );
    table(
        s,
        "needs-human",
        &["VM", "status", "reason", "fix", "how-to", "message"],
        r.needs_human.iter().map(|n| {
            vec![
                vm_cell(&n.vm_id),
                esc(&n.status),
                esc(&n.reason),
                esc(&n.fix),
                doc_link(&n.doc),
                esc(&n.message),
            ]
        }),
    );
}

fn freshness(s: &mut String, r: &FleetReport) {
    s.push_str("<h2>Recovery-point freshness</h2><p>Each protected VM's latest recovery point against its policy's RPO.</p>");
    let mut counts = std::collections::BTreeMap::<&str, f64>::new();
    for f in &r.freshness {
        *counts.entry(f.freshness.as_str()).or_insert(0.0) += 1.0;
    }
    let rows: Vec<(String, f64)> = counts.into_iter().map(|(k, v)| (k.into(), v)).collect();
    s.push_str(&svg::bars(
        "freshness",
        "protected VMs by freshness",
        &rows,
        "VMs",
    ));
    table(
        s,
        "freshness",
        &["VM", "RPO (h)", "last recovery point", "age (h)", "state"],
        r.freshness
            .iter()
            .filter(|f| f.freshness != Freshness::Fresh)
            .map(|f| {
                vec![
                    vm_cell(&f.vm_id),
                    format!("{} ({})", f.rpo_hours, esc(&f.rpo_source)),
                    f.last_recovery_point
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_default(),
                    f.age_hours.map(|a| a.to_string()).unwrap_or_default(),
                    esc(f.freshness.as_str()),
                ]
            }),
    );
}

fn restores(s: &mut String, r: &FleetReport) {
    let _ = write!(
        s,
        "<h2>Restores</h2><p>{} tickets by status.</p>",
        r.restores.tickets
    );
    let rows: Vec<(String, f64)> = r
        .restores
        .by_status
        .iter()
        .map(|(k, v)| (k.clone(), *v as f64))
        .collect();
    s.push_str(&svg::bars(
        "restores",
        "tickets by status",
        &rows,
        "tickets",
    ));
    s.push_str("<h3>Time in each status (mean seconds)</h3>");
    let phases: Vec<(String, f64)> = r
        .restores
        .phases
        .iter()
        .map(|p| (p.phase.clone(), (p.mean_seconds * 10.0).round() / 10.0))
        .collect();
    s.push_str(&svg::bars(
        "restore-phases",
        "mean seconds per status",
        &phases,
        "s",
    ));
    let _ = write!(
        s,
        "<h3>Failed and rejected ({})</h3>",
        r.restores.failures.len()
    );
    table(
        s,
        "restore-failures",
        &[
            "ticket",
            "status",
            "step",
            "reason",
            "message",
            "next action",
        ],
        r.restores.failures.iter().map(|f| {
            vec![
                esc(&f.ticket),
                esc(&f.status),
                esc(&f.step),
                esc(&f.reason),
                esc(&f.message),
                esc(&f.next_action),
            ]
        }),
    );
}

/// "Restore drills": counts, the VMs a human acts on, and the latest drill per VM.
fn drills(s: &mut String, r: &FleetReport) {
    let d = &r.drills;
    let _ = write!(
        s,
        "<h2>Restore drills</h2><p>{} VMs drilled: {} passed, {} failed, {} running; mean RTO of passed drills {}.</p>",
        d.drilled,
        d.passed,
        d.failed,
        d.running,
        d.mean_rto_secs.map(|v| format!("{v} s")).unwrap_or_else(|| "-".into())
    );
    let head = [
        "VM", "drill", "started", "status", "result", "reason", "clean-up", "RTO (s)",
    ];
    let row = |x: &super::drills::DrillRow| {
        vec![
            format!("<code>{}</code>", esc(&x.vm_id)),
            esc(&x.drill_id),
            esc(&x.started.format("%Y-%m-%d %H:%M").to_string()),
            esc(&x.status),
            esc(&x.result),
            esc(&x.reason),
            esc(&x.cleanup),
            x.total_rto_secs.map(|v| v.to_string()).unwrap_or_default(),
        ]
    };
    let _ = write!(s, "<h3>Last drill failed ({})</h3>", d.last_failed.len());
    table(s, "drills-failed", &head, d.last_failed.iter().map(row));
    let _ = write!(s, "<h3>Never drilled ({})</h3>", d.never_drilled.len());
    table(
        s,
        "drills-never",
        &["VM"],
        d.never_drilled
            .iter()
            .map(|v| vec![format!("<code>{}</code>", esc(v))]),
    );
    s.push_str("<h3>Latest drill per VM</h3>");
    table(s, "drills", &head, d.rows.iter().map(row));
}

fn retirement(s: &mut String, r: &FleetReport) {
    let t = &r.retirement;
    let _ = write!(
        s,
        "<h2>ADE retirement readiness</h2><p>Azure Disk Encryption retires on {}: <b data-kpi=\"days-left-detail\">{}</b> days left. After it, ADE disks fail to unlock on reboot and ADE VMs can no longer be backed up. How to move: {}.</p>",
        t.retirement_date,
        t.days_left,
        doc_link(&t.doc)
    );
    s.push_str("<div>");
    kpi(s, "ret-vms", "VMs on ADE", &t.ade_vms.to_string());
    kpi(s, "ret-disks", "ADE disks", &t.ade_disks.to_string());
    if t.vms_without_facts > 0 {
        kpi(
            s,
            "ret-unknown",
            "VMs not yet seen by a sweep",
            &t.vms_without_facts.to_string(),
        );
    }
    kpi(
        s,
        "ret-kv",
        "Key Vaults with ADE keys",
        &t.key_vaults.len().to_string(),
    );
    kpi(
        s,
        "ret-rp",
        "VMs with ADE recovery points",
        &t.vms_with_recovery_points.to_string(),
    );
    kpi(
        s,
        "ret-points",
        "ADE recovery points",
        &t.recovery_points
            .iter()
            .map(|p| p.count)
            .sum::<u64>()
            .to_string(),
    );
    s.push_str("</div>");
    encryption_at_host(s, t);
    recovery_points(s, t);
    retained_past_retirement(s, t);
}

/// Which ADE VMs can move to encryption at host: a chart by verdict and the VMs that cannot
/// (yet), with the blocker, the fix and the page explaining it.
fn encryption_at_host(s: &mut String, t: &Retirement) {
    use super::readiness::MoveReadiness as M;
    s.push_str("<h3>Can move to encryption at host</h3><p>As ARM tells: the size's <code>EncryptionAtHostSupported</code> in the region, <code>NotAvailableForSubscription</code> restrictions, and the subscription's <code>Microsoft.Compute/EncryptionAtHost</code> registration.</p>");
    let rows: Vec<(String, f64)> = M::ALL
        .iter()
        .map(|m| (m.as_str().to_string(), t.readiness_count(*m) as f64))
        .collect();
    s.push_str(&svg::bars(
        "encryption-at-host",
        "ADE VMs by readiness for encryption at host",
        &rows,
        "VMs",
    ));
    table(
        s,
        "encryption-at-host",
        &["VM", "region", "size", "blocker", "fix", "how-to"],
        t.encryption_at_host
            .iter()
            .filter(|e| e.readiness != M::CanMove)
            .map(|e| {
                vec![
                    vm_cell(&e.vm_id),
                    esc(&e.region),
                    esc(&e.size),
                    esc(e.readiness.as_str()),
                    esc(&e.fix),
                    doc_link(&e.doc),
                ]
            }),
    );
}

fn day(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Every ADE VM's recovery points: how many, oldest, newest, when the last one expires.
fn recovery_points(s: &mut String, t: &Retirement) {
    s.push_str("<h3>ADE recovery points per VM</h3><p>Listed by the last sweep; expiry from Azure's <code>expiryTime</code> of each point, else the point's time plus its policy's longest retention.</p>");
    table(
        s,
        "recovery-points",
        &[
            "VM",
            "points",
            "oldest",
            "newest",
            "last expires",
            "expiry from",
        ],
        t.recovery_points.iter().map(|p| {
            let from: Vec<String> = p
                .expiry_sources
                .iter()
                .map(|(k, v)| format!("{} {v}", esc(k)))
                .collect();
            vec![
                vm_cell(&p.vm_id),
                format!("{}{}", p.count, if p.truncated { "+" } else { "" }),
                day(p.oldest),
                day(p.newest),
                day(p.last_expiry),
                from.join(", "),
            ]
        }),
    );
}

/// Recovery points whose retention runs past the retirement date: restoring them needs ADE.
fn retained_past_retirement(s: &mut String, t: &Retirement) {
    let _ = write!(
        s,
        "<h3>Recovery points retained past the retirement ({})</h3><p>Restoring these needs ADE. {}.</p>",
        t.retained_past_retirement.len(),
        doc_link(&t.doc)
    );
    table(
        s,
        "retained-past-retirement",
        &[
            "VM",
            "recovery point",
            "taken",
            "retained until",
            "expiry from",
        ],
        t.retained_past_retirement.iter().map(|x| {
            vec![
                vm_cell(&x.vm_id),
                esc(&x.recovery_point),
                x.recovery_point_time.format("%Y-%m-%d %H:%M").to_string(),
                x.retained_until.format("%Y-%m-%d").to_string(),
                esc(x.expiry_source.as_str()),
            ]
        }),
    );
}

fn dead_letters(s: &mut String, r: &FleetReport) {
    let _ = write!(
        s,
        "<h2>Dead-lettered messages ({})</h2>",
        r.dead_letters.len()
    );
    table(
        s,
        "dead-letters",
        &["queue", "message id", "reason", "description"],
        r.dead_letters.iter().map(|d| {
            vec![
                esc(&d.queue),
                esc(&d.message_id),
                esc(&d.reason),
                esc(&d.description),
            ]
        }),
    );
}
