//! `atomskill train --config run.toml`: every field, its default and its check. Unknown fields
//! are errors (a misspelt field must not silently keep its default).
//!
//! ```toml
//! model = "models/sft"          # the checkpoint to start from (HF layout)
//! tasks = "tasks/"              # task instances (a directory of <skill>.jsonl, or one file)
//! steps = 20                    # optimiser steps
//! seed = 0
//! checkpoint_every = 5
//! device = "cpu"                # or cuda, cuda:N (a build with the `cuda` feature)
//!
//! [mixture]                     # skill weights; empty = every skill present, equally
//! localization = 1.0
//! review = 1.0
//!
//! [rollout]
//! group_size = 4                # episodes per task: one GRPO group
//! groups_per_step = 4
//! concurrency = 4               # episodes at once
//! max_staleness = 1             # weight versions a group may lag behind the trainer
//! temperature = 1.0
//! top_p = 1.0
//! max_tokens = 256              # tokens per model reply
//! refill_zero_variance = false  # pass over all-equal-reward groups and draw more
//!
//! [agent]                       # rollout::AgentConfig; the defaults of `atomskill eval`
//! max_steps = 30
//! max_context_tokens = 16384
//! episode_timeout_seconds = 900
//! test_timeout_seconds = 300
//! tools_in_prompt = false
//! # prompts = "my-prompts/"     # templates overriding the embedded ones
//!
//! [policy]                      # where rollouts are sampled
//! kind = "local"                # the embedded model, weights swapped in after every step
//! # kind = "openai", endpoints = ["http://127.0.0.1:8000/v1"], model = "NAME",
//! # reload_url = "http://127.0.0.1:8000/update_weights_from_disk",
//! # reload_body = '{"model_path": "{model_dir}"}'
//!
//! [train]                       # train::TrainConfig: loss, optimizer, schedule, ...
//! loss = { algorithm = "grpo", kl_beta = 0.0 }
//! optimizer = { lr = 1e-5 }
//! # precision = "f32" (default) | "bf16": f32 master weights and optimiser, forward and backward
//! # in bf16 on a copy cast each micro-batch (for GPUs; with lora, the frozen base is cast
//! # once) | "f64" (tests).
//! # LoRA (absent = full fine-tuning): frozen base, trained adapters on the named layers,
//! # scaled by alpha / rank; A's initialisation comes from `seed`. No dropout (the trainer owns
//! # no randomness). Weight sync and checkpoints carry merged weights; checkpoints also hold a
//! # PEFT adapter in adapter/.
//! # lora = { rank = 8, alpha = 16.0, seed = 0, targets = ["q_proj", "k_proj", "v_proj",
//! #          "o_proj", "gate_proj", "up_proj", "down_proj"] }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tasks::Skill;

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: PathBuf,
    pub tasks: PathBuf,
    #[serde(default = "defaults::steps")]
    pub steps: u64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: u64,
    /// Where the trainer and the in-process policy run: `cpu`, `cuda` or `cuda:N` (a build
    /// with the `cuda` feature).
    #[serde(default = "defaults::device")]
    pub device: String,
    #[serde(default)]
    pub mixture: BTreeMap<Skill, f64>,
    #[serde(default)]
    pub rollout: RolloutConfig,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub train: train::TrainConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    pub group_size: u32,
    pub groups_per_step: u32,
    pub concurrency: usize,
    pub max_staleness: u64,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: Option<u32>,
    /// Pass over groups whose rewards are all equal and draw more (at most 4 × groups_per_step
    /// per step); otherwise they go to the trainer, whose `loss.zero_variance` keeps or drops
    /// them.
    pub refill_zero_variance: bool,
}

impl Default for RolloutConfig {
    fn default() -> RolloutConfig {
        RolloutConfig {
            group_size: 4,
            groups_per_step: 4,
            concurrency: 4,
            max_staleness: 1,
            temperature: 1.0,
            top_p: 1.0,
            max_tokens: Some(256),
            refill_zero_variance: false,
        }
    }
}

/// How episodes run: budgets and prompts, with the defaults every command shares.
pub use rollout::AgentConfig;

/// Where rollouts are sampled and how new weights reach it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// The embedded model in this process; weights are swapped into its engine after each step.
    #[default]
    Local,
    /// An OpenAI-compatible server (vLLM, SGLang) that returns token ids and log-probs. After
    /// each step the weights are written to `<out>/weights/` and `reload_url` is POSTed
    /// `reload_body` with `{model_dir}` replaced by that directory.
    Openai {
        endpoints: Vec<String>,
        model: String,
        reload_url: String,
        #[serde(default = "defaults::reload_body")]
        reload_body: String,
    },
}

mod defaults {
    pub fn steps() -> u64 {
        20
    }
    pub fn checkpoint_every() -> u64 {
        5
    }
    pub fn device() -> String {
        "cpu".into()
    }
    pub fn reload_body() -> String {
        r#"{"model_path": "{model_dir}"}"#.into()
    }
}

impl RunConfig {
    /// Reads and checks a config file; relative paths in it are relative to its directory.
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config = RunConfig::parse(&text).map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.model, &mut config.tasks] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> std::result::Result<RunConfig, String> {
        let config: RunConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let r = &self.rollout;
        if r.group_size < 2 {
            return Err(format!("rollout.group_size must be at least 2 (a group-relative advantage needs a group), got {}", r.group_size));
        }
        if r.groups_per_step == 0 {
            return Err("rollout.groups_per_step must be at least 1".into());
        }
        if r.concurrency == 0 {
            return Err("rollout.concurrency must be at least 1".into());
        }
        if !(r.temperature >= 0.0 && r.temperature.is_finite()) {
            return Err(format!(
                "rollout.temperature must be >= 0, got {}",
                r.temperature
            ));
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            return Err(format!("rollout.top_p must be in (0, 1], got {}", r.top_p));
        }
        if model::DeviceName::parse(&self.device).is_none() {
            return Err(format!(
                "device must be cpu, cuda or cuda:N, got `{}`",
                self.device
            ));
        }
        if self.steps == 0 {
            return Err("steps must be at least 1".into());
        }
        if self.checkpoint_every == 0 {
            return Err("checkpoint_every must be at least 1".into());
        }
        if self.agent.max_steps == 0 {
            return Err("agent.max_steps must be at least 1".into());
        }
        // Deadlines are `now + timeout`: a timeout near u64::MAX seconds would overflow them.
        const MAX_TIMEOUT_SECONDS: u64 = 30 * 24 * 3600;
        for (name, seconds) in [
            (
                "episode_timeout_seconds",
                self.agent.episode_timeout_seconds,
            ),
            ("test_timeout_seconds", self.agent.test_timeout_seconds),
        ] {
            if seconds > MAX_TIMEOUT_SECONDS {
                return Err(format!(
                    "agent.{name} must be at most {MAX_TIMEOUT_SECONDS} (30 days), got {seconds}"
                ));
            }
        }
        for (skill, w) in &self.mixture {
            if !(*w >= 0.0 && w.is_finite()) {
                return Err(format!("mixture.{} must be >= 0, got {w}", skill.name()));
            }
        }
        if let PolicyConfig::Openai {
            endpoints,
            reload_body,
            ..
        } = &self.policy
        {
            if endpoints.is_empty() {
                return Err("policy.endpoints must name at least one server".into());
            }
            if !reload_body.contains("{model_dir}") {
                return Err("policy.reload_body must contain {model_dir}".into());
            }
        }
        self.train.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "model = \"m\"\ntasks = \"t\"\n";

    #[test]
    fn configs_and_their_errors() {
        let cases: &[(&str, Option<&str>)] = &[
            (MINIMAL, None),
            ("model = \"m\"\n", Some("missing field `tasks`")),
            ("model = \"m\"\ntasks = \"t\"\nstep = 3\n", Some("unknown field `step`")),
            ("model = \"m\"\ntasks = \"t\"\n[rollout]\ngroup_size = 1\n", Some("group_size must be at least 2")),
            ("model = \"m\"\ntasks = \"t\"\n[mixture]\nreview = -1.0\n", Some("mixture.review must be >= 0")),
            ("model = \"m\"\ntasks = \"t\"\n[mixture]\nreveiw = 1.0\n", Some("reveiw")),
            ("model = \"m\"\ntasks = \"t\"\n[train]\noptimizer = { lr = -1.0 }\n", Some("optimizer.lr")),
            ("model = \"m\"\ntasks = \"t\"\n[policy]\nkind = \"openai\"\nendpoints = []\nmodel = \"x\"\nreload_url = \"u\"\n", Some("at least one server")),
            ("model = \"m\"\ntasks = \"t\"\n[policy]\nkind = \"local\"\n[rollout]\ntop_p = 0.0\n", Some("top_p")),
            ("model = \"m\"\ntasks = \"t\"\ndevice = \"gpu\"\n", Some("device must be cpu, cuda or cuda:N")),
            ("model = \"m\"\ntasks = \"t\"\n[agent]\nepisode_timeout_seconds = 9223372036854775807\n", Some("agent.episode_timeout_seconds must be at most")),
            ("model = \"m\"\ntasks = \"t\"\n[agent]\ntest_timeout_seconds = 2592001\n", Some("agent.test_timeout_seconds must be at most")),
            ("model = \"m\"\ntasks = \"t\"\n[agent]\ntest_timeout_seconds = 2592000\n", None),
            ("model = \"m\"\ntasks = \"t\"\ndevice = \"cuda:1\"\n", None),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nlora = { rank = 4, alpha = 8.0, targets = [\"q_proj\", \"v_proj\"] }\n", None),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nlora = { rank = 0 }\n", Some("lora.rank must be at least 1")),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nprecision = \"bf16\"\n", None),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nprecision = \"fp8\"\n", Some("unknown variant `fp8`")),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nprecision = \"bf16\"\nlora = { rank = 4 }\n", None),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nlora = { targets = [\"qkv\"] }\n", Some("unknown module `qkv`")),
            ("model = \"m\"\ntasks = \"t\"\n[train]\nlora = { rank = 8, dropout = 0.05 }\n", Some("unknown field `dropout`")),
        ];
        for (text, expected) in cases {
            match (RunConfig::parse(text), expected) {
                (Ok(_), None) => {}
                (Err(e), Some(needle)) => assert!(e.contains(needle), "{text:?}: {e}"),
                (got, _) => panic!("{text:?}: {got:?}, expected {expected:?}"),
            }
        }
        let config = RunConfig::parse(MINIMAL).unwrap();
        assert_eq!(config.policy, PolicyConfig::Local);
        assert_eq!(config.rollout.group_size, 4);
        assert_eq!(config.steps, 20);
        assert_eq!(config.train.lora, None);
        let lora = "model = \"m\"\ntasks = \"t\"\n[train.lora]\nrank = 4\n";
        let lora = RunConfig::parse(lora).unwrap().train.lora.unwrap();
        assert_eq!((lora.rank, lora.alpha, lora.targets.len()), (4, 16.0, 7));
    }
}
