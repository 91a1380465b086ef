//! Fault injection: per-operation error rate, added latency and timeouts.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Faults for one operation (or the default for all operations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultRule {
    /// Probability (0..=1) that the call fails with `error_status`.
    pub error_rate: f64,
    /// Status for injected errors: 500 (InternalServerError), 503 (ServiceUnavailable, with
    /// Retry-After) or any other code.
    pub error_status: u16,
    /// Probability (0..=1) that the call is refused with 429 TooManyRequests and
    /// `Retry-After: 1`, as ARM answers a throttled call (on top of the token buckets).
    pub throttle_rate: f64,
    /// Added real latency before the call is served.
    pub latency_ms: u64,
    /// Probability (0..=1) that the call hangs for `timeout_ms` and then fails with 504.
    pub timeout_rate: f64,
    pub timeout_ms: u64,
}

impl Default for FaultRule {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_status: 500,
            throttle_rate: 0.0,
            latency_ms: 0,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
        }
    }
}

/// Fault configuration, settable through `SimOptions` or `POST /_sim/faults`.
/// Operation names are those reported by `GET /_sim/stats` (e.g. `vm.get`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    pub default: FaultRule,
    pub operations: BTreeMap<String, FaultRule>,
    /// Seed for the fault dice, for reproducible runs.
    pub seed: Option<u64>,
}

impl FaultConfig {
    /// The rule for one operation; rules are validated so probabilities stay in 0..=1.
    pub fn rule(&self, op: &str) -> &FaultRule {
        self.operations.get(op).unwrap_or(&self.default)
    }

    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, r: &FaultRule| -> Result<(), String> {
            for (field, v) in [
                ("errorRate", r.error_rate),
                ("timeoutRate", r.timeout_rate),
                ("throttleRate", r.throttle_rate),
            ] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{name}.{field} must be between 0 and 1, got {v}"));
                }
            }
            if !(400..=599).contains(&r.error_status) {
                return Err(format!(
                    "{name}.errorStatus must be an HTTP error status (400-599), got {}",
                    r.error_status
                ));
            }
            Ok(())
        };
        check("default", &self.default)?;
        for (op, r) in &self.operations {
            check(op, r)?;
        }
        Ok(())
    }
}

/// What to do with one call.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultDecision {
    pub latency: Duration,
    pub outcome: FaultOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultOutcome {
    Pass,
    Error(u16),
    Timeout(Duration),
}

#[derive(Debug)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        let rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self {
            config: Mutex::new(config),
            rng: Mutex::new(rng),
        }
    }

    pub fn config(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set(&self, config: FaultConfig) -> Result<(), String> {
        config.validate()?;
        if let Some(s) = config.seed {
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(s);
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    pub fn decide(&self, op: &str) -> FaultDecision {
        let rule = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rule(op)
            .clone();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let latency = Duration::from_millis(rule.latency_ms);
        let outcome = if rule.timeout_rate > 0.0 && rng.random::<f64>() < rule.timeout_rate {
            FaultOutcome::Timeout(Duration::from_millis(rule.timeout_ms))
        } else if rule.throttle_rate > 0.0 && rng.random::<f64>() < rule.throttle_rate {
            FaultOutcome::Error(429)
        } else if rule.error_rate > 0.0 && rng.random::<f64>() < rule.error_rate {
            FaultOutcome::Error(rule.error_status)
        } else {
            FaultOutcome::Pass
        };
        FaultDecision { latency, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rate_is_honoured_per_operation() {
        let mut cfg = FaultConfig {
            seed: Some(7),
            ..Default::default()
        };
        cfg.operations.insert(
            "vm.get".into(),
            FaultRule {
                error_rate: 0.3,
                ..Default::default()
            },
        );
        let f = Faults::new(cfg);
        let errors = (0..10_000)
            .filter(|_| matches!(f.decide("vm.get").outcome, FaultOutcome::Error(500)))
            .count();
        assert!((2700..3300).contains(&errors), "{errors}");
        assert!((0..100).all(|_| f.decide("keyvault.get").outcome == FaultOutcome::Pass));
    }

    #[test]
    fn throttle_rate_answers_429_beside_the_error_rate() {
        let f = Faults::new(FaultConfig {
            default: FaultRule {
                throttle_rate: 0.05,
                error_rate: 0.1,
                ..Default::default()
            },
            seed: Some(11),
            ..Default::default()
        });
        let (mut throttled, mut errors) = (0, 0);
        for _ in 0..10_000 {
            match f.decide("vm.get").outcome {
                FaultOutcome::Error(429) => throttled += 1,
                FaultOutcome::Error(500) => errors += 1,
                _ => {}
            }
        }
        assert!((400..600).contains(&throttled), "{throttled}");
        // The error dice are thrown for the calls not throttled: 10% of 95%.
        assert!((800..1100).contains(&errors), "{errors}");
        let bad = FaultConfig {
            default: FaultRule {
                throttle_rate: -0.1,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = f.set(bad).expect_err("negative rate");
        assert!(err.contains("default.throttleRate"), "{err}");
    }

    #[test]
    fn invalid_rates_are_rejected_with_the_field_name() {
        let f = Faults::new(FaultConfig::default());
        let bad = FaultConfig {
            default: FaultRule {
                error_rate: 1.5,
                ..Default::default()
            },
            ..Default::default()
        };
        let err = f.set(bad).expect_err("rate above 1");
        assert!(err.contains("default.errorRate"), "{err}");
    }
}
