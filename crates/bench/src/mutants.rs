//! The unit-test reward's cost per mutant against mutmut's (PyPI), side by side: one function of
//! a corpus project, its mutants as mutmut 3 makes them, and one test file (the project's own
//! tests of that function's module).
//!
//! mutmut runs in a scratch copy of the tree, configured to mutate only the function's file and
//! to run only that test file; it is asked for the function's mutants alone
//! (`mutmut run --max-children 1 'MODULE.x_FUNCTION__mutmut_*'`, one worker, as our runner has).
//! Each of those mutants is then written out with `mutmut apply` and graded by
//! `tasks::Grader` (fast path, fresh grader each time: no memo) on the same test file, placed
//! where a generated one goes. Figures per mutant, for both: the marginal cost (mutmut's own
//! per-mutant durations; our runner's per-mutant seconds) and the whole run divided by the
//! number of mutants (mutmut: generation, stats and clean runs included; ours: the pristine
//! check, the episode, pytest's start and collection included).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corpus::Prepared;
use sandbox::{Sandbox, Snapshot};
use tasks::{
    Answer, BugRef, FileEdits, GradedProject, Grader, Instance, Mutant, ProjectRef, TargetFunction,
    Task,
};
use testrun::TestRunner;

use crate::{median, Error};

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The project's directory name in the corpus cache (`NAME-VERSION`; fetch it first).
    #[arg(long)]
    pub project: String,
    /// The function's file, relative to the project root.
    #[arg(long)]
    pub file: String,
    /// The function (top-level; mutmut names methods differently).
    #[arg(long)]
    pub function: String,
    /// The test file, relative to the project root.
    #[arg(long)]
    pub tests: String,
    /// The `mutmut` executable (mutmut 3, with a pytest, in its own virtualenv).
    #[arg(long)]
    pub mutmut: PathBuf,
    /// mutmut's `source_paths` [default: the file's directory].
    #[arg(long)]
    pub source_paths: Option<String>,
    /// Rounds; each runs mutmut once and our grader once. Medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// The grader's test timeout in seconds (a mutant that loops forever costs this much, minus
    /// pytest's start, in the fast path; mutmut's own limit is about 15 s here).
    #[arg(long, default_value_t = 15.0)]
    pub timeout: f64,
    /// Also grade every mutant the slow way once (a fresh episode and pytest each) and check
    /// that its verdict is the fast path's.
    #[arg(long)]
    pub slow: bool,
}

/// The project to measure on.
pub struct Case {
    pub prepared: Prepared,
    pub snapshot: Snapshot,
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::io(context, source)
}

fn run_checked(command: &mut Command, what: &str) -> Result<String, Error> {
    let output = command.output().map_err(io(what))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(Error::Task(format!(
            "{what} failed ({}): {}",
            output.status,
            text.chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        )));
    }
    Ok(text)
}

/// mutmut's results for the function's mutants: (name, exit code, seconds) from its `.meta`.
fn mutmut_results(tree: &Path, file: &str, prefix: &str) -> Result<Vec<(String, i64, f64)>, Error> {
    let meta = tree.join("mutants").join(format!("{file}.meta"));
    let text = std::fs::read_to_string(&meta).map_err(io("reading mutmut's .meta file"))?;
    let meta: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Task(format!("mutmut's .meta: {e}")))?;
    let mut results: Vec<(String, i64, f64)> = meta["exit_code_by_key"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(name, code)| {
            let seconds = meta["durations_by_key"][name].as_f64().unwrap_or(f64::NAN);
            (name.clone(), code.as_i64().unwrap_or(-1), seconds)
        })
        .collect();
    // mutmut_1, mutmut_2, ..., mutmut_10: numeric order.
    results.sort_by_key(|(name, _, _)| {
        name.rsplit('_')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    });
    Ok(results)
}

fn instance(case: &Case, options: &Options, grade_path: &str, mutants: Vec<Mutant>) -> Instance {
    let spec = &case.prepared.spec;
    Instance {
        schema_version: tasks::SCHEMA_VERSION,
        instance_id: format!("{}-{}.{}.bench", spec.name, spec.version, options.function),
        project: ProjectRef {
            name: spec.name.clone(),
            version: spec.version.clone(),
            ecosystem: spec.ecosystem,
            snapshot: case.snapshot.id.clone(),
        },
        bug: BugRef {
            bug_id: "bench".into(),
            file: options.file.clone(),
            function: Some(options.function.clone()),
            operators: vec![],
            line: 1,
            description: String::new(),
            seed: 0,
        },
        setup: FileEdits::new(),
        task: Task::TestGeneration {
            target: TargetFunction {
                file: options.file.clone(),
                qualname: options.function.clone(),
                signature: String::new(),
                docstring: None,
                line: 1,
                import_hint: String::new(),
            },
            grade_path: grade_path.to_string(),
            mutants,
            gold_test: String::new(),
            harness: None,
        },
        validation: None,
        extra: Default::default(),
    }
}

pub async fn run(options: &Options, sandbox: Arc<Sandbox>, case: &Case) -> Result<(), Error> {
    let scratch = tempfile::tempdir().map_err(io("making a scratch directory"))?;
    let tree = scratch.path().join("tree");
    run_checked(
        Command::new("cp")
            .arg("-a")
            .arg(&case.prepared.tree)
            .arg(&tree),
        "copying the project tree",
    )?;
    let source_paths = options.source_paths.clone().unwrap_or_else(|| {
        Path::new(&options.file)
            .parent()
            .map_or(".".into(), |p| format!("{}/", p.display()))
    });
    let mut setup_cfg = std::fs::read_to_string(tree.join("setup.cfg")).unwrap_or_default();
    setup_cfg.push_str(&format!(
        "\n[mutmut]\nsource_paths = {source_paths}\nonly_mutate = {}\n\
         pytest_add_cli_args_test_selection = {}\npytest_add_cli_args = -p no:cacheprovider\n",
        options.file, options.tests
    ));
    std::fs::write(tree.join("setup.cfg"), setup_cfg).map_err(io("writing setup.cfg"))?;
    let module = options.file.trim_end_matches(".py").replace('/', ".");
    let prefix = format!("{module}.x_{}__mutmut_", options.function);
    // Absolute: mutmut runs in the scratch tree.
    let mutmut_exe = options
        .mutmut
        .canonicalize()
        .map_err(io("finding the mutmut executable"))?;
    let mutmut = |args: &[&str]| {
        let mut command = Command::new(&mutmut_exe);
        command
            .args(args)
            .current_dir(&tree)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONHASHSEED", "0");
        command
    };
    let pristine = std::fs::read_to_string(tree.join(&options.file))
        .map_err(io("reading the function's file"))?;
    let test_file =
        std::fs::read_to_string(tree.join(&options.tests)).map_err(io("reading the test file"))?;
    let grade_path = match options.tests.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/test_atomskill_bench.py"),
        None => "test_atomskill_bench.py".to_string(),
    };
    let answer = Answer {
        submission: serde_json::json!({"path": grade_path}),
        files: FileEdits::new().write(grade_path.clone(), test_file),
    };
    let runner = TestRunner::new(case.prepared.clone());
    // A negative, NaN or overlong --timeout is refused here rather than panicking in Duration.
    let timeout = Duration::try_from_secs_f64(options.timeout)
        .map_err(|e| Error::Task(format!("--timeout {}: {e}", options.timeout)))?;

    let (mut mutmut_whole, mut mutmut_each, mut ours_whole, mut ours_each) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The same per-mutant means without the mutants either tool timed out on: those measure the
    // configured limits, not the tools.
    let (mut mutmut_quick, mut ours_quick) = (Vec::new(), Vec::new());
    let mut summary = None;
    for round in 0..options.repeats.max(1) {
        // mutmut from scratch each round: generation, stats, clean run, the mutants.
        let _ = std::fs::remove_dir_all(tree.join("mutants"));
        let pattern = format!("{prefix}*");
        let started = Instant::now();
        run_checked(
            &mut mutmut(&["run", "--max-children", "1", &pattern]),
            "mutmut run",
        )?;
        let mutmut_seconds = started.elapsed().as_secs_f64();
        let results = mutmut_results(&tree, &options.file, &prefix)?;
        if results.is_empty() {
            return Err(Error::Task(format!(
                "mutmut made no mutant named {pattern}"
            )));
        }
        let n = results.len() as f64;
        mutmut_whole.push(mutmut_seconds / n);
        mutmut_each.push(results.iter().map(|r| r.2).sum::<f64>() / n);

        let mut mutants = Vec::new();
        if round == 0 || summary.is_none() {
            for (name, _, _) in &results {
                run_checked(&mut mutmut(&["apply", name]), "mutmut apply")?;
                let source = std::fs::read_to_string(tree.join(&options.file))
                    .map_err(io("reading an applied mutant"))?;
                std::fs::write(tree.join(&options.file), &pristine)
                    .map_err(io("restoring the pristine file"))?;
                mutants.push(Mutant {
                    id: name.clone(),
                    description: String::new(),
                    edits: FileEdits::new().write(options.file.clone(), source),
                });
            }
            summary = Some((
                instance(case, options, &grade_path, mutants),
                results.clone(),
            ));
        }
        let (instance, _) = summary.as_ref().expect("set above");
        let mut grader = Grader::new(sandbox.clone(), timeout);
        grader.add_project(GradedProject {
            runner: runner.clone(),
            snapshot: case.snapshot.clone(),
        });
        let started = Instant::now();
        let verdict = grader
            .grade(instance, &answer)
            .await
            .map_err(|e| Error::Task(format!("grading: {e}")))?;
        ours_whole.push(started.elapsed().as_secs_f64() / n);
        if !verdict.details.slow_mutants.is_empty() {
            println!(
                "round {round}: graded slowly: {:?}",
                verdict.details.slow_mutants
            );
        }
        // The runner alone, for its per-mutant cost.
        let Task::TestGeneration { mutants, .. } = &instance.task else {
            unreachable!()
        };
        let episode = sandbox.create_episode_with(
            &case.snapshot,
            TestRunner::episode_limits(sandbox.default_limits()),
        )?;
        answer
            .files
            .apply(&episode)
            .await
            .map_err(|e| Error::Task(format!("writing the test file: {e}")))?;
        let fast = tasks::mutants::run_fast(
            &runner,
            &episode,
            &options.file,
            &grade_path,
            mutants,
            &tasks::canary::Canaries::default(),
            timeout,
        )
        .await;
        episode.destroy()?;
        let fast = fast.map_err(|e| Error::Task(format!("fast runner: {e}")))?;
        if let Some(fatal) = &fast.fatal {
            return Err(Error::Task(format!(
                "the fast runner decided nothing: {fatal}"
            )));
        }
        ours_each.push(fast.seconds.values().sum::<f64>() / n);
        let timed_out = |name: &str, code: i64| {
            matches!(code, 36 | 24 | -24 | 152 | 255)
                || matches!(fast.outcomes.get(name),
                    Some(tasks::mutants::MutantOutcome::Killed { reason }) if reason.starts_with("timed out"))
        };
        let quick: Vec<&(String, i64, f64)> = results
            .iter()
            .filter(|(name, code, _)| !timed_out(name, *code))
            .collect();
        let n_quick = quick.len().max(1) as f64;
        mutmut_quick.push(quick.iter().map(|r| r.2).sum::<f64>() / n_quick);
        ours_quick.push(
            quick
                .iter()
                .map(|r| fast.seconds.get(&r.0).copied().unwrap_or(f64::NAN))
                .sum::<f64>()
                / n_quick,
        );
        let slow_count = fast
            .outcomes
            .values()
            .filter(|o| matches!(o, tasks::mutants::MutantOutcome::Slow { .. }))
            .count();
        println!(
            "round {round}: {} mutants ({} timed out, {} left to the slow path); mutmut {:.2} s \
             whole, {:.1} ms/mutant own ({:.1} without timeouts); ours {:.2} s whole, \
             {:.1} ms/mutant runner ({:.1} without timeouts); survivors (ours) {:?}",
            results.len(),
            results.len() - quick.len(),
            slow_count,
            mutmut_seconds,
            mutmut_each.last().unwrap() * 1e3,
            mutmut_quick.last().unwrap() * 1e3,
            ours_whole.last().unwrap() * n,
            ours_each.last().unwrap() * 1e3,
            ours_quick.last().unwrap() * 1e3,
            verdict.details.survived_mutants
        );
    }
    let (instance, results) = summary.expect("at least one round");
    // mutmut's verdicts next to ours (exit code 1 = killed, 0 = survived; see `mutmut results`).
    let mutmut_survivors: Vec<&str> = results
        .iter()
        .filter(|(_, code, _)| *code == 0)
        .map(|(name, _, _)| name.as_str())
        .collect();
    println!("mutmut survivors: {mutmut_survivors:?}");
    if options.slow {
        let mut grader = Grader::new(sandbox.clone(), timeout);
        grader.fast_mutants = false;
        grader.add_project(GradedProject {
            runner: runner.clone(),
            snapshot: case.snapshot.clone(),
        });
        let started = Instant::now();
        let verdict = grader
            .grade(&instance, &answer)
            .await
            .map_err(|e| Error::Task(format!("grading: {e}")))?;
        println!(
            "slow path: {:.2} s whole ({:.1} ms/mutant), survivors {:?}",
            started.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64() * 1e3 / results.len() as f64,
            verdict.details.survived_mutants
        );
    }
    let (mq, oq) = (median(&mut mutmut_quick), median(&mut ours_quick));
    println!(
        "per mutant without timed-out mutants, medians: mutmut {:.1} ms, ours {:.1} ms: {:.1}x",
        mq * 1e3,
        oq * 1e3,
        mq / oq
    );
    let (mw, me, ow, oe) = (
        median(&mut mutmut_whole),
        median(&mut mutmut_each),
        median(&mut ours_whole),
        median(&mut ours_each),
    );
    println!(
        "per mutant, medians of {} rounds: marginal mutmut {:.1} ms, ours {:.1} ms: {:.1}x; \
         whole run mutmut {:.1} ms, ours {:.1} ms: {:.1}x",
        options.repeats.max(1),
        me * 1e3,
        oe * 1e3,
        me / oe,
        mw * 1e3,
        ow * 1e3,
        mw / ow
    );
    Ok(())
}
