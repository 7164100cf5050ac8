//! The decoder-only transformer shared by the Qwen2, Qwen3 and Llama families: pre-norm blocks of
//! grouped-query attention with rotary embeddings and a SwiGLU MLP. The families differ only in
//! the flags of [`DecoderSpec`] (biases, q/k norms, head_dim, tied embeddings), which
//! [`crate::config::Config::spec`] derives from a checkpoint's `config.json`.
//!
//! Padding is on the left and described by an attention mask; position ids count real tokens
//! only, as transformers' `generate` does. Every op here has a backward.

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::cache::KvCache;
use crate::fused;
use crate::layers::{compute_dtype, Embedding, Linear, Mlp, RmsNorm, MASKED_SCORE};
use crate::lora::LoraSpec;
use crate::rope::{positions_tensor, Rope, RopeScaling};
use crate::{Error, Result};

/// The shape and options of a decoder, independent of the checkpoint's config schema.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderSpec {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama's `attention_bias` covers all four).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm of each query and key head before the rotary embedding (Qwen3).
    pub qk_norm: bool,
    pub tie_word_embeddings: bool,
}

impl DecoderSpec {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(Error::Config(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        Ok(())
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn n_params(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_attention_heads * d;
        let kv = self.num_key_value_heads * d;
        let mut attention = h * q + 2 * h * kv + q * h;
        if self.qkv_bias {
            attention += q + 2 * kv;
        }
        if self.o_bias {
            attention += h;
        }
        if self.qk_norm {
            attention += 2 * d;
        }
        let mut mlp = 3 * h * i;
        if self.mlp_bias {
            mlp += 2 * i + h;
        }
        let layer = attention + mlp + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * layer + h
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    /// q_proj, k_proj and v_proj stacked, for inference ([`Decoder::fused_for_inference`]).
    qkv_proj: Option<Linear>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(spec: &DecoderSpec, vb: VarBuilder, lora: Option<&LoraSpec>) -> Result<Self> {
        let (h, d) = (spec.hidden_size, spec.head_dim);
        let (n_heads, n_kv_heads) = (spec.num_attention_heads, spec.num_key_value_heads);
        let (q_norm, k_norm) = if spec.qk_norm {
            (
                Some(RmsNorm::new(vb.pp("q_norm"), d, spec.rms_norm_eps)?),
                Some(RmsNorm::new(vb.pp("k_norm"), d, spec.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        let linear = |name, in_dim, out_dim, bias| {
            Linear::new_adapted(vb.clone(), name, in_dim, out_dim, bias, lora)
        };
        Ok(Self {
            q_proj: linear("q_proj", h, n_heads * d, spec.qkv_bias)?,
            k_proj: linear("k_proj", h, n_kv_heads * d, spec.qkv_bias)?,
            v_proj: linear("v_proj", h, n_kv_heads * d, spec.qkv_bias)?,
            o_proj: linear("o_proj", n_heads * d, h, spec.o_bias)?,
            q_norm,
            k_norm,
            qkv_proj: None,
            n_heads,
            n_kv_heads,
            head_dim: d,
        })
    }

    fn fused(&self) -> Result<Self> {
        Ok(Self {
            qkv_proj: Some(Linear::stack(&[&self.q_proj, &self.k_proj, &self.v_proj])?),
            ..self.clone()
        })
    }

    /// `x` is `[batch · seq, hidden]`, rows in batch-major order; so is the output.
    fn forward(
        &self,
        x: &Tensor,
        (batch, seq): (usize, usize),
        rope: &RopeTables,
        mask: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let (d, n_heads, n_kv) = (self.head_dim, self.n_heads, self.n_kv_heads);
        let (q, k, v) = match &self.qkv_proj {
            Some(qkv) => {
                let all = qkv.forward(x)?;
                (
                    all.narrow(D::Minus1, 0, n_heads * d)?,
                    all.narrow(D::Minus1, n_heads * d, n_kv * d)?,
                    all.narrow(D::Minus1, (n_heads + n_kv) * d, n_kv * d)?,
                )
            }
            None => (
                self.q_proj.forward(x)?,
                self.k_proj.forward(x)?,
                self.v_proj.forward(x)?,
            ),
        };
        let mut q = q.reshape((batch, seq, n_heads, d))?;
        let mut k = k.reshape((batch, seq, n_kv, d))?;
        let v = v.reshape((batch, seq, n_kv, d))?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        // Head-major `[batch, heads, seq, d]`; on the CPU the rotation and the transpose are one
        // fused op each (`crate::fused`).
        let q = fused::rope_heads(&q, &rope.cos, &rope.sin)?;
        let k = fused::rope_heads(&k, &rope.cos, &rope.sin)?;
        let v = fused::swap_middle(&v)?;
        let (k, v) = match cache {
            Some((cache, layer)) => cache.append(layer, &k, &v)?,
            None => (k.contiguous()?, v.contiguous()?),
        };
        // Grouped-query attention without repeating k/v: the query heads that share a kv head
        // are stacked along the sequence axis.
        let n_rep = n_heads / n_kv;
        let q = q.contiguous()?.reshape((batch, n_kv, n_rep * seq, d))?;
        let scale = 1.0 / (d as f64).sqrt();
        let out = crate::attention::attention(&q, &k, &v, mask, scale, n_rep)?
            .reshape((batch, n_heads, seq, d))?;
        let out = fused::swap_middle(&out)?.reshape((batch * seq, n_heads * d))?;
        self.o_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(spec: &DecoderSpec, vb: VarBuilder, lora: Option<&LoraSpec>) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(
                vb.pp("input_layernorm"),
                spec.hidden_size,
                spec.rms_norm_eps,
            )?,
            self_attn: Attention::new(spec, vb.pp("self_attn"), lora)?,
            post_attention_layernorm: RmsNorm::new(
                vb.pp("post_attention_layernorm"),
                spec.hidden_size,
                spec.rms_norm_eps,
            )?,
            mlp: Mlp::new(
                vb.pp("mlp"),
                spec.hidden_size,
                spec.intermediate_size,
                spec.mlp_bias,
                lora,
            )?,
        })
    }

    /// `x` is `[batch · seq, hidden]`; so is the output.
    fn forward(
        &self,
        x: &Tensor,
        batch_seq: (usize, usize),
        rope: &RopeTables,
        mask: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> Result<Tensor> {
        let attn = self.self_attn.forward(
            &self.input_layernorm.forward(x)?,
            batch_seq,
            rope,
            mask,
            cache,
        )?;
        let x = (x + attn)?;
        let mlp = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + mlp)?)
    }
}

struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

/// The decoder with its embedding table and language-model head.
#[derive(Debug, Clone)]
pub struct Decoder {
    spec: DecoderSpec,
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    dtype: DType,
    device: Device,
}

impl Decoder {
    /// Builds the decoder from HF tensor names (`model.layers.N.self_attn.q_proj.weight`, ...).
    pub fn new(spec: &DecoderSpec, vb: VarBuilder) -> Result<Self> {
        Self::new_with_lora(spec, vb, None)
    }

    /// [`Decoder::new`] with LoRA adapters on the layers `lora` targets, read from `vb` under
    /// the names of [`crate::lora::adapted_layers`].
    pub fn new_with_lora(
        spec: &DecoderSpec,
        vb: VarBuilder,
        lora: Option<&LoraSpec>,
    ) -> Result<Self> {
        spec.validate()?;
        if let Some(lora) = lora {
            lora.validate()?;
        }
        let model = vb.pp("model");
        let embed_tokens =
            Embedding::new(model.pp("embed_tokens"), spec.vocab_size, spec.hidden_size)?;
        let layers = (0..spec.num_hidden_layers)
            .map(|i| Block::new(spec, model.pp(format!("layers.{i}")), lora))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(model.pp("norm"), spec.hidden_size, spec.rms_norm_eps)?;
        let lm_head = if spec.tie_word_embeddings {
            Linear::from_weight(embed_tokens.table().clone())
        } else {
            Linear::new(vb.pp("lm_head"), spec.hidden_size, spec.vocab_size, false)?
        };
        let rope = Rope::new(spec.head_dim, spec.rope_theta, spec.rope_scaling.as_ref())?;
        Ok(Self {
            spec: spec.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn spec(&self) -> &DecoderSpec {
        &self.spec
    }

    /// A copy for generation that computes q/k/v and gate/up with one matmul each (stacked
    /// weight copies). Same outputs; no gradient flows through the stacked weights, so train
    /// with the original.
    pub fn fused_for_inference(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|b| {
                Ok(Block {
                    self_attn: b.self_attn.fused()?,
                    mlp: b.mlp.fused()?,
                    ..b.clone()
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            ..self.clone()
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.layers.len(), batch)
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last norm) of `tokens` `[batch, seq]`.
    ///
    /// `attention_mask` (`[batch, seq]`, 1 for real tokens, 0 for padding) covers the new tokens;
    /// `None` means all real. With a cache, the new tokens follow the cached ones and the cache is
    /// extended; without one, gradients flow to every weight.
    pub fn hidden(
        &self,
        tokens: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (batch, seq) = tokens.dims2()?;
        let new_mask = host_mask(attention_mask, batch, seq)?;
        let empty: (Vec<Vec<bool>>, Vec<usize>) = (vec![Vec::new(); batch], vec![0; batch]);
        let (past_mask, past_real) = match cache.as_deref() {
            Some(c) => {
                if c.batch_size() != batch {
                    return Err(Error::Input(format!(
                        "cache holds {} rows, tokens have {batch}",
                        c.batch_size()
                    )));
                }
                (c.mask().to_vec(), c.n_real().to_vec())
            }
            None => empty,
        };
        let max_pos = self.spec.max_position_embeddings;
        let positions = positions_of(&new_mask, &past_real);
        if let Some(p) = positions.iter().flatten().max() {
            if *p as usize >= max_pos {
                return Err(Error::Input(format!(
                    "sequence reaches position {p}, beyond max_position_embeddings {max_pos}"
                )));
            }
        }
        let positions = positions_tensor(&positions, &self.device)?;
        let (cos, sin) = self.rope.cos_sin(&positions, self.dtype)?;
        let rope = RopeTables { cos, sin };
        let mask = additive_mask(
            &past_mask,
            &new_mask,
            compute_dtype(self.dtype),
            &self.device,
        )?;
        // The blocks work on `[batch · seq, hidden]` rows: their linear layers need no reshape.
        let mut x = self.embed_tokens.forward_rows(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| (c, i));
            x = layer.forward(&x, (batch, seq), &rope, &mask, layer_cache)?;
        }
        if let Some(cache) = cache {
            cache.advance(&new_mask);
        }
        let hidden = x.dim(1)?;
        Ok(self.norm.forward(&x)?.reshape((batch, seq, hidden))?)
    }

    /// Logits `[.., vocab]` of hidden states, in the model's dtype.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Logits `[batch, seq, vocab]` for every position.
    pub fn forward(
        &self,
        tokens: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.hidden(tokens, attention_mask, cache)?;
        self.lm_head(&hidden)
    }
}

/// The attention mask as booleans, checked against the token shape.
fn host_mask(mask: Option<&Tensor>, batch: usize, seq: usize) -> Result<Vec<Vec<bool>>> {
    let Some(mask) = mask else {
        return Ok(vec![vec![true; seq]; batch]);
    };
    if mask.dims() != [batch, seq] {
        return Err(Error::Input(format!(
            "attention mask has shape {:?}, tokens have [{batch}, {seq}]",
            mask.dims()
        )));
    }
    let rows = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|row| row.into_iter().map(|m| m > 0.5).collect())
        .collect())
}

/// Position ids: real tokens count up from the row's cached real tokens; padding gets 0.
fn positions_of(new_mask: &[Vec<bool>], past_real: &[usize]) -> Vec<Vec<u32>> {
    new_mask
        .iter()
        .zip(past_real)
        .map(|(row, &past)| {
            let mut next = past as u32;
            row.iter()
                .map(|&real| {
                    if real {
                        next += 1;
                        next - 1
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect()
}

/// `[batch, 1, seq, past + seq]`: 0 where a query may attend (causal and a real key), else
/// [`MASKED_SCORE`].
fn additive_mask(
    past_mask: &[Vec<bool>],
    new_mask: &[Vec<bool>],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let batch = new_mask.len();
    let seq = new_mask.first().map_or(0, Vec::len);
    let past = past_mask.first().map_or(0, Vec::len);
    let total = past + seq;
    let mut data = Vec::with_capacity(batch * seq * total);
    for (old, new) in past_mask.iter().zip(new_mask) {
        let keys: Vec<bool> = old.iter().chain(new).copied().collect();
        for query in 0..seq {
            let visible = past + query;
            data.extend(keys.iter().enumerate().map(|(col, &real)| {
                if real && col <= visible {
                    0f32
                } else {
                    MASKED_SCORE as f32
                }
            }));
        }
    }
    Ok(Tensor::from_vec(data, (batch, 1, seq, total), device)?.to_dtype(dtype)?)
}
