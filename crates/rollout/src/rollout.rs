//! One episode of one instance, end to end: a fresh sandbox episode of the pristine snapshot
//! with the instance's setup applied, the agent loop, the answer captured (submit arguments and
//! the final contents of every changed file), and the verdict of the instance's verifier.
//!
//! Infrastructure failures (the policy or the sandbox broke, grading could not run) give a
//! record without a reward: they are never scored, and a rerun tries them again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::{AgentSettings, OutcomeKind, Trajectory};
use policy::Policy;
use sandbox::{Entry, Sandbox, WorkspaceDiff};
use serde::{Deserialize, Serialize};
use tasks::{Answer, FileEdits, Grader, Instance, Skill, Verdict};

use crate::error::Result;
use crate::projects::Projects;

/// What one episode came to. Stored as JSONL lines that carry the writer's `schema_version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRecord {
    pub instance_id: String,
    pub skill: Skill,
    /// Which of the instance's k samples.
    pub sample: u32,
    pub seed: u64,
    pub outcome: OutcomeKind,
    /// `None` when the episode says nothing about the model (see [`EpisodeRecord::error`]).
    pub reward: Option<f64>,
    /// The reward is the skill's top reward.
    pub success: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Why there is no reward: an infrastructure failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files the answer changed, relative to the pristine snapshot (setup included).
    pub changed_files: Vec<String>,
    /// Changed files left out of the answer: caches, binary files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<String>,
    pub steps: u32,
    pub tokens: u64,
    pub agent_seconds: f64,
    pub grade_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectory: Option<Trajectory>,
}

impl EpisodeRecord {
    /// Whether the record counts (a rerun keeps it rather than trying again).
    pub fn is_scored(&self) -> bool {
        self.reward.is_some()
    }
}

/// Runs episodes of instances of known projects.
#[derive(Clone)]
pub struct Rollout {
    sandbox: Arc<Sandbox>,
    projects: Arc<Projects>,
    grader: Arc<Grader>,
    settings: Arc<AgentSettings>,
}

impl Rollout {
    /// `settings.prompts` must hold the per-skill templates ([`crate::task::add_templates`]).
    pub fn new(
        sandbox: Arc<Sandbox>,
        projects: Projects,
        settings: AgentSettings,
        test_timeout: Duration,
    ) -> Rollout {
        let grader = projects.grader(sandbox.clone(), test_timeout);
        Rollout {
            sandbox,
            projects: Arc::new(projects),
            grader: Arc::new(grader),
            settings: Arc::new(settings),
        }
    }

    /// The same projects and grader, other agent settings.
    pub fn with_settings(&self, settings: AgentSettings) -> Rollout {
        Rollout {
            settings: Arc::new(settings),
            ..self.clone()
        }
    }

    pub fn projects(&self) -> &Projects {
        &self.projects
    }

    pub fn settings(&self) -> &AgentSettings {
        &self.settings
    }

    /// One episode of `instance` with `policy`. `Err` only for a broken prompt template;
    /// everything else is in the record.
    pub async fn run(
        &self,
        policy: &dyn Policy,
        instance: &Instance,
        sample: u32,
        seed: u64,
    ) -> Result<EpisodeRecord> {
        let mut record = EpisodeRecord {
            instance_id: instance.instance_id.clone(),
            skill: instance.skill(),
            sample,
            seed,
            outcome: OutcomeKind::SandboxError,
            reward: None,
            success: None,
            verdict: None,
            error: None,
            changed_files: Vec::new(),
            skipped_files: Vec::new(),
            steps: 0,
            tokens: 0,
            agent_seconds: 0.0,
            grade_seconds: 0.0,
            trajectory: None,
        };
        let Some(project) = self.projects.get(&instance.project.snapshot) else {
            record.error = Some(format!(
                "no project with snapshot {} was loaded",
                instance.project.snapshot
            ));
            return Ok(record);
        };
        let started = Instant::now();
        let episode = match self.sandbox.create_episode(&project.snapshot) {
            Ok(episode) => episode,
            Err(error) => {
                record.error = Some(format!("creating the episode: {error}"));
                return Ok(record);
            }
        };
        if let Err(error) = instance.setup.apply(&episode).await {
            record.error = Some(format!("applying the instance's setup: {error}"));
            let _ = episode.destroy();
            return Ok(record);
        }
        let env = project
            .runner
            .prepared()
            .run_env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let task = match crate::task::agent_task(instance, &self.settings.prompts, env) {
            Ok(task) => task,
            Err(error) => {
                let _ = episode.destroy();
                return Err(error);
            }
        };
        let trajectory =
            match agent::run_episode(policy, &episode, &task, &self.settings, seed).await {
                Ok(trajectory) => trajectory,
                Err(error) => {
                    let _ = episode.destroy();
                    return Err(error.into());
                }
            };
        record.agent_seconds = started.elapsed().as_secs_f64();
        record.outcome = trajectory.outcome.kind();
        record.steps = trajectory.steps.len() as u32;
        record.tokens = trajectory.usage.prompt_tokens + trajectory.usage.completion_tokens;
        let diff = episode.diff();
        let _ = episode.destroy();
        if trajectory.outcome.is_infrastructure_failure() {
            record.error = Some(format!("the episode ended with {}", record.outcome));
            record.trajectory = Some(trajectory);
            return Ok(record);
        }
        let diff = match diff {
            Ok(diff) => diff,
            Err(error) => {
                record.error = Some(format!("reading the workspace's changes: {error}"));
                record.trajectory = Some(trajectory);
                return Ok(record);
            }
        };
        let (mut files, skipped) = answer_files(&diff);
        // A file the setup changed and the agent put back as it was in the pristine snapshot
        // is not in the diff, but it is part of the answer: the grader applies the setup first.
        for path in instance.setup.paths() {
            if !files.0.contains_key(path) && !diff.changes.iter().any(|c| &c.path == path) {
                let pristine = self.projects.pristine(&instance.project.snapshot, path);
                files.0.insert(path.clone(), pristine);
            }
        }
        record.changed_files = files.paths().cloned().collect();
        record.skipped_files = skipped;
        let answer = Answer {
            submission: trajectory.outcome.submitted().cloned().unwrap_or_default(),
            files,
        };
        let graded = Instant::now();
        match self.grader.grade(instance, &answer).await {
            Ok(verdict) => {
                let (_, top) = instance.skill().reward_range();
                record.reward = Some(verdict.reward);
                record.success = Some(verdict.reward >= top);
                record.verdict = Some(verdict);
            }
            Err(error) => record.error = Some(format!("grading: {error}")),
        }
        record.grade_seconds = graded.elapsed().as_secs_f64();
        record.trajectory = Some(trajectory);
        Ok(record)
    }
}

/// Paths never part of an answer: interpreter and tool caches, atomskill's own files.
fn is_cache_path(path: &str) -> bool {
    path.ends_with(".pyc")
        || path.starts_with(".atomskill/")
        || path
            .split('/')
            .any(|part| matches!(part, "__pycache__" | ".pytest_cache" | ".mypy_cache"))
}

/// The final contents of every changed text file; the paths of changed files left out.
pub fn answer_files(diff: &WorkspaceDiff) -> (FileEdits, Vec<String>) {
    let mut files = FileEdits::new();
    let mut skipped = Vec::new();
    for change in &diff.changes {
        if is_cache_path(&change.path) {
            continue;
        }
        match &change.new {
            None => files = files.delete(change.path.clone()),
            Some(Entry::File { content, .. }) => match String::from_utf8(content.clone()) {
                Ok(text) => files = files.write(change.path.clone(), text),
                Err(_) => skipped.push(change.path.clone()),
            },
            Some(_) => skipped.push(change.path.clone()),
        }
    }
    (files, skipped)
}
