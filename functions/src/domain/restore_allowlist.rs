//! The restore allowlist (`ADE_BACKUP_RESTORE_ALLOWLIST`): which VMs a ticketing system may have
//! restored, into which resource groups, through which staging accounts, onto which subnets.
//!
//! Each entry grants, in one subscription:
//! - `sourceResourceGroups`: resource groups whose VMs may be restored (the source side);
//! - `resourceGroups`: resource groups a VM may be restored into, and the resource groups of the
//!   staging accounts the restore job may write to (the target side, as before);
//! - `subnetResourceGroups`: resource groups whose subnets a restored VM may join, and `subnets`:
//!   single subnets it may join, by id (the network side).
//!
//! A name is a resource group name, `prefix*` (every name starting with `prefix`) or `*` (any
//! resource group of the subscription). A list that is omitted or empty grants nothing on its
//! side: an entry without `sourceResourceGroups` lets no VM be restored, one without
//! `subnetResourceGroups` and `subnets` lets no request name a subnet. A request that names no
//! `targetSubnetId` is not checked on the network side: the VM keeps the network of the template
//! Azure Backup generated (its source VM's).
//!
//! A request is allowed only when one entry grants every side of it; entries never combine (an
//! entry for VMs of `rg-app` into `rg-app-restore` and one for VMs of `rg-db` into `rg-db-restore`
//! do not let a VM of `rg-app` be restored into `rg-db-restore`). Ids and names compare
//! case-insensitively, as in ARM; subscriptions compare as GUIDs.

use super::restore_request::{reject, Rejection, RestoreRequest};
use ade_backup_shared::ids::ResourceId;
use serde::{Deserialize, Serialize};

const SUBNETS: &str = "Microsoft.Network/virtualNetworks/subnets";

/// Which VMs ticketing systems may have restored, and where to (configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreAllowlist {
    #[serde(default)]
    pub entries: Vec<AllowEntry>,
}

/// What one subscription allows. See the module documentation for the meaning of each list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowEntry {
    pub subscription: String,
    /// Target side: resource groups restored into, and staging accounts' resource groups.
    pub resource_groups: Vec<String>,
    /// Source side: resource groups whose VMs may be restored. Omitted: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_resource_groups: Vec<String>,
    /// Network side: resource groups of the subnets a restored VM may join. Omitted: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_resource_groups: Vec<String>,
    /// Network side: subnet ids a restored VM may join. Omitted: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ResourceId>,
}

/// The parts of a request the allowlist decides on, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
    Staging,
    Subnet,
}

impl Side {
    const ALL: [Side; 4] = [Side::Source, Side::Target, Side::Staging, Side::Subnet];

    /// The request field a refusal names.
    fn field(self) -> &'static str {
        match self {
            Side::Source => "vmResourceId",
            Side::Target => "targetResourceGroup",
            Side::Staging => "stagingStorageAccountId",
            Side::Subnet => "targetSubnetId",
        }
    }

    /// The entry's lists that grant this side.
    fn lists(self) -> &'static str {
        match self {
            Side::Source => "sourceResourceGroups",
            Side::Target | Side::Staging => "resourceGroups",
            Side::Subnet => "subnetResourceGroups (or the subnet in subnets)",
        }
    }

    /// What the request names on this side and the resource group the lists must name, for the
    /// refusal; `None` when the request names nothing on this side.
    fn named(self, req: &RestoreRequest) -> Option<(String, String)> {
        let group = |rg: &str| format!("its resource group {rg}");
        match self {
            Side::Source => {
                let vm = &req.vm_resource_id;
                Some((format!("the VM {vm}"), group(vm.resource_group())))
            }
            Side::Target => {
                let rg = &req.target_resource_group;
                Some((
                    format!("the target resource group {}", rg.id()),
                    rg.name.clone(),
                ))
            }
            Side::Staging => {
                let sa = &req.staging_storage_account_id;
                Some((
                    format!("the staging account {sa}"),
                    group(sa.resource_group()),
                ))
            }
            Side::Subnet => req
                .target_subnet_id
                .as_ref()
                .map(|s| (format!("the subnet {s}"), group(s.resource_group()))),
        }
    }
}

impl AllowEntry {
    /// True when this entry grants `side` of `req` (a side the request leaves out is granted).
    fn grants(&self, side: Side, req: &RestoreRequest) -> bool {
        let groups = |names: &[String], subscription: &str, group: &str| {
            same_subscription(&self.subscription, subscription)
                && names.iter().any(|n| name_matches(n, group))
        };
        match side {
            Side::Source => groups(
                &self.source_resource_groups,
                req.vm_resource_id.subscription(),
                req.vm_resource_id.resource_group(),
            ),
            Side::Target => groups(
                &self.resource_groups,
                &req.target_resource_group.subscription,
                &req.target_resource_group.name,
            ),
            Side::Staging => groups(
                &self.resource_groups,
                req.staging_storage_account_id.subscription(),
                req.staging_storage_account_id.resource_group(),
            ),
            Side::Subnet => req.target_subnet_id.as_ref().is_none_or(|s| {
                groups(
                    &self.subnet_resource_groups,
                    s.subscription(),
                    s.resource_group(),
                ) || self.subnets.iter().any(|a| same_subnet(a, s))
            }),
        }
    }
}

impl RestoreAllowlist {
    /// Reads `ADE_BACKUP_RESTORE_ALLOWLIST`: the JSON shape, then every entry's rules (a GUID
    /// subscription; names that are `*`, a resource group name or `prefix*`; subnet ids in the
    /// entry's subscription). The error names the entry and the list.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let list: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (i, e) in list.entries.iter().enumerate() {
            if uuid::Uuid::parse_str(&e.subscription).is_err() {
                return Err(format!(
                    "entries[{i}].subscription must be a subscription GUID (got {:?})",
                    e.subscription
                ));
            }
            for (key, names) in [
                ("resourceGroups", &e.resource_groups),
                ("sourceResourceGroups", &e.source_resource_groups),
                ("subnetResourceGroups", &e.subnet_resource_groups),
            ] {
                if let Some(bad) = names.iter().find(|n| !valid_name_pattern(n)) {
                    return Err(format!(
                        "entries[{i}].{key}: {bad:?} is not \"*\", a resource group name or a name prefix followed by \"*\""
                    ));
                }
            }
            if let Some(bad) = e.subnets.iter().find(|s| {
                !s.is_type(SUBNETS) || !same_subscription(&e.subscription, s.subscription())
            }) {
                return Err(format!(
                    "entries[{i}].subnets: {bad} is not a {SUBNETS} id in subscription {}",
                    e.subscription
                ));
            }
        }
        Ok(list)
    }

    /// Refuses (`forbidden`, naming the field) a request that no single entry grants entirely: the
    /// source VM's resource group, the target resource group, the staging account's resource
    /// group, and the subnet when the request names one, checked in that order.
    pub fn check(&self, req: &RestoreRequest) -> Result<(), Rejection> {
        self.check_sides(req, &Side::ALL)
    }

    /// [`RestoreAllowlist::check`] of the destination sides only (target resource group, staging
    /// account, subnet), whatever the source: how a restore drill's configured target is checked
    /// at start-up, before any VM is known.
    pub fn check_destination(&self, req: &RestoreRequest) -> Result<(), Rejection> {
        self.check_sides(req, &[Side::Target, Side::Staging, Side::Subnet])
    }

    fn check_sides(&self, req: &RestoreRequest, sides: &[Side]) -> Result<(), Rejection> {
        let mut granting: Vec<&AllowEntry> = self.entries.iter().collect();
        let mut granted: Vec<&'static str> = Vec::new();
        for &side in sides {
            let Some((named, group)) = side.named(req) else {
                continue;
            };
            granting.retain(|e| e.grants(side, req));
            if granting.is_empty() {
                let alone = self.entries.iter().any(|e| e.grants(side, req));
                let rule = if alone {
                    format!(
                        "{named} is allowed only by restore allowlist entries that do not also allow its {}: one entry must allow the VM, the target resource group, the staging account and the subnet together",
                        granted.join(", ")
                    )
                } else {
                    format!(
                        "{named} is outside the restore allowlist: no entry for subscription {} lists {group} in {}",
                        req.vm_resource_id.subscription(),
                        side.lists()
                    )
                };
                return Err(reject("forbidden", side.field(), rule));
            }
            granted.push(side.field());
        }
        Ok(())
    }
}

/// `*`, a resource group name (letters, digits, `-_.()`, at most 90), or such a name's prefix
/// followed by `*`.
fn valid_name_pattern(n: &str) -> bool {
    let name = n.strip_suffix('*').unwrap_or(n);
    n == "*"
        || (!name.is_empty()
            && name.len() <= 90
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')')))
}

/// A configured name (`*`, `prefix*` or a name) against a resource group name, ignoring case.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Subscriptions compare as GUIDs (any case, with or without hyphens), else as text ignoring case.
fn same_subscription(a: &str, b: &str) -> bool {
    match (uuid::Uuid::parse_str(a), uuid::Uuid::parse_str(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// Two subnet ids name the same subnet: same subscription, resource group, network and name.
fn same_subnet(a: &ResourceId, b: &ResourceId) -> bool {
    same_subscription(a.subscription(), b.subscription())
        && a.resource_group().eq_ignore_ascii_case(b.resource_group())
        && a.is_type(&b.full_type())
        && a.types()
            .zip(b.types())
            .all(|((_, x), (_, y))| x.eq_ignore_ascii_case(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::restore_request::parse;
    use serde_json::{json, Value};

    const S: &str = "00000000-0000-0000-0000-000000000001";
    const OTHER: &str = "00000000-0000-0000-0000-000000000002";

    fn subnet(rg: &str, vnet: &str, name: &str) -> String {
        format!("/subscriptions/{S}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/{name}")
    }

    /// A request for VM `vm-1` of `source_rg` into `target_rg`, staging in `staging_rg`, joining
    /// `subnet` when given.
    fn request(
        source_rg: &str,
        target_rg: &str,
        staging_rg: &str,
        subnet: Option<&str>,
    ) -> RestoreRequest {
        let mut v = json!({
            "ticketId": "INC0012345",
            "vmResourceId": format!("/subscriptions/{S}/resourceGroups/{source_rg}/providers/Microsoft.Compute/virtualMachines/vm-1"),
            "targetResourceGroup": format!("/subscriptions/{S}/resourceGroups/{target_rg}"),
            "stagingStorageAccountId": format!("/subscriptions/{S}/resourceGroups/{staging_rg}/providers/Microsoft.Storage/storageAccounts/stagingsa"),
        });
        if let Some(s) = subnet {
            v["targetSubnetId"] = json!(s);
        }
        parse(&serde_json::to_vec(&v).expect("json")).expect("a valid request")
    }

    fn allow(entries: Value) -> RestoreAllowlist {
        RestoreAllowlist::from_json(&json!({ "entries": entries }).to_string()).expect("valid")
    }

    /// The refused field, or `None` when allowed.
    fn refused(list: &RestoreAllowlist, req: &RestoreRequest) -> Option<String> {
        list.check(req).err().map(|r| {
            assert_eq!(r.code, "forbidden", "{r}");
            r.field
        })
    }

    /// Sources in rg-app-*, restored into rg-restore, staged in rg-backup, joining subnets of
    /// rg-net or the one subnet `vnet-hub/restore` of rg-hub.
    fn operator_list() -> RestoreAllowlist {
        allow(json!([{
            "subscription": S,
            "sourceResourceGroups": ["rg-app-*"],
            "resourceGroups": ["rg-restore", "rg-backup"],
            "subnetResourceGroups": ["rg-net"],
            "subnets": [subnet("rg-hub", "vnet-hub", "restore")],
        }]))
    }

    #[test]
    fn allowlist_forbids_other_targets() {
        let r = request("rg-app", "rg-restore", "rg-restore", None);
        let into = |target: &str| RestoreAllowlist {
            entries: vec![AllowEntry {
                subscription: S.into(),
                resource_groups: vec![target.into()],
                source_resource_groups: vec!["rg-app".into()],
                ..AllowEntry::default()
            }],
        };
        assert!(into("rg-restore").check(&r).is_ok());
        let other = into("rg-other");
        assert_eq!(other.check(&r).expect_err("forbidden").code, "forbidden");
        assert_eq!(
            RestoreAllowlist::default()
                .check(&r)
                .expect_err("empty")
                .code,
            "forbidden"
        );
    }

    #[test]
    fn each_side_is_allowed_or_refused_naming_its_field() {
        let list = operator_list();
        let net = subnet("rg-net", "vnet", "default");
        let hub = subnet("rg-hub", "vnet-hub", "restore");
        let app_net = subnet("rg-app-web", "vnet", "default");
        let hub_default = subnet("rg-hub", "vnet-hub", "default");
        let other_vnet = subnet("rg-hub", "vnet-other", "restore");
        /// (source group, target group, staging group, subnet, refused field)
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);
        #[rustfmt::skip]
        let cases: [Case; 12] = [
            ("rg-app-web", "rg-restore", "rg-backup", None, None),
            ("rg-app-db", "rg-restore", "rg-restore", Some(&net), None),
            ("rg-app-db", "rg-restore", "rg-backup", Some(&hub), None),
            // source side: another group, a shorter name, the prefix not at the start
            ("rg-db", "rg-restore", "rg-backup", None, Some("vmResourceId")),
            ("rg-ap", "rg-restore", "rg-backup", None, Some("vmResourceId")),
            ("xrg-app-web", "rg-restore", "rg-backup", None, Some("vmResourceId")),
            // target side
            ("rg-app-web", "rg-app-web", "rg-backup", None, Some("targetResourceGroup")),
            ("rg-app-web", "rg-restore2", "rg-backup", None, Some("targetResourceGroup")),
            // staging side
            ("rg-app-web", "rg-restore", "rg-app-web", None, Some("stagingStorageAccountId")),
            // network side: another group; another subnet, another network of a listed subnet's
            ("rg-app-web", "rg-restore", "rg-backup", Some(&app_net), Some("targetSubnetId")),
            ("rg-app-web", "rg-restore", "rg-backup", Some(&hub_default), Some("targetSubnetId")),
            ("rg-app-web", "rg-restore", "rg-backup", Some(&other_vnet), Some("targetSubnetId")),
        ];
        for (source, target, staging, subnet, field) in cases {
            let req = request(source, target, staging, subnet);
            assert_eq!(
                refused(&list, &req).as_deref(),
                field,
                "{source} -> {target} via {staging}, subnet {subnet:?}"
            );
        }
    }

    #[test]
    fn the_refusal_names_the_list_to_change() {
        let rej = operator_list()
            .check(&request("rg-db", "rg-restore", "rg-backup", None))
            .expect_err("refused");
        assert!(rej.rule.contains("sourceResourceGroups"), "{}", rej.rule);
        assert!(rej.rule.contains("rg-db"), "{}", rej.rule);
        let rej = operator_list()
            .check(&request(
                "rg-app-1",
                "rg-restore",
                "rg-backup",
                Some(&subnet("rg-x", "v", "s")),
            ))
            .expect_err("refused");
        assert!(
            rej.rule
                .contains("subnetResourceGroups (or the subnet in subnets)"),
            "{}",
            rej.rule
        );
    }

    #[test]
    fn star_is_any_resource_group_of_the_subscription_only() {
        let list = allow(json!([{
            "subscription": S,
            "sourceResourceGroups": ["*"],
            "resourceGroups": ["*"],
            "subnetResourceGroups": ["*"],
        }]));
        let any = subnet("rg-anything", "v", "s");
        assert_eq!(
            refused(&list, &request("rg-x", "rg-y", "rg-z", Some(&any))),
            None
        );
        let elsewhere = allow(json!([{
            "subscription": OTHER,
            "sourceResourceGroups": ["*"],
            "resourceGroups": ["*"],
            "subnetResourceGroups": ["*"],
        }]));
        assert_eq!(
            refused(&elsewhere, &request("rg-x", "rg-y", "rg-z", None)).as_deref(),
            Some("vmResourceId")
        );
    }

    #[test]
    fn omitted_lists_grant_nothing_on_their_side() {
        // An entry written before the source and network sides existed: no VM may be restored.
        let legacy = allow(json!([{"subscription": S, "resourceGroups": ["*"]}]));
        assert_eq!(
            refused(
                &legacy,
                &request("rg-app", "rg-restore", "rg-restore", None)
            )
            .as_deref(),
            Some("vmResourceId")
        );
        // Sources and targets but no network: a request without a subnet passes, one naming a
        // subnet does not.
        let no_net = allow(
            json!([{"subscription": S, "resourceGroups": ["*"], "sourceResourceGroups": ["*"]}]),
        );
        assert_eq!(
            refused(
                &no_net,
                &request("rg-app", "rg-restore", "rg-restore", None)
            ),
            None
        );
        assert_eq!(
            refused(
                &no_net,
                &request(
                    "rg-app",
                    "rg-restore",
                    "rg-restore",
                    Some(&subnet("rg-net", "v", "s"))
                )
            )
            .as_deref(),
            Some("targetSubnetId")
        );
    }

    #[test]
    fn one_entry_must_grant_every_side() {
        let list = allow(json!([
            {"subscription": S, "sourceResourceGroups": ["rg-app"], "resourceGroups": ["rg-app-restore", "rg-backup"]},
            {"subscription": S, "sourceResourceGroups": ["rg-db"], "resourceGroups": ["rg-db-restore", "rg-backup"], "subnetResourceGroups": ["rg-net"]},
        ]));
        assert_eq!(
            refused(
                &list,
                &request("rg-app", "rg-app-restore", "rg-backup", None)
            ),
            None
        );
        assert_eq!(
            refused(
                &list,
                &request(
                    "rg-db",
                    "rg-db-restore",
                    "rg-backup",
                    Some(&subnet("rg-net", "v", "s"))
                )
            ),
            None
        );
        let crossed = list
            .check(&request("rg-app", "rg-db-restore", "rg-backup", None))
            .expect_err("the other entry's target");
        assert_eq!(crossed.field, "targetResourceGroup");
        assert!(
            crossed.rule.contains("one entry must allow"),
            "{}",
            crossed.rule
        );
        assert_eq!(
            refused(
                &list,
                &request(
                    "rg-app",
                    "rg-app-restore",
                    "rg-backup",
                    Some(&subnet("rg-net", "v", "s"))
                )
            )
            .as_deref(),
            Some("targetSubnetId")
        );
    }

    #[test]
    fn ids_and_names_compare_ignoring_case() {
        let list = allow(json!([{
            "subscription": S.to_ascii_uppercase().replace('-', ""),
            "sourceResourceGroups": ["RG-APP-*"],
            "resourceGroups": ["Rg-Restore", "RG-BACKUP"],
            "subnets": [subnet("RG-HUB", "VNET-HUB", "RESTORE").replace(S, &S.to_ascii_uppercase())],
        }]));
        let hub = subnet("rg-hub", "vnet-hub", "restore");
        assert_eq!(
            refused(
                &list,
                &request("rg-app-web", "rg-restore", "rg-backup", Some(&hub))
            ),
            None
        );
        assert_eq!(
            refused(
                &list,
                &request(
                    "Rg-App-Web",
                    "RG-RESTORE",
                    "rg-Backup",
                    Some(&hub.to_ascii_uppercase())
                )
            ),
            None
        );
        assert_eq!(
            refused(
                &list,
                &request(
                    "rg-app-web",
                    "rg-restore",
                    "rg-backup",
                    Some(&subnet("rg-hub", "vnet-hub", "restore2"))
                )
            )
            .as_deref(),
            Some("targetSubnetId")
        );
    }

    #[test]
    fn configuration_errors_name_the_entry_and_list() {
        for (entry, needle) in [
            (
                json!({"subscription": "sub-1", "resourceGroups": ["*"]}),
                "entries[0].subscription",
            ),
            (
                json!({"subscription": S, "resourceGroups": ["rg-*-x"]}),
                "entries[0].resourceGroups",
            ),
            (
                json!({"subscription": S, "resourceGroups": ["*"], "sourceResourceGroups": [""]}),
                "entries[0].sourceResourceGroups",
            ),
            (
                json!({"subscription": S, "resourceGroups": ["*"], "subnetResourceGroups": ["rg/x"]}),
                "entries[0].subnetResourceGroups",
            ),
            (
                json!({"subscription": S, "resourceGroups": ["*"], "subnets": [format!("/subscriptions/{S}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v")]}),
                "entries[0].subnets",
            ),
            (
                json!({"subscription": S, "resourceGroups": ["*"], "subnets": [subnet("rg", "v", "s").replace(S, OTHER)]}),
                "entries[0].subnets",
            ),
        ] {
            let err = RestoreAllowlist::from_json(&json!({ "entries": [entry] }).to_string())
                .expect_err("invalid");
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(RestoreAllowlist::from_json(
            r#"{"entries":[{"subscription":"x","resourceGroup":["*"]}]}"#
        )
        .is_err());
    }
}
