//! Restart backoff for crashing workers, as a pure function of the restart count
//! and a random sample.
//!
//! Owns: the delay formula (exponential with jitter, capped) and the "healthy
//! long enough to forget past crashes" rule. Defaults follow kubelet and
//! KEP-4603: 1 s initial, ×2, cap 5 min, ±20 % jitter, reset after 10 min.
//! Deliberately does not: keep the restart count, read a clock or draw random
//! numbers; the caller (the reconcile state) passes them in, so this is testable
//! without time or randomness.

use std::time::Duration;

/// Why a [`Backoff`] cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackoffError {
    /// `initial` is larger than `max`.
    #[error("backoff initial delay {initial:?} must be at most the maximum {max:?}")]
    Initial {
        /// The initial delay given.
        initial: Duration,
        /// The maximum delay given.
        max: Duration,
    },
    /// `factor` is below 1 or not finite.
    #[error("backoff factor {0} must be a finite number of at least 1")]
    Factor(f64),
    /// `jitter` is outside `[0, 1)`.
    #[error("backoff jitter {0} must be in [0, 1)")]
    Jitter(f64),
}

/// Exponential restart backoff: `initial × factor^n`, capped at `max`, spread
/// by `±jitter`, forgotten after `reset_after` of healthy running.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    reset_after: Duration,
}

impl Default for Backoff {
    /// 1 s, ×2, cap 5 min, ±20 %, reset after 10 min healthy.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// Checks and builds a backoff policy. A zero `initial` turns backoff off: every restart
    /// is immediate (the delay stays zero whatever the restart count), as PM2's
    /// `--restart-delay 0` or supervisord's `autorestart` do.
    pub fn try_new(
        initial: Duration,
        max: Duration,
        factor: f64,
        jitter: f64,
        reset_after: Duration,
    ) -> Result<Self, BackoffError> {
        if initial > max {
            return Err(BackoffError::Initial { initial, max });
        }
        if !factor.is_finite() || factor < 1.0 {
            return Err(BackoffError::Factor(factor));
        }
        if !(0.0..1.0).contains(&jitter) {
            return Err(BackoffError::Jitter(jitter));
        }
        Ok(Self {
            initial,
            max,
            factor,
            jitter,
            reset_after,
        })
    }

    /// The delay before restart number `restart_count + 1` (0 = the first
    /// restart after a crash), given `sample`, a uniform random number in `[0, 1)`.
    ///
    /// The un-jittered delay is `min(initial × factor^restart_count, max)`; it
    /// is multiplied by `1 + jitter × (2 × sample − 1)`, i.e. spread over
    /// `±jitter`, and the result never exceeds `max`. Samples outside `[0, 1)`
    /// are clamped.
    pub fn delay(&self, restart_count: u32, sample: f64) -> Duration {
        if self.initial.is_zero() {
            // `0 × factor^n` is NaN once `factor^n` overflows; no backoff is no delay.
            return Duration::ZERO;
        }
        let max = self.max.as_secs_f64();
        let exponent = i32::try_from(restart_count).unwrap_or(i32::MAX);
        let base = (self.initial.as_secs_f64() * self.factor.powi(exponent)).min(max);
        let sample = if sample.is_nan() {
            0.5
        } else {
            sample.clamp(0.0, 1.0)
        };
        let spread = 1.0 + self.jitter * (2.0 * sample - 1.0);
        let secs = (base * spread).clamp(0.0, max);
        Duration::try_from_secs_f64(secs).unwrap_or(self.max)
    }

    /// Whether a worker that has been running for `healthy_for` has earned a
    /// reset of its restart count.
    pub fn should_reset(&self, healthy_for: Duration) -> bool {
        healthy_for >= self.reset_after
    }

    /// The first delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The cap on any delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long a worker must run healthy before its restart count is reset.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_jitter_the_delays_double_from_one_second_up_to_five_minutes() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..12).map(|n| b.delay(n, 0.5).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_never_exceeds_the_cap() {
        let b = Backoff::default();
        for n in 0..15 {
            let nominal = b.delay(n, 0.5).as_secs_f64();
            for i in 0..100 {
                let sample = f64::from(i) / 100.0;
                let d = b.delay(n, sample).as_secs_f64();
                assert!(d >= nominal * 0.8 - 1e-9, "n={n} sample={sample} d={d}");
                assert!(
                    d <= (nominal * 1.2).min(300.0) + 1e-9,
                    "n={n} sample={sample} d={d}"
                );
            }
        }
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(800));
        assert!(b.delay(0, 0.999_999) > Duration::from_millis(1199));
    }

    #[test]
    fn out_of_range_samples_are_clamped() {
        let b = Backoff::default();
        assert_eq!(b.delay(2, -3.0), b.delay(2, 0.0));
        assert_eq!(b.delay(2, 7.0), b.delay(2, 1.0));
        assert_eq!(b.delay(2, f64::NAN), b.delay(2, 0.5));
    }

    #[test]
    fn the_restart_count_resets_after_ten_minutes_of_health() {
        let b = Backoff::default();
        assert!(!b.should_reset(Duration::from_secs(599)));
        assert!(b.should_reset(Duration::from_secs(600)));
    }

    #[test]
    fn invalid_policies_are_refused() {
        let s = Duration::from_secs;
        assert!(matches!(
            Backoff::try_new(s(20), s(10), 2.0, 0.1, s(60)),
            Err(BackoffError::Initial { .. })
        ));
        assert_eq!(
            Backoff::try_new(s(1), s(10), 0.5, 0.1, s(60)),
            Err(BackoffError::Factor(0.5))
        );
        assert_eq!(
            Backoff::try_new(s(1), s(10), 2.0, 1.0, s(60)),
            Err(BackoffError::Jitter(1.0))
        );
        let b = Backoff::try_new(s(2), s(10), 3.0, 0.0, s(60)).unwrap();
        assert_eq!(b.delay(0, 0.9), s(2));
        assert_eq!(b.delay(1, 0.1), s(6));
        assert_eq!(b.delay(2, 0.1), s(10));
    }

    #[test]
    fn a_zero_initial_delay_restarts_immediately_every_time() {
        let s = Duration::from_secs;
        let b = Backoff::try_new(Duration::ZERO, s(300), 2.0, 0.2, s(600)).unwrap();
        for n in [0, 1, 5, 30, u32::MAX] {
            for sample in [0.0, 0.5, 0.999] {
                assert_eq!(b.delay(n, sample), Duration::ZERO, "n={n} sample={sample}");
            }
        }
        assert!(Backoff::try_new(Duration::ZERO, Duration::ZERO, 2.0, 0.0, s(600)).is_ok());
    }
}
