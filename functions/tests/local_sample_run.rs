//! The README's first command, `ade-backup local --until-idle --report FILE` on the bundled sample
//! (fleet, scenario, rules, allowlist): it exits 0 and its report shows every flow's outcome —
//! automatic protection, the sweep, 20 restore requests (valid and invalid) and dead letters.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");

#[test]
fn bundled_sample_runs_every_flow_to_a_reported_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_path = dir.path().join("report.json");
    let out = Command::new(BIN)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["local", "--until-idle", "--quiet", "--max-runtime", "240"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--report")
        .arg(&report_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ade-backup local");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("json");
    support::sample_report::assert_sample_outcomes(&r);
}
