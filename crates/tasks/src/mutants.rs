//! The fast path of the unit-test reward: every mutant of one function graded in one episode by
//! one Python process that collects the test file once and forks a child per mutant
//! (`py/atomskill_mutants.py`, which documents the swap and its exact conditions).
//!
//! It must never decide a mutant differently from the slow path (a fresh episode and a full
//! pytest run per mutant): whatever it cannot model exactly comes back as
//! [`MutantOutcome::Slow`], and the grader runs the slow path for that mutant. A mutant is killed
//! iff a test of the file fails or errors, or the run dies or exceeds the test timeout; skips and
//! xfails are neither (the same rule as [`crate::verify`]'s slow path).

use std::collections::BTreeMap;
use std::time::Duration;

use sandbox::{Episode, ExecRequest};
use serde::Deserialize;
use testrun::{Selection, TestRunner};

use crate::error::Result;
use crate::instance::Mutant;

/// The runner, written into the episode as [`RUNNER_PATH`].
const RUNNER: &str = include_str!("../py/atomskill_mutants.py");
const RUNNER_PATH: &str = ".atomskill/atomskill_mutants.py";
const SPEC_PATH: &str = ".atomskill/mutants.json";
const RESULT_PATH: &str = ".atomskill/mutants-result.jsonl";
/// The JUnit report the runner's pytest writes (its children overwrite it); never read.
const JUNIT_PATH: &str = "fast-junit.xml";

/// How the fast path decided one mutant.
#[derive(Clone, Debug, PartialEq)]
pub enum MutantOutcome {
    Killed {
        reason: String,
    },
    Survived,
    /// A canary test of the file had the wrong outcome in the mutant's run (`crate::canary`).
    Tampered {
        reason: String,
    },
    /// The fast path cannot decide it exactly; grade it the slow way.
    Slow {
        reason: String,
    },
}

/// What one fast run found.
#[derive(Clone, Debug, Default)]
pub struct FastRun {
    /// By mutant id; a mutant missing here is graded the slow way.
    pub outcomes: BTreeMap<String, MutantOutcome>,
    /// Why the runner decided nothing (collection errors, threads, a control child that failed),
    /// or why it stopped early.
    pub fatal: Option<String>,
    /// Seconds the pristine control child took.
    pub control_seconds: Option<f64>,
    /// Seconds of the whole runner process, as the sandbox measured it.
    pub wall_seconds: f64,
    /// Seconds each mutant added to the runner: from the previous report to its own (its
    /// compiling, matching and fork overlap the previous mutant's tests).
    pub seconds: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct Line {
    id: Option<String>,
    seconds: Option<f64>,
    outcome: Option<String>,
    reason: Option<String>,
    control: Option<Child>,
    fatal: Option<String>,
}

#[derive(Deserialize)]
struct Child {
    outcome: String,
    seconds: Option<f64>,
}

/// Why the fast path cannot grade this project at all, if it cannot: it needs a pytest started
/// as `PYTHON -m pytest ...`.
pub fn unsupported(runner: &TestRunner, grade_path: &str) -> Option<String> {
    let selection = Selection::Ids(vec![grade_path.to_string()]);
    runner
        .pytest_start(&selection, JUNIT_PATH)
        .is_none()
        .then(|| {
            format!(
                "the test command `{}` is not `PYTHON -m pytest ...`",
                runner.command(&selection, JUNIT_PATH).join(" ")
            )
        })
}

/// The mutated content of `target`, if `mutant` rewrites exactly that file and nothing else.
fn mutated_source<'a>(mutant: &'a Mutant, target: &str) -> Option<&'a str> {
    match mutant.edits.0.iter().next() {
        Some((path, Some(content))) if mutant.edits.0.len() == 1 && path == target => Some(content),
        _ => None,
    }
}

/// Runs the mutants of `target` (a workspace-relative source file) against the test file at
/// `grade_path` in `episode`, which must hold the pristine tree and the test file. `timeout` is
/// the slow path's limit for one pytest run; the whole runner gets that much per mutant, plus
/// one for the start and the control child.
pub async fn run_fast(
    runner: &TestRunner,
    episode: &Episode,
    target: &str,
    grade_path: &str,
    mutants: &[Mutant],
    canaries: &crate::canary::Canaries,
    timeout: Duration,
) -> Result<FastRun> {
    let mut run = FastRun::default();
    let mut spec_mutants = Vec::new();
    for mutant in mutants {
        match mutated_source(mutant, target) {
            Some(source) => {
                spec_mutants.push(serde_json::json!({"id": mutant.id, "source": source}))
            }
            None => {
                run.outcomes.insert(
                    mutant.id.clone(),
                    MutantOutcome::Slow {
                        reason: format!("the mutant edits other files than {target}"),
                    },
                );
            }
        }
    }
    if spec_mutants.is_empty() {
        return Ok(run);
    }
    let junit = format!(".atomskill/{JUNIT_PATH}");
    let Some((python, args)) =
        runner.pytest_start(&Selection::Ids(vec![grade_path.to_string()]), &junit)
    else {
        run.fatal = unsupported(runner, grade_path);
        return Ok(run);
    };
    // The seed plugin first, as the slow path's run loads it.
    let pytest_args: Vec<String> = testrun::runner::SEED_PLUGIN_ARGS
        .iter()
        .map(|a| a.to_string())
        .chain(["--maxfail=0".to_string()])
        .chain(args)
        .collect();
    let spec = serde_json::json!({
        "target": target,
        "pytest_args": pytest_args,
        "mutants": spec_mutants,
        "canaries": {
            "must_fail": canaries.groups.iter().map(|g| &g.must_fail).collect::<Vec<_>>(),
            "must_pass": canaries.groups.iter().map(|g| &g.must_pass).collect::<Vec<_>>(),
        },
        "timeout": timeout.as_secs_f64(),
        "result": format!("{}/{RESULT_PATH}", sandbox::WORKSPACE),
    });
    runner.install_plugins(episode)?;
    episode.write_file(RUNNER_PATH, RUNNER.as_bytes(), false)?;
    episode.write_file(SPEC_PATH, spec.to_string().as_bytes(), false)?;
    let whole = timeout.saturating_mul(spec_mutants.len() as u32 + 1);
    let mut request = ExecRequest::new([
        python,
        "-P".to_string(),
        format!("{}/{RUNNER_PATH}", sandbox::WORKSPACE),
        format!("{}/{SPEC_PATH}", sandbox::WORKSPACE),
    ])
    .timeout(whole);
    request.env = runner.run_env().into_iter().collect();
    let result = episode.exec(&request).await?;
    run.wall_seconds = result.duration.as_secs_f64();
    let report = match episode.read_file(RESULT_PATH, 64 << 20) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => {
            run.fatal = Some(format!(
                "the runner wrote no report ({error}); exit {:?}: {}",
                result.status,
                result
                    .stderr
                    .to_text()
                    .chars()
                    .take(2000)
                    .collect::<String>()
            ));
            return Ok(run);
        }
    };
    parse_report(&report, mutants, &mut run);
    Ok(run)
}

/// Reads the runner's report into `run`. A line naming an unknown mutant or one already
/// decided makes the whole report untrusted: every decision from it is dropped.
fn parse_report(report: &str, mutants: &[Mutant], run: &mut FastRun) {
    let wanted: std::collections::BTreeSet<&str> = mutants.iter().map(|m| m.id.as_str()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for text in report.lines() {
        let Ok(line) = serde_json::from_str::<Line>(text) else {
            run.fatal = Some(format!("unreadable report line `{text}`"));
            break;
        };
        if let Some(fatal) = line.fatal {
            run.fatal = Some(fatal);
        }
        if let Some(control) = line.control {
            run.control_seconds = control.seconds;
            if control.outcome == "tampered" {
                // The pristine code with a canary wrong: the file forges outcomes. Every
                // mutant's outcome says so.
                for mutant in mutants {
                    run.outcomes.insert(
                        mutant.id.clone(),
                        MutantOutcome::Tampered {
                            reason: "a canary test had the wrong outcome on the original code"
                                .into(),
                        },
                    );
                }
                return;
            }
            if control.outcome != "survived" && run.fatal.is_none() {
                run.fatal = Some(format!("control child: {}", control.outcome));
            }
        }
        let (Some(id), Some(outcome)) = (line.id, line.outcome) else {
            continue;
        };
        if !wanted.contains(id.as_str()) || !seen.insert(id.clone()) {
            run.fatal = Some(format!("the report names mutant `{id}` unexpectedly"));
            run.outcomes
                .retain(|_, o| matches!(o, MutantOutcome::Slow { .. }));
            break;
        }
        if let Some(seconds) = line.seconds {
            run.seconds.insert(id.clone(), seconds);
        }
        let reason = line.reason.unwrap_or_default();
        let outcome = match outcome.as_str() {
            "killed" => MutantOutcome::Killed { reason },
            "survived" => MutantOutcome::Survived,
            "tampered" => MutantOutcome::Tampered { reason },
            _ => MutantOutcome::Slow { reason },
        };
        run.outcomes.insert(id, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::FileEdits;

    fn mutant(id: &str, edits: FileEdits) -> Mutant {
        Mutant {
            id: id.into(),
            description: String::new(),
            edits,
        }
    }

    /// Parses `report` for mutants `a` and `b`; returns the outcomes as `id=k|s|slow` and the
    /// fatal message.
    fn check_report(report: &str, expected: &str, expected_fatal: Option<&str>) {
        let mutants = [mutant("a", FileEdits::new()), mutant("b", FileEdits::new())];
        let mut run = FastRun::default();
        parse_report(report, &mutants, &mut run);
        let outcomes: Vec<String> = run
            .outcomes
            .iter()
            .map(|(id, o)| {
                let o = match o {
                    MutantOutcome::Killed { .. } => "k",
                    MutantOutcome::Survived => "s",
                    MutantOutcome::Slow { .. } => "slow",
                    MutantOutcome::Tampered { .. } => "t",
                };
                format!("{id}={o}")
            })
            .collect();
        assert_eq!(outcomes.join(" "), expected, "{report}");
        assert_eq!(run.fatal.as_deref(), expected_fatal, "{report}");
    }

    #[test]
    fn reports() {
        let control = r#"{"control": {"outcome": "survived", "seconds": 0.1}}"#;
        let a_killed = r#"{"id": "a", "outcome": "killed", "reason": "t failed"}"#;
        let b_survived = r#"{"id": "b", "outcome": "survived"}"#;
        check_report(&[control, a_killed, b_survived].join("\n"), "a=k b=s", None);
        check_report(
            &[control, r#"{"id": "b", "outcome": "slow", "reason": "r"}"#].join("\n"),
            "b=slow",
            None,
        );
        // A second line for one mutant, or an unknown mutant: nothing from the report counts.
        check_report(
            &[control, a_killed, b_survived, a_killed].join("\n"),
            "",
            Some("the report names mutant `a` unexpectedly"),
        );
        check_report(
            &[control, r#"{"id": "c", "outcome": "killed"}"#].join("\n"),
            "",
            Some("the report names mutant `c` unexpectedly"),
        );
        check_report(
            r#"{"fatal": "threads are alive after collection"}"#,
            "",
            Some("threads are alive after collection"),
        );
        check_report("not json", "", Some("unreadable report line `not json`"));
        // A canary wrong in a mutant's run, or in the pristine control run (then every mutant).
        check_report(
            &[
                control,
                r#"{"id": "a", "outcome": "tampered", "reason": "r"}"#,
            ]
            .join("\n"),
            "a=t",
            None,
        );
        check_report(
            r#"{"control": {"outcome": "tampered", "seconds": 0.1}}"#,
            "a=t b=t",
            None,
        );
    }

    #[test]
    fn only_single_file_rewrites_of_the_target_go_fast() {
        let mutant = |edits: FileEdits| Mutant {
            id: "m".into(),
            description: String::new(),
            edits,
        };
        for (edits, expected) in [
            (FileEdits::new().write("a.py", "x"), Some("x")),
            (FileEdits::new().write("b.py", "x"), None),
            (FileEdits::new().delete("a.py"), None),
            (FileEdits::new().write("a.py", "x").write("c.py", "y"), None),
            (FileEdits::new(), None),
        ] {
            assert_eq!(
                mutated_source(&mutant(edits.clone()), "a.py"),
                expected,
                "{edits:?}"
            );
        }
    }
}
