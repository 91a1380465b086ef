//! The contract suite (`ade_backup_shared::state::contract`, shared with the S3 store's tests in
//! lambda/) run against `MemoryStateStore`, `FsStateStore` (temp dirs) and `BlobStateStore` (Azurite; install with `npm ci` at the repository root — the blob tests fail,
//! never skip, without it). Plus store-specific tests: fs crash safety and multi-instance /
//! multi-process contention; blob paging and SAS-free error text.

mod support;

use ade_backup_shared::state::contract::{increment, Counter, Store, CASES, LEASE_CASES};
use ade_backup_shared::state::{
    json, BlobStateStore, BlobStateStoreOptions, FsStateStore, MemoryStateStore, StateError,
    StateStore,
};
use azure_core::http::{ClientOptions, RetryOptions};
use std::sync::Arc;
use std::time::Duration;
use support::azurite::Azurite;

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
