//! The trainer's gradients are right: through the whole model and the GRPO loss (clipping, TIS
//! and KL all active) they agree with central finite differences in f64, and they do not depend
//! on how the batch is split into micro-batches.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use train::{Algorithm, LossConfig, Objective, Precision, Sample, Sequence, TrainConfig, Trainer};

fn config(micro_batch_tokens: usize, precision: Precision, loss: LossConfig) -> TrainConfig {
    TrainConfig {
        loss,
        micro_batch_tokens,
        logprob_chunk: 3,
        precision,
        max_grad_norm: None,
        ..TrainConfig::default()
    }
}

/// Three sequences of different lengths with prompts, trained tokens and an untrained
/// observation in the middle of the first.
fn sequences() -> Vec<Sequence> {
    let seq = |tokens: Vec<u32>, mask: Vec<u8>, advantage: f64, sample: usize| {
        let n = tokens.len();
        // Placeholder rollout log-probs; `with_old_logprobs` sets them relative to π_old.
        let rollout: Vec<f32> = (0..n)
            .map(|i| {
                if mask[i] == 1 {
                    -3.0 + 0.9 * ((i * 5 + sample) % 4) as f32 - 1.2
                } else {
                    0.0
                }
            })
            .collect();
        Sequence {
            tokens,
            loss_mask: mask,
            rollout_logprobs: rollout,
            old_logprobs: None,
            advantage,
            sample,
        }
    };
    vec![
        seq(
            vec![3, 7, 1, 9, 4, 2, 5, 11, 20, 6],
            vec![0, 0, 1, 1, 0, 0, 1, 1, 1, 1],
            1.3,
            0,
        ),
        seq(vec![8, 13, 17, 2, 2, 9], vec![0, 0, 0, 1, 1, 1], -0.7, 1),
        seq(vec![4, 4, 19, 23, 1], vec![0, 1, 1, 1, 1], 0.4, 2),
    ]
}

/// Old log-probs = current ones shifted by ±0.4 per token, so ratios of 1.49 and 0.67 appear
/// and clipping is active on part of the tokens.
fn with_old_logprobs(trainer: &Trainer, mut seqs: Vec<Sequence>) -> Vec<Sequence> {
    for s in &mut seqs {
        let tokens = Tensor::new(s.tokens.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let lp = model::logprobs::token_log_probs(trainer.model(), &tokens, None, 4)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let mut old = vec![0f32];
        for (i, v) in lp.iter().enumerate() {
            let shift = match i % 3 {
                0 => 0.4,
                1 => -0.4,
                _ => 0.05,
            };
            old.push((v + shift) as f32);
        }
        // Rollout log-probs around π_old: importance weights e^-0.3, e^1 (capped at 2), e^-0.1.
        for (i, r) in s.rollout_logprobs.iter_mut().enumerate() {
            *r = old[i]
                + match i % 3 {
                    0 => 0.3,
                    1 => -1.0,
                    _ => 0.1,
                };
        }
        s.old_logprobs = Some(old);
    }
    seqs
}

fn set_entry(var: &Var, index: usize, value: f64) {
    let mut values = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    values[index] = value;
    var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap())
        .unwrap();
}

fn entry(var: &Var, index: usize) -> f64 {
    var.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[index]
}

#[test]
fn gradients_match_finite_differences_through_model_and_loss() {
    let dir = tempfile::tempdir().unwrap();
    common::write_checkpoint(dir.path(), &common::tiny_config(24, 8, 2), 3, 1.0);
    let loss = LossConfig {
        kl_beta: 0.3,
        tis_cap: Some(2.0),
        ..LossConfig::for_algorithm(Algorithm::Dapo)
    };
    let mut config = config(24, Precision::F64, loss);
    config.optimizer.lr = 0.05;
    config.optimizer.weight_decay = 0.0;
    let mut trainer = Trainer::new(dir.path(), config, &Device::Cpu).unwrap();
    // One update first, so the policy differs from the KL reference (else the KL gradient is 0).
    let warm = Sample {
        segments: vec![common::segment(&[1, 2, 3], &[4, 5, 6], &[-3.0, -3.0, -3.0])],
        reward: 1.0,
        group: "g".into(),
        skill: "s".into(),
    };
    let other = Sample {
        segments: vec![common::segment(&[1, 2, 3], &[7, 8], &[-3.0, -3.0])],
        reward: 0.0,
        ..warm.clone()
    };
    let m = trainer.step(&[warm, other]).unwrap();
    assert!(m.updated && m.n_micro_batches >= 1);

    let seqs = with_old_logprobs(&trainer, sequences());
    let g = trainer.gradients(&seqs, Objective::PolicyGradient).unwrap();
    assert!(
        g.metrics.n_micro_batches >= 2,
        "{:?}",
        g.metrics.n_micro_batches
    );
    assert!(
        g.metrics.clip_fraction > 0.05 && g.metrics.clip_fraction < 0.95,
        "{}",
        g.metrics.clip_fraction
    );
    assert!(
        g.metrics.tis_capped_fraction > 0.0,
        "no TIS weight was capped"
    );
    assert!(g.metrics.kl > 0.0);
    let loss_at = |t: &Trainer| {
        t.gradients(&seqs, Objective::PolicyGradient)
            .unwrap()
            .metrics
            .loss
    };
    let h = 1e-5;
    let mut n_checked = 0;
    for ((name, var), grad) in trainer.vars().iter().zip(&g.grads) {
        let grad = grad
            .as_ref()
            .unwrap_or_else(|| panic!("no gradient reached {name}: the graph is cut"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert!(
            grad.iter().any(|x| x.abs() > 1e-9),
            "zero gradient for {name}"
        );
        let n = grad.len();
        for index in [0, n / 3, n - 1] {
            let original = entry(var, index);
            set_entry(var, index, original + h);
            let plus = loss_at(&trainer);
            set_entry(var, index, original - h);
            let minus = loss_at(&trainer);
            set_entry(var, index, original);
            let numeric = (plus - minus) / (2.0 * h);
            let error =
                (numeric - grad[index]).abs() / (1e-6 + numeric.abs().max(grad[index].abs()));
            assert!(
                error < 1e-4 || (numeric - grad[index]).abs() < 1e-8,
                "{name}[{index}]: analytic {} vs numeric {numeric}",
                grad[index]
            );
            n_checked += 1;
        }
    }
    assert!(n_checked >= 60, "only {n_checked} entries checked");
}

fn grads_of(trainer: &Trainer, seqs: &[Sequence]) -> (usize, Vec<Vec<f64>>) {
    let g = trainer.gradients(seqs, Objective::PolicyGradient).unwrap();
    let grads = g
        .grads
        .iter()
        .map(|t| {
            t.as_ref()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        })
        .collect();
    (g.metrics.n_micro_batches, grads)
}

fn check_partition(precision: Precision, tolerance: f64) {
    let dir = tempfile::tempdir().unwrap();
    common::write_checkpoint(dir.path(), &common::tiny_config(24, 8, 2), 5, 1.0);
    let loss = LossConfig::for_algorithm(Algorithm::Grpo);
    let whole = Trainer::new(
        dir.path(),
        config(1000, precision, loss.clone()),
        &Device::Cpu,
    )
    .unwrap();
    let split = Trainer::new(dir.path(), config(10, precision, loss), &Device::Cpu).unwrap();
    let seqs = with_old_logprobs(&whole, sequences());
    let (n_whole, a) = grads_of(&whole, &seqs);
    let (n_split, b) = grads_of(&split, &seqs);
    assert_eq!((n_whole, n_split), (1, 3));
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(&b) {
        for (u, v) in x.iter().zip(y) {
            worst = worst.max((u - v).abs() / (1e-3 + u.abs().max(v.abs())));
        }
    }
    assert!(
        worst < tolerance,
        "{precision:?}: micro-batching changed the gradient by {worst}"
    );
}

#[test]
fn gradients_do_not_depend_on_the_micro_batch_split() {
    check_partition(Precision::F64, 1e-12);
    check_partition(Precision::F32, 1e-4);
}
