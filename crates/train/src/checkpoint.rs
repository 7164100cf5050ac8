//! Training checkpoints and model exports, written atomically: everything goes into a hidden
//! temporary directory next to the target, every file and the directory are fsync'd, then one
//! rename publishes it. A reader therefore sees either no checkpoint or a complete one.
//!
//! Layout of a checkpoint directory (a superset of an HF model directory, so `atomskill serve
//! --model DIR` and `CausalLm::load` read it as is):
//! `config.json`, tokenizer and template files (copied from the source model),
//! `model.safetensors` (HF tensor names, the training dtype), `optimizer.safetensors`
//! (`exp_avg.NAME`, `exp_avg_sq.NAME`), `trainer_state.json` ([`TrainerState`]).
//!
//! With LoRA, `model.safetensors` holds the adapters merged into the base (so the directory
//! still loads as a plain model) and `adapter/` is a PEFT adapter directory:
//! `adapter_model.safetensors` (PEFT names, `base_model.model.<HF name>.lora_A.weight`) and
//! `adapter_config.json`. The adapter sits in a subdirectory because transformers, when peft is
//! installed, treats a model directory holding `adapter_config.json` as an adapter and loads the
//! base named in it instead of the directory's own weights. The optimiser state then holds only
//! the adapters' moments, and resuming reads the frozen base from `source_model` again.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model::decoder::DecoderSpec;
use model::lora::LoraSpec;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::trainer::Trainer;
use crate::{Error, Result};

/// Identifies `trainer_state.json` files.
pub const CHECKPOINT_FORMAT: &str = "atomskill-train-checkpoint";
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// Files of an HF model directory other than weights, copied into every export when present.
pub const MODEL_FILES: [&str; 9] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
];

/// The PEFT adapter directory inside a LoRA checkpoint or model export.
pub const ADAPTER_DIR: &str = "adapter";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: String,
    pub format_version: u32,
    /// Optimiser steps done.
    pub step: u64,
    pub weight_version: u64,
    pub config: TrainConfig,
    /// The checkpoint the run started from (the KL reference is loaded from it on resume).
    pub source_model: PathBuf,
    /// Whatever the caller must restore to continue exactly: data cursor, RNG seed and
    /// position, its own metrics.
    pub client_state: serde_json::Value,
}

impl Trainer {
    /// Writes the current weights as an HF model directory at `dir` (replacing it).
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        write_dir_atomically(dir, |tmp| self.write_model_files(tmp))
    }

    /// Writes a complete training checkpoint at `dir` (replacing it); `client_state` comes back
    /// from [`Trainer::resume`].
    pub fn save_checkpoint(&self, dir: &Path, client_state: &serde_json::Value) -> Result<()> {
        write_dir_atomically(dir, |tmp| {
            self.write_model_files(tmp)?;
            let dtype = self.config.precision.dtype();
            model::weights::save(
                &self.optimizer.state_tensors()?,
                dtype,
                &tmp.join("optimizer.safetensors"),
            )?;
            let state = TrainerState {
                format: CHECKPOINT_FORMAT.into(),
                format_version: CHECKPOINT_FORMAT_VERSION,
                step: self.step,
                weight_version: self.weight_version,
                config: self.config.clone(),
                source_model: self.source_dir.clone(),
                client_state: client_state.clone(),
            };
            let path = tmp.join("trainer_state.json");
            let text = serde_json::to_string_pretty(&state).map_err(|e| Error::json(&path, e))?;
            std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))
        })
    }

    /// Continues the run saved in `dir`: weights, optimiser moments, step and weight version
    /// exactly as they were; returns the caller's state saved with it.
    pub fn resume(dir: &Path, device: &Device) -> Result<(Trainer, serde_json::Value)> {
        let state = read_state(dir)?;
        let mut trainer = Trainer::build(
            dir,
            &state.source_model,
            state.config.clone(),
            device,
            Some(dir),
        )?;
        let path = dir.join("optimizer.safetensors");
        let tensors = candle_core::safetensors::load(&path, device)
            .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
        // Moments missing or of the wrong shape are a damaged checkpoint, named as such.
        trainer
            .optimizer
            .load_state(tensors.into_iter().collect(), state.step)
            .map_err(|e| match e {
                Error::Input(message) => Error::checkpoint(&path, message),
                other => other,
            })?;
        trainer.step = state.step;
        trainer.weight_version = state.weight_version;
        Ok((trainer, state.client_state))
    }

    fn write_model_files(&self, dir: &Path) -> Result<()> {
        let snapshot = self.weights()?;
        let tensors: BTreeMap<String, candle_core::Tensor> = snapshot.tensors.into_iter().collect();
        model::weights::save(
            &tensors,
            self.config.precision.dtype(),
            &dir.join("model.safetensors"),
        )?;
        for name in MODEL_FILES {
            let from = self.files_dir.join(name);
            if from.is_file() {
                let to = dir.join(name);
                std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
            }
        }
        if let (Some(lora), Some(adapters)) = (&self.lora, self.adapter_tensors()?) {
            let adapter_dir = dir.join(ADAPTER_DIR);
            std::fs::create_dir(&adapter_dir).map_err(|e| Error::io(&adapter_dir, e))?;
            model::weights::save(
                &adapters,
                self.config.precision.dtype(),
                &adapter_dir.join(ADAPTER_WEIGHTS),
            )?;
            let base = self.source_dir.to_string_lossy();
            let config = model::lora::peft_config(&lora.spec, &base);
            let path = adapter_dir.join(ADAPTER_CONFIG);
            let text = serde_json::to_string_pretty(&config).map_err(|e| Error::json(&path, e))?;
            std::fs::write(&path, text + "\n").map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

/// The adapters of the LoRA checkpoint in `dir` under the trainer's names (PEFT's prefix
/// removed), checked against `lora` and the model's shapes.
pub(crate) fn read_adapters(
    dir: &Path,
    decoder_spec: &DecoderSpec,
    lora: &LoraSpec,
    dtype: DType,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let adapter_dir = dir.join(ADAPTER_DIR);
    let config_path = adapter_dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(&config_path, e))?;
    let saved = model::lora::spec_of_peft_config(&config)?;
    let mut sorted = saved.targets.clone();
    sorted.sort();
    let mut wanted = lora.targets.clone();
    wanted.sort();
    if saved.rank != lora.rank || saved.alpha != lora.alpha || sorted != wanted {
        return Err(Error::checkpoint(
            &config_path,
            format!(
                "the adapter has rank {}, alpha {}, targets {:?}; the config asks for rank {}, alpha {}, targets {:?}",
                saved.rank, saved.alpha, saved.targets, lora.rank, lora.alpha, lora.targets
            ),
        ));
    }
    let path = adapter_dir.join(ADAPTER_WEIGHTS);
    let mut loaded = candle_core::safetensors::load(&path, device)
        .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
    let mut out = BTreeMap::new();
    for layer in model::lora::adapted_layers(decoder_spec, lora) {
        let shapes = [
            (layer.a_name(), [lora.rank, layer.in_dim]),
            (layer.b_name(), [layer.out_dim, lora.rank]),
        ];
        for (name, dims) in shapes {
            let peft_name = format!("{}{name}", model::lora::PEFT_PREFIX);
            let tensor = loaded
                .remove(&peft_name)
                .ok_or_else(|| Error::checkpoint(&path, format!("no tensor {peft_name}")))?;
            if tensor.dims() != dims {
                return Err(Error::checkpoint(
                    &path,
                    format!(
                        "{peft_name} has shape {:?}, expected {dims:?}",
                        tensor.dims()
                    ),
                ));
            }
            out.insert(name, tensor.to_dtype(dtype)?);
        }
    }
    if let Some(extra) = loaded.keys().next() {
        return Err(Error::checkpoint(
            &path,
            format!("unexpected tensor {extra} (not an adapter of the configured targets)"),
        ));
    }
    Ok(out)
}

/// Whether there is a checkpoint in `dir` to resume from. `Ok(false)` only when there is no
/// trace of one; a `dir` without its `trainer_state.json`, or the previous checkpoint left aside
/// by a save that was interrupted ([`write_dir_atomically`]), is an [`Error::Checkpoint`] that
/// says what to do, so that a resumed run never starts over at step 0 in silence.
pub fn has_checkpoint(dir: &Path) -> Result<bool> {
    let state = dir.join("trainer_state.json");
    if state.is_file() {
        return Ok(true);
    }
    if dir.exists() {
        return Err(Error::checkpoint(
            dir,
            "there is no readable trainer_state.json, so the checkpoint is incomplete or damaged; \
             remove the directory to start over",
        ));
    }
    if let Some(aside) = moved_aside(dir)? {
        return Err(Error::checkpoint(
            dir,
            format!(
                "missing, but an interrupted save left the previous checkpoint at {}; rename it \
                 to {} to resume from it, or remove it to start over",
                aside.display(),
                dir.display()
            ),
        ));
    }
    Ok(false)
}

/// A copy of `dir` that [`write_dir_atomically`] moved aside (`.NAME.old-PID`), if one is left.
fn moved_aside(dir: &Path) -> Result<Option<PathBuf>> {
    let (Some(name), Some(parent)) = (dir.file_name().and_then(|n| n.to_str()), dir.parent())
    else {
        return Ok(None);
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(parent, e)),
    };
    let prefix = format!(".{name}.old-");
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(parent, e))?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// The `trainer_state.json` of the checkpoint in `dir`, checked.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
    if state.format != CHECKPOINT_FORMAT || state.format_version != CHECKPOINT_FORMAT_VERSION {
        return Err(Error::checkpoint(
            dir,
            format!(
                "format {} v{} is not {CHECKPOINT_FORMAT} v{CHECKPOINT_FORMAT_VERSION}",
                state.format, state.format_version
            ),
        ));
    }
    Ok(state)
}

/// Fills a fresh temporary directory with `fill`, fsyncs it, and renames it to `dir`. An
/// existing `dir` is moved aside first and removed after the rename, so a crash in between
/// leaves the old copy as `.NAME.old-PID` next to it, never a half-written `dir`.
pub fn write_dir_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Input(format!("{} has no usable directory name", dir.display())))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let filled = fill(&tmp).and_then(|()| sync_tree(&tmp));
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{pid}"));
    let had_old = dir.exists();
    if had_old {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    sync_dir(&parent)?;
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        } else if path.is_dir() {
            sync_tree(&path)?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}
