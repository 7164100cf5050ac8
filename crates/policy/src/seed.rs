//! The exponential backoff of retries, with jitter from a seeded generator.
//!
//! There is no hidden randomness anywhere in this crate: every random draw comes from a
//! [`SplitMix64`] whose seed the caller chose or derived with [`derive_seed`] (both from
//! [`trajectory::seed`]).

use std::time::Duration;

pub use trajectory::{derive_seed, SplitMix64};

/// Exponential backoff with jitter: attempt `k` waits between half and all of
/// `min(max, base * 2^k)`, or the server's `Retry-After` if that is longer (capped at `max`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut SplitMix64,
    ) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let jittered = cap.mul_f64(0.5 + 0.5 * rng.next_f64());
        match retry_after {
            Some(wait) => jittered.max(wait.min(self.max)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut rng = SplitMix64::new(1);
        for (attempt, cap_ms) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (4, 1600),
            (5, 2000),
            (30, 2000),
        ] {
            let delay = backoff.delay(attempt, None, &mut rng).as_secs_f64() * 1e3;
            assert!(
                delay >= cap_ms as f64 / 2.0 - 1e-6 && delay <= cap_ms as f64 + 1e-6,
                "attempt {attempt}: {delay} ms not within [{}, {cap_ms}]",
                cap_ms / 2
            );
        }
        let waited = backoff.delay(0, Some(Duration::from_secs(1)), &mut rng);
        assert_eq!(waited, Duration::from_secs(1));
        let capped = backoff.delay(0, Some(Duration::from_secs(60)), &mut rng);
        assert_eq!(capped, Duration::from_secs(2));
    }
}
