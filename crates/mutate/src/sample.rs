//! Seeded, operator-balanced sampling of candidate mutations.
//!
//! The only randomness of the crate lives here, in a ChaCha8 generator seeded from the caller's
//! seed (ChaCha's output for a seed is fixed across `rand_chacha` versions). Nothing here looks at
//! source text: it only chooses among candidates.

use std::collections::{BTreeMap, VecDeque};

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::{Mutation, Operator};

/// Up to `max` candidates chosen with `seed`, balanced across operators: rounds visit the
/// operators that still have candidates in a seeded order and take one random candidate of each.
/// With `per_function_cap`, no (file, function) pair gets more than that many mutations.
///
/// The result is in choice order, and a smaller `max` with the same seed and candidates gives a
/// prefix of a larger one, so a caller can ask for more later without changing earlier picks.
pub fn sample(
    candidates: &[Mutation],
    seed: u64,
    max: usize,
    per_function_cap: Option<usize>,
) -> Vec<Mutation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut queues: BTreeMap<Operator, VecDeque<&Mutation>> = BTreeMap::new();
    for candidate in candidates {
        queues
            .entry(candidate.operator)
            .or_default()
            .push_back(candidate);
    }
    for queue in queues.values_mut() {
        shuffle(queue.make_contiguous(), &mut rng);
    }

    let mut per_function: BTreeMap<(&str, Option<&str>), usize> = BTreeMap::new();
    let mut chosen = Vec::new();
    while chosen.len() < max && !queues.is_empty() {
        let mut round: Vec<Operator> = queues.keys().copied().collect();
        shuffle(&mut round, &mut rng);
        for operator in round {
            if chosen.len() >= max {
                break;
            }
            let Some(queue) = queues.get_mut(&operator) else {
                continue;
            };
            // Skip candidates whose function is full; they can never be chosen later either.
            while let Some(candidate) = queue.pop_front() {
                let key = (candidate.file.as_str(), candidate.function.as_deref());
                let count = per_function.entry(key).or_default();
                if per_function_cap.is_some_and(|cap| *count >= cap) {
                    continue;
                }
                *count += 1;
                chosen.push(candidate.clone());
                break;
            }
            if queue.is_empty() {
                queues.remove(&operator);
            }
        }
    }
    chosen
}

/// Fisher-Yates with an unbiased bounded draw.
fn shuffle<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for last in (1..items.len()).rev() {
        let pick = below(rng, last as u64 + 1) as usize;
        items.swap(last, pick);
    }
}

/// A uniform draw from `0..bound` (Lemire's multiply-and-reject).
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let wide = u128::from(rng.next_u64()) * u128::from(bound);
        if (wide as u64) >= threshold {
            return (wide >> 64) as u64;
        }
    }
}
