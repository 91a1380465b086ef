//! Wire format of the Key Vault data-plane client against wiremock: restore bodies (base64url),
//! the token's scope, 409 = already restored, 404 codes, 429 with `Retry-After` retried by the
//! one policy, 401 challenges answered with a fresh token only for the Key Vault resource, and
//! secret values that never print.

use ade_backup_shared::arm::RetryPolicy;
use ade_backup_shared::credential::{AccessToken, CredentialError, TokenSource, KEY_VAULT_SCOPE};
use ade_backup_shared::keyvault::{KeyVaultClient, KeyVaultClientOptions, Restored};
use async_trait::async_trait;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const VAULT: &str = "https://kv-app.vault.azure.net/";

/// Hands out `token-1`, `token-2`, ... and records the scopes asked for.
#[derive(Default)]
struct CountingTokens(Mutex<Vec<String>>);

#[async_trait]
impl TokenSource for CountingTokens {
    async fn token(&self, scope: &str) -> Result<AccessToken, CredentialError> {
        let mut s = self.0.lock().expect("lock");
        s.push(scope.to_string());
        Ok(AccessToken::new(format!("token-{}", s.len())))
    }
}

fn client(server: &MockServer, tokens: Arc<CountingTokens>) -> KeyVaultClient {
    let options = KeyVaultClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(2),
        },
        request_timeout: Duration::from_secs(5),
        endpoint: Some(url::Url::parse(&format!("{}/", server.uri())).expect("endpoint")),
        ..KeyVaultClientOptions::default()
    };
    KeyVaultClient::new(VAULT, tokens, options).expect("client")
}

fn kv_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"code": code, "message": format!("{code} from the mock")}}))
}

#[tokio::test]
async fn restore_key_posts_the_backup_as_base64url_with_a_key_vault_token() {
    let server = MockServer::start().await;
    // bytes 0xfb 0xff 0xfe: standard base64 "+//+", base64url without padding "-__-".
    let backup = [0xfbu8, 0xff, 0xfe];
    Mock::given(method("POST"))
        .and(path("/kv-app/keys/restore"))
        .and(query_param("api-version", "7.5"))
        .and(header("authorization", "Bearer token-1"))
        .and(body_json(json!({"value": "-__-"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"key": {"kid": "https://kv-app.vault.azure.net/keys/kek-1/v1", "kty": "RSA"}, "attributes": {"enabled": true}}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let tokens = Arc::new(CountingTokens::default());
    let out = client(&server, tokens.clone())
        .restore_key(&backup)
        .await
        .expect("restored");
    assert_eq!(
        out,
        Restored::Restored {
            id: Some("https://kv-app.vault.azure.net/keys/kek-1/v1".into())
        }
    );
    assert_eq!(*tokens.0.lock().expect("lock"), [KEY_VAULT_SCOPE]);
}

#[tokio::test]
async fn restore_of_an_existing_secret_is_already_restored() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/kv-app/secrets/restore"))
        .respond_with(kv_error(409, "Conflict"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, Arc::default());
    assert_eq!(
        c.restore_secret(b"blob").await.expect("409"),
        Restored::AlreadyExists
    );
    let empty = c.restore_secret(b"").await.expect_err("empty");
    assert!(empty.to_string().contains("empty"), "{empty}");
}

#[tokio::test]
async fn a_missing_secret_is_not_found_with_key_vaults_code() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/kv-app/secrets/aad-secret/0123abcd"))
        .respond_with(kv_error(404, "SecretNotFound"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/kv-app/keys/restore"))
        .respond_with(kv_error(400, "BadParameter"))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, Arc::default());
    let e = c
        .get_secret("aad-secret", Some("0123abcd"))
        .await
        .expect_err("404");
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.code(), Some("SecretNotFound"));
    let e = c.restore_key(b"tampered").await.expect_err("400");
    assert_eq!((e.status(), e.code()), (Some(400), Some("BadParameter")));
    assert!(!e.is_transient());
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after_by_the_one_policy() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/kv-app/secrets/aad-secret"))
        .respond_with(kv_error(429, "Throttled").insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/kv-app/secrets/aad-secret"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"value": "s3cr3t-value", "id": "https://kv-app.vault.azure.net/secrets/aad-secret/v2"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let v = client(&server, Arc::default())
        .get_secret("aad-secret", None)
        .await
        .expect("after the 429");
    assert_eq!(v.expose(), "s3cr3t-value");
    assert!(!format!("{v:?}").contains("s3cr3t"));
}

#[tokio::test]
async fn a_401_challenge_for_key_vault_gets_one_fresh_token() {
    let server = MockServer::start().await;
    let challenge = r#"Bearer authorization="https://login.windows.net/tenant", resource="https://vault.azure.net""#;
    Mock::given(method("GET"))
        .and(path("/kv-app/secrets/s"))
        .and(header("authorization", "Bearer token-1"))
        .respond_with(kv_error(401, "Unauthorized").insert_header("WWW-Authenticate", challenge))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/kv-app/secrets/s"))
        .and(header("authorization", "Bearer token-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": "v"})))
        .expect(1)
        .mount(&server)
        .await;
    let tokens = Arc::new(CountingTokens::default());
    let c = client(&server, tokens.clone());
    assert_eq!(
        c.get_secret("s", None).await.expect("fresh token").expose(),
        "v"
    );
    assert_eq!(tokens.0.lock().expect("lock").len(), 2);
}

#[tokio::test]
async fn a_401_challenge_naming_another_resource_gets_no_token() {
    let server = MockServer::start().await;
    let challenge = r#"Bearer authorization="https://login.windows.net/tenant", resource="https://evil.example""#;
    Mock::given(method("GET"))
        .and(path("/kv-app/secrets/s"))
        .respond_with(kv_error(401, "Unauthorized").insert_header("WWW-Authenticate", challenge))
        .expect(1)
        .mount(&server)
        .await;
    let tokens = Arc::new(CountingTokens::default());
    let e = client(&server, tokens.clone())
        .get_secret("s", None)
        .await
        .expect_err("refused");
    assert!(e.is_forbidden(), "{e:?}");
    assert_eq!(tokens.0.lock().expect("lock").len(), 1, "no second token");
}

#[tokio::test]
async fn names_that_would_leave_the_vault_path_are_refused_before_sending() {
    let server = MockServer::start().await;
    let c = client(&server, Arc::default());
    for bad in ["../keys", "a/b", "x?y"] {
        let e = c.get_secret(bad, None).await.expect_err(bad);
        assert!(e.to_string().contains("letters, digits"), "{bad}: {e}");
    }
    assert!(server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}
