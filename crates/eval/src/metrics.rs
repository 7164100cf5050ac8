//! Avg@k and pass@k per skill from episode records.
//!
//! Avg@k is the mean reward over an instance's k samples, averaged over instances. pass@j uses
//! the unbiased estimator of Chen et al. (2021), `1 - C(n-c, j) / C(n, j)` for an instance with
//! `n` scored samples of which `c` earned the top reward, averaged over instances that have at
//! least `j` scored samples. Records without a reward (infrastructure failures) are counted in
//! the outcome breakdown and nowhere else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tasks::Skill;

use rollout::EpisodeRecord;

/// The unbiased pass@k estimate for `n` samples of which `c` are correct.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(c <= n, "more correct samples ({c}) than samples ({n})");
    if k == 0 || k > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    // C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    let ratio: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    1.0 - ratio
}

/// The figures of one skill.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SkillSummary {
    pub skill: String,
    pub composite: bool,
    pub instances: usize,
    pub episodes: usize,
    /// Episodes with a reward.
    pub scored: usize,
    /// Mean over instances of the mean reward of their scored samples.
    pub avg_reward: f64,
    /// Like `avg_reward`, of success (top reward) instead of reward.
    pub avg_success: f64,
    /// `pass_at[j-1]` is pass@j.
    pub pass_at: Vec<f64>,
    pub outcomes: BTreeMap<String, usize>,
    pub infrastructure_failures: usize,
    /// Scored episodes whose verdict found the tests tampered with (reward 0).
    #[serde(default)]
    pub tampered: usize,
    pub mean_steps: f64,
    pub mean_tokens: f64,
    pub mean_agent_seconds: f64,
    pub mean_grade_seconds: f64,
}

/// Figures per skill and over all skills.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub k: usize,
    pub skills: Vec<SkillSummary>,
    pub total: SkillSummary,
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

fn summarise(name: &str, composite: bool, records: &[&EpisodeRecord], k: usize) -> SkillSummary {
    let mut by_instance: BTreeMap<&str, Vec<&EpisodeRecord>> = BTreeMap::new();
    for record in records {
        by_instance
            .entry(record.instance_id.as_str())
            .or_default()
            .push(record);
    }
    let mut outcomes = BTreeMap::new();
    for record in records {
        *outcomes.entry(record.outcome.to_string()).or_insert(0) += 1;
    }
    let scored: Vec<&&EpisodeRecord> = records.iter().filter(|r| r.is_scored()).collect();
    let per_instance = |f: &dyn Fn(&EpisodeRecord) -> f64| {
        mean(by_instance.values().filter_map(|samples| {
            let values: Vec<f64> = samples
                .iter()
                .filter(|r| r.is_scored())
                .map(|r| f(r))
                .collect();
            (!values.is_empty()).then(|| mean(values))
        }))
    };
    let pass_at = (1..=k)
        .map(|j| {
            mean(by_instance.values().filter_map(|samples| {
                let n = samples.iter().filter(|r| r.is_scored()).count();
                let c = samples.iter().filter(|r| r.success == Some(true)).count();
                (n >= j).then(|| pass_at_k(n, c, j))
            }))
        })
        .collect();
    SkillSummary {
        skill: name.to_string(),
        composite,
        instances: by_instance.len(),
        episodes: records.len(),
        scored: scored.len(),
        avg_reward: per_instance(&|r| r.reward.unwrap_or(f64::NAN)),
        avg_success: per_instance(&|r| if r.success == Some(true) { 1.0 } else { 0.0 }),
        pass_at,
        outcomes,
        infrastructure_failures: records.len() - scored.len(),
        tampered: scored
            .iter()
            .filter(|r| r.verdict.as_ref().is_some_and(|v| v.is_tampered()))
            .count(),
        mean_steps: mean(records.iter().map(|r| r.steps as f64)),
        mean_tokens: mean(records.iter().map(|r| r.tokens as f64)),
        mean_agent_seconds: mean(records.iter().map(|r| r.agent_seconds)),
        mean_grade_seconds: mean(scored.iter().map(|r| r.grade_seconds)),
    }
}

impl Summary {
    /// Figures of `records` (the latest record of each instance and sample should be given
    /// once).
    pub fn of(records: &[EpisodeRecord], k: usize) -> Summary {
        let mut by_skill: BTreeMap<Skill, Vec<&EpisodeRecord>> = BTreeMap::new();
        for record in records {
            by_skill.entry(record.skill).or_default().push(record);
        }
        let skills = by_skill
            .iter()
            .map(|(skill, records)| summarise(skill.name(), skill.is_composite(), records, k))
            .collect();
        let all: Vec<&EpisodeRecord> = records.iter().collect();
        Summary {
            k,
            skills,
            total: summarise("all", false, &all, k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pass@k by brute force: the share of k-subsets of the samples with a correct one.
    fn brute_force(n: usize, c: usize, k: usize) -> f64 {
        let samples: Vec<bool> = (0..n).map(|i| i < c).collect();
        let (mut hit, mut total) = (0u64, 0u64);
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != k {
                continue;
            }
            total += 1;
            if (0..n).any(|i| mask & (1 << i) != 0 && samples[i]) {
                hit += 1;
            }
        }
        hit as f64 / total as f64
    }

    #[test]
    fn pass_at_k_matches_brute_force() {
        for n in 1..=8 {
            for c in 0..=n {
                for k in 1..=n {
                    let expected = brute_force(n, c, k);
                    let got = pass_at_k(n, c, k);
                    assert!(
                        (got - expected).abs() < 1e-12,
                        "n={n} c={c} k={k}: {got} vs {expected}"
                    );
                }
            }
        }
        assert!(pass_at_k(3, 1, 4).is_nan());
    }

    fn record(instance: &str, skill: Skill, sample: u32, reward: Option<f64>) -> EpisodeRecord {
        let (_, top) = skill.reward_range();
        EpisodeRecord {
            instance_id: instance.into(),
            skill,
            sample,
            seed: 0,
            outcome: if reward.is_some() {
                agent::OutcomeKind::Submitted
            } else {
                agent::OutcomeKind::PolicyError
            },
            reward,
            success: reward.map(|r| r >= top),
            verdict: None,
            error: None,
            changed_files: vec![],
            skipped_files: vec![],
            steps: 2,
            tokens: 10,
            agent_seconds: 1.0,
            grade_seconds: 0.5,
            trajectory: None,
        }
    }

    #[test]
    fn avg_and_pass_over_instances_leave_out_unscored_episodes() {
        // Instance a: rewards 1, 0, (policy error). Instance b: -1, 1, 1 (localization is ±1).
        let records = vec![
            record("a", Skill::Editing, 0, Some(1.0)),
            record("a", Skill::Editing, 1, Some(0.0)),
            record("a", Skill::Editing, 2, None),
            record("b", Skill::Localization, 0, Some(-1.0)),
            record("b", Skill::Localization, 1, Some(1.0)),
            record("b", Skill::Localization, 2, Some(1.0)),
        ];
        let summary = Summary::of(&records, 3);
        let editing = summary
            .skills
            .iter()
            .find(|s| s.skill == "editing")
            .unwrap();
        assert_eq!(editing.episodes, 3);
        assert_eq!(editing.scored, 2);
        assert_eq!(editing.infrastructure_failures, 1);
        assert!((editing.avg_reward - 0.5).abs() < 1e-12);
        // n=2, c=1: pass@1 = 1/2, pass@2 = 1, pass@3 undefined (fewer samples).
        assert!((editing.pass_at[0] - 0.5).abs() < 1e-12);
        assert!((editing.pass_at[1] - 1.0).abs() < 1e-12);
        assert!(editing.pass_at[2].is_nan());
        let loc = summary
            .skills
            .iter()
            .find(|s| s.skill == "localization")
            .unwrap();
        assert!((loc.avg_reward - 1.0 / 3.0).abs() < 1e-12);
        assert!((loc.avg_success - 2.0 / 3.0).abs() < 1e-12);
        assert!((loc.pass_at[0] - 2.0 / 3.0).abs() < 1e-12);
        // Over all: instance means 0.5 and 1/3.
        assert!((summary.total.avg_reward - (0.5 + 1.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(summary.total.outcomes["policy_error"], 1);
    }
}
