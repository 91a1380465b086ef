//! What every handler gets besides its input: the state store, the outbound sender, settings and
//! a clock. Handlers code against the traits only, so tests, `ade-backup local` and Azure differ
//! only in what is put in here.

use crate::settings::Settings;
use ade_backup_shared::arm::ArmClient;
use ade_backup_shared::messaging::{DeadLetterReceiver, MessageSender};
use ade_backup_shared::state::StateStore;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// Source of "now", injectable so time-dependent logic (schedules, expiry) is testable.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shared, cheap-to-clone handler context. (The lead adds the ARM client here.)
#[derive(Clone)]
pub struct Context {
    pub state: Arc<dyn StateStore>,
    pub sender: Arc<dyn MessageSender>,
    pub settings: Arc<Settings>,
    pub clock: Arc<dyn Clock>,
    /// Azure Resource Manager (and Graph) client, shared: its pacing buckets are per process.
    pub arm: Arc<ArmClient>,
    /// The Backup Management Service object id, looked up once per process when not configured.
    pub bms_object_id: Arc<tokio::sync::OnceCell<uuid::Uuid>>,
    /// Rarely changing facts of shared resources (vault locations), kept per process for a
    /// short time ([`crate::read_cache`]).
    pub reads: Arc<crate::read_cache::ReadCache>,
    /// The queues' dead-letter sub-queues, for the redrive (`None`: no redrive, e.g. on AWS,
    /// where SQS redrives by itself).
    pub dead_letters: Option<Arc<dyn DeadLetterReceiver>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let c = ManualClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(chrono::Duration::minutes(30));
        assert_eq!(c.now(), t0 + chrono::Duration::minutes(30));
        c.set(t0);
        assert_eq!(c.now(), t0);
    }
}
