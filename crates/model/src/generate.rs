//! Continuous batched generation with a KV cache.
//!
//! An [`Engine`] owns the model and the cache of every running sequence. Each [`Engine::step`]
//! decodes one token for all running sequences in one forward pass, then admits waiting requests
//! (one prefill for all of them, identical prompts computed once) and merges their cache rows in.
//! Finished rows are dropped from the cache at once. Each sequence samples with its own seeded
//! RNG, so its tokens do not depend on which other sequences share its batch.

use std::collections::{HashMap, VecDeque};

use candle_core::{DType, Tensor};

use crate::cache::KvCache;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use crate::{CausalLm, Error, Result};

/// What to generate for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    /// Most new tokens (the sequence also stops at the model's context length).
    pub max_tokens: usize,
    /// Stop once the decoded output contains one of these (the token that completes it is kept
    /// in the token ids; callers cut the text).
    pub stop: Vec<String>,
    /// Stop after any of these tokens (kept in the output).
    pub stop_token_ids: Vec<u32>,
    /// Do not stop at the model's end-of-sequence tokens.
    pub ignore_eos: bool,
    /// How many most likely alternatives to report per token.
    pub top_logprobs: usize,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 16,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            top_logprobs: 0,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence or stop token (its id).
    Token(u32),
    /// A stop string appeared in the output.
    StopSequence(String),
    /// `max_tokens` or the context length was reached.
    Length,
}

/// A generation request: a prompt of token ids and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Chosen by the caller; events carry it back.
    pub id: u64,
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
}

/// One generated token of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub id: u64,
    pub token: u32,
    /// Log-probability under the raw model distribution.
    pub logprob: f32,
    pub top_logprobs: Vec<(u32, f32)>,
    /// Set on the sequence's last token.
    pub finish: Option<FinishReason>,
}

/// A finished sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub id: u64,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<f32>,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub finish: FinishReason,
}

/// Limits of an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most (padded) prompt tokens in one prefill; a single longer prompt is still admitted alone.
    pub max_prefill_tokens: usize,
    /// End-of-sequence tokens (from generation_config.json).
    pub eos_token_ids: Vec<u32>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_prefill_tokens: 8192,
            eos_token_ids: Vec::new(),
        }
    }
}

struct Pending {
    request: Request,
    sampler: Sampler,
}

struct Active {
    id: u64,
    params: GenerationParams,
    sampler: Sampler,
    generated: Vec<u32>,
    /// Prompt plus generated tokens.
    n_positions: usize,
}

/// The generation engine; see the module documentation.
pub struct Engine {
    model: CausalLm,
    tokenizer: Option<Tokenizer>,
    config: EngineConfig,
    waiting: VecDeque<Pending>,
    active: Vec<Active>,
    cache: Option<KvCache>,
}

impl Engine {
    /// `tokenizer` is needed only for stop strings. The engine runs a copy of `model` with
    /// stacked projection weights ([`CausalLm::fused_for_inference`]).
    pub fn new(model: CausalLm, tokenizer: Option<Tokenizer>, config: EngineConfig) -> Self {
        let model = match model.fused_for_inference() {
            Ok(fused) => fused,
            Err(e) => {
                tracing::warn!("generating without stacked projections: {e}");
                model
            }
        };
        Self {
            model,
            tokenizer,
            config,
            waiting: VecDeque::new(),
            active: Vec::new(),
            cache: None,
        }
    }

    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// Replaces the weights (a trainer's weight sync). Sequences in flight go on with the new
    /// weights from their next token; their cached keys and values stay as computed. Every
    /// token's recorded log-prob is that of the weights that sampled it.
    pub fn set_model(&mut self, model: CausalLm) {
        self.model = match model.fused_for_inference() {
            Ok(fused) => fused,
            Err(e) => {
                tracing::warn!("generating without stacked projections: {e}");
                model
            }
        };
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// Whether any request is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.active.is_empty()
    }

    pub fn n_running(&self) -> usize {
        self.active.len()
    }

    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Queues a request after checking it.
    pub fn submit(&mut self, request: Request) -> Result<()> {
        let spec = self.model.spec();
        if request.prompt.is_empty() {
            return Err(Error::Input("the prompt is empty".into()));
        }
        if let Some(bad) = request
            .prompt
            .iter()
            .find(|&&t| t as usize >= spec.vocab_size)
        {
            return Err(Error::Input(format!(
                "prompt token {bad} is outside the vocabulary of {}",
                spec.vocab_size
            )));
        }
        if request.prompt.len() >= spec.max_position_embeddings {
            return Err(Error::Input(format!(
                "the prompt has {} tokens; the model's context is {}",
                request.prompt.len(),
                spec.max_position_embeddings
            )));
        }
        if request.params.max_tokens == 0 {
            return Err(Error::Input("max_tokens must be at least 1".into()));
        }
        if !request.params.stop.is_empty() && self.tokenizer.is_none() {
            return Err(Error::Input(
                "stop strings need an engine with a tokenizer".into(),
            ));
        }
        let sampler = Sampler::new(request.params.sampling.clone(), request.params.top_logprobs)?;
        self.waiting.push_back(Pending { request, sampler });
        Ok(())
    }

    /// Drops a waiting or running request; returns whether it was there.
    pub fn cancel(&mut self, id: u64) -> Result<bool> {
        let before = self.waiting.len();
        self.waiting.retain(|p| p.request.id != id);
        if self.waiting.len() != before {
            return Ok(true);
        }
        match self.active.iter().position(|a| a.id == id) {
            Some(row) => {
                self.remove_rows(&[row])?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Drops everything (after an error); returns the ids that were waiting or running.
    pub fn reset(&mut self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.active.drain(..).map(|a| a.id).collect();
        ids.extend(self.waiting.drain(..).map(|p| p.request.id));
        self.cache = None;
        ids
    }

    /// One decode step for the running sequences, then admission of waiting ones.
    pub fn step(&mut self) -> Result<Vec<TokenEvent>> {
        let mut events = Vec::new();
        if !self.active.is_empty() {
            self.decode(&mut events)?;
        }
        if self.active.len() < self.config.max_batch && !self.waiting.is_empty() {
            self.admit(&mut events)?;
        }
        Ok(events)
    }

    /// Runs `requests` to completion (with whatever else is queued) and returns their
    /// completions in order.
    pub fn generate(&mut self, requests: Vec<Request>) -> Result<Vec<Completion>> {
        let order: Vec<u64> = requests.iter().map(|r| r.id).collect();
        let mut partial: HashMap<u64, Completion> = HashMap::new();
        for request in requests {
            partial.insert(
                request.id,
                Completion {
                    id: request.id,
                    token_ids: Vec::new(),
                    logprobs: Vec::new(),
                    top_logprobs: Vec::new(),
                    finish: FinishReason::Length,
                },
            );
            if let Err(e) = self.submit(request) {
                // Leave nothing of this call behind in the queue.
                for id in partial.keys() {
                    self.cancel(*id)?;
                }
                return Err(e);
            }
        }
        let mut done: HashMap<u64, Completion> = HashMap::new();
        while done.len() < order.len() && self.has_work() {
            for event in self.step()? {
                if let Some(c) = partial.get_mut(&event.id) {
                    c.token_ids.push(event.token);
                    c.logprobs.push(event.logprob);
                    c.top_logprobs.push(event.top_logprobs);
                    if let Some(finish) = event.finish {
                        c.finish = finish;
                        if let Some(c) = partial.remove(&event.id) {
                            done.insert(event.id, c);
                        }
                    }
                }
            }
        }
        order
            .iter()
            .map(|id| {
                done.remove(id)
                    .ok_or_else(|| Error::Input(format!("request {id} did not finish")))
            })
            .collect()
    }

    fn decode(&mut self, events: &mut Vec<TokenEvent>) -> Result<()> {
        let device = self.model.decoder().device().clone();
        let last: Vec<u32> = self
            .active
            .iter()
            .map(|a| a.generated.last().copied().unwrap_or(0))
            .collect();
        let batch = last.len();
        let tokens = Tensor::from_vec(last, (batch, 1), &device)?;
        let cache = self
            .cache
            .as_mut()
            .ok_or_else(|| Error::Input("running sequences without a cache".into()))?;
        let logits = self.model.forward(&tokens, None, Some(cache))?;
        let rows = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut finished = Vec::new();
        for (row, (active, logits)) in self.active.iter_mut().zip(&rows).enumerate() {
            active.n_positions += 1;
            let event = sample_into(
                active,
                logits,
                &self.config,
                self.tokenizer.as_ref(),
                &self.model,
            )?;
            if event.finish.is_some() {
                finished.push(row);
            }
            events.push(event);
        }
        if !finished.is_empty() {
            self.remove_rows(&finished)?;
        }
        Ok(())
    }

    fn admit(&mut self, events: &mut Vec<TokenEvent>) -> Result<()> {
        // Take waiting requests while the batch and the prefill budget allow.
        let room = self.config.max_batch - self.active.len();
        let mut admitted: Vec<Pending> = Vec::new();
        let mut longest = 0;
        while admitted.len() < room {
            let Some(next) = self.waiting.front() else {
                break;
            };
            let len = longest.max(next.request.prompt.len());
            if !admitted.is_empty() && len * (admitted.len() + 1) > self.config.max_prefill_tokens {
                break;
            }
            longest = len;
            if let Some(p) = self.waiting.pop_front() {
                admitted.push(p);
            }
        }
        if admitted.is_empty() {
            return Ok(());
        }
        // One prefill row per distinct prompt.
        let mut unique: Vec<&[u32]> = Vec::new();
        let mut row_of: Vec<usize> = Vec::with_capacity(admitted.len());
        let mut seen: HashMap<&[u32], usize> = HashMap::new();
        for p in &admitted {
            let prompt = p.request.prompt.as_slice();
            let row = *seen.entry(prompt).or_insert_with(|| {
                unique.push(prompt);
                unique.len() - 1
            });
            row_of.push(row);
        }
        let device = self.model.decoder().device().clone();
        let (n_rows, width) = (unique.len(), longest);
        let mut ids = Vec::with_capacity(n_rows * width);
        let mut mask = Vec::with_capacity(n_rows * width);
        for prompt in &unique {
            let pad = width - prompt.len();
            ids.extend(std::iter::repeat_n(0u32, pad).chain(prompt.iter().copied()));
            mask.extend(
                std::iter::repeat_n(0f32, pad).chain(std::iter::repeat_n(1f32, prompt.len())),
            );
        }
        let tokens = Tensor::from_vec(ids, (n_rows, width), &device)?;
        let mask = Tensor::from_vec(mask, (n_rows, width), &device)?;
        let mut cache = self.model.new_cache(n_rows);
        let hidden = self.model.hidden(&tokens, Some(&mask), Some(&mut cache))?;
        let logits = self.model.lm_head(&hidden.narrow(1, width - 1, 1)?)?;
        let rows = logits.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut kept_rows = Vec::new();
        for (pending, &row) in admitted.into_iter().zip(&row_of) {
            let mut active = Active {
                id: pending.request.id,
                n_positions: pending.request.prompt.len() + 1,
                params: pending.request.params,
                sampler: pending.sampler,
                generated: Vec::new(),
            };
            let event = sample_into(
                &mut active,
                &rows[row],
                &self.config,
                self.tokenizer.as_ref(),
                &self.model,
            )?;
            let finished = event.finish.is_some();
            events.push(event);
            if !finished {
                kept_rows.push(row);
                self.active.push(active);
            }
        }
        if kept_rows.is_empty() {
            return Ok(());
        }
        cache.select_rows(&kept_rows)?;
        match self.cache.as_mut() {
            Some(existing) => existing.merge(cache)?,
            None => self.cache = Some(cache),
        }
        Ok(())
    }

    fn remove_rows(&mut self, rows: &[usize]) -> Result<()> {
        let keep: Vec<usize> = (0..self.active.len())
            .filter(|r| !rows.contains(r))
            .collect();
        if keep.is_empty() {
            self.active.clear();
            self.cache = None;
            return Ok(());
        }
        if let Some(cache) = self.cache.as_mut() {
            cache.select_rows(&keep)?;
        }
        let mut row = 0;
        self.active.retain(|_| {
            let kept = !rows.contains(&row);
            row += 1;
            kept
        });
        Ok(())
    }
}

/// Samples the next token of `active` from its logits and decides whether it finished.
fn sample_into(
    active: &mut Active,
    logits: &[f32],
    config: &EngineConfig,
    tokenizer: Option<&Tokenizer>,
    model: &CausalLm,
) -> Result<TokenEvent> {
    let sampled = active.sampler.sample(logits)?;
    active.generated.push(sampled.token);
    let params = &active.params;
    let token = sampled.token;
    let finish = if (!params.ignore_eos && config.eos_token_ids.contains(&token))
        || params.stop_token_ids.contains(&token)
    {
        Some(FinishReason::Token(token))
    } else if let Some(stop) = stop_string_hit(&active.generated, &params.stop, tokenizer)? {
        Some(FinishReason::StopSequence(stop))
    } else if active.generated.len() >= params.max_tokens
        || active.n_positions >= model.spec().max_position_embeddings
    {
        Some(FinishReason::Length)
    } else {
        None
    };
    Ok(TokenEvent {
        id: active.id,
        token,
        logprob: sampled.logprob,
        top_logprobs: sampled.top_logprobs,
        finish,
    })
}

/// The stop string completed by the latest token, if any. Only the tail of the output is decoded:
/// every byte-level token stands for at least one byte, so a stop string of `n` bytes lies within
/// the last `n + 1` tokens.
fn stop_string_hit(
    generated: &[u32],
    stops: &[String],
    tokenizer: Option<&Tokenizer>,
) -> Result<Option<String>> {
    let (Some(tokenizer), Some(longest)) = (tokenizer, stops.iter().map(String::len).max()) else {
        return Ok(None);
    };
    let start = generated.len().saturating_sub(longest + 1);
    let tail = tokenizer.decode(&generated[start..], true)?;
    Ok(stops
        .iter()
        .find(|s| !s.is_empty() && tail.contains(s.as_str()))
        .cloned())
}

/// Cuts `text` before the first occurrence of any stop string (OpenAI semantics).
pub fn truncate_at_stop(text: &str, stops: &[String]) -> String {
    let cut = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..cut].to_string()
}
