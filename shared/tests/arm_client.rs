//! Wire-level behaviour of the ARM client against wiremock: retries, Retry-After, LROs, error
//! classification, token failures, pacing, path safety, paging.

use ade_backup_shared::arm::lro::PollOutcome;
use ade_backup_shared::arm::pacing::{BucketKey, RequestClass};
use ade_backup_shared::arm::{
    ArmClient, ArmClientOptions, ArmError, GraphScope, ManagementGroupId, PacingPolicy,
    PendingOperation, RetryPolicy, SubscriptionId, VmExtension,
};
use ade_backup_shared::credential::{AccessToken, CredentialError, StaticToken, TokenSource};
use ade_backup_shared::ids::ResourceId;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SUB: &str = "00000000-0000-0000-0000-000000000001";
const VM: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-1";
const VAULT: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv1";
const KV: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv1";
const ITEM_PATH: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.RecoveryServices/vaults/rsv1/backupFabrics/Azure/protectionContainers/iaasvmcontainer;iaasvmcontainerv2;rg-app;vm-1/protectedItems/vm;iaasvmcontainerv2;rg-app;vm-1";
const TOKEN: &str = "test-bearer-SECRET";

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_elapsed: Duration::from_secs(10),
        max_retry_after: Duration::from_secs(2),
    }
}

fn options(retry: RetryPolicy, pacing: PacingPolicy) -> ArmClientOptions {
    ArmClientOptions {
        retry,
        pacing,
        request_timeout: Duration::from_secs(5),
        default_poll_interval: Duration::from_millis(10),
        ..ArmClientOptions::default()
    }
}

fn client_with(server: &MockServer, opts: ArmClientOptions) -> ArmClient {
    let endpoint = url::Url::parse(&server.uri()).expect("mock uri");
    ArmClient::new(
        endpoint,
        Arc::new(StaticToken(AccessToken::new(TOKEN))),
        opts,
    )
    .expect("client")
}

fn client(server: &MockServer) -> ArmClient {
    client_with(server, options(fast_retry(4), PacingPolicy::disabled()))
}

fn vm() -> ResourceId {
    ResourceId::parse(VM).expect("vm id")
}
fn vault() -> ResourceId {
    ResourceId::parse(VAULT).expect("vault id")
}

fn vm_body() -> serde_json::Value {
    json!({"id": VM, "name": "vm-1", "location": "westeurope", "properties": {"storageProfile": {"osDisk": {"osType": "Linux"}}}})
}

fn arm_error(code: &str, message: &str) -> serde_json::Value {
    json!({"error": {"code": code, "message": message}})
}

async fn received(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .map(|r| r.len())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn retries_transient_errors_up_to_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(arm_error("ServiceUnavailable", "busy")),
        )
        .mount(&server)
        .await;
    let c = client_with(&server, options(fast_retry(3), PacingPolicy::disabled()));
    let err = c.get_virtual_machine(&vm()).await.expect_err("fails");
    assert!(
        matches!(
            err,
            ArmError::Transient {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(err.code(), Some("ServiceUnavailable"));
    assert_eq!(received(&server).await, 3, "exactly max_attempts requests");
    let stats = c.stats();
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.calls.get("compute.vm.get"), Some(&3));
}

#[tokio::test]
async fn recovers_after_transient_failures_and_sends_bearer_and_api_version() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .and(query_param("api-version", "2024-07-01"))
        .and(query_param("$expand", "instanceView"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(vm_body()))
        .with_priority(5)
        .mount(&server)
        .await;
    for status in [500u16, 502] {
        Mock::given(method("GET"))
            .and(path(VM))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    let got = c
        .get_virtual_machine(&vm())
        .await
        .expect("succeeds on third try");
    assert_eq!(got.name.as_deref(), Some("vm-1"));
    assert_eq!(received(&server).await, 3);
    assert_eq!(c.stats().retries, 2);
}

#[tokio::test]
async fn retry_after_is_honoured_and_429s_are_counted() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(ResponseTemplate::new(200).set_body_json(vm_body()))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0.4")
                .set_body_json(arm_error("TooManyRequests", "slow down")),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let start = Instant::now();
    c.get_virtual_machine(&vm())
        .await
        .expect("succeeds after waiting");
    let waited = start.elapsed();
    // Jittered backoff alone would be <= 5 ms; only Retry-After explains the wait.
    assert!(
        waited >= Duration::from_millis(380),
        "waited only {waited:?}"
    );
    let stats = c.stats();
    assert_eq!(stats.throttled, 1);
    assert_eq!(stats.retries, 1);
}

#[tokio::test]
async fn retry_after_longer_than_the_cap_is_returned_as_throttled() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c.get_virtual_machine(&vm()).await.expect_err("throttled");
    match err {
        ArmError::Throttled { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)))
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(received(&server).await, 1);
}

#[tokio::test]
async fn backup_now_is_not_retried_on_503() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{ITEM_PATH}/backup")))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c
        .begin_backup_now(&vault(), &vm(), None)
        .await
        .expect_err("503");
    assert!(err.is_transient());
    assert_eq!(
        received(&server).await,
        1,
        "a non-idempotent POST is sent once"
    );
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn restore_is_not_retried_on_connection_failure() {
    // A socket bound but never listening holds a port that refuses connections for the whole
    // test (wiremock pools its servers, so a dropped MockServer may still answer, and a released
    // port may be taken by a parallel test's server).
    let holder = tokio::net::TcpSocket::new_v4().expect("socket");
    holder
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let port = holder.local_addr().expect("addr").port();
    let c = ArmClient::new(
        url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url"),
        Arc::new(StaticToken(AccessToken::new(TOKEN))),
        options(fast_retry(4), PacingPolicy::disabled()),
    )
    .expect("client");
    let sa = ResourceId::parse("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-bk/providers/Microsoft.Storage/storageAccounts/stage1").expect("sa");
    let req = ade_backup_shared::arm::RestoreDisksRequest::new("123", &vm(), "westeurope", &sa)
        .expect("request");
    let err = c
        .begin_restore(&vault(), &vm(), &req)
        .await
        .expect_err("no server");
    assert!(
        matches!(err, ArmError::Transient { status: None, .. }),
        "{err:?}"
    );
    assert_eq!(c.stats().retries, 0);
    assert_eq!(c.stats().calls.get("recoveryServices.restore"), Some(&1));
    drop(holder);
}

#[tokio::test]
async fn safe_post_refresh_containers_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "{VAULT}/backupFabrics/Azure/refreshContainers"
        )))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "{VAULT}/backupFabrics/Azure/refreshContainers"
        )))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let pending = c.begin_refresh_containers(&vault()).await.expect("retried");
    assert!(
        pending.is_none(),
        "200 without LRO headers completes synchronously"
    );
    assert_eq!(received(&server).await, 2);
}

// ------------------------------------------------------------------------------------------
// Long-running operations

#[tokio::test]
async fn extension_put_follows_azure_async_operation() {
    let server = MockServer::start().await;
    let ext_path = format!("{VM}/extensions/AzureDiskEncryptionForLinux");
    let op_url = format!("{}/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/op1?api-version=2024-07-01", server.uri());
    Mock::given(method("PUT"))
        .and(path(ext_path.as_str()))
        .and(body_partial_json(json!({"properties": {"publisher": "Microsoft.Azure.Security", "type": "AzureDiskEncryptionForLinux"}})))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("Azure-AsyncOperation", op_url.as_str())
                .set_body_json(json!({"name": "AzureDiskEncryptionForLinux", "properties": {"provisioningState": "Creating"}})),
        )
        .mount(&server)
        .await;
    let op_path = format!(
        "/subscriptions/{SUB}/providers/Microsoft.Compute/locations/westeurope/operations/op1"
    );
    Mock::given(method("GET"))
        .and(path(op_path.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "Succeeded"})))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(op_path.as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Retry-After", "0")
                .set_body_json(json!({"status": "InProgress"})),
        )
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(ext_path.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": "AzureDiskEncryptionForLinux",
            "properties": {"publisher": "Microsoft.Azure.Security", "type": "AzureDiskEncryptionForLinux", "provisioningState": "Succeeded", "settings": {"VolumeType": "Data"}}
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let settings = ade_backup_shared::arm::AdeExtensionSettings {
        key_vault_url: Some("https://kv1.vault.azure.net/".into()),
        key_vault_resource_id: Some(KV.into()),
        volume_type: Some("Data".into()),
        ..Default::default()
    };
    let body = VmExtension::ade("westeurope", "Linux", &settings, None).expect("body");
    let ext = c
        .put_vm_extension_and_wait(
            &vm(),
            "AzureDiskEncryptionForLinux",
            &body,
            Duration::from_secs(5),
        )
        .await
        .expect("provisioned");
    assert_eq!(
        ext.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    assert_eq!(c.stats().calls.get("lro.poll"), Some(&3));
}

#[tokio::test]
async fn refresh_containers_follows_location_until_204() {
    let server = MockServer::start().await;
    let result_path = format!("{VAULT}/backupFabrics/Azure/operationResults/r1");
    Mock::given(method("POST"))
        .and(path(format!(
            "{VAULT}/backupFabrics/Azure/refreshContainers"
        )))
        .and(query_param(
            "$filter",
            "backupManagementType eq 'AzureIaasVM'",
        ))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(
                    "Location",
                    format!("{}{result_path}?api-version=2023-04-01", server.uri()).as_str(),
                )
                .insert_header("Retry-After", "0"),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(result_path.as_str()))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(result_path.as_str()))
        .respond_with(ResponseTemplate::new(202).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let pending = c
        .begin_refresh_containers(&vault())
        .await
        .expect("started")
        .expect("202 gives an operation");
    assert_eq!(pending.kind, ade_backup_shared::arm::PollKind::Location);
    c.wait(pending, Duration::from_secs(5)).await.expect("done");
    assert_eq!(c.stats().calls.get("lro.poll"), Some(&2));
}

#[tokio::test]
async fn failed_async_operation_carries_the_error_code() {
    let server = MockServer::start().await;
    let status_path = format!("{ITEM_PATH}/operationsStatus/s1");
    Mock::given(method("PUT"))
        .and(path(ITEM_PATH))
        .and(body_partial_json(json!({"properties": {"protectedItemType": "Microsoft.Compute/virtualMachines", "sourceResourceId": VM}})))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("Azure-AsyncOperation", format!("{}{status_path}?api-version=2023-04-01", server.uri()).as_str()),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(status_path.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "s1", "name": "s1", "status": "Failed",
            "error": {"code": "UserErrorKeyVaultPermissionsNotConfigured", "message": "Backup doesn't have sufficient permissions on the key vault"}
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let policy = vault()
        .child("backupPolicies", "DefaultPolicy")
        .expect("policy id");
    let err = c
        .protect_vm_and_wait(&vault(), &vm(), &policy, Duration::from_secs(5))
        .await
        .expect_err("fails");
    assert!(matches!(err, ArmError::OperationFailed { .. }), "{err:?}");
    assert_eq!(
        err.code(),
        Some("UserErrorKeyVaultPermissionsNotConfigured")
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn backup_now_pending_operation_survives_a_message_and_yields_the_job_id() {
    let server = MockServer::start().await;
    // Only a Location header: the client polls the operationsStatus twin for the job id.
    Mock::given(method("POST"))
        .and(path(format!("{ITEM_PATH}/backup")))
        .and(body_partial_json(
            json!({"properties": {"objectType": "IaasVMBackupRequest"}}),
        ))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header(
                    "Location",
                    format!(
                        "{}{ITEM_PATH}/operationResults/op9?api-version=2023-04-01",
                        server.uri()
                    )
                    .as_str(),
                )
                .insert_header("Retry-After", "60"),
        )
        .mount(&server)
        .await;
    let status_path = format!("{ITEM_PATH}/operationsStatus/op9");
    Mock::given(method("GET"))
        .and(path(status_path.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "op9", "name": "op9", "status": "Succeeded",
            "properties": {"objectType": "OperationStatusJobExtendedInfo", "jobId": "41f3e94b-ae6b-4a20-b422-65abfcaf03e5"}
        })))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(status_path.as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "op9", "status": "InProgress"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let pending = c
        .begin_backup_now(&vault(), &vm(), None)
        .await
        .expect("started");
    assert_eq!(pending.retry_after, Some(Duration::from_secs(60)));
    assert!(pending.poll_url.path().ends_with("/operationsStatus/op9"));

    // A handler stores it in a follow-up message; a later invocation polls once.
    let wire = serde_json::to_string(&pending).expect("serialize");
    let restored: PendingOperation = serde_json::from_str(&wire).expect("deserialize");
    assert_eq!(restored, pending);
    match c.poll_once(&restored).await.expect("poll 1") {
        PollOutcome::Pending(p) => assert_eq!(p.poll_url, pending.poll_url),
        other => panic!("expected pending, got {other:?}"),
    }
    match c.poll_once(&restored).await.expect("poll 2") {
        PollOutcome::Done(d) => {
            assert_eq!(
                d.job_id.as_deref(),
                Some("41f3e94b-ae6b-4a20-b422-65abfcaf03e5")
            )
        }
        other => panic!("expected done, got {other:?}"),
    }
}

#[tokio::test]
async fn lro_wait_respects_its_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ops/slow"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "InProgress"})))
        .mount(&server)
        .await;
    let c = client(&server);
    let p = PendingOperation {
        operation: "test".into(),
        poll_url: url::Url::parse(&format!("{}/ops/slow", server.uri())).expect("url"),
        kind: ade_backup_shared::arm::PollKind::AzureAsyncOperation,
        retry_after: None,
    };
    let err = c
        .wait(p, Duration::from_millis(100))
        .await
        .expect_err("times out");
    assert!(matches!(err, ArmError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn poll_urls_on_another_origin_are_refused() {
    let server = MockServer::start().await;
    let other = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{ITEM_PATH}/backup")))
        .respond_with(ResponseTemplate::new(202).insert_header(
            "Azure-AsyncOperation",
            format!("{}/steal", other.uri()).as_str(),
        ))
        .mount(&server)
        .await;
    let c = client(&server);
    let err = c
        .begin_backup_now(&vault(), &vm(), None)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ArmError::InvalidInput {
                field: "pollUrl",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        received(&other).await,
        0,
        "the token never went to the other host"
    );
}

// ------------------------------------------------------------------------------------------
// Error classification and credentials

#[tokio::test]
async fn errors_are_classified_with_azure_codes() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(KV))
        .respond_with(ResponseTemplate::new(403).set_body_json(arm_error(
            "AuthorizationFailed",
            "The client does not have authorization to perform action 'Microsoft.KeyVault/vaults/read'",
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(ResponseTemplate::new(404).set_body_json(arm_error(
            "ResourceNotFound",
            "The Resource 'Microsoft.Compute/virtualMachines/vm-1' was not found.",
        )))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(ITEM_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {"code": "UserErrorKeyVaultPermissionsNotConfigured", "message": "Azure Backup Service does not have sufficient permissions to Key Vault"}
        })))
        .mount(&server)
        .await;
    let c = client(&server);

    let kv = ResourceId::parse(KV).expect("kv");
    let mut seen = Vec::new();
    let e = c.get_key_vault(&kv).await.expect_err("403");
    assert!(
        matches!(e, ArmError::Permanent { status: 403, .. }),
        "{e:?}"
    );
    assert_eq!(e.code(), Some("AuthorizationFailed"));
    assert!(e.to_string().contains("Microsoft.KeyVault/vaults/read"));
    seen.push(e);

    let e = c.get_virtual_machine(&vm()).await.expect_err("404");
    assert!(e.is_not_found());
    assert_eq!(e.code(), Some("ResourceNotFound"));
    seen.push(e);

    let policy = vault()
        .child("backupPolicies", "DefaultPolicy")
        .expect("policy");
    let e = c
        .begin_protect_vm(&vault(), &vm(), &policy)
        .await
        .expect_err("400");
    assert_eq!(e.code(), Some("UserErrorKeyVaultPermissionsNotConfigured"));
    assert!(!e.is_transient());
    assert_eq!(
        received(&server).await,
        3,
        "permanent errors are not retried"
    );
    seen.push(e);
    for err in &seen {
        assert!(!format!("{err} {err:?}").contains(TOKEN), "token leaked");
    }
}

struct FailingToken;

#[async_trait]
impl TokenSource for FailingToken {
    async fn token(&self, scope: &str) -> Result<AccessToken, CredentialError> {
        Err(CredentialError::Unavailable {
            scope: scope.to_string(),
            reason: "managed identity endpoint not reachable".into(),
        })
    }
}

#[tokio::test]
async fn token_failure_is_surfaced_and_nothing_is_sent() {
    let server = MockServer::start().await;
    let c = ArmClient::new(
        url::Url::parse(&server.uri()).expect("uri"),
        Arc::new(FailingToken),
        options(fast_retry(4), PacingPolicy::disabled()),
    )
    .expect("client");
    let err = c.get_virtual_machine(&vm()).await.expect_err("no token");
    assert!(matches!(err, ArmError::Auth(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("https://management.azure.com/.default"),
        "{msg}"
    );
    assert!(
        msg.contains("managed identity endpoint not reachable"),
        "{msg}"
    );
    assert_eq!(received(&server).await, 0);
    assert_eq!(c.stats().retries, 0, "auth failures are not retried");
}

// ------------------------------------------------------------------------------------------
// Pacing

#[tokio::test]
async fn pacing_holds_requests_to_a_tiny_bucket() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(ResponseTemplate::new(200).set_body_json(vm_body()))
        .mount(&server)
        .await;
    let c = client_with(
        &server,
        options(fast_retry(1), PacingPolicy::uniform(2.0, 10.0)),
    );
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..6 {
        let c = c.clone();
        handles.push(tokio::spawn(
            async move { c.get_virtual_machine(&vm()).await },
        ));
    }
    for h in handles {
        h.await.expect("join").expect("call ok");
    }
    let elapsed = start.elapsed();
    // 2 from the burst, then 4 at 10/s: the last one may not start before ~0.4 s.
    assert!(
        elapsed >= Duration::from_millis(350),
        "took only {elapsed:?}"
    );
    assert_eq!(received(&server).await, 6);
    let stats = c.stats();
    assert_eq!(stats.calls.get("compute.vm.get"), Some(&6));
    // Four calls find the burst spent; on a very slow machine one may find a refilled token.
    assert!(
        (3..=4).contains(&stats.paced),
        "calls that waited: {}",
        stats.paced
    );
}

#[tokio::test]
async fn ratelimit_remaining_header_lowers_the_bucket() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-ms-ratelimit-remaining-subscription-reads", "3")
                .set_body_json(vm_body()),
        )
        .mount(&server)
        .await;
    let c = client_with(&server, options(fast_retry(1), PacingPolicy::default()));
    c.get_virtual_machine(&vm()).await.expect("ok");
    let key = BucketKey::Subscription(
        SubscriptionId::parse(SUB).expect("sub"),
        RequestClass::Reads,
    );
    let tokens = c.pacer().tokens(key).expect("bucket exists");
    assert!(
        tokens < 4.0,
        "bucket should follow ARM's remaining count, has {tokens}"
    );
    let writes = BucketKey::Subscription(
        SubscriptionId::parse(SUB).expect("sub"),
        RequestClass::Writes,
    );
    assert!(
        c.pacer().tokens(writes).is_none(),
        "other buckets untouched"
    );
}

// ------------------------------------------------------------------------------------------
// Path safety

#[tokio::test]
async fn paths_cannot_be_injected() {
    let server = MockServer::start().await;
    let c = client(&server);
    for bad in [
        "../../providers/Microsoft.Authorization/roleAssignments/x",
        "a/b",
        "x?api-version=1",
        "a%2fb",
        "",
    ] {
        let err = c.get_vm_extension(&vm(), bad).await.expect_err(bad);
        assert!(
            matches!(err, ArmError::InvalidInput { .. }),
            "{bad}: {err:?}"
        );
        let err = c.get_backup_job(&vault(), bad).await.expect_err(bad);
        assert!(
            matches!(err, ArmError::InvalidInput { .. }),
            "{bad}: {err:?}"
        );
    }
    // A key vault id is not accepted where a VM id is expected.
    let kv = ResourceId::parse(KV).expect("kv");
    let err = c.get_virtual_machine(&kv).await.expect_err("wrong type");
    assert!(
        matches!(err, ArmError::InvalidInput { field: "vmId", .. }),
        "{err:?}"
    );
    assert!(ResourceId::parse(&format!("{VM}/../../other")).is_err());
    assert_eq!(received(&server).await, 0);
}

// ------------------------------------------------------------------------------------------
// Paging

#[tokio::test]
async fn resource_graph_follows_skip_token() {
    let server = MockServer::start().await;
    let rg_path = "/providers/Microsoft.ResourceGraph/resources";
    Mock::given(method("POST"))
        .and(path(rg_path))
        .and(query_param("api-version", "2022-10-01"))
        .and(body_partial_json(
            json!({"options": {"$skipToken": "page2"}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalRecords": 3, "count": 1, "data": [{"id": "c", "name": "c"}]
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(rg_path))
        .and(body_partial_json(json!({
            "subscriptions": [SUB],
            "query": ade_backup_shared::arm::queries::VIRTUAL_MACHINES,
            "options": {"$top": 1000, "resultFormat": "objectArray"}
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalRecords": 3, "count": 2, "data": [{"id": "a", "name": "a"}, {"id": "b", "name": "b"}], "$skipToken": "page2"
        })))
        .with_priority(5)
        .mount(&server)
        .await;
    let c = client(&server);
    let subs = GraphScope::Subscriptions(vec![SubscriptionId::parse(SUB).expect("sub")]);
    let rows = c
        .resource_graph_query(&subs, ade_backup_shared::arm::queries::VIRTUAL_MACHINES)
        .await
        .expect("rows");
    let ids: Vec<_> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(received(&server).await, 2);
    let typed: Vec<ade_backup_shared::arm::GraphRow> = c
        .resource_graph_query_as(&subs, ade_backup_shared::arm::queries::VIRTUAL_MACHINES)
        .await
        .expect("typed rows");
    assert_eq!(typed.len(), 3);
}

/// Management-group scope: `managementGroups` instead of `subscriptions` (example
/// `ResourcesMgBasicQuery.json`); names are validated before they reach the body.
#[tokio::test]
async fn resource_graph_scopes_by_management_group() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/providers/Microsoft.ResourceGraph/resources"))
        .and(body_partial_json(json!({
            "managementGroups": ["mg-prod", "ProductionMG"],
            "query": ade_backup_shared::arm::queries::KEY_VAULTS,
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "totalRecords": 1, "count": 1, "data": [{"id": "kv"}]
        })))
        .mount(&server)
        .await;
    let c = client(&server);
    let scope = GraphScope::ManagementGroups(vec![
        ManagementGroupId::parse("mg-prod").expect("mg"),
        ManagementGroupId::parse("/providers/Microsoft.Management/managementGroups/ProductionMG")
            .expect("mg id"),
    ]);
    let rows = c
        .resource_graph_query(&scope, ade_backup_shared::arm::queries::KEY_VAULTS)
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1);
    let requests = server.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).expect("json body");
    assert!(body.get("subscriptions").is_none(), "{body}");
    for bad in ["", "ends.", "has space", "a'b"] {
        assert!(ManagementGroupId::parse(bad).is_err(), "{bad:?}");
    }
    let empty = GraphScope::ManagementGroups(vec![]);
    assert!(c
        .resource_graph_query(&empty, ade_backup_shared::arm::queries::KEY_VAULTS)
        .await
        .is_err());
}

#[tokio::test]
async fn lists_follow_next_link() {
    let server = MockServer::start().await;
    let list_path = format!("{VAULT}/backupProtectedItems");
    Mock::given(method("GET"))
        .and(path(list_path.as_str()))
        .and(query_param("$skiptoken", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [{"name": "i2"}]})))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(list_path.as_str()))
        .and(query_param(
            "$filter",
            "backupManagementType eq 'AzureIaasVM' and itemType eq 'VM'",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{"name": "i1"}],
            "nextLink": format!("{}{list_path}?api-version=2023-04-01&$skiptoken=2", server.uri())
        })))
        .with_priority(5)
        .mount(&server)
        .await;
    let c = client(&server);
    let items = c.list_protected_items(&vault()).await.expect("items");
    let names: Vec<_> = items.iter().filter_map(|i| i.name.as_deref()).collect();
    assert_eq!(names, ["i1", "i2"]);
}

// ------------------------------------------------------------------------------------------
// Graph, Key Vault and authorization bodies

#[tokio::test]
async fn graph_lookup_uses_graph_endpoint_and_scope() {
    let arm = MockServer::start().await;
    let graph = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/servicePrincipals(appId='262044b1-e2ce-469f-a196-69ab7ada62d3')"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "9a1c7b3e-0000-4000-8000-000000000042", "appId": "262044b1-e2ce-469f-a196-69ab7ada62d3", "displayName": "Backup Management Service"
        })))
        .mount(&graph)
        .await;

    struct ScopeCheck;
    #[async_trait]
    impl TokenSource for ScopeCheck {
        async fn token(&self, scope: &str) -> Result<AccessToken, CredentialError> {
            if scope == "https://graph.microsoft.com/.default" {
                Ok(AccessToken::new("graph-token"))
            } else {
                Err(CredentialError::Unavailable {
                    scope: scope.into(),
                    reason: "wrong scope".into(),
                })
            }
        }
    }
    let mut opts = options(fast_retry(1), PacingPolicy::disabled());
    opts.graph_endpoint = url::Url::parse(&graph.uri()).expect("graph uri");
    let c = ArmClient::new(
        url::Url::parse(&arm.uri()).expect("arm"),
        Arc::new(ScopeCheck),
        opts,
    )
    .expect("client");
    let oid = c
        .service_principal_object_id(ade_backup_shared::arm::BACKUP_MANAGEMENT_SERVICE_APP_ID)
        .await
        .expect("object id");
    assert_eq!(oid.to_string(), "9a1c7b3e-0000-4000-8000-000000000042");
    assert_eq!(received(&arm).await, 0);
}

#[tokio::test]
async fn access_policy_add_and_role_assignment_bodies() {
    let server = MockServer::start().await;
    let oid = "9a1c7b3e-0000-4000-8000-000000000042";
    Mock::given(method("PUT"))
        .and(path(format!("{KV}/accessPolicies/add")))
        .and(query_param("api-version", "2023-07-01"))
        .and(body_partial_json(json!({"properties": {"accessPolicies": [{
            "objectId": oid, "permissions": {"keys": ["get", "list", "backup"], "secrets": ["get", "list", "backup"]}
        }]}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": format!("{KV}/accessPolicies/add"), "type": "Microsoft.KeyVault/vaults/accessPolicies",
            "properties": {"accessPolicies": [{"tenantId": SUB, "objectId": oid, "permissions": {"keys": ["get","list","backup"], "secrets": ["get","list","backup"]}}]}
        })))
        .mount(&server)
        .await;
    let assignment = uuid::Uuid::from_u128(7);
    Mock::given(method("PUT"))
        .and(path(format!(
            "{KV}/providers/Microsoft.Authorization/roleAssignments/{assignment}"
        )))
        .and(query_param("api-version", "2022-04-01"))
        .and(body_partial_json(
            json!({"properties": {"principalId": oid, "principalType": "ServicePrincipal"}}),
        ))
        .respond_with(ResponseTemplate::new(409).set_body_json(arm_error(
            "RoleAssignmentExists",
            "The role assignment already exists.",
        )))
        .mount(&server)
        .await;
    let c = client(&server);
    let kv = ResourceId::parse(KV).expect("kv");
    let policy = ade_backup_shared::arm::AccessPolicyEntry {
        tenant_id: SUB.into(),
        object_id: oid.into(),
        application_id: None,
        permissions: ade_backup_shared::arm::Permissions {
            keys: vec!["get".into(), "list".into(), "backup".into()],
            secrets: vec!["get".into(), "list".into(), "backup".into()],
            certificates: vec![],
        },
    };
    let r = c
        .add_key_vault_access_policies(&kv, &[policy])
        .await
        .expect("added");
    assert_eq!(r.properties.access_policies.len(), 1);

    let err = c
        .put_role_assignment(
            &kv,
            assignment,
            &ade_backup_shared::arm::RoleAssignmentProperties {
                role_definition_id: format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-00000000000a"),
                principal_id: oid.into(),
                principal_type: Some("ServicePrincipal".into()),
                scope: None,
            },
        )
        .await
        .expect_err("409");
    assert_eq!(err.code(), Some("RoleAssignmentExists"));
    assert_eq!(err.status(), Some(409));
}

#[tokio::test]
async fn per_request_timeout_is_retried_then_reported() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(vm_body())
                .set_delay(Duration::from_millis(800)),
        )
        .mount(&server)
        .await;
    let mut opts = options(fast_retry(2), PacingPolicy::disabled());
    opts.request_timeout = Duration::from_millis(150);
    let c = client_with(&server, opts);
    let err = c.get_virtual_machine(&vm()).await.expect_err("times out");
    assert!(matches!(err, ArmError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(c.stats().calls.get("compute.vm.get"), Some(&2), "one retry");
}

#[tokio::test]
async fn resource_graph_quota_header_lowers_the_tenant_bucket() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/providers/Microsoft.ResourceGraph/resources"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("x-ms-user-quota-remaining", "2")
                .insert_header("x-ms-user-quota-resets-after", "00:00:05")
                .set_body_json(json!({"totalRecords": 0, "count": 0, "data": []})),
        )
        .mount(&server)
        .await;
    let c = client_with(&server, options(fast_retry(1), PacingPolicy::default()));
    let subs = GraphScope::Subscriptions(vec![SubscriptionId::parse(SUB).expect("sub")]);
    let rows = c
        .resource_graph_query(&subs, ade_backup_shared::arm::queries::KEY_VAULTS)
        .await
        .expect("rows");
    assert!(rows.is_empty());
    let tokens = c
        .pacer()
        .tokens(BucketKey::Tenant(RequestClass::Reads))
        .expect("tenant bucket used");
    assert!(
        tokens < 3.0,
        "tenant bucket follows the quota header, has {tokens}"
    );
}

#[tokio::test]
async fn a_429_drains_the_local_bucket() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(ResponseTemplate::new(200).set_body_json(vm_body()))
        .with_priority(5)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(VM))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    // Refill 1 token/s: the retry waits ~1 s for its token, and the bucket stays below one token
    // for a second after it (a faster refill made this check depend on the machine's load).
    let c = client_with(
        &server,
        options(fast_retry(3), PacingPolicy::uniform(100.0, 1.0)),
    );
    c.get_virtual_machine(&vm()).await.expect("ok after retry");
    let key = BucketKey::Subscription(
        SubscriptionId::parse(SUB).expect("sub"),
        RequestClass::Reads,
    );
    let tokens = c.pacer().tokens(key).expect("bucket");
    assert!(
        tokens < 1.0,
        "bucket should be drained after a 429, has {tokens}"
    );
    assert_eq!(c.stats().throttled, 1);
}
