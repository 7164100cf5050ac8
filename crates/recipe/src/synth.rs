//! The task factory as one call: which projects (a manifest's, or one named project whose
//! layout is detected), then `synth` over each, with the run manifest rewritten after every project.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use corpus::{Manifest, ProjectSpec};
use synth::{Event, RunManifest, SynthOptions};
use tasks::Skill;

use crate::error::{Error, Result};
use crate::workbench::Workbench;

/// What `atomskill synth` makes.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// The corpus manifest (default: the embedded one).
    pub manifest: Option<PathBuf>,
    /// One project by name and version instead of the manifest's, e.g. `pypi:toolz==1.2.0`
    /// (its test layout and environment detected).
    pub repo: Option<String>,
    /// Only these projects of the manifest (names or `name-version`); all when empty.
    pub only: Vec<String>,
    pub out: PathBuf,
    /// Skills to make; all when empty.
    pub skills: Vec<Skill>,
    pub max_per_repo: usize,
    /// Candidates validated per project at most.
    pub max_candidates: usize,
    pub seed: u64,
    /// Sandbox runs at once (default: the number of cores).
    pub concurrency: Option<usize>,
    /// Wall-clock limit of one test run.
    pub test_timeout: Duration,
}

impl SynthConfig {
    /// The defaults of `atomskill synth`, writing to `out`.
    pub fn new(out: PathBuf) -> SynthConfig {
        SynthConfig {
            manifest: None,
            repo: None,
            only: Vec::new(),
            out,
            skills: Vec::new(),
            max_per_repo: 20,
            max_candidates: 200,
            seed: 0,
            concurrency: None,
            test_timeout: Duration::from_secs(120),
        }
    }
}

/// The projects a config names, with the manifest whose environment they share.
pub async fn projects(
    bench: &Workbench,
    config: &SynthConfig,
    notes: &(dyn Fn(String) + Send + Sync),
) -> Result<(Manifest, Vec<ProjectSpec>)> {
    if let Some(repo) = &config.repo {
        let work = bench.home.join("corpus").join("detected");
        let detected = tokio::task::spawn_blocking({
            let repo = repo.clone();
            move || corpus::detect::detect(&repo, &work)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))??;
        for note in &detected.notes {
            notes(note.clone());
        }
        let manifest = Manifest {
            schema_version: corpus::manifest::SCHEMA_VERSION,
            env: Manifest::default_manifest().env,
            projects: vec![detected.spec.clone()],
        };
        return Ok((manifest, vec![detected.spec]));
    }
    let manifest = match &config.manifest {
        Some(path) => Manifest::load(path)?,
        None => Manifest::default_manifest(),
    };
    for name in &config.only {
        if manifest.project(name).is_none() {
            return Err(Error::Config(format!(
                "no project `{name}` in the manifest"
            )));
        }
    }
    let projects = manifest
        .projects
        .iter()
        .filter(|p| {
            config.only.is_empty() || config.only.iter().any(|n| *n == p.name || *n == p.key())
        })
        .cloned()
        .collect();
    Ok((manifest, projects))
}

/// Synthesises and validates the instances of `config` into `config.out`; `events` sees the
/// progress of every project, `notes` what project detection found.
pub async fn run_synth(
    bench: &Workbench,
    config: &SynthConfig,
    events: &(dyn Fn(Event) + Send + Sync),
    notes: &(dyn Fn(String) + Send + Sync),
) -> Result<RunManifest> {
    let (manifest, projects) = projects(bench, config, notes).await?;
    synthesize(bench, config, &manifest, &projects, events).await
}

/// [`run_synth`] over projects already resolved with [`projects`].
pub async fn synthesize(
    bench: &Workbench,
    config: &SynthConfig,
    manifest: &Manifest,
    projects: &[ProjectSpec],
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<RunManifest> {
    let skills: BTreeSet<Skill> = if config.skills.is_empty() {
        Skill::ALL.into_iter().collect()
    } else {
        config.skills.iter().copied().collect()
    };
    std::fs::create_dir_all(&config.out).map_err(|e| Error::io(&config.out, e))?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let options = SynthOptions {
        out: config.out.clone(),
        skills,
        max_per_repo: config.max_per_repo,
        max_candidates: config.max_candidates,
        seed: config.seed,
        concurrency: config.concurrency.unwrap_or(cores),
        test_timeout: config.test_timeout,
        baseline_runs: 3,
    };
    let cache = bench.corpus_cache();
    let mut reports = Vec::new();
    for spec in projects {
        let report = synth::synth_project(
            &options,
            bench.sandbox.clone(),
            &cache,
            &bench.store,
            spec,
            &manifest.env,
            events,
        )
        .await?;
        reports.push(report);
        RunManifest::new(&options, reports.clone()).write(&config.out)?;
    }
    let run = RunManifest::new(&options, reports);
    run.write(&config.out)?;
    Ok(run)
}
