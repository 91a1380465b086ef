//! The `StateStore` contract suite, one for every store: Blob (Azurite), fs, memory, and the
//! S3 store of the AWS Lambda build (moto). Each case takes a fresh, empty store and panics (with
//! what broke) when the store breaks the contract described in the parent module's docs; the
//! lease cases also take the shortest lease the store allows, so expiry can be awaited.
//!
//! Compiled only with the `contract-suite` feature: it is test code, shared by the test crates
//! of each store without being duplicated.

use super::{json, ETag, LeaseId, LeaseState, StateError, StateStore};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// A store under test.
pub type Store = Arc<dyn StateStore>;
/// One contract case.
pub type Case = fn(Store) -> BoxFuture<'static, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every non-lease case, by name.
        pub const CASES: &[(&str, Case)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
    };
}

cases!(
    get_of_missing_is_none,
    create_then_get_returns_same_bytes_and_etag,
    second_create_conflicts_and_keeps_first,
    replace_with_current_etag_gives_new_etag,
    replace_with_stale_etag_conflicts_and_keeps_document,
    replace_of_missing_document_conflicts,
    list_by_prefix_is_exact_and_sorted,
    invalid_keys_are_rejected_everywhere,
    concurrent_updates_lose_nothing,
    large_document_round_trips,
    corrupt_json_is_reported_as_corrupt,
);

/// Lease cases get the shortest lease the store allows (Blob: 15 s), so expiry can be awaited.
pub type LeaseCase = fn(Store, Duration) -> BoxFuture<'static, ()>;

/// Every lease case, by name.
pub const LEASE_CASES: &[(&str, LeaseCase)] = &[
    ("lease_excludes_others_and_plain_writes", |s, d| {
        Box::pin(lease_excludes_others_and_plain_writes(s, d))
    }),
    ("lease_of_missing_document_is_missing", |s, d| {
        Box::pin(lease_of_missing_document_is_missing(s, d))
    }),
    ("released_lease_is_available_again", |s, d| {
        Box::pin(released_lease_is_available_again(s, d))
    }),
    ("lapsed_lease_is_reported_expired_and_taken", |s, d| {
        Box::pin(lapsed_lease_is_reported_expired_and_taken(s, d))
    }),
];

fn lease(n: u8) -> LeaseId {
    LeaseId(format!("00000000-0000-0000-0000-0000000000{n:02}"))
}

async fn lease_excludes_others_and_plain_writes(s: Store, d: Duration) {
    let key = "runs/sweep/latest.json";
    let e1 = s.create(key, b"v1").await.expect("create");
    let got = s.acquire_lease(key, d, &lease(1)).await.expect("acquire");
    assert_eq!(got.previous, LeaseState::Available);
    assert_eq!(got.lease, lease(1));
    // leasing is not a write: body and ETag unchanged
    let (body, etag) = s.get(key).await.expect("get").expect("present");
    assert_eq!((body.as_slice(), &etag), (&b"v1"[..], &e1));
    match s.acquire_lease(key, d, &lease(2)).await {
        Err(StateError::Leased { .. }) => {}
        other => panic!("second holder: expected Leased, got {other:?}"),
    }
    assert_conflict(
        s.replace(key, b"plain", &e1).await,
        "plain write under lease",
    );
    match s.replace_leased(key, b"v2", &lease(2)).await {
        Err(StateError::LeaseLost { .. }) => {}
        other => panic!("write with a foreign lease: expected LeaseLost, got {other:?}"),
    }
    s.renew_lease(key, &lease(1)).await.expect("renew");
    let e2 = s
        .replace_leased(key, b"v2", &lease(1))
        .await
        .expect("write");
    let (body, etag) = s.get(key).await.expect("get").expect("present");
    assert_eq!((body.as_slice(), &etag), (&b"v2"[..], &e2));
    // the holder can acquire again with its own id
    let again = s
        .acquire_lease(key, d, &lease(1))
        .await
        .expect("re-acquire");
    assert_eq!(again.previous, LeaseState::Leased);
    s.release_lease(key, &lease(1)).await.expect("release");
}

async fn lease_of_missing_document_is_missing(s: Store, d: Duration) {
    match s.acquire_lease("runs/none.json", d, &lease(1)).await {
        Err(StateError::Missing { .. }) => {}
        other => panic!("expected Missing, got {other:?}"),
    }
    match s
        .acquire_lease("runs/none.json", Duration::ZERO, &lease(1))
        .await
    {
        Err(StateError::InvalidLease { .. }) => {}
        other => panic!("zero duration: expected InvalidLease, got {other:?}"),
    }
}

async fn released_lease_is_available_again(s: Store, d: Duration) {
    let key = "runs/a.json";
    let e1 = s.create(key, b"v1").await.expect("create");
    s.acquire_lease(key, d, &lease(1)).await.expect("acquire");
    s.release_lease(key, &lease(1)).await.expect("release");
    // released: plain writes work and a write under the old lease does not
    match s.replace_leased(key, b"x", &lease(1)).await {
        Err(StateError::LeaseLost { .. }) => {}
        other => panic!("write under a released lease: expected LeaseLost, got {other:?}"),
    }
    s.replace(key, b"v2", &e1).await.expect("plain write");
    let got = s.acquire_lease(key, d, &lease(2)).await.expect("acquire");
    assert_eq!(got.previous, LeaseState::Available);
    s.release_lease(key, &lease(2)).await.expect("release");
}

async fn lapsed_lease_is_reported_expired_and_taken(s: Store, d: Duration) {
    let key = "runs/b.json";
    s.create(key, b"v1").await.expect("create");
    s.acquire_lease(key, d, &lease(1)).await.expect("acquire");
    // the holder "crashes": no renew, no release
    tokio::time::sleep(d + Duration::from_millis(1500)).await;
    let got = s.acquire_lease(key, d, &lease(2)).await.expect("take over");
    assert_eq!(got.previous, LeaseState::Expired);
    match s.renew_lease(key, &lease(1)).await {
        Err(StateError::LeaseLost { .. }) => {}
        other => panic!("old holder renew: expected LeaseLost, got {other:?}"),
    }
    match s.replace_leased(key, b"late", &lease(1)).await {
        Err(StateError::LeaseLost { .. }) => {}
        other => panic!("old holder write: expected LeaseLost, got {other:?}"),
    }
    s.replace_leased(key, b"v2", &lease(2))
        .await
        .expect("new holder writes");
    s.release_lease(key, &lease(2)).await.expect("release");
}

fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StateError>, what: &str) {
    match r {
        Err(StateError::Conflict { .. }) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

async fn get_of_missing_is_none(s: Store) {
    assert!(s
        .get("operations/protect/none.json")
        .await
        .expect("get")
        .is_none());
}

async fn create_then_get_returns_same_bytes_and_etag(s: Store) {
    let body = br#"{"state":"pending"}"#;
    let etag = s
        .create("operations/protect/op1.json", body)
        .await
        .expect("create");
    let (got, got_etag) = s
        .get("operations/protect/op1.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, body);
    assert_eq!(got_etag, etag);
}

async fn second_create_conflicts_and_keeps_first(s: Store) {
    let etag = s
        .create("restores/t1.json", b"first")
        .await
        .expect("create");
    assert_conflict(
        s.create("restores/t1.json", b"second").await,
        "second create",
    );
    let (got, got_etag) = s
        .get("restores/t1.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, b"first");
    assert_eq!(got_etag, etag);
}

async fn replace_with_current_etag_gives_new_etag(s: Store) {
    let e1 = s.create("vms/s/rg/vm1.json", b"v1").await.expect("create");
    let e2 = s
        .replace("vms/s/rg/vm1.json", b"v2", &e1)
        .await
        .expect("replace");
    assert_ne!(e1, e2, "a replace must change the ETag");
    let (got, got_etag) = s
        .get("vms/s/rg/vm1.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, b"v2");
    assert_eq!(got_etag, e2);
    let e3 = s
        .replace("vms/s/rg/vm1.json", b"v3", &e2)
        .await
        .expect("replace again");
    assert_ne!(e3, e2);
}

async fn replace_with_stale_etag_conflicts_and_keeps_document(s: Store) {
    let e1 = s.create("vms/s/rg/vm2.json", b"v1").await.expect("create");
    let e2 = s
        .replace("vms/s/rg/vm2.json", b"v2", &e1)
        .await
        .expect("replace");
    assert_conflict(
        s.replace("vms/s/rg/vm2.json", b"stale", &e1).await,
        "replace with stale etag",
    );
    let (got, got_etag) = s
        .get("vms/s/rg/vm2.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(got, b"v2", "a lost race must not change the document");
    assert_eq!(got_etag, e2);
    assert_conflict(
        s.replace("vms/s/rg/vm2.json", b"made-up", &ETag("\"0x0\"".into()))
            .await,
        "replace with made-up etag",
    );
}

async fn replace_of_missing_document_conflicts(s: Store) {
    let e = s.create("runs/sweep/r1.json", b"x").await.expect("create");
    assert_conflict(
        s.replace("runs/sweep/r2.json", b"y", &e).await,
        "replace of a document that does not exist",
    );
    assert!(s.get("runs/sweep/r2.json").await.expect("get").is_none());
}

async fn list_by_prefix_is_exact_and_sorted(s: Store) {
    // Created out of order, with neighbours that share a string prefix but not the folder.
    for key in [
        "runs/sweep/r-b.json",
        "runs/sweep/current.json",
        "runs/sweep/r-a.json",
        "runs/sweeper/x.json",
        "runs/other/y.json",
        "deadletters/q1/m1.json",
        "vms/s/rg/vm.json",
    ] {
        s.create(key, b"{}").await.expect("create");
    }
    assert_eq!(
        s.list("runs/sweep/").await.expect("list"),
        vec![
            "runs/sweep/current.json",
            "runs/sweep/r-a.json",
            "runs/sweep/r-b.json"
        ]
    );
    assert_eq!(
        s.list("runs/sweep").await.expect("list"),
        vec![
            "runs/sweep/current.json",
            "runs/sweep/r-a.json",
            "runs/sweep/r-b.json",
            "runs/sweeper/x.json"
        ],
        "a prefix is a string prefix, as in blob storage"
    );
    assert_eq!(
        s.list("runs/sweep/r-").await.expect("list"),
        vec!["runs/sweep/r-a.json", "runs/sweep/r-b.json"]
    );
    assert_eq!(
        s.list("runs/sweep/current.json").await.expect("list"),
        vec!["runs/sweep/current.json"]
    );
    assert!(s.list("restores/").await.expect("list").is_empty());
    let all = s.list("").await.expect("list all");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 7);
}

async fn invalid_keys_are_rejected_everywhere(s: Store) {
    let etag = ETag("x".into());
    for bad in [
        "",
        "/abs.json",
        "a/../b.json",
        "a//b.json",
        "a/./b",
        "dir/",
        "a b",
        "a~lock",
        "a\\b",
    ] {
        let is_invalid =
            |r: &Result<(), StateError>| matches!(r, Err(StateError::InvalidKey { .. }));
        assert!(is_invalid(&s.get(bad).await.map(|_| ())), "get {bad:?}");
        assert!(
            is_invalid(&s.create(bad, b"x").await.map(|_| ())),
            "create {bad:?}"
        );
        assert!(
            is_invalid(&s.replace(bad, b"x", &etag).await.map(|_| ())),
            "replace {bad:?}"
        );
    }
    for bad in ["/", "../", "a//", "a b/", "~"] {
        assert!(
            matches!(s.list(bad).await, Err(StateError::InvalidKey { .. })),
            "list {bad:?}"
        );
    }
    assert!(
        s.list("").await.expect("list").is_empty(),
        "nothing was written"
    );
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counter {
    pub n: u32,
}

/// Adds one to the [`Counter`] at `key` through [`json::update`]; returns the stored count.
pub async fn increment(s: &dyn StateStore, key: &str) -> Result<u32, StateError> {
    let c: Counter = json::update(s, key, |cur: Option<&Counter>| {
        Ok::<_, StateError>(Some(Counter {
            n: cur.map_or(0, |c| c.n) + 1,
        }))
    })
    .await?;
    Ok(c.n)
}

async fn concurrent_updates_lose_nothing(s: Store) {
    let key = "runs/sweep/counter.json";
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { increment(s.as_ref(), key).await })
        })
        .collect();
    let mut seen = BTreeSet::new();
    for t in tasks {
        let n = t.await.expect("task").expect("update");
        assert!(
            seen.insert(n),
            "two updates both produced {n}: one was lost"
        );
    }
    assert_eq!(seen, (1..=20).collect::<BTreeSet<u32>>());
    let (c, _) = json::get::<Counter>(s.as_ref(), key)
        .await
        .expect("get")
        .expect("present");
    assert_eq!(c.n, 20);
}

async fn large_document_round_trips(s: Store) {
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let e1 = s
        .create("operations/protect/big.json", &big)
        .await
        .expect("create 1 MB");
    let (got, got_etag) = s
        .get("operations/protect/big.json")
        .await
        .expect("get")
        .expect("present");
    assert!(got == big, "1 MB document changed in transit");
    assert_eq!(got_etag, e1);
    let mut big2 = big.clone();
    big2.reverse();
    let e2 = s
        .replace("operations/protect/big.json", &big2, &e1)
        .await
        .expect("replace 1 MB");
    let (got, got_etag) = s
        .get("operations/protect/big.json")
        .await
        .expect("get")
        .expect("present");
    assert!(got == big2, "replaced 1 MB document changed in transit");
    assert_eq!(got_etag, e2);
}

async fn corrupt_json_is_reported_as_corrupt(s: Store) {
    s.create("vms/s/rg/bad.json", b"not json")
        .await
        .expect("create");
    let r = json::get::<Counter>(s.as_ref(), "vms/s/rg/bad.json").await;
    assert!(matches!(r, Err(StateError::Corrupt { .. })), "{r:?}");
}

/// Runs every case on a fresh store from `fresh` (cases in order, lease cases concurrently, each
/// with `lease` as its lease duration). `label` names the store in the progress lines.
pub async fn run_all<F, Fut>(label: &str, lease: Duration, fresh: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Store>,
{
    for (name, case) in CASES {
        eprintln!("{label} contract: {name}");
        case(fresh(name.replace('_', "-")).await).await;
    }
    let mut leases = Vec::new();
    for (name, case) in LEASE_CASES {
        eprintln!("{label} lease contract: {name}");
        let store = fresh(name.replace('_', "-")).await;
        leases.push(case(store, lease));
    }
    futures::future::join_all(leases).await;
}
