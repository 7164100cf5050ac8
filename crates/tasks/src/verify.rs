//! One reward function per skill, run in fresh sandbox episodes.
//!
//! The grader never reads the agent's episode: it gets the agent's answer as data (the submit
//! arguments and the final contents of the files it changed), starts from the pristine
//! snapshot, applies the instance's setup, and copies in only what the skill grades. Test files,
//! test configuration and interpreter hooks the agent changed are dropped, so the hidden tests
//! always run as shipped. Every test run carries canary tests (`crate::canary`) and an answer
//! that adds a shadowing module is refused (`crate::shadow`): a run forged from inside the test
//! process earns 0 with `Details::tampering` set. Every verdict says why.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corpus::{Ecosystem, ProjectSpec};
use sandbox::{Episode, ExecRequest, Sandbox, Snapshot};
use serde::{Deserialize, Serialize};
use testrun::{Selection, TestRun, TestRunner, TestStatus};

use crate::canary::{Canaries, Tampering};
use crate::error::{Error, Result};
use crate::instance::{Instance, Task};
use crate::mutants::MutantOutcome;
use crate::patch::FileEdits;
use crate::shadow::ShadowNames;

/// What an episode produced, captured once the agent finished.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The arguments of the agent's `submit` call (`null` if it never submitted).
    pub submission: serde_json::Value,
    /// Final contents of every file the agent's workspace has that differs from the pristine
    /// snapshot (so the bug and hidden-test deletions appear here too, unless the agent undid
    /// them).
    pub files: FileEdits,
}

/// The grade of one answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub reward: f64,
    /// Why, in a sentence.
    pub reason: String,
    pub details: Details,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub failed_tests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub precision: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub recall: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mutation_score: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub survived_mutants: Vec<String>,
    /// Mutants the fast unit-test reward left to the slow path, each with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub slow_mutants: Vec<String>,
    /// The unit-test reward's sentinel (`crate::sentinel`): `survived`, `killed`, or why there
    /// was none.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sentinel: Option<String>,
    /// Exit codes of a reproduction script on the buggy and on the fixed code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub script_exit_before: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub script_exit_after: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub anomalies: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seconds: Option<f64>,
    /// The grader's canary seed (`Grader::canary_seed`), to replay a grading.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub canary_seed: Option<u64>,
    /// Set when the answer changed how the tests run or report (`crate::canary`,
    /// `crate::shadow`): the reward is then 0, whatever the run said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tampering: Option<Tampering>,
}

impl Verdict {
    fn new(reward: f64, reason: impl Into<String>, details: Details) -> Verdict {
        Verdict {
            reward,
            reason: reason.into(),
            details,
        }
    }

    /// Reward 0 for a forged run, with the reason and the typed flag.
    pub fn tampered(tampering: Tampering, details: Details) -> Verdict {
        Verdict {
            reward: 0.0,
            reason: format!("the tests were tampered with: {}", tampering.evidence),
            details: Details {
                tampering: Some(tampering),
                ..details
            },
        }
    }

    pub fn is_tampered(&self) -> bool {
        self.details.tampering.is_some()
    }
}

/// A test run with canaries added (`crate::canary`): the run without them, and what they
/// revealed.
struct Guarded {
    run: TestRun,
    tampering: Option<Tampering>,
}

/// A project the grader can run: its runner and pristine snapshot.
#[derive(Clone, Debug)]
pub struct GradedProject {
    pub runner: TestRunner,
    pub snapshot: Snapshot,
}

/// Grades answers against instances.
pub struct Grader {
    sandbox: Arc<Sandbox>,
    /// Test runs by (snapshot, edits, selection): graders of several skills of one bug ask for
    /// the same tree and tests (editing and bug fixing, a review of the gold patch).
    memo: std::sync::Mutex<BTreeMap<[u8; 32], TestRun>>,
    /// By snapshot id.
    projects: BTreeMap<String, GradedProject>,
    /// Module names answers may not add, by snapshot id.
    shadow: BTreeMap<String, ShadowNames>,
    /// Where the canaries' names and data come from (`crate::canary`): fresh per grader unless
    /// set, and recorded in every verdict's details so a grading can be replayed.
    pub canary_seed: u64,
    /// Add canary tests to graded runs. On by default; off only to measure what they cost
    /// (`atomskill bench grading`): without them forged runs go undetected.
    pub canaries: bool,
    pub test_timeout: Duration,
    /// Grade Python test-generation mutants with the fast path (`crate::mutants`): one episode,
    /// one collection, a forked child per mutant. On by default; off grades every mutant in a
    /// fresh episode (the reference the fast path is tested against).
    pub fast_mutants: bool,
}

/// Files an answer may never change for grading, besides the project's test paths: test
/// configuration and interpreter start-up hooks.
pub fn is_protected_path(spec: &ProjectSpec, path: &str) -> bool {
    let path = path.trim_start_matches("./");
    let file = path.rsplit('/').next().unwrap_or(path);
    spec.is_test_path(path)
        || path.starts_with(".atomskill")
        || match spec.ecosystem {
            Ecosystem::Pypi => {
                matches!(
                    file,
                    "conftest.py"
                        | "pytest.ini"
                        | "tox.ini"
                        | "setup.cfg"
                        | "pyproject.toml"
                        | "setup.py"
                        | "sitecustomize.py"
                        | "usercustomize.py"
                        | "noxfile.py"
                ) || file.ends_with(".pth")
            }
            Ecosystem::Crates => {
                matches!(file, "Cargo.toml" | "Cargo.lock" | "build.rs")
                    || path.starts_with(".cargo/")
            }
        }
}

/// A seed from the operating system's random source (the clock, where there is none).
fn fresh_seed() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// The environment a script runs with: the project's, as an agent's commands get it.
fn script_env(project: &GradedProject) -> Vec<(String, String)> {
    project
        .runner
        .prepared()
        .run_env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Compiles the `.py` files under the given roots (argv[3:]) to `.pyc` beside them and deletes
/// the sources, all but the script in argv[1] and test code (under the directories of the JSON
/// list in argv[2], or named as pytest finds tests), which pytest reads as text.
const SOURCELESS: &str = r#"
import json, os, py_compile, sys
keep = os.path.realpath(sys.argv[1])
test_dirs = [os.path.realpath(d) for d in json.loads(sys.argv[2])]
def is_test(path):
    name = os.path.basename(path)
    if name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py"):
        return True
    real = os.path.realpath(path)
    return any(real == d or real.startswith(d + os.sep) for d in test_dirs)
for root in sys.argv[3:]:
    files = [root + ".py"] if os.path.isfile(root + ".py") else []
    for dirpath, dirnames, names in os.walk(root):
        files += [os.path.join(dirpath, n) for n in names if n.endswith(".py")]
    for path in files:
        if os.path.realpath(path) == keep or is_test(path):
            continue
        py_compile.compile(path, cfile=path + "c", doraise=True)
        os.remove(path)
"#;

fn normalise(path: &str) -> String {
    let path = path.trim();
    let path = path.strip_prefix(sandbox::WORKSPACE).unwrap_or(path);
    path.trim_start_matches('/')
        .trim_start_matches("./")
        .to_string()
}

fn submitted_path(submission: &serde_json::Value) -> Option<String> {
    submission
        .get("path")
        .and_then(|p| p.as_str())
        .map(normalise)
        .filter(|p| !p.is_empty())
}

impl Grader {
    pub fn new(sandbox: Arc<Sandbox>, test_timeout: Duration) -> Grader {
        Grader {
            sandbox,
            memo: Default::default(),
            projects: BTreeMap::new(),
            shadow: BTreeMap::new(),
            canary_seed: fresh_seed(),
            canaries: true,
            test_timeout,
            fast_mutants: true,
        }
    }

    pub fn add_project(&mut self, project: GradedProject) {
        self.shadow.insert(
            project.snapshot.id.clone(),
            ShadowNames::of(project.runner.prepared()),
        );
        self.projects.insert(project.snapshot.id.clone(), project);
    }

    /// The text of `path` in `instance`'s starting workspace (its setup applied to the pristine
    /// snapshot), or None if it has none there.
    pub fn workspace_text(&self, instance: &Instance, path: &str) -> Option<String> {
        let project = self.project(instance).ok()?;
        Self::final_text(project, &instance.setup, path)
    }

    /// The final text of `path` in the tree `edits` make of `project`'s pristine snapshot.
    fn final_text(project: &GradedProject, edits: &FileEdits, path: &str) -> Option<String> {
        match edits.0.get(path) {
            Some(content) => content.clone(),
            None => std::fs::read_to_string(project.snapshot.path.join(path)).ok(),
        }
    }

    /// Canaries beside the tests `ids` name: in each of their Python test files, or in each
    /// of their Rust test binaries (the library's, through a module appended to `src/lib.rs`,
    /// and each integration-test file's); none beside doc tests.
    fn canaries_for(&self, project: &GradedProject, edits: &FileEdits, ids: &[String]) -> Canaries {
        let spec = &project.runner.prepared().spec;
        let mut canaries = Canaries::default();
        if !self.canaries {
            return canaries;
        }
        let mut files: Vec<(String, String, bool)> = Vec::new();
        for id in ids {
            let placement = match spec.ecosystem {
                Ecosystem::Pypi => id
                    .split_once("::")
                    .map(|(file, _)| file.to_string())
                    .filter(|file| file.ends_with(".py") && spec.is_test_path(file))
                    .map(|file| (file.clone(), format!("{file}::"), false)),
                Ecosystem::Crates => {
                    if id.starts_with("lib::") {
                        Some(("src/lib.rs".to_string(), "lib::".to_string(), true))
                    } else {
                        id.split_once(".rs::").map(|(file, _)| {
                            let file = format!("{file}.rs");
                            (file.clone(), format!("{file}::"), false)
                        })
                    }
                }
            };
            if let Some(placement) = placement {
                if !files.contains(&placement) && files.len() < 4 {
                    files.push(placement);
                }
            }
        }
        for (path, prefix, new_module) in files {
            let Some(text) = Self::final_text(project, edits, &path) else {
                continue;
            };
            let seed = crate::canary::seed_for(self.canary_seed, &path, &text);
            match spec.ecosystem {
                Ecosystem::Pypi => canaries.add_python(&path, &text, seed),
                Ecosystem::Crates => canaries.add_rust(&path, &text, &prefix, new_module, seed),
            }
        }
        canaries
    }

    /// Runs `selection` on `edits` with `canaries` added, and checks them.
    async fn run_guarded(
        &self,
        project: &GradedProject,
        edits: &FileEdits,
        selection: &Selection,
        canaries: &Canaries,
    ) -> Result<Guarded> {
        let selection = match selection {
            // Test ids (not a whole file): the canaries' ids join them.
            Selection::Ids(ids) if !canaries.is_empty() && ids.iter().any(|i| i.contains("::")) => {
                Selection::Ids(ids.iter().cloned().chain(canaries.ids()).collect())
            }
            other => other.clone(),
        };
        let run = self
            .run_tests(project, &edits.then(&canaries.edits), &selection)
            .await?;
        let tampering = canaries.check(&run);
        Ok(Guarded {
            run: canaries.strip(run),
            tampering,
        })
    }

    /// Whether the answer's source edits add a module that shadows the runner, the
    /// environment or the standard library (`crate::shadow`).
    fn shadowing(&self, project: &GradedProject, edits: &FileEdits) -> Option<Tampering> {
        self.shadow
            .get(&project.snapshot.id)
            .and_then(|names| names.check(&project.snapshot.path, edits))
    }

    pub fn project(&self, instance: &Instance) -> Result<&GradedProject> {
        self.projects
            .get(&instance.project.snapshot)
            .ok_or_else(|| {
                Error::UnknownProject(format!(
                    "{}-{}",
                    instance.project.name, instance.project.version
                ))
            })
    }

    /// A fresh episode of the pristine snapshot with `edits` applied.
    async fn episode(&self, project: &GradedProject, edits: &FileEdits) -> Result<Episode> {
        let limits = TestRunner::episode_limits(self.sandbox.default_limits());
        let episode = self
            .sandbox
            .create_episode_with(&project.snapshot, limits)?;
        if let Err(error) = edits.apply(&episode).await {
            let _ = episode.destroy();
            return Err(error);
        }
        Ok(episode)
    }

    async fn run_tests(
        &self,
        project: &GradedProject,
        edits: &FileEdits,
        selection: &Selection,
    ) -> Result<TestRun> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::new()
            .chain_update(project.snapshot.id.as_bytes())
            .chain_update(serde_json::to_vec(&(edits, selection)).unwrap_or_default())
            .finalize()
            .into();
        if let Some(run) = self.memo.lock().expect("memo lock").get(&key) {
            return Ok(run.clone());
        }
        let episode = self.episode(project, edits).await?;
        // Every selected test runs, whatever the project's `-x` or `--maxfail` says: a failing
        // canary must not stop the run before the tests it guards.
        let extra: &[String] = match project.runner.prepared().spec.ecosystem {
            Ecosystem::Pypi => &[String::from("--maxfail=0")],
            Ecosystem::Crates => &[],
        };
        let run = project
            .runner
            .run_with(&episode, selection, self.test_timeout, extra, &[])
            .await;
        episode.destroy()?;
        let run = run?;
        // Runs that hit a limit are not remembered: a retry may succeed.
        if !run.timed_out {
            let mut memo = self.memo.lock().expect("memo lock");
            if memo.len() >= 256 {
                memo.clear();
            }
            memo.insert(key, run.clone());
        }
        Ok(run)
    }

    /// The agent's edits that count for grading: source files only.
    fn source_edits(spec: &ProjectSpec, files: &FileEdits) -> FileEdits {
        FileEdits(
            files
                .0
                .iter()
                .filter(|(path, _)| !is_protected_path(spec, path))
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect(),
        )
    }

    /// Runs `ids` on the pristine snapshot of `snapshot_id` with `edits` applied; returns the
    /// ids that did not pass.
    pub async fn failing_tests(
        &self,
        snapshot_id: &str,
        edits: &FileEdits,
        ids: &[String],
    ) -> Result<Vec<String>> {
        let project = self
            .projects
            .get(snapshot_id)
            .ok_or_else(|| Error::UnknownProject(snapshot_id.to_string()))?;
        let canaries = self.canaries_for(project, edits, ids);
        let guarded = self
            .run_guarded(project, edits, &Selection::Ids(ids.to_vec()), &canaries)
            .await?;
        if let Some(tampering) = guarded.tampering {
            return Err(Error::Tampered(tampering.evidence));
        }
        Ok(guarded.run.not_passed(ids))
    }

    pub async fn grade(&self, instance: &Instance, answer: &Answer) -> Result<Verdict> {
        let started = std::time::Instant::now();
        let mut verdict = match &instance.task {
            Task::Localization { gold_files, .. } => {
                Ok(grade_localization(gold_files, &answer.submission))
            }
            Task::Review { label, .. } => Ok(grade_review(*label, &answer.submission)),
            Task::Editing {
                fail_to_pass,
                pass_to_pass,
                ..
            }
            | Task::BugFixing {
                fail_to_pass,
                pass_to_pass,
                ..
            } => {
                self.grade_tests(instance, answer, fail_to_pass, pass_to_pass)
                    .await
            }
            Task::TestGeneration {
                target,
                grade_path,
                mutants,
                harness,
                ..
            } => {
                self.grade_test_generation(
                    instance,
                    answer,
                    target,
                    grade_path,
                    mutants,
                    harness.as_ref(),
                )
                .await
            }
            Task::Reproduction { gold_patch, .. } => {
                self.grade_reproduction(instance, answer, gold_patch).await
            }
        }?;
        verdict.details.seconds = Some(started.elapsed().as_secs_f64());
        verdict.details.canary_seed = Some(self.canary_seed);
        Ok(verdict)
    }

    async fn grade_tests(
        &self,
        instance: &Instance,
        answer: &Answer,
        f2p: &[String],
        p2p: &[String],
    ) -> Result<Verdict> {
        let project = self.project(instance)?;
        let spec = &project.runner.prepared().spec;
        // The bug, then the agent's source edits on top (which may rewrite the buggy file); the
        // setup's deletions of hidden tests are test paths and drop out, so those tests run.
        let answer_edits = Self::source_edits(spec, &answer.files);
        if let Some(tampering) = self.shadowing(project, &answer_edits) {
            return Ok(Verdict::tampered(tampering, Details::default()));
        }
        let edits = Self::source_edits(spec, &instance.setup).then(&answer_edits);
        let ids: Vec<String> = f2p.iter().chain(p2p).cloned().collect();
        let canaries = self.canaries_for(project, &edits, &ids);
        let guarded = self
            .run_guarded(project, &edits, &Selection::Ids(ids.clone()), &canaries)
            .await?;
        let run = guarded.run;
        let failed = run.not_passed(&ids);
        let details = Details {
            failed_tests: failed.clone(),
            anomalies: run.anomalies.clone(),
            ..Details::default()
        };
        if let Some(tampering) = guarded.tampering {
            return Ok(Verdict::tampered(tampering, details));
        }
        Ok(if failed.is_empty() {
            Verdict::new(1.0, format!("all {} hidden tests pass", ids.len()), details)
        } else {
            let f2p_failed = failed.iter().filter(|id| f2p.contains(id)).count();
            Verdict::new(
                0.0,
                format!(
                    "{} of {} fail-to-pass and {} of {} pass-to-pass tests do not pass",
                    f2p_failed,
                    f2p.len(),
                    failed.len() - f2p_failed,
                    p2p.len()
                ),
                details,
            )
        })
    }

    async fn grade_test_generation(
        &self,
        instance: &Instance,
        answer: &Answer,
        target: &crate::instance::TargetFunction,
        grade_path: &str,
        mutants: &[crate::instance::Mutant],
        harness: Option<&crate::instance::Harness>,
    ) -> Result<Verdict> {
        let project = self.project(instance)?;
        let target_file = target.file.as_str();
        let Some(path) = submitted_path(&answer.submission) else {
            return Ok(Verdict::new(
                0.0,
                "no test file was submitted",
                Details::default(),
            ));
        };
        let Some(Some(content)) = answer.files.0.get(&path) else {
            return Ok(Verdict::new(
                0.0,
                format!("the submitted test file `{path}` does not exist or was not changed"),
                Details::default(),
            ));
        };
        // The canaries go into the graded copy of the file itself, at its top level: every run
        // of it, on the original and on each mutant, has them.
        let seed = crate::canary::seed_for(self.canary_seed, grade_path, content);
        let mut canaries = Canaries::default();
        match harness {
            _ if !self.canaries => {
                canaries.edits = FileEdits::new().write(grade_path, content.clone());
            }
            None => canaries.add_python(grade_path, content, seed),
            Some(harness) => {
                canaries.add_rust(grade_path, content, &harness.test_prefix, false, seed)
            }
        }
        let test_file = canaries.edits.clone();
        // Python: the file is the selection. Rust: the declaration that compiles it in comes
        // with the original code (each mutant's edits carry their own), and only the tests under
        // its module count.
        let (original_edits, selection) = match harness {
            None => (
                FileEdits::new(),
                Selection::Ids(vec![grade_path.to_string()]),
            ),
            Some(harness) => (
                harness.edits.clone(),
                Selection::Prefixes(vec![harness.test_prefix.clone()]),
            ),
        };
        // The sentinel is graded as one more mutant, both ways, and must survive. Its id and
        // place among the mutants come from the seed, so the tests cannot single it out.
        let sentinel_id = format!("{}-{:06x}", instance.bug.bug_id, seed & 0xff_ffff);
        let (graded, sentinel_note) = match self.sentinel(project, target, harness) {
            Ok(mut sentinel) => {
                sentinel.id = sentinel_id.clone();
                let mut graded = mutants.to_vec();
                let at = (seed >> 32) as usize % (graded.len() + 1);
                graded.insert(at, sentinel);
                (graded, None)
            }
            Err(reason) => (mutants.to_vec(), Some(format!("none: {reason}"))),
        };
        // The mutant runner starts with the pristine run (it needs nothing from it); its
        // outcomes are dropped if the file does not pass on the original code.
        let fast_run = async {
            if !self.fast_mutants
                || harness.is_some()
                || project.runner.prepared().spec.ecosystem != Ecosystem::Pypi
            {
                return Ok(None);
            }
            let episode = self.episode(project, &test_file).await?;
            let run = crate::mutants::run_fast(
                &project.runner,
                &episode,
                target_file,
                grade_path,
                &graded,
                &canaries,
                self.test_timeout,
            )
            .await;
            episode.destroy()?;
            run.map(Some)
        };
        let (original, fast) = tokio::join!(
            self.run_guarded(project, &original_edits, &selection, &canaries),
            fast_run
        );
        let original = original?;
        if let Some(tampering) = original.tampering {
            return Ok(Verdict::tampered(tampering, Details::default()));
        }
        let original = original.run;
        let all_pass = file_passes(&original);
        if !all_pass {
            let failed: Vec<String> = original
                .statuses
                .iter()
                .filter(|(_, s)| !s.is_pass())
                .map(|(id, _)| id.clone())
                .collect();
            let reason = if !original.statuses.values().any(|s| s.is_pass()) {
                if original.statuses.is_empty() && harness.is_some() {
                    // Most often a compile error: show the compiler's last words.
                    let tail: Vec<&str> = original.output_tail.lines().rev().take(30).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    format!(
                        "no test of the file ran on the original code; the end of the output:\n{}",
                        tail.join("\n")
                    )
                } else {
                    "no test of the file ran and passed on the original code".to_string()
                }
            } else {
                format!(
                    "{} of the file's tests do not pass on the original code",
                    failed.len().max(1)
                )
            };
            return Ok(Verdict::new(
                0.0,
                reason,
                Details {
                    failed_tests: failed,
                    anomalies: original.anomalies,
                    ..Details::default()
                },
            ));
        }
        let fast: Option<crate::mutants::FastRun> = fast?;
        let mut survived = Vec::new();
        let mut slow_mutants = Vec::new();
        let mut sentinel_survived = None;
        for mutant in &graded {
            let fast_outcome = fast
                .as_ref()
                .map(|f| (f.outcomes.get(&mutant.id), &f.fatal));
            let survives = match fast_outcome {
                Some((Some(MutantOutcome::Killed { .. }), _)) => false,
                Some((Some(MutantOutcome::Survived), _)) => true,
                Some((Some(MutantOutcome::Tampered { reason }), _)) => {
                    let tampering = Tampering {
                        kind: crate::canary::TamperKind::RunnerReport,
                        evidence: format!("in the run of a mutant: {reason}"),
                    };
                    return Ok(Verdict::tampered(tampering, Details::default()));
                }
                _ => {
                    if let Some((outcome, fatal)) = fast_outcome {
                        let reason = match (outcome, fatal) {
                            (Some(MutantOutcome::Slow { reason }), _) => reason.clone(),
                            (_, Some(fatal)) => fatal.clone(),
                            _ => "the fast runner gave no outcome".to_string(),
                        };
                        // The sentinel under its usual name: its id here is this grading's.
                        let id = if mutant.id == sentinel_id {
                            crate::sentinel::SENTINEL_ID
                        } else {
                            mutant.id.as_str()
                        };
                        slow_mutants.push(format!("{id}: {reason}"));
                    }
                    let guarded = self
                        .run_guarded(project, &mutant.edits, &selection, &canaries)
                        .await?;
                    if let Some(tampering) = guarded.tampering {
                        return Ok(Verdict::tampered(tampering, Details::default()));
                    }
                    survives_mutant(&guarded.run)
                }
            };
            if mutant.id == sentinel_id {
                sentinel_survived = Some(survives);
            } else if survives {
                survived.push(mutant.id.clone());
            }
        }
        let killed = mutants.len() - survived.len();
        let score = if mutants.is_empty() {
            0.0
        } else {
            killed as f64 / mutants.len() as f64
        };
        let details = Details {
            mutation_score: Some(score),
            survived_mutants: survived.clone(),
            slow_mutants,
            sentinel: sentinel_note.or(sentinel_survived
                .map(|survived| if survived { "survived" } else { "killed" }.to_string())),
            ..Details::default()
        };
        Ok(if sentinel_survived == Some(false) {
            Verdict::tampered(
                Tampering {
                    kind: crate::canary::TamperKind::SourceText,
                    evidence: "the tests depend on the function's source text, not its \
                               behaviour: they fail on a rewrite of it that behaves exactly the \
                               same"
                        .into(),
                },
                details,
            )
        } else if survived.is_empty() && !mutants.is_empty() {
            Verdict::new(
                1.0,
                format!(
                    "passes on the original and kills all {} mutants",
                    mutants.len()
                ),
                details,
            )
        } else {
            Verdict::new(
                0.0,
                format!("{} of {} mutants survive", survived.len(), mutants.len()),
                details,
            )
        })
    }

    /// The sentinel mutant of `target` (`crate::sentinel`), made from the pristine snapshot's
    /// copy of its file, or why there is none.
    /// With a harness, its copy of the file (the test module declared) is the one mutated, as
    /// every mutant's is.
    fn sentinel(
        &self,
        project: &GradedProject,
        target: &crate::instance::TargetFunction,
        harness: Option<&crate::instance::Harness>,
    ) -> std::result::Result<crate::instance::Mutant, String> {
        let language = match project.runner.prepared().spec.ecosystem {
            Ecosystem::Pypi => mutate::Language::Python,
            Ecosystem::Crates => mutate::Language::Rust,
        };
        let wired = harness.and_then(|h| h.edits.0.get(&target.file).cloned().flatten());
        let source = match wired {
            Some(source) => source,
            None => {
                let path = project.snapshot.path.join(&target.file);
                std::fs::read_to_string(&path)
                    .map_err(|error| format!("reading {}: {error}", path.display()))?
            }
        };
        crate::sentinel::sentinel_mutant(language, &source, target)
    }

    async fn run_script(
        &self,
        project: &GradedProject,
        edits: &FileEdits,
        path: &str,
        sourceless: bool,
    ) -> Result<sandbox::ExecResult> {
        let episode = self.episode(project, edits).await?;
        if sourceless {
            if let Err(error) = self.make_sourceless(project, &episode, path).await {
                let _ = episode.destroy();
                return Err(error);
            }
        }
        let interpreter = if path.ends_with(".sh") {
            "bash"
        } else {
            "python"
        };
        let mut request = ExecRequest::new([interpreter, path]).timeout(self.test_timeout);
        request.env = script_env(project);
        let result = episode.exec(&request).await;
        episode.destroy()?;
        Ok(result?)
    }

    /// Replaces the project's Python source files in `episode` with compiled bytecode (a
    /// `.pyc` beside where each `.py` was, which Python imports when the source is gone), all
    /// but the script at `keep`: the code behaves as before, but its text can no longer be read.
    async fn make_sourceless(
        &self,
        project: &GradedProject,
        episode: &Episode,
        keep: &str,
    ) -> Result<()> {
        let spec = &project.runner.prepared().spec;
        let source_dir = match spec.source_dir.trim_matches('/') {
            "" | "." => sandbox::WORKSPACE.to_string(),
            dir => format!("{}/{dir}", sandbox::WORKSPACE),
        };
        let roots: Vec<String> = spec
            .packages
            .iter()
            .map(|p| format!("{source_dir}/{}", p.replace('.', "/")))
            .collect();
        let test_dirs: Vec<String> = spec
            .tests
            .iter()
            .map(|dir| format!("{}/{}", sandbox::WORKSPACE, dir.trim_end_matches('/')))
            .collect();
        let mut argv = vec![
            "python".to_string(),
            "-c".to_string(),
            SOURCELESS.to_string(),
            format!("{}/{keep}", sandbox::WORKSPACE),
            serde_json::to_string(&test_dirs).unwrap_or_else(|_| "[]".into()),
        ];
        argv.extend(roots);
        let mut request = ExecRequest::new(argv).timeout(self.test_timeout);
        request.env = script_env(project);
        let result = episode.exec(&request).await?;
        if !result.success() {
            return Err(Error::Setup(format!(
                "compiling the project's sources: {}",
                result
                    .stderr
                    .to_text()
                    .chars()
                    .take(2000)
                    .collect::<String>()
            )));
        }
        Ok(())
    }

    /// The sentinel rewrite (`crate::sentinel`) of the bug's function in the tree `edits`
    /// make: the same behaviour, another text. None where there is no function to rewrite.
    fn sentinel_rewrite(
        &self,
        project: &GradedProject,
        instance: &Instance,
        edits: &FileEdits,
    ) -> Option<FileEdits> {
        let function = instance.bug.function.as_deref()?;
        let text = Self::final_text(project, edits, &instance.bug.file)?;
        let language = match project.runner.prepared().spec.ecosystem {
            Ecosystem::Pypi => mutate::Language::Python,
            Ecosystem::Crates => mutate::Language::Rust,
        };
        let rewritten = crate::sentinel::sentinel_source(language, &text, function).ok()?;
        Some(FileEdits::new().write(instance.bug.file.clone(), rewritten))
    }

    async fn grade_reproduction(
        &self,
        instance: &Instance,
        answer: &Answer,
        gold_patch: &FileEdits,
    ) -> Result<Verdict> {
        let project = self.project(instance)?;
        let spec = &project.runner.prepared().spec;
        let Some(path) = submitted_path(&answer.submission) else {
            return Ok(Verdict::new(
                0.0,
                "no script was submitted",
                Details::default(),
            ));
        };
        let Some(Some(content)) = answer.files.0.get(&path) else {
            return Ok(Verdict::new(
                0.0,
                format!("the submitted script `{path}` does not exist or was not changed"),
                Details::default(),
            ));
        };
        if is_protected_path(spec, &path) && !spec.is_test_path(&path) {
            return Ok(Verdict::new(
                0.0,
                format!("`{path}` is a configuration file, not a script"),
                Details::default(),
            ));
        }
        let script = FileEdits::new().write(path.clone(), content.clone());
        let buggy = instance.setup.then(&script);
        let fixed = buggy.then(gold_patch);
        let before = self.run_script(project, &buggy, &path, false).await?;
        let after = self.run_script(project, &fixed, &path, false).await?;
        let details = Details {
            script_exit_before: Some(before.status.code()),
            script_exit_after: Some(after.status.code()),
            ..Details::default()
        };
        let failed_before = !before.success() && !before.timed_out;
        let passed_after = after.success();
        if failed_before && passed_after {
            // The same again on code that behaves the same but reads differently: Python
            // sources compiled to bytecode (their text is gone), Rust's buggy function with a
            // no-op line added. A script that decides by behaviour gives the same answer; one
            // that reads the source text does not.
            let (buggy_again, fixed_again, sourceless, how) = match spec.ecosystem {
                Ecosystem::Pypi => (buggy.clone(), fixed.clone(), true, "compiled to bytecode"),
                Ecosystem::Crates => {
                    let rewrite = |edits: &FileEdits| {
                        self.sentinel_rewrite(project, instance, edits)
                            .map(|r| edits.then(&r))
                    };
                    match (rewrite(&buggy), rewrite(&fixed)) {
                        (Some(b), Some(f)) => (b, f, false, "with a no-op line in the function"),
                        _ => (buggy.clone(), fixed.clone(), false, ""),
                    }
                }
            };
            if sourceless || !how.is_empty() {
                let before = self
                    .run_script(project, &buggy_again, &path, sourceless)
                    .await?;
                let after = self
                    .run_script(project, &fixed_again, &path, sourceless)
                    .await?;
                if before.success() || before.timed_out || !after.success() {
                    let tampering = Tampering {
                        kind: crate::canary::TamperKind::SourceText,
                        evidence: format!(
                            "the script decides by the source text, not by behaviour: on the \
                             same code {how} it exits {} on the buggy code and {} with the fix",
                            before.status.code(),
                            after.status.code()
                        ),
                    };
                    return Ok(Verdict::tampered(tampering, details));
                }
            }
        }
        Ok(match (failed_before, passed_after) {
            (true, true) => Verdict::new(
                1.0,
                "fails on the buggy code and passes with the fix",
                details,
            ),
            (false, _) => Verdict::new(0.0, "the script does not fail on the buggy code", details),
            (true, false) => {
                Verdict::new(0.0, "the script still fails with the fix applied", details)
            }
        })
    }
}

/// A mutant survives a run of the generated test file when the run is consistent, reported
/// tests, and none of them failed or errored: skips and xfails do not kill a mutant, any more
/// than they fail the file on the original code (see `file_passes`). A run that was killed,
/// timed out or whose report disagrees with its exit status is inconsistent and kills.
fn survives_mutant(run: &TestRun) -> bool {
    run.consistent
        && !run.statuses.is_empty()
        && !run
            .statuses
            .values()
            .any(|s| matches!(s, TestStatus::Failed | TestStatus::Error))
}

/// A generated test file "passes" when its run is consistent, at least one of its tests passed
/// and none failed or errored (skips and xfails are allowed).
fn file_passes(run: &TestRun) -> bool {
    run.consistent
        && run.statuses.values().any(|s| s.is_pass())
        && !run
            .statuses
            .values()
            .any(|s| matches!(s, TestStatus::Failed | TestStatus::Error))
}

pub fn grade_localization(gold: &[String], submission: &serde_json::Value) -> Verdict {
    let submitted: std::collections::BTreeSet<String> = submission
        .get("files")
        .and_then(|f| f.as_array())
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f.as_str())
                .map(normalise)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let gold: std::collections::BTreeSet<String> = gold.iter().map(|g| normalise(g)).collect();
    let hits = submitted.intersection(&gold).count() as f64;
    let precision = if submitted.is_empty() {
        0.0
    } else {
        hits / submitted.len() as f64
    };
    let recall = if gold.is_empty() {
        0.0
    } else {
        hits / gold.len() as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    let details = Details {
        precision: Some(precision),
        recall: Some(recall),
        f1: Some(f1),
        ..Details::default()
    };
    if submitted == gold {
        Verdict::new(1.0, "the submitted files are exactly the gold set", details)
    } else {
        Verdict::new(
            -1.0,
            format!(
                "submitted {} files, {} of them in the gold set of {}",
                submitted.len(),
                hits,
                gold.len()
            ),
            details,
        )
    }
}

pub fn grade_review(label: bool, submission: &serde_json::Value) -> Verdict {
    let verdict = submission
        .get("verdict")
        .and_then(|v| v.as_str())
        .map(|v| v.trim().to_ascii_uppercase());
    let expected = if label { "YES" } else { "NO" };
    match verdict.as_deref() {
        Some(v) if v == expected => Verdict::new(
            1.0,
            format!("judged {v}, which matches the label"),
            Details::default(),
        ),
        Some(v @ ("YES" | "NO")) => Verdict::new(
            0.0,
            format!("judged {v}, the label is {expected}"),
            Details::default(),
        ),
        _ => Verdict::new(0.0, "no YES/NO judgment was submitted", Details::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn localization_rewards() {
        let gold = vec!["src/pkg/a.py".to_string()];
        for (submission, reward, f1) in [
            (json!({"files": ["src/pkg/a.py"]}), 1.0, 1.0),
            (json!({"files": ["/workspace/src/pkg/a.py"]}), 1.0, 1.0),
            (
                json!({"files": ["./src/pkg/a.py", "src/pkg/b.py"]}),
                -1.0,
                2.0 / 3.0,
            ),
            (json!({"files": []}), -1.0, 0.0),
            (json!(null), -1.0, 0.0),
            (json!({"files": "src/pkg/a.py"}), -1.0, 0.0),
        ] {
            let verdict = grade_localization(&gold, &submission);
            assert_eq!(verdict.reward, reward, "{submission}");
            assert!(
                (verdict.details.f1.unwrap() - f1).abs() < 1e-12,
                "{submission}"
            );
        }
    }

    #[test]
    fn review_rewards() {
        for (label, submission, reward) in [
            (true, json!({"verdict": "YES"}), 1.0),
            (true, json!({"verdict": " yes "}), 1.0),
            (true, json!({"verdict": "NO"}), 0.0),
            (
                false,
                json!({"verdict": "NO", "review": "wrong place"}),
                1.0,
            ),
            (false, json!({"verdict": "maybe"}), 0.0),
            (false, json!(null), 0.0),
        ] {
            assert_eq!(
                grade_review(label, &submission).reward,
                reward,
                "{label} {submission}"
            );
        }
    }
}
