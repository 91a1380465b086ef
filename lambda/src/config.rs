//! The Lambda build's settings: where state, queues and the Azure credential are on AWS. The
//! workflow settings (ARM endpoints, rules, sweep scope, …) are the Functions app's, read by
//! `Settings::from_lookup` from the same environment.
//!
//! | variable | required | value |
//! |---|---|---|
//! | `ADE_BACKUP_S3_STATE` | yes | `s3://{bucket}/` or `s3://{bucket}/{prefix}/` |
//! | `ADE_BACKUP_SQS_QUEUES` | yes | JSON object: logical queue name → SQS queue URL ([`QueueMap`]) |
//! | `ADE_BACKUP_SQS_DEAD_LETTER_QUEUES` | no | JSON object: logical queue name → its DLQ's URL; a queue without one leaves poison messages to its redrive policy |
//! | `ADE_BACKUP_AZURE_SECRET_ARN` | one of these two | Secrets Manager secret holding the Entra app client secret or certificate ([`crate::secrets`]) |
//! | `ADE_BACKUP_CREDENTIAL` | | `static` (tests, the simulator) or `azure-cli`; managed identity does not exist on AWS |
//! | `ADE_BACKUP_S3_FORCE_PATH_STYLE` | no | `true` for S3 emulators on loopback |
//!
//! `ADE_BACKUP_STATE` and `ADE_BACKUP_SERVICEBUS_ENDPOINT` are Azure-only and refused here, so a
//! copied app-settings file cannot silently point the Lambda at Azure storage.

use crate::queues::{QueueMap, QueueMapError};
use ade_backup_functions::settings::{Settings, SettingsError};

pub const S3_STATE_VAR: &str = "ADE_BACKUP_S3_STATE";
pub const DEAD_LETTER_QUEUES_VAR: &str = "ADE_BACKUP_SQS_DEAD_LETTER_QUEUES";
pub const SECRET_ARN_VAR: &str = "ADE_BACKUP_AZURE_SECRET_ARN";
pub const FORCE_PATH_STYLE_VAR: &str = "ADE_BACKUP_S3_FORCE_PATH_STYLE";
const AZURE_ONLY: [&str; 2] = ["ADE_BACKUP_STATE", "ADE_BACKUP_SERVICEBUS_ENDPOINT"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is required: {rule}")]
    Missing {
        var: &'static str,
        rule: &'static str,
    },
    #[error("{var}={value:?}: {rule}")]
    Invalid {
        var: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("{var} is an Azure Functions setting; on Lambda state is {S3_STATE_VAR} and queues are ADE_BACKUP_SQS_QUEUES")]
    AzureOnly { var: &'static str },
    #[error(transparent)]
    Queues(#[from] QueueMapError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// Where the Azure credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A Secrets Manager secret (its ARN; the value is read at start-up, never from env).
    SecretsManager { arn: String },
    /// `ADE_BACKUP_CREDENTIAL` (static token, Azure CLI) as the Functions app reads it.
    Environment,
}

#[derive(Debug, Clone)]
pub struct LambdaConfig {
    pub bucket: String,
    pub prefix: String,
    pub force_path_style: bool,
    pub queues: QueueMap,
    pub dead_letter_queues: QueueMap,
    pub credential: CredentialSource,
    pub settings: Settings,
}

/// `s3://bucket/` or `s3://bucket/prefix/` → (bucket, prefix).
fn parse_s3_url(value: &str) -> Result<(String, String), ConfigError> {
    let invalid = |rule| ConfigError::Invalid {
        var: S3_STATE_VAR,
        value: value.to_string(),
        rule,
    };
    let rest = value
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("must start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !bucket_ok {
        return Err(invalid(
            "the bucket name must be 3-63 lowercase letters, digits, '-' or '.'",
        ));
    }
    if !prefix.is_empty() && !prefix.ends_with('/') {
        return Err(invalid("a key prefix must end with '/'"));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl LambdaConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(var) = AZURE_ONLY.into_iter().find(|v| get(v).is_some()) {
            return Err(ConfigError::AzureOnly { var });
        }
        let (bucket, prefix) = parse_s3_url(&get(S3_STATE_VAR).ok_or(ConfigError::Missing {
            var: S3_STATE_VAR,
            rule: "set it to s3://{bucket}/ or s3://{bucket}/{prefix}/",
        })?)?;
        let queues =
            QueueMap::parse(&get(crate::queues::QUEUES_VAR).ok_or(ConfigError::Missing {
                var: crate::queues::QUEUES_VAR,
                rule: "a JSON object of logical queue name to SQS queue URL",
            })?)?;
        let dead_letter_queues = match get(DEAD_LETTER_QUEUES_VAR) {
            Some(json) => QueueMap::parse(&json)?,
            None => QueueMap::default(),
        };
        let credential = match (get(SECRET_ARN_VAR), get(ade_backup_shared::identity::CREDENTIAL_VAR)) {
            (Some(arn), None) if arn.starts_with("arn:") && arn.contains(":secretsmanager:") => {
                CredentialSource::SecretsManager { arn }
            }
            (Some(arn), None) => {
                return Err(ConfigError::Invalid {
                    var: SECRET_ARN_VAR,
                    value: arn,
                    rule: "must be a Secrets Manager secret ARN (arn:…:secretsmanager:…)",
                })
            }
            (None, Some(_)) => CredentialSource::Environment,
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    var: SECRET_ARN_VAR,
                    value: "(set)".into(),
                    rule: "set either it or ADE_BACKUP_CREDENTIAL, not both",
                })
            }
            (None, None) => {
                return Err(ConfigError::Missing {
                    var: SECRET_ARN_VAR,
                    rule: "the Entra app credential's Secrets Manager ARN (or ADE_BACKUP_CREDENTIAL for tests)",
                })
            }
        };
        let force_path_style = match get(FORCE_PATH_STYLE_VAR).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: FORCE_PATH_STYLE_VAR,
                    value: other.to_string(),
                    rule: "must be true or false",
                })
            }
        };
        // The two Azure-only settings the shared parser requires get inert values: the Lambda
        // wires S3 and SQS instead and never reads them.
        let settings = Settings::from_lookup(|k| match k {
            "ADE_BACKUP_STATE" => Some("fs:/nonexistent/ade-backup-lambda-unused".into()),
            "ADE_BACKUP_SERVICEBUS_ENDPOINT" => {
                Some("https://unused.servicebus.windows.net/".into())
            }
            other => get(other),
        })?;
        Ok(Self {
            bucket,
            prefix,
            force_path_style,
            queues,
            dead_letter_queues,
            credential,
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const QUEUES: &str =
        r#"{"backup-vm": "https://sqs.eu-west-1.amazonaws.com/123456789012/backup-vm"}"#;
    const ARN: &str =
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ade-backup-entra-AbCdEf";

    fn parse(vars: &[(&str, &str)]) -> Result<LambdaConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LambdaConfig::from_lookup(|k| map.get(k).cloned())
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            (S3_STATE_VAR, "s3://ade-backup-state/prod/"),
            (crate::queues::QUEUES_VAR, QUEUES),
            (SECRET_ARN_VAR, ARN),
        ]
    }

    #[test]
    fn a_complete_configuration_parses() {
        let c = parse(&base()).expect("valid");
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("ade-backup-state", "prod/")
        );
        assert_eq!(
            c.credential,
            CredentialSource::SecretsManager { arn: ARN.into() }
        );
        assert!(!c.force_path_style);
    }

    #[test]
    fn each_mistake_names_its_variable() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![(S3_STATE_VAR, "https://bucket/")], "s3://"),
            (vec![(S3_STATE_VAR, "s3://Bad_Bucket/")], "bucket name"),
            (vec![(S3_STATE_VAR, "s3://bucket/prefix")], "end with '/'"),
            (vec![(SECRET_ARN_VAR, "my-secret")], "secret ARN"),
            (vec![("ADE_BACKUP_CREDENTIAL", "static")], "not both"),
            (
                vec![("ADE_BACKUP_STATE", "fs:/tmp")],
                "Azure Functions setting",
            ),
            (vec![(FORCE_PATH_STYLE_VAR, "yes")], "true or false"),
        ];
        for (overrides, needle) in cases {
            let mut vars = base();
            vars.retain(|(k, _)| !overrides.iter().any(|(o, _)| o == k));
            vars.extend(overrides.iter().copied());
            let e = parse(&vars).expect_err(needle).to_string();
            assert!(e.contains(needle), "{overrides:?}: {e}");
        }
        let e = parse(&[
            (S3_STATE_VAR, "s3://b12/"),
            (crate::queues::QUEUES_VAR, QUEUES),
        ])
        .expect_err("no credential")
        .to_string();
        assert!(e.contains(SECRET_ARN_VAR), "{e}");
    }
}
