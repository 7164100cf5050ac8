//! The skill mixture: tasks of every skill in one buffer, drawn by skill weight, then uniformly
//! within the skill. Draw `i` depends only on the seed and `i`, so a resumed run draws what the
//! interrupted one would have.

use std::collections::BTreeMap;

use tasks::{Instance, Skill};

/// Instances by skill, with the weights to draw skills by.
#[derive(Clone, Debug)]
pub struct Mixture {
    skills: Vec<(Skill, f64, Vec<usize>)>,
    total: f64,
    seed: u64,
}

impl Mixture {
    /// `weights` empty means every skill present weighs the same. A weighted skill without
    /// instances, or a negative weight, is an error; skills with weight 0 are never drawn.
    pub fn new(
        instances: &[Instance],
        weights: &BTreeMap<Skill, f64>,
        seed: u64,
    ) -> Result<Mixture, String> {
        let mut by_skill: BTreeMap<Skill, Vec<usize>> = BTreeMap::new();
        for (i, instance) in instances.iter().enumerate() {
            by_skill.entry(instance.skill()).or_default().push(i);
        }
        let mut skills = Vec::new();
        if weights.is_empty() {
            for (skill, members) in by_skill {
                skills.push((skill, 1.0, members));
            }
        } else {
            for (skill, &weight) in weights {
                if !(weight >= 0.0 && weight.is_finite()) {
                    return Err(format!(
                        "mixture weight of {} must be >= 0, got {weight}",
                        skill.name()
                    ));
                }
                if weight == 0.0 {
                    continue;
                }
                let members = by_skill.get(skill).cloned().unwrap_or_default();
                if members.is_empty() {
                    return Err(format!(
                        "the mixture weighs {} but the tasks have none",
                        skill.name()
                    ));
                }
                skills.push((*skill, weight, members));
            }
        }
        let total: f64 = skills.iter().map(|(_, w, _)| w).sum();
        if skills.is_empty() || total <= 0.0 {
            return Err("the mixture draws no skill".into());
        }
        Ok(Mixture {
            skills,
            total,
            seed,
        })
    }

    /// The instance index of draw `i`.
    pub fn draw(&self, i: u64) -> usize {
        let mut rng = policy::SplitMix64::new(policy::derive_seed(self.seed, &[i]));
        let mut point = rng.next_f64() * self.total;
        let mut chosen = &self.skills[self.skills.len() - 1];
        for entry in &self.skills {
            if point < entry.1 {
                chosen = entry;
                break;
            }
            point -= entry.1;
        }
        let members = &chosen.2;
        members[(rng.next_u64() % members.len() as u64) as usize]
    }

    /// The skills drawn and their share of the draws.
    pub fn shares(&self) -> Vec<(Skill, f64)> {
        self.skills
            .iter()
            .map(|(s, w, _)| (*s, w / self.total))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, skill: Skill) -> Instance {
        let task = match skill {
            Skill::Localization => tasks::Task::Localization {
                issue: String::new(),
                gold_files: vec![],
            },
            _ => tasks::Task::Review {
                issue: String::new(),
                candidate_patch: String::new(),
                candidate_kind: tasks::CandidateKind::Gold,
                label: true,
                fail_to_pass: vec![],
                pass_to_pass: vec![],
            },
        };
        Instance {
            schema_version: 1,
            instance_id: id.into(),
            project: tasks::ProjectRef {
                name: "p".into(),
                version: "1".into(),
                ecosystem: corpus::Ecosystem::Pypi,
                snapshot: "s".into(),
            },
            bug: tasks::BugRef {
                bug_id: id.into(),
                file: "f.py".into(),
                function: None,
                operators: vec![],
                line: 1,
                description: String::new(),
                seed: 0,
            },
            setup: Default::default(),
            task,
            validation: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn draws_follow_the_weights_and_are_reproducible() {
        let instances = vec![
            instance("a", Skill::Localization),
            instance("b", Skill::Localization),
            instance("c", Skill::Review),
        ];
        let weights = BTreeMap::from([(Skill::Localization, 1.0), (Skill::Review, 3.0)]);
        let mixture = Mixture::new(&instances, &weights, 42).unwrap();
        let n = 20_000;
        let draws: Vec<usize> = (0..n).map(|i| mixture.draw(i)).collect();
        let review = draws.iter().filter(|&&d| d == 2).count() as f64 / n as f64;
        // Binomial standard error at n = 20000 is about 0.003.
        assert!((review - 0.75).abs() < 0.015, "{review}");
        let a = draws.iter().filter(|&&d| d == 0).count() as f64 / n as f64;
        assert!((a - 0.125).abs() < 0.015, "{a}");
        let again = Mixture::new(&instances, &weights, 42).unwrap();
        assert!((0..100).all(|i| again.draw(i) == mixture.draw(i)));
        // Uniform over the skills present when no weights are given.
        let uniform = Mixture::new(&instances, &BTreeMap::new(), 1).unwrap();
        assert_eq!(
            uniform.shares(),
            vec![(Skill::Localization, 0.5), (Skill::Review, 0.5)]
        );
        // Weighing a skill without tasks is an error.
        let missing = BTreeMap::from([(Skill::Editing, 1.0)]);
        assert!(Mixture::new(&instances, &missing, 1)
            .unwrap_err()
            .contains("editing"));
    }
}
