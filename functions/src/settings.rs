//! Process settings, read once at start-up from environment variables (Azure app settings).
//!
//! | variable | required | rule |
//! |---|---|---|
//! | `ADE_BACKUP_STATE` | yes | `fs:DIR`, or a blob container URL `https://{account}.blob.core.windows.net/{container}` (no query string: SAS tokens are refused, use a managed identity) |
//! | `ADE_BACKUP_SERVICEBUS_ENDPOINT` | yes | `https://{namespace}.servicebus.windows.net/` (plain `http` only on loopback, for `ade-backup local`) |
//! | `ADE_BACKUP_ARM_ENDPOINT` | no, `https://management.azure.com` | URL, same rules |
//! | `ADE_BACKUP_GRAPH_ENDPOINT` | no, `https://graph.microsoft.com` | URL, same rules |
//! | `ADE_BACKUP_BMS_OBJECT_ID` | no | GUID: object id of the Backup Management Service principal; overrides the Graph lookup |
//! | `ADE_BACKUP_SUBSCRIPTIONS` | no | comma-separated subscription GUIDs the policy sweep covers |
//! | `ADE_BACKUP_QUEUE_*` | no, see [`QueueNames`] | Service Bus queue names |
//!
//! Every error names the variable and the rule it breaks. Values are never echoed for URL
//! variables (they might carry a secret the rule is there to refuse).

use std::path::PathBuf;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("setting {var} is required: {rule}")]
    Missing {
        var: &'static str,
        rule: &'static str,
    },
    #[error("setting {var} is invalid: {rule}")]
    Invalid { var: &'static str, rule: String },
}

/// Where operation state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLocation {
    /// A directory on local disk (`ade-backup local`, tests).
    Fs(PathBuf),
    /// A blob container: account endpoint + container name.
    Blob { container_url: Url },
}

/// Service Bus queue names. Defaults match the `queueName`s in the `function.json` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    pub vm_encryption_events: String,
    pub restore_requests: String,
    pub grant_key_vault_access: String,
    pub backup_vm: String,
    pub restore_vm: String,
    pub redeploy_vm: String,
}

impl Default for QueueNames {
    fn default() -> Self {
        Self {
            vm_encryption_events: "vm-encryption-events".into(),
            restore_requests: "restore-requests".into(),
            grant_key_vault_access: "grant-key-vault-access".into(),
            backup_vm: "backup-vm".into(),
            restore_vm: "restore-vm".into(),
            redeploy_vm: "redeploy-vm".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub state: StateLocation,
    pub servicebus_endpoint: Url,
    pub arm_endpoint: Url,
    pub graph_endpoint: Url,
    pub bms_object_id: Option<uuid::Uuid>,
    pub subscriptions: Vec<uuid::Uuid>,
    pub queues: QueueNames,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get` (tests pass a map instead of mutating the environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let state = match get("ADE_BACKUP_STATE") {
            None => {
                return Err(SettingsError::Missing {
                    var: "ADE_BACKUP_STATE",
                    rule: "set it to fs:DIR or to a blob container URL",
                })
            }
            Some(v) => parse_state(&v)?,
        };
        let servicebus_endpoint = match get("ADE_BACKUP_SERVICEBUS_ENDPOINT") {
            None => {
                return Err(SettingsError::Missing {
                    var: "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                    rule: "set it to https://{namespace}.servicebus.windows.net/",
                })
            }
            Some(v) => parse_endpoint("ADE_BACKUP_SERVICEBUS_ENDPOINT", &v)?,
        };
        let arm_endpoint = parse_endpoint(
            "ADE_BACKUP_ARM_ENDPOINT",
            &get("ADE_BACKUP_ARM_ENDPOINT")
                .unwrap_or_else(|| "https://management.azure.com".into()),
        )?;
        let graph_endpoint = parse_endpoint(
            "ADE_BACKUP_GRAPH_ENDPOINT",
            &get("ADE_BACKUP_GRAPH_ENDPOINT")
                .unwrap_or_else(|| "https://graph.microsoft.com".into()),
        )?;
        let bms_object_id = get("ADE_BACKUP_BMS_OBJECT_ID")
            .map(|v| {
                uuid::Uuid::parse_str(&v).map_err(|_| SettingsError::Invalid {
                    var: "ADE_BACKUP_BMS_OBJECT_ID",
                    rule: format!("must be a GUID (object id of the Backup Management Service principal), got {v:?}"),
                })
            })
            .transpose()?;
        let subscriptions = match get("ADE_BACKUP_SUBSCRIPTIONS") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    uuid::Uuid::parse_str(s).map_err(|_| SettingsError::Invalid {
                        var: "ADE_BACKUP_SUBSCRIPTIONS",
                        rule: format!(
                            "must be comma-separated subscription GUIDs, {s:?} is not a GUID"
                        ),
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let d = QueueNames::default();
        let queue = |var: &'static str, default: String| -> Result<String, SettingsError> {
            let name = get(var).unwrap_or(default);
            validate_queue_name(&name).map_err(|rule| SettingsError::Invalid {
                var,
                rule: format!("{rule} (got {name:?})"),
            })?;
            Ok(name)
        };
        let queues = QueueNames {
            vm_encryption_events: queue(
                "ADE_BACKUP_QUEUE_VM_ENCRYPTION_EVENTS",
                d.vm_encryption_events,
            )?,
            restore_requests: queue("ADE_BACKUP_QUEUE_RESTORE_REQUESTS", d.restore_requests)?,
            grant_key_vault_access: queue(
                "ADE_BACKUP_QUEUE_GRANT_KEY_VAULT_ACCESS",
                d.grant_key_vault_access,
            )?,
            backup_vm: queue("ADE_BACKUP_QUEUE_BACKUP_VM", d.backup_vm)?,
            restore_vm: queue("ADE_BACKUP_QUEUE_RESTORE_VM", d.restore_vm)?,
            redeploy_vm: queue("ADE_BACKUP_QUEUE_REDEPLOY_VM", d.redeploy_vm)?,
        };
        Ok(Self {
            state,
            servicebus_endpoint,
            arm_endpoint,
            graph_endpoint,
            bms_object_id,
            subscriptions,
            queues,
        })
    }
}

fn parse_state(v: &str) -> Result<StateLocation, SettingsError> {
    const VAR: &str = "ADE_BACKUP_STATE";
    if let Some(dir) = v.strip_prefix("fs:") {
        if dir.trim().is_empty() {
            return Err(SettingsError::Invalid {
                var: VAR,
                rule: "fs: must be followed by a directory path".into(),
            });
        }
        return Ok(StateLocation::Fs(PathBuf::from(dir)));
    }
    let url = parse_endpoint(VAR, v).map_err(|e| match e {
        SettingsError::Invalid { rule, .. } => SettingsError::Invalid {
            var: VAR,
            rule: format!("must be fs:DIR or a blob container URL: {rule}"),
        },
        other => other,
    })?;
    let segments: Vec<&str> = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    // Azurite-style loopback URLs carry the account as the first path segment.
    let container = if is_loopback(&url) {
        segments.get(1).or(segments.first())
    } else {
        segments.first()
    };
    match container {
        Some(c) if validate_container_name(c) => Ok(StateLocation::Blob { container_url: url }),
        _ => Err(SettingsError::Invalid {
            var: VAR,
            rule: "a blob URL must name a container (3-63 lowercase letters, digits and single hyphens) as its path".into(),
        }),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An endpoint URL: https (http only on loopback), a host, no credentials, no query, no fragment.
fn parse_endpoint(var: &'static str, v: &str) -> Result<Url, SettingsError> {
    let invalid = |rule: &str| SettingsError::Invalid {
        var,
        rule: rule.to_string(),
    };
    let url = Url::parse(v).map_err(|_| invalid("must be an absolute URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                "must use https (plain http is allowed only on loopback)",
            ))
        }
        _ => return Err(invalid("must be an https URL")),
    }
    if url.host().is_none() {
        return Err(invalid("must have a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            "must not carry a query string or fragment (SAS tokens and keys are not accepted; use a managed identity)",
        ));
    }
    Ok(url)
}

fn validate_container_name(c: &str) -> bool {
    (3..=63).contains(&c.len())
        && c.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
        && !c.starts_with('-')
        && !c.ends_with('-')
        && !c.contains("--")
}

/// Service Bus queue naming rules: 1-260 characters of letters, digits, `.`, `-`, `_`, `/`,
/// starting and ending with a letter or digit.
pub fn validate_queue_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 260 {
        return Err("a queue name must be 1 to 260 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
    {
        return Err("a queue name may only contain letters, digits, '.', '-', '_' and '/'");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err("a queue name must start and end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| m.get(k).cloned())
    }

    const BASE: [(&str, &str); 2] = [
        ("ADE_BACKUP_STATE", "fs:/var/lib/ade-backup"),
        (
            "ADE_BACKUP_SERVICEBUS_ENDPOINT",
            "https://ns.servicebus.windows.net/",
        ),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Settings, SettingsError> {
        let mut v: Vec<(&str, &str)> = BASE.to_vec();
        for (k, val) in extra {
            v.retain(|(kk, _)| kk != k);
            v.push((k, val));
        }
        load(&v)
    }

    fn invalid_var(r: Result<Settings, SettingsError>) -> &'static str {
        match r {
            Err(SettingsError::Invalid { var, .. }) | Err(SettingsError::Missing { var, .. }) => {
                var
            }
            Ok(s) => panic!("expected an error, got {s:?}"),
        }
    }

    #[test]
    fn minimal_settings_take_defaults() {
        let s = with(&[]).expect("valid");
        assert_eq!(s.state, StateLocation::Fs("/var/lib/ade-backup".into()));
        assert_eq!(s.arm_endpoint.as_str(), "https://management.azure.com/");
        assert_eq!(s.graph_endpoint.as_str(), "https://graph.microsoft.com/");
        assert_eq!(s.queues, QueueNames::default());
        assert!(s.bms_object_id.is_none() && s.subscriptions.is_empty());
    }

    #[test]
    fn full_settings_parse() {
        let s = with(&[
            (
                "ADE_BACKUP_STATE",
                "https://acct.blob.core.windows.net/ade-state",
            ),
            ("ADE_BACKUP_ARM_ENDPOINT", "http://127.0.0.1:8080"),
            (
                "ADE_BACKUP_BMS_OBJECT_ID",
                "262044b1-e2ce-469f-a196-69ab7ada62d3",
            ),
            (
                "ADE_BACKUP_SUBSCRIPTIONS",
                "00000000-0000-0000-0000-000000000001, 00000000-0000-0000-0000-000000000002",
            ),
            ("ADE_BACKUP_QUEUE_BACKUP_VM", "backup-vm-eu"),
        ])
        .expect("valid");
        assert!(matches!(s.state, StateLocation::Blob { .. }));
        assert_eq!(s.arm_endpoint.as_str(), "http://127.0.0.1:8080/");
        assert!(s.bms_object_id.is_some());
        assert_eq!(s.subscriptions.len(), 2);
        assert_eq!(s.queues.backup_vm, "backup-vm-eu");
        let azurite = with(&[(
            "ADE_BACKUP_STATE",
            "http://127.0.0.1:10000/devstoreaccount1/state",
        )]);
        assert!(azurite.is_ok(), "{azurite:?}");
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(invalid_var(load(&[BASE[1]])), "ADE_BACKUP_STATE");
        assert_eq!(
            invalid_var(load(&[BASE[0]])),
            "ADE_BACKUP_SERVICEBUS_ENDPOINT"
        );
        for (var, bad) in [
            ("ADE_BACKUP_STATE", "fs:"),
            ("ADE_BACKUP_STATE", "/just/a/path"),
            (
                "ADE_BACKUP_STATE",
                "https://acct.blob.core.windows.net/state?sv=2024&sig=secret",
            ),
            ("ADE_BACKUP_STATE", "https://acct.blob.core.windows.net/"),
            (
                "ADE_BACKUP_STATE",
                "https://acct.blob.core.windows.net/Bad_Container",
            ),
            (
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "http://ns.servicebus.windows.net/",
            ),
            (
                "ADE_BACKUP_SERVICEBUS_ENDPOINT",
                "ns.servicebus.windows.net",
            ),
            (
                "ADE_BACKUP_ARM_ENDPOINT",
                "https://user:pw@management.azure.com",
            ),
            ("ADE_BACKUP_GRAPH_ENDPOINT", "ftp://graph.microsoft.com"),
            ("ADE_BACKUP_BMS_OBJECT_ID", "not-a-guid"),
            (
                "ADE_BACKUP_SUBSCRIPTIONS",
                "00000000-0000-0000-0000-000000000001,nope",
            ),
            ("ADE_BACKUP_QUEUE_RESTORE_VM", "-starts-badly"),
            ("ADE_BACKUP_QUEUE_REDEPLOY_VM", "has space"),
        ] {
            assert_eq!(invalid_var(with(&[(var, bad)])), var, "{var}={bad}");
        }
    }

    #[test]
    fn sas_tokens_are_never_echoed_in_errors() {
        let err = with(&[(
            "ADE_BACKUP_STATE",
            "https://acct.blob.core.windows.net/state?sig=supersecret",
        )])
        .expect_err("refused");
        assert!(!err.to_string().contains("supersecret"), "{err}");
    }
}
