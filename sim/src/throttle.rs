//! ARM request throttling: token buckets per (subscription, reads|writes|deletes), in real time.
//!
//! Sizes from articles/azure-resource-manager/management/request-limits-and-throttling.md:
//! reads bucket 250 refilled at 25/s, writes 200 at 10/s, deletes 200 at 10/s; the same sizes
//! at tenant level (used here for Resource Graph, which is a tenant-level endpoint).
//!
//! Resource Graph also has its own per-user quota ([`UserQuota`]): a fixed window of 15 queries
//! per 5 seconds, reported in `x-ms-user-quota-remaining` / `x-ms-user-quota-resets-after`
//! (articles/governance/resource-graph/concepts/guidance-for-throttled-requests.md).

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Reads,
    Writes,
    Deletes,
}

impl OpKind {
    pub fn from_method(method: &axum::http::Method) -> Self {
        match *method {
            axum::http::Method::GET | axum::http::Method::HEAD => OpKind::Reads,
            axum::http::Method::DELETE => OpKind::Deletes,
            _ => OpKind::Writes,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Reads => "reads",
            OpKind::Writes => "writes",
            OpKind::Deletes => "deletes",
        }
    }
    fn limits(self) -> (f64, f64) {
        match self {
            OpKind::Reads => (250.0, 25.0),
            OpKind::Writes => (200.0, 10.0),
            OpKind::Deletes => (200.0, 10.0),
        }
    }
}

/// Which bucket family a request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Subscription(String),
    Tenant,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The outcome of taking one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    Allowed { remaining: u64 },
    Throttled { retry_after: Duration },
}

#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<(Scope, OpKind), Bucket>>,
}

impl Throttle {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn take(&self, scope: &Scope, kind: OpKind) -> Admission {
        self.take_at(scope, kind, Instant::now())
    }

    fn take_at(&self, scope: &Scope, kind: OpKind, now: Instant) -> Admission {
        let (capacity, refill) = kind.limits();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry((scope.clone(), kind)).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * refill).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Admission::Allowed {
                remaining: bucket.tokens.floor() as u64,
            }
        } else {
            let wait = (1.0 - bucket.tokens) / refill;
            Admission::Throttled {
                retry_after: Duration::from_secs_f64(wait),
            }
        }
    }

    pub fn reset(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Resource Graph's per-user quota: at most `limit` queries in each `window`, the window
/// starting with the first query after the previous one ended (the guidance's example: after
/// `remaining: 10, resets-after: 00:00:03`, three seconds later it is back to 15 and 00:00:05).
#[derive(Debug)]
pub struct UserQuota {
    limit: u32,
    window: Duration,
    users: Mutex<HashMap<u64, QuotaWindow>>,
}

#[derive(Debug, Clone, Copy)]
struct QuotaWindow {
    ends: Instant,
    used: u32,
}

/// The outcome of one query against the quota: what the headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaAnswer {
    pub allowed: bool,
    pub remaining: u32,
    pub resets_after: Duration,
}

impl Default for UserQuota {
    fn default() -> Self {
        Self::new(15, Duration::from_secs(5))
    }
}

impl UserQuota {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// One query by `user` (any stable key of the caller's identity).
    pub fn take(&self, user: u64) -> QuotaAnswer {
        self.take_at(user, Instant::now())
    }

    fn take_at(&self, user: u64, now: Instant) -> QuotaAnswer {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let w = users
            .entry(user)
            .or_insert(QuotaWindow { ends: now, used: 0 });
        if now >= w.ends {
            *w = QuotaWindow {
                ends: now + self.window,
                used: 0,
            };
        }
        let allowed = w.used < self.limit;
        if allowed {
            w.used += 1;
        }
        QuotaAnswer {
            allowed,
            remaining: self.limit - w.used,
            resets_after: w.ends.saturating_duration_since(now),
        }
    }

    pub fn reset(&self) {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// `hh:mm:ss`, rounded up to the second (the header's format; never earlier than the reset).
pub fn hh_mm_ss(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_quota_is_a_fixed_window_per_user() {
        let q = UserQuota::default();
        let t0 = Instant::now();
        let answers: Vec<QuotaAnswer> = (0..16).map(|_| q.take_at(1, t0)).collect();
        assert_eq!(answers.iter().filter(|a| a.allowed).count(), 15);
        assert_eq!(answers[0].remaining, 14);
        assert_eq!(answers[14].remaining, 0);
        assert!(!answers[15].allowed);
        assert_eq!(answers[15].resets_after, Duration::from_secs(5));
        // Another user has a quota of its own.
        assert!(q.take_at(2, t0).allowed);
        // Still inside the window three seconds later; a fresh window once it ended.
        let mid = q.take_at(1, t0 + Duration::from_secs(3));
        assert!(!mid.allowed);
        assert_eq!(mid.resets_after, Duration::from_secs(2));
        let next = q.take_at(1, t0 + Duration::from_secs(5));
        assert_eq!((next.allowed, next.remaining), (true, 14));
        assert_eq!(next.resets_after, Duration::from_secs(5));
    }

    #[test]
    fn resets_after_is_hh_mm_ss_rounded_up() {
        assert_eq!(hh_mm_ss(Duration::from_secs(5)), "00:00:05");
        assert_eq!(hh_mm_ss(Duration::from_millis(2100)), "00:00:03");
        assert_eq!(hh_mm_ss(Duration::from_secs(3725)), "01:02:05");
    }

    #[test]
    fn reads_burst_then_refill() {
        let t = Throttle::new();
        let s = Scope::Subscription("s1".into());
        let start = Instant::now();
        let allowed = (0..300)
            .filter(|_| {
                matches!(
                    t.take_at(&s, OpKind::Reads, start),
                    Admission::Allowed { .. }
                )
            })
            .count();
        assert_eq!(allowed, 250);
        let later = start + Duration::from_secs(1);
        let refilled = (0..100)
            .filter(|_| {
                matches!(
                    t.take_at(&s, OpKind::Reads, later),
                    Admission::Allowed { .. }
                )
            })
            .count();
        assert_eq!(refilled, 25);
    }

    #[test]
    fn buckets_are_per_subscription_and_kind() {
        let t = Throttle::new();
        let now = Instant::now();
        for _ in 0..200 {
            t.take_at(&Scope::Subscription("a".into()), OpKind::Writes, now);
        }
        assert!(matches!(
            t.take_at(&Scope::Subscription("a".into()), OpKind::Writes, now),
            Admission::Throttled { .. }
        ));
        assert!(matches!(
            t.take_at(&Scope::Subscription("b".into()), OpKind::Writes, now),
            Admission::Allowed { remaining: 199 }
        ));
        assert!(matches!(
            t.take_at(&Scope::Subscription("a".into()), OpKind::Reads, now),
            Admission::Allowed { remaining: 249 }
        ));
    }

    #[test]
    fn retry_after_reflects_refill_rate() {
        let t = Throttle::new();
        let now = Instant::now();
        let s = Scope::Tenant;
        for _ in 0..200 {
            t.take_at(&s, OpKind::Deletes, now);
        }
        match t.take_at(&s, OpKind::Deletes, now) {
            Admission::Throttled { retry_after } => {
                assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}")
            }
            other => panic!("expected throttle, got {other:?}"),
        }
    }
}
