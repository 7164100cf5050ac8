//! Log-probabilities of given tokens under the model, for training: differentiable (only ops
//! with a backward), computed over the sequence in chunks so the `[.., vocab]` logits of a long
//! sequence never exist all at once in a forward-only pass.

use candle_core::Tensor;

use crate::fused::target_log_softmax;
use crate::layers::compute_dtype;
use crate::{CausalLm, Error, Result};

/// `out[b, t] = log p(tokens[b, t + 1] | tokens[b, ..= t])`, shape `[batch, seq - 1]`, in f32 (f64
/// for f64 models). Positions whose target is padding get a value that the caller must mask.
pub fn token_log_probs(
    model: &CausalLm,
    tokens: &Tensor,
    attention_mask: Option<&Tensor>,
    chunk: usize,
) -> Result<Tensor> {
    let (_, seq) = tokens.dims2()?;
    if seq < 2 {
        return Err(Error::Input(format!(
            "log-probs need at least 2 tokens per row, got {seq}"
        )));
    }
    let hidden = model.hidden(tokens, attention_mask, None)?;
    target_log_probs(
        model,
        &hidden.narrow(1, 0, seq - 1)?,
        &tokens.narrow(1, 1, seq - 1)?,
        chunk,
    )
}

/// `out[b, t] = log softmax(lm_head(hidden[b, t]))[targets[b, t]]`, `chunk` positions at a time.
pub fn target_log_probs(
    model: &CausalLm,
    hidden: &Tensor,
    targets: &Tensor,
    chunk: usize,
) -> Result<Tensor> {
    let (batch, seq, _) = hidden.dims3()?;
    if targets.dims() != [batch, seq] {
        return Err(Error::Input(format!(
            "targets have shape {:?}, hidden states [{batch}, {seq}, _]",
            targets.dims()
        )));
    }
    if chunk == 0 {
        return Err(Error::Input("chunk must be at least 1".into()));
    }
    let vocab = model.spec().vocab_size as u32;
    if let Some(bad) = targets
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .find(|&t| t >= vocab)
    {
        return Err(Error::Input(format!(
            "target token {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let dtype = compute_dtype(hidden.dtype());
    let mut parts = Vec::with_capacity(seq.div_ceil(chunk));
    let mut start = 0;
    while start < seq {
        let len = chunk.min(seq - start);
        let logits = model
            .lm_head(&hidden.narrow(1, start, len)?)?
            .to_dtype(dtype)?
            .contiguous()?;
        let rows_targets = targets.narrow(1, start, len)?.flatten_all()?;
        let picked = target_log_softmax(
            &logits.reshape((batch * len, vocab as usize))?,
            &rows_targets,
        )?;
        parts.push(picked.reshape((batch, len))?);
        start += len;
    }
    Ok(Tensor::cat(&parts, 1)?)
}
