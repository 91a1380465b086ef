mod common;

use ade_backup_sim::{Fleet, SimOptions};
use common::*;
use serde_json::{json, Value};

async fn unthrottled(fleet: Fleet) -> Harness {
    Harness::start(
        fleet,
        SimOptions {
            throttling: false,
            ..SimOptions::default()
        },
    )
    .await
}

async fn query(h: &Harness, body: Value) -> (u16, Value) {
    let (s, _, v) = h
        .send(
            reqwest::Method::POST,
            &h.url("/providers/Microsoft.ResourceGraph/resources", "2022-10-01"),
            Some(body),
        )
        .await;
    (s, v)
}

#[tokio::test]
async fn vm_sweep_pages_by_skip_token() {
    let fleet = Fleet::generate(2, 2500, 5);
    let subs: Vec<String> = fleet.subscriptions.iter().map(|s| s.id.clone()).collect();
    let encrypted = fleet
        .vms
        .iter()
        .filter(|v| !matches!(v.ade, ade_backup_sim::fleet::Ade::None))
        .count();
    let h = unthrottled(fleet).await;
    let q = "resources | where type =~ 'microsoft.compute/virtualmachines'";
    let mut token: Option<String> = None;
    let mut pages = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    loop {
        let mut options = json!({"$top": 1000, "resultFormat": "objectArray"});
        if let Some(t) = &token {
            options["$skipToken"] = json!(t);
        }
        let (s, page) = query(
            &h,
            json!({"subscriptions": subs, "query": q, "options": options}),
        )
        .await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["totalRecords"], 2500);
        let data = page["data"].as_array().expect("data");
        assert_eq!(page["count"], data.len());
        for row in data {
            assert_eq!(row["type"], "microsoft.compute/virtualmachines");
            assert!(row["properties"]["storageProfile"]["osDisk"].is_object());
            ids.insert(row["id"].as_str().expect("id").to_string());
        }
        pages.push(data.len());
        match page["$skipToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, vec![1000, 1000, 500]);
    assert_eq!(ids.len(), 2500);

    let (_, ext) = query(&h, json!({"subscriptions": subs, "query": "resources | where type =~ 'microsoft.compute/virtualmachines/extensions' and properties.publisher =~ 'Microsoft.Azure.Security'", "options": {"$top": 1000}})).await;
    assert_eq!(ext["totalRecords"], encrypted);

    // Only the requested subscriptions are searched.
    let (_, one) = query(
        &h,
        json!({"subscriptions": [subs[0]], "query": q, "options": {"$top": 5}}),
    )
    .await;
    assert_eq!(one["totalRecords"], 1250);
    assert!(one["data"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["subscriptionId"] == json!(subs[0])));

    // A token from another query is refused; unsupported KQL is a 400 with ARG's shape.
    let (s, _) = query(&h, json!({"query": "resources | where type =~ 'microsoft.keyvault/vaults'", "options": {"$skipToken": token.unwrap_or_default()}})).await;
    assert_eq!(s, 400);
    let (s, err) = query(
        &h,
        json!({"query": "resources | summarize count() by type"}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["details"][0]["code"], "InvalidQuery");
}

#[tokio::test]
async fn other_tables_and_projection() {
    let h = Harness::sample().await;
    let (_, items) = query(&h, json!({"query": "recoveryservicesresources | where type =~ 'microsoft.recoveryservices/vaults/backupfabrics/protectioncontainers/protecteditems' | project id, vm = properties.sourceResourceId, properties.lastBackupTime"})).await;
    let rows = items["data"].as_array().expect("rows");
    assert_eq!(
        rows.len(),
        Fleet::sample()
            .vms
            .iter()
            .filter(|v| v.protection.is_some())
            .count()
    );
    assert!(rows.iter().all(|r| r["vm"].is_string()
        && r.get("lastBackupTime").is_some()
        && r.as_object().map(|o| o.len()) == Some(3)));
    let (_, kvs) = query(&h, json!({"query": "resources | where type =~ 'microsoft.keyvault/vaults' and properties.enableRbacAuthorization =~ 'true'"})).await;
    assert_eq!(kvs["totalRecords"], 1);
    let (_, ra) = query(&h, json!({"query": format!("authorizationresources | where type =~ 'microsoft.authorization/roleassignments' and properties.principalId =~ '{}'", h.sim.backup_management_object_id())})).await;
    assert_eq!(ra["totalRecords"], 0);
}

/// Continuation pages page the rows the first page matched (the same `totalRecords`, no row
/// skipped or repeated), each rendered as the resource is when its page is served: Resource Graph
/// does not promise a snapshot across pages (learn.microsoft.com/azure/governance/resource-graph/
/// concepts/paging-results, "Paging limitations": data changing between page calls), and the
/// simulator renders rows lazily, page by page (issue 15, scenario 7). The row set is dropped once
/// its last page is served.
#[tokio::test]
async fn continuation_pages_page_the_first_pages_rows_as_they_are_now() {
    let fleet = Fleet::generate(1, 600, 9);
    let h = unthrottled(fleet).await;
    let q = "recoveryservicesresources | where type =~ 'microsoft.recoveryservices/vaults/backupfabrics/protectioncontainers/protecteditems'";
    let (s, first) = query(&h, json!({"query": q, "options": {"$top": 5}})).await;
    assert_eq!(s, 200, "{first}");
    let total = first["totalRecords"].as_u64().expect("total");
    assert!(total > 5, "the fleet has protected items: {total}");
    let token = first["$skipToken"].as_str().expect("token").to_string();
    // Every item is stopped after the first page was served...
    let (_, all) = query(&h, json!({"query": q, "options": {"$top": 1000}})).await;
    for row in all["data"].as_array().expect("rows") {
        let vm = row["properties"]["sourceResourceId"].as_str().expect("vm");
        h.sim.stop_protection(vm).expect("stop");
    }
    // ... the continuation pages the same rows (same total, the next five), rendered as they are now.
    let (s, second) = query(
        &h,
        json!({"query": q, "options": {"$top": 5, "$skipToken": token}}),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["totalRecords"].as_u64(), Some(total));
    let rows = second["data"].as_array().expect("rows");
    assert_eq!(rows.len(), 5, "{second}");
    let first_ids: Vec<&Value> = first["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert!(
        rows.iter().all(|r| !first_ids.contains(&&r["id"])),
        "no row of the first page again"
    );
    assert!(rows
        .iter()
        .all(|r| r["properties"]["protectionState"] == "ProtectionStopped"));
    // A new query sees the change.
    let (_, fresh) = query(&h, json!({"query": q, "options": {"$top": 5}})).await;
    assert!(fresh["data"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["properties"]["protectionState"] == "ProtectionStopped"));
    // Reading to the end releases the snapshot: its token then recomputes (same shape, new data).
    let mut token = second["$skipToken"].as_str().map(str::to_string);
    let mut last_token = None;
    while let Some(t) = token {
        let (_, page) = query(
            &h,
            json!({"query": q, "options": {"$top": 1000, "$skipToken": t.clone()}}),
        )
        .await;
        last_token = Some(t);
        token = page["$skipToken"].as_str().map(str::to_string);
    }
    let (s, again) = query(
        &h,
        json!({"query": q, "options": {"$top": 1000, "$skipToken": last_token.expect("paged")}}),
    )
    .await;
    assert_eq!(s, 200);
    assert!(again["data"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["properties"]["protectionState"] == "ProtectionStopped"));
}

/// `managementGroups` scopes a query to the subscriptions under them (generated fleets put even
/// subscriptions under mg-prod, odd ones under mg-dev, all under mg-root).
#[tokio::test]
async fn management_group_scope_covers_the_subscriptions_below_it() {
    let fleet = Fleet::generate(3, 300, 4);
    let subs: Vec<String> = fleet.subscriptions.iter().map(|s| s.id.clone()).collect();
    let h = unthrottled(fleet).await;
    let q = "resources | where type =~ 'microsoft.compute/virtualmachines'";
    let count = |v: &Value| v["totalRecords"].as_u64().expect("total");
    let (_, prod) = query(
        &h,
        json!({"managementGroups": ["MG-PROD"], "query": q, "options": {"$top": 1000}}),
    )
    .await;
    let (_, dev) = query(
        &h,
        json!({"managementGroups": ["mg-dev"], "query": q, "options": {"$top": 1000}}),
    )
    .await;
    let (_, root) = query(
        &h,
        json!({"managementGroups": ["mg-root"], "query": q, "options": {"$top": 1000}}),
    )
    .await;
    assert_eq!((count(&prod), count(&dev), count(&root)), (200, 100, 300));
    assert!(prod["data"]
        .as_array()
        .expect("rows")
        .iter()
        .all(|r| r["subscriptionId"] == json!(subs[0]) || r["subscriptionId"] == json!(subs[2])));
    let (_, none) = query(&h, json!({"managementGroups": ["mg-other"], "query": q})).await;
    assert_eq!(count(&none), 0);
}
