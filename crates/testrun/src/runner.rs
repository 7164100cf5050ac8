//! Running a project's tests in a sandbox episode and cross-checking what the framework reported
//! against how the process ended.
//!
//! A run whose report and exit code disagree (a "passing" report from a process that exited 1, a
//! report with failures from one that exited 0, a pytest internal error, an interrupted run, a
//! killed one, a cargo summary that disagrees with its result lines) is marked inconsistent, and
//! then no test of it counts as passed.

use std::collections::BTreeMap;
use std::time::Duration;

use corpus::{Ecosystem, Prepared};
use sandbox::{Episode, ExecRequest, ExitStatus, Limits};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::status::{Parsed, TestStatus};

/// Which tests to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selection {
    All,
    Ids(Vec<String>),
    /// Every test whose id starts with one of these (pytest: paths or node-id prefixes given as
    /// arguments; cargo: `lib::` prefixes narrow the run to the library's unit tests, filtered
    /// by name, and other prefixes run the whole suite), e.g. `lib::kebab::atomskill_tests::`.
    Prefixes(Vec<String>),
}

impl Selection {
    /// The ids or prefixes given on the command line.
    fn arguments(&self) -> &[String] {
        match self {
            Selection::All => &[],
            Selection::Ids(ids) | Selection::Prefixes(ids) => ids,
        }
    }

    /// Whether a test id reported by a run belongs to the selection.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.iter().any(|i| i == id),
            Selection::Prefixes(prefixes) => prefixes.iter().any(|p| id.starts_with(p.as_str())),
        }
    }
}

/// What one test run found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestRun {
    pub statuses: BTreeMap<String, TestStatus>,
    pub durations: BTreeMap<String, f64>,
    /// One-line failure messages of failed tests.
    pub messages: BTreeMap<String, String>,
    pub exit: ExitStatus,
    pub timed_out: bool,
    pub wall_seconds: f64,
    /// Whether the report agrees with the exit code; if not, no test counts as passed.
    pub consistent: bool,
    pub anomalies: Vec<String>,
    /// The end of the console output, for people reading a verdict.
    pub output_tail: String,
}

impl TestRun {
    /// The status of a test; `None` if it did not run or the run is inconsistent.
    pub fn status(&self, id: &str) -> Option<TestStatus> {
        if !self.consistent {
            return None;
        }
        self.statuses.get(id).copied()
    }

    pub fn passed(&self, id: &str) -> bool {
        self.status(id).is_some_and(TestStatus::is_pass)
    }

    /// Ids among `ids` that did not pass (failed, errored, skipped, missing, or any id of an
    /// inconsistent run).
    pub fn not_passed<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        ids.into_iter()
            .filter(|id| !self.passed(id))
            .cloned()
            .collect()
    }
}

/// Runs the tests of one prepared project.
#[derive(Clone, Debug)]
pub struct TestRunner {
    prepared: Prepared,
}

/// The workspace-relative path pytest writes its report to.
const JUNIT_DIR: &str = ".atomskill";

/// The seed plugin (`py/atomskill_seed.py`): every pytest run of ours loads it, so a test's
/// random draws are the same in every run.
pub const SEED_PLUGIN: &str = include_str!("../py/atomskill_seed.py");

/// Where the seed plugin is written in an episode (workspace-relative).
pub const SEED_PLUGIN_PATH: &str = ".atomskill/atomskill_seed.py";

/// The start of every pytest run (`py/atomskill_run.py`): pytest and what it imports come from
/// the environment, and the project goes on the path after the standard library.
const RUN_START: &str = include_str!("../py/atomskill_run.py");

/// Where the start is written in an episode (workspace-relative).
pub const RUN_START_PATH: &str = ".atomskill/atomskill_run.py";

/// The variable that carries the project's import path to the start script in place of
/// `PYTHONPATH` (which the interpreter would put ahead of the standard library).
pub const PROJECT_PATH_VAR: &str = "ATOMSKILL_PYTHONPATH";

/// The pytest arguments that load the seed plugin.
pub const SEED_PLUGIN_ARGS: [&str; 2] = ["-p", "atomskill_seed"];

/// What a run measures with, besides the project: bump it when a change to the runner can change
/// a test's status, so that statuses cached under the old one are measured again.
pub const RUNNER_VERSION: u32 = 3;

/// pytest options that take their value as the next argument.
const PYTEST_VALUE_OPTIONS: &[&str] = &[
    "-p",
    "-m",
    "-k",
    "-o",
    "-c",
    "-W",
    "--rootdir",
    "--confcutdir",
    "--ignore",
    "--deselect",
    "--import-mode",
    "--override-ini",
    "--tb",
    "--basetemp",
];

impl TestRunner {
    pub fn new(prepared: Prepared) -> TestRunner {
        TestRunner { prepared }
    }

    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Limits for an episode that runs tests: the whole console output is kept (cargo's result
    /// lines are read from it).
    pub fn episode_limits(base: &Limits) -> Limits {
        Limits {
            output_head_bytes: 32 << 20,
            output_tail_bytes: 1 << 20,
            output_kill_bytes: 256 << 20,
            ..base.clone()
        }
    }

    /// The argv of a run; `junit` is the workspace-relative report path (pytest only).
    pub fn command(&self, selection: &Selection, junit: &str) -> Vec<String> {
        let spec = &self.prepared.spec;
        match spec.ecosystem {
            Ecosystem::Pypi => {
                let mut argv = match selection {
                    Selection::All => spec.test_command.clone(),
                    Selection::Ids(_) | Selection::Prefixes(_) => {
                        without_pytest_positionals(&spec.test_command)
                    }
                };
                argv.extend(spec.ignore.iter().map(|i| format!("--ignore={}", i.id)));
                argv.extend(spec.deselect.iter().map(|d| format!("--deselect={}", d.id)));
                argv.extend([
                    "-o".to_string(),
                    "junit_family=xunit1".to_string(),
                    format!("--junitxml={}/{junit}", sandbox::WORKSPACE),
                ]);
                argv.extend(selection.arguments().iter().cloned());
                if argv.get(1..3) == Some(&["-m".to_string(), "pytest".to_string()][..]) {
                    argv.splice(
                        1..3,
                        [
                            "-P".to_string(),
                            format!("{}/{RUN_START_PATH}", sandbox::WORKSPACE),
                        ],
                    );
                }
                argv
            }
            Ecosystem::Crates => {
                // Merge stderr into stdout so each result line follows its target's header.
                let mut argv: Vec<String> = ["bash", "-c", "exec 2>&1; exec \"$@\"", "cargo-test"]
                    .map(String::from)
                    .to_vec();
                argv.extend(spec.test_command.iter().cloned());
                // Every target runs even when one fails (a failing canary test must not stop
                // the targets after it).
                if argv.iter().any(|a| a == "test") && !argv.iter().any(|a| a == "--no-fail-fast") {
                    argv.push("--no-fail-fast".into());
                }
                // Unit-test prefixes: only the library's test binary, filtered by name.
                let unit_filters: Option<Vec<&str>> = match selection {
                    Selection::Prefixes(prefixes) if !prefixes.is_empty() => {
                        prefixes.iter().map(|p| p.strip_prefix("lib::")).collect()
                    }
                    _ => None,
                };
                if unit_filters.is_some() {
                    argv.push("--lib".into());
                }
                if !spec.deselect.is_empty() || unit_filters.is_some() {
                    argv.push("--".into());
                    for filter in unit_filters.unwrap_or_default() {
                        argv.push(filter.to_string());
                    }
                    for d in &spec.deselect {
                        argv.extend(["--skip".to_string(), d.id.clone()]);
                    }
                }
                argv
            }
        }
    }

    /// The interpreter and the pytest arguments of a run, when the command starts pytest as
    /// `PYTHON -m pytest ...` (it then goes through the isolated start, `RUN_START_PATH`).
    pub fn pytest_start(
        &self,
        selection: &Selection,
        junit: &str,
    ) -> Option<(String, Vec<String>)> {
        let argv = self.command(selection, junit);
        let start = format!("{}/{RUN_START_PATH}", sandbox::WORKSPACE);
        (argv.get(1..3) == Some(&["-P".to_string(), start][..]))
            .then(|| (argv[0].clone(), argv[3..].to_vec()))
    }

    /// The environment of a test run: the project's, plus (Python) the directory of the
    /// plugins [`TestRunner::install_plugins`] writes on the project's import path, which moves
    /// from `PYTHONPATH` to [`PROJECT_PATH_VAR`] (the start script puts it after the standard
    /// library and restores `PYTHONPATH` for the processes the tests start).
    pub fn run_env(&self) -> BTreeMap<String, String> {
        let mut env = self.prepared.run_env.clone();
        if self.prepared.spec.ecosystem == Ecosystem::Pypi {
            let dir = format!("{}/{JUNIT_DIR}", sandbox::WORKSPACE);
            let joined = env
                .remove("PYTHONPATH")
                .map_or(dir.clone(), |v| format!("{v}:{dir}"));
            env.insert(PROJECT_PATH_VAR.into(), joined);
        }
        env
    }

    /// Writes the plugins every pytest run loads into `episode` (nothing for crates). Run
    /// before each run: the agent may have changed or removed the file in its own episode.
    pub fn install_plugins(&self, episode: &Episode) -> Result<()> {
        if self.prepared.spec.ecosystem == Ecosystem::Pypi {
            for (path, text) in [(SEED_PLUGIN_PATH, SEED_PLUGIN), (RUN_START_PATH, RUN_START)] {
                episode
                    .write_file(path, text.as_bytes(), false)
                    .map_err(Error::Sandbox)?;
            }
        }
        Ok(())
    }

    /// Runs `selection` in `episode` and parses the outcome. For crates the whole suite runs
    /// (it is small and cargo filters by substring) and the selection is applied afterwards.
    pub async fn run(
        &self,
        episode: &Episode,
        selection: &Selection,
        timeout: Duration,
    ) -> Result<TestRun> {
        self.run_with(episode, selection, timeout, &[], &[]).await
    }

    /// [`TestRunner::run`] with extra pytest arguments (before the selected ids) and extra
    /// environment variables (a value starting with `:` is appended to the variable's value).
    pub async fn run_with(
        &self,
        episode: &Episode,
        selection: &Selection,
        timeout: Duration,
        extra_args: &[String],
        extra_env: &[(String, String)],
    ) -> Result<TestRun> {
        let spec = &self.prepared.spec;
        let junit = format!("{JUNIT_DIR}/junit-{}.xml", episode.id().replace('/', "_"));
        let mut argv = self.command(selection, &junit);
        if spec.ecosystem == Ecosystem::Pypi {
            self.install_plugins(episode)?;
            let at = argv.len() - selection.arguments().len();
            let extra = SEED_PLUGIN_ARGS.iter().map(|a| a.to_string());
            argv.splice(at..at, extra.chain(extra_args.iter().cloned()));
        }
        let mut request = ExecRequest::new(argv).timeout(timeout);
        let mut env = self.run_env();
        for (key, value) in extra_env {
            match value.strip_prefix(':') {
                Some(suffix) => {
                    let joined = env
                        .get(key)
                        .map_or(suffix.to_string(), |v| format!("{v}:{suffix}"));
                    env.insert(key.clone(), joined);
                }
                None => {
                    env.insert(key.clone(), value.clone());
                }
            }
        }
        request.env = env.into_iter().collect();
        let result = episode.exec(&request).await.map_err(Error::Sandbox)?;
        let stdout = result.stdout.to_text();
        let mut output_tail: String = stdout
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !result.stderr.head.is_empty() {
            output_tail.push_str("\n--- stderr ---\n");
            output_tail.push_str(
                &result
                    .stderr
                    .to_text()
                    .chars()
                    .take(4000)
                    .collect::<String>(),
            );
        }
        let killed = result.killed_by.is_some()
            || result.timed_out
            || matches!(result.status, ExitStatus::Signaled(_));
        let (mut parsed, mut consistent) = match spec.ecosystem {
            Ecosystem::Pypi => {
                let report = match episode.read_file(&junit, 512 << 20) {
                    Ok(bytes) => parse_pytest_report(&bytes),
                    Err(error) => Err(format!("no JUnit report: {error}")),
                };
                match report {
                    Ok(parsed) => {
                        let consistent = pytest_consistent(result.status, &parsed);
                        (parsed, consistent)
                    }
                    Err(message) => (
                        Parsed {
                            anomalies: vec![message],
                            ..Parsed::default()
                        },
                        false,
                    ),
                }
            }
            Ecosystem::Crates => {
                let parsed = crate::cargo::parse_cargo_test(&stdout);
                let consistent =
                    parsed.anomalies.is_empty() && cargo_consistent(result.status, &parsed);
                (parsed, consistent)
            }
        };
        if killed {
            consistent = false;
            parsed.anomalies.push(format!(
                "the run was killed ({})",
                result
                    .killed_by
                    .map_or_else(|| format!("{:?}", result.status), |k| format!("{k:?}"))
            ));
        }
        if !consistent && parsed.anomalies.is_empty() {
            parsed.anomalies.push(format!(
                "exit status {:?} disagrees with the report ({} passed, {} failed, {} errors)",
                result.status,
                parsed.count(TestStatus::Passed),
                parsed.count(TestStatus::Failed),
                parsed.count(TestStatus::Error)
            ));
        }
        if spec.ecosystem == Ecosystem::Crates {
            match selection {
                Selection::Ids(ids) => {
                    let wanted: std::collections::BTreeSet<&String> = ids.iter().collect();
                    parsed.statuses.retain(|id, _| wanted.contains(id));
                }
                _ => parsed.statuses.retain(|id, _| selection.contains(id)),
            }
        }
        Ok(TestRun {
            statuses: parsed.statuses,
            durations: parsed.durations,
            messages: parsed.messages,
            exit: result.status,
            timed_out: result.timed_out,
            wall_seconds: result.duration.as_secs_f64(),
            consistent,
            anomalies: parsed.anomalies,
            output_tail,
        })
    }
}

fn parse_pytest_report(bytes: &[u8]) -> std::result::Result<Parsed, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("JUnit report is not UTF-8: {e}"))?;
    crate::junit::parse_junit(text)
}

/// pytest's exit codes: 0 all passed, 1 some failed, 5 nothing collected; anything else
/// (interrupted, internal error, usage error) is never consistent.
fn pytest_consistent(status: ExitStatus, parsed: &Parsed) -> bool {
    let bad = parsed.count(TestStatus::Failed) + parsed.count(TestStatus::Error);
    match status {
        ExitStatus::Exited(0) => bad == 0 && parsed.anomalies.is_empty(),
        ExitStatus::Exited(1) => bad > 0,
        ExitStatus::Exited(5) => parsed.statuses.is_empty(),
        _ => false,
    }
}

/// cargo exits 0 when every target passed and 101 when a test failed or the build failed.
fn cargo_consistent(status: ExitStatus, parsed: &Parsed) -> bool {
    let failed = parsed.count(TestStatus::Failed);
    match status {
        ExitStatus::Exited(0) => failed == 0,
        ExitStatus::Exited(101) => true,
        _ => false,
    }
}

/// Drops the test paths from a pytest command line, keeping its options, so that chosen ids
/// can be given instead.
pub fn without_pytest_positionals(argv: &[String]) -> Vec<String> {
    let Some(start) = argv
        .iter()
        .position(|a| a == "pytest" || a.ends_with("/pytest"))
    else {
        return argv.to_vec();
    };
    let mut out = argv[..=start].to_vec();
    let mut takes_value = false;
    for arg in &argv[start + 1..] {
        if takes_value {
            out.push(arg.clone());
            takes_value = false;
        } else if arg.starts_with('-') {
            takes_value = PYTEST_VALUE_OPTIONS.contains(&arg.as_str());
            out.push(arg.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytest_positionals() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        for (input, expected) in [
            (
                "python -m pytest -p no:cacheprovider -q tests",
                "python -m pytest -p no:cacheprovider -q",
            ),
            (
                "python -m pytest -q --doctest-modules tabulate test",
                "python -m pytest -q --doctest-modules",
            ),
            (
                "python -m pytest -o addopts= -k x tests",
                "python -m pytest -o addopts= -k x",
            ),
            ("make test", "make test"),
        ] {
            assert_eq!(
                without_pytest_positionals(&argv(input)),
                argv(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn exit_codes_against_reports() {
        let parsed = |statuses: &[TestStatus]| Parsed {
            statuses: statuses
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("t{i}"), *s))
                .collect(),
            ..Parsed::default()
        };
        use TestStatus::*;
        for (status, report, expected) in [
            (ExitStatus::Exited(0), parsed(&[Passed, Skipped]), true),
            (ExitStatus::Exited(1), parsed(&[Passed, Failed]), true),
            // A rewritten report that claims everything passed, from a run that failed.
            (ExitStatus::Exited(1), parsed(&[Passed, Passed]), false),
            (ExitStatus::Exited(0), parsed(&[Passed, Error]), false),
            (ExitStatus::Exited(2), parsed(&[Passed]), false),
            (ExitStatus::Exited(3), parsed(&[]), false),
            (ExitStatus::Exited(5), parsed(&[]), true),
            (ExitStatus::Signaled(9), parsed(&[Passed]), false),
        ] {
            assert_eq!(
                pytest_consistent(status, &report),
                expected,
                "{status:?} {report:?}"
            );
        }
        assert!(cargo_consistent(
            ExitStatus::Exited(101),
            &parsed(&[Failed])
        ));
        assert!(!cargo_consistent(ExitStatus::Exited(0), &parsed(&[Failed])));
    }
}
