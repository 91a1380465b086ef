mod common;

use ade_backup_sim::{Fleet, SimOptions};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_throttled_at_arm_bucket_sizes() {
    let h = Harness::start(Fleet::sample(), SimOptions::default()).await;
    let path = vm_id(S1, "rg-app-web", "web-win-01");
    let url = h.url(&path, "2024-07-01");
    let started = std::time::Instant::now();
    let burst =
        futures::future::join_all((0..300).map(|_| h.send(reqwest::Method::GET, &url, None))).await;
    // The bucket refills at 25 reads/s of real time while the burst is served: on a loaded
    // machine the burst takes longer, so the bound is the bucket plus what refilled meanwhile.
    let refilled = (started.elapsed().as_secs_f64() * 25.0).ceil() as usize;
    let ok = burst.iter().filter(|r| r.0 == 200).count();
    let throttled: Vec<_> = burst.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok + throttled.len(), 300);
    let emptied = std::time::Instant::now();
    assert!(
        ok >= 250 && ok <= 250 + refilled,
        "the 250-read bucket plus {refilled} refilled succeed, got {ok}"
    );
    assert!(!throttled.is_empty(), "a 300-read burst is throttled");
    for (_, headers, body) in &throttled {
        let retry: u64 = header(headers, "retry-after")
            .parse()
            .expect("Retry-After is a number");
        assert!(retry >= 1);
        assert_eq!(
            header(headers, "x-ms-ratelimit-remaining-subscription-reads"),
            "0"
        );
        assert_eq!(body["error"]["code"], "TooManyRequests");
    }
    let remaining: Vec<u64> = burst
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| {
            header(&r.1, "x-ms-ratelimit-remaining-subscription-reads")
                .parse()
                .expect("remaining header")
        })
        .collect();
    assert!(remaining.contains(&0) || remaining.iter().min().copied().unwrap_or(99) <= 6);

    // Another subscription has its own bucket.
    let (s, _, _) = h
        .get(&vm_id(S2, "rg-erp", "erp-win-01"), "2024-07-01")
        .await;
    assert_eq!(s, 200);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let after =
        futures::future::join_all((0..100).map(|_| h.send(reqwest::Method::GET, &url, None))).await;
    let ok = after.iter().filter(|r| r.0 == 200).count();
    // At least the second of sleep refilled 25; at most what the time since the bucket ran dry
    // refilled (plus the fraction of a token a throttled bucket may hold).
    let most = (emptied.elapsed().as_secs_f64() * 25.0).ceil() as usize + 1;
    assert!(
        ok >= 25 && ok <= most,
        "25 reads refill per second: between 25 and {most}, got {ok}"
    );
    let stats = h.sim.stats();
    assert!(stats.throttled >= throttled.len() as u64);
    assert!(stats.calls("vm.get") >= 401);
}

#[tokio::test]
async fn writes_have_their_own_smaller_bucket_and_can_be_switched_off() {
    let h = Harness::start(Fleet::sample(), SimOptions::default()).await;
    let path = format!("{RSV_WEU}/backupFabrics/Azure/refreshContainers");
    let url = h.url(&path, RS_API);
    let started = std::time::Instant::now();
    let results = futures::future::join_all(
        (0..210).map(|_| h.send(reqwest::Method::POST, &url, Some(serde_json::json!({})))),
    )
    .await;
    let ok = results.iter().filter(|r| r.0 == 202).count();
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        ok >= 200 && ok <= 200 + refilled,
        "write bucket is 200 (+{refilled} refilled while served), got {ok}"
    );
    assert!(results.iter().filter(|r| r.0 == 202).all(|r| !header(
        &r.1,
        "x-ms-ratelimit-remaining-subscription-writes"
    )
    .is_empty()));
    h.sim.set_throttling(false);
    let (s, _, _) = h
        .send(reqwest::Method::POST, &url, Some(serde_json::json!({})))
        .await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn authentication_and_api_version_are_enforced() {
    let h = Harness::sample().await;
    let path = vm_id(S1, "rg-app-web", "web-win-01");
    let resp = h
        .client
        .get(h.url(&path, "2024-07-01"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    let (s, _, body) = h.get(&path, "2019-03-01").await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "NoRegisteredProviderFound");
    let (s, _, body) = h.get(&path, "yesterday").await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
    let (s, _, body) = h
        .send(reqwest::Method::GET, &format!("{}{path}", h.base), None)
        .await;
    assert_eq!(s, 400);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");
    // Paths are case-insensitive, as in ARM.
    let (s, _, vm) = h
        .get(
            &path.to_uppercase().replace("WEB-WIN-01", "web-win-01"),
            "2024-07-01",
        )
        .await;
    assert_eq!(s, 200, "{vm}");
    assert_eq!(vm["name"], "web-win-01");
}
