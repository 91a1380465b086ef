use super::*;
use chrono::TimeZone;

const SUB: &str = "3f2b6c1e-8a4d-4e6f-9b21-5c7d8e9fa011";

fn allowlist(target_groups: &str) -> RestoreAllowlist {
    RestoreAllowlist::from_json(&format!(
        r#"{{"entries": [{{"subscription": "{SUB}", "sourceResourceGroups": ["rg-app-*"], "resourceGroups": [{target_groups}], "subnetResourceGroups": ["rg-drill-net"]}}]}}"#
    ))
    .expect("allowlist")
}

fn targets() -> String {
    format!(
        r#"{{"targets": [{{"resourceGroup": "/subscriptions/{SUB}/resourceGroups/rg-drill", "subnetId": "/subscriptions/{SUB}/resourceGroups/rg-drill-net/providers/Microsoft.Network/virtualNetworks/vnet-drill/subnets/isolated", "stagingStorageAccountId": "/subscriptions/{SUB}/resourceGroups/rg-backup/providers/Microsoft.Storage/storageAccounts/stadebkpweu"}}]}}"#
    )
}

fn lookup<'a>(vars: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[test]
fn targets_must_be_granted_by_the_allowlist() {
    let vars = [(TARGETS, targets())];
    let ok = DrillSettings::from_lookup(&lookup(&vars), &allowlist(r#""rg-drill", "rg-backup""#))
        .expect("granted");
    assert_eq!(ok.targets.len(), 1);
    assert_eq!(ok.targets[0].resource_group_name, "rg-drill");
    let err = DrillSettings::from_lookup(&lookup(&vars), &allowlist(r#""rg-backup""#))
        .expect_err("the drill group is not allowed");
    assert_eq!(err.var, TARGETS);
    assert!(
        err.rule.contains("targetResourceGroup") || err.rule.contains("rg-drill"),
        "{err}"
    );
}

#[test]
fn caps_and_period_are_bounded_numbers() {
    let vars = [("ADE_BACKUP_DRILL_DAILY_CAP", "0".to_string())];
    let err = DrillSettings::from_lookup(&lookup(&vars), &RestoreAllowlist::default())
        .expect_err("zero cap");
    assert_eq!(err.var, "ADE_BACKUP_DRILL_DAILY_CAP");
    let none: [(&str, String); 0] = [];
    let d =
        DrillSettings::from_lookup(&lookup(&none), &RestoreAllowlist::default()).expect("defaults");
    assert_eq!(d, DrillSettings::default());
}

#[test]
fn a_target_without_an_isolated_subnet_or_in_another_subscription_is_refused() {
    let other = targets().replace(
        &format!("/subscriptions/{SUB}/resourceGroups/rg-drill-net"),
        "/subscriptions/9c4e2a7b-1d3f-4b8a-a6c5-2e0f1d7b8c22/resourceGroups/rg-drill-net",
    );
    let vars = [(TARGETS, other)];
    let err =
        DrillSettings::from_lookup(&lookup(&vars), &allowlist(r#""*""#)).expect_err("cross-sub");
    assert!(err.rule.contains("subscription"), "{err}");
    let no_subnet = format!(
        r#"{{"targets": [{{"resourceGroup": "/subscriptions/{SUB}/resourceGroups/rg-drill", "stagingStorageAccountId": "x"}}]}}"#
    );
    let vars = [(TARGETS, no_subnet)];
    assert!(DrillSettings::from_lookup(&lookup(&vars), &allowlist(r#""*""#)).is_err());
}

fn vm(name: &str) -> ResourceId {
    ResourceId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/{name}"
    ))
    .expect("vm")
}

fn cand(name: &str, rule: &str, last: Option<i64>, busy: bool) -> Candidate {
    let now = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    Candidate {
        vm: vm(name),
        rule: rule.into(),
        last_drill: last.map(|d| now - chrono::Duration::days(d)),
        busy,
    }
}

#[test]
fn picks_least_recently_drilled_per_rule_within_the_room() {
    let now = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    let s = DrillSettings {
        period_days: 2,
        ..Default::default()
    };
    let c = [
        cand("a1", "a", Some(10), false),
        cand("a2", "a", None, false),
        cand("a3", "a", Some(1), false),
        cand("a4", "a", Some(30), true),
        cand("b1", "b", Some(5), false),
    ];
    let names = |v: Vec<Candidate>| {
        v.into_iter()
            .map(|c| c.vm.name().to_string())
            .collect::<Vec<_>>()
    };
    // Rule a: 4 VMs over 2 days → 2 a run: never drilled first, then the oldest; a3 is within
    // the period, a4 busy. Rule b: 1.
    assert_eq!(names(pick(&s, &c, now, 10)), ["a2", "b1", "a1"]);
    assert_eq!(names(pick(&s, &c, now, 2)), ["a2", "b1"]);
    assert!(pick(&s, &c, now, 0).is_empty());
}

#[test]
fn room_is_the_tighter_of_the_two_caps() {
    let s = DrillSettings {
        max_concurrent: 2,
        daily_cap: 5,
        ..Default::default()
    };
    assert_eq!(room(&s, 0, 0), 2);
    assert_eq!(room(&s, 1, 4), 1);
    assert_eq!(room(&s, 0, 5), 0);
    assert_eq!(room(&s, 3, 0), 0);
}

#[test]
fn drill_ids_and_names_are_stable_and_valid() {
    let at = Utc
        .with_ymd_and_hms(2026, 12, 1, 3, 0, 0)
        .single()
        .expect("t");
    let id = drill_id(&vm("web-01"), at);
    assert!(id.starts_with("drill-20261201-"), "{id}");
    assert_eq!(id, drill_id(&vm("WEB-01"), at), "case-insensitive");
    assert!(ade_backup_shared::ids::TicketId::parse(&id).is_ok());
    assert_eq!(drill_vm_name(&vm("web-01")).len(), 15);
}
