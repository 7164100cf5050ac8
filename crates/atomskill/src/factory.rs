//! The task-factory modes: `corpus fetch`, `synth` and `decontam`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use corpus::{Cache, Manifest};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sandbox::{Sandbox, SnapshotStore};
use synth::Event;
use tasks::Skill;

#[derive(Subcommand)]
pub enum CorpusCommand {
    /// Download, check, unpack and install the projects of a manifest, then run each suite
    /// three times (clean baseline, flaky tests found) in the sandbox.
    Fetch(CorpusFetch),
    /// List the projects of a manifest and what the cache holds for each.
    List(ManifestArg),
}

#[derive(Args)]
pub struct ManifestArg {
    /// The corpus manifest [default: the embedded corpus/default.toml].
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Only these projects (names, comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

#[derive(Args)]
pub struct CorpusFetch {
    #[command(flatten)]
    pub manifest: ManifestArg,
    /// Clean runs per project for the baseline (flaky tests differ between them).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Per-run wall-clock limit in seconds.
    #[arg(long, default_value_t = 300, value_parser = crate::flags::whole_seconds)]
    pub timeout: u64,
}

#[derive(Args)]
pub struct Synth {
    /// The corpus manifest [default: the embedded corpus/default.toml].
    #[arg(long, conflicts_with = "repo")]
    pub corpus: Option<PathBuf>,
    /// One project by name and version, e.g. `pypi:toolz==1.2.0` (test layout detected).
    #[arg(long)]
    pub repo: Option<String>,
    /// Only these projects of the manifest (names, comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(long)]
    pub out: PathBuf,
    /// Skills to make (default: all five and bug fixing).
    #[arg(long, value_delimiter = ',')]
    pub skills: Vec<Skill>,
    #[arg(long, default_value_t = 20)]
    pub max_per_repo: usize,
    /// Candidates validated per project at most.
    #[arg(long, default_value_t = 200)]
    pub max_candidates: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sandbox runs at once [default: the number of cores].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Per test run wall-clock limit in seconds.
    #[arg(long, default_value_t = 120, value_parser = crate::flags::whole_seconds)]
    pub timeout: u64,
}

fn load_manifest(path: Option<&Path>) -> Result<Manifest> {
    Ok(match path {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default_manifest(),
    })
}

fn select(manifest: &Manifest, only: &[String]) -> Result<Vec<corpus::ProjectSpec>> {
    for name in only {
        if manifest.project(name).is_none() {
            bail!("no project `{name}` in the manifest");
        }
    }
    Ok(manifest
        .projects
        .iter()
        .filter(|p| only.is_empty() || only.iter().any(|n| *n == p.name || *n == p.key()))
        .cloned()
        .collect())
}

pub fn corpus_cache(home: &Path) -> Cache {
    Cache::new(home.join("corpus"))
}

/// A line above the progress bars (printed even when the bars are hidden, e.g. without a tty).
fn say(multi: &MultiProgress, line: String) {
    multi.suspend(|| println!("{line}"));
}

fn bar(multi: &MultiProgress, len: u64, prefix: String) -> ProgressBar {
    let bar = multi.add(ProgressBar::new(len));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

pub async fn corpus_fetch(
    home: &Path,
    sandbox: Arc<Sandbox>,
    store: SnapshotStore,
    fetch: CorpusFetch,
) -> Result<std::process::ExitCode> {
    let manifest = load_manifest(fetch.manifest.manifest.as_deref())?;
    let projects = select(&manifest, &fetch.manifest.only)?;
    let cache = corpus_cache(home);
    let multi = MultiProgress::new();
    let overall = bar(&multi, projects.len() as u64, "corpus".into());
    let mut failures = 0;
    for spec in &projects {
        overall.set_message(spec.key());
        let started = std::time::Instant::now();
        match synth::prepare_project(
            &cache,
            &store,
            &sandbox,
            spec,
            &manifest.env,
            fetch.runs,
            Duration::from_secs(fetch.timeout),
        )
        .await
        {
            Ok(state) => {
                let b = &state.baseline;
                let count =
                    |s: testrun::TestStatus| b.statuses.values().filter(|x| **x == s).count();
                say(&multi, format!(
                    "{:<28} {:>6} tests: {} passed, {} failed, {} skipped, {} flaky; suite {:.1}s; ready in {:.0}s",
                    spec.key(),
                    b.statuses.len() + b.flaky.len(),
                    count(testrun::TestStatus::Passed),
                    count(testrun::TestStatus::Failed) + count(testrun::TestStatus::Error),
                    count(testrun::TestStatus::Skipped) + count(testrun::TestStatus::Xfail),
                    b.flaky.len(),
                    b.run_seconds.iter().copied().fold(f64::NAN, f64::min),
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(error) => {
                failures += 1;
                say(&multi, format!("{:<28} SKIPPED: {error}", spec.key()));
            }
        }
        overall.inc(1);
    }
    overall.finish_with_message(format!(
        "{} ready, {failures} failed",
        projects.len() - failures
    ));
    Ok(if failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

pub fn corpus_list(home: &Path, args: ManifestArg) -> Result<std::process::ExitCode> {
    let manifest = load_manifest(args.manifest.as_deref())?;
    let cache = corpus_cache(home);
    for spec in select(&manifest, &args.only)? {
        let state = if cache.load(&spec).is_some() {
            "fetched"
        } else {
            "not fetched"
        };
        println!(
            "{:<8} {:<28} {}",
            format!("{:?}", spec.ecosystem).to_lowercase(),
            spec.key(),
            state
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

pub async fn synth(home: &Path, args: Synth) -> Result<std::process::ExitCode> {
    let bench = recipe::Workbench::open(home)?;
    let config = recipe::SynthConfig {
        manifest: args.corpus.clone(),
        repo: args.repo.clone(),
        only: args.only.clone(),
        out: args.out.clone(),
        skills: args.skills.clone(),
        max_per_repo: args.max_per_repo,
        max_candidates: args.max_candidates,
        seed: args.seed,
        concurrency: args.concurrency,
        test_timeout: Duration::from_secs(args.timeout),
    };
    let (manifest, projects) = recipe::synth::projects(&bench, &config, &|note| {
        eprintln!("atomskill synth: {note}")
    })
    .await?;
    let multi = MultiProgress::new();
    let overall = bar(&multi, projects.len() as u64, "projects".into());
    let candidates = bar(&multi, 0, "candidates".into());
    // How many instances a bug yields is known only once its skills are built: a counter.
    let instances = multi.add(ProgressBar::no_length());
    instances.set_style(
        ProgressStyle::with_template("{prefix:>24} {pos} checked {msg}").expect("valid template"),
    );
    instances.set_prefix("instances");
    let invalid = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let events = {
        let (overall, candidates, instances, multi) = (
            overall.clone(),
            candidates.clone(),
            instances.clone(),
            multi.clone(),
        );
        move |event: Event| match event {
            Event::ProjectStarted { project } => overall.set_message(project),
            Event::Prepared {
                project,
                tests,
                flaky,
                seconds,
            } => {
                say(
                    &multi,
                    format!(
                        "{project}: {tests} stable tests, {flaky} flaky, prepared in {seconds:.0}s"
                    ),
                );
            }
            Event::Candidates {
                project,
                total,
                covered,
                sampled,
            } => {
                candidates.set_length(sampled as u64);
                candidates.set_position(0);
                say(&multi, format!("{project}: {total} candidates, {covered} in tested functions, {sampled} sampled"));
            }
            Event::CandidateDone { .. } => candidates.inc(1),
            Event::InstanceDone { valid, .. } => {
                instances.inc(1);
                if !valid {
                    invalid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                instances.set_message(format!(
                    "({} failed validation)",
                    invalid.load(std::sync::atomic::Ordering::Relaxed)
                ));
            }
            Event::ProjectSkipped { project, reason } => {
                say(&multi, format!("{project}: SKIPPED: {reason}"));
                overall.inc(1);
            }
            Event::ProjectDone { .. } => overall.inc(1),
        }
    };
    let run = recipe::synth::synthesize(&bench, &config, &manifest, &projects, &events).await;
    overall.finish();
    candidates.finish();
    instances.finish();
    let run = run?;
    println!("{}", serde_json::to_string_pretty(&run.instances)?);
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct Decontam {
    /// Training instances (a directory of <skill>.jsonl files).
    #[arg(long)]
    pub train: PathBuf,
    /// Evaluation instances.
    #[arg(long)]
    pub eval: PathBuf,
    /// Where the kept training instances and report.json go.
    #[arg(long)]
    pub out: PathBuf,
    /// Word n-gram length for near-duplicate texts.
    #[arg(long, default_value_t = 8)]
    pub ngram: usize,
    /// Share of n-grams in common above which a text is a near duplicate.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
}

pub fn decontam(args: Decontam) -> Result<std::process::ExitCode> {
    let train = tasks::store::read_dir(&args.train)?;
    let eval = tasks::store::read_dir(&args.eval)?;
    let total = train.len();
    let (kept, report) = tasks::decontam::decontaminate(train, &eval, args.ngram, args.threshold);
    tasks::store::write_dir(&args.out, &kept)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!(
        "kept {} of {total} training instances; dropped {} (report.json says why)",
        kept.len(),
        report.dropped.len()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum SweBenchCommand {
    /// Write the bug-fixing instances of a directory as SWE-bench 5.x JSONL (Python projects;
    /// needs the projects in the corpus cache, as `corpus fetch` or `synth` left them).
    Export {
        #[arg(long)]
        tasks: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Read SWE-bench JSONL into bug_fixing.jsonl: records atomskill exported (their project
    /// in the corpus cache), or records whose base_commit names a local snapshot.
    Import {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// A project of the corpus cache, by name and version.
fn cached_project(cache: &Cache, name: &str, version: &str) -> Result<corpus::Prepared> {
    cache.find(name, version).with_context(|| {
        format!(
            "{name} {version} is not in the corpus cache ({}); run `atomskill corpus fetch --only {name}` first",
            cache.root().display()
        )
    })
}

/// `X.Y` of the interpreter a project's virtualenv runs.
fn python_version(prepared: &corpus::Prepared) -> Result<String> {
    let corpus::Environment::Python { venv } = &prepared.environment else {
        bail!("{}: not a Python project", prepared.spec.name);
    };
    let output = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .with_context(|| format!("running the Python of {}", venv.display()))?;
    if !output.status.success() {
        bail!("{}: its Python does not run", venv.display());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

pub fn swebench(
    home: &Path,
    store_root: &Path,
    command: SweBenchCommand,
) -> Result<std::process::ExitCode> {
    let read = |root: &Path, path: &str| {
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return None;
        }
        std::fs::read_to_string(root.join(path)).ok()
    };
    let cache = corpus_cache(home);
    match command {
        SweBenchCommand::Export { tasks, out } => {
            let work = tempfile::tempdir().context("creating a temporary directory")?;
            let mut lines = Vec::new();
            let mut skipped_crates = 0;
            let mut projects: std::collections::BTreeMap<
                (String, String),
                (corpus::Prepared, String),
            > = Default::default();
            for (index, instance) in tasks::store::read_dir(&tasks)?.iter().enumerate() {
                if instance.skill() != Skill::BugFixing {
                    continue;
                }
                let project = &instance.project;
                if project.ecosystem == corpus::Ecosystem::Crates {
                    skipped_crates += 1;
                    continue;
                }
                let snapshot = store_root.join(&project.snapshot);
                if !snapshot.is_dir() {
                    bail!(
                        "{}: snapshot {} is not in {}",
                        instance.instance_id,
                        project.snapshot,
                        store_root.display()
                    );
                }
                let key = (project.name.clone(), project.version.clone());
                if !projects.contains_key(&key) {
                    let prepared = cached_project(&cache, &project.name, &project.version)?;
                    let python = python_version(&prepared)?;
                    projects.insert(key.clone(), (prepared, python));
                }
                let (prepared, python) = &projects[&key];
                let archive = cache
                    .project_dir(&prepared.spec)
                    .join(&prepared.spec.archive);
                if !archive.is_file() {
                    bail!(
                        "{}: the source archive {} is missing; run `atomskill corpus fetch --only {}`",
                        instance.instance_id,
                        archive.display(),
                        project.name
                    );
                }
                let export_project = tasks::swebench::ExportProject {
                    spec: &prepared.spec,
                    run_env: &prepared.run_env,
                    python,
                    archive: &archive,
                };
                let tree = work.path().join(index.to_string());
                let record = tasks::swebench::export(
                    instance,
                    &export_project,
                    &|p| read(&snapshot, p),
                    &tree,
                )
                .with_context(|| format!("exporting {}", instance.instance_id))?;
                std::fs::remove_dir_all(&tree)
                    .with_context(|| format!("removing {}", tree.display()))?;
                if let Some(record) = record {
                    lines.push(serde_json::to_string(&record)?);
                }
            }
            std::fs::write(&out, lines.join("\n") + "\n")?;
            println!("wrote {} records to {}", lines.len(), out.display());
            if skipped_crates > 0 {
                println!(
                    "skipped {skipped_crates} instances of crates: the export covers Python projects \
                     (SWE-bench's cargo log parser names tests without their target)"
                );
            }
        }
        SweBenchCommand::Import { input, out } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let mut instances = Vec::new();
            for (index, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let at = || format!("{}:{}", input.display(), index + 1);
                let record: tasks::swebench::SweBenchRecord = serde_json::from_str(line)
                    .with_context(|| format!("{}: not a SWE-bench record", at()))?;
                let (snapshot, tree, ecosystem) = if store_root.join(&record.base_commit).is_dir() {
                    // The export names the repository `<ecosystem>/<project>`.
                    let ecosystem = match record.repo.split_once('/').map(|(e, _)| e) {
                        Some("pypi") => corpus::Ecosystem::Pypi,
                        Some("crates") => corpus::Ecosystem::Crates,
                        _ => bail!(
                            "{}: repo `{}` does not say its ecosystem (`pypi/NAME` or `crates/NAME`)",
                            at(),
                            record.repo
                        ),
                    };
                    let snapshot = record.base_commit.clone();
                    (snapshot.clone(), store_root.join(snapshot), ecosystem)
                } else if let Some(source) = &record.source {
                    let prepared =
                        cached_project(&cache, &source.name, &source.version).with_context(at)?;
                    if prepared.spec.sha256 != source.sha256 {
                        bail!(
                            "{}: the corpus cache holds another archive of {} {} (sha256 {}, the record's is {})",
                            at(),
                            source.name,
                            source.version,
                            prepared.spec.sha256,
                            source.sha256
                        );
                    }
                    // The id `eval` gives the cached tree's snapshot when it imports it.
                    let snapshot = format!("dir-{}", sandbox::fingerprint(&prepared.tree)?);
                    (snapshot, prepared.tree.clone(), source.ecosystem)
                } else {
                    bail!(
                        "{}: base_commit {} is not a local snapshot and the record names no source \
                         project (fetch the project first)",
                        at(),
                        record.base_commit
                    );
                };
                instances.push(
                    tasks::swebench::import(&record, ecosystem, &snapshot, &|p| read(&tree, p))
                        .with_context(at)?,
                );
            }
            tasks::store::write_dir(&out, &instances)?;
            println!(
                "imported {} instances into {}",
                instances.len(),
                out.join("bug_fixing.jsonl").display()
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A prepared project of the corpus cache (`NAME-VERSION`) and its snapshot, for
/// `bench mutants`.
pub fn mutants_case(
    home: &Path,
    store: &SnapshotStore,
    project: &str,
) -> Result<bench::mutants::Case> {
    let dir = corpus_cache(home).root().join(project);
    let prepared: corpus::Prepared =
        serde_json::from_slice(&std::fs::read(dir.join("prepared.json")).with_context(|| {
            format!("{project}: not in the corpus cache; run `atomskill corpus fetch` first")
        })?)?;
    let snapshot = store.import_dir(&prepared.tree, None)?;
    Ok(bench::mutants::Case { prepared, snapshot })
}

/// Editing instances of `tasks` with their prepared projects (from the corpus cache) and
/// snapshots, for `bench grading`.
pub fn grading_cases(
    home: &Path,
    store: &SnapshotStore,
    tasks: &Path,
) -> Result<Vec<bench::grading::Case>> {
    let cache = corpus_cache(home);
    let mut cases = Vec::new();
    for instance in tasks::store::read_jsonl(&tasks.join("editing.jsonl"))? {
        let dir = cache.root().join(format!(
            "{}-{}",
            instance.project.name, instance.project.version
        ));
        let prepared: corpus::Prepared = serde_json::from_slice(
            &std::fs::read(dir.join("prepared.json")).with_context(|| {
                format!(
                    "{}: project not in the corpus cache; run `atomskill corpus fetch` first",
                    instance.instance_id
                )
            })?,
        )?;
        let snapshot = store.get(&instance.project.snapshot).with_context(|| {
            format!(
                "{}: snapshot {} not in the store",
                instance.instance_id, instance.project.snapshot
            )
        })?;
        cases.push(bench::grading::Case {
            instance,
            prepared,
            snapshot,
        });
    }
    Ok(cases)
}
