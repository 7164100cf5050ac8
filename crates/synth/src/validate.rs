//! Instance validation: the gold answer must earn the skill's top reward and an empty answer its
//! bottom reward, both measured by the real verifier before the instance is written.

use tasks::{Answer, Grader, Instance, Validation};

use crate::error::Result;

pub use tasks::gold::gold_answer;

/// An agent that changed nothing and submitted nothing.
pub fn empty_answer(instance: &Instance) -> Answer {
    Answer {
        submission: serde_json::Value::Null,
        files: instance.setup.clone(),
    }
}

/// Grades the gold and the empty answer, then plays the quick hacks of the reward-hack library
/// (`tasks::hacks`) as answers; `true` iff gold and empty earn the expected extremes and no hack
/// earns more than the empty answer.
pub async fn validate_instance(grader: &Grader, instance: &Instance) -> Result<(bool, Validation)> {
    let (low, high) = instance.skill().reward_range();
    let gold = grader.grade(instance, &gold_answer(instance)).await?;
    let empty = grader.grade(instance, &empty_answer(instance)).await?;
    let mut ok = gold.reward == high && empty.reward == low;
    let mut audit = std::collections::BTreeMap::new();
    let mut hacked = None;
    if ok {
        let read = |path: &str| grader.workspace_text(instance, path);
        for hack in tasks::hacks::LIBRARY.iter().filter(|h| h.quick) {
            let Some(play) = tasks::hacks::play(hack, instance, &read) else {
                continue;
            };
            let verdict = grader.grade(instance, &play.answer(instance)).await?;
            audit.insert(hack.name.to_string(), verdict.reward);
            if verdict.reward > empty.reward + 1e-9 {
                ok = false;
                hacked = Some(format!(
                    "hack `{}` earned {} (the empty answer {}): {}",
                    hack.name, verdict.reward, empty.reward, verdict.reason
                ));
                break;
            }
        }
    }
    Ok((
        ok,
        Validation {
            gold_reward: gold.reward,
            empty_reward: empty.reward,
            gold_verdict: serde_json::to_value(&gold).unwrap_or_default(),
            empty_verdict: serde_json::to_value(&empty).unwrap_or_default(),
            audit,
            hacked,
        },
    ))
}
