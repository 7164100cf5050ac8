//! AdamW over candle `Var`s, updated in place (`Var::set` writes into the variable's own
//! storage, so every model built over the variables sees the new weights), and the gradient
//! utilities around it: accumulation across micro-batches and global-norm clipping.
//!
//! The update is PyTorch's `torch.optim.AdamW` (single-tensor path) step for step, so the two
//! can be compared number for number.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor, Var};

use crate::config::AdamWConfig;
use crate::{Error, Result};

/// One trainable tensor and its moment estimates.
#[derive(Debug)]
struct Param {
    name: String,
    var: Var,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    decay: bool,
}

/// AdamW with decoupled weight decay on matrices only.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Param>,
    /// Updates done so far (the bias correction uses `n_updates + 1`).
    n_updates: u64,
}

impl AdamW {
    /// `vars` in a fixed order (the trainer sorts them by name); moments start at zero.
    pub fn new(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Param {
                    decay: var.rank() >= 2,
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                    name,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            params,
            n_updates: 0,
        })
    }

    pub fn n_updates(&self) -> u64 {
        self.n_updates
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The variables, in optimiser order.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.params.iter().map(|p| (p.name.as_str(), &p.var))
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to the i-th variable (`None`:
    /// no gradient reached it, so only weight decay applies, as in PyTorch when `grad` is zero).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::Input(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        let c = &self.config;
        let t = (self.n_updates + 1) as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias_correction1;
        for (param, grad) in self.params.iter_mut().zip(grads) {
            let value = param.var.as_tensor();
            let grad = match grad {
                Some(g) => g.to_dtype(value.dtype())?,
                None => value.zeros_like()?,
            };
            param.exp_avg = param
                .exp_avg
                .affine(c.beta1, 0.0)?
                .add(&grad.affine(1.0 - c.beta1, 0.0)?)?;
            param.exp_avg_sq = param
                .exp_avg_sq
                .affine(c.beta2, 0.0)?
                .add(&grad.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
            let decayed = if param.decay && c.weight_decay > 0.0 {
                value.affine(1.0 - lr * c.weight_decay, 0.0)?
            } else {
                value.copy()?
            };
            let denom = param
                .exp_avg_sq
                .sqrt()?
                .affine(1.0 / bias_correction2_sqrt, c.eps)?;
            let update = param.exp_avg.div(&denom)?.affine(step_size, 0.0)?;
            param.var.set(&decayed.sub(&update)?)?;
        }
        self.n_updates += 1;
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`), for checkpoints.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.exp_avg.clone());
            out.insert(format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.clone());
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state_tensors`] and the update count.
    pub fn load_state(
        &mut self,
        mut tensors: HashMap<String, Tensor>,
        n_updates: u64,
    ) -> Result<()> {
        for p in &mut self.params {
            let dims = p.var.dims().to_vec();
            let dtype = p.var.dtype();
            let mut take = |key: String| -> Result<Tensor> {
                let t = tensors
                    .remove(&key)
                    .ok_or_else(|| Error::Input(format!("optimiser state has no tensor {key}")))?;
                if t.dims() != dims.as_slice() {
                    return Err(Error::Input(format!(
                        "optimiser state {key} has shape {:?}, the parameter {dims:?}",
                        t.dims()
                    )));
                }
                Ok(t.to_dtype(dtype)?)
            };
            p.exp_avg = take(format!("exp_avg.{}", p.name))?;
            p.exp_avg_sq = take(format!("exp_avg_sq.{}", p.name))?;
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::Input(format!(
                "optimiser state has a tensor for an unknown parameter: {extra}"
            )));
        }
        self.n_updates = n_updates;
        Ok(())
    }
}

/// Adds `grad` into `slot` (summing micro-batch gradients).
pub fn accumulate(slot: &mut Option<Tensor>, grad: &Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(sum) => (sum + grad)?.detach(),
        None => grad.detach(),
    });
    Ok(())
}

/// `sqrt(Σ g²)` over every gradient, computed in f64.
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut total = 0.0;
    for g in grads.iter().flatten() {
        total += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Scales every gradient by `max_norm / (norm + 1e-6)` when the global norm exceeds `max_norm`
/// (PyTorch's `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// One AdamW step by hand (PyTorch's formulas): p = 1, g = 0.5, lr = 0.1, wd = 0.01.
    /// m = 0.05, v = 0.00025, bias corrections 0.1 and 0.001;
    /// denom = sqrt(0.00025) / sqrt(0.001) + 1e-8 = 0.5 + 1e-8; step size = 0.1 / 0.1 = 1;
    /// p = 1 · (1 − 0.1 · 0.01) − 1 · 0.05 / (0.5 + 1e-8) = 0.999 − 0.099999998 = 0.899000002.
    /// A vector (rank 1) is not decayed: 1 − 0.099999998 = 0.900000002.
    /// Second step with g = −0.5: m = 0.045 − 0.05 = −0.005, v = 0.00024975 + 0.00025 = 0.00049975,
    /// bc1 = 0.19, bc2 = 0.001999; denom = sqrt(0.00049975 / 0.001999) + 1e-8 = 0.5000000 (0.49999...);
    /// p = 0.899000002 · 0.999 − (0.1 / 0.19) · (−0.005) / denom.
    #[test]
    fn adamw_matches_hand_computed_steps() {
        let device = Device::Cpu;
        let matrix = Var::from_tensor(&Tensor::new(&[[1.0f64]], &device).unwrap()).unwrap();
        let vector = Var::from_tensor(&Tensor::new(&[1.0f64], &device).unwrap()).unwrap();
        let config = AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let mut opt = AdamW::new(
            vec![("m".into(), matrix.clone()), ("v".into(), vector.clone())],
            config,
        )
        .unwrap();
        let g1 = |x: f64, shape: &[usize]| {
            Some(Tensor::new(&[x], &device).unwrap().reshape(shape).unwrap())
        };
        opt.step(&[g1(0.5, &[1, 1]), g1(0.5, &[1])], 0.1).unwrap();
        let m = matrix
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        let v = vector.as_tensor().to_vec1::<f64>().unwrap()[0];
        assert!((m - 0.899000002).abs() < 1e-12, "{m}");
        assert!((v - 0.900000002).abs() < 1e-12, "{v}");

        opt.step(&[g1(-0.5, &[1, 1]), g1(-0.5, &[1])], 0.1).unwrap();
        let v_hat: f64 = 0.00049975 / 0.001999;
        let denom = v_hat.sqrt() + 1e-8;
        let expected = 0.899000002 * 0.999 - (0.1 / 0.19) * (-0.005) / denom;
        let m = matrix
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
        assert!((m - expected).abs() < 1e-12, "{m} vs {expected}");
        assert_eq!(opt.n_updates(), 2);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let device = Device::Cpu;
        let mut grads = vec![
            Some(Tensor::new(&[3.0f64], &device).unwrap()),
            None,
            Some(Tensor::new(&[[4.0f64]], &device).unwrap()),
        ];
        let norm = clip_global_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        let after = global_norm(&grads).unwrap();
        assert!((after - 5.0 / (5.0 + 1e-6)).abs() < 1e-12, "{after}");
        // Under the limit nothing changes.
        let norm = clip_global_norm(&mut grads, 10.0).unwrap();
        assert!((norm - after).abs() < 1e-15);
    }
}
