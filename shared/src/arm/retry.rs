//! The one retry policy. Every request goes through `ArmClient::send`, which wraps its single
//! attempt in `run`; nothing else in the client retries.
//!
//! Built on `backon` (the design card's `backoff` crate is unmaintained: RUSTSEC-2025-0012, and its
//! `instant` dependency RUSTSEC-2024-0384). `backon::ExponentialBuilder` supplies the capped
//! exponential schedule and the attempt bound; `adjust` turns each step into *full jitter*
//! (uniform in `[0, step]`), lets a server `Retry-After` override it, and stops when the total
//! elapsed-time budget would be exceeded.
//!
//! What is retried: 408, 429, 500, 502, 503, 504, connection errors and per-request timeouts —
//! only for idempotent requests (GET/PUT/DELETE, and POSTs an operation marks safe to repeat such as
//! a Resource Graph query or refresh containers). Non-idempotent POSTs (backup now, restore) are
//! retried only on 429, which ARM and the resource providers send when they refused the request
//! without acting on it; a 5xx or a dropped connection there may mean the job was created, so the
//! error goes back to the worker, which reconciles from the vault's job list.

use super::error::ArmError;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use std::future::Future;
use std::time::{Duration, Instant};

/// Retry bounds. `Default`: 5 attempts, 1 s base doubling to 30 s, 120 s total, `Retry-After` up
/// to 60 s honoured in-process (longer ones are returned as `Throttled` for the worker to
/// reschedule).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retries).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    /// Longest `Retry-After` waited in-process.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// One attempt only.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// How safe an operation is to repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// GET/PUT/DELETE, and POSTs whose repetition has no extra effect.
    Idempotent,
    /// POSTs that start something (a backup job, a restore job).
    NotIdempotent,
}

/// One failed attempt: the classified error plus the server's `Retry-After`, if any.
#[derive(Debug)]
pub(crate) struct AttemptError {
    pub error: ArmError,
    pub retry_after: Option<Duration>,
}

pub(crate) fn is_retryable(e: &ArmError, repeat: Repeat) -> bool {
    match repeat {
        Repeat::Idempotent => matches!(
            e,
            ArmError::Transient { .. } | ArmError::Throttled { .. } | ArmError::Timeout { .. }
        ),
        Repeat::NotIdempotent => matches!(e, ArmError::Throttled { .. }),
    }
}

/// Uniform in `[0, step]`.
pub(crate) fn full_jitter(step: Duration) -> Duration {
    if step.is_zero() {
        return step;
    }
    step.mul_f64(rand::random::<f64>())
}

/// Runs `attempt` under `policy`. `on_retry` is told about each retry (for the stats).
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    repeat: Repeat,
    attempt: F,
    mut on_retry: impl FnMut(&ArmError, Duration),
) -> Result<T, ArmError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let start = Instant::now();
    let backoff = ExponentialBuilder::new()
        .with_min_delay(policy.base_delay)
        .with_max_delay(policy.max_delay)
        .with_factor(2.0)
        .with_max_times(policy.max_attempts.saturating_sub(1) as usize);
    let result = attempt
        .retry(backoff.build())
        .sleep(tokio::time::sleep)
        .when(|e: &AttemptError| is_retryable(&e.error, repeat))
        .adjust(|e: &AttemptError, step: Option<Duration>| {
            let step = step?;
            let delay = match e.retry_after {
                Some(ra) if ra > policy.max_retry_after => return None,
                Some(ra) => ra,
                None => full_jitter(step),
            };
            if start.elapsed() + delay > policy.max_elapsed {
                return None;
            }
            Some(delay)
        })
        .notify(|e: &AttemptError, d: Duration| on_retry(&e.error, d))
        .await;
    result.map_err(|e| e.error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> AttemptError {
        AttemptError {
            error: ArmError::Transient {
                operation: "t".into(),
                status: Some(503),
                code: None,
                message: String::new(),
            },
            retry_after: None,
        }
    }

    /// A 429 whose `Retry-After` the policy sees both in the error and on the attempt.
    fn throttled(after: Duration) -> AttemptError {
        AttemptError {
            error: ArmError::Throttled {
                operation: "t".into(),
                retry_after: Some(after),
            },
            retry_after: Some(after),
        }
    }

    fn fast(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_elapsed: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn stops_after_max_attempts() {
        let n = AtomicU32::new(0);
        let mut retries = 0;
        let r: Result<(), _> = run(
            &fast(4),
            Repeat::Idempotent,
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            },
            |_, _| retries += 1,
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 4);
        assert_eq!(retries, 3);
    }

    #[tokio::test]
    async fn not_idempotent_is_not_retried_on_5xx() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = run(
            &fast(4),
            Repeat::NotIdempotent,
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            },
            |_, _| {},
        )
        .await;
        assert!(r.is_err());
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retry_after_beyond_cap_is_handed_back() {
        let n = AtomicU32::new(0);
        let r: Result<(), _> = run(
            &fast(4),
            Repeat::Idempotent,
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(throttled(Duration::from_secs(30)))
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(r, Err(ArmError::Throttled { .. })));
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn delays_follow_capped_exponential_full_jitter() {
        let policy = RetryPolicy {
            max_attempts: 7,
            base_delay: Duration::from_millis(4),
            max_delay: Duration::from_millis(16),
            max_elapsed: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(1),
        };
        let mut delays = Vec::new();
        let r: Result<(), _> = run(
            &policy,
            Repeat::Idempotent,
            || async { Err(transient()) },
            |_, d| delays.push(d),
        )
        .await;
        assert!(r.is_err());
        assert_eq!(delays.len(), 6);
        for (i, d) in delays.iter().enumerate() {
            let cap = Duration::from_millis((4u64 << i).min(16));
            assert!(*d <= cap, "retry {i}: {d:?} > {cap:?}");
        }
    }

    #[tokio::test]
    async fn elapsed_budget_stops_retries() {
        let policy = RetryPolicy {
            max_attempts: 100,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_millis(50),
            max_retry_after: Duration::from_secs(1),
        };
        let n = AtomicU32::new(0);
        let start = std::time::Instant::now();
        let r: Result<(), _> = run(
            &policy,
            Repeat::Idempotent,
            || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(throttled(Duration::from_millis(20)))
            },
            |_, _| {},
        )
        .await;
        assert!(r.is_err());
        assert!(
            n.load(Ordering::SeqCst) <= 4,
            "attempts: {}",
            n.load(Ordering::SeqCst)
        );
        assert!(start.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            assert!(full_jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
    }
}
