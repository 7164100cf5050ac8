//! Qwen2 / Qwen2.5 (`model_type: "qwen2"`): biases on the q, k and v projections, head_dim =
//! hidden_size / num_attention_heads.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::cache::KvCache;
use crate::decoder::{Decoder, DecoderSpec};
use crate::rope::{resolve_rope, RopeScaling};
use crate::{Error, Result};

/// The fields of a Qwen2 `config.json` this implementation reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers 5 writes `rope_theta` and the scaling here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

pub(crate) fn default_max_positions() -> usize {
    32768
}
pub(crate) fn default_theta() -> f64 {
    10000.0
}
pub(crate) fn default_eps() -> f64 {
    1e-6
}
pub(crate) fn default_act() -> String {
    "silu".into()
}

pub(crate) fn check_act(act: &str) -> Result<()> {
    if act == "silu" {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "hidden_act `{act}` (only silu is implemented)"
        )))
    }
}

impl Config {
    pub fn spec(&self) -> Result<DecoderSpec> {
        check_act(&self.hidden_act)?;
        if self.use_sliding_window {
            return Err(Error::Unsupported(
                "Qwen2 with use_sliding_window=true".into(),
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::Config(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        let (rope_theta, rope_scaling) = resolve_rope(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
            default_theta(),
        );
        Ok(DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim: self.hidden_size / self.num_attention_heads,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            tie_word_embeddings: self.tie_word_embeddings,
        })
    }
}

/// A Qwen2 causal language model.
#[derive(Debug, Clone)]
pub struct Model {
    decoder: Decoder,
}

impl Model {
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            decoder: Decoder::new(&cfg.spec()?, vb)?,
        })
    }

    /// The model around a decoder built elsewhere (with LoRA adapters, by
    /// [`crate::CausalLm::new_with_lora`]).
    pub(crate) fn from_decoder(decoder: Decoder) -> Self {
        Self { decoder }
    }

    /// Logits `[batch, seq, vocab]`; see [`Decoder::hidden`] for the mask and cache.
    pub fn forward(
        &self,
        tokens: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.decoder.forward(tokens, attention_mask, cache)
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// See [`Decoder::fused_for_inference`].
    pub fn fused_for_inference(&self) -> Result<Self> {
        Ok(Self {
            decoder: self.decoder.fused_for_inference()?,
        })
    }
}
