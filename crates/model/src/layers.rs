//! Building blocks of the decoder written only with candle ops that have a backward: a linear
//! layer as a 2-D matmul, RMSNorm, softmax, rotary embeddings and grouped-query attention.
//!
//! A linear layer may carry a LoRA adapter (`crate::lora`): it adds `s·(x Aᵀ) Bᵀ` to `x Wᵀ`,
//! while the base weight stays a plain tensor that is never updated and gets no gradient
//! (`crate::frozen`).
//!
//! Never call candle-nn's fused ops (`rms_norm`, `softmax_last_dim`, `rope`, sdpa) here: they
//! have no backward and silently cut the autograd graph the trainer differentiates through.

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use crate::lora::LoraSpec;
use crate::{Error, Result};

/// Added to attention scores of positions a query must not see. Finite on purpose: a row with
/// every position masked (a left-pad query) then gets a uniform softmax instead of NaN, and
/// `0 * NaN` can no longer poison a loss.
pub const MASKED_SCORE: f64 = -1e9;

/// The dtype used for normalisation statistics and softmax: f32, or f64 for f64 models (the
/// gradient checks run in f64).
pub fn compute_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// A LoRA adapter of one linear layer: `A` (rank × in), `B` (out × rank) and the scale
/// `alpha / rank`.
#[derive(Debug, Clone)]
pub struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

/// `y = x Wᵀ + b (+ s · (x Aᵀ) Bᵀ with an adapter)` over the last dimension, as 2-D matmuls
/// (candle's batched broadcast matmul is markedly slower in the backward pass).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<Adapter>,
}

impl Linear {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            adapter: None,
        })
    }

    /// The layer `name` under `vb`, with an adapter (`NAME.lora_A.weight`, `NAME.lora_B.weight`
    /// from `vb`) when `lora` targets `name`.
    pub fn new_adapted(
        vb: VarBuilder,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        lora: Option<&LoraSpec>,
    ) -> Result<Self> {
        let vb = vb.pp(name);
        let mut layer = Self::new(vb.clone(), in_dim, out_dim, bias)?;
        if let Some(lora) = lora.filter(|l| l.targets(name)) {
            layer.adapter = Some(Adapter {
                a: vb.get((lora.rank, in_dim), "lora_A.weight")?,
                b: vb.get((out_dim, lora.rank), "lora_B.weight")?,
                scale: lora.scale(),
            });
        }
        Ok(layer)
    }

    pub fn from_weight(weight: Tensor) -> Self {
        Self {
            weight,
            bias: None,
            adapter: None,
        }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `W + s · B A` with an adapter, else `W`; detached.
    pub fn merged_weight(&self) -> Result<Tensor> {
        let weight = self.weight.detach();
        match &self.adapter {
            Some(ad) => {
                let delta =
                    ad.b.detach()
                        .matmul(&ad.a.detach())?
                        .affine(ad.scale, 0.0)?;
                Ok((weight + delta)?)
            }
            None => Ok(weight),
        }
    }

    /// One layer computing the outputs of `parts` side by side (their weights stacked, adapters
    /// merged in), so an inference pass makes one matmul instead of several. The copy is
    /// detached from the parts: use it only where no gradient is needed.
    pub fn stack(parts: &[&Linear]) -> Result<Self> {
        let weights: Vec<Tensor> = parts
            .iter()
            .map(|p| p.merged_weight())
            .collect::<Result<_>>()?;
        let weight = Tensor::cat(&weights, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_some()) {
            let biases: Vec<Tensor> = parts
                .iter()
                .filter_map(|p| p.bias.as_ref().map(Tensor::detach))
                .collect();
            Some(Tensor::cat(&biases, 0)?)
        } else if parts.iter().all(|p| p.bias.is_none()) {
            None
        } else {
            return Err(Error::Input(
                "cannot stack linear layers with and without bias".into(),
            ));
        };
        Ok(Self {
            weight,
            bias,
            adapter: None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (in_dim, lead) = match dims.split_last() {
            Some((last, lead)) => (*last, lead),
            None => return Err(Error::Input("linear layer input is a scalar".into())),
        };
        let rows: usize = lead.iter().product();
        // A contiguous left operand keeps the CPU matmul on its fast path. A 2-D input (the
        // decoder's `[tokens, hidden]` rows) is used as it is: every reshape is a graph node
        // whose backward costs a zeros tensor and an add.
        let x2 = if dims.len() == 2 {
            x.contiguous()?
        } else {
            x.reshape((rows, in_dim))?.contiguous()?
        };
        // A weight that is not trained (a LoRA base, or any plain tensor) gets no gradient:
        // `crate::frozen` skips the weight-sized `gradᵀ x` that candle's matmul backward always
        // computes. The adapter runs on the activations, `x Wᵀ + s·(x Aᵀ) Bᵀ`, in one op that
        // keeps only its output, so its gradients come from rank-sized products
        // (`bench train --lora-rank`, BENCHMARKS.md).
        let mut y = match &self.adapter {
            Some(ad) if !self.weight.track_op() => {
                crate::frozen::lora_linear(&x2, &self.weight, &ad.a, &ad.b, ad.scale)?
            }
            Some(ad) => {
                let low = x2.matmul(&ad.a.t()?)?.affine(ad.scale, 0.0)?;
                (x2.matmul(&self.weight.t()?)? + low.matmul(&ad.b.t()?)?)?
            }
            None if self.weight.track_op() => x2.matmul(&self.weight.t()?)?,
            None => crate::frozen::matmul_frozen(&x2, &self.weight)?,
        };
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias)?;
        }
        if dims.len() == 2 {
            return Ok(y);
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(self.weight.dim(0)?);
        Ok(y.reshape(out_dims)?)
    }
}

/// RMSNorm as in transformers: statistics in f32, `weight * (x / sqrt(mean(x²) + eps))`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }

    /// One fused op on the CPU (`crate::fused`), candle's ops elsewhere.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::fused::rms_norm(x, &self.weight, self.eps)
    }
}

/// Softmax over the last dimension from exp and sum. The max is detached: shifting by a constant
/// leaves both the value and the gradient unchanged.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    Ok(exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?)
}

/// `log(sum(exp(x)))` over the last dimension, keeping it, with a detached max.
pub fn log_sum_exp_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    Ok(sum.log()?.broadcast_add(&max)?)
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    /// gate_proj and up_proj stacked, for inference ([`Mlp::fused`]).
    gate_up: Option<Linear>,
}

impl Mlp {
    /// The block under `vb`, with adapters on the projections `lora` targets.
    pub fn new(
        vb: VarBuilder,
        hidden: usize,
        intermediate: usize,
        bias: bool,
        lora: Option<&LoraSpec>,
    ) -> Result<Self> {
        let linear = |name, in_dim, out_dim| {
            Linear::new_adapted(vb.clone(), name, in_dim, out_dim, bias, lora)
        };
        Ok(Self {
            gate_proj: linear("gate_proj", hidden, intermediate)?,
            up_proj: linear("up_proj", hidden, intermediate)?,
            down_proj: linear("down_proj", intermediate, hidden)?,
            gate_up: None,
        })
    }

    /// A copy that computes gate and up in one matmul; no gradient flows through it.
    pub fn fused(&self) -> Result<Self> {
        Ok(Self {
            gate_up: Some(Linear::stack(&[&self.gate_proj, &self.up_proj])?),
            ..self.clone()
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = match &self.gate_up {
            Some(gate_up) => {
                let both = gate_up.forward(x)?;
                let n = self.gate_proj.weight().dim(0)?;
                (both.narrow(D::Minus1, 0, n)?, both.narrow(D::Minus1, n, n)?)
            }
            None => (self.gate_proj.forward(x)?, self.up_proj.forward(x)?),
        };
        self.down_proj.forward(&crate::fused::swiglu(&gate, &up)?)
    }
}

/// An embedding table looked up with `index_select` (which has a backward).
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor,
}

impl Embedding {
    pub fn new(vb: VarBuilder, vocab: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            table: vb.get((vocab, hidden), "weight")?,
        })
    }

    pub fn table(&self) -> &Tensor {
        &self.table
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.table.dim(1)?);
        Ok(self.forward_rows(ids)?.reshape(dims)?)
    }

    /// The rows of every id in order, `[ids, hidden]`.
    pub fn forward_rows(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.table.index_select(&ids.flatten_all()?, 0)?)
    }
}
