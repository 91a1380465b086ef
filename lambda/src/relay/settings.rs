//! The relay's settings and its shared secret.
//!
//! | variable | required | value |
//! |---|---|---|
//! | `ADE_BACKUP_LAMBDA_MODE` | no | `relay` runs the Event Grid webhook relay; unset or `router` the queue router |
//! | `ADE_BACKUP_SQS_QUEUES` | yes | as for the router; must map `vm-encryption-events` |
//! | `ADE_BACKUP_RELAY_SECRET_ARN` | yes | Secrets Manager secret `{"sharedSecret": "<at least 32 characters>"}` |
//!
//! The shared secret is its own secret (not a field of the Entra credential's), so the relay's
//! role reads it alone and never the Azure credential. It is read once at start-up (a rotation
//! takes effect on the next cold start) and never logged: [`RelayKey`]'s `Debug` hides it.

use crate::queues::{QueueMap, QueueMapError, QUEUES_VAR};
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const MODE_VAR: &str = "ADE_BACKUP_LAMBDA_MODE";
pub const RELAY_SECRET_ARN_VAR: &str = "ADE_BACKUP_RELAY_SECRET_ARN";
/// The queue the relay feeds (the `OnVmEncryptionEvent` function's).
pub const EVENTS_QUEUE: &str = "vm-encryption-events";
/// The shortest shared secret accepted (a guessable secret would make the URL open).
pub const MIN_SECRET_CHARS: usize = 32;

/// What the binary runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQS batches and schedules → the handler registry.
    Router,
    /// Event Grid webhook deliveries (Lambda function URL) → the events queue.
    Relay,
}

#[derive(Debug, thiserror::Error)]
pub enum RelaySettingsError {
    #[error("{MODE_VAR}={0:?}: must be `relay` or `router` (or unset)")]
    Mode(String),
    #[error("{var} is required in relay mode: {rule}")]
    Missing {
        var: &'static str,
        rule: &'static str,
    },
    #[error(transparent)]
    Queues(#[from] QueueMapError),
    #[error("{QUEUES_VAR} has no URL for queue {EVENTS_QUEUE:?}, which the relay feeds")]
    NoEventsQueue,
    #[error("could not read secret {arn}: {reason}")]
    Unavailable { arn: String, reason: String },
    #[error("secret {arn} is not the relay secret JSON: {rule}")]
    InvalidSecret { arn: String, rule: String },
}

impl Mode {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, RelaySettingsError> {
        match get(MODE_VAR).as_deref().map(str::trim) {
            None | Some("") | Some("router") => Ok(Mode::Router),
            Some("relay") => Ok(Mode::Relay),
            Some(other) => Err(RelaySettingsError::Mode(other.to_string())),
        }
    }
}

/// The relay's settings from the environment.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub queues: QueueMap,
    pub secret_arn: String,
}

impl RelaySettings {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, RelaySettingsError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let queues = QueueMap::parse(&get(QUEUES_VAR).ok_or(RelaySettingsError::Missing {
            var: QUEUES_VAR,
            rule: "a JSON object of logical queue name to SQS queue URL",
        })?)?;
        if queues.get(EVENTS_QUEUE).is_none() {
            return Err(RelaySettingsError::NoEventsQueue);
        }
        let secret_arn = get(RELAY_SECRET_ARN_VAR).ok_or(RelaySettingsError::Missing {
            var: RELAY_SECRET_ARN_VAR,
            rule: "the Secrets Manager ARN of {\"sharedSecret\": \"…\"}",
        })?;
        Ok(Self { queues, secret_arn })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRelaySecret {
    shared_secret: String,
}

/// The shared secret, kept only as its SHA-256 so comparisons take the same time whatever the
/// presented value's length or content.
#[derive(Clone)]
pub struct RelayKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for RelayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayKey(<redacted>)")
    }
}

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl RelayKey {
    /// Parses the secret's JSON; errors name the rule, never the value.
    pub fn parse(arn: &str, json: &str) -> Result<Self, RelaySettingsError> {
        let invalid = |rule: String| RelaySettingsError::InvalidSecret {
            arn: arn.to_string(),
            rule,
        };
        let raw: RawRelaySecret = serde_json::from_str(json).map_err(|e| {
            invalid(format!(
                "expected {{\"sharedSecret\": \"…\"}} ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let s = raw.shared_secret;
        if s.chars().count() < MIN_SECRET_CHARS {
            return Err(invalid(format!(
                "sharedSecret must have at least {MIN_SECRET_CHARS} characters"
            )));
        }
        // It travels as an HTTP header value: visible ASCII only.
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "sharedSecret must be visible ASCII (no spaces or control characters)".into(),
            ));
        }
        Ok(Self {
            digest: digest(s.as_bytes()),
        })
    }

    /// Constant-time check of a presented value (both sides hashed first).
    pub fn matches(&self, presented: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.digest, &digest(presented)).is_ok()
    }
}

/// Reads and parses the relay secret.
pub async fn load_key(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<RelayKey, RelaySettingsError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| RelaySettingsError::Unavailable {
            arn: arn.to_string(),
            reason: DisplayErrorContext(e).to_string(),
        })?;
    let json = out
        .secret_string()
        .ok_or_else(|| RelaySettingsError::InvalidSecret {
            arn: arn.to_string(),
            rule: "no SecretString (binary secrets are not supported)".into(),
        })?;
    RelayKey::parse(arn, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef-x";

    #[test]
    fn the_key_matches_only_itself_and_never_shows() {
        let key =
            RelayKey::parse("arn:r", &format!(r#"{{"sharedSecret":"{GOOD}"}}"#)).expect("valid");
        assert!(key.matches(GOOD.as_bytes()));
        assert!(!key.matches(b""));
        assert!(!key.matches(&GOOD.as_bytes()[1..]));
        assert!(!key.matches(format!("{GOOD}y").as_bytes()));
        assert!(!format!("{key:?}").contains(GOOD));
    }

    #[test]
    fn a_bad_secret_names_the_rule_not_the_value() {
        for (json, want) in [
            (
                r#"{"sharedSecret":"short-secret-value"}"#.to_string(),
                "at least 32",
            ),
            (format!(r#"{{"sharedSecret":"{GOOD} z"}}"#), "visible ASCII"),
            (format!(r#"{{"shared":"{GOOD}"}}"#), "expected"),
        ] {
            let e = RelayKey::parse("arn:r", &json).expect_err(want).to_string();
            assert!(e.contains(want) && e.contains("arn:r"), "{e}");
            assert!(
                !e.contains("short-secret-value") && !e.contains(GOOD),
                "{e}"
            );
        }
    }

    #[test]
    fn the_mode_and_settings_name_their_variable() {
        let m = |v: Option<&str>| Mode::from_lookup(|_| v.map(str::to_string));
        assert_eq!(m(None).expect("unset"), Mode::Router);
        assert_eq!(m(Some("relay")).expect("relay"), Mode::Relay);
        assert!(m(Some("proxy"))
            .expect_err("bad")
            .to_string()
            .contains(MODE_VAR));

        let queues =
            r#"{"backup-vm": "https://sqs.eu-west-1.amazonaws.com/123456789012/backup-vm"}"#;
        let e = RelaySettings::from_lookup(|k| (k == QUEUES_VAR).then(|| queues.to_string()))
            .expect_err("no events queue")
            .to_string();
        assert!(e.contains(EVENTS_QUEUE), "{e}");
        let queues = r#"{"vm-encryption-events": "https://sqs.eu-west-1.amazonaws.com/123456789012/vm-encryption-events"}"#;
        let e = RelaySettings::from_lookup(|k| (k == QUEUES_VAR).then(|| queues.to_string()))
            .expect_err("no secret")
            .to_string();
        assert!(e.contains(RELAY_SECRET_ARN_VAR), "{e}");
    }
}
