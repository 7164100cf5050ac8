//! Unit-test generation for a Rust crate end to end, in the real sandbox with the host's cargo:
//! a small real crate (inline unit tests in a submodule, a doc test, an integration test file),
//! its bugs validated by `cargo test`, test-generation instances whose gold file is assembled
//! from the crate's own tests, and hand-written answers graded by the verifier.
//!
//! Needs root (the sandbox) and a Rust toolchain on the host.

use std::sync::Arc;
use std::time::Duration;

use corpus::Environment;
use synth::pipeline::{synth_state, ProjectReport, SynthOptions};
use tasks::{Answer, FileEdits, GradedProject, Grader, Instance, Skill, Task};
use test_support::fixture::{mini_crate, test_sandbox};

fn answer(instance: &Instance, path: &str, text: &str) -> Answer {
    Answer {
        submission: serde_json::json!({ "path": path }),
        files: instance
            .setup
            .then(&FileEdits::new().write(path, text.to_string())),
    }
}

/// Tests written by hand for `clamp` (not the crate's own): every branch and both bounds.
const STRONG: &str = r#"use super::*;

#[test]
fn keeps_values_inside() {
    assert_eq!(clamp(7, 0, 10), 7);
    assert_eq!(clamp(5, 0, 10), 5);
}

#[test]
fn raises_low_values() {
    assert_eq!(clamp(-1, 0, 10), 0);
    assert_eq!(clamp(-3, 0, 10), 0);
    assert_eq!(clamp(0, 0, 10), 0);
}

#[test]
fn lowers_high_values() {
    assert_eq!(clamp(11, 0, 10), 10);
    assert_eq!(clamp(30, 0, 10), 10);
    assert_eq!(clamp(10, 0, 10), 10);
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_unit_test_generation() {
    let dir = tempfile::tempdir().unwrap();
    let prepared = mini_crate(dir.path());
    let Environment::Cargo { sysroot } = prepared.environment.clone() else {
        unreachable!("the mini crate is a crate")
    };
    let (sandbox, store) = test_sandbox(dir.path(), &sysroot);
    let state = synth::project::prepare_state(
        prepared,
        &dir.path().join("cache"),
        &store,
        &sandbox,
        1,
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    // 4 unit tests, 2 integration tests, 1 doc test.
    assert_eq!(
        state.baseline.passing().count(),
        7,
        "{:?}",
        state.baseline.statuses
    );
    let out = dir.path().join("tasks");
    let options = SynthOptions {
        out: out.clone(),
        skills: [Skill::TestGeneration].into_iter().collect(),
        max_per_repo: 40,
        max_candidates: 40,
        seed: 3,
        concurrency: 2,
        test_timeout: Duration::from_secs(120),
        baseline_runs: 1,
    };
    let state = Arc::new(state);
    synth_state(
        &options,
        sandbox.clone(),
        state.clone(),
        ProjectReport::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let instances = tasks::store::read_dir(&out).unwrap();
    let by_function = |name: &str| -> Instance {
        instances
            .iter()
            .find(|i| matches!(&i.task, Task::TestGeneration { target, .. } if target.qualname == name))
            .unwrap_or_else(|| panic!("no test-generation instance for {name}: {instances:#?}"))
            .clone()
    };

    // clamp: the gold file is the crate's own `stats::tests`, moved beside the function.
    let clamp = by_function("clamp");
    let validation = clamp.validation.as_ref().unwrap();
    assert_eq!(
        (validation.gold_reward, validation.empty_reward),
        (1.0, 0.0)
    );
    let Task::TestGeneration {
        grade_path,
        mutants,
        gold_test,
        harness: Some(harness),
        ..
    } = &clamp.task
    else {
        panic!("{clamp:?}")
    };
    assert_eq!(grade_path, "src/atomskill_tests.rs");
    assert_eq!(harness.test_prefix, "lib::stats::atomskill_tests::");
    assert!(gold_test.contains("mod stats_tests"), "{gold_test}");
    assert!(gold_test.contains("use super::super::*;"), "{gold_test}");
    assert!(mutants.len() >= 2, "{mutants:?}");
    // The agent sees the declared, empty module and not the crate's own tests of the function.
    let stats = clamp.setup.0["src/stats.rs"].clone().unwrap();
    assert!(!stats.contains("mod tests"), "{stats}");
    assert!(stats.ends_with("#[path = \"atomskill_tests.rs\"]\nmod atomskill_tests;\n"));
    assert!(clamp.setup.0.contains_key(grade_path.as_str()));

    // sum_squares: the doc test and the integration tests, made internal.
    let squares = by_function("sum_squares");
    let validation = squares.validation.as_ref().unwrap();
    assert_eq!(
        (validation.gold_reward, validation.empty_reward),
        (1.0, 0.0)
    );
    let Task::TestGeneration { gold_test, .. } = &squares.task else {
        panic!()
    };
    assert!(
        gold_test.contains("crate::sum_squares(&[1, 2, 3])"),
        "{gold_test}"
    );
    assert!(gold_test.contains("mod it_it"), "{gold_test}");
    assert_eq!(squares.setup.0.get("tests/it.rs"), Some(&None));

    let mut grader = Grader::new(sandbox.clone(), Duration::from_secs(120));
    grader.add_project(GradedProject {
        runner: state.runner(),
        snapshot: state.snapshot.clone(),
    });
    // Hand-written tests that check every branch: top reward, from any path the agent chose.
    let verdict = grader
        .grade(&clamp, &answer(&clamp, "src/my_tests.rs", STRONG))
        .await
        .unwrap();
    assert_eq!(verdict.reward, 1.0, "{verdict:?}");
    assert_eq!(verdict.details.mutation_score, Some(1.0));
    // One test of the middle: passes, but mutants of the bounds survive.
    let weak = "use super::*;\n\n#[test]\nfn middle() {\n    assert_eq!(clamp(5, 0, 10), 5);\n}\n";
    let verdict = grader
        .grade(&clamp, &answer(&clamp, grade_path, weak))
        .await
        .unwrap();
    assert_eq!(verdict.reward, 0.0, "{verdict:?}");
    assert!(!verdict.details.survived_mutants.is_empty(), "{verdict:?}");
    assert!(verdict.details.mutation_score.unwrap() < 1.0);
    // A test that is wrong about the original code.
    let wrong = "use super::*;\n\n#[test]\nfn middle() {\n    assert_eq!(clamp(5, 0, 10), 6);\n}\n";
    let verdict = grader
        .grade(&clamp, &answer(&clamp, grade_path, wrong))
        .await
        .unwrap();
    assert_eq!(verdict.reward, 0.0);
    assert!(verdict.reason.contains("original"), "{}", verdict.reason);
    assert_eq!(
        verdict.details.failed_tests,
        vec!["lib::stats::atomskill_tests::middle".to_string()]
    );
    // A file that does not compile: the reason shows the compiler's error.
    let broken = "use super::*;\n\n#[test]\nfn middle() {\n    assert_eq!(clamp(5, 0), 5);\n}\n";
    let verdict = grader
        .grade(&clamp, &answer(&clamp, grade_path, broken))
        .await
        .unwrap();
    assert_eq!(verdict.reward, 0.0);
    assert!(verdict.reason.contains("error"), "{}", verdict.reason);
    // Tests of the source text instead of the behaviour: the file must read exactly as the
    // original. That "kills" every mutant, and the sentinel too (a no-op line), so it earns 0.
    let wired = harness.edits.0["src/stats.rs"].clone().unwrap();
    let reads_source = format!(
        "use super::*;\n\n#[test]\nfn source_unchanged() {{\n    assert_eq!(clamp(5, 0, 10), 5);\n    assert_eq!(include_str!(\"stats.rs\"), r##\"{wired}\"##);\n}}\n"
    );
    let verdict = grader
        .grade(&clamp, &answer(&clamp, grade_path, &reads_source))
        .await
        .unwrap();
    assert_eq!(verdict.reward, 0.0, "{verdict:?}");
    assert!(verdict.reason.contains("source text"), "{}", verdict.reason);
    assert!(verdict.details.survived_mutants.is_empty(), "{verdict:?}");
    // The crate's other tests do not count: a file without tests earns nothing even though
    // the rest of the suite passes.
    let verdict = grader
        .grade(&clamp, &answer(&clamp, grade_path, "// nothing yet\n"))
        .await
        .unwrap();
    assert_eq!(verdict.reward, 0.0, "{verdict:?}");
}
