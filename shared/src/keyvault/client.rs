//! `KeyVaultClient`: configuration and the send path. Every request takes a token for the Key
//! Vault scope, is sent once per attempt, and its failure is classified exactly as the ARM
//! client classifies one (`crate::arm::classify`) so the one retry policy (`crate::arm::retry`)
//! decides what is repeated: 408/429/5xx/timeouts, honouring `Retry-After`. A `401` is answered
//! once per attempt with a fresh token, and only when its challenge names the Key Vault resource
//! (a challenge pointing elsewhere never gets a token).

use super::url::{VaultUrl, KEY_VAULT_DNS_SUFFIXES};
use super::KeyVaultError;
use crate::arm::retry::{self, AttemptError, Repeat, RetryPolicy};
use crate::arm::{classify, retry_after, ArmError};
use crate::credential::{TokenSource, KEY_VAULT_SCOPE};
use crate::http::{read_bounded, BodyError};
use base64::Engine;
use bytes::Bytes;
use reqwest::Method;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The data-plane api-version of every request (`stable/7.5`).
pub const KEY_VAULT_API_VERSION: &str = "7.5";

/// Client configuration. `Default` targets public Azure.
#[derive(Debug, Clone)]
pub struct KeyVaultClientOptions {
    pub retry: RetryPolicy,
    /// Per-attempt timeout (connect + response).
    pub request_timeout: Duration,
    /// Token scope (`https://vault.azure.net/.default`; sovereign clouds differ).
    pub scope: String,
    /// Vault hosts must end in one of these ([`KEY_VAULT_DNS_SUFFIXES`] by default).
    pub dns_suffixes: Vec<String>,
    /// Where `https://{vault}.vault.azure.net/…` is served instead: `{endpoint}/{vault}/…` (the
    /// simulator). `None` in Azure.
    pub endpoint: Option<Url>,
    /// Largest response body read (a secret is at most 25 KiB; a key or secret backup blob a
    /// few tens of KiB).
    pub max_response_bytes: usize,
    pub user_agent: String,
}

impl Default for KeyVaultClientOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(60),
            scope: KEY_VAULT_SCOPE.to_string(),
            dns_suffixes: KEY_VAULT_DNS_SUFFIXES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            endpoint: None,
            max_response_bytes: 1024 * 1024,
            user_agent: format!("ade-backup/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What a restore call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Restored now; `id` is the key's `kid` / the secret's `id` Key Vault answered with.
    Restored { id: Option<String> },
    /// `409 Conflict`: a key or secret of that name exists (an earlier attempt restored it, or
    /// someone put it back): nothing to do.
    AlreadyExists,
}

/// A secret's value: never printed, never serialized.
#[derive(Clone)]
pub struct SecretValue(String);

impl SecretValue {
    /// The value, for the one place that sends it on (an extension's `protectedSettings`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// A Key Vault data-plane client for one vault.
#[derive(Clone)]
pub struct KeyVaultClient {
    vault: VaultUrl,
    http: reqwest::Client,
    credential: Arc<dyn TokenSource>,
    options: KeyVaultClientOptions,
}

impl std::fmt::Debug for KeyVaultClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultClient")
            .field("vault", &self.vault.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize)]
struct RestoreBody {
    value: String,
}

impl KeyVaultClient {
    /// `vault_url`: `https://{vault}.vault.azure.net/` (rules: [`VaultUrl::parse`]).
    pub fn new(
        vault_url: &str,
        credential: Arc<dyn TokenSource>,
        options: KeyVaultClientOptions,
    ) -> Result<Self, KeyVaultError> {
        let http = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .timeout(options.request_timeout)
            .connect_timeout(options.request_timeout.min(Duration::from_secs(15)))
            .build()
            .map_err(|e| {
                KeyVaultError::invalid("options", format!("cannot build HTTP client: {e}"))
            })?;
        Self::with_http(vault_url, credential, options, http)
    }

    /// As [`KeyVaultClient::new`], sharing an existing HTTP connection pool.
    pub(crate) fn with_http(
        vault_url: &str,
        credential: Arc<dyn TokenSource>,
        options: KeyVaultClientOptions,
        http: reqwest::Client,
    ) -> Result<Self, KeyVaultError> {
        if let Some(e) = &options.endpoint {
            if !matches!(e.scheme(), "http" | "https") || e.cannot_be_a_base() {
                return Err(KeyVaultError::invalid(
                    "endpoint",
                    "must be an http(s) base URL",
                ));
            }
        }
        let vault = VaultUrl::parse(vault_url, &options.dns_suffixes)?;
        Ok(Self {
            vault,
            http,
            credential,
            options,
        })
    }

    pub fn vault(&self) -> &VaultUrl {
        &self.vault
    }

    /// `POST {vault}/keys/restore`: puts a key (all its versions) back from its backup blob.
    pub async fn restore_key(&self, backup: &[u8]) -> Result<Restored, KeyVaultError> {
        self.restore("keyvault.keys.restore", "keys", backup, |v| {
            v.get("key")?.get("kid")?.as_str().map(str::to_string)
        })
        .await
    }

    /// `POST {vault}/secrets/restore`: puts a secret (all its versions) back from its backup blob.
    pub async fn restore_secret(&self, backup: &[u8]) -> Result<Restored, KeyVaultError> {
        self.restore("keyvault.secrets.restore", "secrets", backup, |v| {
            v.get("id")?.as_str().map(str::to_string)
        })
        .await
    }

    async fn restore(
        &self,
        operation: &'static str,
        kind: &str,
        backup: &[u8],
        id_of: impl Fn(&serde_json::Value) -> Option<String>,
    ) -> Result<Restored, KeyVaultError> {
        if backup.is_empty() {
            return Err(KeyVaultError::invalid("value", "the backup blob is empty"));
        }
        let url = self.url(&[kind, "restore"])?;
        let body = RestoreBody {
            value: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(backup),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| KeyVaultError::invalid("value", format!("cannot serialize: {e}")))?;
        match self
            .send(operation, Method::POST, url, Some(Bytes::from(body)))
            .await
        {
            Ok(b) => Ok(Restored::Restored {
                id: serde_json::from_slice::<serde_json::Value>(&b)
                    .ok()
                    .as_ref()
                    .and_then(id_of),
            }),
            Err(e) if e.status() == Some(409) => Ok(Restored::AlreadyExists),
            Err(source) => Err(KeyVaultError::Http { operation, source }),
        }
    }

    /// `GET {vault}/secrets/{name}/{version}` (the current version without one).
    pub async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretValue, KeyVaultError> {
        const OP: &str = "keyvault.secrets.get";
        let mut segs = vec!["secrets", name];
        segs.extend(version);
        let url = self.url(&segs)?;
        let body = self
            .send(OP, Method::GET, url, None)
            .await
            .map_err(|source| KeyVaultError::Http {
                operation: OP,
                source,
            })?;
        #[derive(serde::Deserialize)]
        struct Bundle {
            value: Option<String>,
        }
        let decoded: Bundle = serde_json::from_slice(&body).map_err(|e| KeyVaultError::Http {
            operation: OP,
            source: ArmError::Decode {
                operation: OP.into(),
                reason: format!(
                    "not a SecretBundle (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            },
        })?;
        match decoded.value {
            Some(v) if !v.is_empty() => Ok(SecretValue(v)),
            _ => Err(KeyVaultError::Http {
                operation: OP,
                source: ArmError::Decode {
                    operation: OP.into(),
                    reason: "the SecretBundle has no value".into(),
                },
            }),
        }
    }

    fn url(&self, segments: &[&str]) -> Result<Url, KeyVaultError> {
        self.vault.request_url(
            self.options.endpoint.as_ref(),
            segments,
            KEY_VAULT_API_VERSION,
        )
    }

    /// The send path: the one retry policy around [`KeyVaultClient::attempt`]. Every call here
    /// is safe to repeat (a read, or a restore whose repeat answers 409 = already restored).
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<Bytes, ArmError> {
        let req = Req {
            operation,
            method,
            url,
            body,
        };
        retry::run(
            &self.options.retry,
            Repeat::Idempotent,
            || self.attempt(&req),
            |e, delay| {
                tracing::debug!(operation, error = %e, delay_ms = delay.as_millis() as u64, "retrying Key Vault request");
            },
        )
        .await
    }

    /// One attempt; a 401 whose challenge names the Key Vault resource is answered once with a
    /// fresh token.
    async fn attempt(&self, req: &Req) -> Result<Bytes, AttemptError> {
        let no_retry = |error: ArmError| AttemptError {
            error,
            retry_after: None,
        };
        let mut resp = self.once(req).await.map_err(no_retry)?;
        if resp.status().as_u16() == 401 {
            let challenge = header(&resp, "www-authenticate");
            if !challenge_matches(challenge.as_deref(), &self.options.scope) {
                return Err(no_retry(ArmError::Permanent {
                    operation: req.operation.into(),
                    status: 401,
                    code: Some("Unauthorized".into()),
                    message: "the Key Vault challenge names another resource than the configured scope; no token sent to it".into(),
                }));
            }
            resp = self.once(req).await.map_err(no_retry)?;
        }
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let body = match read_bounded(resp, self.options.max_response_bytes).await {
            Ok(b) => b,
            Err(BodyError::Read(e)) => {
                return Err(no_retry(transport(req.operation, e)));
            }
            Err(too_large) => {
                return Err(no_retry(ArmError::Permanent {
                    operation: req.operation.into(),
                    status,
                    code: Some(crate::arm::RESPONSE_TOO_LARGE.into()),
                    message: too_large.to_string(),
                }))
            }
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = classify(req.operation, status, retry_after, &body);
        tracing::debug!(operation = req.operation, status, code = ?error.code(), "Key Vault request failed");
        Err(AttemptError { error, retry_after })
    }

    async fn once(&self, req: &Req) -> Result<reqwest::Response, ArmError> {
        let token = self.credential.token(&self.options.scope).await?;
        let mut r = self
            .http
            .request(req.method.clone(), req.url.clone())
            .bearer_auth(token.secret())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(b) = &req.body {
            r = r
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        r.send().await.map_err(|e| transport(req.operation, e))
    }
}

struct Req {
    operation: &'static str,
    method: Method,
    url: Url,
    body: Option<Bytes>,
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn transport(operation: &str, e: reqwest::Error) -> ArmError {
    if e.is_timeout() {
        ArmError::Transient {
            operation: operation.into(),
            status: None,
            code: Some("Timeout".into()),
            message: "the Key Vault request timed out".into(),
        }
    } else {
        ArmError::Transient {
            operation: operation.into(),
            status: None,
            code: None,
            message: format!("connection failed: {}", e.without_url()),
        }
    }
}

/// Whether a `WWW-Authenticate` challenge may get a token for `scope`: its `resource=` or
/// `scope=` parameter, when present, must have the same host as the scope (Key Vault's
/// challenges name `https://vault.azure.net`). A challenge without either is the service asking
/// again for the same resource.
fn challenge_matches(challenge: Option<&str>, scope: &str) -> bool {
    let Some(c) = challenge else {
        return true;
    };
    let host_of = |u: &str| {
        Url::parse(u)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    };
    let want = host_of(scope);
    let named = ["resource=\"", "scope=\""].iter().find_map(|k| {
        let lower = c.to_ascii_lowercase();
        let at = lower.find(k)? + k.len();
        let end = c[at..].find('"')? + at;
        Some(c[at..end].to_string())
    });
    match named {
        None => true,
        Some(n) => host_of(&n).is_some() && host_of(&n) == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_never_print() {
        let v = SecretValue("p@ss".into());
        assert_eq!(format!("{v:?}"), "SecretValue(<redacted>)");
        assert_eq!(v.expose(), "p@ss");
    }

    #[test]
    fn challenges_get_a_token_only_for_the_key_vault_resource() {
        let scope = KEY_VAULT_SCOPE;
        assert!(challenge_matches(None, scope));
        assert!(challenge_matches(
            Some(
                r#"Bearer authorization="https://login.windows.net/t", resource="https://vault.azure.net""#
            ),
            scope
        ));
        assert!(challenge_matches(
            Some(
                r#"Bearer authorization="https://login.windows.net/t", scope="https://vault.azure.net/.default""#
            ),
            scope
        ));
        assert!(!challenge_matches(
            Some(
                r#"Bearer authorization="https://login.windows.net/t", resource="https://evil.example""#
            ),
            scope
        ));
        assert!(!challenge_matches(
            Some(r#"Bearer resource="not a url""#),
            scope
        ));
    }
}
