//! Scaled dot-product attention that never holds the whole `[heads, seq, keys]` score matrix:
//! queries are taken in chunks, and the backward pass recomputes each chunk's probabilities
//! from q, k and v (as FlashAttention does, but chunked over queries only), so what training
//! keeps per layer is q, k, v and the output instead of every softmax intermediate.
//!
//! Layout (grouped-query attention without repeating k/v): `q` is `[batch, kv_heads, n_rep *
//! seq, head_dim]` with the query heads that share a kv head stacked along the sequence axis
//! (head `kv * n_rep + r`, row `r * seq + s`), `k` and `v` are `[batch, kv_heads, keys,
//! head_dim]`, `mask` is additive `[batch, 1, seq, keys]` in the softmax dtype. Softmax runs in
//! `compute_dtype` (f32, or f64 for f64 models); the matmuls in the inputs' dtype.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::Result;

/// Elements of one chunk's score matrix (`batch × heads × rows × keys`) at most: 16 Mi
/// (64 MiB in f32).
const CHUNK_ELEMENTS: usize = 1 << 24;

/// The attention output `[batch, kv_heads, n_rep * seq, head_dim]`; differentiable with respect
/// to q, k and v when any of them is.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    n_rep: usize,
) -> Result<Tensor> {
    attention_chunked(q, k, v, mask, scale, n_rep, CHUNK_ELEMENTS)
}

/// [`attention`] with an explicit chunk budget (tests use small ones).
pub fn attention_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    n_rep: usize,
    chunk_elements: usize,
) -> Result<Tensor> {
    let shape = Shapes::of(q, k, n_rep, chunk_elements)?;
    let out = forward(&q.detach(), &k.detach(), &v.detach(), mask, scale, &shape)?;
    if !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(out);
    }
    let op = Attach {
        out,
        mask: mask.clone(),
        scale,
        shape,
    };
    Ok(q.apply_op3_arc(k, v, std::sync::Arc::new(Box::new(op)))?)
}

#[derive(Debug, Clone, Copy)]
struct Shapes {
    batch: usize,
    kv: usize,
    n_rep: usize,
    seq: usize,
    dim: usize,
    /// Query positions per chunk.
    rows: usize,
}

impl Shapes {
    fn of(q: &Tensor, k: &Tensor, n_rep: usize, chunk_elements: usize) -> Result<Shapes> {
        let (batch, kv, rows, dim) = q.dims4()?;
        let keys = k.dim(2)?;
        let seq = rows / n_rep.max(1);
        let per_position = (batch * kv * n_rep * keys).max(1);
        Ok(Shapes {
            batch,
            kv,
            n_rep,
            seq,
            dim,
            rows: (chunk_elements / per_position).clamp(1, seq.max(1)),
        })
    }

    /// The chunks `(start, len)` of query positions.
    fn chunks(&self) -> Vec<(usize, usize)> {
        (0..self.seq)
            .step_by(self.rows)
            .map(|start| (start, self.rows.min(self.seq - start)))
            .collect()
    }

    /// Rows `start..start + len` of every head of a `[batch, kv, n_rep * seq, dim]` tensor, as
    /// `[batch, kv, n_rep * len, dim]`.
    fn rows_of(&self, t: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let (b, kv, r, s, d) = (self.batch, self.kv, self.n_rep, self.seq, self.dim);
        Ok(t.reshape((b, kv, r, s, d))?
            .narrow(3, start, len)?
            .contiguous()?
            .reshape((b, kv, r * len, d))?)
    }

    /// Chunks (in order) back into `[batch, kv, n_rep * seq, dim]`.
    fn join(&self, chunks: &[Tensor]) -> Result<Tensor> {
        let (b, kv, r, d) = (self.batch, self.kv, self.n_rep, self.dim);
        let parts: Vec<Tensor> = chunks
            .iter()
            .map(|c| {
                let len = c.dim(2)? / r;
                Ok(c.reshape((b, kv, r, len, d))?)
            })
            .collect::<Result<_>>()?;
        Ok(Tensor::cat(&parts, 3)?
            .reshape((b, kv, r * self.seq, d))?
            .contiguous()?)
    }
}

/// The probabilities of one chunk of queries, `[batch, kv, n_rep * len, keys]` in the softmax
/// dtype.
fn probabilities(
    q_chunk: &Tensor,
    k: &Tensor,
    mask: &Tensor,
    scale: f64,
    shape: &Shapes,
    start: usize,
    len: usize,
) -> Result<Tensor> {
    let keys = k.dim(2)?;
    let heads = shape.kv * shape.n_rep;
    let scores = q_chunk
        .matmul(&k.t()?)?
        .reshape((shape.batch, heads, len, keys))?;
    // Scale, mask and softmax in one pass per row on the CPU (`crate::fused`).
    let probs = crate::fused::attention_probs(&scores, mask, start, scale)?;
    Ok(probs.reshape((shape.batch, shape.kv, shape.n_rep * len, keys))?)
}

fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    scale: f64,
    shape: &Shapes,
) -> Result<Tensor> {
    let mut outs = Vec::new();
    for (start, len) in shape.chunks() {
        let q_chunk = shape.rows_of(q, start, len)?;
        let probs = probabilities(&q_chunk, k, mask, scale, shape, start, len)?;
        outs.push(probs.to_dtype(v.dtype())?.matmul(v)?);
    }
    shape.join(&outs)
}

/// Attaches the chunked output to the graph of q, k and v; its backward recomputes each chunk.
struct Attach {
    out: Tensor,
    mask: Tensor,
    scale: f64,
    shape: Shapes,
}

impl CustomOp3 for Attach {
    fn name(&self) -> &'static str {
        "chunked-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (storage, layout) = self.out.storage_and_layout();
        match &*storage {
            Storage::Cpu(cpu) if layout.is_contiguous() && layout.start_offset() == 0 => {
                Ok((cpu.clone(), layout.shape().clone()))
            }
            _ => Err(candle_core::Error::Msg(
                "chunked attention: the output is not a contiguous CPU tensor".into(),
            )),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (storage, layout) = self.out.storage_and_layout();
        match &*storage {
            Storage::Cuda(cuda) => Ok((cuda.try_clone(layout)?, layout.shape().clone())),
            _ => Err(candle_core::Error::Msg(
                "chunked attention: the output is not a CUDA tensor".into(),
            )),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        backward(q, k, v, grad, &self.mask, self.scale, &self.shape)
            .map(|(dq, dk, dv)| (Some(dq), Some(dk), Some(dv)))
            .map_err(|e| candle_core::Error::Msg(format!("chunked attention backward: {e}")))
    }
}

/// Gradients of q, k and v: per chunk, P = softmax(q kᵀ · scale + mask) again, then
/// dv += Pᵀ dO, dP = dO vᵀ, dS = scale · P ∘ (dP − rowsum(P ∘ dP)), dq = dS k, dk += dSᵀ q.
#[allow(clippy::too_many_arguments)]
fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    mask: &Tensor,
    scale: f64,
    shape: &Shapes,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (q, k, v, grad) = (q.detach(), k.detach(), v.detach(), grad.detach());
    let soft = mask.dtype();
    let dtype = q.dtype();
    let mut dq_chunks = Vec::new();
    let mut dk = k.zeros_like()?.to_dtype(soft)?;
    let mut dv = v.zeros_like()?.to_dtype(soft)?;
    let k_soft = k.to_dtype(soft)?;
    let v_soft = v.to_dtype(soft)?;
    for (start, len) in shape.chunks() {
        let q_chunk = shape.rows_of(&q, start, len)?;
        let probs = probabilities(&q_chunk, &k, mask, scale, shape, start, len)?;
        let d_out = shape.rows_of(&grad, start, len)?.to_dtype(soft)?;
        dv = (dv + probs.t()?.matmul(&d_out)?)?;
        let d_probs = d_out.matmul(&v_soft.t()?)?;
        // scale · P ∘ (dP − rowsum(P ∘ dP)); rowsum(P ∘ dP) = rowsum(dO ∘ O).
        let d_scores = crate::fused::softmax_backward(&probs, &d_probs, scale)?;
        dq_chunks.push(d_scores.matmul(&k_soft)?);
        dk = (dk + d_scores.t()?.matmul(&q_chunk.to_dtype(soft)?)?)?;
    }
    let dq = shape.join(&dq_chunks)?.to_dtype(dtype)?;
    Ok((dq, dk.to_dtype(dtype)?, dv.to_dtype(dtype)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The plain attention the decoder used before: the whole score matrix, autograd through
    /// every op.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
        let (b, kv, rows, _) = q.dims4().unwrap();
        let keys = k.dim(2).unwrap();
        let heads = mask.dims4().unwrap();
        let seq = heads.2;
        let n_rep = rows / seq;
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale)
            .unwrap()
            .reshape((b, kv * n_rep, seq, keys))
            .unwrap()
            .broadcast_add(mask)
            .unwrap();
        crate::layers::softmax_last_dim(&scores)
            .unwrap()
            .reshape((b, kv, rows, keys))
            .unwrap()
            .matmul(v)
            .unwrap()
    }

    /// Causal, with left padding in row 0 (its first two positions are padding) if `pad`.
    /// Fully masked rows make finite differences meaningless (scores near -1e9 keep only ~1e-7
    /// of precision), so the finite-difference check runs without padding.
    fn mask(batch: usize, seq: usize, dtype: DType, pad: bool) -> Tensor {
        let mut data = Vec::new();
        for b in 0..batch {
            for s in 0..seq {
                for t in 0..seq {
                    let pad = pad && b == 0 && t < 2;
                    data.push(if t > s || pad { -1e9 } else { 0.0 });
                }
            }
        }
        Tensor::from_vec(data, (batch, 1, seq, seq), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn random(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        use rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let data: Vec<f64> = (0..n)
            .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_full_attention_and_its_gradients() {
        let (batch, kv, n_rep, seq, dim) = (2, 2, 2, 7, 4);
        let scale = 1.0 / (dim as f64).sqrt();
        let mask = mask(batch, seq, DType::F64, true);
        let q = Var::from_tensor(&random((batch, kv, n_rep * seq, dim), 1)).unwrap();
        let k = Var::from_tensor(&random((batch, kv, seq, dim), 2)).unwrap();
        let v = Var::from_tensor(&random((batch, kv, seq, dim), 3)).unwrap();
        // A weight per output element so every gradient entry matters.
        let w = random((batch, kv, n_rep * seq, dim), 4);
        let expected = reference(&q, &k, &v, &mask, scale);
        let expected_grads = (&expected * &w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        // Chunk budgets: one position per chunk, uneven chunks, everything at once.
        for budget in [1, 3 * batch * kv * n_rep * seq, 1 << 20] {
            let got = attention_chunked(&q, &k, &v, &mask, scale, n_rep, budget).unwrap();
            let diff = (&got - &expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "budget {budget}");
            let grads = (&got * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
                let a = grads.get(var.as_tensor()).unwrap();
                let b = expected_grads.get(var.as_tensor()).unwrap();
                let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
                assert!(
                    diff.to_scalar::<f64>().unwrap() < 1e-12,
                    "d{name}, budget {budget}"
                );
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (batch, kv, n_rep, seq, dim) = (1, 1, 2, 5, 3);
        let scale = 0.7;
        let mask = mask(batch, seq, DType::F64, false);
        let q0 = random((batch, kv, n_rep * seq, dim), 5);
        let k0 = random((batch, kv, seq, dim), 6);
        let v0 = random((batch, kv, seq, dim), 7);
        let w = random((batch, kv, n_rep * seq, dim), 8);
        let objective = |q: &Tensor, k: &Tensor, v: &Tensor| -> f64 {
            let out = attention_chunked(q, k, v, &mask, scale, n_rep, 2).unwrap();
            (&out * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let k = Var::from_tensor(&k0).unwrap();
        let out = attention_chunked(&q0, &k, &v0, &mask, scale, n_rep, 2).unwrap();
        let grads = (&out * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let dk: Vec<f64> = grads
            .get(k.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = k0.flatten_all().unwrap().to_vec1().unwrap();
        let eps = 1e-6;
        for i in 0..base.len() {
            let nudged = |delta: f64| {
                let mut data = base.clone();
                data[i] += delta;
                Tensor::from_vec(data, k0.shape(), &Device::Cpu).unwrap()
            };
            let numeric = (objective(&q0, &nudged(eps), &v0) - objective(&q0, &nudged(-eps), &v0))
                / (2.0 * eps);
            assert!(
                (numeric - dk[i]).abs() < 1e-7,
                "dk[{i}]: {numeric} vs {}",
                dk[i]
            );
        }
    }

    #[test]
    fn untracked_inputs_give_a_plain_tensor() {
        let mask = mask(1, 4, DType::F32, true);
        let q = random((1, 1, 4, 2), 9).to_dtype(DType::F32).unwrap();
        let k = random((1, 1, 4, 2), 10).to_dtype(DType::F32).unwrap();
        let v = random((1, 1, 4, 2), 11).to_dtype(DType::F32).unwrap();
        let out = attention(&q, &k, &v, &mask, 0.5, 1).unwrap();
        assert!(!out.track_op());
        let expected = reference(&q, &k, &v, &mask, 0.5);
        let diff = (&out - &expected)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
