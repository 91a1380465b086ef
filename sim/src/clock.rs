//! Simulated time: wall-clock time scaled by an acceleration factor, plus explicit jumps.
//!
//! Long Azure operations (a 20-minute backup job) are expressed in simulated time; with a scale
//! of 60 000 they take 20 ms of real time, and tests can jump ahead with [`SimClock::advance`].

use chrono::{DateTime, Utc};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct SimClock {
    real_start: Instant,
    sim_start: DateTime<Utc>,
    scale: f64,
    offset: Mutex<chrono::Duration>,
}

impl SimClock {
    /// `scale` is simulated seconds per real second; non-finite or non-positive values mean 1.
    pub fn new(sim_start: DateTime<Utc>, scale: f64) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Self {
            real_start: Instant::now(),
            sim_start,
            scale,
            offset: Mutex::new(chrono::Duration::zero()),
        }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn now(&self) -> DateTime<Utc> {
        let real = self.real_start.elapsed().as_secs_f64() * self.scale;
        let scaled = chrono::Duration::microseconds((real * 1_000_000.0) as i64);
        let offset = *self.offset.lock().unwrap_or_else(|p| p.into_inner());
        self.sim_start + scaled + offset
    }

    /// Jump simulated time forward.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::zero());
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset += by;
    }

    /// Real time needed for `sim` simulated time to pass at the current scale.
    pub fn real_duration(&self, sim: chrono::Duration) -> Duration {
        let secs = sim.num_milliseconds().max(0) as f64 / 1000.0 / self.scale;
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_time_runs_faster_than_wall_time() {
        let start = Utc::now();
        let clock = SimClock::new(start, 60_000.0);
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = clock.now() - start;
        assert!(elapsed >= chrono::Duration::minutes(19), "{elapsed}");
    }

    #[test]
    fn advance_moves_time_forward() {
        let start = Utc::now();
        let clock = SimClock::new(start, 1.0);
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() - start >= chrono::Duration::hours(1));
        assert!(clock.now() - start < chrono::Duration::minutes(61));
    }

    #[test]
    fn invalid_scale_falls_back_to_real_time() {
        assert_eq!(SimClock::new(Utc::now(), -3.0).scale(), 1.0);
        assert_eq!(SimClock::new(Utc::now(), f64::NAN).scale(), 1.0);
    }
}
