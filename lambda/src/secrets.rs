//! The Azure (Entra ID) app credential, read from AWS Secrets Manager at start-up.
//!
//! The secret (`GetSecretValue` on `ADE_BACKUP_AZURE_SECRET_ARN`; the function's role may read
//! that one secret only) is a JSON string:
//! `{"tenantId": "<GUID>", "clientId": "<GUID>", "clientSecret": "<secret>"}`.
//! The value stays in memory: never in the environment, never logged ([`EntraSecret`]'s `Debug`
//! hides it), and every error names the field and the rule, never the value.
//!
//! A client *certificate* is not supported yet: `azure_identity`'s `ClientCertificateCredential`
//! needs its `client_certificate` feature, which links OpenSSL into the Lambda binary (see
//! README "AWS Lambda").

use ade_backup_functions::wiring::Identity;
use ade_backup_shared::credential::AzureIdentityToken;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::Client;
use azure_core::credentials::{Secret, TokenCredential};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("could not read secret {arn}: {reason}")]
    Unavailable { arn: String, reason: String },
    #[error("secret {arn} has no SecretString (binary secrets are not supported)")]
    NotAString { arn: String },
    #[error("secret {arn} is not the Entra credential JSON: {rule}")]
    Invalid { arn: String, rule: String },
    #[error("could not create the Entra client-secret credential: {0}")]
    Credential(String),
}

/// The Entra app registration's client-secret credential.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntraSecret {
    pub tenant_id: String,
    pub client_id: String,
    client_secret: String,
}

impl std::fmt::Debug for EntraSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSecret")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl EntraSecret {
    /// Parses and checks the secret's JSON. Errors never quote the value.
    pub fn parse(arn: &str, json: &str) -> Result<Self, SecretError> {
        let invalid = |rule: String| SecretError::Invalid {
            arn: arn.to_string(),
            rule,
        };
        // serde's messages can quote a value; only its category and position are kept.
        let s: EntraSecret = serde_json::from_str(json).map_err(|e| {
            invalid(format!(
                "expected {{\"tenantId\", \"clientId\", \"clientSecret\"}} ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        for (field, value) in [("tenantId", &s.tenant_id), ("clientId", &s.client_id)] {
            if uuid::Uuid::parse_str(value).is_err() {
                return Err(invalid(format!("{field} must be a GUID")));
            }
        }
        if s.client_secret.trim().is_empty() {
            return Err(invalid("clientSecret must not be empty".into()));
        }
        Ok(s)
    }

    /// The process identity: the `azure_core` credential and the token source the ARM client
    /// uses.
    pub fn credential(self) -> Result<Identity, SecretError> {
        let credential = azure_identity::ClientSecretCredential::new(
            &self.tenant_id,
            self.client_id,
            Secret::new(self.client_secret),
            None,
        )
        .map_err(|e| SecretError::Credential(e.to_string()))?;
        let credential: Arc<dyn TokenCredential> = credential;
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
}
