//! Seeded sampling of one token from a row of logits: greedy, temperature, top-k, top-p.
//!
//! Every sampler owns its RNG (ChaCha8, seeded by the caller), so a sequence's samples depend only
//! on its seed and its logits, never on what else shares the batch. Reported log-probabilities
//! are those of the raw model distribution (log-softmax of the logits before temperature and
//! filtering), as vLLM reports them by default.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::{Error, Result};

/// How to pick the next token.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Input(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::Input(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// One sampled token with its log-probability and, if asked, the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
    /// `(token, logprob)` of the most likely tokens, most likely first.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// A sampler with its own RNG.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    n_top_logprobs: usize,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams, n_top_logprobs: usize) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Ok(Self {
            params,
            n_top_logprobs,
            rng,
        })
    }

    /// A uniform number in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn sample(&mut self, logits: &[f32]) -> Result<Sampled> {
        if logits.is_empty() {
            return Err(Error::Input(
                "cannot sample from an empty vocabulary".into(),
            ));
        }
        if logits.iter().any(|l| l.is_nan()) {
            return Err(Error::Input("the model produced NaN logits".into()));
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // exp(l - max) once: the normaliser of the raw distribution and, at temperature 1, the
        // sampling weights too.
        let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
        let log_z = max as f64 + exps.iter().map(|&e| e as f64).sum::<f64>().ln();
        let logprob = |token: usize| (logits[token] as f64 - log_z) as f32;
        let token = if self.params.temperature == 0.0 {
            argmax(logits)
        } else {
            self.sample_tempered(logits, max, &exps)
        };
        let top_logprobs = match self.n_top_logprobs {
            0 => Vec::new(),
            1 => vec![(argmax(logits) as u32, logprob(argmax(logits)))],
            n => top_indices(logits, n)
                .into_iter()
                .map(|t| (t as u32, logprob(t)))
                .collect(),
        };
        Ok(Sampled {
            token: token as u32,
            logprob: logprob(token),
            top_logprobs,
        })
    }

    fn sample_tempered(&mut self, logits: &[f32], max: f32, exps: &[f32]) -> usize {
        let inv_t = 1.0 / self.params.temperature;
        let tempered: Vec<f32>;
        let weights: &[f32] = if inv_t == 1.0 {
            exps
        } else {
            tempered = logits.iter().map(|&l| ((l - max) * inv_t).exp()).collect();
            &tempered
        };
        let vocab = logits.len();
        let top_k = if self.params.top_k == 0 {
            vocab
        } else {
            self.params.top_k.min(vocab)
        };
        if top_k == vocab && self.params.top_p >= 1.0 {
            // Plain sampling over the whole vocabulary in index order.
            let total: f64 = weights.iter().map(|&w| w as f64).sum();
            let mut u = self.uniform() * total;
            for (i, &w) in weights.iter().enumerate() {
                u -= w as f64;
                if u < 0.0 {
                    return i;
                }
            }
            return argmax(logits);
        }
        // Candidates by decreasing logit (ties by index), cut by top-k then top-p.
        let mut candidates = top_indices(logits, top_k);
        let kept: Vec<f64> = candidates.iter().map(|&i| weights[i] as f64).collect();
        let total: f64 = kept.iter().sum();
        let mut keep = candidates.len();
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            for (n, w) in kept.iter().enumerate() {
                cumulative += w / total;
                if cumulative >= self.params.top_p as f64 {
                    keep = n + 1;
                    break;
                }
            }
        }
        candidates.truncate(keep);
        let kept_total: f64 = kept[..keep].iter().sum();
        let mut u = self.uniform() * kept_total;
        for (n, &i) in candidates.iter().enumerate() {
            u -= kept[n];
            if u < 0.0 {
                return i;
            }
        }
        candidates[0]
    }
}

fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest logits, largest first, ties broken by the lower index.
fn top_indices(logits: &[f32], k: usize) -> Vec<usize> {
    let order = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut indices: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(indices.len());
    if k < indices.len() && k > 0 {
        indices.select_nth_unstable_by(k - 1, order);
        indices.truncate(k);
    }
    indices.sort_by(order);
    indices.truncate(k);
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed,
        }
    }

    /// Samples `n` tokens and returns how often each token came up.
    fn histogram(p: SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
        let mut sampler = Sampler::new(p, 0).unwrap();
        let mut counts = vec![0; logits.len()];
        for _ in 0..n {
            counts[sampler.sample(logits).unwrap().token as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_picks_the_first_maximum() {
        assert_eq!(
            histogram(params(0.0, 1.0, 0, 1), &[0.0, 3.0, 3.0, 1.0], 5),
            vec![0, 5, 0, 0]
        );
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        // Probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1; at temperature 2, sqrt of those.
        let probs = [0.1f64, 0.2, 0.3, 0.4];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        for (t, expected) in [
            (1.0f32, probs.to_vec()),
            (2.0, {
                let s: Vec<f64> = probs.iter().map(|p| p.sqrt()).collect();
                let z: f64 = s.iter().sum();
                s.iter().map(|x| x / z).collect()
            }),
        ] {
            let n = 40_000;
            let counts = histogram(params(t, 1.0, 0, 7), &logits, n);
            for (c, e) in counts.iter().zip(&expected) {
                let freq = *c as f64 / n as f64;
                assert!((freq - e).abs() < 0.01, "t={t}: {counts:?} vs {expected:?}");
            }
        }
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits: Vec<f32> = [0.1f64, 0.2, 0.3, 0.4]
            .iter()
            .map(|p| p.ln() as f32)
            .collect();
        let counts = histogram(params(1.0, 1.0, 2, 3), &logits, 2000);
        assert_eq!(&counts[..2], &[0, 0], "{counts:?}");
        // top_p 0.6: 0.4 alone is below, 0.4 + 0.3 reaches it, so tokens 2 and 3 remain.
        let counts = histogram(params(1.0, 0.6, 0, 3), &logits, 2000);
        assert_eq!(&counts[..2], &[0, 0], "{counts:?}");
        assert!(counts[2] > 600 && counts[3] > 900, "{counts:?}");
        // top_p 0.3: only the most likely token.
        assert_eq!(
            histogram(params(1.0, 0.3, 0, 3), &logits, 100),
            vec![0, 0, 0, 100]
        );
    }

    #[test]
    fn same_seed_same_tokens_and_raw_logprobs() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(0.8, 0.9, 20, seed), 3).unwrap();
            (0..20)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        let sampled = &run(5)[0];
        let log_z = logits.iter().map(|&l| (l as f64).exp()).sum::<f64>().ln();
        let expected = logits[sampled.token as usize] as f64 - log_z;
        assert!((sampled.logprob as f64 - expected).abs() < 1e-5);
        assert_eq!(sampled.top_logprobs.len(), 3);
        assert!(sampled.top_logprobs[0].1 >= sampled.top_logprobs[1].1);
    }

    #[test]
    fn bad_parameters_and_logits_are_errors() {
        assert!(Sampler::new(params(-1.0, 1.0, 0, 0), 0).is_err());
        assert!(Sampler::new(params(1.0, 0.0, 0, 0), 0).is_err());
        assert!(Sampler::new(params(f32::NAN, 1.0, 0, 0), 0).is_err());
        let mut s = Sampler::new(params(1.0, 1.0, 0, 0), 0).unwrap();
        assert!(s.sample(&[]).is_err());
        assert!(s.sample(&[0.0, f32::NAN]).is_err());
    }
}
