//! Automatic protection, end to end through `ade-backup local` (the real binary: local Functions
//! host, local Service Bus, filesystem state, `serve` child process, simulated Azure): ADE gets
//! enabled on 50 VMs of every variant during the run, and the report must list every supported
//! VM protected with a recovery point and every unsupported one with its reason.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ade-backup");
const S1: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";
const S2: &str = "9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22";

fn sample_fleet() -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/fleets/sample.json"),
    )
    .expect("sample fleet");
    serde_json::from_str(&text).expect("fleet JSON")
}

/// One VM shape of the 50, and what ade-backup must make of it.
struct Kind {
    sub: &'static str,
    rg: &'static str,
    location: &'static str,
    os: &'static str,
    variant: &'static str,
    key_vault: &'static str,
    kek: Option<&'static str>,
    data_disks: usize,
    expect_status: &'static str,
    expect_reason: Option<&'static str>,
}

const KINDS: [Kind; 10] = [
    Kind {
        sub: S1,
        rg: "rg-e2e-weu",
        location: "westeurope",
        os: "Linux",
        variant: "bek",
        key_vault: "kv-ade-ap-weu",
        kek: None,
        data_disks: 1,
        expect_status: "protected",
        expect_reason: None,
    },
    Kind {
        sub: S1,
        rg: "rg-e2e-weu",
        location: "westeurope",
        os: "Windows",
        variant: "bek-kek",
        key_vault: "kv-ade-ap-weu",
        kek: Some("kek-weu"),
        data_disks: 1,
        expect_status: "protected",
        expect_reason: None,
    },
    Kind {
        sub: S1,
        rg: "rg-e2e-weu",
        location: "westeurope",
        os: "Linux",
        variant: "bek",
        key_vault: "kv-ade-rbac-weu",
        kek: None,
        data_disks: 2,
        expect_status: "protected",
        expect_reason: None,
    },
    Kind {
        sub: S1,
        rg: "rg-e2e-weu",
        location: "westeurope",
        os: "Windows",
        variant: "bek-kek",
        key_vault: "kv-ade-rbac-weu",
        kek: Some("kek-rbac"),
        data_disks: 1,
        expect_status: "protected",
        expect_reason: None,
    },
    Kind {
        sub: S1,
        rg: "rg-e2e-weu",
        location: "westeurope",
        os: "Linux",
        variant: "bek-kek",
        key_vault: "kv-ade-ap-weu",
        kek: Some("kek-from-cert"),
        data_disks: 1,
        expect_status: "unsupported",
        expect_reason: Some("kek-certificate"),
    },
    Kind {
        sub: S2,
        rg: "rg-e2e-neu",
        location: "northeurope",
        os: "Linux",
        variant: "bek",
        key_vault: "kv-ade-ap-neu",
        kek: None,
        data_disks: 1,
        expect_status: "protected",
        expect_reason: None,
    },
    Kind {
        sub: S2,
        rg: "rg-e2e-neu",
        location: "northeurope",
        os: "Windows",
        variant: "bek-kek",
        key_vault: "kv-ade-ap-neu",
        kek: Some("kek-neu"),
        data_disks: 0,
        expect_status: "protected",
        expect_reason: None,
    },
    Kind {
        sub: S2,
        rg: "rg-e2e-neu",
        location: "northeurope",
        os: "Linux",
        variant: "bek-kek",
        key_vault: "kv-ade-locked",
        kek: Some("kek-locked"),
        data_disks: 1,
        expect_status: "blocked",
        expect_reason: Some("key-vault-access-denied"),
    },
    // The bundled rules send rg-legacy (northeurope) to a westeurope vault.
    Kind {
        sub: S2,
        rg: "rg-legacy",
        location: "northeurope",
        os: "Windows",
        variant: "bek",
        key_vault: "kv-ade-ap-neu",
        kek: None,
        data_disks: 1,
        expect_status: "unsupported",
        expect_reason: Some("vault-region-mismatch"),
    },
    Kind {
        sub: S1,
        rg: "rg-e2e-weu",
        location: "westeurope",
        os: "Linux",
        variant: "bek",
        key_vault: "kv-ade-ap-weu",
        kek: None,
        data_disks: 17,
        expect_status: "protected",
        expect_reason: None,
    },
];

fn run_local(dir: &Path, fleet: &Value, scenario: &Value) -> Value {
    let fleet_path = dir.join("fleet.json");
    let scenario_path = dir.join("scenario.json");
    let report_path = dir.join("report.json");
    std::fs::write(&fleet_path, serde_json::to_vec(fleet).expect("json")).expect("write fleet");
    std::fs::write(&scenario_path, serde_json::to_vec(scenario).expect("json"))
        .expect("write scenario");
    let out = Command::new(BIN)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "local",
            "--until-idle",
            "--quiet",
            "--max-runtime",
            "240",
            "--idle-horizon",
            "3",
            // Events only: the sweep (which would also protect the sample fleet) stays off.
            "--sweep-every",
            "0",
        ])
        .arg("--state-dir")
        .arg(dir.join("state-dir"))
        .arg("--fleet")
        .arg(&fleet_path)
        .arg("--scenario")
        .arg(&scenario_path)
        .arg("--report")
        .arg(&report_path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ade-backup local");
    assert!(
        out.status.success(),
        "ade-backup local failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&report_path).expect("report written"))
        .expect("report JSON")
}

fn vm_entry<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["protection"]["vms"]
        .as_array()
        .and_then(|vms| {
            vms.iter().find(|v| {
                v["vm"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(&format!("/{name}")))
            })
        })
        .unwrap_or_else(|| panic!("{name} missing from the report: {}", report["protection"]))
}

#[test]
fn ade_enabled_on_50_vms_of_every_variant_ends_protected_or_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = sample_fleet();
    let mut actions = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        let k = &KINDS[i % KINDS.len()];
        let name = format!("e2e-{i:02}-{}", k.variant);
        // (kind 4 wraps its BEK with a key that belongs to a certificate)
        let disks: Vec<Value> = (0..k.data_disks).map(|_| json!({"sizeGb": 64})).collect();
        fleet["vms"].as_array_mut().expect("vms").push(json!({
            "subscription": k.sub, "resourceGroup": k.rg, "name": name, "location": k.location,
            "osType": k.os, "vmSize": "Standard_D2s_v3", "osDiskSizeGb": 64, "dataDisks": disks,
            "tags": {"env": "e2e"}, "ade": {"variant": "none"}, "powerState": "running"
        }));
        let mut a = json!({"atSeconds": i * 5, "action": "enableAde", "vm": format!("{}/{name}", k.rg), "variant": k.variant, "keyVault": k.key_vault});
        if let Some(kek) = k.kek {
            a["kek"] = json!(kek);
        }
        actions.push(a);
        expected.push((name, k));
    }
    let report = run_local(
        dir.path(),
        &fleet,
        &json!({"name": "e2e-50", "actions": actions}),
    );

    let mut protected = 0;
    for (name, k) in &expected {
        let v = vm_entry(&report, name);
        assert_eq!(v["status"], k.expect_status, "{name}: {v}");
        match k.expect_reason {
            Some(reason) => {
                assert_eq!(v["reason"], reason, "{name}: {v}");
                assert!(
                    v["message"].as_str().is_some_and(|m| m.len() > 20),
                    "{name} needs a human-readable reason: {v}"
                );
            }
            None => {
                protected += 1;
                assert!(
                    v["recoveryPoint"].as_str().is_some_and(|r| !r.is_empty()),
                    "{name} has no recovery point: {v}"
                );
            }
        }
        if k.data_disks > 16 {
            assert!(
                v["warnings"].to_string().contains("ade-restore-limit"),
                "{name}: {v}"
            );
        }
    }
    assert_eq!(protected, 35);
    // One protection and one first backup per VM Azure Backup accepts: the 35 supported VMs and
    // the 5 whose KEK belongs to a certificate (Azure Backup reports that only when the backup
    // runs; those end `unsupported: kek-certificate`). None for blocked or mismatched VMs.
    let writes = &report["azure"]["writes"];
    assert_eq!(writes["protectionPuts"], 40, "{writes}");
    assert_eq!(writes["backupNowCalls"], 40, "{writes}");
    // Key Vault access: at most one merge per VM on access-policy vaults (30 VMs), each adding only
    // what is missing; usually far fewer, since a VM whose vault already grants it writes nothing.
    // The RBAC vault gets the same deterministic role assignment (a repeat PUT is a no-op).
    let ap = writes["accessPolicyWrites"].as_u64().unwrap_or(0);
    assert!((2..=30).contains(&ap), "{writes}");
    let ra = writes["roleAssignmentWrites"].as_u64().unwrap_or(0);
    assert!((1..=10).contains(&ra), "{writes}");
    assert!(
        report["deadLetters"].as_array().is_some_and(Vec::is_empty),
        "{}",
        report["deadLetters"]
    );
}

#[test]
fn the_same_event_delivered_five_times_at_once_protects_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = sample_fleet();
    let vm = format!("/subscriptions/{S1}/resourceGroups/rg-app-plain/providers/Microsoft.Compute/virtualMachines/plain-lnx-02");
    let ext = format!("{vm}/extensions/AzureDiskEncryptionForLinux");
    let event = json!({
        "id": "evt-dup", "topic": format!("/subscriptions/{S1}"), "subject": ext,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess", "eventTime": "2026-11-28T10:00:00Z",
        "data": {"resourceUri": ext, "operationName": "Microsoft.Compute/virtualMachines/extensions/write", "status": "Succeeded"},
        "dataVersion": "2.0", "metadataVersion": "1"
    });
    let mut actions = vec![
        json!({"atSeconds": 0, "action": "enableAde", "vm": "rg-app-plain/plain-lnx-02", "variant": "bek-kek", "keyVault": "kv-ade-ap-weu", "kek": "kek-weu"}),
    ];
    // After the extension finished (10 simulated minutes): Event Grid redelivers 5 times at once,
    // each copy a distinct Service Bus message (so duplicate detection cannot help).
    for i in 0..5 {
        actions.push(json!({"atSeconds": 900, "action": "sendMessage", "queue": "vm-encryption-events", "messageId": format!("dup-{i}"), "body": event}));
    }
    let report = run_local(
        dir.path(),
        &fleet,
        &json!({"name": "dup", "actions": actions}),
    );
    let v = vm_entry(&report, "plain-lnx-02");
    assert_eq!(v["status"], "protected", "{v}");
    let writes = &report["azure"]["writes"];
    // plain-lnx-02 is not protected in the sample fleet: one protection put, one backup, one
    // access-policy write (keys + secrets for BEK+KEK) for the whole burst.
    assert_eq!(writes["protectionPuts"], 1, "{writes}");
    assert_eq!(writes["backupNowCalls"], 1, "{writes}");
    assert_eq!(writes["accessPolicyWrites"], 1, "{writes}");
    // The operator's view of the same VM.
    let out = Command::new(BIN)
        .args(["status", "--output", "json", "--vm", &vm, "--state"])
        .arg(format!(
            "fs:{}",
            dir.path().join("state-dir/state").display()
        ))
        .output()
        .expect("run ade-backup status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(status["vm"]["status"], "protected");
    assert_eq!(
        status["vm"]["ade"]["keyEncryptionKeyUrl"]
            .as_str()
            .map(|u| u.contains("/keys/kek-weu/")),
        Some(true)
    );
    assert!(
        status["operation"]["history"]
            .as_array()
            .is_some_and(|h| h.len() >= 4),
        "{status}"
    );
    let events = &report["functions"]["OnVmEncryptionEvent"];
    assert!(
        events["completed"].as_u64().is_some_and(|n| n >= 6),
        "{events}"
    );
}
