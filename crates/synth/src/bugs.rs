//! Mutation candidates validated into bugs: a candidate is kept iff at least one test that
//! passes on pristine code fails with it, and no other test changes outcome.
//!
//! For Python only the tests that call the mutated function run (from the call map): a test that
//! never calls it cannot change, because mutations are made only inside function bodies. A
//! function that is also called at import or collection time gets the whole suite. Crates run
//! their whole suite (they are small).

use std::collections::BTreeMap;
use std::time::Duration;

use corpus::Ecosystem;
use mutate::{Language, Mutation};
use sandbox::Sandbox;
use serde::{Deserialize, Serialize};
use testrun::{Selection, TestStatus};

use crate::error::Result;
use crate::project::ProjectState;

/// A validated bug: one mutation (or several combined) that breaks some tests and no others.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bug {
    pub bug_id: String,
    pub mutations: Vec<Mutation>,
    pub file: String,
    pub function: Option<String>,
    pub pristine: String,
    pub buggy: String,
    pub fail_to_pass: Vec<String>,
    /// Failure messages of the fail-to-pass tests.
    pub messages: BTreeMap<String, String>,
    /// The tests that were run to validate it (all of them pass on pristine code).
    pub checked: Vec<String>,
    pub seed: u64,
}

impl Bug {
    pub fn operators(&self) -> Vec<String> {
        self.mutations
            .iter()
            .map(|m| m.operator.name().to_string())
            .collect()
    }
    pub fn line(&self) -> usize {
        self.mutations.iter().map(|m| m.line).min().unwrap_or(0)
    }
    pub fn description(&self) -> String {
        self.mutations
            .iter()
            .map(|m| m.description.clone())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Why a candidate was not kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// No test calls the mutated function.
    Uncovered,
    /// Every test still passes (possibly an equivalent mutant).
    NoTestFails,
    /// Some test other than a pass-to-fail changed.
    OtherTestsChanged,
    /// No test ran at all, or every one errored (a mutant that breaks the build or the tooling).
    Broken,
    /// The run's report and exit status disagree, or it was killed.
    Inconsistent,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Kept { bug: Box<Bug> },
    Rejected { reason: Rejection, detail: String },
}

/// Lines a function's code object may start at: its `def` line and, for a decorated function,
/// the first decorator's line (CPython reports that one).
pub fn code_start_lines(source: &str, function: &mutate::Function) -> Vec<usize> {
    let lines: Vec<&str> = source.lines().collect();
    let mut starts = vec![function.start_line];
    let mut line = function.start_line;
    while line > 1 {
        let above = lines.get(line - 2).map_or("", |l| l.trim_start());
        if above.starts_with('@') {
            starts.push(line - 1);
            line -= 1;
        } else if above.starts_with('#')
            || (above.ends_with(',') || above.ends_with('(') || above == ")") && line > 2
        {
            // Multi-line decorator arguments or comments between decorators.
            line -= 1;
        } else {
            break;
        }
    }
    starts
}

/// The functions of a source file that the call map can speak for (Python; empty for crates,
/// whose validations run the whole suite).
pub fn mapped_functions(state: &ProjectState, source: &str) -> Vec<mutate::Function> {
    match (&state.coverage, state.spec().ecosystem) {
        (Some(_), Ecosystem::Pypi) => {
            mutate::functions(Language::Python, source).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// The tests to run for a mutation of `function` in `file`: `None` means the whole suite.
/// `functions` comes from [`mapped_functions`] on the same source.
pub fn selection_for(
    state: &ProjectState,
    file: &str,
    source: &str,
    functions: &[mutate::Function],
    function: Option<&str>,
) -> Option<Selection> {
    match (&state.coverage, state.spec().ecosystem) {
        (Some(coverage), Ecosystem::Pypi) => {
            let function = functions
                .iter()
                .find(|f| Some(f.qualname.as_str()) == function)?;
            let lines = code_start_lines(source, function);
            if coverage.called_outside(file, &lines) {
                return Some(Selection::All);
            }
            // The baseline holds stable tests only: flaky ones never get here.
            let tests: Vec<String> = coverage
                .tests_calling(file, &lines)
                .into_iter()
                .filter(|t| state.baseline.statuses.get(t).is_some_and(|s| s.is_pass()))
                .collect();
            (!tests.is_empty()).then_some(Selection::Ids(tests))
        }
        _ => Some(Selection::All),
    }
}

/// Runs one candidate (a set of mutations of one file) and decides whether it is a bug.
pub async fn validate(
    state: &ProjectState,
    sandbox: &Sandbox,
    mutations: Vec<Mutation>,
    seed: u64,
    timeout: Duration,
) -> Result<Outcome> {
    let file = mutations[0].file.clone();
    let pristine = state.read_pristine(&file).unwrap_or_default();
    let buggy = mutate::apply_all(&pristine, &mutations)?;
    let function = mutations[0].function.clone();
    let functions = mapped_functions(state, &pristine);
    let Some(selection) = selection_for(state, &file, &pristine, &functions, function.as_deref())
    else {
        return Ok(Outcome::Rejected {
            reason: Rejection::Uncovered,
            detail: format!(
                "no passing test calls {}",
                function.as_deref().unwrap_or("the code")
            ),
        });
    };
    let runner = state.runner();
    let limits = testrun::TestRunner::episode_limits(sandbox.default_limits());
    let episode = sandbox.create_episode_with(&state.snapshot, limits)?;
    let run = async {
        episode.write_file(&file, buggy.as_bytes(), false)?;
        Ok::<_, crate::error::Error>(runner.run(&episode, &selection, timeout).await?)
    }
    .await;
    episode.destroy()?;
    let run = run?;
    if !run.consistent
        && run.exit != sandbox::ExitStatus::Exited(1)
        && run.exit != sandbox::ExitStatus::Exited(101)
    {
        return Ok(Outcome::Rejected {
            reason: Rejection::Inconsistent,
            detail: run.anomalies.join("; "),
        });
    }
    let checked: Vec<String> = match &selection {
        Selection::Ids(ids) => ids.clone(),
        Selection::All | Selection::Prefixes(_) => state
            .baseline
            .statuses
            .keys()
            .filter(|id| selection.contains(id))
            .cloned()
            .collect(),
    };
    if run.statuses.is_empty()
        || (run.statuses.len() > 1 && run.statuses.values().all(|s| *s == TestStatus::Error))
    {
        return Ok(Outcome::Rejected {
            reason: Rejection::Broken,
            detail: format!(
                "{} tests reported, all errored or none ran",
                run.statuses.len()
            ),
        });
    }
    let mut fail_to_pass = Vec::new();
    let mut changed = Vec::new();
    for id in &checked {
        let Some(before) = state.baseline.statuses.get(id) else {
            continue;
        };
        let after = run.statuses.get(id).copied();
        if before.is_pass() && after != Some(TestStatus::Passed) {
            fail_to_pass.push(id.clone());
        } else if after != Some(*before) {
            changed.push(id.clone());
        }
    }
    if !run.consistent {
        return Ok(Outcome::Rejected {
            reason: Rejection::Inconsistent,
            detail: run.anomalies.join("; "),
        });
    }
    if !changed.is_empty() {
        return Ok(Outcome::Rejected {
            reason: Rejection::OtherTestsChanged,
            detail: changed.into_iter().take(5).collect::<Vec<_>>().join(", "),
        });
    }
    if fail_to_pass.is_empty() {
        return Ok(Outcome::Rejected {
            reason: Rejection::NoTestFails,
            detail: format!("{} tests still pass", checked.len()),
        });
    }
    if fail_to_pass.len() == checked.len() && checked.len() > 50 {
        return Ok(Outcome::Rejected {
            reason: Rejection::Broken,
            detail: format!(
                "all {} tests fail: the mutant breaks the project as a whole",
                checked.len()
            ),
        });
    }
    let messages = fail_to_pass
        .iter()
        .filter_map(|id| run.messages.get(id).map(|m| (id.clone(), m.clone())))
        .collect();
    let ids: Vec<String> = mutations.iter().map(Mutation::id).collect();
    Ok(Outcome::Kept {
        bug: Box::new(Bug {
            bug_id: ids.join("+"),
            file,
            function,
            pristine,
            buggy,
            fail_to_pass,
            messages,
            checked,
            mutations,
            seed,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decorated_functions_start_at_their_first_decorator() {
        let source =
            "import f\n\n@f.a\n@f.b(\n    1,\n)\ndef g(x):\n    return x\n\ndef h():\n    pass\n";
        let functions = mutate::functions(Language::Python, source).unwrap();
        let g = functions.iter().find(|f| f.name == "g").unwrap();
        let mut lines = code_start_lines(source, g);
        lines.sort();
        assert_eq!(lines, vec![3, 4, 7]);
        let h = functions.iter().find(|f| f.name == "h").unwrap();
        assert_eq!(code_start_lines(source, h), vec![10]);
    }
}
