//! Group-relative advantages: each sample's reward relative to the other samples of its group
//! (the rollouts of one task), so skills with different reward scales need no tuning. Pure
//! functions of the rewards; which groups have no signal is reported, never hidden.

use std::collections::BTreeMap;

use crate::config::Algorithm;

/// The advantage of every sample and what the grouping found.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupAdvantages {
    /// One per sample, in input order.
    pub advantages: Vec<f64>,
    /// One per sample: whether its group's rewards are all equal (advantage 0 for all).
    pub zero_variance: Vec<bool>,
    pub n_groups: usize,
    pub n_zero_variance_groups: usize,
}

/// Mean and sample standard deviation (Bessel's correction; 0 for fewer than two values).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// Advantages of `rewards` grouped by `groups` (same length): GRPO and DAPO divide by
/// `std + eps`, Dr. GRPO does not. A group of one sample, or of equal rewards, has zero variance.
pub fn group_advantages(
    rewards: &[f64],
    groups: &[&str],
    algorithm: Algorithm,
    eps: f64,
) -> GroupAdvantages {
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(i);
    }
    let mut advantages = vec![0.0; rewards.len()];
    let mut zero_variance = vec![false; rewards.len()];
    let mut n_zero_variance_groups = 0;
    for indices in members.values() {
        let values: Vec<f64> = indices.iter().map(|&i| rewards[i]).collect();
        let (mean, std) = mean_std(&values);
        let flat = values.iter().all(|&v| v == values[0]);
        if flat {
            n_zero_variance_groups += 1;
        }
        for &i in indices {
            zero_variance[i] = flat;
            advantages[i] = if flat {
                0.0
            } else {
                match algorithm {
                    Algorithm::Grpo | Algorithm::Dapo => (rewards[i] - mean) / (std + eps),
                    Algorithm::DrGrpo => rewards[i] - mean,
                }
            };
        }
    }
    GroupAdvantages {
        advantages,
        zero_variance,
        n_groups: members.len(),
        n_zero_variance_groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rewards: &[f64], groups: &[&str], algorithm: Algorithm, expected: &[f64]) {
        let got = group_advantages(rewards, groups, algorithm, 0.0);
        for (g, e) in got.advantages.iter().zip(expected) {
            assert!(
                (g - e).abs() < 1e-12,
                "{algorithm:?}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn advantages_by_hand() {
        // Group a: rewards 1, 0, 0, 1 -> mean 0.5, sample std sqrt(1/3) = 0.57735.
        let s = 0.5 / (1.0f64 / 3.0).sqrt();
        check(
            &[1.0, 0.0, 0.0, 1.0, 2.0, 2.0],
            &["a", "a", "a", "a", "b", "b"],
            Algorithm::Grpo,
            &[s, -s, -s, s, 0.0, 0.0],
        );
        check(
            &[1.0, 0.0, 0.0, 1.0, 2.0, 2.0],
            &["a", "a", "a", "a", "b", "b"],
            Algorithm::DrGrpo,
            &[0.5, -0.5, -0.5, 0.5, 0.0, 0.0],
        );
        // -1/+1 rewards (localization): mean -1/3, std sqrt(4/3).
        let std = (4.0f64 / 3.0).sqrt();
        check(
            &[1.0, -1.0, -1.0],
            &["x", "x", "x"],
            Algorithm::Dapo,
            &[(4.0 / 3.0) / std, (-2.0 / 3.0) / std, (-2.0 / 3.0) / std],
        );
    }

    #[test]
    fn zero_variance_groups_are_reported() {
        let got = group_advantages(
            &[1.0, 1.0, 0.0, 1.0, 3.0],
            &["a", "a", "b", "b", "c"],
            Algorithm::Grpo,
            1e-6,
        );
        assert_eq!(got.zero_variance, vec![true, true, false, false, true]);
        assert_eq!((got.n_groups, got.n_zero_variance_groups), (3, 2));
    }
}
