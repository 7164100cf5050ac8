//! Supervised fine-tuning data and loop: trajectory files in, sequences with a loss mask that
//! covers only what the assistant wrote, one AdamW step per token budget, resumable.
//!
//! Records (JSONL, one per line, as written by `trajectory::JsonlWriter`): either a bare
//! `trajectory::Trajectory`, or an evaluation record `{"trajectory": {...}, "verdict": {"reward": R,
//! ...}, ...}`. A trajectory is kept if its outcome is `submitted` and, when the record carries a
//! reward, that reward is at least `min_reward` (the top reward, 1, by default).
//!
//! Tokens: a trajectory with token segments (an in-process or token-returning policy) is used
//! as recorded, with its loss mask. One without (an HTTP policy that returned only text) is
//! re-rendered with the model's chat template, and only the assistant turns are trained.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use candle_core::Device;
use model::chat::ChatTemplate;
use model::tokenizer::Tokenizer;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use trajectory::{Outcome, Trajectory};

use crate::batch::Sequence;
use crate::config::TrainConfig;
use crate::samples::StepMetrics;
use crate::trainer::Trainer;
use crate::{Error, Result};

/// A trajectory and the reward its record carried, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct SftRecord {
    pub trajectory: Trajectory,
    pub reward: Option<f64>,
}

/// The `.jsonl` files of `path` (a file, or every `*.jsonl` under a directory, sorted).
pub fn record_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.exists() {
        return Err(Error::Input(format!(
            "{} does not exist (expected a .jsonl file or a directory of them)",
            path.display()
        )));
    }
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let p = entry.map_err(|e| Error::io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "jsonl") {
                files.push(p);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!(
            "no .jsonl files under {}",
            path.display()
        )));
    }
    Ok(files)
}

/// Every record of the files at `path`, bare or wrapped.
pub fn read_records(path: &Path) -> Result<Vec<SftRecord>> {
    let mut records = Vec::new();
    for file in record_files(path)? {
        let report = trajectory::read_jsonl::<Json>(&file)?;
        if let Some(tail) = report.truncated_tail {
            tracing::warn!(file = %file.display(), line = tail.line, "ignoring a truncated last line");
        }
        for (i, value) in report.records.into_iter().enumerate() {
            records.push(parse_record(value).map_err(|message| {
                Error::Input(format!("{} record {}: {message}", file.display(), i + 1))
            })?);
        }
    }
    Ok(records)
}

fn parse_record(mut value: Json) -> std::result::Result<SftRecord, String> {
    let wrapped = value.get("trajectory").is_some_and(Json::is_object);
    if !wrapped {
        let trajectory = serde_json::from_value(value).map_err(|e| e.to_string())?;
        return Ok(SftRecord {
            trajectory,
            reward: None,
        });
    }
    let reward = value
        .get("verdict")
        .and_then(|v| v.get("reward"))
        .or_else(|| value.get("reward"))
        .and_then(Json::as_f64);
    let trajectory = serde_json::from_value(value["trajectory"].take())
        .map_err(|e| format!("field `trajectory`: {e}"))?;
    Ok(SftRecord { trajectory, reward })
}

/// Which trajectories are kept, and why the others were not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    #[serde(skip)]
    pub kept: Vec<Trajectory>,
    pub n_records: usize,
    pub n_kept: usize,
    pub n_not_submitted: usize,
    pub n_below_min_reward: usize,
    /// Kept records that carried no reward (bare trajectories: only the outcome is checked).
    pub n_without_reward: usize,
}

/// Keeps submitted trajectories whose reward (when known) is at least `min_reward`.
pub fn select(records: Vec<SftRecord>, min_reward: f64) -> Selection {
    let mut s = Selection {
        n_records: records.len(),
        ..Selection::default()
    };
    for r in records {
        if !matches!(r.trajectory.outcome, Outcome::Submitted { .. }) {
            s.n_not_submitted += 1;
            continue;
        }
        match r.reward {
            Some(reward) if reward < min_reward => s.n_below_min_reward += 1,
            reward => {
                s.n_without_reward += usize::from(reward.is_none());
                s.kept.push(r.trajectory);
            }
        }
    }
    s.n_kept = s.kept.len();
    s
}

/// The model's tokenizer and chat template, for trajectories without token ids.
pub struct Renderer {
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl Renderer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Ok(Self {
            tokenizer: Tokenizer::from_dir(dir)?,
            template: ChatTemplate::from_dir(dir)?,
        })
    }

    /// The conversation of `trajectory` as one sequence, trained only on assistant turns. Each
    /// assistant turn's span is where the rendering of the conversation up to it (with the
    /// generation prompt) ends and the rendering including it ends, minus trailing whitespace
    /// (the model stops at its end-of-turn token). Errors if the template does not render the
    /// conversation prefix by prefix.
    pub fn sequence(&self, trajectory: &Trajectory) -> Result<Sequence> {
        let messages = template_messages(trajectory)?;
        let tools: Vec<Json> = trajectory
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters}})
            })
            .collect();
        let tools = (!tools.is_empty()).then_some(tools.as_slice());
        let extra = serde_json::Map::new();
        let render = |upto: usize, generation_prompt: bool| {
            self.template
                .render(&messages[..upto], tools, generation_prompt, &extra)
        };
        let full = render(messages.len(), false)?;
        let mut spans = Vec::new();
        for (i, m) in trajectory.messages.iter().enumerate() {
            if m.role != trajectory::Role::Assistant {
                continue;
            }
            let before = render(i, true)?;
            let through = render(i + 1, false)?;
            if !through.starts_with(&before) || !full.starts_with(&through) {
                return Err(Error::Input(format!(
                    "trajectory {}: the chat template does not render message {i} as a continuation of the ones before",
                    trajectory.episode_id
                )));
            }
            let end = before.len() + through[before.len()..].trim_end().len();
            spans.push((before.len(), end));
        }
        let mut tokens = Vec::new();
        let mut mask = Vec::new();
        let mut at = 0;
        let mut push = |text: &str, trained: u8, tokens: &mut Vec<u32>| -> Result<()> {
            let ids = self.tokenizer.encode(text)?;
            mask.extend(std::iter::repeat_n(trained, ids.len()));
            tokens.extend(ids);
            Ok(())
        };
        for (start, end) in spans {
            push(&full[at..start], 0, &mut tokens)?;
            push(&full[start..end], 1, &mut tokens)?;
            at = end;
        }
        push(&full[at..], 0, &mut tokens)?;
        let n = tokens.len();
        Ok(Sequence {
            tokens,
            loss_mask: mask,
            rollout_logprobs: vec![0.0; n],
            old_logprobs: None,
            advantage: 0.0,
            sample: 0,
        })
    }
}

/// Messages as chat templates expect them (tool-call arguments as objects, as vLLM passes them).
fn template_messages(trajectory: &Trajectory) -> Result<Vec<Json>> {
    trajectory
        .messages
        .iter()
        .map(|m| {
            let mut value = serde_json::to_value(m)
                .map_err(|e| Error::Input(format!("trajectory {}: {e}", trajectory.episode_id)))?;
            if let Some(Json::Array(calls)) = value.get_mut("tool_calls") {
                for call in calls {
                    if let Some(f) = call.get_mut("function").and_then(Json::as_object_mut) {
                        if let Some(Json::String(text)) = f.get("arguments") {
                            if let Ok(parsed) = serde_json::from_str::<Json>(text) {
                                f.insert("arguments".into(), parsed);
                            }
                        }
                    }
                }
            }
            Ok(value)
        })
        .collect()
}

/// The training sequences of the kept trajectories: recorded token segments where present,
/// else re-rendered (needs `renderer`). Trajectories that cannot be rendered are skipped and
/// counted.
pub fn sequences(
    trajectories: &[Trajectory],
    renderer: Option<&Renderer>,
) -> Result<(Vec<Sequence>, usize)> {
    let mut out = Vec::new();
    let mut n_skipped = 0;
    for (i, t) in trajectories.iter().enumerate() {
        if !t.token_segments.is_empty() {
            for s in &t.token_segments {
                out.push(Sequence {
                    tokens: s.token_ids.clone(),
                    loss_mask: s.loss_mask.clone(),
                    rollout_logprobs: s.logprobs.clone(),
                    old_logprobs: None,
                    advantage: 0.0,
                    sample: i,
                });
            }
            continue;
        }
        let renderer = renderer.ok_or_else(|| {
            Error::Input(format!(
                "trajectory {} has no token segments and no tokenizer was given to re-render it",
                t.episode_id
            ))
        })?;
        match renderer.sequence(t) {
            Ok(mut s) => {
                s.sample = i;
                out.push(s);
            }
            Err(e) => {
                tracing::warn!("skipping: {e}");
                n_skipped += 1;
            }
        }
    }
    Ok((out, n_skipped))
}

/// Marks every token of each sequence for training (the first is never a target): the prompt,
/// tool output and end-of-turn tokens as well as the assistant's turns.
pub fn train_on_every_token(sequences: &mut [Sequence]) {
    for s in sequences {
        s.loss_mask.iter_mut().for_each(|m| *m = 1);
    }
}

/// SFT data ready to train on, and what was kept and why ([`DataSummary`], `data.json`).
#[derive(Debug, Clone)]
pub struct PreparedData {
    pub sequences: Vec<Sequence>,
    pub summary: DataSummary,
}

/// What `data.json` records about the data of an SFT run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    #[serde(flatten)]
    pub selection: Selection,
    pub min_reward: f64,
    pub n_sequences: usize,
    pub n_trained_tokens: usize,
    /// Trajectories skipped because the chat template is not prefix-stable on them.
    pub n_render_skipped: usize,
}

impl DataSummary {
    /// Writes `out/data.json` (atomically).
    pub fn write(&self, out: &Path) -> Result<()> {
        let path = out.join("data.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::json(&path, e))?;
        trajectory::write_atomic(&path, text.as_bytes()).map_err(|e| Error::io(&path, e))
    }
}

/// Reads the trajectories of `trajectories` (a file or a directory of them), keeps the
/// submitted ones whose reward is at least `min_reward`, and turns them into sequences:
/// recorded token segments where present, else rendered with `model_dir`'s tokenizer and chat
/// template. With `train_on_prompt`, every token is trained on. No sequences is an error.
pub fn prepare(
    trajectories: &Path,
    model_dir: &Path,
    min_reward: f64,
    train_on_prompt: bool,
) -> Result<PreparedData> {
    let records = read_records(trajectories)?;
    let selection = select(records, min_reward);
    let renderer = if selection.kept.iter().any(|t| t.token_segments.is_empty()) {
        Some(Renderer::from_dir(model_dir)?)
    } else {
        None
    };
    let (mut sequences, n_render_skipped) = self::sequences(&selection.kept, renderer.as_ref())?;
    if train_on_prompt {
        train_on_every_token(&mut sequences);
    }
    if sequences.is_empty() {
        return Err(Error::Input(format!(
            "no training sequences ({} of {} trajectories kept, {n_render_skipped} could not be rendered)",
            selection.n_kept, selection.n_records
        )));
    }
    let n_trained_tokens = sequences.iter().map(|s| s.n_trained()).sum();
    Ok(PreparedData {
        summary: DataSummary {
            min_reward,
            n_sequences: sequences.len(),
            n_trained_tokens,
            n_render_skipped,
            selection,
        },
        sequences,
    })
}

/// Where the SFT data order stands: epoch `epoch` is the permutation seeded by
/// `derive_seed(seed, epoch)`, and `position` sequences of it have been used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub position: usize,
}

/// A seeded permutation of `0..n` (Fisher-Yates over ChaCha8).
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The next batch: sequences in epoch order until their real tokens reach `batch_tokens`
/// (at least one sequence), moving on to the next epoch's permutation as needed.
pub fn next_batch(
    n_sequences: usize,
    lengths: &dyn Fn(usize) -> usize,
    cursor: Cursor,
    seed: u64,
    batch_tokens: usize,
) -> (Vec<usize>, Cursor) {
    let mut cursor = cursor;
    let mut batch = Vec::new();
    let mut tokens = 0;
    let mut order = permutation(n_sequences, trajectory::derive_seed(seed, &[cursor.epoch]));
    while n_sequences > 0 && (batch.is_empty() || tokens < batch_tokens) {
        if cursor.position >= n_sequences {
            cursor = Cursor {
                epoch: cursor.epoch + 1,
                position: 0,
            };
            order = permutation(n_sequences, trajectory::derive_seed(seed, &[cursor.epoch]));
        }
        let i = order[cursor.position];
        tokens += lengths(i);
        batch.push(i);
        cursor.position += 1;
        if batch.len() >= n_sequences && tokens < batch_tokens {
            // Smaller data than one batch: one pass is a batch.
            break;
        }
    }
    (batch, cursor)
}

/// The SFT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftOptions {
    pub steps: u64,
    /// Real tokens per optimiser step (at least one sequence).
    pub batch_tokens: usize,
    pub seed: u64,
    /// Write `checkpoint/` every this many steps (and at the end).
    pub checkpoint_every: u64,
    pub config: TrainConfig,
}

/// What the caller restores on resume (saved in the checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SftState {
    cursor: Cursor,
    seed: u64,
    batch_tokens: usize,
    n_sequences: usize,
}

/// Output layout under `out`: `checkpoint/` (resumable, replaced atomically), `model/` (the final
/// weights, HF layout), `metrics.jsonl` (one [`StepMetrics`] per line).
pub fn run(
    model_dir: &Path,
    out: &Path,
    data: &[Sequence],
    options: &SftOptions,
    resume: bool,
    device: &Device,
    mut on_step: impl FnMut(&StepMetrics),
) -> Result<Trainer> {
    if data.is_empty() {
        return Err(Error::Input("no training sequences".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let checkpoint = out.join("checkpoint");
    let metrics_path = out.join("metrics.jsonl");
    let (mut trainer, mut cursor) = if resume && crate::checkpoint::has_checkpoint(&checkpoint)? {
        let (trainer, client) = Trainer::resume(&checkpoint, device)?;
        let state: SftState = serde_json::from_value(client)
            .map_err(|e| Error::checkpoint(&checkpoint, format!("SFT state: {e}")))?;
        if state.n_sequences != data.len() || state.seed != options.seed {
            return Err(Error::checkpoint(
                &checkpoint,
                format!(
                    "saved for {} sequences with seed {}, resumed with {} and seed {}: resume with the same data and seed",
                    state.n_sequences, state.seed, data.len(), options.seed
                ),
            ));
        }
        keep_metrics_before(&metrics_path, trainer.step_count())?;
        (trainer, state.cursor)
    } else {
        if metrics_path.exists() {
            std::fs::remove_file(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
        }
        (
            Trainer::new(model_dir, options.config.clone(), device)?,
            Cursor::default(),
        )
    };
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let lengths = |i: usize| data[i].tokens.len();
    while trainer.step_count() < options.steps {
        let (indices, next) = next_batch(
            data.len(),
            &lengths,
            cursor,
            options.seed,
            options.batch_tokens,
        );
        let batch: Vec<Sequence> = indices.iter().map(|&i| data[i].clone()).collect();
        let metrics = trainer.sft_step(&batch)?;
        cursor = next;
        let line = serde_json::to_string(&metrics).map_err(|e| Error::json(&metrics_path, e))?;
        metrics_file
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::io(&metrics_path, e))?;
        on_step(&metrics);
        let step = trainer.step_count();
        if step % options.checkpoint_every.max(1) == 0 || step == options.steps {
            metrics_file
                .sync_data()
                .map_err(|e| Error::io(&metrics_path, e))?;
            let state = SftState {
                cursor,
                seed: options.seed,
                batch_tokens: options.batch_tokens,
                n_sequences: data.len(),
            };
            let state = serde_json::to_value(&state).map_err(|e| Error::json(&checkpoint, e))?;
            trainer.save_checkpoint(&checkpoint, &state)?;
        }
    }
    trainer.save_model(&out.join("model"))?;
    Ok(trainer)
}

/// Drops metric lines of steps at or after `step` (written after the checkpoint a run resumes
/// from, so they will be written again).
fn keep_metrics_before(path: &Path, step: u64) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<Json>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(Json::as_u64))
                .is_some_and(|s| s < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_seeded_epochs_and_fill_the_budget() {
        let lengths = |i: usize| [5, 3, 8, 2][i];
        let (a, c1) = next_batch(4, &lengths, Cursor::default(), 9, 9);
        let (b, c2) = next_batch(4, &lengths, c1, 9, 9);
        let first = permutation(4, trajectory::derive_seed(9, &[0]));
        // The first batch is a prefix of epoch 0's order reaching 9 tokens.
        assert_eq!(a, first[..a.len()]);
        assert!(a.iter().map(|&i| lengths(i)).sum::<usize>() >= 9);
        // Batches continue where the last stopped, into the next epoch.
        let mut seen = a.clone();
        seen.extend(&b);
        assert_eq!(seen[..4.min(seen.len())].len(), 4.min(seen.len()));
        assert!(c2.epoch >= 1 || c2.position > c1.position);
        // Same seed and cursor, same batch.
        assert_eq!(next_batch(4, &lengths, c1, 9, 9).0, b);
        // Permutations are permutations.
        let mut p = permutation(50, 3);
        p.sort();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }
}
