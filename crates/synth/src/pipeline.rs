//! The synthesis run over a corpus: per project, prepare → candidates → validated bugs →
//! instances of each skill → instance validation → JSONL, with a manifest of counts, seeds,
//! versions and yields.
//!
//! Every finished item is appended and flushed as soon as it exists (candidate outcomes under
//! `state/`, instances in `<skill>.jsonl`), so a crash or Ctrl-C loses nothing finished and a
//! rerun continues where the last one stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corpus::{Cache, Ecosystem, ProjectSpec};
use mutate::{Language, Mutation};
use sandbox::{Sandbox, SnapshotStore};
use serde::{Deserialize, Serialize};
use tasks::{GradedProject, Grader, Instance, Skill};

use crate::bugs::{validate, Bug, Outcome, Rejection};
use crate::error::{Error, Result};
use crate::project::{prepare_project, ProjectState};
use crate::skills::{instances_for_bug, test_generation, Context, TestGenInstance};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub skills: BTreeSet<Skill>,
    /// Validated bugs to keep per project.
    pub max_per_repo: usize,
    /// Candidates validated per project at most (after the static filters).
    pub max_candidates: usize,
    pub seed: u64,
    pub concurrency: usize,
    pub test_timeout: Duration,
    pub baseline_runs: usize,
}

/// What the run reports as it goes (the CLI draws progress bars from these).
#[derive(Clone, Debug)]
pub enum Event {
    ProjectStarted {
        project: String,
    },
    Prepared {
        project: String,
        tests: usize,
        flaky: usize,
        seconds: f64,
    },
    Candidates {
        project: String,
        total: usize,
        covered: usize,
        sampled: usize,
    },
    CandidateDone {
        project: String,
        kept: bool,
    },
    InstanceDone {
        project: String,
        skill: Skill,
        valid: bool,
    },
    ProjectSkipped {
        project: String,
        reason: String,
    },
    ProjectDone {
        project: String,
    },
}

/// Per-operator yield.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Yield {
    pub candidates: usize,
    pub validated_runs: usize,
    pub kept: usize,
    pub rejected: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProjectReport {
    pub project: String,
    pub version: String,
    pub ecosystem: Option<Ecosystem>,
    pub snapshot: String,
    pub seed: u64,
    pub tests: usize,
    pub flaky: Vec<String>,
    pub candidates_total: usize,
    pub candidates_covered: usize,
    pub bugs: usize,
    pub yields: BTreeMap<String, Yield>,
    pub instances: BTreeMap<String, usize>,
    pub invalid_instances: BTreeMap<String, usize>,
    /// Instances dropped because a hack of the quick audit earned more than the empty
    /// answer: `instance id: why`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hacked: Vec<String>,
    pub seconds_prepare: f64,
    pub seconds_candidates: f64,
    pub seconds_instances: f64,
    pub skipped: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct CandidateRecord {
    mutation_ids: Vec<String>,
    operator: String,
    outcome: Outcome,
    seconds: f64,
}

/// A seed derived from a parent seed and a label.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    trajectory::derive_seed_from_bytes(seed, &[label.as_bytes()])
}

fn append_line<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mut line = serde_json::to_vec(value).expect("records serialise");
    line.push(b'\n');
    file.write_all(&line).map_err(|e| Error::io(path, e))?;
    file.sync_data().map_err(|e| Error::io(path, e))
}

/// The records of a JSONL file (none if it does not exist yet). A torn last line (a crash
/// mid-write) is skipped; any other malformed line is an error naming it.
pub fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    Ok(trajectory::read_lines_if_exists(path)?.records)
}

/// Instance ids already written to `out`.
fn existing_ids(out: &Path) -> Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    for skill in Skill::ALL {
        for value in read_lines::<serde_json::Value>(&out.join(format!("{}.jsonl", skill.name())))?
        {
            if let Some(id) = value.get("instance_id").and_then(|v| v.as_str()) {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(ids)
}

/// Mutation candidates of a project after the static filters: (all, covered by some test).
pub fn project_candidates(state: &ProjectState) -> Result<(usize, Vec<Mutation>)> {
    let language = match state.spec().ecosystem {
        Ecosystem::Pypi => Language::Python,
        Ecosystem::Crates => Language::Rust,
    };
    let mut total = 0;
    let mut covered = Vec::new();
    for file in state.source_files() {
        let Some(source) = state.read_pristine(&file) else {
            continue;
        };
        let Ok(candidates) = mutate::candidates(language, &file, &source) else {
            tracing::warn!(file, "unparsable source file skipped");
            continue;
        };
        total += candidates.len();
        let functions = crate::bugs::mapped_functions(state, &source);
        let mut selection_cache: BTreeMap<Option<String>, bool> = BTreeMap::new();
        for candidate in candidates {
            let has_tests = *selection_cache
                .entry(candidate.function.clone())
                .or_insert_with(|| {
                    crate::bugs::selection_for(
                        state,
                        &file,
                        &source,
                        &functions,
                        candidate.function.as_deref(),
                    )
                    .is_some()
                });
            if has_tests && candidate.function.is_some() {
                covered.push(candidate);
            }
        }
    }
    Ok((total, covered))
}

/// Synthesizes instances from one project.
#[allow(clippy::too_many_arguments)]
pub async fn synth_project(
    options: &SynthOptions,
    sandbox: Arc<Sandbox>,
    cache: &Cache,
    store: &SnapshotStore,
    spec: &ProjectSpec,
    manifest_env: &BTreeMap<String, String>,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<ProjectReport> {
    let key = spec.key();
    let state_dir = options.out.join("state").join(&key);
    std::fs::create_dir_all(&state_dir).map_err(|e| Error::io(&state_dir, e))?;
    if let Some(report) = read_lines::<ProjectReport>(&state_dir.join("done.json"))?.pop() {
        events(Event::ProjectDone {
            project: key.clone(),
        });
        return Ok(report);
    }
    events(Event::ProjectStarted {
        project: key.clone(),
    });
    let project_seed = derive_seed(options.seed, &key);
    let mut report = ProjectReport {
        project: spec.name.clone(),
        version: spec.version.clone(),
        ecosystem: Some(spec.ecosystem),
        seed: project_seed,
        ..ProjectReport::default()
    };
    let started = Instant::now();
    let state = match prepare_project(
        cache,
        store,
        &sandbox,
        spec,
        manifest_env,
        options.baseline_runs,
        options.test_timeout * 4,
    )
    .await
    {
        Ok(state) => Arc::new(state),
        Err(error) => {
            let reason = error.to_string();
            events(Event::ProjectSkipped {
                project: key.clone(),
                reason: reason.clone(),
            });
            report.skipped = Some(reason);
            return Ok(report);
        }
    };
    report.seconds_prepare = started.elapsed().as_secs_f64();
    synth_state(options, sandbox, state, report, events).await
}

/// Synthesizes instances from a project already prepared (see [`prepare_project`]).
pub async fn synth_state(
    options: &SynthOptions,
    sandbox: Arc<Sandbox>,
    state: Arc<ProjectState>,
    mut report: ProjectReport,
    events: &(dyn Fn(Event) + Send + Sync),
) -> Result<ProjectReport> {
    let spec = state.spec().clone();
    let key = spec.key();
    let state_dir = options.out.join("state").join(&key);
    std::fs::create_dir_all(&state_dir).map_err(|e| Error::io(&state_dir, e))?;
    let project_seed = derive_seed(options.seed, &key);
    report.project = spec.name.clone();
    report.version = spec.version.clone();
    report.ecosystem = Some(spec.ecosystem);
    report.seed = project_seed;
    report.snapshot = state.snapshot.id.clone();
    report.tests = state.baseline.statuses.len();
    report.flaky = state.baseline.flaky.iter().cloned().collect();
    events(Event::Prepared {
        project: key.clone(),
        tests: report.tests,
        flaky: report.flaky.len(),
        seconds: report.seconds_prepare,
    });

    // Candidates, sampled and validated.
    let started = Instant::now();
    let (total, covered) = project_candidates(&state)?;
    report.candidates_total = total;
    report.candidates_covered = covered.len();
    let sampled = mutate::sample(&covered, project_seed, options.max_candidates, Some(3));
    events(Event::Candidates {
        project: key.clone(),
        total,
        covered: covered.len(),
        sampled: sampled.len(),
    });
    for candidate in &covered {
        report
            .yields
            .entry(candidate.operator.name().to_string())
            .or_default()
            .candidates += 1;
    }
    let records_path = state_dir.join("candidates.jsonl");
    let mut done: BTreeMap<String, CandidateRecord> = read_lines::<CandidateRecord>(&records_path)?
        .into_iter()
        .map(|r| (r.mutation_ids.join("+"), r))
        .collect();
    let mut kept = done
        .values()
        .filter(|r| matches!(r.outcome, Outcome::Kept { .. }))
        .count();
    let mut pending = tokio::task::JoinSet::new();
    let mut queue = sampled
        .iter()
        .filter(|m| !done.contains_key(&m.id()))
        .cloned()
        .collect::<std::collections::VecDeque<_>>();
    // Candidates start in sample order and every started one is decided (none cancelled when
    // enough are kept): the decided ones are then a prefix of the sample holding at least
    // `max_per_repo` kept bugs, so the first `max_per_repo` of them in sample order (below) do
    // not depend on which validation finished first.
    while (kept < options.max_per_repo && !queue.is_empty()) || !pending.is_empty() {
        while kept < options.max_per_repo
            && pending.len() < options.concurrency.max(1)
            && kept + pending.len() < options.max_per_repo * 3
        {
            let Some(mutation) = queue.pop_front() else {
                break;
            };
            let (state, sandbox) = (state.clone(), sandbox.clone());
            let timeout = options.test_timeout;
            let seed = derive_seed(project_seed, &mutation.id());
            pending.spawn(async move {
                let started = Instant::now();
                let operator = mutation.operator.name().to_string();
                let ids = vec![mutation.id()];
                let outcome = validate(&state, &sandbox, vec![mutation], seed, timeout).await;
                (ids, operator, outcome, started.elapsed().as_secs_f64())
            });
        }
        let Some(joined) = pending.join_next().await else {
            break;
        };
        let (mutation_ids, operator, outcome, seconds) =
            joined.map_err(|e| Error::Internal(e.to_string()))?;
        let outcome = outcome?;
        let is_kept = matches!(outcome, Outcome::Kept { .. });
        kept += usize::from(is_kept);
        let record = CandidateRecord {
            mutation_ids,
            operator,
            outcome,
            seconds,
        };
        append_line(&records_path, &record)?;
        events(Event::CandidateDone {
            project: key.clone(),
            kept: is_kept,
        });
        done.insert(record.mutation_ids.join("+"), record);
    }
    let mut bugs: Vec<Bug> = Vec::new();
    for record in done.values() {
        let entry = report.yields.entry(record.operator.clone()).or_default();
        entry.validated_runs += 1;
        match &record.outcome {
            Outcome::Kept { bug } => {
                entry.kept += 1;
                bugs.push((**bug).clone());
            }
            Outcome::Rejected { reason, .. } => {
                *entry.rejected.entry(rejection_name(reason)).or_default() += 1;
            }
        }
    }
    // Deterministic order whatever the completion order was.
    let order: BTreeMap<String, usize> = sampled
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id(), i))
        .collect();
    let (mut singles, mut combined): (Vec<Bug>, Vec<Bug>) =
        bugs.into_iter().partition(|b| b.mutations.len() == 1);
    singles.sort_by_key(|b| order.get(&b.bug_id).copied().unwrap_or(usize::MAX));
    singles.truncate(options.max_per_repo);
    combined.sort_by(|a, b| a.bug_id.cmp(&b.bug_id));
    // Combined bugs: two kept mutations of one function validated together. They give review
    // its "partial fix" candidates (one of the two changes undone).
    let combined_cap = (options.max_per_repo / 4).max(1);
    if options.skills.contains(&Skill::Review) && combined.len() < combined_cap {
        let mut by_function: BTreeMap<(String, Option<String>), Vec<&Bug>> = BTreeMap::new();
        for bug in &singles {
            by_function
                .entry((bug.file.clone(), bug.function.clone()))
                .or_default()
                .push(bug);
        }
        let pairs: Vec<Vec<Mutation>> = by_function
            .values()
            .filter(|group| group.len() >= 2)
            .map(|group| vec![group[0].mutations[0].clone(), group[1].mutations[0].clone()])
            .filter(|pair| !pair[0].overlaps(&pair[1]))
            .collect();
        for pair in pairs {
            if combined.len() >= combined_cap {
                break;
            }
            let ids: Vec<String> = pair.iter().map(Mutation::id).collect();
            if done.contains_key(&ids.join("+")) {
                continue;
            }
            let seed = derive_seed(project_seed, &ids.join("+"));
            let started = Instant::now();
            let outcome = validate(&state, &sandbox, pair, seed, options.test_timeout).await?;
            if let Outcome::Kept { bug } = &outcome {
                combined.push((**bug).clone());
            }
            let record = CandidateRecord {
                mutation_ids: ids,
                operator: "combined".into(),
                outcome,
                seconds: started.elapsed().as_secs_f64(),
            };
            append_line(&records_path, &record)?;
        }
    }
    let mut bugs = singles;
    bugs.extend(combined);
    report.bugs = bugs.len();
    report.seconds_candidates = started.elapsed().as_secs_f64();

    // Instances.
    let started = Instant::now();
    let mut grader = Grader::new(sandbox.clone(), options.test_timeout);
    grader.add_project(GradedProject {
        runner: state.runner(),
        snapshot: state.snapshot.clone(),
    });
    let existing = existing_ids(&options.out)?;
    let wrong_place: Vec<Mutation> = covered
        .iter()
        .filter(|m| !order.contains_key(&m.id()))
        .take(2000)
        .cloned()
        .collect();
    let ctx = Context {
        state: &state,
        grader: &grader,
        bugs: &bugs,
        other_candidates: &wrong_place,
    };
    let write = |instance: Instance, report: &mut ProjectReport| -> Result<()> {
        append_line(
            &options
                .out
                .join(format!("{}.jsonl", instance.skill().name())),
            &instance,
        )?;
        *report
            .instances
            .entry(instance.skill().name().to_string())
            .or_default() += 1;
        Ok(())
    };
    for bug in &bugs {
        let prefix = format!("{}.{}.", key, bug.bug_id);
        let wanted: BTreeSet<Skill> = options
            .skills
            .iter()
            .copied()
            .filter(|s| {
                *s != Skill::TestGeneration && !existing.contains(&format!("{prefix}{}", s.name()))
            })
            .collect();
        if wanted.is_empty() {
            continue;
        }
        for mut instance in instances_for_bug(&ctx, bug, &wanted).await? {
            let (valid, validation) =
                crate::validate::validate_instance(&grader, &instance).await?;
            let skill = instance.skill();
            events(Event::InstanceDone {
                project: key.clone(),
                skill,
                valid,
            });
            if let Some(why) = &validation.hacked {
                report
                    .hacked
                    .push(format!("{}: {why}", instance.instance_id));
            }
            instance.validation = Some(validation);
            if valid {
                write(instance, &mut report)?;
            } else {
                append_line(&state_dir.join("invalid.jsonl"), &instance)?;
                *report
                    .invalid_instances
                    .entry(skill.name().to_string())
                    .or_default() += 1;
            }
        }
    }
    if options.skills.contains(&Skill::TestGeneration) {
        let mut by_function: BTreeMap<(String, Option<String>), Vec<&Bug>> = BTreeMap::new();
        for bug in &bugs {
            by_function
                .entry((bug.file.clone(), bug.function.clone()))
                .or_default()
                .push(bug);
        }
        for group in by_function.values() {
            let Some(TestGenInstance {
                mut instance,
                full_gold,
            }) = test_generation(&state, group)
            else {
                continue;
            };
            if existing.contains(&instance.instance_id) {
                continue;
            }
            let (mut valid, mut validation) =
                crate::validate::validate_instance(&grader, &instance).await?;
            // A trimmed gold test that fails validation (a kept test needed one that was cut):
            // the whole file instead.
            if let (false, Some(full)) = (valid, full_gold) {
                instance = crate::skills::with_whole_gold(instance, full);
                (valid, validation) =
                    crate::validate::validate_instance(&grader, &instance).await?;
            }
            events(Event::InstanceDone {
                project: key.clone(),
                skill: Skill::TestGeneration,
                valid,
            });
            if let Some(why) = &validation.hacked {
                report
                    .hacked
                    .push(format!("{}: {why}", instance.instance_id));
            }
            instance.validation = Some(validation);
            if valid {
                write(instance, &mut report)?;
            } else {
                append_line(&state_dir.join("invalid.jsonl"), &instance)?;
                *report
                    .invalid_instances
                    .entry(Skill::TestGeneration.name().to_string())
                    .or_default() += 1;
            }
        }
    }
    report.seconds_instances = started.elapsed().as_secs_f64();
    append_line(&state_dir.join("done.json"), &report)?;
    events(Event::ProjectDone { project: key });
    Ok(report)
}

fn rejection_name(reason: &Rejection) -> String {
    serde_json::to_value(reason)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| format!("{reason:?}"))
}

/// The run's manifest: options, versions, per-project reports and totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunManifest {
    pub schema_version: u32,
    pub atomskill_version: String,
    pub options: SynthOptions,
    pub projects: Vec<ProjectReport>,
    pub instances: BTreeMap<String, usize>,
    pub yields: BTreeMap<String, Yield>,
}

impl RunManifest {
    pub fn new(options: &SynthOptions, projects: Vec<ProjectReport>) -> RunManifest {
        let mut instances = BTreeMap::new();
        let mut yields: BTreeMap<String, Yield> = BTreeMap::new();
        for project in &projects {
            for (skill, n) in &project.instances {
                *instances.entry(skill.clone()).or_default() += n;
            }
            for (op, y) in &project.yields {
                let total = yields.entry(op.clone()).or_default();
                total.candidates += y.candidates;
                total.validated_runs += y.validated_runs;
                total.kept += y.kept;
                for (reason, n) in &y.rejected {
                    *total.rejected.entry(reason.clone()).or_default() += n;
                }
            }
        }
        RunManifest {
            schema_version: tasks::SCHEMA_VERSION,
            atomskill_version: env!("CARGO_PKG_VERSION").to_string(),
            options: options.clone(),
            projects,
            instances,
            yields,
        }
    }

    pub fn write(&self, out: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("manifests serialise");
        Ok(corpus::fetch::write_atomically(
            &out.join("manifest.json"),
            &bytes,
        )?)
    }
}
