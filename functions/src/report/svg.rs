//! Inline SVG charts for the HTML report: plain bars and stacked bars, no script. Every bar is a
//! `<rect>` carrying `data-key` and `data-value`, so a test (or a reader of the source) can check
//! what was drawn against the numbers; every label goes through [`esc`].

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A colour per outcome or status (unknown keys get grey).
pub fn colour(key: &str) -> &'static str {
    match key {
        "protected" | "completed" | "fresh" | "supported" | "repair-started"
        | "protected-items" => "#2e7d32",
        "in-progress" | "accepted" | "restoring-disks" | "disks-restored" | "deploying"
        | "reinstalling-ade" | "ade-vms" => "#1565c0",
        "unsupported" | "stale" | "rejected" | "drift-found" | "unprotected-ade-vms" => "#ef6c00",
        "blocked" | "failed" | "not-supported" | "needs-human" => "#c62828",
        _ => "#757575",
    }
}

const WIDTH: f64 = 640.0;
const LABEL_W: f64 = 230.0;
const ROW_H: f64 = 26.0;

fn scale(max: f64) -> f64 {
    if max <= 0.0 {
        0.0
    } else {
        (WIDTH - LABEL_W - 60.0) / max
    }
}

/// The `<svg>` start tag of a chart of `rows` rows, named `chart` and labelled `title`.
fn open(chart: &str, title: &str, rows: usize) -> String {
    let h = ROW_H * rows.max(1) as f64 + 10.0;
    format!(
        r#"<svg class="chart" data-chart="{}" role="img" aria-label="{}" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(chart),
        esc(title)
    )
}

/// One horizontal bar per `(label, value)`.
pub fn bars(chart: &str, title: &str, rows: &[(String, f64)], unit: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max);
    let k = scale(max);
    let mut s = open(chart, title, rows.len());
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 5.0 + ROW_H * i as f64;
        let w = (v * k).max(if *v > 0.0 { 2.0 } else { 0.0 });
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect class="bar" data-key="{}" data-value="{}" x="{LABEL_W}" y="{y}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}">{} {}</text>"#,
            LABEL_W - 6.0,
            y + 16.0,
            esc(label),
            esc(label),
            trim(*v),
            ROW_H - 6.0,
            colour(label),
            LABEL_W + w + 4.0,
            y + 16.0,
            trim(*v),
            esc(unit),
        );
    }
    s.push_str("</svg>");
    s
}

/// One stacked bar per row: `(row label, [(segment key, count)])`.
pub fn stacked(chart: &str, title: &str, rows: &[(String, Vec<(String, u64)>)]) -> String {
    let max = rows
        .iter()
        .map(|r| r.1.iter().map(|s| s.1).sum::<u64>() as f64)
        .fold(0.0, f64::max);
    let k = scale(max);
    let mut s = open(chart, title, rows.len());
    for (i, (label, segs)) in rows.iter().enumerate() {
        let y = 5.0 + ROW_H * i as f64;
        let _ = write!(
            s,
            r#"<g data-row="{}"><text x="{}" y="{}" text-anchor="end">{}</text>"#,
            esc(label),
            LABEL_W - 6.0,
            y + 16.0,
            esc(label)
        );
        let mut x = LABEL_W;
        for (key, n) in segs {
            let w = *n as f64 * k;
            let _ = write!(
                s,
                r#"<rect class="bar" data-key="{}" data-value="{n}" x="{x:.1}" y="{y}" width="{w:.1}" height="{}" fill="{}"><title>{}: {n}</title></rect>"#,
                esc(key),
                ROW_H - 6.0,
                colour(key),
                esc(key)
            );
            x += w;
        }
        let total: u64 = segs.iter().map(|s| s.1).sum();
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}">{total}</text></g>"#,
            x + 4.0,
            y + 16.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A number without a trailing `.0` (counts), one decimal otherwise.
pub fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_everywhere() {
        let evil = r#"<script>alert("x")</script>' onload='x"#;
        let svg = bars("c", evil, &[(evil.to_string(), 3.0)], "vms");
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(!svg.contains("' onload='"), "{svg}");
        let st = stacked("c", "t", &[(evil.into(), vec![(evil.into(), 2)])]);
        assert!(
            !st.contains("<script>") && !st.contains("\" onload"),
            "{st}"
        );
    }

    #[test]
    fn every_bar_carries_its_value() {
        let svg = stacked(
            "cov",
            "t",
            &[(
                "a".into(),
                vec![("protected".into(), 3), ("failed".into(), 1)],
            )],
        );
        assert!(
            svg.contains(r#"data-key="protected" data-value="3""#),
            "{svg}"
        );
        assert!(svg.contains(r#"data-key="failed" data-value="1""#), "{svg}");
        assert_eq!(trim(2.0), "2");
        assert_eq!(trim(2.25), "2.2");
    }
}
