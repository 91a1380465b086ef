//! What every run of the bundled sample (fleet, scenario, rules, allowlist) must report.

use serde_json::Value;

/// The report of `ade-backup local --until-idle` on the bundled sample shows every flow's outcome:
/// automatic protection, the sweep, 20 restore requests (valid and invalid) and dead letters.
pub fn assert_sample_outcomes(r: &Value) {
    assert_eq!(r["exitReason"], "idle");

    // Restore tickets: every valid one completed with a VM, every invalid one rejected with the
    // rule that applies.
    let restores = r["restores"].as_array().expect("restores");
    let ticket = |id: &str| {
        restores
            .iter()
            .find(|t| t["ticket"] == id)
            .unwrap_or_else(|| panic!("ticket {id} missing: {}", r["restores"]))
    };
    for id in [
        "INC0001001",
        "INC0001002",
        "INC0001003",
        "INC0001004",
        "INC0001005",
        "INC0001006",
        "INC0001007",
        "INC0001008",
        "INC0001009",
    ] {
        let t = ticket(id);
        assert_eq!(t["status"], "completed", "{t}");
        assert!(
            t["restoredVm"]
                .as_str()
                .is_some_and(|v| v.contains("/resourceGroups/rg-restore/")),
            "{t}"
        );
    }
    for (id, reason, field) in [
        ("INC0002001", "unsupported-restore-type", "restoreType"),
        ("INC0002002", "unsupported-restore-type", "restoreType"),
        ("INC0002003", "unsupported-restore-type", "restoreType"),
        ("INC0002004", "cross-subscription", "targetResourceGroup"),
        ("INC0002005", "forbidden", "targetResourceGroup"),
        ("INC0002006", "not-protected", "vmResourceId"),
        ("INC0002007", "recovery-point-not-found", "recoveryPoint"),
        ("INC0002008", "ade-restore-limit", ""),
    ] {
        let t = ticket(id);
        assert_eq!(
            (t["status"].as_str(), t["reason"].as_str()),
            (Some("rejected"), Some(reason)),
            "{t}"
        );
        if !field.is_empty() {
            assert_eq!(t["field"], field, "{t}");
        }
    }
    // One restore job and one deployment per completed ticket, despite the duplicate submission.
    let writes = &r["azure"]["writes"];
    assert_eq!(writes["restores"], 9, "{writes}");
    assert_eq!(writes["deployments"], 9, "{writes}");

    // Protection: supported VMs protected; the others recorded with their reason.
    let by = &r["protection"]["byStatus"];
    assert!(by["protected"].as_u64().is_some_and(|n| n >= 20), "{by}");
    for outcome in [
        "unsupported: kek-certificate",
        "unsupported: vault-region-mismatch",
        "blocked: key-vault-access-denied",
    ] {
        assert!(
            by[outcome].as_u64().is_some_and(|n| n >= 1),
            "{outcome}: {by}"
        );
    }
    // The sweep ran on its timer and its summary is in the report.
    assert!(
        r["functions"]["PolicySweep"]["completed"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{}",
        r["functions"]
    );
    assert!(r["sweeps"].as_array().is_some_and(|s| !s.is_empty()));
    // Poison is dead-lettered with its reason, never dropped.
    let dead: Vec<(String, String)> = r["deadLetters"]
        .as_array()
        .expect("deadLetters")
        .iter()
        .map(|d| {
            (
                d["messageId"].as_str().unwrap_or("").to_string(),
                d["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (id, reason) in [
        ("bad-1", "InvalidEvent"),
        ("bad-2", "InvalidEvent"),
        ("restore-bad-ticket", "InvalidRestoreRequest"),
    ] {
        assert!(
            dead.contains(&(id.to_string(), reason.to_string())),
            "{dead:?}"
        );
    }
}
