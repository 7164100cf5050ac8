//! The training run: rollout workers and the optimiser, decoupled, with bounded staleness.
//!
//! Files in the run directory: `config.json` (the config as run), `rollouts.jsonl` (every
//! episode, with its group, the weight version it was sampled at and whether it was trained
//! on), `metrics.jsonl` (one [`StepRecord`] per step), `checkpoint/` (resumable), `model/` (the
//! final weights) and `report.html` (curves per skill).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::{JsonlWriter, OutcomeKind, WriterConfig};
use policy::{OpenAiConfig, OpenAiPolicy, Policy};
use rollout::{EpisodeRecord, Rollout};
use serde::{Deserialize, Serialize};
use tasks::Instance;
use tokio::sync::{mpsc, Semaphore};
use train::{Sample, StepMetrics, Trainer};

use crate::config::{PolicyConfig, RunConfig};
use crate::error::{Error, Result};
use crate::mixture::Mixture;

/// One episode as `rollouts.jsonl` keeps it, written as soon as the episode is graded. Which
/// step trained on its group is in `metrics.jsonl` ([`StepRecord::trained_groups`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutLine {
    pub group: u64,
    pub weight_version: u64,
    pub record: EpisodeRecord,
}

/// Rollout figures of one skill in one step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SkillRollouts {
    pub episodes: usize,
    pub scored: usize,
    pub reward_mean: f64,
    pub success_rate: f64,
    pub mean_steps: f64,
    pub mean_completion_tokens: f64,
    pub outcomes: BTreeMap<String, usize>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub groups: usize,
    /// Groups this step trained on, and groups dropped as too stale while it waited.
    pub trained_groups: Vec<u64>,
    pub dropped_groups: Vec<u64>,
    /// Groups passed over because all their rewards were equal (`rollout.refill_zero_variance`).
    #[serde(default)]
    pub refilled_groups: Vec<u64>,
    pub stale_groups_dropped: usize,
    pub staleness_max: u64,
    pub staleness_mean: f64,
    pub rollout_seconds_waited: f64,
    pub per_skill: BTreeMap<String, SkillRollouts>,
    pub trainer: StepMetrics,
}

/// Progress, for a progress bar.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    Started { from_step: u64, steps: u64 },
    Step(Box<StepRecord>),
}

/// A finished group of episodes of one task.
struct Group {
    index: u64,
    instance: usize,
    version: u64,
    records: Vec<EpisodeRecord>,
}

/// The policy rollouts sample from, and how new weights reach it.
#[derive(Clone)]
enum Target {
    Local(engine::LocalPolicy),
    Remote {
        policy: Arc<OpenAiPolicy>,
        reload_url: String,
        reload_body: String,
        version: Arc<AtomicU64>,
        weights_dir: PathBuf,
    },
}

impl Target {
    fn policy(&self) -> Arc<dyn Policy> {
        match self {
            Target::Local(p) => Arc::new(p.clone()),
            Target::Remote { policy, .. } => policy.clone(),
        }
    }

    fn version(&self) -> u64 {
        match self {
            Target::Local(p) => p.version(),
            Target::Remote { version, .. } => version.load(Ordering::SeqCst),
        }
    }

    /// Hands the trainer's current weights to the policy.
    async fn sync(&self, trainer: &Trainer) -> Result<()> {
        match self {
            Target::Local(local) => {
                let (version, model) = trainer.policy_model()?;
                local.set_model(model, version).await?;
            }
            Target::Remote {
                reload_url,
                reload_body,
                version,
                weights_dir,
                ..
            } => {
                trainer.save_model(weights_dir)?;
                let body = reload_body.replace("{model_dir}", &weights_dir.display().to_string());
                let response = reqwest::Client::new()
                    .post(reload_url)
                    .header("content-type", "application/json")
                    .body(body)
                    .timeout(Duration::from_secs(600))
                    .send()
                    .await
                    .map_err(|e| Error::Sync(format!("POST {reload_url}: {e}")))?;
                if !response.status().is_success() {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    return Err(Error::Sync(format!(
                        "POST {reload_url}: HTTP {status}: {text}"
                    )));
                }
                version.store(trainer.weight_version(), Ordering::SeqCst);
            }
        }
        Ok(())
    }
}

/// The device a config names.
pub fn device_of(name: &str) -> Result<model::Device> {
    model::open_device(name).map_err(Error::Device)
}

/// Whether a group's scored rewards differ.
fn has_variance(group: &Group) -> bool {
    let rewards: Vec<f64> = group.records.iter().filter_map(|r| r.reward).collect();
    rewards.windows(2).any(|w| w[0] != w[1])
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        s / n as f64
    }
}

fn skill_rollouts(records: &[&EpisodeRecord]) -> SkillRollouts {
    let scored: Vec<&&EpisodeRecord> = records.iter().filter(|r| r.is_scored()).collect();
    let mut outcomes = BTreeMap::new();
    for r in records {
        *outcomes.entry(r.outcome.to_string()).or_insert(0) += 1;
    }
    SkillRollouts {
        episodes: records.len(),
        scored: scored.len(),
        reward_mean: mean(scored.iter().filter_map(|r| r.reward)),
        success_rate: mean(
            scored
                .iter()
                .map(|r| f64::from(u8::from(r.success == Some(true)))),
        ),
        mean_steps: mean(records.iter().map(|r| r.steps as f64)),
        mean_completion_tokens: mean(records.iter().map(|r| {
            r.trajectory
                .as_ref()
                .map_or(0.0, |t| t.usage.completion_tokens as f64)
        })),
        outcomes,
    }
}

/// What the checkpoint keeps besides the trainer's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ClientState {
    /// The next group index to draw.
    next_group: u64,
    /// Steps run (a step whose batch had nothing to train on counts, but does not update).
    #[serde(default)]
    iterations: Option<u64>,
}

/// Runs (or, with `resume`, continues) a training run in `out`.
pub async fn run_training(
    config: &RunConfig,
    rollout: Rollout,
    instances: Vec<Instance>,
    out: &Path,
    resume: bool,
    on_event: &(dyn Fn(TrainEvent) + Send + Sync),
) -> Result<Vec<StepRecord>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let config_path = out.join("config.json");
    std::fs::write(
        &config_path,
        serde_json::to_vec_pretty(config).expect("configs serialise"),
    )
    .map_err(|e| Error::io(&config_path, e))?;
    let mixture = Mixture::new(&instances, &config.mixture, config.seed).map_err(|message| {
        Error::Config {
            path: config_path.clone(),
            message,
        }
    })?;
    let device = device_of(&config.device)?;
    let checkpoint_dir = out.join("checkpoint");
    let (trainer, client) = if resume && train::checkpoint::has_checkpoint(&checkpoint_dir)? {
        let (trainer, state) = Trainer::resume(&checkpoint_dir, &device)?;
        // A damaged run state is an error: defaulting it would draw the first groups again.
        let client: ClientState =
            serde_json::from_value(state).map_err(|e| train::Error::Checkpoint {
                path: checkpoint_dir.clone(),
                message: format!("the run's state (next group, iterations): {e}"),
            })?;
        (trainer, client)
    } else {
        let mut train_config = config.train.clone();
        train_config.schedule.total_steps = config.steps;
        (
            Trainer::new(&config.model, train_config, &device)?,
            ClientState::default(),
        )
    };
    let target = match &config.policy {
        PolicyConfig::Local => Target::Local(engine::load_local(
            &config.model,
            &engine::OpenOptions {
                device: device.clone(),
                seed: config.seed,
                ..engine::OpenOptions::default()
            },
        )?),
        PolicyConfig::Openai {
            endpoints,
            model,
            reload_url,
            reload_body,
        } => Target::Remote {
            policy: Arc::new(
                OpenAiPolicy::new(OpenAiConfig::new(endpoints.clone(), model.clone()))
                    .map_err(|e| Error::Sync(e.to_string()))?,
            ),
            reload_url: reload_url.clone(),
            reload_body: reload_body.clone(),
            version: Arc::new(AtomicU64::new(0)),
            weights_dir: out.join("weights"),
        },
    };
    if trainer.weight_version() > 0 || resume {
        target.sync(&trainer).await?;
    }
    let mut iteration = client.iterations.unwrap_or(trainer.step_count());
    on_event(TrainEvent::Started {
        from_step: iteration,
        steps: config.steps,
    });
    if iteration >= config.steps {
        return Ok(Vec::new());
    }

    let mut settings = rollout.settings().clone();
    settings.token_trace = true;
    settings.sampling.temperature = config.rollout.temperature;
    settings.sampling.top_p = config.rollout.top_p;
    settings.sampling.max_tokens = config.rollout.max_tokens;
    let rollout = rollout.with_settings(settings);

    let (rollouts_log, _) =
        JsonlWriter::open(&out.join("rollouts.jsonl"), WriterConfig::default())?;
    let rollouts_log = Arc::new(rollouts_log.spawn());
    // Workers: draw groups in order, run them, send them; never more than `ahead` groups are
    // running or waiting to be trained on.
    let ahead =
        (config.rollout.max_staleness as usize + 1) * config.rollout.groups_per_step as usize;
    let slots = Arc::new(Semaphore::new(ahead));
    let episodes = Arc::new(Semaphore::new(config.rollout.concurrency));
    let (groups_tx, mut groups_rx) =
        mpsc::unbounded_channel::<std::result::Result<Group, String>>();
    let instances = Arc::new(instances);
    let producer = {
        let slots = slots.clone();
        let target = target.clone();
        let instances = instances.clone();
        let mixture = mixture.clone();
        let rollout = rollout.clone();
        let group_size = config.rollout.group_size;
        let seed = config.seed;
        let mut next = client.next_group;
        let log = rollouts_log.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let index = next;
                next += 1;
                let instance_index = mixture.draw(index);
                let version = target.version();
                let policy = target.policy();
                let (rollout, instances, episodes, tx, log) = (
                    rollout.clone(),
                    instances.clone(),
                    episodes.clone(),
                    groups_tx.clone(),
                    log.clone(),
                );
                tokio::spawn(async move {
                    let instance = &instances[instance_index];
                    let mut runs = tokio::task::JoinSet::new();
                    for sample in 0..group_size {
                        let (rollout, policy, episodes, instance) = (
                            rollout.clone(),
                            policy.clone(),
                            episodes.clone(),
                            instance.clone(),
                        );
                        let episode_seed = policy::derive_seed(seed, &[index, sample as u64]);
                        let log = log.clone();
                        runs.spawn(async move {
                            let _permit = episodes.acquire_owned().await.expect("semaphore open");
                            let record = rollout
                                .run(policy.as_ref(), &instance, sample, episode_seed)
                                .await?;
                            let line = RolloutLine {
                                group: index,
                                weight_version: version,
                                record,
                            };
                            log.append(&line).await?;
                            Ok::<EpisodeRecord, Error>(line.record)
                        });
                    }
                    let mut records = Vec::new();
                    let mut failure = None;
                    while let Some(joined) = runs.join_next().await {
                        match joined {
                            Ok(Ok(record)) => records.push(record),
                            Ok(Err(e)) => failure = Some(e.to_string()),
                            Err(e) => failure = Some(e.to_string()),
                        }
                    }
                    records.sort_by_key(|r| r.sample);
                    let message = match failure {
                        Some(message) => Err(message),
                        None => Ok(Group {
                            index,
                            instance: instance_index,
                            version,
                            records,
                        }),
                    };
                    // The slot is freed when the optimiser takes the group (`add_permits`).
                    permit.forget();
                    let _ = tx.send(message);
                });
            }
        })
    };

    let (mut metrics_log, _) =
        JsonlWriter::open(&out.join("metrics.jsonl"), WriterConfig::default())?;
    let mut history = Vec::new();
    let mut consumed_max = client.next_group;
    let mut slot = Some(trainer);
    let result: Result<()> = async {
        loop {
            let trainer = slot.as_ref().expect("the trainer is back after each step");
            if iteration >= config.steps {
                break;
            }
            let step = iteration;
            let waited = Instant::now();
            let mut fresh: Vec<Group> = Vec::new();
            let mut dropped_groups = Vec::new();
            let mut staleness = Vec::new();
            let mut uniform_groups = Vec::new();
            let mut taken = 0usize;
            let refill_cap = config.rollout.groups_per_step as usize * 4;
            while fresh.len() < config.rollout.groups_per_step as usize {
                let group = groups_rx
                    .recv()
                    .await
                    .ok_or_else(|| Error::Rollout("the workers are gone".into()))?
                    .map_err(Error::Rollout)?;
                slots.add_permits(1);
                consumed_max = consumed_max.max(group.index + 1);
                let behind = trainer.weight_version().saturating_sub(group.version);
                let is_stale = behind > config.rollout.max_staleness;
                taken += 1;
                if is_stale {
                    dropped_groups.push(group.index);
                } else if config.rollout.refill_zero_variance
                    && !has_variance(&group)
                    && taken < refill_cap
                {
                    // Refill: a group whose rewards are all equal teaches nothing; draw another.
                    uniform_groups.push(group.index);
                } else {
                    staleness.push(behind);
                    fresh.push(group);
                }
            }
            rollouts_log.sync().await?;
            let rollout_seconds_waited = waited.elapsed().as_secs_f64();
            let mut samples = Vec::new();
            let mut by_skill: BTreeMap<String, Vec<&EpisodeRecord>> = BTreeMap::new();
            for group in &fresh {
                let skill = instances[group.instance].skill().name().to_string();
                for record in &group.records {
                    by_skill.entry(skill.clone()).or_default().push(record);
                    let (Some(reward), Some(trajectory)) = (record.reward, &record.trajectory)
                    else {
                        continue;
                    };
                    if trajectory.token_segments.is_empty() {
                        continue;
                    }
                    samples.push(Sample::from_trajectory(
                        trajectory,
                        reward,
                        format!("g{}", group.index),
                        skill.clone(),
                    ));
                }
            }
            let mut moved = slot.take().expect("the trainer is here");
            let (back, metrics) = tokio::task::spawn_blocking(move || {
                let metrics = moved.step(&samples);
                (moved, metrics)
            })
            .await
            .map_err(|e| Error::Rollout(format!("the optimiser step panicked: {e}")))?;
            let trainer = slot.insert(back);
            let metrics = metrics?;
            if metrics.updated {
                target.sync(trainer).await?;
            }
            let record = StepRecord {
                step,
                groups: fresh.len(),
                trained_groups: fresh.iter().map(|g| g.index).collect(),
                stale_groups_dropped: dropped_groups.len(),
                dropped_groups,
                refilled_groups: uniform_groups,
                staleness_max: staleness.iter().copied().max().unwrap_or(0),
                staleness_mean: mean(staleness.iter().map(|&s| s as f64)),
                rollout_seconds_waited,
                per_skill: by_skill
                    .iter()
                    .map(|(skill, records)| (skill.clone(), skill_rollouts(records)))
                    .collect(),
                trainer: metrics,
            };
            metrics_log.append(&record)?;
            metrics_log.sync()?;
            iteration += 1;
            if iteration % config.checkpoint_every == 0 || iteration >= config.steps {
                let state = serde_json::to_value(ClientState {
                    next_group: consumed_max,
                    iterations: Some(iteration),
                })
                .expect("state serialises");
                trainer.save_checkpoint(&checkpoint_dir, &state)?;
            }
            on_event(TrainEvent::Step(Box::new(record.clone())));
            history.push(record);
        }
        Ok(())
    }
    .await;
    producer.abort();
    slots.close();
    rollouts_log.sync().await?;
    result?;
    let trainer = slot.expect("the trainer is back");
    trainer.save_model(&out.join("model"))?;
    write_report(out, &read_history(out)?)?;
    Ok(history)
}

/// Every step record of a run directory.
pub fn read_history(out: &Path) -> Result<Vec<StepRecord>> {
    Ok(agent::read_jsonl::<StepRecord>(&out.join("metrics.jsonl"))?.records)
}

/// Training curves per skill, as charts for the HTML report.
pub fn charts(history: &[StepRecord]) -> Vec<eval::report::Chart> {
    let mut skills: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for record in history {
        for (skill, figures) in &record.per_skill {
            skills
                .entry(skill.as_str())
                .or_default()
                .push((record.step as f64, figures.reward_mean));
        }
    }
    let series = |f: &dyn Fn(&StepRecord) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|r| (r.step as f64, f(r))).collect()
    };
    vec![
        eval::report::Chart {
            title: "Rollout reward per skill".into(),
            x_label: "step".into(),
            y_label: "mean reward".into(),
            series: skills
                .into_iter()
                .map(|(s, p)| (s.to_string(), p))
                .collect(),
        },
        eval::report::Chart {
            title: "Optimiser".into(),
            x_label: "step".into(),
            y_label: "value".into(),
            series: vec![
                ("loss".into(), series(&|r| r.trainer.loss)),
                ("grad norm".into(), series(&|r| r.trainer.grad_norm)),
                ("clip fraction".into(), series(&|r| r.trainer.clip_fraction)),
                ("KL".into(), series(&|r| r.trainer.kl)),
            ],
        },
        eval::report::Chart {
            title: "Staleness".into(),
            x_label: "step".into(),
            y_label: "versions behind".into(),
            series: vec![
                ("max".into(), series(&|r| r.staleness_max as f64)),
                ("mean".into(), series(&|r| r.staleness_mean)),
                (
                    "stale groups dropped".into(),
                    series(&|r| r.stale_groups_dropped as f64),
                ),
            ],
        },
    ]
}

fn write_report(out: &Path, history: &[StepRecord]) -> Result<()> {
    let outcomes: usize = history
        .iter()
        .flat_map(|r| r.per_skill.values())
        .map(|s| {
            s.outcomes
                .get(OutcomeKind::Submitted.as_str())
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let html = eval::report::Report {
        title: "atomskill training".into(),
        subtitle: format!("{} steps, {} submitted episodes", history.len(), outcomes),
        runs: Vec::new(),
        charts: charts(history),
    }
    .to_html()?;
    std::fs::write(out.join("report.html"), html).map_err(|e| Error::io(out.join("report.html"), e))
}
