//! From token sequences to padded micro-batches: the plan (which sequences go together under a
//! token budget) is a pure function of the lengths; the tensors are right-padded with an
//! attention mask, and every per-token input is shifted to line up with the log-prob of the
//! token it predicts (position `t` scores token `t + 1`).

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// One token sequence to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    /// Per token: 1 if the token is trained (sampled by the policy), 0 otherwise.
    pub loss_mask: Vec<u8>,
    /// Per token: the rollout engine's log-prob (0 where the mask is 0).
    pub rollout_logprobs: Vec<f32>,
    /// Per token: π_old for the ratio, if computed before this update.
    pub old_logprobs: Option<Vec<f32>>,
    /// The advantage of the sample the sequence belongs to (0 for SFT).
    pub advantage: f64,
    /// Index of the sample the sequence belongs to.
    pub sample: usize,
}

impl Sequence {
    pub fn validate(&self) -> Result<()> {
        let n = self.tokens.len();
        if self.loss_mask.len() != n || self.rollout_logprobs.len() != n {
            return Err(Error::Input(format!(
                "sample {}: {} tokens but {} mask entries and {} log-probs",
                self.sample,
                n,
                self.loss_mask.len(),
                self.rollout_logprobs.len()
            )));
        }
        if self.old_logprobs.as_ref().is_some_and(|o| o.len() != n) {
            return Err(Error::Input(format!(
                "sample {}: old log-probs do not match the {n} tokens",
                self.sample
            )));
        }
        if self.loss_mask.iter().any(|&m| m > 1) {
            return Err(Error::Input(format!(
                "sample {}: loss mask entries must be 0 or 1",
                self.sample
            )));
        }
        Ok(())
    }

    /// Tokens that are trained: the first token has no context, so it never counts.
    pub fn n_trained(&self) -> usize {
        self.loss_mask.iter().skip(1).filter(|&&m| m == 1).count()
    }

    /// Cuts the sequence to its first `max_len` tokens; returns whether anything was cut.
    pub fn truncate(&mut self, max_len: usize) -> bool {
        if self.tokens.len() <= max_len {
            return false;
        }
        self.tokens.truncate(max_len);
        self.loss_mask.truncate(max_len);
        self.rollout_logprobs.truncate(max_len);
        if let Some(old) = &mut self.old_logprobs {
            old.truncate(max_len);
        }
        true
    }
}

/// Groups sequence indices into micro-batches whose padded size (rows × longest row) stays
/// within `budget` tokens; a sequence longer than the budget goes alone. Sequences are taken
/// longest first (ties in input order), which keeps padding low and the plan deterministic.
pub fn plan_micro_batches(lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut plan: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let width = longest.max(lengths[i]);
        if !current.is_empty() && width * (current.len() + 1) > budget {
            plan.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(lengths[i]);
        current.push(i);
    }
    if !current.is_empty() {
        plan.push(current);
    }
    plan
}

/// A padded micro-batch on the device.
#[derive(Debug, Clone)]
pub struct MicroBatch {
    /// `[rows, width]` token ids, right-padded with 0.
    pub tokens: Tensor,
    /// `[rows, width]`, 1 for real tokens.
    pub attention_mask: Tensor,
    /// `[rows, width - 1]`, aligned with the log-probs: whether token `t + 1` is trained.
    pub loss_mask: Tensor,
    pub advantages: Tensor,
    pub rollout_logprobs: Tensor,
    pub old_logprobs: Option<Tensor>,
    /// Real (unpadded) tokens.
    pub n_real_tokens: usize,
    /// Trained tokens.
    pub n_trained_tokens: usize,
}

/// Builds the tensors of `sequences` (each at least 2 tokens) in `dtype` on `device`.
pub fn build_micro_batch(
    sequences: &[&Sequence],
    dtype: DType,
    device: &Device,
) -> Result<MicroBatch> {
    let rows = sequences.len();
    let width = sequences.iter().map(|s| s.tokens.len()).max().unwrap_or(0);
    if rows == 0 || width < 2 {
        return Err(Error::Input(
            "a micro-batch needs at least one sequence of at least 2 tokens".into(),
        ));
    }
    let targets = width - 1;
    let with_old = sequences.iter().all(|s| s.old_logprobs.is_some());
    let mut tokens = Vec::with_capacity(rows * width);
    let mut attention = Vec::with_capacity(rows * width);
    let mut loss_mask = Vec::with_capacity(rows * targets);
    let mut advantages = Vec::with_capacity(rows * targets);
    let mut rollout = Vec::with_capacity(rows * targets);
    let mut old = Vec::with_capacity(if with_old { rows * targets } else { 0 });
    let (mut n_real, mut n_trained) = (0, 0);
    for s in sequences {
        let n = s.tokens.len();
        let pad = width - n;
        n_real += n;
        n_trained += s.n_trained();
        tokens.extend(s.tokens.iter().copied().chain(std::iter::repeat_n(0, pad)));
        attention.extend(std::iter::repeat_n(1f32, n).chain(std::iter::repeat_n(0f32, pad)));
        let shifted_mask = s.loss_mask.iter().skip(1).map(|&m| m as f32);
        loss_mask.extend(shifted_mask.chain(std::iter::repeat_n(0f32, pad)));
        advantages.extend(
            std::iter::repeat_n(s.advantage as f32, n - 1).chain(std::iter::repeat_n(0f32, pad)),
        );
        rollout.extend(
            s.rollout_logprobs
                .iter()
                .skip(1)
                .copied()
                .chain(std::iter::repeat_n(0f32, pad)),
        );
        if with_old {
            if let Some(o) = &s.old_logprobs {
                old.extend(
                    o.iter()
                        .skip(1)
                        .copied()
                        .chain(std::iter::repeat_n(0f32, pad)),
                );
            }
        }
    }
    let f = |values: Vec<f32>, cols: usize| -> Result<Tensor> {
        Ok(Tensor::from_vec(values, (rows, cols), device)?.to_dtype(dtype)?)
    };
    // Advantages are kept in f64 until here so an f64 model sees them exactly.
    let advantages = if dtype == DType::F64 {
        let mut exact = Vec::with_capacity(rows * targets);
        for s in sequences {
            let n = s.tokens.len();
            exact.extend(
                std::iter::repeat_n(s.advantage, n - 1).chain(std::iter::repeat_n(0.0, width - n)),
            );
        }
        Tensor::from_vec(exact, (rows, targets), device)?
    } else {
        f(advantages, targets)?
    };
    Ok(MicroBatch {
        tokens: Tensor::from_vec(tokens, (rows, width), device)?,
        attention_mask: f(attention, width)?,
        loss_mask: f(loss_mask, targets)?,
        advantages,
        rollout_logprobs: f(rollout, targets)?,
        old_logprobs: if with_old {
            Some(f(old, targets)?)
        } else {
            None
        },
        n_real_tokens: n_real,
        n_trained_tokens: n_trained,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lengths: &[usize], budget: usize, expected: &[&[usize]]) {
        let plan = plan_micro_batches(lengths, budget);
        let expected: Vec<Vec<usize>> = expected.iter().map(|b| b.to_vec()).collect();
        assert_eq!(plan, expected, "lengths {lengths:?}, budget {budget}");
    }

    #[test]
    fn plans_respect_the_budget() {
        check(&[4, 4, 4, 4], 16, &[&[0, 1, 2, 3]]);
        check(&[4, 4, 4, 4], 8, &[&[0, 1], &[2, 3]]);
        // Longest first: 10 alone (10 + 10 > 12), then 5 and 3 (2 x 5 = 10), then 2.
        check(&[3, 10, 5, 2], 12, &[&[1], &[2, 0], &[3]]);
        // A sequence over the budget still gets its own micro-batch.
        check(&[30, 2], 8, &[&[0], &[1]]);
        check(&[], 8, &[]);
    }

    #[test]
    fn tensors_are_right_padded_and_shifted() {
        let a = Sequence {
            tokens: vec![5, 6, 7, 8],
            loss_mask: vec![0, 0, 1, 1],
            rollout_logprobs: vec![0.0, 0.0, -0.5, -0.25],
            old_logprobs: None,
            advantage: 2.0,
            sample: 0,
        };
        let b = Sequence {
            tokens: vec![9, 10],
            loss_mask: vec![0, 1],
            rollout_logprobs: vec![0.0, -1.0],
            old_logprobs: None,
            advantage: -1.0,
            sample: 1,
        };
        let mb = build_micro_batch(&[&a, &b], DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            mb.tokens.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7, 8], vec![9, 10, 0, 0]]
        );
        assert_eq!(
            mb.attention_mask.to_vec2::<f32>().unwrap(),
            vec![vec![1., 1., 1., 1.], vec![1., 1., 0., 0.]]
        );
        assert_eq!(
            mb.loss_mask.to_vec2::<f32>().unwrap(),
            vec![vec![0., 1., 1.], vec![1., 0., 0.]]
        );
        assert_eq!(
            mb.rollout_logprobs.to_vec2::<f32>().unwrap(),
            vec![vec![0., -0.5, -0.25], vec![-1., 0., 0.]]
        );
        assert_eq!(
            mb.advantages.to_vec2::<f32>().unwrap(),
            vec![vec![2., 2., 2.], vec![-1., 0., 0.]]
        );
        assert_eq!((mb.n_real_tokens, mb.n_trained_tokens), (6, 3));
    }
}
