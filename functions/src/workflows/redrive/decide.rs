//! Whether one dead-lettered message gets another attempt: a pure function of what the message
//! says (its dead-letter reason), what ade-backup recorded about it (a poison verdict at
//! `deadletters/`, earlier attempts at `redrives/`) and the settings.
//!
//! Only messages Service Bus dead-lettered because their deliveries ran out
//! (`MaxDeliveryCountExceeded`) are candidates: a crash storm or a long Azure outage can spend a
//! healthy message's deliveries. A message ade-backup judged poison stays for a human, whatever
//! the broker's reason (in Azure the host cannot dead-lettered with our reason, so poison also
//! arrives as `MaxDeliveryCountExceeded`; the recorded verdict tells them apart).

use crate::records::{RedriveOutcome, RedriveRecord};
use crate::settings::RedriveSettings;
use chrono::{DateTime, Utc};

/// The reason Service Bus gives a message whose deliveries ran out.
pub const MAX_DELIVERY_COUNT_EXCEEDED: &str = "MaxDeliveryCountExceeded";

/// What the redrive does with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run its function again; this is attempt number `attempt` (1-based).
    Redrive { attempt: u32 },
    /// A previous attempt completed but could not delete the dead letter: delete it now.
    Delete,
    /// Leave it in the dead-letter queue.
    Leave(Leave),
}

/// Why a dead letter is left where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Leave {
    /// Dead-lettered for another reason than failed deliveries (a poison verdict of the local
    /// host, an expired time-to-live, an operator's choice).
    NotADeliveryFailure,
    /// ade-backup judged it poison.
    Poison,
    /// Every allowed attempt was made.
    AttemptsSpent,
    /// The wait after the last attempt has not passed yet.
    BackingOff,
}

impl Leave {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotADeliveryFailure => "not-a-delivery-failure",
            Self::Poison => "poison",
            Self::AttemptsSpent => "attempts-spent",
            Self::BackingOff => "backing-off",
        }
    }
}

/// What is known about one dead letter.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The message's `DeadLetterReason`.
    pub reason: Option<&'a str>,
    /// The reason recorded at `deadletters/{queue}/{messageId}.json`, if any.
    pub recorded_reason: Option<&'a str>,
    /// `redrives/{queue}/{messageId}.json`, if any.
    pub history: Option<&'a RedriveRecord>,
}

pub fn decide(facts: Facts<'_>, settings: &RedriveSettings, now: DateTime<Utc>) -> Decision {
    if facts.reason != Some(MAX_DELIVERY_COUNT_EXCEEDED) {
        return Decision::Leave(Leave::NotADeliveryFailure);
    }
    if facts
        .recorded_reason
        .is_some_and(|r| r != MAX_DELIVERY_COUNT_EXCEEDED)
    {
        return Decision::Leave(Leave::Poison);
    }
    let Some(history) = facts.history else {
        return if settings.max_attempts == 0 {
            Decision::Leave(Leave::AttemptsSpent)
        } else {
            Decision::Redrive { attempt: 1 }
        };
    };
    match history.last_outcome {
        RedriveOutcome::Completed => return Decision::Delete,
        RedriveOutcome::Poison => return Decision::Leave(Leave::Poison),
        RedriveOutcome::Running | RedriveOutcome::Failed => {}
    }
    if history.attempts >= settings.max_attempts {
        return Decision::Leave(Leave::AttemptsSpent);
    }
    if now < next_attempt_at(history, settings) {
        return Decision::Leave(Leave::BackingOff);
    }
    Decision::Redrive {
        attempt: history.attempts + 1,
    }
}

/// The backoff after `attempts` attempts: `backoff × 2^(attempts-1)`, from the last one.
pub fn next_attempt_at(history: &RedriveRecord, settings: &RedriveSettings) -> DateTime<Utc> {
    let doublings = history.attempts.saturating_sub(1).min(16);
    let wait = settings.backoff.saturating_mul(1u32 << doublings);
    history.last_attempt_at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid time")
    }

    fn settings() -> RedriveSettings {
        RedriveSettings {
            max_attempts: 3,
            backoff: Duration::from_secs(60),
            max_per_run: 50,
        }
    }

    fn history(attempts: u32, last: i64, outcome: RedriveOutcome) -> RedriveRecord {
        RedriveRecord {
            queue: "backup-vm".into(),
            message_id: "m1".into(),
            function: "BackupVm".into(),
            attempts,
            first_attempt_at: t(0),
            last_attempt_at: t(last),
            last_outcome: outcome,
            last_error: None,
        }
    }

    fn facts<'a>(
        reason: Option<&'a str>,
        recorded: Option<&'a str>,
        history: Option<&'a RedriveRecord>,
    ) -> Facts<'a> {
        Facts {
            reason,
            recorded_reason: recorded,
            history,
        }
    }

    const MAX: Option<&str> = Some(MAX_DELIVERY_COUNT_EXCEEDED);

    #[test]
    fn a_message_whose_deliveries_ran_out_gets_its_first_attempt_at_once() {
        assert_eq!(
            decide(facts(MAX, None, None), &settings(), t(0)),
            Decision::Redrive { attempt: 1 }
        );
        // The last delivery's transient error is recorded under the same reason: still eligible.
        assert_eq!(
            decide(facts(MAX, MAX, None), &settings(), t(0)),
            Decision::Redrive { attempt: 1 }
        );
    }

    #[test]
    fn other_reasons_and_poison_verdicts_are_left_for_a_human() {
        for reason in [
            None,
            Some("InvalidRestoreRequest"),
            Some("TTLExpiredException"),
        ] {
            assert_eq!(
                decide(facts(reason, None, None), &settings(), t(0)),
                Decision::Leave(Leave::NotADeliveryFailure),
                "{reason:?}"
            );
        }
        assert_eq!(
            decide(
                facts(MAX, Some("InvalidRestoreRequest"), None),
                &settings(),
                t(0)
            ),
            Decision::Leave(Leave::Poison)
        );
        let h = history(1, 0, RedriveOutcome::Poison);
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h)), &settings(), t(10_000)),
            Decision::Leave(Leave::Poison)
        );
    }

    #[test]
    fn attempts_back_off_doubling_and_stop_at_the_cap() {
        let s = settings();
        let h1 = history(1, 100, RedriveOutcome::Failed);
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h1)), &s, t(159)),
            Decision::Leave(Leave::BackingOff)
        );
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h1)), &s, t(160)),
            Decision::Redrive { attempt: 2 }
        );
        // A crash during the attempt (still `running`) counts like a failure.
        let h2 = history(2, 100, RedriveOutcome::Running);
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h2)), &s, t(219)),
            Decision::Leave(Leave::BackingOff)
        );
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h2)), &s, t(220)),
            Decision::Redrive { attempt: 3 }
        );
        let h3 = history(3, 100, RedriveOutcome::Failed);
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h3)), &s, t(1_000_000)),
            Decision::Leave(Leave::AttemptsSpent)
        );
    }

    #[test]
    fn zero_attempts_turns_the_redrive_off() {
        let off = RedriveSettings {
            max_attempts: 0,
            ..settings()
        };
        assert_eq!(
            decide(facts(MAX, None, None), &off, t(0)),
            Decision::Leave(Leave::AttemptsSpent)
        );
    }

    #[test]
    fn a_completed_attempt_whose_delete_was_lost_is_deleted_without_running_again() {
        let h = history(1, 0, RedriveOutcome::Completed);
        assert_eq!(
            decide(facts(MAX, MAX, Some(&h)), &settings(), t(1)),
            Decision::Delete
        );
    }
}
