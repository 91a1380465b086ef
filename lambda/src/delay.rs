//! Delays beyond SQS's 15-minute maximum, as a re-enqueue chain. A scheduled message carries its
//! due time (`ade-due-at`) and is sent with `DelaySeconds` = the remaining delay, capped at 900
//! (the `SendMessage` maximum); a receiver that gets it more than [`EARLY_TOLERANCE`] before its
//! due time sends it on again instead of handling it. Each hop waits up to 15 minutes, so a
//! 2-hour follow-up is 8 hops, each one `SendMessage` + one delete.

use chrono::{DateTime, Duration, Utc};

/// SQS `DelaySeconds` maximum: 15 minutes.
pub const MAX_DELAY_SECONDS: i32 = 900;
/// A message this close to its due time is handled, not sent on.
pub const EARLY_TOLERANCE: Duration = Duration::seconds(1);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("message attribute ade-due-at {value:?} is not an RFC 3339 time")]
pub struct InvalidDueAt {
    pub value: String,
}

/// `DelaySeconds` for the next hop towards `due`: the remaining delay rounded up (never early),
/// at most [`MAX_DELAY_SECONDS`]; 0 when due.
pub fn hop_seconds(due: DateTime<Utc>, now: DateTime<Utc>) -> i32 {
    let remaining_ms = (due - now).num_milliseconds();
    if remaining_ms <= 0 {
        return 0;
    }
    let seconds = (remaining_ms + 999) / 1000;
    i32::try_from(seconds.min(i64::from(MAX_DELAY_SECONDS))).unwrap_or(MAX_DELAY_SECONDS)
}

/// The due time of a received message that arrived early (so must be sent on), or `None` when
/// it has no due time or is due.
pub fn early(
    due_at: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, InvalidDueAt> {
    let Some(raw) = due_at else {
        return Ok(None);
    };
    let due = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| InvalidDueAt {
            value: raw.to_string(),
        })?
        .with_timezone(&Utc);
    Ok((due - now > EARLY_TOLERANCE).then_some(due))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn hops_are_capped_at_fifteen_minutes_and_never_early() {
        let now = t("2030-01-01T00:00:00Z");
        assert_eq!(hop_seconds(now, now), 0);
        assert_eq!(hop_seconds(t("2029-12-31T23:00:00Z"), now), 0);
        assert_eq!(hop_seconds(t("2030-01-01T00:00:00.001Z"), now), 1);
        assert_eq!(hop_seconds(t("2030-01-01T00:14:59.500Z"), now), 900);
        assert_eq!(hop_seconds(t("2030-01-01T02:00:00Z"), now), 900);
        // A 2-hour delay: 8 hops of 900 s.
        let due = t("2030-01-01T02:00:00Z");
        let (mut at, mut hops) = (now, 0);
        while let Some(d) = early(Some("2030-01-01T02:00:00Z"), at).expect("valid") {
            at += Duration::seconds(i64::from(hop_seconds(d, at)));
            hops += 1;
        }
        assert_eq!((hops, at), (8, due));
    }

    #[test]
    fn early_only_beyond_the_tolerance() {
        let now = t("2030-01-01T00:00:00Z");
        assert_eq!(early(None, now), Ok(None));
        assert_eq!(early(Some("2030-01-01T00:00:00.900Z"), now), Ok(None));
        assert_eq!(
            early(Some("2030-01-01T00:00:05Z"), now),
            Ok(Some(t("2030-01-01T00:00:05Z")))
        );
        assert!(early(Some("tomorrow"), now).is_err());
    }
}
