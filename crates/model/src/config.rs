//! The fields of a checkpoint's `config.json` the decoder reads, one schema for every supported
//! family. Qwen2, Qwen3 and Llama share the decoder; what sets them apart (biases, q/k norms, the
//! head_dim and max_position_embeddings defaults) is the small [`Family`] table that
//! [`Config::spec`] applies, so no code is written once per architecture.
//!
//! This module only interprets the schema: it never reads files and never loads weights.

use serde::{Deserialize, Serialize};

use crate::decoder::DecoderSpec;
use crate::model::Arch;
use crate::rope::{resolve_rope, RopeScaling};
use crate::{Error, Result};

/// The fields of a Qwen2, Qwen3 or Llama `config.json` this implementation reads. Fields a family
/// does not use keep their defaults (a Qwen2 config has no `attention_bias`, a Llama config no
/// `use_sliding_window`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// When absent: 128 for Qwen3 (transformers' Qwen3Config default), otherwise hidden_size /
    /// num_attention_heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// When absent: 32768 for the Qwen families, 2048 for Llama.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
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
    /// Biases on all four attention projections (Qwen3, Llama; Qwen2 ignores it, see [`Family`]).
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_act() -> String {
    "silu".into()
}

const DEFAULT_ROPE_THETA: f64 = 10000.0;

/// What one architecture family changes in the shared decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// Biases on q, k and v and none on o whatever `attention_bias` says (Qwen2); otherwise
    /// `attention_bias` puts biases on all four projections.
    pub fixed_qkv_bias: bool,
    /// RMSNorm of each query and key head before the rotary embedding (Qwen3).
    pub qk_norm: bool,
    /// head_dim when config.json gives none; `None` derives hidden_size / num_attention_heads.
    pub default_head_dim: Option<usize>,
    pub default_max_positions: usize,
}

impl Family {
    pub fn of(arch: Arch) -> Self {
        match arch {
            Arch::Qwen2 => Family {
                fixed_qkv_bias: true,
                qk_norm: false,
                default_head_dim: None,
                default_max_positions: 32768,
            },
            Arch::Qwen3 => Family {
                fixed_qkv_bias: false,
                qk_norm: true,
                default_head_dim: Some(128),
                default_max_positions: 32768,
            },
            Arch::Llama => Family {
                fixed_qkv_bias: false,
                qk_norm: false,
                default_head_dim: None,
                default_max_positions: 2048,
            },
        }
    }
}

impl Config {
    /// Parses the fields of a `config.json`.
    pub fn from_json(config: &serde_json::Value) -> Result<Self> {
        Config::deserialize(config).map_err(|e| Error::Config(e.to_string()))
    }

    /// The decoder a checkpoint of family `arch` with this config describes.
    pub fn spec(&self, arch: Arch) -> Result<DecoderSpec> {
        let family = Family::of(arch);
        if self.hidden_act != "silu" {
            return Err(Error::Unsupported(format!(
                "hidden_act `{}` (only silu is implemented)",
                self.hidden_act
            )));
        }
        if self.use_sliding_window {
            return Err(Error::Unsupported(format!(
                "{} with use_sliding_window=true",
                arch.name()
            )));
        }
        let head_dim = match self.head_dim.or(family.default_head_dim) {
            Some(head_dim) => head_dim,
            None if self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads) =>
            {
                self.hidden_size / self.num_attention_heads
            }
            None => {
                return Err(Error::Config(format!(
                    "hidden_size {} is not divisible by num_attention_heads {} and no head_dim is given",
                    self.hidden_size, self.num_attention_heads
                )))
            }
        };
        let (rope_theta, rope_scaling) = resolve_rope(
            self.rope_theta,
            self.rope_scaling.as_ref(),
            self.rope_parameters.as_ref(),
            DEFAULT_ROPE_THETA,
        );
        let (qkv_bias, o_bias) = if family.fixed_qkv_bias {
            (true, false)
        } else {
            (self.attention_bias, self.attention_bias)
        };
        Ok(DecoderSpec {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads.unwrap_or(self.num_attention_heads),
            head_dim,
            max_position_embeddings: self
                .max_position_embeddings
                .unwrap_or(family.default_max_positions),
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling,
            qkv_bias,
            o_bias,
            mlp_bias: self.mlp_bias,
            qk_norm: family.qk_norm,
            tie_word_embeddings: self.tie_word_embeddings,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(arch: Arch, extra: serde_json::Value) -> Result<DecoderSpec> {
        let mut config = json!({
            "vocab_size": 32,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        Config::from_json(&config)?.spec(arch)
    }

    /// (qkv_bias, o_bias, mlp_bias, qk_norm, head_dim, max_position_embeddings)
    type Flags = (bool, bool, bool, bool, usize, usize);

    fn check(arch: Arch, extra: serde_json::Value, expected: Flags) {
        let s = spec(arch, extra).unwrap();
        let actual = (
            s.qkv_bias,
            s.o_bias,
            s.mlp_bias,
            s.qk_norm,
            s.head_dim,
            s.max_position_embeddings,
        );
        assert_eq!(actual, expected, "{arch:?}");
    }

    #[test]
    fn families_differ_only_where_transformers_does() {
        check(
            Arch::Qwen2,
            json!({}),
            (true, false, false, false, 16, 32768),
        );
        check(
            Arch::Qwen2,
            json!({"attention_bias": false}),
            (true, false, false, false, 16, 32768),
        );
        check(
            Arch::Qwen3,
            json!({}),
            (false, false, false, true, 128, 32768),
        );
        check(
            Arch::Qwen3,
            json!({"head_dim": 8, "attention_bias": true}),
            (true, true, false, true, 8, 32768),
        );
        check(
            Arch::Llama,
            json!({}),
            (false, false, false, false, 16, 2048),
        );
        check(
            Arch::Llama,
            json!({"attention_bias": true, "mlp_bias": true, "max_position_embeddings": 7}),
            (true, true, true, false, 16, 7),
        );
    }

    #[test]
    fn unsupported_options_are_errors() {
        for arch in [Arch::Qwen2, Arch::Qwen3] {
            let err = spec(arch, json!({"use_sliding_window": true})).unwrap_err();
            assert!(err.to_string().contains("use_sliding_window"), "{err}");
        }
        let err = spec(Arch::Llama, json!({"hidden_act": "gelu"})).unwrap_err();
        assert!(err.to_string().contains("gelu"), "{err}");
        let err = spec(Arch::Qwen2, json!({"num_attention_heads": 5})).unwrap_err();
        assert!(err.to_string().contains("not divisible"), "{err}");
        let err = spec(Arch::Llama, json!({"hidden_size": "wide"})).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}
