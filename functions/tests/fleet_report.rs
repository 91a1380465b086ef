//! The fleet report from the bundled sample run (`ade-backup local --until-idle`, the real binary
//! on the sample fleet and scenario): `ade-backup report` numbers recounted from the state
//! documents; the HTML opened in headless Chromium (screenshot, charts drawn with the right
//! counts, no request leaves the file).

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");
/// The report's clock for the checks: 623 days before 15 Sep 2028.
const NOW: &str = "2027-01-01T00:00:00Z";

/// One sample run shared by the tests of this file (its state dir and what `local` printed).
fn sample_run() -> &'static (tempfile::TempDir, String) {
    static RUN: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(BIN)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .args(["local", "--until-idle", "--quiet", "--max-runtime", "240"])
            .arg("--state-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("run ade-backup local");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        // stderr is a pipe here: no progress line (it is drawn on a terminal or with --progress).
        assert!(
            !stderr.contains("\x1b[2K") && !stdout.contains("\x1b[2K"),
            "{stderr}"
        );
        (dir, stdout)
    })
}

fn state_dir() -> PathBuf {
    sample_run().0.path().join("state")
}

fn docs(prefix: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![state_dir().join(prefix)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".json") && !name.contains('~') {
                out.push(serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json"));
            }
        }
    }
    out
}

fn report(format: &str) -> String {
    let out = Command::new(BIN)
        .args(["report", "-o", format, "--now", NOW, "--state"])
        .arg(format!("fs:{}", state_dir().display()))
        .env_remove("ADE_BACKUP_STATE")
        .output()
        .expect("run ade-backup report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no credential chatter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn count_by(values: impl Iterator<Item = String>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

#[test]
fn report_numbers_match_the_state() {
    let r: Value = serde_json::from_str(&report("json")).expect("json report");
    let vms: Vec<Value> = docs("vms")
        .into_iter()
        .filter(|v| v["status"] != "not-encrypted")
        .collect();
    let outcomes = count_by(
        vms.iter()
            .map(|v| match v["status"].as_str().unwrap_or_default() {
                "" => "recorded".to_string(),
                s => s.to_string(),
            }),
    );
    assert!(vms.len() >= 26, "the sample has 26 ADE VMs: {}", vms.len());
    assert_eq!(r["coverage"]["adeVms"], vms.len() as u64);
    assert_eq!(
        r["coverage"]["byOutcome"],
        serde_json::to_value(&outcomes).expect("map")
    );
    let grouped: u64 = r["coverage"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["byOutcome"].as_object().expect("o").values().cloned())
        .map(|v| v.as_u64().expect("n"))
        .sum();
    assert_eq!(grouped, vms.len() as u64);
    let restores = docs("restores");
    let by_status = count_by(
        restores
            .iter()
            .map(|d| d["status"].as_str().unwrap_or_default().to_string()),
    );
    assert_eq!(r["restores"]["tickets"], restores.len() as u64);
    assert_eq!(
        r["restores"]["byStatus"],
        serde_json::to_value(&by_status).expect("map")
    );
    let failed = restores
        .iter()
        .filter(|d| d["status"] == "failed" || d["status"] == "rejected")
        .count();
    assert_eq!(
        r["restores"]["failures"].as_array().expect("f").len(),
        failed
    );
    assert_eq!(
        r["deadLetters"].as_array().expect("dl").len(),
        docs("deadletters").len()
    );
    let humans = vms
        .iter()
        .filter(|v| {
            matches!(
                v["status"].as_str(),
                Some("unsupported" | "blocked" | "failed")
            )
        })
        .count();
    assert!(
        humans >= 6,
        "kek-certificate, region mismatch, locked vaults: {humans} in {:?}",
        vms.iter()
            .map(|v| format!("{} {} {}", v["vmId"], v["status"], v["reason"]))
            .collect::<Vec<_>>()
    );
    let nh = r["needsHuman"].as_array().expect("nh");
    assert!(nh.len() >= humans);
    assert!(
        nh.iter().all(|n| n["doc"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://learn.microsoft.com/"))),
        "every reason links its Learn page: {nh:?}"
    );
    let protected = outcomes.get("protected").copied().unwrap_or(0) as usize;
    assert_eq!(r["freshness"].as_array().expect("fr").len(), protected);
    check_retirement(&r, &vms);
}

fn check_retirement(r: &Value, vms: &[Value]) {
    let t = &r["retirement"];
    assert_eq!(t["retirementDate"], "2028-09-15");
    assert_eq!(t["daysLeft"], 623);
    assert_eq!(t["adeVms"], vms.len() as u64);
    let mut kvs = std::collections::BTreeSet::new();
    for v in vms {
        for k in ["keyVaultResourceId", "kekVaultResourceId"] {
            if let Some(s) = v["ade"][k].as_str() {
                kvs.insert(s.to_ascii_lowercase());
            }
        }
    }
    assert_eq!(t["keyVaults"].as_array().expect("kv").len(), kvs.len());
    // Encryption at host: the sample's rg-legacy VMs are Standard_A2_v2 (no support, per the
    // simulated Resource SKUs API); the facts file is what the last sweep read from ARM.
    let facts: Value = serde_json::from_slice(
        &std::fs::read(state_dir().join("reports/facts.json")).expect("facts.json"),
    )
    .expect("facts");
    let key = |v: &Value| v["vmId"].as_str().unwrap_or_default().to_ascii_lowercase();
    let eah = t["encryptionAtHost"].as_array().expect("eah");
    let not_supported: Vec<&str> = eah
        .iter()
        .filter(|e| e["encryptionAtHost"] == "not-supported")
        .filter_map(|e| e["vmId"].as_str())
        .collect();
    assert_eq!(not_supported.len(), 2, "{not_supported:?}");
    assert!(not_supported.iter().all(|v| v.contains("/rg-legacy/")));
    check_readiness(eah, &facts);
    let disks: u64 = vms
        .iter()
        .filter_map(|v| facts["vms"][key(v)]["disks"].as_u64())
        .sum();
    assert_eq!(t["adeDisks"], disks);
    check_recovery_points(t, vms, &facts);
}

/// Each VM's verdict recounted from the facts: size support, then the subscription's
/// restriction, then the feature registration. The sample has every verdict but "registering".
fn check_readiness(eah: &[Value], facts: &Value) {
    let mut seen = std::collections::BTreeSet::new();
    for e in eah {
        let id = e["vmId"].as_str().expect("id").to_ascii_lowercase();
        let f = &facts["vms"][&id];
        let sub = id.split('/').nth(2).expect("sub");
        let feature = &facts["encryptionAtHostFeature"][sub];
        let want = if f["encryptionAtHostSupported"] == false {
            "size-unsupported"
        } else if f["sizeRestricted"] == true {
            "size-restricted-in-region"
        } else if feature == "not-registered" {
            "feature-not-registered"
        } else if f["encryptionAtHostSupported"] == true && feature == "registered" {
            "can-move"
        } else {
            "unknown"
        };
        assert_eq!(e["readiness"], want, "{e} {f} {feature}");
        assert!(e["doc"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://learn.microsoft.com/")));
        seen.insert(want);
    }
    // Every verdict the sample fleet is built to show is shown. Each VM's verdict was checked
    // against its facts above, so a VM whose size or region ARM had not reported when the facts
    // were gathered (which VMs exist by then depends on how far the run got) is `unknown`
    // consistently with its facts, and is allowed.
    for verdict in [
        "can-move",
        "feature-not-registered",
        "size-restricted-in-region",
        "size-unsupported",
    ] {
        assert!(
            seen.contains(verdict),
            "{verdict} not shown ({seen:?}): rg-legacy: A2_v2; rg-app-neu: D2s_v3 restricted in \
             northeurope for prod-weu; prod-neu: feature not registered"
        );
    }
}

/// The recovery points the sweep listed (facts) against the report: counts per VM, and every point
/// retained past 15 Sep 2028 listed once, per VM.
fn check_recovery_points(t: &Value, vms: &[Value], facts: &Value) {
    let key = |v: &Value| v["vmId"].as_str().unwrap_or_default().to_ascii_lowercase();
    let listed = facts["recoveryPoints"].as_object().expect("recoveryPoints");
    let with_rp = vms
        .iter()
        .filter(|v| match listed.get(&key(v)) {
            Some(p) => p["count"].as_u64() > Some(0),
            None => v["azure"]["recoveryPointTime"].is_string(),
        })
        .count();
    assert_eq!(t["vmsWithRecoveryPoints"], with_rp as u64);
    let rows = t["recoveryPoints"].as_array().expect("rows");
    let mut past = std::collections::BTreeSet::new();
    for row in rows.iter().filter(|r| r["source"] == "list") {
        let p = &listed[&key(row)];
        assert_eq!(row["count"], p["count"], "{row}");
        assert_eq!(row["oldest"], p["oldest"], "{row}");
        for x in p["pastRetirement"].as_array().expect("past") {
            past.insert((key(row), x["name"].as_str().expect("n").to_string()));
        }
    }
    assert!(rows.iter().filter(|r| r["source"] == "list").count() >= 13);
    let retained = t["retainedPastRetirement"].as_array().expect("retained");
    let reported: std::collections::BTreeSet<_> = retained
        .iter()
        .map(|x| (key(x), x["recoveryPoint"].as_str().expect("rp").to_string()))
        .collect();
    assert_eq!(reported.len(), retained.len(), "each point once");
    assert_eq!(reported, past);
    // db-lnx-01 keeps EnhancedPolicy (104 weekly points): its 7 daily sample points include one
    // Sunday, whose expiry Azure (the simulator) gives in recoveryPointProperties.expiryTime.
    let db = rows
        .iter()
        .find(|r| {
            r["vmId"]
                .as_str()
                .is_some_and(|v| v.ends_with("/db-lnx-01"))
        })
        .expect("db-lnx-01 row");
    assert!(db["count"].as_u64() >= Some(7), "{db}");
    assert!(retained.iter().any(|x| x["vmId"]
        .as_str()
        .is_some_and(|v| v.ends_with("/db-lnx-01"))
        && x["expirySource"] == "recovery-point"));
    assert!(retained
        .iter()
        .all(|x| x["retainedUntil"].as_str() > Some("2028-09-15")));
}

#[test]
fn local_prints_the_report_path_and_csv_has_a_row_per_ade_vm() {
    let (dir, stdout) = sample_run();
    let path = dir.path().join("report.html");
    assert!(
        stdout.contains(&format!("[local] fleet report: {}", path.display())),
        "{stdout}"
    );
    assert!(path.is_file());
    let r: Value = serde_json::from_str(&report("json")).expect("json");
    let csv = report("csv");
    assert_eq!(
        csv.lines().count() as u64,
        1 + r["coverage"]["adeVms"].as_u64().expect("n")
    );
    for k in ["latest.html", "latest.json", "latest.csv", "facts.json"] {
        assert!(
            state_dir().join("reports").join(k).is_file(),
            "the sweep writes reports/{k}"
        );
    }
}

/// Chromium with the flags this machine needs, a fresh profile, and a net log.
fn chromium(page: &Path, extra: &[String]) -> (String, Value) {
    let profile = tempfile::tempdir().expect("profile");
    let netlog = profile.path().join("net.json");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .arg(format!("--log-net-log={}", netlog.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (Debian package `chromium`; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log: Value =
        serde_json::from_slice(&std::fs::read(&netlog).expect("net log")).expect("json");
    (String::from_utf8_lossy(&out.stdout).to_string(), log)
}

/// URLs of requests a page started (the browser's own requests have no origin as initiator).
fn page_requests(log: &Value) -> Vec<String> {
    log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| {
            let p = &e["params"];
            let init = p["initiator"].as_str()?;
            (init != "not an origin").then(|| p["url"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn headless_chromium_renders_the_charts_and_loads_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, report("html")).expect("write page");
    let r: Value = serde_json::from_str(&report("json")).expect("json");
    let (dom, log) = chromium(&page, &["--dump-dom".into()]);
    let reqs = page_requests(&log);
    assert!(reqs.is_empty(), "the report requested {reqs:?}");
    // The coverage chart as rendered: one rect per (group, outcome), values summing to the VMs.
    let cov = dom
        .split("data-chart=\"coverage\"")
        .nth(1)
        .expect("coverage svg rendered");
    let cov = &cov[..cov.find("</svg>").expect("svg end")];
    let values: Vec<u64> = cov
        .split("data-value=\"")
        .skip(1)
        .map(|s| s[..s.find('"').expect("q")].parse().expect("number"))
        .collect();
    assert!(!values.is_empty());
    assert_eq!(
        values.iter().sum::<u64>(),
        r["coverage"]["adeVms"].as_u64().expect("n")
    );
    for chart in [
        "coverage-trend",
        "drift",
        "freshness",
        "restores",
        "restore-phases",
        "encryption-at-host",
    ] {
        assert!(
            dom.contains(&format!("data-chart=\"{chart}\"")),
            "{chart} rendered"
        );
    }
    let shot = dir.path().join("report.png");
    chromium(
        &page,
        &[
            "--window-size=1200,3600".into(),
            format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(dest) = std::env::var("ADE_BACKUP_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, dest).expect("copy screenshot");
    }
}

#[test]
fn the_request_check_sees_a_page_that_loads_something() {
    // The control: without the CSP, an image from the network shows up in the net log.
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("leak.html");
    std::fs::write(
        &page,
        "<html><body><img src=\"http://127.0.0.1:9/pixel.png\"></body></html>",
    )
    .expect("write");
    let (_, log) = chromium(&page, &["--dump-dom".into()]);
    let reqs = page_requests(&log);
    assert!(
        reqs.iter().any(|u| u.starts_with("http://127.0.0.1:9/")),
        "{reqs:?}"
    );
}

#[test]
fn status_usage_errors_exit_2_and_local_state_needs_no_credential() {
    let state = format!("fs:{}", state_dir().display());
    let out = Command::new(BIN)
        .args(["status", "--state", &state])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "status",
            "--ticket",
            "INC0001001",
            "-o",
            "json",
            "--state",
            &state,
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "no credential chatter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ticketId"], "INC0001001");
}
