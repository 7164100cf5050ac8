//! AdamW over candle `Var`s, updated in place (`Var::set` writes into the variable's own
//! storage, so every model built over the variables sees the new weights), and the gradient
//! utilities around it: accumulation across micro-batches and global-norm clipping.
//!
//! The update is PyTorch's `torch.optim.AdamW` (single-tensor path) step for step, so the two
//! can be compared number for number.

use std::collections::{BTreeMap, HashMap};

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

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
                // Two separate buffers: on the CPU the moments are updated in place.
                Ok(Param {
                    decay: var.rank() >= 2,
                    exp_avg: var.as_tensor().zeros_like()?,
                    exp_avg_sq: var.as_tensor().zeros_like()?,
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
            let decay = if param.decay && c.weight_decay > 0.0 {
                1.0 - lr * c.weight_decay
            } else {
                1.0
            };
            if in_place_cpu(param, &grad) {
                // The same arithmetic, in three in-place passes and no new tensors.
                param.exp_avg.inplace_op2(
                    &grad,
                    &Moment {
                        beta: c.beta1,
                        squared: false,
                    },
                )?;
                param.exp_avg_sq.inplace_op2(
                    &grad,
                    &Moment {
                        beta: c.beta2,
                        squared: true,
                    },
                )?;
                value.inplace_op3(
                    &param.exp_avg,
                    &param.exp_avg_sq,
                    &Update {
                        decay,
                        step_size,
                        inv_bias_correction2_sqrt: 1.0 / bias_correction2_sqrt,
                        eps: c.eps,
                    },
                )?;
                continue;
            }
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

    /// The moments as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`), for checkpoints:
    /// copies, since the optimiser updates its own in place.
    pub fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.exp_avg.copy()?);
            out.insert(format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.copy()?);
        }
        Ok(out)
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
                // An owned copy: the moments are updated in place.
                Ok(t.to_dtype(dtype)?.copy()?)
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

/// Whether the step can run in place on the CPU: the variable, its moments and the gradient
/// are contiguous f32 or f64 CPU tensors of one dtype.
fn in_place_cpu(param: &Param, grad: &Tensor) -> bool {
    let value = param.var.as_tensor();
    let dtype = value.dtype();
    matches!(dtype, DType::F32 | DType::F64)
        && [value, &param.exp_avg, &param.exp_avg_sq, grad]
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == dtype && t.is_contiguous())
}

/// The element range a contiguous `layout` covers.
fn span(layout: &Layout) -> candle_core::Result<std::ops::Range<usize>> {
    layout
        .contiguous_offsets()
        .map(|(start, end)| start..end)
        .ok_or_else(|| candle_core::Error::Msg("AdamW: a non-contiguous tensor".into()))
}

fn unsupported() -> candle_core::Error {
    candle_core::Error::Msg("AdamW in place: f32 or f64 tensors of one dtype".into())
}

/// A moment in place: `m ← β m + (1 − β) g`, or `v ← β v + (1 − β) g²`.
struct Moment {
    beta: f64,
    squared: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        moment: &mut CpuStorage,
        moment_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: model::fused::Float>(m: &mut [T], g: &[T], beta: f64, squared: bool) {
            let (beta, rest) = (T::from_f64(beta), T::from_f64(1.0 - beta));
            model::fused::for_each_block_mut(m, |offset, m| {
                let g = &g[offset..offset + m.len()];
                for (m, &g) in m.iter_mut().zip(g) {
                    let g = if squared { g * g } else { g };
                    *m = *m * beta + g * rest;
                }
            });
        }
        let (ms, gs) = (span(moment_layout)?, span(grad_layout)?);
        match (moment, grad) {
            (CpuStorage::F32(m), CpuStorage::F32(g)) => {
                run(&mut m[ms], &g[gs], self.beta, self.squared)
            }
            (CpuStorage::F64(m), CpuStorage::F64(g)) => {
                run(&mut m[ms], &g[gs], self.beta, self.squared)
            }
            _ => return Err(unsupported()),
        }
        Ok(())
    }
}

/// The parameter in place: `p ← p · decay − step_size · m / (sqrt(v) / sqrt(bc2) + eps)`.
struct Update {
    decay: f64,
    step_size: f64,
    inv_bias_correction2_sqrt: f64,
    eps: f64,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        m: &CpuStorage,
        m_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<()> {
        fn run<T: model::fused::Float>(p: &mut [T], m: &[T], v: &[T], op: &Update) {
            let decay = T::from_f64(op.decay);
            let step = T::from_f64(op.step_size);
            let inv_bc2 = T::from_f64(op.inv_bias_correction2_sqrt);
            let eps = T::from_f64(op.eps);
            model::fused::for_each_block_mut(p, |offset, p| {
                let span = offset..offset + p.len();
                let (m, v) = (&m[span.clone()], &v[span]);
                for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                    let denom = v.sqrt() * inv_bc2 + eps;
                    *p = *p * decay - (m / denom) * step;
                }
            });
        }
        let (ps, ms, vs) = (span(param_layout)?, span(m_layout)?, span(v_layout)?);
        match (param, m, v) {
            (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)) => {
                run(&mut p[ps], &m[ms], &v[vs], self)
            }
            (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)) => {
                run(&mut p[ps], &m[ms], &v[vs], self)
            }
            _ => return Err(unsupported()),
        }
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
        total += model::fused::sum_of_squares(g)?;
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
    /// The in-place CPU step (f32, many blocks of the pool) against the same formulas written
    /// with candle's tensor ops, bit for bit over three steps, for a decayed matrix and an
    /// undecayed vector; a moment snapshot taken for a checkpoint does not move afterwards.
    #[test]
    fn in_place_step_equals_the_tensor_formulas() {
        let device = Device::Cpu;
        let n = 3 * model::fused::PAR_BLOCK + 5;
        let fill = |seed: u32, scale: f32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
                .map(|x| x * scale)
                .collect()
        };
        let matrix =
            Var::from_tensor(&Tensor::from_vec(fill(1, 1.0), (n, 1), &device).unwrap()).unwrap();
        let vector =
            Var::from_tensor(&Tensor::from_vec(fill(2, 1.0), n, &device).unwrap()).unwrap();
        let config = AdamWConfig {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(
            vec![("a".into(), matrix.clone()), ("b".into(), vector.clone())],
            config.clone(),
        )
        .unwrap();
        // The reference: PyTorch's single-tensor AdamW with candle's ops.
        let mut reference: Vec<(Tensor, Tensor, Tensor, bool)> = [&matrix, &vector]
            .iter()
            .map(|v| {
                let t = v.as_tensor().copy().unwrap();
                let z = t.zeros_like().unwrap();
                (t, z.clone(), z, v.rank() >= 2)
            })
            .collect();
        let mut snapshot = None;
        for step in 1..=3 {
            let grads: Vec<Option<Tensor>> = [(&matrix, 10 + step), (&vector, 20 + step)]
                .iter()
                .map(|(v, seed)| {
                    Some(Tensor::from_vec(fill(*seed, 0.3), v.dims(), &device).unwrap())
                })
                .collect();
            let lr = 0.01 * step as f64;
            opt.step(&grads, lr).unwrap();
            let (b1, b2) = (config.beta1, config.beta2);
            let bc1 = 1.0 - b1.powi(step as i32);
            let bc2_sqrt = (1.0 - b2.powi(step as i32)).sqrt();
            for ((p, m, v, decay), g) in reference.iter_mut().zip(&grads) {
                let g = g.as_ref().unwrap();
                *m = (m.affine(b1, 0.0).unwrap() + g.affine(1.0 - b1, 0.0).unwrap()).unwrap();
                *v = (v.affine(b2, 0.0).unwrap() + g.sqr().unwrap().affine(1.0 - b2, 0.0).unwrap())
                    .unwrap();
                let factor = if *decay {
                    1.0 - lr * config.weight_decay
                } else {
                    1.0
                };
                let denom = v
                    .sqrt()
                    .unwrap()
                    .affine(1.0 / bc2_sqrt, config.eps)
                    .unwrap();
                let update = m.div(&denom).unwrap().affine(lr / bc1, 0.0).unwrap();
                *p = (p.affine(factor, 0.0).unwrap() - update).unwrap();
            }
            if step == 1 {
                snapshot = Some(opt.state_tensors().unwrap());
            }
        }
        for (var, (expected, _, _, _)) in [&matrix, &vector].iter().zip(&reference) {
            let got = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let want = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
        // The snapshot after step 1 still holds step 1's first moment: (1 − β1) g₁.
        let snapshot = snapshot.unwrap();
        let m1 = snapshot["exp_avg.b"].to_vec1::<f32>().unwrap();
        let g1 = fill(21, 0.3);
        assert!(m1.iter().zip(&g1).all(|(m, g)| (m - g * 0.1).abs() < 1e-6));
        let now = opt.state_tensors().unwrap()["exp_avg.b"]
            .to_vec1::<f32>()
            .unwrap();
        assert_ne!(m1, now);
    }

    #[test]
    fn global_norm_equals_the_f64_sum() {
        let device = Device::Cpu;
        let n = 2 * model::fused::PAR_BLOCK + 3;
        let values: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 7.0).collect();
        let expected = values.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() * 2.0;
        let g = Tensor::from_vec(values, n, &device).unwrap();
        let norm = global_norm(&[Some(g.clone()), None, Some(g)]).unwrap();
        assert!((norm - expected.sqrt()).abs() < 1e-9 * expected.sqrt());
    }

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
