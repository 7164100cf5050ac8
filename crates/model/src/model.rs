//! The architecture chosen by a checkpoint's `config.json` (`model_type`, else
//! `architectures[0]`), loaded from a directory or built from any `VarBuilder` (the trainer
//! builds it from a `VarMap` of trainable variables).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::cache::KvCache;
use crate::config::Config;
use crate::decoder::{Decoder, DecoderSpec};
use crate::lora::LoraSpec;
use crate::{weights, Error, Result};

/// The architecture families this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Qwen3,
    Llama,
}

impl Arch {
    /// Reads the family from a parsed `config.json`.
    pub fn from_config(config: &serde_json::Value) -> Result<Self> {
        let model_type = config.get("model_type").and_then(|v| v.as_str());
        let architecture = config
            .get("architectures")
            .and_then(|v| v.get(0))
            .and_then(|v| v.as_str());
        match (model_type, architecture) {
            (Some("qwen2"), _) | (None, Some("Qwen2ForCausalLM")) => Ok(Arch::Qwen2),
            (Some("qwen3"), _) | (None, Some("Qwen3ForCausalLM")) => Ok(Arch::Qwen3),
            (Some("llama"), _) | (None, Some("LlamaForCausalLM")) => Ok(Arch::Llama),
            (m, a) => Err(Error::Unsupported(format!(
                "model_type {m:?} / architecture {a:?} (supported: qwen2, qwen3, llama)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
        }
    }
}

/// A causal language model of any supported family: one [`Decoder`] whose [`DecoderSpec`] carries
/// everything the families differ in (see [`crate::config::Family`]).
#[derive(Debug, Clone)]
pub struct CausalLm {
    arch: Arch,
    decoder: Decoder,
}

impl CausalLm {
    /// Builds the model described by `config` from the tensors behind `vb`.
    pub fn new(config: &serde_json::Value, vb: VarBuilder) -> Result<Self> {
        Self::new_with_lora(config, vb, None)
    }

    /// [`CausalLm::new`] with LoRA adapters on the layers `lora` targets (their `A` and `B` are
    /// read from `vb` too; see [`crate::lora`]). `None` is [`CausalLm::new`].
    pub fn new_with_lora(
        config: &serde_json::Value,
        vb: VarBuilder,
        lora: Option<&LoraSpec>,
    ) -> Result<Self> {
        let arch = Arch::from_config(config)?;
        let spec = Config::from_json(config)?.spec(arch)?;
        let decoder = Decoder::new_with_lora(&spec, vb, lora)?;
        Ok(Self { arch, decoder })
    }

    /// The decoder spec `config` describes, without loading weights.
    pub fn spec_of(config: &serde_json::Value) -> Result<DecoderSpec> {
        Config::from_json(config)?.spec(Arch::from_config(config)?)
    }

    /// Loads the checkpoint in `dir` (config.json + safetensors) with weights in `dtype`.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config = read_config(dir)?;
        let tensors = weights::load(dir, dtype, device)?;
        Self::new(&config, VarBuilder::from_tensors(tensors, dtype, device))
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// A copy for generation with stacked q/k/v and gate/up weights (one matmul each); same
    /// outputs, but no gradient flows through it. See [`Decoder::fused_for_inference`].
    pub fn fused_for_inference(&self) -> Result<Self> {
        Ok(Self {
            arch: self.arch,
            decoder: self.decoder.fused_for_inference()?,
        })
    }

    pub fn spec(&self) -> &DecoderSpec {
        self.decoder.spec()
    }

    /// Logits `[batch, seq, vocab]` in the model's dtype; see [`Decoder::hidden`] for the mask
    /// and cache.
    pub fn forward(
        &self,
        tokens: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.decoder.forward(tokens, attention_mask, cache)
    }

    /// Final hidden states `[batch, seq, hidden]`, before the language-model head.
    pub fn hidden(
        &self,
        tokens: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.decoder.hidden(tokens, attention_mask, cache)
    }

    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.decoder.lm_head(hidden)
    }

    pub fn new_cache(&self, batch: usize) -> KvCache {
        self.decoder.new_cache(batch)
    }
}

/// The parsed `config.json` of the checkpoint in `dir`.
pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    read_json(&dir.join("config.json"))
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}

/// End-of-sequence token ids: `eos_token_id` (a number or a list) of generation_config.json,
/// else of config.json; empty if neither names any.
pub fn eos_token_ids(dir: &Path) -> Result<Vec<u32>> {
    let generation = dir.join("generation_config.json");
    let mut sources = Vec::new();
    if generation.is_file() {
        sources.push(read_json(&generation)?);
    }
    sources.push(read_config(dir)?);
    for source in sources {
        let ids: Vec<u32> = match source.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().map(|v| v as u32).into_iter().collect()
            }
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect(),
            _ => Vec::new(),
        };
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Ok(Vec::new())
}
