//! The editing reward's cost against the raw test run it contains: grading a gold answer (fresh
//! episode, edits written, the hidden tests run through the isolated start with canary tests,
//! JUnit parsed, exit code and canaries checked) versus `python -m pytest` on the same test ids,
//! started directly on the host in a copy of the tree; and grading with canaries against the
//! same grading without them (`Grader::canaries` off), measured alternately in one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corpus::Prepared;
use sandbox::{Sandbox, Snapshot};
use tasks::{Answer, GradedProject, Grader, Instance, Task};
use testrun::{Selection, TestRunner};

use crate::median;

#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// A directory of instances made by `atomskill synth` (its editing.jsonl is used).
    #[arg(long)]
    pub tasks: std::path::PathBuf,
    /// Editing instances measured.
    #[arg(long, default_value_t = 10)]
    pub instances: usize,
    /// Repetitions of each measurement (the median is kept).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// One editing instance with what it needs to be graded and run raw.
pub struct Case {
    pub instance: Instance,
    pub prepared: Prepared,
    pub snapshot: Snapshot,
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("cp failed"))
    }
}

async fn raw_pytest(case: &Case, ids: &[String], tree: &std::path::Path) -> f64 {
    let runner = TestRunner::new(case.prepared.clone());
    let junit = tree.join("junit-raw.xml");
    let mut argv = runner.command(&Selection::Ids(ids.to_vec()), "x");
    // Plain `python -m pytest`, not the sandbox's isolated start.
    if argv.get(1).map(String::as_str) == Some("-P") {
        argv.splice(1..3, ["-m".to_string(), "pytest".to_string()]);
    }
    for arg in &mut argv {
        if arg.starts_with("--junitxml=") {
            *arg = format!("--junitxml={}", junit.display());
        }
    }
    let mut command = tokio::process::Command::new(&argv[0]);
    command.args(&argv[1..]).current_dir(tree).env_clear();
    for (key, value) in &case.prepared.run_env {
        command.env(
            key,
            value.replace(sandbox::WORKSPACE, &tree.to_string_lossy()),
        );
    }
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let started = Instant::now();
    let _ = command.status().await;
    started.elapsed().as_secs_f64()
}

pub async fn run(options: &Options, sandbox: Arc<Sandbox>, cases: &[Case]) -> std::io::Result<()> {
    let mut ratios = Vec::new();
    let mut canary_ratios = Vec::new();
    let (mut total_grade, mut total_raw, mut total_bare) = (0.0, 0.0, 0.0);
    println!(
        "{:<48} {:>6} {:>10} {:>10} {:>7} {:>12} {:>9}",
        "instance", "tests", "grade s", "raw s", "ratio", "no-canary s", "canaries"
    );
    for case in cases.iter().take(options.instances) {
        let Task::Editing {
            fail_to_pass,
            pass_to_pass,
            gold_patch,
            ..
        } = &case.instance.task
        else {
            continue;
        };
        let ids: Vec<String> = fail_to_pass.iter().chain(pass_to_pass).cloned().collect();
        let scratch = tempfile::tempdir()?;
        let tree = scratch.path().join("tree");
        copy_tree(&case.prepared.tree, &tree)?;
        let answer = Answer {
            submission: serde_json::json!({}),
            files: case.instance.setup.then(gold_patch),
        };
        let (mut grade_times, mut raw_times, mut bare_times) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..options.repeats.max(1) {
            for canaries in [true, false] {
                // A fresh grader each time: its memo would otherwise answer from the first run.
                let mut grader = Grader::new(sandbox.clone(), Duration::from_secs(600));
                grader.canaries = canaries;
                grader.add_project(GradedProject {
                    runner: TestRunner::new(case.prepared.clone()),
                    snapshot: case.snapshot.clone(),
                });
                let started = Instant::now();
                let verdict = grader.grade(&case.instance, &answer).await;
                let seconds = started.elapsed().as_secs_f64();
                if canaries {
                    grade_times.push(seconds);
                } else {
                    bare_times.push(seconds);
                }
                if !matches!(&verdict, Ok(v) if v.reward == 1.0) {
                    eprintln!(
                        "{}: the gold answer did not earn 1: {verdict:?}",
                        case.instance.instance_id
                    );
                }
            }
            raw_times.push(raw_pytest(case, &ids, &tree).await);
        }
        let (grade, raw, bare) = (
            median(&mut grade_times),
            median(&mut raw_times),
            median(&mut bare_times),
        );
        total_grade += grade;
        total_raw += raw;
        total_bare += bare;
        ratios.push(grade / raw);
        canary_ratios.push(grade / bare);
        println!(
            "{:<48} {:>6} {:>10.3} {:>10.3} {:>6.2}x {:>12.3} {:>8.3}x",
            case.instance.instance_id,
            ids.len(),
            grade,
            raw,
            grade / raw,
            bare,
            grade / bare
        );
    }
    println!(
        "editing reward vs raw pytest on the same ids: median ratio {:.2}x, total {:.2}x over {} instances",
        median(&mut ratios),
        total_grade / total_raw,
        ratios.len()
    );
    println!(
        "grading with canaries vs without: median ratio {:.3}x, total {:.3}x",
        median(&mut canary_ratios),
        total_grade / total_bare
    );
    Ok(())
}
