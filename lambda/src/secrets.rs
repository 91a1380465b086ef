//! The Azure (Entra ID) app credential, read from AWS Secrets Manager at start-up.
//!
//! The secret (`GetSecretValue` on `ADE_BACKUP_AZURE_SECRET_ARN`; the function's role may read
//! that one secret only) is a JSON string, one of:
//! - `{"tenantId": "<GUID>", "clientId": "<GUID>", "clientSecret": "<secret>"}`;
//! - `{"tenantId": "<GUID>", "clientId": "<GUID>", "clientCertificate": "<PEM>"}`: the
//!   certificate and its unencrypted RSA private key in one PEM text (as Key Vault exports a
//!   PEM certificate), signed into client assertions by [`crate::cert_assertion`].
//!
//! The value stays in memory: never in the environment, never logged ([`EntraSecret`]'s `Debug`
//! hides it), and every error names the field and the rule, never the value.

use crate::cert_assertion::{CertificateAssertion, CertificateError, CertificateKey};
use ade_backup_functions::wiring::Identity;
use ade_backup_shared::credential::AzureIdentityToken;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::Client;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::ClientAssertionCredentialOptions;
use serde::Deserialize;
use std::sync::Arc;

/// Entra's public-cloud authority host; `AZURE_AUTHORITY_HOST` overrides it, as for
/// `azure_identity`'s credentials.
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const AUTHORITY_HOST_VAR: &str = "AZURE_AUTHORITY_HOST";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read secret {arn}: {reason}")]
    Unavailable { arn: String, reason: String },
    #[error("secret {arn} has no SecretString (binary secrets are not supported)")]
    NotAString { arn: String },
    #[error("secret {arn} is not the Entra credential JSON: {rule}")]
    Invalid { arn: String, rule: String },
    #[error("secret {arn}: clientCertificate {source}")]
    Certificate {
        arn: String,
        #[source]
        source: CertificateError,
    },
    #[error("could not create the Entra credential: {0}")]
    Credential(#[source] azure_core::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSecret {
    tenant_id: String,
    client_id: String,
    client_secret: Option<String>,
    client_certificate: Option<String>,
}

/// How the app proves itself to Entra.
#[derive(Clone)]
enum Proof {
    ClientSecret(String),
    Certificate(CertificateKey),
}

/// The Entra app registration's credential.
#[derive(Clone)]
pub struct EntraSecret {
    pub tenant_id: String,
    pub client_id: String,
    proof: Proof,
}

impl std::fmt::Debug for EntraSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("EntraSecret");
        d.field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id);
        match &self.proof {
            Proof::ClientSecret(_) => d.field("client_secret", &"<redacted>"),
            Proof::Certificate(key) => d.field("client_certificate", key),
        };
        d.finish()
    }
}

/// Where Entra's token endpoint is for this process: `AZURE_AUTHORITY_HOST` or the public cloud.
pub fn authority_host_from_env() -> String {
    std::env::var(AUTHORITY_HOST_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| PUBLIC_AUTHORITY_HOST.to_string())
}

impl EntraSecret {
    /// Parses and checks the secret's JSON (a certificate is parsed and paired with its key
    /// here, at start-up). Errors never quote the value.
    pub fn parse(arn: &str, json: &str) -> Result<Self, SecretError> {
        let invalid = |rule: String| SecretError::Invalid {
            arn: arn.to_string(),
            rule,
        };
        // serde's messages can quote a value; only its category and position are kept.
        let raw: RawSecret = serde_json::from_str(json).map_err(|e| {
            invalid(format!(
                "expected {{\"tenantId\", \"clientId\", and \"clientSecret\" or \"clientCertificate\"}} ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        for (field, value) in [("tenantId", &raw.tenant_id), ("clientId", &raw.client_id)] {
            if uuid::Uuid::parse_str(value).is_err() {
                return Err(invalid(format!("{field} must be a GUID")));
            }
        }
        let proof = match (raw.client_secret, raw.client_certificate) {
            (Some(secret), None) if secret.trim().is_empty() => {
                return Err(invalid("clientSecret must not be empty".into()))
            }
            (Some(secret), None) => Proof::ClientSecret(secret),
            (None, Some(pem)) => {
                Proof::Certificate(CertificateKey::from_pem(&pem).map_err(|source| {
                    SecretError::Certificate {
                        arn: arn.to_string(),
                        source,
                    }
                })?)
            }
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "exactly one of clientSecret and clientCertificate must be set".into(),
                ))
            }
        };
        Ok(Self {
            tenant_id: raw.tenant_id,
            client_id: raw.client_id,
            proof,
        })
    }

    /// Entra's token endpoint for this tenant under `authority_host` (the assertion's `aud`).
    pub fn token_endpoint(&self, authority_host: &str) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            authority_host.trim_end_matches('/'),
            self.tenant_id
        )
    }

    /// The process identity: the `azure_core` credential and the token source the ARM client
    /// uses. `authority_host` is Entra's (see [`authority_host_from_env`]); `client_options` are
    /// the token requests' (tests give a transport).
    pub fn credential(
        self,
        authority_host: &str,
        mut client_options: ClientOptions,
    ) -> Result<Identity, SecretError> {
        let token_endpoint = self.token_endpoint(authority_host);
        let mut cloud = CustomConfiguration::default();
        cloud.authority_host = authority_host.trim_end_matches('/').to_string();
        client_options.cloud = Some(Arc::new(CloudConfiguration::from(cloud)));
        let credential: Arc<dyn TokenCredential> = match self.proof {
            Proof::ClientSecret(secret) => azure_identity::ClientSecretCredential::new(
                &self.tenant_id,
                self.client_id,
                Secret::new(secret),
                Some(azure_identity::ClientSecretCredentialOptions { client_options }),
            )
            .map_err(SecretError::Credential)?,
            Proof::Certificate(key) => {
                let assertion = CertificateAssertion {
                    key,
                    client_id: self.client_id.clone(),
                    token_endpoint,
                };
                azure_identity::ClientAssertionCredential::new(
                    self.tenant_id,
                    self.client_id,
                    assertion,
                    Some(ClientAssertionCredentialOptions { client_options }),
                )
                .map_err(SecretError::Credential)?
            }
        };
        Ok(Identity {
            tokens: Arc::new(AzureIdentityToken(credential.clone())),
            azure: Some(credential),
        })
    }
}

/// Reads and parses the secret.
pub async fn load(client: &Client, arn: &str) -> Result<EntraSecret, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Unavailable {
            arn: arn.to_string(),
            reason: DisplayErrorContext(e).to_string(),
        })?;
    let json = out.secret_string().ok_or_else(|| SecretError::NotAString {
        arn: arn.to_string(),
    })?;
    EntraSecret::parse(arn, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "5b6f0c7e-3d1a-4c2b-9e8f-0a1b2c3d4e5f";

    #[test]
    fn the_secret_never_shows() {
        let json = format!(r#"{{"tenantId":"{T}","clientId":"{T}","clientSecret":"hunter2"}}"#);
        let s = EntraSecret::parse("arn:x", &json).expect("valid");
        assert!(!format!("{s:?}").contains("hunter2"));
        for bad in [
            format!(r#"{{"tenantId":"{T}","clientId":"{T}","clientSecret":"hunter2","x":1}}"#),
            format!(r#"{{"tenantId":"hunter2","clientId":"{T}","clientSecret":"hunter2"}}"#),
            format!(r#"{{"tenantId":"{T}","clientId":"{T}","clientSecret":" "}}"#),
            r#"{"clientSecret": hunter2}"#.to_string(),
        ] {
            let e = EntraSecret::parse("arn:x", &bad)
                .expect_err(&bad)
                .to_string();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains("arn:x"), "{e}");
        }
    }

    #[test]
    fn a_certificate_secret_is_checked_at_parse_time() {
        let pem = include_str!("../tests/fixtures/entra-cert.pem");
        let json = serde_json::json!({"tenantId": T, "clientId": T, "clientCertificate": pem});
        let s = EntraSecret::parse("arn:x", &json.to_string()).expect("valid");
        let shown = format!("{s:?}");
        assert!(
            shown.contains("x5t#S256") && !shown.contains("PRIVATE"),
            "{shown}"
        );
        assert_eq!(
            s.token_endpoint("https://login.example/"),
            format!("https://login.example/{T}/oauth2/v2.0/token")
        );

        let key = &pem[pem.find("-----BEGIN PRIVATE KEY").expect("key")..];
        let cases = [
            (
                serde_json::json!({"tenantId": T, "clientId": T, "clientCertificate": key}),
                "clientCertificate has no PEM CERTIFICATE",
            ),
            (
                serde_json::json!({"tenantId": T, "clientId": T, "clientCertificate": pem, "clientSecret": "x"}),
                "exactly one of",
            ),
            (
                serde_json::json!({"tenantId": T, "clientId": T}),
                "exactly one of",
            ),
        ];
        for (json, want) in cases {
            let e = EntraSecret::parse("arn:x", &json.to_string())
                .expect_err(want)
                .to_string();
            assert!(e.contains(want) && e.contains("arn:x"), "{e}");
            assert!(!e.contains("MII"), "{e}");
        }
    }
}
