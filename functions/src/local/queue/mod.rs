//! The embedded local queue: named queues with the Service Bus semantics the product relies on
//! (peek-lock, delivery count, abandon, dead-letter, max delivery count, scheduled delivery,
//! duplicate detection by `MessageId`), persisted in the state directory.
//!
//! Persistence: one JSON snapshot per queue (`{dir}/{queue}.json`), rewritten on every durable
//! change by write-to-temp + fsync + rename + fsync of the directory. A local run holds tens to a
//! few thousand messages, so rewriting a snapshot costs little, and a snapshot can never be half
//! applied: after a crash the file is either the old or the new state. A journal would save
//! bytes but needs compaction and torn-tail recovery, which buys nothing at this size.
//!
//! Locks are deliberately *not* persisted: a restart of the local runtime releases every lock
//! (its holder is gone). The delivery count, however, is persisted at the moment a lock is taken,
//! so a crash mid-processing counts as a delivery, exactly as in Service Bus.
//!
//! The dead-letter list is a sub-queue with the same peek-lock semantics (`dead_letters.rs`):
//! receive, then complete (delete) or unlock.
//!
//! Defaults follow the queues in `infra/main.bicep` and the Service Bus docs: lock 60 s,
//! max delivery count 10, duplicate detection window 10 min.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use uuid::Uuid;

mod dead_letters;
pub use dead_letters::ReceivedDeadLetter;

/// Dead-letter reason Service Bus uses when the max delivery count is exceeded.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";
const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct LocalQueueOptions {
    pub lock_duration: Duration,
    pub max_delivery_count: u32,
    pub duplicate_detection_window: Duration,
}

impl Default for LocalQueueOptions {
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_detection_window: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LocalQueueError {
    #[error("invalid queue name {queue:?}: {rule}")]
    InvalidQueueName { queue: String, rule: &'static str },
    #[error("local queue I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("local queue snapshot {path} is not valid JSON for this version: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("lock {lock_token} on queue {queue:?} is not held (expired, settled or never taken)")]
    LockLost { queue: String, lock_token: Uuid },
    #[error("local queue invariant broken: {0}")]
    Internal(&'static str),
}

/// A message to enqueue (what a sender supplies).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMessage {
    /// `None` gets a fresh id (and, like Service Bus, no duplicate detection can apply).
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub properties: BTreeMap<String, String>,
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedMessage {
    pub sequence_number: u64,
    pub message_id: String,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    #[serde(with = "hex_bytes")]
    pub body: Vec<u8>,
    pub properties: BTreeMap<String, String>,
    pub enqueued_time: DateTime<Utc>,
    pub scheduled_enqueue_time: Option<DateTime<Utc>>,
    pub delivery_count: u32,
}

/// A message handed out under a peek-lock.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub message: QueuedMessage,
    pub lock_token: Uuid,
    pub locked_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message: QueuedMessage,
    pub reason: String,
    pub description: String,
    pub dead_lettered_at: DateTime<Utc>,
    /// Peek-locks taken on it in the dead-letter sub-queue (its delivery count there).
    #[serde(default)]
    pub receive_count: u32,
    /// A receiver peek-locked it and unlocked it on purpose (it decided to leave it); an expired
    /// lock does not set it.
    #[serde(default)]
    pub left_by_receiver: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Enqueued {
        sequence_number: u64,
    },
    /// Same `MessageId` seen within the duplicate detection window: accepted and dropped.
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbandonOutcome {
    /// Visible again for the next delivery.
    Requeued,
    /// The delivery count reached the maximum: moved to the dead-letter list.
    DeadLettered,
}

/// Counts used to decide whether the local runtime is idle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Visible now.
    pub active: usize,
    pub locked: usize,
    /// Not yet visible (scheduled in the future).
    pub scheduled: usize,
    /// When the earliest not-yet-visible message becomes visible (scheduled time or lock expiry).
    pub next_visible_at: Option<DateTime<Utc>>,
    pub dead_lettered: usize,
    /// Dead letters with reason [`MAX_DELIVERY_COUNT_EXCEEDED`] that a receiver holds locked now
    /// or has not yet left on purpose (see [`DeadLetter::left_by_receiver`]).
    pub dead_letters_awaiting_redrive: usize,
}

#[derive(Debug, Clone, Copy)]
struct Lock {
    token: Uuid,
    until: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    next_sequence: u64,
    messages: Vec<QueuedMessage>,
    dead_letters: Vec<DeadLetter>,
    /// MessageId → time it was last accepted, for duplicate detection.
    seen_message_ids: BTreeMap<String, DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct QueueState {
    snapshot: Snapshot,
    /// sequence number → lock; in memory only (see module docs).
    locks: HashMap<u64, Lock>,
    /// The same for the dead-letter sub-queue.
    dead_letter_locks: HashMap<u64, Lock>,
}

struct Inner {
    dir: PathBuf,
    options: LocalQueueOptions,
    queues: BTreeMap<String, QueueState>,
}

/// Handle to the local queues; cheap to clone, shared between the SB endpoint and dispatchers.
#[derive(Clone)]
pub struct LocalQueue {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for LocalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalQueue").finish_non_exhaustive()
    }
}

/// Service Bus entity naming rule for a single path segment (the local endpoint serves
/// `/{queue}/messages`, so no slashes): 1–260 characters, letters, digits, `.`, `-`, `_`,
/// starting and ending with a letter or digit. Names are case-insensitive, stored lowercase.
pub fn validate_queue_name(queue: &str) -> Result<String, LocalQueueError> {
    let invalid = |rule| LocalQueueError::InvalidQueueName {
        queue: queue.to_string(),
        rule,
    };
    if queue.is_empty() || queue.len() > 260 {
        return Err(invalid("must be 1 to 260 characters long"));
    }
    if !queue
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(invalid(
            "may contain only letters, digits, periods, hyphens and underscores",
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(queue.chars().next()) || !alnum(queue.chars().last()) {
        return Err(invalid("must start and end with a letter or digit"));
    }
    Ok(queue.to_ascii_lowercase())
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl LocalQueue {
    /// Opens (creating if needed) the queue directory and loads every queue snapshot in it.
    /// Locks held before a crash are released; delivery counts are kept.
    pub fn open(dir: &Path, options: LocalQueueOptions) -> Result<LocalQueue, LocalQueueError> {
        let io = |source| LocalQueueError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut queues = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".json.tmp") {
                // A write that never reached its rename: the snapshot beside it is authoritative.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(queue) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(queue) = validate_queue_name(queue) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(|source| LocalQueueError::Io {
                path: path.clone(),
                source,
            })?;
            let snapshot: Snapshot =
                serde_json::from_slice(&bytes).map_err(|source| LocalQueueError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            queues.insert(
                queue,
                QueueState {
                    snapshot,
                    ..QueueState::default()
                },
            );
        }
        Ok(LocalQueue {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_path_buf(),
                options,
                queues,
            })),
            changed: Arc::new(tokio::sync::Notify::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-written snapshot on disk (writes
        // are atomic), so the in-memory state is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn options(&self) -> LocalQueueOptions {
        self.lock().options.clone()
    }

    /// Resolves when something was enqueued or released (a hint; callers still poll).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Creates the queue if it does not exist yet.
    pub fn ensure_queue(&self, queue: &str) -> Result<(), LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        if !inner.queues.contains_key(&queue) {
            inner.queues.insert(queue.clone(), QueueState::default());
            inner.persist(&queue)?;
        }
        Ok(())
    }

    pub fn queue_names(&self) -> Vec<String> {
        self.lock().queues.keys().cloned().collect()
    }

    /// Enqueues a message (creating the queue on first use).
    pub fn send(&self, queue: &str, message: NewMessage) -> Result<SendOutcome, LocalQueueError> {
        self.send_at(queue, message, Utc::now())
    }

    fn send_at(
        &self,
        queue: &str,
        message: NewMessage,
        now: DateTime<Utc>,
    ) -> Result<SendOutcome, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let outcome = {
            let mut inner = self.lock();
            let window = chrono_dur(inner.options.duplicate_detection_window);
            let state = inner.queues.entry(queue.clone()).or_default();
            let snapshot = &mut state.snapshot;
            snapshot.seen_message_ids.retain(|_, at| *at + window > now);
            if let Some(id) = &message.message_id {
                if snapshot.seen_message_ids.contains_key(id) {
                    return Ok(SendOutcome::Duplicate);
                }
            }
            let message_id = message
                .message_id
                .unwrap_or_else(|| Uuid::new_v4().simple().to_string());
            snapshot.next_sequence += 1;
            let sequence_number = snapshot.next_sequence;
            snapshot.seen_message_ids.insert(message_id.clone(), now);
            snapshot.messages.push(QueuedMessage {
                sequence_number,
                message_id,
                correlation_id: message.correlation_id,
                content_type: message.content_type,
                body: message.body,
                properties: message.properties,
                enqueued_time: now,
                scheduled_enqueue_time: message.scheduled_enqueue_time,
                delivery_count: 0,
            });
            inner.persist(&queue)?;
            SendOutcome::Enqueued { sequence_number }
        };
        self.changed.notify_waiters();
        Ok(outcome)
    }

    /// Peek-lock: takes the oldest visible message, increments and persists its delivery count.
    pub fn receive(&self, queue: &str) -> Result<Option<ReceivedMessage>, LocalQueueError> {
        self.receive_at(queue, Utc::now())
    }

    fn receive_at(
        &self,
        queue: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ReceivedMessage>, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        inner.sweep(&queue, now)?;
        let lock_for = chrono_dur(inner.options.lock_duration);
        let Some(state) = inner.queues.get_mut(&queue) else {
            return Ok(None);
        };
        let candidate = state
            .snapshot
            .messages
            .iter_mut()
            .filter(|m| !state.locks.contains_key(&m.sequence_number))
            .filter(|m| m.scheduled_enqueue_time.is_none_or(|t| t <= now))
            .min_by_key(|m| m.sequence_number);
        let Some(message) = candidate else {
            return Ok(None);
        };
        message.delivery_count += 1;
        let lock = Lock {
            token: Uuid::new_v4(),
            until: now + lock_for,
        };
        let received = ReceivedMessage {
            message: message.clone(),
            lock_token: lock.token,
            locked_until: lock.until,
        };
        state.locks.insert(message.sequence_number, lock);
        inner.persist(&queue)?;
        Ok(Some(received))
    }

    /// Extends a held lock by the lock duration (the Functions host renews while a function runs).
    pub fn renew_lock(
        &self,
        queue: &str,
        lock_token: Uuid,
    ) -> Result<DateTime<Utc>, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let now = Utc::now();
        let mut inner = self.lock();
        let lock_for = chrono_dur(inner.options.lock_duration);
        let seq = inner.held(&queue, lock_token, now)?;
        let lock = inner
            .queues
            .get_mut(&queue)
            .and_then(|s| s.locks.get_mut(&seq))
            .ok_or(LocalQueueError::Internal("held lock vanished"))?;
        lock.until = now + lock_for;
        Ok(lock.until)
    }

    /// Removes the message for good.
    pub fn complete(&self, queue: &str, lock_token: Uuid) -> Result<(), LocalQueueError> {
        self.complete_at(queue, lock_token, Utc::now())
    }

    fn complete_at(
        &self,
        queue: &str,
        lock_token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        let seq = inner.held(&queue, lock_token, now)?;
        let state = inner
            .queues
            .get_mut(&queue)
            .ok_or(LocalQueueError::Internal("queue of a held lock vanished"))?;
        state.locks.remove(&seq);
        state.snapshot.messages.retain(|m| m.sequence_number != seq);
        inner.persist(&queue)
    }

    /// Releases the lock; the message is visible again, or dead-lettered when its delivery count
    /// has reached the maximum.
    pub fn abandon(
        &self,
        queue: &str,
        lock_token: Uuid,
    ) -> Result<AbandonOutcome, LocalQueueError> {
        self.abandon_at(queue, lock_token, Utc::now())
    }

    fn abandon_at(
        &self,
        queue: &str,
        lock_token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<AbandonOutcome, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let outcome = {
            let mut inner = self.lock();
            let seq = inner.held(&queue, lock_token, now)?;
            let max = inner.options.max_delivery_count;
            let state = inner
                .queues
                .get_mut(&queue)
                .ok_or(LocalQueueError::Internal("queue of a held lock vanished"))?;
            state.locks.remove(&seq);
            let exhausted = state
                .snapshot
                .messages
                .iter()
                .any(|m| m.sequence_number == seq && m.delivery_count >= max);
            if exhausted {
                state.move_to_dead_letters(
                    seq,
                    MAX_DELIVERY_COUNT_EXCEEDED,
                    &max_delivery_description(max),
                    now,
                );
                inner.persist(&queue)?;
                AbandonOutcome::DeadLettered
            } else {
                AbandonOutcome::Requeued
            }
        };
        self.changed.notify_waiters();
        Ok(outcome)
    }

    /// Moves a locked message to the dead-letter list with the given reason and description.
    pub fn dead_letter(
        &self,
        queue: &str,
        lock_token: Uuid,
        reason: &str,
        description: &str,
    ) -> Result<(), LocalQueueError> {
        self.dead_letter_at(queue, lock_token, reason, description, Utc::now())
    }

    fn dead_letter_at(
        &self,
        queue: &str,
        lock_token: Uuid,
        reason: &str,
        description: &str,
        now: DateTime<Utc>,
    ) -> Result<(), LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        let seq = inner.held(&queue, lock_token, now)?;
        let state = inner
            .queues
            .get_mut(&queue)
            .ok_or(LocalQueueError::Internal("queue of a held lock vanished"))?;
        state.locks.remove(&seq);
        state.move_to_dead_letters(seq, reason, description, now);
        inner.persist(&queue)
    }

    /// The dead-letter list of a queue, oldest first.
    pub fn dead_letters(&self, queue: &str) -> Result<Vec<DeadLetter>, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        inner.sweep(&queue, Utc::now())?;
        Ok(inner
            .queues
            .get(&queue)
            .map(|s| s.snapshot.dead_letters.clone())
            .unwrap_or_default())
    }

    /// Every message still in the queue (visible, locked or scheduled), by sequence number.
    pub fn messages(&self, queue: &str) -> Result<Vec<QueuedMessage>, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let inner = self.lock();
        let mut all = inner
            .queues
            .get(&queue)
            .map(|s| s.snapshot.messages.clone())
            .unwrap_or_default();
        all.sort_by_key(|m| m.sequence_number);
        Ok(all)
    }

    pub fn stats(&self, queue: &str) -> Result<QueueStats, LocalQueueError> {
        self.stats_at(queue, Utc::now())
    }

    fn stats_at(&self, queue: &str, now: DateTime<Utc>) -> Result<QueueStats, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        inner.sweep(&queue, now)?;
        let Some(state) = inner.queues.get(&queue) else {
            return Ok(QueueStats::default());
        };
        let mut stats = QueueStats {
            dead_lettered: state.snapshot.dead_letters.len(),
            dead_letters_awaiting_redrive: state.dead_letters_awaiting_redrive(),
            ..QueueStats::default()
        };
        let mut earliest = |t: DateTime<Utc>| {
            stats.next_visible_at = Some(stats.next_visible_at.map_or(t, |e| e.min(t)));
        };
        let (mut active, mut locked, mut scheduled) = (0, 0, 0);
        for m in &state.snapshot.messages {
            if let Some(lock) = state.locks.get(&m.sequence_number) {
                locked += 1;
                earliest(lock.until);
            } else if let Some(t) = m.scheduled_enqueue_time.filter(|t| *t > now) {
                scheduled += 1;
                earliest(t);
            } else {
                active += 1;
            }
        }
        stats.active = active;
        stats.locked = locked;
        stats.scheduled = scheduled;
        Ok(stats)
    }
}

fn max_delivery_description(max: u32) -> String {
    format!("message could not be consumed after {max} delivery attempts")
}

impl QueueState {
    fn move_to_dead_letters(
        &mut self,
        seq: u64,
        reason: &str,
        description: &str,
        now: DateTime<Utc>,
    ) {
        if let Some(pos) = self
            .snapshot
            .messages
            .iter()
            .position(|m| m.sequence_number == seq)
        {
            let message = self.snapshot.messages.remove(pos);
            self.snapshot.dead_letters.push(DeadLetter {
                message,
                reason: reason.to_string(),
                description: description.to_string(),
                dead_lettered_at: now,
                receive_count: 0,
                left_by_receiver: false,
            });
        }
    }
}

impl Inner {
    /// The sequence number of the message a lock token currently holds.
    fn held(
        &self,
        queue: &str,
        lock_token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<u64, LocalQueueError> {
        self.queues
            .get(queue)
            .and_then(|s| {
                s.locks
                    .iter()
                    .find(|(_, l)| l.token == lock_token && l.until > now)
                    .map(|(seq, _)| *seq)
            })
            .ok_or_else(|| LocalQueueError::LockLost {
                queue: queue.to_string(),
                lock_token,
            })
    }

    /// Releases expired locks and dead-letters unlocked messages whose delivery count is spent
    /// (a lock that expired on the last allowed delivery, or a count carried over a restart).
    fn sweep(&mut self, queue: &str, now: DateTime<Utc>) -> Result<(), LocalQueueError> {
        let max = self.options.max_delivery_count;
        let Some(state) = self.queues.get_mut(queue) else {
            return Ok(());
        };
        state.locks.retain(|_, l| l.until > now);
        state.dead_letter_locks.retain(|_, l| l.until > now);
        let spent: Vec<u64> = state
            .snapshot
            .messages
            .iter()
            .filter(|m| m.delivery_count >= max && !state.locks.contains_key(&m.sequence_number))
            .map(|m| m.sequence_number)
            .collect();
        if spent.is_empty() {
            return Ok(());
        }
        let description = max_delivery_description(max);
        for seq in spent {
            state.move_to_dead_letters(seq, MAX_DELIVERY_COUNT_EXCEEDED, &description, now);
        }
        self.persist(queue)
    }

    fn persist(&mut self, queue: &str) -> Result<(), LocalQueueError> {
        let state = self.queues.get_mut(queue).ok_or(LocalQueueError::Internal(
            "persisting a queue that does not exist",
        ))?;
        state.snapshot.version = SNAPSHOT_VERSION;
        let bytes =
            serde_json::to_vec(&state.snapshot).map_err(|source| LocalQueueError::Corrupt {
                path: self.dir.join(format!("{queue}.json")),
                source,
            })?;
        write_atomically(&self.dir, &format!("{queue}.json"), &bytes)
    }
}

/// write temp → fsync → rename → fsync directory, so a crash leaves the old or the new file.
fn write_atomically(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<(), LocalQueueError> {
    let target = dir.join(file_name);
    let tmp = dir.join(format!("{file_name}.tmp"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LocalQueueError::Io { path, source }
    };
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, &target).map_err(io(&target))?;
    // Directory fsync makes the rename itself durable; not supported on every platform.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
