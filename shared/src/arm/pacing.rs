//! Client-side pacing shaped like ARM's own throttling: a token bucket per (subscription,
//! reads|writes|deletes), plus one per tenant for tenant-level calls (Resource Graph, Graph).
//!
//! Each request reserves a token before it is sent. Reservation may drive a bucket negative; the
//! caller then sleeps exactly until its token would have been refilled, so waiters queue in
//! arrival order and nobody spins. ARM reports what it has left in
//! `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`; when that is lower than our
//! local estimate we believe ARM (other clients share the same quota) and lower the bucket.

use super::scope::SubscriptionId;
use super::user_quota::{QuotaShape, UserQuotaPacer};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which of ARM's buckets a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestClass {
    Reads,
    Writes,
    Deletes,
}

impl RequestClass {
    pub fn of_method(m: &reqwest::Method) -> Self {
        match *m {
            reqwest::Method::GET | reqwest::Method::HEAD => RequestClass::Reads,
            reqwest::Method::DELETE => RequestClass::Deletes,
            _ => RequestClass::Writes,
        }
    }
    /// The response header that reports what is left of this bucket.
    pub fn remaining_header(&self) -> &'static str {
        match self {
            RequestClass::Reads => "x-ms-ratelimit-remaining-subscription-reads",
            RequestClass::Writes => "x-ms-ratelimit-remaining-subscription-writes",
            RequestClass::Deletes => "x-ms-ratelimit-remaining-subscription-deletes",
        }
    }
}

/// A bucket's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketKey {
    Subscription(SubscriptionId, RequestClass),
    /// Tenant-level calls: Resource Graph, Microsoft Graph, polls of URLs with no subscription.
    Tenant(RequestClass),
}

/// Bucket size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketShape {
    pub burst: f64,
    pub per_second: f64,
}

/// Pacing configuration. `Default` is ARM's documented shape (request-limits-and-throttling.md).
#[derive(Debug, Clone, PartialEq)]
pub struct PacingPolicy {
    pub enabled: bool,
    pub reads: BucketShape,
    pub writes: BucketShape,
    pub deletes: BucketShape,
    /// Shape used for every tenant-level class.
    pub tenant: BucketShape,
    /// Resource Graph's per-user quota window (on top of the tenant read bucket).
    pub graph_user_quota: QuotaShape,
}

impl Default for PacingPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            reads: BucketShape {
                burst: 250.0,
                per_second: 25.0,
            },
            writes: BucketShape {
                burst: 200.0,
                per_second: 10.0,
            },
            deletes: BucketShape {
                burst: 200.0,
                per_second: 10.0,
            },
            tenant: BucketShape {
                burst: 250.0,
                per_second: 25.0,
            },
            graph_user_quota: QuotaShape::default(),
        }
    }
}

impl PacingPolicy {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
    /// Every bucket the same shape (tests, small benchmarks).
    pub fn uniform(burst: f64, per_second: f64) -> Self {
        let s = BucketShape { burst, per_second };
        Self {
            enabled: true,
            reads: s,
            writes: s,
            deletes: s,
            tenant: s,
            graph_user_quota: QuotaShape::default(),
        }
    }
    fn shape(&self, key: &BucketKey) -> BucketShape {
        match key {
            BucketKey::Tenant(_) => self.tenant,
            BucketKey::Subscription(_, RequestClass::Reads) => self.reads,
            BucketKey::Subscription(_, RequestClass::Writes) => self.writes,
            BucketKey::Subscription(_, RequestClass::Deletes) => self.deletes,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    shape: BucketShape,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.shape.per_second).min(self.shape.burst);
        self.last = now;
    }
}

/// The buckets of one client.
#[derive(Debug)]
pub struct Pacer {
    policy: PacingPolicy,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    graph_quota: UserQuotaPacer,
}

impl Pacer {
    pub fn new(policy: PacingPolicy) -> Self {
        Self {
            graph_quota: UserQuotaPacer::new(policy.graph_user_quota),
            policy,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves one token and returns how long the caller must wait before sending.
    pub fn reserve(&self, key: BucketKey) -> Duration {
        if !self.policy.enabled {
            return Duration::ZERO;
        }
        let shape = self.policy.shape(&key);
        let now = Instant::now();
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = map.entry(key).or_insert_with(|| Bucket {
            tokens: shape.burst,
            last: now,
            shape,
        });
        b.refill(now);
        b.tokens -= 1.0;
        if b.tokens >= 0.0 || shape.per_second <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / shape.per_second)
        }
    }

    /// Waits for a token (async sleep, no busy loop). Returns the time waited.
    pub async fn acquire(&self, key: BucketKey) -> Duration {
        let wait = self.reserve(key);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Waits for a query of Resource Graph's per-user quota. Returns the time waited.
    pub async fn acquire_graph_quota(&self) -> Duration {
        if !self.policy.enabled {
            return Duration::ZERO;
        }
        let wait = self.graph_quota.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// What a Resource Graph answer said of the per-user quota.
    pub fn observe_graph_quota(&self, remaining: u32, resets_after: Duration) {
        if self.policy.enabled {
            self.graph_quota.observe(remaining, resets_after);
        }
    }

    /// Lowers the bucket to what ARM says is left (never raises it: the header is a
    /// subscription-wide figure, our bucket is the local share).
    pub fn observe_remaining(&self, key: BucketKey, remaining: u64) {
        if !self.policy.enabled {
            return;
        }
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = map.get_mut(&key) {
            b.refill(Instant::now());
            let remaining = remaining as f64;
            if remaining < b.tokens {
                b.tokens = remaining;
            }
        }
    }

    /// Current token estimate (for tests and diagnostics).
    pub fn tokens(&self, key: BucketKey) -> Option<f64> {
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get_mut(&key).map(|b| {
            b.refill(Instant::now());
            b.tokens
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> BucketKey {
        BucketKey::Subscription(
            SubscriptionId::from_uuid(uuid::Uuid::nil()),
            RequestClass::Reads,
        )
    }

    #[test]
    fn burst_then_refill_rate() {
        let p = Pacer::new(PacingPolicy::uniform(2.0, 10.0));
        assert_eq!(p.reserve(key()), Duration::ZERO);
        assert_eq!(p.reserve(key()), Duration::ZERO);
        let third = p.reserve(key());
        let fourth = p.reserve(key());
        assert!(third > Duration::from_millis(80) && third <= Duration::from_millis(100));
        assert!(fourth > Duration::from_millis(180) && fourth <= Duration::from_millis(200));
    }

    #[test]
    fn header_only_lowers() {
        let p = Pacer::new(PacingPolicy::uniform(100.0, 1.0));
        p.reserve(key());
        p.observe_remaining(key(), 5);
        let t = p.tokens(key()).expect("bucket");
        assert!((5.0..5.1).contains(&t), "{t}");
        p.observe_remaining(key(), 50);
        assert!(p.tokens(key()).expect("bucket") < 6.0);
    }

    #[test]
    fn disabled_never_waits() {
        let p = Pacer::new(PacingPolicy::disabled());
        for _ in 0..1000 {
            assert_eq!(p.reserve(key()), Duration::ZERO);
        }
    }
}
