//! ARM request throttling: token buckets per (subscription, reads|writes|deletes), in real time.
//!
//! Sizes from articles/azure-resource-manager/management/request-limits-and-throttling.md:
//! reads bucket 250 refilled at 25/s, writes 200 at 10/s, deletes 200 at 10/s; the same sizes
//! at tenant level (used here for Resource Graph, which is a tenant-level endpoint).

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

#[cfg(test)]
mod tests {
    use super::*;

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
