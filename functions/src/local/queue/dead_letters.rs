//! The dead-letter sub-queue (`{queue}/$DeadLetterQueue` in Service Bus): peek-lock the oldest
//! dead letter nobody holds, then complete (delete for good) or unlock it (leave it there).
//!
//! Locks live in memory beside the main queue's (same lock duration, released when they expire or
//! the runtime restarts). What a receiver did is persisted on the [`DeadLetter`]: how many times it
//! was locked (`receive_count`) and whether a receiver unlocked it on purpose
//! (`left_by_receiver`), which `--until-idle --idle-awaits-redrive` reads to tell "the app has not
//! looked at it yet" from "the app decided to leave it".

use super::{
    chrono_dur, validate_queue_name, DeadLetter, Inner, LocalQueue, LocalQueueError, Lock,
    QueueState, MAX_DELIVERY_COUNT_EXCEEDED,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A dead letter handed out under a peek-lock.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedDeadLetter {
    /// As stored, `receive_count` already counting this receive.
    pub dead_letter: DeadLetter,
    pub lock_token: Uuid,
    pub locked_until: DateTime<Utc>,
}

impl LocalQueue {
    /// Peek-lock on the dead-letter sub-queue: the oldest dead letter not locked now (expired
    /// locks are released first); increments and persists its `receive_count`. `None` when every
    /// dead letter is locked or there is none.
    pub fn receive_dead_letter(
        &self,
        queue: &str,
    ) -> Result<Option<ReceivedDeadLetter>, LocalQueueError> {
        self.receive_dead_letter_at(queue, Utc::now())
    }

    pub(super) fn receive_dead_letter_at(
        &self,
        queue: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ReceivedDeadLetter>, LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        inner.sweep(&queue, now)?;
        let lock_for = chrono_dur(inner.options.lock_duration);
        let Some(state) = inner.queues.get_mut(&queue) else {
            return Ok(None);
        };
        // The list is in dead-lettering order, which is the sub-queue's order.
        let Some(dead_letter) = state.snapshot.dead_letters.iter_mut().find(|d| {
            !state
                .dead_letter_locks
                .contains_key(&d.message.sequence_number)
        }) else {
            return Ok(None);
        };
        dead_letter.receive_count += 1;
        let lock = Lock {
            token: Uuid::new_v4(),
            until: now + lock_for,
        };
        let received = ReceivedDeadLetter {
            dead_letter: dead_letter.clone(),
            lock_token: lock.token,
            locked_until: lock.until,
        };
        state
            .dead_letter_locks
            .insert(dead_letter.message.sequence_number, lock);
        inner.persist(&queue)?;
        Ok(Some(received))
    }

    /// Removes a locked dead letter for good.
    pub fn complete_dead_letter(
        &self,
        queue: &str,
        sequence_number: u64,
        lock_token: Uuid,
    ) -> Result<(), LocalQueueError> {
        self.complete_dead_letter_at(queue, sequence_number, lock_token, Utc::now())
    }

    pub(super) fn complete_dead_letter_at(
        &self,
        queue: &str,
        sequence_number: u64,
        lock_token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), LocalQueueError> {
        self.settle_dead_letter(queue, sequence_number, lock_token, now, |dead_letters| {
            dead_letters.retain(|d| d.message.sequence_number != sequence_number)
        })
    }

    /// Releases the lock on a dead letter, which stays in the sub-queue marked
    /// `left_by_receiver` (a receiver looked at it and chose to leave it).
    pub fn unlock_dead_letter(
        &self,
        queue: &str,
        sequence_number: u64,
        lock_token: Uuid,
    ) -> Result<(), LocalQueueError> {
        self.unlock_dead_letter_at(queue, sequence_number, lock_token, Utc::now())
    }

    pub(super) fn unlock_dead_letter_at(
        &self,
        queue: &str,
        sequence_number: u64,
        lock_token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), LocalQueueError> {
        self.settle_dead_letter(queue, sequence_number, lock_token, now, |dead_letters| {
            let held = dead_letters
                .iter_mut()
                .find(|d| d.message.sequence_number == sequence_number);
            if let Some(d) = held {
                d.left_by_receiver = true;
            }
        })
    }

    /// Releases the lock `lock_token` holds on dead letter `sequence_number`, applies `change`
    /// to the dead-letter list and persists it; `LockLost` when the token does not hold it.
    fn settle_dead_letter(
        &self,
        queue: &str,
        sequence_number: u64,
        lock_token: Uuid,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Vec<DeadLetter>),
    ) -> Result<(), LocalQueueError> {
        let queue = validate_queue_name(queue)?;
        let mut inner = self.lock();
        let state = inner.held_dead_letter(&queue, sequence_number, lock_token, now)?;
        state.dead_letter_locks.remove(&sequence_number);
        change(&mut state.snapshot.dead_letters);
        inner.persist(&queue)
    }
}

impl Inner {
    /// The queue whose dead letter `sequence_number` is locked now by `lock_token`.
    fn held_dead_letter(
        &mut self,
        queue: &str,
        sequence_number: u64,
        lock_token: Uuid,
        now: DateTime<Utc>,
    ) -> Result<&mut QueueState, LocalQueueError> {
        self.queues
            .get_mut(queue)
            .filter(|s| {
                s.dead_letter_locks
                    .get(&sequence_number)
                    .is_some_and(|l| l.token == lock_token && l.until > now)
                    && s.snapshot
                        .dead_letters
                        .iter()
                        .any(|d| d.message.sequence_number == sequence_number)
            })
            .ok_or_else(|| LocalQueueError::LockLost {
                queue: queue.to_string(),
                lock_token,
            })
    }
}

impl QueueState {
    /// Dead letters the broker moved after the max delivery count that a receiver holds now or
    /// has not yet left on purpose. Expects expired locks to be swept already.
    pub(super) fn dead_letters_awaiting_redrive(&self) -> usize {
        self.snapshot
            .dead_letters
            .iter()
            .filter(|d| d.reason == MAX_DELIVERY_COUNT_EXCEEDED)
            .filter(|d| {
                !d.left_by_receiver
                    || self
                        .dead_letter_locks
                        .contains_key(&d.message.sequence_number)
            })
            .count()
    }
}
