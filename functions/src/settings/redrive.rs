//! The dead-letter redrive (`RedriveDeadLetters`, see `crate::workflows::redrive`):
//!
//! | variable | rule |
//! |---|---|
//! | `ADE_BACKUP_REDRIVE_MAX_ATTEMPTS` | 0..=20, default 3: further attempts a message dead-lettered after `maxDeliveryCount` failed deliveries gets; 0 turns the redrive off |
//! | `ADE_BACKUP_REDRIVE_BACKOFF_MS` | 0..=86400000, default 300000 (5 min): the wait after a message's first redrive attempt, doubled after each further one |
//! | `ADE_BACKUP_REDRIVE_MAX_PER_RUN` | 1..=1000, default 50: dead letters one run looks at, over all queues |

use super::SettingsError;
use std::time::Duration;

/// See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveSettings {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_per_run: u32,
}

impl Default for RedriveSettings {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Duration::from_secs(300),
            max_per_run: 50,
        }
    }
}

pub(super) fn parse(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<RedriveSettings, SettingsError> {
    let number = |var, default, min, max| super::whole_number(get, var, default, min, max);
    let d = RedriveSettings::default();
    Ok(RedriveSettings {
        max_attempts: number(
            "ADE_BACKUP_REDRIVE_MAX_ATTEMPTS",
            u64::from(d.max_attempts),
            0,
            20,
        )? as u32,
        backoff: Duration::from_millis(number(
            "ADE_BACKUP_REDRIVE_BACKOFF_MS",
            d.backoff.as_millis() as u64,
            0,
            86_400_000,
        )?),
        max_per_run: number(
            "ADE_BACKUP_REDRIVE_MAX_PER_RUN",
            u64::from(d.max_per_run),
            1,
            1000,
        )? as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_map(pairs: &[(&str, &str)]) -> Result<RedriveSettings, SettingsError> {
        parse(&|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            parse_map(&[]).expect("defaults"),
            RedriveSettings::default()
        );
        let s = parse_map(&[
            ("ADE_BACKUP_REDRIVE_MAX_ATTEMPTS", "0"),
            ("ADE_BACKUP_REDRIVE_BACKOFF_MS", "1500"),
            ("ADE_BACKUP_REDRIVE_MAX_PER_RUN", "7"),
        ])
        .expect("valid");
        assert_eq!(s.max_attempts, 0);
        assert_eq!(s.backoff, Duration::from_millis(1500));
        assert_eq!(s.max_per_run, 7);
    }

    #[test]
    fn out_of_range_values_name_the_variable_and_the_rule() {
        for (var, value) in [
            ("ADE_BACKUP_REDRIVE_MAX_ATTEMPTS", "21"),
            ("ADE_BACKUP_REDRIVE_BACKOFF_MS", "-1"),
            ("ADE_BACKUP_REDRIVE_MAX_PER_RUN", "0"),
        ] {
            let err = parse_map(&[(var, value)]).expect_err("out of range");
            let text = err.to_string();
            assert!(
                text.contains(var) && text.contains("whole number"),
                "{text}"
            );
        }
    }
}
