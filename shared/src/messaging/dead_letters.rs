//! Reading a queue's dead-letter sub-queue (`{queue}/$DeadLetterQueue`): peek-lock the next
//! message, then complete (delete) or unlock it. The product's `RedriveDeadLetters` timer uses it
//! to give messages that Service Bus dead-lettered after `maxDeliveryCount` failed deliveries a
//! capped number of further attempts.
//!
//! CONTRACT (filled in by the REST client below; the embedded local queue serves the same wire
//! format in `functions/src/local/sb_endpoint.rs`).

use super::MessagingError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The application property Service Bus sets on a dead-lettered message: why it was moved.
pub const DEAD_LETTER_REASON: &str = "DeadLetterReason";
/// The application property Service Bus sets on a dead-lettered message: the description.
pub const DEAD_LETTER_DESCRIPTION: &str = "DeadLetterErrorDescription";

/// A message peek-locked from a queue's dead-letter sub-queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetteredMessage {
    /// The queue whose dead-letter sub-queue held it (not the `$DeadLetterQueue` path).
    pub queue: String,
    pub message_id: String,
    pub sequence_number: i64,
    pub lock_token: String,
    pub delivery_count: u32,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub enqueued_time: Option<DateTime<Utc>>,
    pub body: Vec<u8>,
    /// Application properties as received (names lower-case over HTTP), string values unquoted;
    /// includes [`DEAD_LETTER_REASON`] and [`DEAD_LETTER_DESCRIPTION`].
    pub properties: BTreeMap<String, String>,
}

impl DeadLetteredMessage {
    /// An application property by name, case-insensitively.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Why the broker (or a receiver) dead-lettered it.
    pub fn reason(&self) -> Option<&str> {
        self.property(DEAD_LETTER_REASON)
    }

    pub fn description(&self) -> Option<&str> {
        self.property(DEAD_LETTER_DESCRIPTION)
    }
}

/// Peek-lock access to dead-letter sub-queues.
#[async_trait]
pub trait DeadLetterReceiver: Send + Sync {
    /// Peek-locks the oldest unlocked message of `{queue}/$DeadLetterQueue`; `None` when there is
    /// none (a locked message is skipped, as Service Bus does).
    async fn receive(&self, queue: &str) -> Result<Option<DeadLetteredMessage>, MessagingError>;
    /// Deletes the locked message for good.
    async fn complete(&self, message: &DeadLetteredMessage) -> Result<(), MessagingError>;
    /// Releases the lock: the message stays in the dead-letter sub-queue.
    async fn unlock(&self, message: &DeadLetteredMessage) -> Result<(), MessagingError>;
}

/// The Service Bus REST client for [`DeadLetterReceiver`] (see the module docs).
pub struct ServiceBusDeadLetters {}
