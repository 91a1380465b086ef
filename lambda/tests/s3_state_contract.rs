//! `S3StateStore` against moto (S3 conditional writes: `If-None-Match: *`, `If-Match`), through
//! the same contract suite as the Blob, fs and memory stores (`ade_backup_shared::state::contract`),
//! plus what is S3-specific: prefix isolation and lease sidecars never listed.

use ade_backup_lambda::s3_state::S3StateStore;
use ade_backup_shared::state::contract::{self, Store};
use ade_backup_shared::state::{LeaseId, StateError, StateStore};
use ade_backup_test_support::moto::Moto;
use ade_backup_test_support::sqs_event_source::{create_bucket, s3_client};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_meets_the_contract_on_moto() {
    let moto = Moto::start();
    let client = s3_client(&moto);
    let fresh = |name: String| {
        let client = client.clone();
        async move {
            let bucket = format!("contract-{name}")
                .chars()
                .take(63)
                .collect::<String>();
            create_bucket(&client, &bucket).await;
            Arc::new(S3StateStore::new(client, bucket, "").expect("store")) as Store
        }
    };
    // S3 has no lease minimum: the lease cases wait out a 5-second lease (long enough for the
    // calls a case makes while holding it, on a loaded machine).
    contract::run_all("s3", Duration::from_secs(5), fresh).await;
}

#[tokio::test]
async fn prefixes_isolate_deployments_and_sidecars_stay_hidden() {
    let moto = Moto::start();
    let client = s3_client(&moto);
    create_bucket(&client, "shared-state").await;
    let a = S3StateStore::new(client.clone(), "shared-state", "prod/").expect("store");
    let b = S3StateStore::new(client.clone(), "shared-state", "test/").expect("store");
    a.create("runs/sweep/latest.json", b"a")
        .await
        .expect("create a");
    b.create("runs/sweep/latest.json", b"b")
        .await
        .expect("create b");
    let (got, _) = a
        .get("runs/sweep/latest.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, b"a");
    a.acquire_lease(
        "runs/sweep/latest.json",
        Duration::from_secs(30),
        &LeaseId("l1".into()),
    )
    .await
    .expect("lease");
    assert_eq!(
        a.list("").await.expect("list"),
        vec!["runs/sweep/latest.json"]
    );
    assert_eq!(
        b.list("runs/").await.expect("list"),
        vec!["runs/sweep/latest.json"]
    );
    // The sidecar is a real object under the prefix, next to the document.
    let objects = client
        .list_objects_v2()
        .bucket("shared-state")
        .prefix("prod/")
        .send()
        .await
        .expect("list objects");
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        vec![
            "prod/runs/sweep/latest.json",
            "prod/runs/sweep/latest.json~lease"
        ]
    );
    // b's document is not leased by a's lease.
    let (_, etag) = b
        .get("runs/sweep/latest.json")
        .await
        .expect("get")
        .expect("present");
    b.replace("runs/sweep/latest.json", b"b2", &etag)
        .await
        .expect("b is not leased");
}

#[tokio::test]
async fn an_unreachable_bucket_is_unavailable_not_a_conflict() {
    let moto = Moto::start();
    let store = S3StateStore::new(s3_client(&moto), "no-such-bucket", "").expect("store");
    match store.create("runs/a.json", b"x").await {
        Err(StateError::Unavailable(m)) => assert!(m.contains("runs/a.json"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
