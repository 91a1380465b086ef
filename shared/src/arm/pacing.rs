//! Client-side pacing shaped like ARM's own throttling: a token bucket per (subscription,
//! reads|writes|deletes), plus one per tenant for tenant-level calls (Resource Graph, Graph).
//!
//! Each request reserves a token before it is sent. Reservation may drive a bucket negative; the
//! caller then sleeps exactly until its token would have been refilled, so waiters queue in
//! arrival order and nobody spins. ARM reports what it has left in
//! `x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}`; when that is lower than our
//! local estimate we believe ARM (other clients share the same quota) and lower the bucket.
//!
//! Shared budget (issue 15, scenario 6): several instances of the app (the Functions app scales
//! out) draw on one subscription's buckets, each pacing itself. With `shared_budget` a bucket
//! refills at its rate times a *share* derived from the same headers: the full rate while ARM
//! reports at least [`SHARE_KNEE`] of the bucket left, proportionally less below it (down to
//! [`MIN_SHARE`]). N instances that all do so settle where ARM's bucket holds about
//! `SHARE_KNEE * burst / N` tokens and their rates add up to ARM's: no coordination, no 429s in
//! the steady state. Below the knee a bucket also holds at most its share of what ARM has left,
//! so instances that wake together do not overdraw it. A waiter whose rate dropped while it slept gives its token back and
//! queues again, so reservations made at a higher rate do not burst into an emptied bucket.

use super::scope::SubscriptionId;
use super::user_quota::{QuotaShape, UserQuotaPacer};
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
    /// Resource Graph's per-user quota window (on top of the tenant read bucket).
    pub graph_user_quota: QuotaShape,
    /// Scale each bucket's refill to the share of ARM's bucket left (see the module docs).
    pub shared_budget: bool,
}

/// Below this fraction of the bucket left (as ARM reports it), the refill rate scales down.
pub const SHARE_KNEE: f64 = 0.25;
/// The least share of the refill rate a bucket keeps (it still probes ARM's headers).
pub const MIN_SHARE: f64 = 1.0 / 16.0;

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
            shared_budget: true,
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
            shared_budget: true,
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
    /// Fraction of `shape.per_second` this client refills at (1 unless `shared_budget`).
    share: f64,
}

impl Bucket {
    fn rate(&self) -> f64 {
        self.shape.per_second * self.share
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate()).min(self.shape.burst);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BucketKey, Bucket>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves one token and returns how long the caller must wait before sending.
    pub fn reserve(&self, key: BucketKey) -> Duration {
        self.reserve_at_rate(key).0
    }

    /// [`Pacer::reserve`], and the refill rate the wait was computed with.
    fn reserve_at_rate(&self, key: BucketKey) -> (Duration, f64) {
        self.reserve_at(key, Instant::now())
    }

    fn reserve_at(&self, key: BucketKey, now: Instant) -> (Duration, f64) {
        if !self.policy.enabled {
            return (Duration::ZERO, 0.0);
        }
        let shape = self.policy.shape(&key);
        let mut map = self.lock();
        let b = map.entry(key).or_insert_with(|| Bucket {
            tokens: shape.burst,
            last: now,
            shape,
            share: 1.0,
        });
        b.refill(now);
        b.tokens -= 1.0;
        let rate = b.rate();
        if b.tokens >= 0.0 || rate <= 0.0 {
            (Duration::ZERO, rate)
        } else {
            (Duration::from_secs_f64(-b.tokens / rate), rate)
        }
    }

    /// The bucket's current refill rate.
    fn rate(&self, key: BucketKey) -> f64 {
        self.lock().get(&key).map(Bucket::rate).unwrap_or(0.0)
    }

    /// Gives a reserved token back (its holder queues again).
    fn refund(&self, key: BucketKey) {
        self.refund_at(key, Instant::now())
    }

    fn refund_at(&self, key: BucketKey, now: Instant) {
        if let Some(b) = self.lock().get_mut(&key) {
            b.refill(now);
            b.tokens += 1.0;
        }
    }

    /// Waits for a token (async sleep, no busy loop). Returns the time waited, and adds it to
    /// the [`meter_paced_wait`] around the caller, if any. A waiter whose bucket's rate fell by
    /// more than a tenth while it slept queues again at the new rate.
    pub async fn acquire(&self, key: BucketKey) -> Duration {
        let mut waited = Duration::ZERO;
        loop {
            let (wait, rate) = self.reserve_at_rate(key);
            if wait.is_zero() {
                return waited;
            }
            tokio::time::sleep(wait).await;
            let _ = PACED_WAIT.try_with(|total| total.set(total.get() + wait));
            waited += wait;
            if self.rate(key) >= rate * 0.9 {
                return waited;
            }
            self.refund(key);
        }
    }

    /// Waits for a query of Resource Graph's per-user quota. Returns the time waited.
    pub async fn acquire_graph_quota(&self) -> Duration {
        if !self.policy.enabled {
            return Duration::ZERO;
        }
        let wait = self.graph_quota.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            let _ = PACED_WAIT.try_with(|total| total.set(total.get() + wait));
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
    /// subscription-wide figure, our bucket is the local share); with `shared_budget`, sets the
    /// bucket's share of the refill rate from it too.
    pub fn observe_remaining(&self, key: BucketKey, remaining: u64) {
        self.observe_remaining_at(key, remaining, Instant::now())
    }

    fn observe_remaining_at(&self, key: BucketKey, remaining: u64, now: Instant) {
        if !self.policy.enabled {
            return;
        }
        let shared = self.policy.shared_budget;
        let mut map = self.lock();
        if let Some(b) = map.get_mut(&key) {
            b.refill(now);
            let remaining = remaining as f64;
            if shared {
                let knee = (b.shape.burst * SHARE_KNEE).max(1.0);
                b.share = (remaining / knee).clamp(MIN_SHARE, 1.0);
            }
            // Below the knee, only our share of what is left: the other instances hold theirs.
            let ours = remaining * b.share;
            if ours < b.tokens {
                b.tokens = ours;
            }
        }
    }

    /// Current token estimate (for tests and diagnostics).
    pub fn tokens(&self, key: BucketKey) -> Option<f64> {
        let mut map = self.lock();
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
        let p = Pacer::new(PacingPolicy {
            shared_budget: false,
            ..PacingPolicy::uniform(100.0, 1.0)
        });
        p.reserve(key());
        p.observe_remaining(key(), 5);
        let t = p.tokens(key()).expect("bucket");
        assert!((5.0..5.1).contains(&t), "{t}");
        p.observe_remaining(key(), 50);
        assert!(p.tokens(key()).expect("bucket") < 6.0);
        // With a shared budget, below the knee (25 of 100) only our share of what is left.
        let shared = Pacer::new(PacingPolicy::uniform(100.0, 1.0));
        shared.reserve(key());
        shared.observe_remaining(key(), 6);
        let t = shared.tokens(key()).expect("bucket");
        assert!((1.4..1.5).contains(&t), "{t}");
    }

    #[test]
    fn a_shared_budget_scales_the_refill_with_what_arm_reports_left() {
        let p = Pacer::new(PacingPolicy::uniform(100.0, 10.0));
        p.reserve(key());
        // Plenty left: the full rate.
        p.observe_remaining(key(), 90);
        assert!((p.rate(key()) - 10.0).abs() < 1e-9);
        // 25 is the knee of a 100-token bucket: 5 left is a fifth of the rate.
        p.observe_remaining(key(), 5);
        assert!((p.rate(key()) - 2.0).abs() < 1e-9, "{}", p.rate(key()));
        // Nothing left: the floor, never zero (the bucket keeps probing).
        p.observe_remaining(key(), 0);
        assert!((p.rate(key()) - 10.0 * MIN_SHARE).abs() < 1e-9);
        let wait = p.reserve(key());
        assert!(wait > Duration::from_millis(1500), "{wait:?}");
    }

    #[test]
    fn one_budget_shared_by_four_pacers_settles_under_arm_s_rate() {
        // Four clients against one simulated ARM bucket (200, 10/s), in 50 ms steps, each
        // always wanting to send: what ARM grants per second must settle at its rate, with
        // few refusals after the first burst.
        let clients: Vec<Pacer> = (0..4)
            .map(|_| Pacer::new(PacingPolicy::default()))
            .collect();
        let k = BucketKey::Subscription(
            SubscriptionId::from_uuid(uuid::Uuid::nil()),
            RequestClass::Writes,
        );
        let (mut arm, mut refused, mut granted) = (200.0f64, 0u32, 0u32);
        // Per client: a reserved token's send time and the rate it was reserved at.
        let mut pending: [Option<(Instant, f64)>; 4] = [None; 4];
        let start = Instant::now();
        let step = Duration::from_millis(50);
        for i in 1..=1200u32 {
            let t = start + step * i;
            arm = (arm + 0.5).min(200.0);
            for (c, p) in clients.iter().enumerate() {
                loop {
                    match pending[c] {
                        Some((at, _)) if at > t => break,
                        Some((_, rate)) if p.rate(k) < rate * 0.9 => {
                            p.refund_at(k, t);
                            pending[c] = None;
                            continue;
                        }
                        Some(_) => pending[c] = None,
                        None => {
                            let (wait, rate) = p.reserve_at(k, t);
                            if !wait.is_zero() {
                                pending[c] = Some((t + wait, rate));
                                continue;
                            }
                        }
                    }
                    // Send: ARM grants from its bucket or refuses.
                    let ok = arm >= 1.0;
                    if ok {
                        arm -= 1.0;
                    }
                    if i > 200 {
                        if ok {
                            granted += 1;
                        } else {
                            refused += 1;
                        }
                    }
                    p.observe_remaining_at(k, arm as u64, t);
                }
            }
        }
        // 50 s measured after the first 10: ARM grants 10/s.
        assert!(granted >= 450, "granted {granted}");
        assert!(refused * 100 <= granted, "refused {refused} of {granted}");
    }

    #[test]
    fn disabled_never_waits() {
        let p = Pacer::new(PacingPolicy::disabled());
        for _ in 0..1000 {
            assert_eq!(p.reserve(key()), Duration::ZERO);
        }
    }
}
