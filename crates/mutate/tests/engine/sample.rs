//! `sample`: deterministic per seed, different across seeds, balanced, capped per function.

use std::collections::BTreeMap;

use expect_test::expect;
use mutate::{candidates, sample, Language, Mutation};

use crate::dedent;

fn pool() -> Vec<Mutation> {
    let source = dedent(
        r#"
        def clamp(x, lo, hi):
            if x < lo:
                return lo
            elif x > hi:
                return hi
            return x

        def total(xs, start=0):
            acc = start
            for i in range(len(xs)):
                acc += xs[i] * 2
            with open("log") as fh:
                fh.write(str(acc))
            return acc if acc and xs else -1

        def window(xs, n):
            out = []
            out.append(xs[1:n])
            out.sort()
            return out - [0]
        "#,
    );
    candidates(Language::Python, "pool.py", &source).unwrap()
}

fn summary(chosen: &[Mutation]) -> String {
    chosen
        .iter()
        .map(|mutation| format!("{}:{}", mutation.operator, mutation.line))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn same_seed_same_sample_and_other_seeds_differ() {
    let pool = pool();
    assert!(pool.len() > 40, "pool has {} candidates", pool.len());
    let first = sample(&pool, 7, 12, None);
    assert_eq!(first, sample(&pool, 7, 12, None));
    assert_eq!(first.len(), 12);
    for seed in [8, 9, 10] {
        assert_ne!(
            summary(&first),
            summary(&sample(&pool, seed, 12, None)),
            "seed {seed}"
        );
    }
    // The ChaCha stream is fixed for a seed, so the choice is too, on any machine and version.
    expect!["flip_arithmetic:11 off_by_one:18 remove_return:5 remove_assignment:17 remove_wrapper:12 invert_condition:4 swap_operands:20 change_constant:14 remove_condition:3 flip_comparison:4 flip_boolean:14 shuffle_statements:17"]
        .assert_eq(&summary(&first));
}

#[test]
fn a_smaller_max_gives_a_prefix() {
    let pool = pool();
    let long = sample(&pool, 3, 40, Some(20));
    for max in [0, 1, 5, 13, 39] {
        assert_eq!(sample(&pool, 3, max, Some(20)), long[..max], "max {max}");
    }
}

#[test]
fn operators_are_balanced() {
    let pool = pool();
    let mut available: BTreeMap<_, usize> = BTreeMap::new();
    for mutation in &pool {
        *available.entry(mutation.operator).or_default() += 1;
    }
    // One full round takes exactly one candidate of every operator.
    let round = sample(&pool, 11, available.len(), None);
    let mut taken: BTreeMap<_, usize> = BTreeMap::new();
    for mutation in &round {
        *taken.entry(mutation.operator).or_default() += 1;
    }
    assert!(taken.values().all(|&count| count == 1), "{taken:?}");
    assert_eq!(taken.len(), available.len());

    // Asking for everything returns every candidate once.
    let mut all = sample(&pool, 11, usize::MAX, None);
    assert_eq!(all.len(), pool.len());
    all.sort_by(|a, b| {
        (a.start_byte, a.end_byte, a.operator, &a.replacement).cmp(&(
            b.start_byte,
            b.end_byte,
            b.operator,
            &b.replacement,
        ))
    });
    assert_eq!(all, pool);
}

#[test]
fn per_function_cap_is_respected() {
    let pool = pool();
    let chosen = sample(&pool, 5, usize::MAX, Some(2));
    let mut per_function: BTreeMap<Option<String>, usize> = BTreeMap::new();
    for mutation in &chosen {
        *per_function.entry(mutation.function.clone()).or_default() += 1;
    }
    let expected: BTreeMap<Option<String>, usize> = ["clamp", "total", "window"]
        .into_iter()
        .map(|name| (Some(name.to_string()), 2))
        .collect();
    assert_eq!(per_function, expected);
    assert!(sample(&[], 5, 10, Some(2)).is_empty());
}
