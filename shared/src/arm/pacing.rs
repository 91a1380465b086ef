//! Client-side pacing shaped like ARM's own throttling: a token bucket per (subscription,
//! reads|writes|deletes), plus one per tenant for tenant-level calls (Resource Graph, Graph).
//!
//! Each request reserves a token before it is sent. Reservation may drive a bucket negative; the
//! caller then sleeps exactly until its token would have been refilled, so waiters queue in
//! arrival order and nobody spins. ARM reports what it has left in
//! `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`; when that is lower than our
//! local estimate we believe ARM (other clients share the same quota) and lower the bucket.

use super::scope::SubscriptionId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

tokio::task_local! {
    /// Pacing wait of the calls made inside one [`meter_paced_wait`].
    static PACED_WAIT: std::cell::Cell<Duration>;
}

/// Runs `work` and returns its output with the time its ARM calls spent waiting for pacing
/// tokens (the wait ARM's own limits force), so a caller can tell one invocation's latency apart
/// from the pacing in it. Calls outside any meter are not counted anywhere but [`super::ArmStats`].
pub async fn meter_paced_wait<F: std::future::Future>(work: F) -> (F::Output, Duration) {
    PACED_WAIT
        .scope(std::cell::Cell::new(Duration::ZERO), async move {
            let out = work.await;
            let waited = PACED_WAIT.with(std::cell::Cell::get);
            (out, waited)
        })
        .await
}

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
}

impl Pacer {
    pub fn new(policy: PacingPolicy) -> Self {
        Self {
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

    /// Waits for a token (async sleep, no busy loop). Returns the time waited, and adds it to
    /// the [`meter_paced_wait`] around the caller, if any.
    pub async fn acquire(&self, key: BucketKey) -> Duration {
        let wait = self.reserve(key);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            let _ = PACED_WAIT.try_with(|total| total.set(total.get() + wait));
        }
        wait
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

    #[tokio::test]
    async fn the_meter_counts_the_pacing_waits_inside_it_only() {
        let p = Pacer::new(PacingPolicy::uniform(1.0, 50.0));
        // Outside any meter: nothing to count into, nothing breaks.
        assert_eq!(p.acquire(key()).await, Duration::ZERO);
        let (waits, metered) = meter_paced_wait(async {
            let a = p.acquire(key()).await;
            let b = p.acquire(key()).await;
            a + b
        })
        .await;
        assert!(waits >= Duration::from_millis(15), "{waits:?}");
        assert_eq!(metered, waits);
        let (_, none) = meter_paced_wait(async {}).await;
        assert_eq!(none, Duration::ZERO);
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
