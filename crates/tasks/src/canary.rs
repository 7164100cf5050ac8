//! Canary tests: detecting a forged test run without knowing how it was forged.
//!
//! Every graded test run gets two tests added at grading time, beside the tests it runs (in the
//! same Python test file, in the same Rust test binary): one that must fail with an ordinary
//! assertion failure and one that must pass. They look like the project's own tests: names made
//! of words from the tests around them, a small computation and an assertion, the two the same
//! in form and different only in their data. Names and data come from a seed per grader, so an
//! answer cannot know them.
//!
//! Code that changes how outcomes are recorded or reported (a patched report object, a rewritten
//! report file, an early exit with a chosen status, a shadowed runner) cannot tell a canary from
//! the tests it wants to pass, so it gives itself away: the must-fail canary reported passed or
//! skipped, the must-pass one reported failed, a canary missing from a report that has the tests
//! around it, or a run that exited 0, which no honest run with a failing canary does.
//! A run that was killed (timeout, memory, a signal) is judged by nothing here: it fails anyway.

use std::collections::BTreeSet;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use sandbox::ExitStatus;
use testrun::{TestRun, TestStatus};

use crate::patch::FileEdits;

/// How a run was found forged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// A canary test's outcome is not the one it must have.
    Canary,
    /// The answer adds a module named like one of the standard library, the test runner or
    /// the environment's packages.
    ShadowedModule,
    /// A script or test passes or fails on the source text, not on behaviour.
    SourceText,
    /// The mutant runner's report does not hold what every honest run reports.
    RunnerReport,
}

impl TamperKind {
    pub fn name(&self) -> &'static str {
        match self {
            TamperKind::Canary => "canary",
            TamperKind::ShadowedModule => "shadowed_module",
            TamperKind::SourceText => "source_text",
            TamperKind::RunnerReport => "runner_report",
        }
    }
}

/// The evidence that a run was forged: a typed kind and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tampering {
    pub kind: TamperKind,
    pub evidence: String,
}

/// The canaries of one run, by the file (Python) or test binary (Rust) they sit in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Canaries {
    /// Writes the files that hold the canaries (applied after every other edit).
    pub edits: FileEdits,
    pub groups: Vec<Group>,
}

/// Two canaries in one file or test binary.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The id prefix of the tests that run with them, in the same file or binary
    /// (`tests/test_a.py::`, `lib::`, `tests/it.rs::`).
    pub prefix: String,
    pub must_fail: String,
    pub must_pass: String,
}

impl Canaries {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Every canary id.
    pub fn ids(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| [g.must_fail.clone(), g.must_pass.clone()])
            .collect()
    }

    pub fn is_canary(&self, id: &str) -> bool {
        self.groups
            .iter()
            .any(|g| g.must_fail == id || g.must_pass == id)
    }

    /// Adds one group: canary tests appended to `content` (the final text of the file at
    /// `path`); `ids` names them under `prefix`.
    /// `prefix` is the id prefix of the canaries, `neighbours` that of the tests beside them.
    fn add(
        &mut self,
        path: &str,
        content: String,
        prefix: &str,
        neighbours: &str,
        names: [String; 2],
    ) {
        let [must_fail, must_pass] = names;
        self.edits = std::mem::take(&mut self.edits).write(path, content);
        self.groups.push(Group {
            must_fail: format!("{prefix}{must_fail}"),
            must_pass: format!("{prefix}{must_pass}"),
            prefix: neighbours.to_string(),
        });
    }

    /// Why `run` is forged, if it is. Call it on the raw run (statuses as reported, before
    /// canaries are taken out).
    pub fn check(&self, run: &TestRun) -> Option<Tampering> {
        if self.groups.is_empty() || run.timed_out || !matches!(run.exit, ExitStatus::Exited(_)) {
            return None;
        }
        let tampered = |evidence: String| {
            Some(Tampering {
                kind: TamperKind::Canary,
                evidence,
            })
        };
        if run.exit == ExitStatus::Exited(0) {
            return tampered(
                "the run exited 0 although a canary test that must fail was in it".into(),
            );
        }
        for group in &self.groups {
            match run.statuses.get(&group.must_fail) {
                Some(TestStatus::Failed) => {}
                Some(other) => {
                    return tampered(format!(
                        "a canary test that must fail was reported {other:?}"
                    ))
                }
                None => {}
            }
            if let Some(status) = run.statuses.get(&group.must_pass) {
                if matches!(status, TestStatus::Failed) {
                    return tampered("a canary test that must pass was reported failed".into());
                }
            }
            let neighbours = run
                .statuses
                .keys()
                .any(|id| id.starts_with(&group.prefix) && !self.is_canary(id));
            let missing = [&group.must_fail, &group.must_pass]
                .into_iter()
                .filter(|id| !run.statuses.contains_key(*id))
                .count();
            // A test binary killed by a signal (an honest crash: a stack overflow, an abort)
            // may have taken its canaries with it; its run counts no test as passed anyway.
            let crashed = run
                .anomalies
                .iter()
                .any(|a| a.starts_with(testrun::cargo::SIGNAL_ANOMALY));
            if neighbours && missing > 0 && !crashed {
                return tampered(format!(
                    "{missing} canary tests are missing from a report that has the tests beside them"
                ));
            }
        }
        None
    }

    /// `run` without the canaries' statuses.
    pub fn strip(&self, mut run: TestRun) -> TestRun {
        run.statuses.retain(|id, _| !self.is_canary(id));
        run
    }
}

/// A seed per (grader seed, file, content): the same tree gets the same canaries within one
/// grader (so repeated runs of it can be remembered), a different grader different ones.
pub fn seed_for(grader_seed: u64, path: &str, content: &str) -> u64 {
    trajectory::derive_seed_from_bytes(grader_seed, &[path.as_bytes(), content.as_bytes()])
}

/// Words (split at `_`) of the names defined on lines starting with `marker` (`def test_`, `fn `,
/// optionally after `pub `) in `text`, in order of first appearance, lower-case letters only;
/// padded with common words to at least six.
fn words(text: &str, marker: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix(marker).or_else(|| {
            line.strip_prefix("pub ")
                .and_then(|l| l.strip_prefix(marker))
        }) else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        for word in name.split('_') {
            if word.len() >= 2
                && word.len() <= 12
                && word != "test"
                && word.chars().all(|c| c.is_ascii_lowercase())
                && seen.insert(word.to_string())
            {
                out.push(word.to_string());
            }
        }
    }
    const FALLBACK: [&str; 12] = [
        "value", "basic", "empty", "single", "many", "order", "result", "input", "default",
        "simple", "large", "small",
    ];
    for word in FALLBACK {
        if out.len() >= 6 {
            break;
        }
        if seen.insert(word.to_string()) {
            out.push(word.to_string());
        }
    }
    out
}

/// Two distinct new names made of 2 or 3 words of `vocabulary`, absent from `text`.
fn names(rng: &mut ChaCha8Rng, vocabulary: &[String], text: &str, prefix: &str) -> [String; 2] {
    let mut made: Vec<String> = Vec::new();
    let mut attempt = 0u32;
    while made.len() < 2 {
        attempt += 1;
        let count = 2 + (rng.next_u32() % 2) as usize;
        let mut parts: Vec<&str> = Vec::new();
        for _ in 0..count {
            let word = &vocabulary[rng.next_u32() as usize % vocabulary.len()];
            if !parts.contains(&word.as_str()) {
                parts.push(word);
            }
        }
        let mut name = format!("{prefix}{}", parts.join("_"));
        if attempt > 50 {
            name = format!("{name}_{}", rng.next_u32() % 1000);
        }
        if !text.contains(&name) && !made.contains(&name) {
            made.push(name);
        }
    }
    [made[0].clone(), made[1].clone()]
}

/// Three distinct small numbers, their sorted order, and a wrong order.
fn data(rng: &mut ChaCha8Rng) -> ([u32; 3], [u32; 3], [u32; 3]) {
    let mut values = [0u32; 3];
    let mut i = 0;
    while i < 3 {
        let v = 2 + rng.next_u32() % 97;
        if !values[..i].contains(&v) {
            values[i] = v;
            i += 1;
        }
    }
    let mut sorted = values;
    sorted.sort();
    let wrong = [sorted[0], sorted[2], sorted[1]];
    (values, sorted, wrong)
}

fn list(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn python_test(name: &str, values: &[u32; 3], expected: &[u32; 3]) -> String {
    format!(
        "\n\n\ndef {name}():\n    values = [{}]\n    assert sorted(values) == [{}]\n",
        list(values),
        list(expected)
    )
}

fn rust_test(name: &str, values: &[u32; 3], expected: &[u32; 3], indent: &str) -> String {
    let lines = [
        "#[test]".to_string(),
        format!("fn {name}() {{"),
        format!("    let mut values = [{}];", list(values)),
        "    values.sort_unstable();".to_string(),
        format!("    assert_eq!(values, [{}]);", list(expected)),
        "}".to_string(),
    ];
    let body: String = lines.iter().map(|l| format!("{indent}{l}\n")).collect();
    format!("\n{body}")
}

impl Canaries {
    /// Canaries for a Python test file at `path` whose final text is `content`.
    pub fn add_python(&mut self, path: &str, content: &str, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vocabulary = words(content, "def test_");
        let names = names(&mut rng, &vocabulary, content, "test_");
        let (values, _, wrong) = data(&mut rng);
        let (values2, sorted2, _) = data(&mut rng);
        // The two in a random order: the must-fail one is not always first.
        let fail = python_test(&names[0], &values, &wrong);
        let pass = python_test(&names[1], &values2, &sorted2);
        let mut text = content.trim_end_matches('\n').to_string();
        if rng.next_u32() % 2 == 0 {
            text.push_str(&fail);
            text.push_str(&pass);
        } else {
            text.push_str(&pass);
            text.push_str(&fail);
        }
        let prefix = format!("{path}::");
        self.add(path, text, &prefix, &prefix, names);
    }

    /// Canaries for a Rust test binary: `#[test]` functions appended to `content`, the final
    /// text of `path`, either at its top level (`module` None: an integration-test file, or a
    /// file that is itself a test module) or in a new `#[cfg(test)]` module (the crate root).
    /// `prefix` is the id prefix of tests at the level they are added to.
    pub fn add_rust(
        &mut self,
        path: &str,
        content: &str,
        prefix: &str,
        new_module: bool,
        seed: u64,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let vocabulary = words(content, "fn ");
        let names = names(&mut rng, &vocabulary, content, "");
        let (values, _, wrong) = data(&mut rng);
        let (values2, sorted2, _) = data(&mut rng);
        let indent = if new_module { "    " } else { "" };
        let fail = rust_test(&names[0], &values, &wrong, indent);
        let pass = rust_test(&names[1], &values2, &sorted2, indent);
        let (first, second) = if rng.next_u32() % 2 == 0 {
            (fail, pass)
        } else {
            (pass, fail)
        };
        let mut text = content.trim_end_matches('\n').to_string();
        text.push('\n');
        let canary_prefix = if new_module {
            let module = names_module(&mut rng, &vocabulary, content);
            text.push_str(&format!(
                "\n#[cfg(test)]\nmod {module} {{{first}{second}}}\n"
            ));
            format!("{prefix}{module}::")
        } else {
            text.push_str(&first);
            text.push_str(&second);
            prefix.to_string()
        };
        self.add(path, text, &canary_prefix, prefix, names);
    }
}

fn names_module(rng: &mut ChaCha8Rng, vocabulary: &[String], content: &str) -> String {
    let [name, _] = names(rng, vocabulary, content, "");
    format!("{name}_tests")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(exit: i32, statuses: &[(&str, TestStatus)]) -> TestRun {
        TestRun {
            statuses: statuses
                .iter()
                .map(|(id, s)| (id.to_string(), *s))
                .collect(),
            durations: BTreeMap::new(),
            messages: BTreeMap::new(),
            exit: ExitStatus::Exited(exit),
            timed_out: false,
            wall_seconds: 0.0,
            consistent: true,
            anomalies: vec![],
            output_tail: String::new(),
        }
    }

    fn python_canaries() -> Canaries {
        let mut canaries = Canaries::default();
        canaries.add_python("tests/test_a.py", "def test_clamp_low():\n    pass\n", 7);
        canaries
    }

    #[test]
    fn names_and_file() {
        let canaries = python_canaries();
        let group = &canaries.groups[0];
        assert!(group.must_fail.starts_with("tests/test_a.py::test_"));
        assert_ne!(group.must_fail, group.must_pass);
        let text = canaries.edits.0["tests/test_a.py"].clone().unwrap();
        assert!(text.starts_with("def test_clamp_low():\n    pass\n\n\ndef test_"));
        // The must-fail canary really fails and the must-pass one passes: run them.
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "{text}\nimport sys\nfor name, want in [({:?}, False), ({:?}, True)]:\n    try:\n        globals()[name]()\n        ok = True\n    except AssertionError:\n        ok = False\n    if ok != want:\n        sys.exit(3)\n",
            group.must_fail.rsplit("::").next().unwrap(),
            group.must_pass.rsplit("::").next().unwrap()
        );
        let path = dir.path().join("t.py");
        std::fs::write(&path, script).unwrap();
        let status = std::process::Command::new("python3")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "{text}");
    }

    #[test]
    fn another_seed_other_names() {
        let mut a = Canaries::default();
        a.add_python("t.py", "def test_x_y(): pass\n", 1);
        let mut b = Canaries::default();
        b.add_python("t.py", "def test_x_y(): pass\n", 2);
        assert_ne!(a.edits, b.edits);
    }

    #[test]
    fn verdicts_on_runs() {
        let canaries = python_canaries();
        let g = canaries.groups[0].clone();
        let real = "tests/test_a.py::test_clamp_low";
        use TestStatus::*;
        for (exit, statuses, forged) in [
            // Honest: the real test passes, canaries as they must be.
            (
                1,
                vec![
                    (real, Passed),
                    (&*g.must_fail, Failed),
                    (&*g.must_pass, Passed),
                ],
                false,
            ),
            (
                1,
                vec![
                    (real, Failed),
                    (&*g.must_fail, Failed),
                    (&*g.must_pass, Passed),
                ],
                false,
            ),
            // A collection error: nothing of the file reported.
            (2, vec![], false),
            (1, vec![("tests/test_a.py", Error)], false),
            // Everything flipped to passed (exit 0 follows).
            (
                0,
                vec![
                    (real, Passed),
                    (&*g.must_fail, Passed),
                    (&*g.must_pass, Passed),
                ],
                true,
            ),
            // A report rewritten with the exit status kept.
            (
                1,
                vec![
                    (real, Passed),
                    (&*g.must_fail, Passed),
                    (&*g.must_pass, Passed),
                ],
                true,
            ),
            // Everything flipped to failed.
            (
                1,
                vec![
                    (real, Failed),
                    (&*g.must_fail, Failed),
                    (&*g.must_pass, Failed),
                ],
                true,
            ),
            // A report that knows only the tests it forges.
            (1, vec![(real, Passed)], true),
            (0, vec![], true),
            (
                1,
                vec![
                    (real, Passed),
                    (&*g.must_fail, Skipped),
                    (&*g.must_pass, Passed),
                ],
                true,
            ),
        ] {
            let verdict = canaries.check(&run(exit, &statuses));
            assert_eq!(
                verdict.is_some(),
                forged,
                "{exit} {statuses:?}: {verdict:?}"
            );
        }
        let mut killed = run(0, &[]);
        killed.exit = ExitStatus::Signaled(9);
        assert_eq!(canaries.check(&killed), None);
    }

    #[test]
    fn rust_canaries_in_a_new_module() {
        let mut canaries = Canaries::default();
        canaries.add_rust("src/lib.rs", "pub fn sum_squares() {}\n", "lib::", true, 3);
        let text = canaries.edits.0["src/lib.rs"].clone().unwrap();
        assert!(text.contains("#[cfg(test)]\nmod "), "{text}");
        let g = &canaries.groups[0];
        assert!(
            g.must_fail.starts_with("lib::") && g.prefix == "lib::",
            "{g:?}"
        );
        assert_eq!(g.must_fail.matches("::").count(), 2, "{g:?}");
        // A library report with the tests beside the canaries but not the canaries (a test
        // binary that printed its own results and exited) is forged.
        let forged = run(101, &[("lib::stats::tests::below", TestStatus::Passed)]);
        assert!(canaries.check(&forged).is_some());
        // The same after a crash (a binary killed by a signal): not called forged.
        let mut crashed = forged.clone();
        crashed.consistent = false;
        crashed.anomalies = vec![format!("{}: (signal: 11)", testrun::cargo::SIGNAL_ANOMALY)];
        assert_eq!(canaries.check(&crashed), None);
    }
}
