//! `x Wᵀ` for a weight that is never trained (a LoRA base, or any plain tensor): the backward
//! pass returns the gradient of `x` only.
//!
//! candle's own matmul backward computes the gradient of both operands whatever they are, so a
//! frozen weight would still cost a weight-sized matmul (`gradᵀ x`) and a weight-sized buffer
//! per layer and micro-batch. Here the product is one custom op on the graph of `x` (its forward
//! is the backend's matmul, its backward `grad W`).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor};

use crate::Result;

/// `x Wᵀ` for a 2-D `x` (`rows × in`) and a 2-D `weight` (`out × in`), differentiable with
/// respect to `x` only. The weight is detached: whatever graph it has is not followed.
pub fn matmul_frozen(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let weight = weight.detach();
    if !x.track_op() {
        return Ok(x.matmul(&weight.t()?)?);
    }
    let (rows, inner) = x.dims2()?;
    let (out, weight_inner) = weight.dims2()?;
    if inner != weight_inner {
        return Err(crate::Error::Input(format!(
            "frozen matmul: input of width {inner} against a weight of width {weight_inner}"
        )));
    }
    let op = FrozenRhs {
        weight_t: weight.t()?,
        weight,
        bmnk: (1, rows, out, inner),
    };
    Ok(x.apply_op1_arc(Arc::new(Box::new(op)))?)
}

/// `x Wᵀ` as one op on the graph of `x`; the forward is the backend's own matmul.
struct FrozenRhs {
    weight: Tensor,
    /// `weight.t()`: the same storage, transposed layout.
    weight_t: Tensor,
    bmnk: (usize, usize, usize, usize),
}

impl CustomOp1 for FrozenRhs {
    fn name(&self) -> &'static str {
        "matmul-frozen-weight"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (weight, weight_layout) = self.weight_t.storage_and_layout();
        match &*weight {
            Storage::Cpu(weight) => Ok((
                storage.matmul(weight, self.bmnk, layout, weight_layout)?,
                Shape::from((self.bmnk.1, self.bmnk.2)),
            )),
            _ => Err(candle_core::Error::Msg(
                "frozen matmul: the weight is not on the CPU".into(),
            )),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (weight, weight_layout) = self.weight_t.storage_and_layout();
        match &*weight {
            Storage::Cuda(weight) => Ok((
                storage.matmul(weight, self.bmnk, layout, weight_layout)?,
                Shape::from((self.bmnk.1, self.bmnk.2)),
            )),
            _ => Err(candle_core::Error::Msg(
                "frozen matmul: the weight is not on the GPU".into(),
            )),
        }
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // d(x Wᵀ)/dx applied to grad: grad W (rows × out · out × in).
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

/// `x Wᵀ + s·(x Aᵀ) Bᵀ` for a frozen `weight` (`out × in`) and LoRA factors `a` (`rank × in`)
/// and `b` (`out × rank`): one op whose backward gives the gradients of `x`, `a` and `b` (none
/// for the weight). The graph holds only its output: written with separate ops, the frozen
/// product, the low-rank product and their sum (three activation-sized tensors) would all be
/// kept until the backward pass.
pub fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let weight = weight.detach();
    let (rows, inner) = x.dims2()?;
    let (out, weight_inner) = weight.dims2()?;
    let (rank, a_inner) = a.dims2()?;
    if inner != weight_inner || a_inner != inner || b.dims2()? != (out, rank) {
        return Err(crate::Error::Input(format!(
            "LoRA linear: input width {inner}, weight {:?}, A {:?}, B {:?}",
            weight.dims(),
            a.dims(),
            b.dims()
        )));
    }
    if !(x.track_op() || a.track_op() || b.track_op()) {
        let low = x.matmul(&a.t()?)?.affine(scale, 0.0)?.matmul(&b.t()?)?;
        return Ok((x.matmul(&weight.t()?)? + low)?);
    }
    let op = LoraLinear {
        weight_t: weight.t()?,
        weight,
        scale,
        dims: (rows, inner, out, rank),
    };
    Ok(x.apply_op3_arc(a, b, Arc::new(Box::new(op)))?)
}

struct LoraLinear {
    weight: Tensor,
    weight_t: Tensor,
    scale: f64,
    /// (rows, in, out, rank).
    dims: (usize, usize, usize, usize),
}

impl LoraLinear {
    /// The forward pass on any backend's storage: three matmuls, a scale of the `rows × rank`
    /// product and one add.
    #[allow(clippy::too_many_arguments)]
    fn forward<S: BackendStorage>(
        &self,
        x: &S,
        x_layout: &Layout,
        a: &S,
        a_layout: &Layout,
        b: &S,
        b_layout: &Layout,
        weight: &S,
        weight_t_layout: &Layout,
    ) -> candle_core::Result<(S, Shape)> {
        let (rows, inner, out, rank) = self.dims;
        let frozen = x.matmul(weight, (1, rows, out, inner), x_layout, weight_t_layout)?;
        let low_layout = Layout::contiguous((rows, rank));
        let xa = x
            .matmul(
                a,
                (1, rows, rank, inner),
                x_layout,
                &a_layout.transpose(0, 1)?,
            )?
            .affine(&low_layout, self.scale, 0.0)?;
        let low = xa.matmul(
            b,
            (1, rows, out, rank),
            &low_layout,
            &b_layout.transpose(0, 1)?,
        )?;
        let out_layout = Layout::contiguous((rows, out));
        let sum = frozen.binary_impl::<candle_core::op::Add>(&low, &out_layout, &out_layout)?;
        Ok((sum, Shape::from((rows, out))))
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (weight, weight_layout) = self.weight_t.storage_and_layout();
        match &*weight {
            Storage::Cpu(weight) => {
                self.forward(x, x_layout, a, a_layout, b, b_layout, weight, weight_layout)
            }
            _ => Err(candle_core::Error::Msg(
                "LoRA linear: the weight is not on the CPU".into(),
            )),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_layout: &Layout,
        a: &candle_core::CudaStorage,
        a_layout: &Layout,
        b: &candle_core::CudaStorage,
        b_layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (weight, weight_layout) = self.weight_t.storage_and_layout();
        match &*weight {
            Storage::Cuda(weight) => {
                self.forward(x, x_layout, a, a_layout, b, b_layout, weight, weight_layout)
            }
            _ => Err(candle_core::Error::Msg(
                "LoRA linear: the weight is not on the GPU".into(),
            )),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // y = x Wᵀ + s (x Aᵀ) Bᵀ, g = dL/dy:
        // dx = g W + s (g B) A,  dA = s (g B)ᵀ x,  dB = s gᵀ (x Aᵀ).
        let (x, a, b, g) = (x.detach(), a.detach(), b.detach(), grad.detach());
        let gb = g.matmul(&b)?;
        let dx = (g.matmul(&self.weight)? + gb.matmul(&a)?.affine(self.scale, 0.0)?)?;
        let da = gb.t()?.matmul(&x)?.affine(self.scale, 0.0)?;
        let db = g
            .t()?
            .matmul(&x.matmul(&a.t()?)?)?
            .affine(self.scale, 0.0)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn seeded(shape: (usize, usize), seed: u64) -> Tensor {
        // A fixed, irregular fill (no RNG crate needed): values in [-1, 1).
        let n = shape.0 * shape.1;
        let values: Vec<f64> = (0..n)
            .map(|i| {
                let v = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ seed);
                (v >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    /// Value and input gradient equal candle's plain matmul autograd; the weight gets none.
    #[test]
    fn equals_plain_matmul_and_leaves_the_weight_without_gradient() {
        let x = Var::from_tensor(&seeded((5, 7), 1)).unwrap();
        let w = seeded((3, 7), 2);
        let head = seeded((5, 3), 3);

        let ours = matmul_frozen(x.as_tensor(), &w).unwrap();
        let loss = (&ours * &head).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let dx = grads.get(x.as_tensor()).unwrap();

        let w_var = Var::from_tensor(&w).unwrap();
        let plain = x
            .as_tensor()
            .matmul(&w_var.as_tensor().t().unwrap())
            .unwrap();
        let plain_loss = (&plain * &head).unwrap().sum_all().unwrap();
        let plain_grads = plain_loss.backward().unwrap();
        let plain_dx = plain_grads.get(x.as_tensor()).unwrap();

        let diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(diff(&ours, &plain) < 1e-14);
        assert!(diff(dx, plain_dx) < 1e-14);
        assert!(plain_grads.get(w_var.as_tensor()).is_some());
        // The weight was passed as a plain tensor: nothing is recorded for it.
        assert!(grads.get(&w).is_none());
        // candle's own matmul with the same plain weight still computes and stores a gradient
        // for its (transposed) weight operand; ours stores one entry fewer.
        let candle_frozen = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let candle_grads = (&candle_frozen * &head)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(candle_grads.get_ids().count(), grads.get_ids().count() + 1);
    }

    /// The fused LoRA layer against the same sum written with candle's ops (autograd through
    /// plain matmuls, the weight a plain tensor): value and the gradients of x, A and B.
    #[test]
    fn lora_linear_equals_the_unfused_ops() {
        let x = Var::from_tensor(&seeded((6, 5), 11)).unwrap();
        let w = seeded((4, 5), 12);
        let a = Var::from_tensor(&seeded((3, 5), 13)).unwrap();
        let b = Var::from_tensor(&seeded((4, 3), 14)).unwrap();
        let head = seeded((6, 4), 15);
        let scale = 2.5;
        let ours = lora_linear(x.as_tensor(), &w, a.as_tensor(), b.as_tensor(), scale).unwrap();
        let plain = (x.as_tensor().matmul(&w.t().unwrap()).unwrap()
            + x.as_tensor()
                .matmul(&a.as_tensor().t().unwrap())
                .unwrap()
                .matmul(&b.as_tensor().t().unwrap())
                .unwrap()
                .affine(scale, 0.0)
                .unwrap())
        .unwrap();
        let diff = |p: &Tensor, q: &Tensor| {
            (p - q)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        assert!(diff(&ours, &plain) < 1e-13);
        let g_ours = (&ours * &head)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_plain = (&plain * &head)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for var in [&x, &a, &b] {
            let (p, q) = (
                g_ours.get(var.as_tensor()).unwrap(),
                g_plain.get(var.as_tensor()).unwrap(),
            );
            assert!(diff(p, q) < 1e-13, "{}", diff(p, q));
        }
        assert!(g_ours.get(&w).is_none());
        // The unfused sum stores a gradient for the transposed frozen weight too (and for the
        // low-rank product, the scale and the sum's operands); the op stores x, A, B, the output
        // and the loss path only.
        assert!(g_plain.get_ids().count() > g_ours.get_ids().count());
    }

    /// The input gradient against central finite differences (f64), by hand from the loss
    /// `sum(head ∘ x Wᵀ)`.
    #[test]
    fn input_gradient_matches_finite_differences() {
        let x0 = seeded((4, 6), 4);
        let w = seeded((5, 6), 5);
        let head = seeded((4, 5), 6);
        let loss_at = |x: &Tensor| -> f64 {
            (&matmul_frozen(x, &w).unwrap() * &head)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let x = Var::from_tensor(&x0).unwrap();
        let loss = (&matmul_frozen(x.as_tensor(), &w).unwrap() * &head)
            .unwrap()
            .sum_all()
            .unwrap();
        let dx = loss.backward().unwrap().get(x.as_tensor()).unwrap().clone();
        let dx: Vec<Vec<f64>> = dx.to_vec2().unwrap();
        let base: Vec<Vec<f64>> = x0.to_vec2().unwrap();
        let eps = 1e-6;
        for r in 0..4 {
            for c in 0..6 {
                let mut plus = base.clone();
                plus[r][c] += eps;
                let mut minus = base.clone();
                minus[r][c] -= eps;
                let t = |m: Vec<Vec<f64>>| Tensor::new(m, &Device::Cpu).unwrap();
                let numeric = (loss_at(&t(plus)) - loss_at(&t(minus))) / (2.0 * eps);
                assert!(
                    (numeric - dx[r][c]).abs() < 1e-8,
                    "d loss / d x[{r}][{c}]: {numeric} by differences, {} by backward",
                    dx[r][c]
                );
            }
        }
        assert_eq!(x0.dtype(), DType::F64);
    }
}
