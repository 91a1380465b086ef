//! One contract suite for every `StateStore`, run against `FsStateStore` (temp dirs) and
//! `BlobStateStore` (Azurite; install with `npm ci` at the repository root — the blob tests fail,
//! never skip, without it). Plus store-specific tests: fs crash safety and multi-instance /
//! multi-process contention; blob paging and SAS-free error text.

mod support;

use ade_backup_shared::state::{
    json, BlobStateStore, BlobStateStoreOptions, ETag, FsStateStore, LeaseId, LeaseState,
    MemoryStateStore, StateError, StateStore,
};
use azure_core::http::{ClientOptions, RetryOptions};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use support::azurite::Azurite;

type Store = Arc<dyn StateStore>;
type Case = fn(Store) -> BoxFuture<'static, ()>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), |s| Box::pin($name(s)))),*];
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
type LeaseCase = fn(Store, Duration) -> BoxFuture<'static, ()>;

const LEASE_CASES: &[(&str, LeaseCase)] = &[
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
struct Counter {
    n: u32,
}

async fn increment(s: &dyn StateStore, key: &str) -> Result<u32, StateError> {
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

// ---------------------------------------------------------------- MemoryStateStore

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_meets_the_contract() {
    for (name, case) in CASES {
        eprintln!("memory contract: {name}");
        case(Arc::new(MemoryStateStore::new())).await;
    }
    for (name, case) in LEASE_CASES {
        eprintln!("memory contract: {name}");
        case(Arc::new(MemoryStateStore::new()), Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------- FsStateStore

fn fs_store(dir: &tempfile::TempDir) -> Store {
    Arc::new(FsStateStore::new(dir.path().to_path_buf()).expect("fs store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_store_meets_the_contract() {
    for (name, case) in CASES {
        eprintln!("fs contract: {name}");
        let dir = tempfile::tempdir().expect("tempdir");
        case(fs_store(&dir)).await;
    }
    for (name, case) in LEASE_CASES {
        eprintln!("fs contract: {name}");
        let dir = tempfile::tempdir().expect("tempdir");
        case(fs_store(&dir), Duration::from_secs(1)).await;
    }
}

#[tokio::test]
async fn fs_leftover_temp_files_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = fs_store(&dir);
    let e1 = s.create("vms/s/rg/vm.json", b"good").await.expect("create");
    // What a writer that died between create-temp and rename leaves behind.
    let leftover_same = dir.path().join("vms/s/rg/vm.json~tmp~0123456789abcdef");
    let leftover_other = dir.path().join("vms/s/rg/never.json~tmp~fedcba9876543210");
    std::fs::write(&leftover_same, b"half-writ").expect("write leftover");
    std::fs::write(&leftover_other, b"half-writ").expect("write leftover");

    assert_eq!(s.list("").await.expect("list"), vec!["vms/s/rg/vm.json"]);
    let (got, etag) = s
        .get("vms/s/rg/vm.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!((got.as_slice(), &etag), (&b"good"[..], &e1));
    assert!(s.get("vms/s/rg/never.json").await.expect("get").is_none());

    // The next write of the document clears its own leftovers ...
    s.replace("vms/s/rg/vm.json", b"better", &e1)
        .await
        .expect("replace");
    assert!(
        !leftover_same.exists(),
        "writer should remove its document's leftover"
    );
    assert!(
        leftover_other.exists(),
        "another document's temp is not this writer's to judge"
    );
    // ... and opening the store sweeps the rest.
    let _reopened = FsStateStore::new(dir.path().to_path_buf()).expect("reopen");
    assert!(
        !leftover_other.exists(),
        "start-up sweep should remove leftovers"
    );
    assert!(
        s.get("vms/s/rg/never.json").await.expect("get").is_none(),
        "a leftover never becomes a document"
    );
}

/// Separate store instances on separate OS threads, each with its own runtime: the same shape as
/// the local runtime's parent and `serve` child sharing one state dir.
#[test]
fn fs_separate_instances_on_threads_do_not_lose_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let threads = 6;
    let per_thread = 10;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    let s = FsStateStore::new(root).expect("store");
                    let mut created = 0;
                    if s.create("runs/sweep/current.json", b"mine").await.is_ok() {
                        created += 1;
                    }
                    for _ in 0..per_thread {
                        increment(&s, "runs/sweep/counter.json")
                            .await
                            .expect("increment");
                    }
                    created
                })
            })
        })
        .collect();
    let creators: u32 = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(
        creators, 1,
        "exactly one instance may create the run marker"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = FsStateStore::new(root).expect("store");
    let (c, _) = rt
        .block_on(json::get::<Counter>(&s, "runs/sweep/counter.json"))
        .expect("get")
        .expect("present");
    assert_eq!(c.n, threads * per_thread);
}

const CHILD_ROOT_ENV: &str = "ADE_STATE_CONTRACT_CHILD_ROOT";

/// Worker for `fs_separate_processes_do_not_lose_updates`; does nothing unless started by it.
#[tokio::test]
async fn fs_child_process_worker() {
    let Ok(root) = std::env::var(CHILD_ROOT_ENV) else {
        return;
    };
    let s = FsStateStore::new(root.into()).expect("store");
    for _ in 0..15 {
        increment(&s, "runs/sweep/counter.json")
            .await
            .expect("increment");
    }
}

#[tokio::test]
async fn fs_separate_processes_do_not_lose_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "fs_child_process_worker", "--test-threads", "1"])
                .env(CHILD_ROOT_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn child test process")
        })
        .collect();
    let s = FsStateStore::new(dir.path().to_path_buf()).expect("store");
    for _ in 0..15 {
        increment(&s, "runs/sweep/counter.json")
            .await
            .expect("increment");
    }
    for c in children {
        let out = tokio::task::spawn_blocking(move || c.wait_with_output())
            .await
            .expect("join")
            .expect("wait");
        assert!(
            out.status.success(),
            "child process failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (c, _) = json::get::<Counter>(&s, "runs/sweep/counter.json")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(c.n, 4 * 15, "updates from four processes");
}

// ---------------------------------------------------------------- BlobStateStore on Azurite

async fn fresh_container(az: &Azurite, name: &str) -> url::Url {
    let admin = BlobStateStore::new(
        az.container_url_with_account_sas(name),
        None,
        BlobStateStoreOptions::default(),
    )
    .expect("admin store");
    admin.ensure_container().await.expect("create container");
    admin
        .ensure_container()
        .await
        .expect("ensure_container is idempotent");
    az.container_sas_url(name)
}

fn blob_store(url: url::Url, options: BlobStateStoreOptions) -> Store {
    Arc::new(BlobStateStore::new(url, None, options).expect("blob store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_store_meets_the_contract_on_azurite() {
    let az = Azurite::start();
    for (i, (name, case)) in CASES.iter().enumerate() {
        eprintln!("blob contract: {name}");
        let url = fresh_container(&az, &format!("contract-{i}")).await;
        case(blob_store(url, BlobStateStoreOptions::default())).await;
    }
}

/// Separate from the main contract run so its 15-second lease expiry overlaps other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_store_meets_the_lease_contract_on_azurite() {
    let az = Azurite::start();
    let cases = LEASE_CASES.iter().enumerate().map(|(i, (name, case))| {
        let az = &az;
        async move {
            eprintln!("blob lease contract: {name}");
            let url = fresh_container(az, &format!("lease-{i}")).await;
            case(
                blob_store(url, BlobStateStoreOptions::default()),
                Duration::from_secs(15),
            )
            .await;
        }
    });
    futures::future::join_all(cases).await;
}

#[tokio::test]
async fn blob_list_follows_pages_and_errors_hide_the_sas() {
    let az = Azurite::start();
    let url = fresh_container(&az, "paging").await;
    // The emulator-down check below would otherwise sit through the SDK's retry back-off.
    let client_options = ClientOptions {
        retry: RetryOptions::none(),
        ..Default::default()
    };
    let s = blob_store(
        url.clone(),
        BlobStateStoreOptions {
            list_page_size: Some(2),
            client_options,
        },
    );
    let mut want = Vec::new();
    for i in (0..7).rev() {
        let key = format!("deadletters/q/m{i}.json");
        s.create(&key, b"{}").await.expect("create");
        want.push(key);
    }
    s.create("deadletters/r/other.json", b"{}")
        .await
        .expect("create");
    want.sort();
    assert_eq!(
        s.list("deadletters/q/").await.expect("list"),
        want,
        "7 keys over 4 pages"
    );

    let sig = url
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .expect("sig in SAS");

    // A container that does not exist: an error, with a hint and without the SAS.
    let missing = blob_store(
        az.container_sas_url("no-such-container"),
        Default::default(),
    );
    let err = missing
        .get("a.json")
        .await
        .expect_err("container is missing");
    let text = err.to_string();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    assert!(text.contains("ContainerNotFound"), "{text}");
    assert!(!text.contains("sig=") && !text.contains("se="), "{text}");

    // A SAS signed with the wrong key: 403, and neither signature appears.
    let wrong_key = azure_core::base64::encode([7u8; 64]);
    let forged = az.container_sas_url_signed_with("paging", &wrong_key);
    let forged_sig = forged
        .query_pairs()
        .find(|(k, _)| k == "sig")
        .map(|(_, v)| v.into_owned())
        .expect("sig");
    let denied = blob_store(forged, Default::default());
    for err in [
        denied
            .get("deadletters/q/m0.json")
            .await
            .expect_err("forbidden")
            .to_string(),
        denied
            .create("x.json", b"1")
            .await
            .expect_err("forbidden")
            .to_string(),
        denied.list("").await.expect_err("forbidden").to_string(),
    ] {
        assert!(err.contains("403"), "{err}");
        assert!(!err.contains(&forged_sig) && !err.contains(&sig), "{err}");
        assert!(!err.contains("sig="), "{err}");
    }

    // Azurite down: a connection error, still without the SAS.
    let port = az.port();
    drop(az);
    let err = s
        .get("deadletters/q/m0.json")
        .await
        .expect_err("emulator stopped");
    let text = err.to_string();
    assert!(matches!(err, StateError::Unavailable(_)), "{err:?}");
    assert!(!text.contains(&sig) && !text.contains("sig="), "{text}");
    eprintln!("error text with emulator on port {port} stopped: {text}");
}
