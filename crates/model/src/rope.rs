//! Rotary position embeddings ("rotate half" layout, as transformers' Llama/Qwen), including the
//! `linear` and `llama3` frequency scalings.
//!
//! Cos and sin are computed per forward from explicit position ids, so rows of a left-padded
//! batch each count positions from their first real token.

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `rope_scaling` from config.json (`null` or absent means none), or transformers 5's
/// `rope_parameters`, which also carries `rope_theta`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct RopeScaling {
    #[serde(alias = "type", default = "default_rope_type")]
    pub rope_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<f64>,
}

fn default_rope_type() -> String {
    "default".into()
}

/// The rotary base and scaling a config describes: transformers 5's `rope_parameters` if present,
/// else `rope_theta` and `rope_scaling` (transformers 4), else `default_theta` and none.
pub fn resolve_rope(
    rope_theta: Option<f64>,
    rope_scaling: Option<&RopeScaling>,
    rope_parameters: Option<&RopeScaling>,
    default_theta: f64,
) -> (f64, Option<RopeScaling>) {
    let scaling = rope_parameters.or(rope_scaling);
    let theta = rope_parameters
        .and_then(|p| p.rope_theta)
        .or(rope_theta)
        .unwrap_or(default_theta);
    let scaling = scaling.filter(|s| s.rope_type != "default").cloned();
    (theta, scaling)
}

/// Inverse frequencies of one attention head's rotary embedding.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// `inv_freq[i] = 1 / theta^(2i/head_dim)`, computed in f32 like transformers, then scaled.
    pub fn new(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "rotary embeddings need an even head_dim, got {head_dim}"
            )));
        }
        let base = theta as f32;
        let mut inv_freq: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
            .collect();
        if let Some(scaling) = scaling {
            scale_inv_freq(&mut inv_freq, scaling)?;
        }
        Ok(Self { inv_freq })
    }

    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// Cos and sin for positions `[batch, seq]` as `[batch, 1, seq, head_dim]` in `dtype`.
    pub fn cos_sin(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let device = positions.device();
        let half = self.inv_freq.len();
        let inv = Tensor::from_vec(self.inv_freq.clone(), (1, 1, half), device)?;
        let freqs = positions
            .to_dtype(DType::F32)?
            .unsqueeze(2)?
            .broadcast_mul(&inv)?;
        let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?;
        let cos = emb.cos()?.to_dtype(dtype)?.unsqueeze(1)?;
        let sin = emb.sin()?.to_dtype(dtype)?.unsqueeze(1)?;
        Ok((cos, sin))
    }

    /// `x * cos + rotate_half(x) * sin` for `x` of shape `[batch, heads, seq, head_dim]`.
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
    }
}

/// Position ids as a `[batch, seq]` f32 tensor.
pub fn positions_tensor(positions: &[Vec<u32>], device: &Device) -> Result<Tensor> {
    let batch = positions.len();
    let seq = positions.first().map_or(0, Vec::len);
    let flat: Vec<f32> = positions.iter().flatten().map(|&p| p as f32).collect();
    Ok(Tensor::from_vec(flat, (batch, seq), device)?)
}

fn scale_inv_freq(inv_freq: &mut [f32], scaling: &RopeScaling) -> Result<()> {
    let need = |value: Option<f64>, name: &str| {
        value.ok_or_else(|| {
            Error::Config(format!(
                "rope_scaling of type {} needs `{name}`",
                scaling.rope_type
            ))
        })
    };
    match scaling.rope_type.as_str() {
        "default" => {}
        "linear" => {
            let factor = need(scaling.factor, "factor")? as f32;
            inv_freq.iter_mut().for_each(|f| *f /= factor);
        }
        "llama3" => {
            // transformers' `_compute_llama3_parameters`, in f32 like its tensors.
            let factor = need(scaling.factor, "factor")? as f32;
            let low = need(scaling.low_freq_factor, "low_freq_factor")? as f32;
            let high = need(scaling.high_freq_factor, "high_freq_factor")? as f32;
            let old_len = need(
                scaling.original_max_position_embeddings,
                "original_max_position_embeddings",
            )? as f32;
            let low_freq_wavelen = old_len / low;
            let high_freq_wavelen = old_len / high;
            for f in inv_freq.iter_mut() {
                let wavelen = 2.0 * std::f32::consts::PI / *f;
                let scaled = if wavelen > low_freq_wavelen {
                    *f / factor
                } else {
                    *f
                };
                let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                *f = if medium {
                    let smooth = (old_len / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                } else {
                    scaled
                };
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "rope_scaling type `{other}` (supported: default, linear, llama3)"
            )))
        }
    }
    Ok(())
}
