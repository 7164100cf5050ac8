//! Tiny checkpoints made from a seed for the trainer's tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

/// A Qwen2 config small enough for finite differences.
pub fn tiny_config(vocab: usize, hidden: usize, layers: usize) -> serde_json::Value {
    json!({
        "model_type": "qwen2",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 3 / 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 100.0,
        "tie_word_embeddings": true,
    })
}

/// Writes config.json and model.safetensors to `dir`. `spread` > 0 adds a deterministic ramp
/// to every tensor (norms and biases move away from 1 and 0) so every path of the model matters.
pub fn write_checkpoint(dir: &Path, config: &serde_json::Value, seed: u64, spread: f64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let spec = model::CausalLm::spec_of(config).unwrap();
    let tensors = model::init::random_weights(&spec, seed).unwrap();
    let mut out = BTreeMap::new();
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        let base = t.to_dtype(DType::F64).unwrap();
        let n = base.elem_count();
        let ramp: Vec<f64> = (0..n)
            .map(|k| ((k * 7919 + i * 104729) % 1000) as f64 / 1000.0 - 0.5)
            .collect();
        let ramp = Tensor::from_vec(ramp, base.dims(), &Device::Cpu).unwrap();
        let value = if spread == 0.0 {
            base
        } else if name.ends_with("norm.weight") || name.ends_with(".bias") {
            (base + (ramp * (0.6 * spread)).unwrap()).unwrap()
        } else {
            ((base * (1.0 + 9.0 * spread)).unwrap() + (ramp * (0.4 * spread)).unwrap()).unwrap()
        };
        out.insert(name, value);
    }
    model::weights::save(&out, DType::F64, &dir.join("model.safetensors")).unwrap();
}

/// A token segment: `prompt` untrained, `completion` trained with the given rollout log-probs.
pub fn segment(prompt: &[u32], completion: &[u32], logprobs: &[f32]) -> trajectory::TokenSegment {
    let mut token_ids = prompt.to_vec();
    token_ids.extend_from_slice(completion);
    let mut loss_mask = vec![0u8; prompt.len()];
    loss_mask.extend(std::iter::repeat_n(1u8, completion.len()));
    let mut lp = vec![0f32; prompt.len()];
    lp.extend_from_slice(logprobs);
    trajectory::TokenSegment {
        token_ids,
        loss_mask,
        logprobs: lp,
        first_step: 0,
        last_step: 0,
    }
}

/// Every trainable tensor of the trainer, flattened to f64, by name.
pub fn weights_f64(trainer: &train::Trainer) -> BTreeMap<String, Vec<f64>> {
    trainer
        .weights()
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap(),
            )
        })
        .collect()
}
