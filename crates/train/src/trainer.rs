//! The trainer: one policy model over trainable variables, its optimiser, and the step that turns
//! a batch of scored samples into one AdamW update. This is the API the GRPO loop calls:
//! [`Trainer::step`] with rollouts, [`Trainer::policy_model`] / [`Trainer::weights`] to hand the
//! new weights to the generation engine, [`Trainer::save_checkpoint`] to persist.
//!
//! The trainer never samples and never reads trajectories from disk: rollouts come in as
//! [`Sample`]s; it owns no randomness (a step is a deterministic function of the weights, the
//! optimiser state and the batch).
//!
//! With [`crate::LoraConfig`] the model is built over the frozen base weights as plain tensors
//! (no gradient reaches them, the optimiser never sees them) plus adapter variables, which are
//! the only trainable tensors; [`Trainer::weights`] and [`Trainer::policy_model`] hand out the
//! adapters merged into the base, so generation needs no LoRA code.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarBuilder;
use model::decoder::DecoderSpec;
use model::logprobs::token_log_probs;
use model::lora::LoraSpec;
use model::CausalLm;

use crate::batch::{build_micro_batch, plan_micro_batches, MicroBatch, Sequence};
use crate::config::TrainConfig;
use crate::loss::{policy_loss, sft_loss, LossSums, TokenInputs};
use crate::optim::{accumulate, clip_global_norm, global_norm, AdamW};
use crate::samples::{prepare, sample_metrics, Sample, StepMetrics};
use crate::{Error, Result};

/// What a step's loss is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// The clipped policy gradient of the trainer's [`crate::LossConfig`].
    PolicyGradient,
    /// Masked NLL.
    Sft,
}

/// A copy of the weights at one version, detached from the trainer's variables.
#[derive(Debug, Clone)]
pub struct WeightSnapshot {
    pub version: u64,
    pub tensors: HashMap<String, Tensor>,
}

/// Gradients of one batch, in optimiser order, with what computing them found.
#[derive(Debug)]
pub struct Gradients {
    pub grads: Vec<Option<Tensor>>,
    pub metrics: StepMetrics,
}

/// What a LoRA trainer keeps besides its adapter variables.
pub(crate) struct LoraState {
    pub(crate) spec: LoraSpec,
    pub(crate) decoder_spec: DecoderSpec,
    /// The frozen base weights under their HF names (plain tensors: no gradient, never updated).
    pub(crate) base: HashMap<String, Tensor>,
    /// With `precision = "bf16"`: the base cast to bf16 once (it never changes), for the bf16
    /// copy of each step.
    pub(crate) compute_base: Option<HashMap<String, Tensor>>,
}

/// The policy under training; see the module documentation.
pub struct Trainer {
    pub(crate) config: TrainConfig,
    pub(crate) device: Device,
    /// The checkpoint the run started from: the KL reference comes from it.
    pub(crate) source_dir: PathBuf,
    /// Where config.json and the tokenizer files are copied from into exports.
    pub(crate) files_dir: PathBuf,
    pub(crate) model_config: serde_json::Value,
    pub(crate) model: CausalLm,
    pub(crate) reference: Option<CausalLm>,
    pub(crate) optimizer: AdamW,
    pub(crate) step: u64,
    pub(crate) weight_version: u64,
    /// Present when training LoRA adapters; the optimiser then holds only the adapters.
    pub(crate) lora: Option<LoraState>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("source_dir", &self.source_dir)
            .field("step", &self.step)
            .field("weight_version", &self.weight_version)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// Loads the HF checkpoint in `model_dir` as trainable variables (and, with a KL term, a
    /// frozen copy as the reference).
    pub fn new(model_dir: &Path, config: TrainConfig, device: &Device) -> Result<Self> {
        Self::build(model_dir, model_dir, config, device, None)
    }

    /// Config and tokenizer files from `weights_dir`; the KL reference from `source_dir`.
    /// Full fine-tuning takes the weights from `weights_dir`. LoRA takes the frozen base from
    /// `source_dir` (a checkpoint's `model.safetensors` holds merged weights, which would not
    /// give the base back bit for bit) and the adapters from `adapters_dir` (a checkpoint), or
    /// fresh ones from the config's seed.
    pub(crate) fn build(
        weights_dir: &Path,
        source_dir: &Path,
        config: TrainConfig,
        device: &Device,
        adapters_dir: Option<&Path>,
    ) -> Result<Self> {
        config.validate()?;
        let model_config = model::model::read_config(weights_dir)?;
        let (model, vars, reference, lora) = match &config.lora {
            Some(lora) => {
                let (model, vars, reference, state) = Self::build_lora(
                    &model_config,
                    source_dir,
                    &config,
                    lora,
                    device,
                    adapters_dir,
                )?;
                (model, vars, reference, Some(state))
            }
            None => {
                let (model, vars) = Self::build_full(&model_config, weights_dir, &config, device)?;
                let reference = if config.loss.kl_beta > 0.0 {
                    Some(CausalLm::load(
                        source_dir,
                        config.precision.dtype(),
                        device,
                    )?)
                } else {
                    None
                };
                (model, vars, reference, None)
            }
        };
        let optimizer = AdamW::new(vars, config.optimizer.clone())?;
        Ok(Self {
            config,
            device: device.clone(),
            source_dir: source_dir.to_path_buf(),
            files_dir: weights_dir.to_path_buf(),
            model_config,
            model,
            reference,
            optimizer,
            step: 0,
            weight_version: 0,
            lora,
        })
    }

    /// Every weight of `weights_dir` as a trainable variable, sorted by name.
    fn build_full(
        model_config: &serde_json::Value,
        weights_dir: &Path,
        config: &TrainConfig,
        device: &Device,
    ) -> Result<(CausalLm, Vec<(String, Var)>)> {
        let dtype = config.precision.dtype();
        let tensors = model::weights::load(weights_dir, dtype, device)?;
        let mut names: Vec<String> = tensors.keys().cloned().collect();
        names.sort();
        let var_map = model::weights::into_var_map(tensors)?;
        let model = CausalLm::new(
            model_config,
            VarBuilder::from_varmap(&var_map, dtype, device),
        )?;
        let vars: Vec<(String, Var)> = {
            let data = var_map
                .data()
                .lock()
                .map_err(|_| Error::Input("variable map lock poisoned".into()))?;
            if data.len() != names.len() {
                let missing: Vec<&String> = data.keys().filter(|k| !names.contains(k)).collect();
                return Err(Error::checkpoint(
                    weights_dir,
                    format!("the model needs tensors the checkpoint lacks: {missing:?}"),
                ));
            }
            names
                .iter()
                .filter_map(|n| data.get(n).map(|v| (n.clone(), v.clone())))
                .collect()
        };
        Ok((model, vars))
    }

    /// The base of `source_dir` as plain tensors, adapter variables (sorted by name) from
    /// `adapters_dir` or the seed, the adapted model over both, and (with a KL term) the base
    /// model as the reference, sharing the base tensors.
    #[allow(clippy::type_complexity)]
    fn build_lora(
        model_config: &serde_json::Value,
        source_dir: &Path,
        config: &TrainConfig,
        lora: &crate::LoraConfig,
        device: &Device,
        adapters_dir: Option<&Path>,
    ) -> Result<(CausalLm, Vec<(String, Var)>, Option<CausalLm>, LoraState)> {
        let dtype = config.precision.dtype();
        let spec = lora.spec();
        let decoder_spec = CausalLm::spec_of(model_config)?;
        let base = model::weights::load(source_dir, dtype, device)?;
        let adapters = match adapters_dir {
            Some(dir) => {
                crate::checkpoint::read_adapters(dir, &decoder_spec, &spec, dtype, device)?
            }
            None => model::lora::init_adapters(&decoder_spec, &spec, lora.seed, dtype, device)?,
        };
        let vars: Vec<(String, Var)> = adapters
            .into_iter()
            .map(|(name, t)| Ok((name, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        // The model reads the variables' own tensors (same id), so backward finds them.
        let mut tensors = base.clone();
        for (name, var) in &vars {
            tensors.insert(name.clone(), var.as_tensor().clone());
        }
        let model = CausalLm::new_with_lora(
            model_config,
            VarBuilder::from_tensors(tensors, dtype, device),
            Some(&spec),
        )?;
        let reference = if config.loss.kl_beta > 0.0 {
            let vb = VarBuilder::from_tensors(base.clone(), dtype, device);
            Some(CausalLm::new(model_config, vb)?)
        } else {
            None
        };
        let compute_dtype = config.precision.compute_dtype();
        let compute_base = if compute_dtype != dtype {
            Some(
                base.iter()
                    .map(|(name, t)| Ok((name.clone(), t.to_dtype(compute_dtype)?)))
                    .collect::<Result<_>>()?,
            )
        } else {
            None
        };
        let state = LoraState {
            spec,
            decoder_spec,
            base,
            compute_base,
        };
        Ok((model, vars, reference, state))
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Optimiser steps done.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Incremented by every update; generation engines tag rollouts with it.
    pub fn weight_version(&self) -> u64 {
        self.weight_version
    }

    /// The model under training (its weights are the trainer's variables: do not generate with
    /// it while a step runs).
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    pub fn model_config(&self) -> &serde_json::Value {
        &self.model_config
    }

    pub fn source_dir(&self) -> &Path {
        &self.source_dir
    }

    /// The trainable variables, in optimiser order (sorted by name): every weight, or with LoRA
    /// only the adapters (`...q_proj.lora_A.weight`, ...). Setting one changes the model in
    /// place.
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.optimizer
            .vars()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    /// Copies of the current weights under their HF names, with the weight version. With LoRA,
    /// the adapters merged into the base (`W + alpha/rank · B A`); the unadapted base tensors are
    /// shared, not copied (they are never updated).
    pub fn weights(&self) -> Result<WeightSnapshot> {
        let mut trained = HashMap::new();
        for (name, var) in self.optimizer.vars() {
            trained.insert(name.to_string(), var.as_tensor().copy()?.detach());
        }
        let tensors = match &self.lora {
            Some(lora) => model::lora::merge(&lora.base, &trained, &lora.decoder_spec, &lora.spec)?,
            None => trained,
        };
        Ok(WeightSnapshot {
            version: self.weight_version,
            tensors,
        })
    }

    /// With LoRA, copies of the adapters under PEFT's names
    /// (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`, ...); else `None`.
    pub fn adapter_tensors(&self) -> Result<Option<BTreeMap<String, Tensor>>> {
        if self.lora.is_none() {
            return Ok(None);
        }
        let mut out = BTreeMap::new();
        for (name, var) in self.optimizer.vars() {
            let name = format!("{}{name}", model::lora::PEFT_PREFIX);
            out.insert(name, var.as_tensor().copy()?.detach());
        }
        Ok(Some(out))
    }

    /// The frozen base weights of a LoRA trainer (the tensors its model reads); `None` for full
    /// fine-tuning.
    pub fn base_weights(&self) -> Option<&HashMap<String, Tensor>> {
        self.lora.as_ref().map(|l| &l.base)
    }

    /// A model over a copy of the current weights, for an in-process generation engine
    /// (`model::generate::Engine::new(model, ..)`), with its weight version.
    pub fn policy_model(&self) -> Result<(u64, CausalLm)> {
        let snapshot = self.weights()?;
        let dtype = self.config.precision.dtype();
        let vb = VarBuilder::from_tensors(snapshot.tensors, dtype, &self.device);
        Ok((snapshot.version, CausalLm::new(&self.model_config, vb)?))
    }

    /// Current learning rate (for the next step).
    pub fn lr(&self) -> f64 {
        self.config.schedule.lr(self.config.optimizer.lr, self.step)
    }

    /// One GRPO-family update from scored rollouts: group advantages, micro-batches, summed
    /// gradients, clipping, AdamW.
    pub fn step(&mut self, samples: &[Sample]) -> Result<StepMetrics> {
        let gradients = self.policy_gradients(samples)?;
        self.apply(gradients)
    }

    /// One SFT update on `sequences` (their loss masks say which tokens are trained).
    pub fn sft_step(&mut self, sequences: &[Sequence]) -> Result<StepMetrics> {
        let mut gradients = self.gradients(sequences, Objective::Sft)?;
        gradients.metrics.n_samples = sequences.len();
        self.apply(gradients)
    }

    /// Applies summed gradients: global-norm clipping, then AdamW at the scheduled rate.
    pub fn apply(&mut self, gradients: Gradients) -> Result<StepMetrics> {
        let Gradients {
            mut grads,
            mut metrics,
        } = gradients;
        let start = Instant::now();
        metrics.step = self.step;
        metrics.lr = self.lr();
        if metrics.n_trained_tokens == 0 {
            metrics.weight_version = self.weight_version;
            return Ok(metrics);
        }
        metrics.grad_norm = match self.config.max_grad_norm {
            Some(max) => clip_global_norm(&mut grads, max)?,
            None => global_norm(&grads)?,
        };
        if !metrics.grad_norm.is_finite() {
            return Err(Error::Input(format!(
                "step {}: the gradient norm is {} (loss {}); the update was not applied",
                self.step, metrics.grad_norm, metrics.loss
            )));
        }
        self.optimizer.step(&grads, metrics.lr)?;
        self.step += 1;
        self.weight_version += 1;
        metrics.updated = true;
        metrics.weight_version = self.weight_version;
        metrics.seconds += start.elapsed().as_secs_f64();
        metrics.tokens_per_second = metrics.n_real_tokens as f64 / metrics.seconds.max(1e-9);
        Ok(metrics)
    }

    /// The gradients of one GRPO-family update on all of `samples` (π_old = the current policy).
    pub fn policy_gradients(&self, samples: &[Sample]) -> Result<Gradients> {
        let prepared = prepare(samples, &self.config)?;
        let mut gradients = self.gradients(&prepared.sequences, Objective::PolicyGradient)?;
        sample_metrics(&mut gradients.metrics, samples, &prepared, 0..samples.len());
        Ok(gradients)
    }

    /// Several updates from one batch of rollouts (PPO-style mini-batches): advantages over the
    /// whole batch, π_old computed once before the first update, then `n_minibatches` updates on
    /// consecutive slices of `samples` (keep a group's samples together if the split should not
    /// cut groups). With more than one update, the clip bounds how far later updates move from
    /// π_old. One [`StepMetrics`] per update; `n_minibatches = 1` is [`Trainer::step`].
    pub fn step_minibatches(
        &mut self,
        samples: &[Sample],
        n_minibatches: usize,
    ) -> Result<Vec<StepMetrics>> {
        if n_minibatches == 0 || n_minibatches > samples.len().max(1) {
            return Err(Error::Input(format!(
                "n_minibatches must be between 1 and the {} samples, got {n_minibatches}",
                samples.len()
            )));
        }
        let mut prepared = prepare(samples, &self.config)?;
        if n_minibatches > 1 {
            let old = self.sequence_logprobs(&prepared.sequences)?;
            for (s, o) in prepared.sequences.iter_mut().zip(old) {
                s.old_logprobs = Some(o);
            }
        }
        let n = samples.len();
        let mut out = Vec::with_capacity(n_minibatches);
        for k in 0..n_minibatches {
            let range = k * n / n_minibatches..(k + 1) * n / n_minibatches;
            let part: Vec<Sequence> = prepared
                .sequences
                .iter()
                .filter(|s| range.contains(&s.sample))
                .cloned()
                .collect();
            let mut gradients = self.gradients(&part, Objective::PolicyGradient)?;
            sample_metrics(&mut gradients.metrics, samples, &prepared, range);
            out.push(self.apply(gradients)?);
        }
        Ok(out)
    }

    /// Per-token log-probs of each sequence under the current weights (no gradient kept), laid
    /// out like [`Sequence::rollout_logprobs`]: entry `t` scores token `t`, entry 0 is 0.
    pub fn sequence_logprobs(&self, sequences: &[Sequence]) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); sequences.len()];
        let lengths: Vec<usize> = sequences.iter().map(|s| s.tokens.len()).collect();
        let dtype = self.config.precision.dtype();
        let bf16 = self.bf16_model()?;
        for indices in plan_micro_batches(&lengths, self.config.micro_batch_tokens) {
            let short: Vec<usize> = indices
                .iter()
                .copied()
                .filter(|&i| lengths[i] < 2)
                .collect();
            for i in short {
                out[i] = vec![0.0; lengths[i]];
            }
            let members: Vec<usize> = indices.into_iter().filter(|&i| lengths[i] >= 2).collect();
            if members.is_empty() {
                continue;
            }
            let refs: Vec<&Sequence> = members.iter().map(|&i| &sequences[i]).collect();
            let batch = build_micro_batch(&refs, dtype, &self.device)?;
            let rows = token_log_probs(
                bf16.as_ref().unwrap_or(&self.model),
                &batch.tokens,
                Some(&batch.attention_mask),
                self.config.logprob_chunk,
            )?
            .detach()
            .to_dtype(candle_core::DType::F32)?
            .to_vec2::<f32>()?;
            for (&i, row) in members.iter().zip(rows) {
                let mut values = Vec::with_capacity(lengths[i]);
                values.push(0.0);
                values.extend_from_slice(&row[..lengths[i] - 1]);
                out[i] = values;
            }
        }
        Ok(out)
    }

    /// Summed gradients of `objective` over `sequences`, normalised by their total trained-token
    /// count, computed micro-batch by micro-batch (the result does not depend on the split).
    pub fn gradients(&self, sequences: &[Sequence], objective: Objective) -> Result<Gradients> {
        let start = Instant::now();
        let max_len = self
            .config
            .max_seq_len
            .unwrap_or(usize::MAX)
            .min(self.model.spec().max_position_embeddings);
        let vocab = self.model.spec().vocab_size;
        let mut kept: Vec<Sequence> = Vec::with_capacity(sequences.len());
        let mut n_truncated = 0;
        for s in sequences {
            s.validate()?;
            if let Some(bad) = s.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(Error::Input(format!(
                    "sample {}: token {bad} is outside the model's vocabulary of {vocab}",
                    s.sample
                )));
            }
            let mut s = s.clone();
            n_truncated += usize::from(s.truncate(max_len));
            if s.tokens.len() >= 2 && s.n_trained() > 0 {
                kept.push(s);
            }
        }
        let n_global: usize = kept.iter().map(Sequence::n_trained).sum();
        let mut grads: Vec<Option<Tensor>> = vec![None; self.optimizer.vars().count()];
        let mut metrics = StepMetrics {
            n_sequences: kept.len(),
            n_truncated_sequences: n_truncated,
            n_trained_tokens: n_global,
            ..StepMetrics::default()
        };
        if n_global == 0 {
            return Ok(Gradients { grads, metrics });
        }
        let lengths: Vec<usize> = kept.iter().map(|s| s.tokens.len()).collect();
        let plan = plan_micro_batches(&lengths, self.config.micro_batch_tokens);
        metrics.n_micro_batches = plan.len();
        let mut sums = LossSums::default();
        let dtype = self.config.precision.dtype();
        // One bf16 copy for the whole step: each micro-batch's backward runs through its casts.
        let bf16 = self.bf16_model()?;
        let model = bf16.as_ref().unwrap_or(&self.model);
        for indices in &plan {
            let members: Vec<&Sequence> = indices.iter().map(|&i| &kept[i]).collect();
            let batch = build_micro_batch(&members, dtype, &self.device)?;
            metrics.n_real_tokens += batch.n_real_tokens;
            metrics.n_padded_tokens += batch.tokens.elem_count();
            let (loss, micro_sums) = self.loss_with(model, &batch, objective, n_global as f64)?;
            metrics.loss += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            sums.add(&micro_sums);
            let store = loss.backward()?;
            for (slot, (_, var)) in grads.iter_mut().zip(self.optimizer.vars()) {
                if let Some(g) = store.get(var.as_tensor()) {
                    accumulate(slot, g)?;
                }
            }
        }
        let n = sums.n_tokens.max(1.0);
        metrics.mean_logprob = sums.logprob / n;
        metrics.clip_fraction = sums.clipped / n;
        metrics.kl = sums.kl / n;
        metrics.tis_weight_mean = sums.tis_weight / n;
        metrics.tis_capped_fraction = sums.tis_capped / n;
        metrics.rollout_mismatch = sums.rollout_mismatch / n;
        metrics.seconds = start.elapsed().as_secs_f64();
        Ok(Gradients { grads, metrics })
    }

    /// With `precision = "bf16"`: a bf16 copy of the model cast from the f32 variables (the
    /// casts are part of the graph, so gradients reach the variables). None otherwise: the
    /// model over the variables themselves is used.
    fn bf16_model(&self) -> Result<Option<CausalLm>> {
        if self.config.precision != crate::Precision::Bf16 {
            return Ok(None);
        }
        let dtype = self.config.precision.compute_dtype();
        let mut tensors: HashMap<String, Tensor> = match &self.lora {
            // LoRA: the frozen base cast once, plain tensors (no gradient), and the adapters.
            Some(lora) => lora
                .compute_base
                .clone()
                .ok_or_else(|| Error::Input("the LoRA base has no bf16 copy".into()))?,
            None => HashMap::new(),
        };
        for (name, var) in self.vars() {
            tensors.insert(name, var.as_tensor().to_dtype(dtype)?);
        }
        let vb = VarBuilder::from_tensors(tensors, dtype, &self.device);
        let lora = self.lora.as_ref().map(|l| &l.spec);
        Ok(Some(CausalLm::new_with_lora(&self.model_config, vb, lora)?))
    }

    /// The loss of one micro-batch (normalised by the whole batch's `normaliser`).
    pub fn micro_batch_loss(
        &self,
        batch: &MicroBatch,
        objective: Objective,
        normaliser: f64,
    ) -> Result<(Tensor, LossSums)> {
        let bf16 = self.bf16_model()?;
        self.loss_with(
            bf16.as_ref().unwrap_or(&self.model),
            batch,
            objective,
            normaliser,
        )
    }

    /// [`Trainer::micro_batch_loss`] with the model the forward pass runs on.
    fn loss_with(
        &self,
        model: &CausalLm,
        batch: &MicroBatch,
        objective: Objective,
        normaliser: f64,
    ) -> Result<(Tensor, LossSums)> {
        let chunk = self.config.logprob_chunk;
        let logprobs = token_log_probs(model, &batch.tokens, Some(&batch.attention_mask), chunk)?
            .to_dtype(self.config.precision.dtype())?;
        match objective {
            Objective::Sft => sft_loss(&logprobs, &batch.loss_mask, normaliser),
            Objective::PolicyGradient => {
                let ref_logprobs = match &self.reference {
                    Some(reference) => Some(
                        token_log_probs(
                            reference,
                            &batch.tokens,
                            Some(&batch.attention_mask),
                            chunk,
                        )?
                        .detach(),
                    ),
                    None => None,
                };
                let inputs = TokenInputs {
                    loss_mask: batch.loss_mask.clone(),
                    advantages: batch.advantages.clone(),
                    old_logprobs: batch.old_logprobs.clone(),
                    rollout_logprobs: Some(batch.rollout_logprobs.clone()),
                    ref_logprobs,
                };
                policy_loss(&logprobs, &inputs, &self.config.loss, normaliser)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The rollout side runs the trainer on its own thread and sends it batches.
    #[test]
    fn trainer_and_samples_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<super::Trainer>();
        assert_send::<super::Sample>();
        assert_send::<super::WeightSnapshot>();
    }
}
