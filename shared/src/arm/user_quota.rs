//! Client-side pacing for Resource Graph's per-user quota: a fixed window (15 queries per
//! 5 seconds by default) that the service reports in every answer as `x-ms-user-quota-remaining`
//! and `x-ms-user-quota-resets-after` (hh:mm:ss). Source:
//! learn.microsoft.com/azure/governance/resource-graph/concepts/guidance-for-throttled-requests.
//!
//! Reservations are made in virtual time like the token buckets: a caller past the quota is told
//! to sleep until the window its query falls in opens, so concurrent queries queue in order.
//! The headers correct the local estimate: the first answer of a window sets when it ends (the
//! service may have started it earlier, or another process may share the quota); later answers
//! can only bring the end forward (the header is rounded up to the second) and the count up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The quota's shape: `limit` queries per `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaShape {
    pub limit: u32,
    pub window: Duration,
}

impl Default for QuotaShape {
    fn default() -> Self {
        Self {
            limit: 15,
            window: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
struct State {
    start: Instant,
    ends: Instant,
    used: u32,
    /// Whether an answer of this window has set `ends` yet.
    heard: bool,
}

/// The local estimate of one user's quota window.
#[derive(Debug)]
pub struct UserQuotaPacer {
    shape: QuotaShape,
    state: Mutex<State>,
}

impl UserQuotaPacer {
    pub fn new(shape: QuotaShape) -> Self {
        let now = Instant::now();
        Self {
            shape,
            state: Mutex::new(State {
                start: now,
                ends: now,
                used: 0,
                heard: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves one query and returns how long to wait before sending it.
    pub fn reserve(&self) -> Duration {
        self.reserve_at(Instant::now())
    }

    fn reserve_at(&self, now: Instant) -> Duration {
        let mut s = self.lock();
        if now >= s.ends {
            *s = State {
                start: now,
                ends: now + self.shape.window,
                used: 0,
                heard: false,
            };
        }
        if s.used >= self.shape.limit {
            let start = s.ends;
            *s = State {
                start,
                ends: start + self.shape.window,
                used: 0,
                heard: false,
            };
        }
        s.used += 1;
        s.start.saturating_duration_since(now)
    }

    /// What an answer reported: `remaining` queries until the window resets in `resets_after`.
    pub fn observe(&self, remaining: u32, resets_after: Duration) {
        self.observe_at(Instant::now(), remaining, resets_after)
    }

    fn observe_at(&self, now: Instant, remaining: u32, resets_after: Duration) {
        let mut s = self.lock();
        // Reservations already queued for a later window: the answer is about an earlier one.
        if s.start > now {
            return;
        }
        let server_ends = now + resets_after;
        if !s.heard || server_ends < s.ends {
            s.ends = server_ends;
            s.heard = true;
        }
        s.used = s.used.max(self.shape.limit.saturating_sub(remaining));
    }
}

/// `hh:mm:ss` (also accepts `d.hh:mm:ss` and plain seconds); `None` if it is neither.
pub fn parse_resets_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let (days, hms) = match v.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().ok()?, rest),
        _ => (0, v),
    };
    let mut parts = hms.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || m >= 60 || !(0.0..60.0).contains(&s) {
        return None;
    }
    Some(Duration::from_secs(days * 86_400 + h * 3600 + m * 60) + Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> UserQuotaPacer {
        UserQuotaPacer::new(QuotaShape::default())
    }

    #[test]
    fn fifteen_per_window_then_the_next_window() {
        let q = quota();
        let t0 = Instant::now();
        let waits: Vec<Duration> = (0..31).map(|_| q.reserve_at(t0)).collect();
        assert!(waits[..15].iter().all(Duration::is_zero));
        assert!(waits[15..30].iter().all(|w| *w == Duration::from_secs(5)));
        assert_eq!(waits[30], Duration::from_secs(10));
    }

    #[test]
    fn headers_move_the_window_end_and_the_count() {
        let q = quota();
        let t0 = Instant::now();
        q.reserve_at(t0);
        // Another process already used 12 of the window, which ends in 2 s.
        q.observe_at(t0, 3, Duration::from_secs(2));
        let waits: Vec<Duration> = (0..4).map(|_| q.reserve_at(t0)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_secs(2));
    }

    #[test]
    fn a_later_rounded_up_answer_does_not_push_the_end_back() {
        let q = quota();
        let t0 = Instant::now();
        q.reserve_at(t0);
        q.observe_at(t0, 14, Duration::from_millis(4200));
        q.observe_at(t0 + Duration::from_millis(100), 13, Duration::from_secs(5));
        for _ in 0..13 {
            q.reserve_at(t0 + Duration::from_millis(100));
        }
        let w = q.reserve_at(t0 + Duration::from_millis(100));
        assert_eq!(w, Duration::from_millis(4100));
    }

    #[test]
    fn parses_the_header_formats() {
        assert_eq!(parse_resets_after("00:00:03"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_resets_after("01:02:05"),
            Some(Duration::from_secs(3725))
        );
        assert_eq!(
            parse_resets_after("1.00:00:01"),
            Some(Duration::from_secs(86_401))
        );
        assert_eq!(parse_resets_after("7"), Some(Duration::from_secs(7)));
        for bad in ["", "00:61:00", "a:b:c", "00:00", "00:00:00:00", "-1"] {
            assert_eq!(parse_resets_after(bad), None, "{bad}");
        }
    }
}
