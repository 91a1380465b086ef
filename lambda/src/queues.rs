//! The queue map: ade-backup's logical queue names (the registry's, e.g. `backup-vm`) to SQS
//! queue URLs, from `ADE_BACKUP_SQS_QUEUES` (a JSON object). Sending looks a logical name up;
//! receiving maps an SQS record's `eventSourceARN` back to the logical name by the queue's
//! account and name (an SQS queue URL is `https://sqs.{region}.amazonaws.com/{account}/{name}`
//! and its ARN `arn:aws:sqs:{region}:{account}:{name}`).

use std::collections::BTreeMap;
use url::Url;

/// The setting that holds the map.
pub const QUEUES_VAR: &str = "ADE_BACKUP_SQS_QUEUES";
/// SQS queue names: 1–80 characters, alphanumerics, `-` and `_`, FIFO names end in `.fifo`.
const MAX_QUEUE_NAME_LEN: usize = 80;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueueMapError {
    #[error("{var} is not a JSON object of queue name to SQS queue URL: {reason}", var = QUEUES_VAR)]
    NotAMap { reason: String },
    #[error("{var}: queue {queue:?}: {rule}", var = QUEUES_VAR)]
    InvalidEntry { queue: String, rule: String },
    #[error("event source ARN {arn:?} is not an SQS queue ARN (arn:aws:sqs:region:account:name)")]
    InvalidArn { arn: String },
    #[error("event source ARN {arn:?} is none of the configured queues ({var})", var = QUEUES_VAR)]
    UnknownArn { arn: String },
}

/// One configured queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsQueue {
    pub url: String,
    pub account: String,
    pub name: String,
}

impl SqsQueue {
    /// FIFO queues (name ends in `.fifo`) need a group id and deduplicate by id.
    pub fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }
}

/// Logical queue name → SQS queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueMap {
    queues: BTreeMap<String, SqsQueue>,
}

fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= MAX_QUEUE_NAME_LEN
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_url(queue: &str, raw: &str) -> Result<SqsQueue, QueueMapError> {
    let bad = |rule: &str| QueueMapError::InvalidEntry {
        queue: queue.to_string(),
        rule: rule.to_string(),
    };
    let url = Url::parse(raw).map_err(|e| bad(&format!("not a URL: {e}")))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(bad(
            "the queue URL must be https (plain http only on loopback, for emulators)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("the queue URL must not have a query or fragment"));
    }
    let segments: Vec<&str> = url
        .path_segments()
        .map(Iterator::collect)
        .unwrap_or_default();
    let [account, name] = segments.as_slice() else {
        return Err(bad("the queue URL's path must be /{account}/{queue name}"));
    };
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("the account in the queue URL must be 12 digits"));
    }
    if !valid_queue_name(name) {
        return Err(bad(
            "the queue name must be 1-80 letters, digits, '-' or '_' (FIFO: ending in .fifo)",
        ));
    }
    Ok(SqsQueue {
        url: raw.to_string(),
        account: (*account).to_string(),
        name: (*name).to_string(),
    })
}

impl QueueMap {
    /// Parses the JSON object `{"backup-vm": "https://sqs.../123456789012/ade-backup-vm", ...}`.
    pub fn parse(json: &str) -> Result<Self, QueueMapError> {
        let raw: BTreeMap<String, String> =
            serde_json::from_str(json).map_err(|e| QueueMapError::NotAMap {
                reason: e.to_string(),
            })?;
        let mut queues = BTreeMap::new();
        for (queue, url) in raw {
            let parsed = parse_url(&queue, &url)?;
            if let Some((other, _)) = queues.iter().find(|(_, q): &(&String, &SqsQueue)| {
                q.name == parsed.name && q.account == parsed.account
            }) {
                return Err(QueueMapError::InvalidEntry {
                    queue,
                    rule: format!("the same SQS queue is already mapped to {other:?}"),
                });
            }
            queues.insert(queue, parsed);
        }
        Ok(Self { queues })
    }

    /// The SQS queue of a logical name.
    pub fn get(&self, logical: &str) -> Option<&SqsQueue> {
        self.queues.get(logical)
    }

    /// The logical queue name of an SQS record's `eventSourceARN`.
    pub fn logical_for_arn(&self, arn: &str) -> Result<&str, QueueMapError> {
        let parts: Vec<&str> = arn.split(':').collect();
        let ["arn", _partition, "sqs", _region, account, name] = parts.as_slice() else {
            return Err(QueueMapError::InvalidArn {
                arn: arn.to_string(),
            });
        };
        self.queues
            .iter()
            .find(|(_, q)| q.account == *account && q.name == *name)
            .map(|(logical, _)| logical.as_str())
            .ok_or_else(|| QueueMapError::UnknownArn {
                arn: arn.to_string(),
            })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.queues.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"{"backup-vm": "https://sqs.eu-west-1.amazonaws.com/123456789012/ade-backup-vm",
        "vm-encryption-events": "http://127.0.0.1:5000/123456789012/events.fifo"}"#;

    #[test]
    fn arns_map_back_to_logical_names() {
        let m = QueueMap::parse(MAP).expect("valid map");
        assert_eq!(
            m.logical_for_arn("arn:aws:sqs:eu-west-1:123456789012:ade-backup-vm"),
            Ok("backup-vm")
        );
        assert_eq!(
            m.logical_for_arn("arn:aws:sqs:us-east-1:123456789012:events.fifo"),
            Ok("vm-encryption-events")
        );
        assert!(m.get("vm-encryption-events").is_some_and(SqsQueue::is_fifo));
        assert!(!m.get("backup-vm").is_some_and(SqsQueue::is_fifo));
        assert!(matches!(
            m.logical_for_arn("arn:aws:sqs:eu-west-1:999999999999:ade-backup-vm"),
            Err(QueueMapError::UnknownArn { .. })
        ));
        assert!(matches!(
            m.logical_for_arn("arn:aws:sns:eu-west-1:123456789012:ade-backup-vm"),
            Err(QueueMapError::InvalidArn { .. })
        ));
    }

    #[test]
    fn bad_entries_name_the_queue_and_rule() {
        for (json, needle) in [
            (r#"["x"]"#, "JSON object"),
            (r#"{"q": "http://sqs.example.com/123456789012/q"}"#, "https"),
            (r#"{"q": "https://sqs.x/123456789012/q?a=b"}"#, "query"),
            (r#"{"q": "https://sqs.x/12345/q"}"#, "12 digits"),
            (
                r#"{"q": "https://sqs.x/123456789012/bad name"}"#,
                "queue name",
            ),
            (r#"{"q": "https://sqs.x/123456789012"}"#, "path"),
            (
                r#"{"a": "https://sqs.x/123456789012/q", "b": "https://sqs.x/123456789012/q"}"#,
                "already mapped",
            ),
        ] {
            let e = QueueMap::parse(json).expect_err(json).to_string();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }
}
