//! `x Wᵀ` for a weight that is never trained (a LoRA base, or any plain tensor): the backward
//! pass returns the gradient of `x` only.
//!
//! candle's own matmul backward computes the gradient of both operands whatever they are, so a
//! frozen weight would still cost a weight-sized matmul (`gradᵀ x`) and a weight-sized buffer
//! per layer and micro-batch. Here the product is one custom op on the graph of `x` (its forward
//! is the backend's matmul, its backward `grad W`).

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

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
