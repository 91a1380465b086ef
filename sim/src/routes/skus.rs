//! Microsoft.Compute Resource SKUs 2021-07-01: the VM sizes a region offers, with the
//! `EncryptionAtHostSupported` capability the fleet report reads. A small fixed catalog: the
//! sizes the sample fleets use plus a few common ones.
//! Shape: azure-rest-api-specs compute `ResourceSkus/stable/2021-07-01` example
//! `ListAvailableResourceSkusForARegion.json`.

use super::{route, Ctx, Reply, Route};
use crate::world::{lc, World};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const API: Option<&str> = Some("2021-07-01");

/// (size, family, encryption at host supported). Av2 and Basic A sizes do not support encryption
/// at host (Microsoft Learn: "Restrictions" of encryption at host / the SKU capability).
const CATALOG: &[(&str, &str, bool)] = &[
    ("Standard_A2_v2", "standardAv2Family", false),
    ("Standard_B2s", "standardBSFamily", true),
    ("Standard_D2s_v3", "standardDSv3Family", true),
    ("Standard_D4s_v5", "standardDSv5Family", true),
    ("Standard_E4s_v5", "standardESv5Family", true),
];

pub fn routes() -> Vec<Route> {
    vec![route(
        Method::GET,
        "subscriptions/*/providers/microsoft.compute/skus",
        "compute.skus.list",
        API,
        skus_list,
    )]
}

/// `location eq 'westeurope'` → `westeurope` (the one filter the API supports).
fn filter_location(filter: &str) -> Option<String> {
    let rest = filter.trim().strip_prefix("location")?.trim_start();
    let rest = rest.strip_prefix("eq")?.trim();
    let v = rest.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(lc(v))
}

fn skus_list(w: &mut World, ctx: &Ctx) -> Reply {
    let Some(sub) = w.subscriptions.get(&lc(ctx.param(0))) else {
        return Reply::error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{}' could not be found.", ctx.param(0)),
        );
    };
    let location = match ctx.query("$filter") {
        None => None,
        Some(f) => match filter_location(f) {
            Some(l) => Some(l),
            None => {
                return Reply::error(
                    StatusCode::BAD_REQUEST,
                    "InvalidFilter",
                    format!("The filter '{f}' is not supported; use location eq '<region>'."),
                )
            }
        },
    };
    let regions: Vec<String> = match location {
        Some(l) => vec![l],
        None => vec!["westeurope".into(), "northeurope".into()],
    };
    let value: Vec<Value> = CATALOG
        .iter()
        .map(|(name, family, eah)| {
            let restricted: Vec<&String> = regions
                .iter()
                .filter(|r| {
                    sub.restricted_sizes.iter().any(|(region, sizes)| {
                        region.eq_ignore_ascii_case(r)
                            && sizes.iter().any(|s| s.eq_ignore_ascii_case(name))
                    })
                })
                .collect();
            let mut sku = sku_json(name, family, *eah, &regions);
            sku["restrictions"] = restricted.iter().map(|r| restriction_json(r)).collect();
            sku
        })
        .collect();
    Reply::ok(json!({ "value": value }))
}

/// A `Location` restriction: the subscription cannot deploy the size in `region`.
fn restriction_json(region: &str) -> Value {
    json!({
        "type": "Location",
        "values": [region],
        "restrictionInfo": {"locations": [region]},
        "reasonCode": "NotAvailableForSubscription"
    })
}

fn sku_json(name: &str, family: &str, eah: bool, regions: &[String]) -> Value {
    let size = name.strip_prefix("Standard_").unwrap_or(name);
    json!({
        "resourceType": "virtualMachines",
        "name": name,
        "tier": "Standard",
        "size": size,
        "family": family,
        "locations": regions,
        "locationInfo": regions.iter().map(|r| json!({"location": r, "zones": [], "zoneDetails": []})).collect::<Vec<_>>(),
        "capabilities": [
            {"name": "vCPUs", "value": "2"},
            {"name": "EncryptionAtHostSupported", "value": if eah { "True" } else { "False" }}
        ],
        "restrictions": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_location_filter() {
        assert_eq!(
            filter_location("location eq 'WestEurope'").as_deref(),
            Some("westeurope")
        );
        assert_eq!(filter_location("name eq 'x'"), None);
        assert_eq!(filter_location("location eq westeurope"), None);
    }
}
