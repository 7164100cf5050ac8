//! Seeded randomness: seed derivation from a base seed and indices, a small generator for
//! retry jitter, and the exponential backoff that uses it.
//!
//! There is no hidden randomness anywhere in this crate: every random draw comes from a
//! [`SplitMix64`] whose seed the caller chose or derived with [`derive_seed`].

use std::time::Duration;

/// SplitMix64: tiny, fast and good enough for jitter and seed derivation (not for sampling).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed for the thing at `indices` below `base`, in [0, 2^63) so that servers taking a signed
/// 64-bit seed accept it. Different index paths give independent seeds.
pub fn derive_seed(base: u64, indices: &[u64]) -> u64 {
    let mut rng = SplitMix64::new(base);
    let mut seed = rng.next_u64();
    for &index in indices {
        seed = SplitMix64::new(seed ^ index.wrapping_mul(0xd6e8_feb8_6659_fd93)).next_u64();
    }
    seed >> 1
}

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
    fn derived_seeds_are_stable_distinct_and_positive() {
        let a = derive_seed(7, &[0, 1]);
        assert_eq!(a, derive_seed(7, &[0, 1]));
        assert_ne!(a, derive_seed(7, &[1, 0]));
        assert_ne!(a, derive_seed(8, &[0, 1]));
        assert_ne!(derive_seed(7, &[]), derive_seed(7, &[0]));
        for i in 0..1000 {
            assert!(derive_seed(i, &[i]) < 1 << 63);
        }
    }

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
