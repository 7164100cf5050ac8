//! Creation of complete HF-style checkpoints from a seed: config.json, model.safetensors (weights
//! from our own seeded RNG; candle's CPU RNG cannot be seeded), tokenizer.json (a byte-level BPE
//! trained here on real source text), tokenizer_config.json with a Qwen-style chat template that
//! supports tools, and generation_config.json. transformers and vLLM load these directories.
//!
//! The same options always give byte-identical files.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::{json, Value as Json};

use crate::decoder::DecoderSpec;
use crate::tokenizer::{train_byte_level_bpe, Tokenizer, ADDED_TOKENS};
use crate::{weights, Arch, CausalLm, Error, Result};
use trajectory::derive_seed;

/// Qwen2.5's chat template (with tools), verbatim.
pub const QWEN2_5_TEMPLATE: &str = include_str!("../templates/qwen2_5.jinja");
/// Qwen3's chat template (with tools and thinking), verbatim.
pub const QWEN3_TEMPLATE: &str = include_str!("../templates/qwen3.jinja");

/// The frozen default tokenizer corpus (see `corpus/README.md`).
const DEFAULT_CORPUS: [&str; 2] = [
    include_str!("../corpus/rust.txt"),
    include_str!("../corpus/python.txt"),
];

/// Standard deviation of the initial linear and embedding weights (transformers'
/// `initializer_range`).
const INIT_STD: f64 = 0.02;

/// Preset model sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// About 4M parameters: tests and CPU quickstarts.
    Tiny,
    /// About 26M parameters (hidden 512, 8 layers); the default corpus supports ~4k merges, so
    /// the vocabulary stays near 4k.
    Small,
}

impl std::str::FromStr for Size {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tiny" => Ok(Size::Tiny),
            "small" => Ok(Size::Small),
            other => Err(Error::Input(format!(
                "unknown size `{other}` (expected tiny or small)"
            ))),
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "llama" => Ok(Arch::Llama),
            other => Err(Error::Input(format!(
                "unknown architecture `{other}` (expected qwen2, qwen3 or llama)"
            ))),
        }
    }
}

/// What checkpoint to create.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub arch: Arch,
    pub size: Size,
    pub seed: u64,
    /// Texts to train the tokenizer on; `None` uses the frozen default corpus.
    pub corpus: Option<Vec<String>>,
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct InitSummary {
    pub n_params: usize,
    pub vocab_size: usize,
    pub spec: DecoderSpec,
}

struct Shape {
    merged_vocab: usize,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    max_positions: usize,
}

fn shape(size: Size) -> Shape {
    match size {
        Size::Tiny => Shape {
            merged_vocab: 4096,
            hidden: 256,
            intermediate: 768,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            max_positions: 4096,
        },
        Size::Small => Shape {
            merged_vocab: 8192,
            hidden: 512,
            intermediate: 1536,
            layers: 8,
            heads: 8,
            kv_heads: 2,
            max_positions: 8192,
        },
    }
}

/// Writes a complete checkpoint into `out` (created if missing).
pub fn init_checkpoint(options: &InitOptions, out: &Path) -> Result<InitSummary> {
    let s = shape(options.size);
    let texts: Vec<String> = match &options.corpus {
        Some(texts) if texts.iter().all(|t| t.trim().is_empty()) => {
            return Err(Error::Input("the tokenizer corpus is empty".into()))
        }
        Some(texts) => texts.clone(),
        None => DEFAULT_CORPUS.iter().map(|t| t.to_string()).collect(),
    };
    let tokenizer = train_byte_level_bpe(&texts, s.merged_vocab)?;
    let vocab_size = tokenizer.vocab_size();
    let id = |token: &str| {
        tokenizer
            .token_to_id(token)
            .ok_or_else(|| Error::Tokenizer(format!("{token} missing after training")))
    };
    let (endoftext, im_end) = (id("<|endoftext|>")?, id("<|im_end|>")?);
    let config = config_json(options.arch, &s, vocab_size, endoftext, im_end);
    let spec = CausalLm::spec_of(&config)?;

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    write_json(&out.join("config.json"), &config)?;
    let tensors = random_weights(&spec, options.seed)?;
    weights::save(&tensors, DType::F32, &out.join("model.safetensors"))?;
    let tokenizer_path = out.join("tokenizer.json");
    std::fs::write(&tokenizer_path, tokenizer.to_json()?)
        .map_err(|e| Error::io(&tokenizer_path, e))?;
    let template = match options.arch {
        Arch::Qwen3 => QWEN3_TEMPLATE.to_string(),
        Arch::Qwen2 | Arch::Llama => QWEN2_5_TEMPLATE.replace(
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
            "You are a helpful assistant.",
        ),
    };
    write_json(
        &out.join("tokenizer_config.json"),
        &tokenizer_config(&tokenizer, &template, s.max_positions)?,
    )?;
    write_json(
        &out.join("generation_config.json"),
        &json!({
            "bos_token_id": endoftext,
            "eos_token_id": [im_end, endoftext],
            "pad_token_id": endoftext,
            "do_sample": true,
            "temperature": 1.0,
            "top_p": 1.0,
        }),
    )?;
    Ok(InitSummary {
        n_params: spec.n_params(),
        vocab_size,
        spec,
    })
}

fn config_json(arch: Arch, s: &Shape, vocab_size: usize, bos: u32, eos: u32) -> Json {
    let head_dim = s.hidden / s.heads;
    let mut config = json!({
        "architectures": [match arch {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
        }],
        "model_type": arch.name(),
        "vocab_size": vocab_size,
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "max_position_embeddings": s.max_positions,
        "rms_norm_eps": 1e-6,
        "rope_theta": if arch == Arch::Llama { 500000.0 } else { 1000000.0 },
        "hidden_act": "silu",
        "tie_word_embeddings": true,
        "initializer_range": INIT_STD,
        "attention_dropout": 0.0,
        "use_cache": true,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float32",
    });
    let extra = match arch {
        Arch::Qwen2 => json!({"use_sliding_window": false, "max_window_layers": s.layers}),
        Arch::Qwen3 => json!({
            "head_dim": head_dim,
            "attention_bias": false,
            "use_sliding_window": false,
            "max_window_layers": s.layers,
        }),
        Arch::Llama => json!({"head_dim": head_dim, "attention_bias": false, "mlp_bias": false}),
    };
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    config
}

fn tokenizer_config(tokenizer: &Tokenizer, template: &str, max_len: usize) -> Result<Json> {
    let mut added = serde_json::Map::new();
    for &(content, special) in &ADDED_TOKENS {
        let id = tokenizer
            .token_to_id(content)
            .ok_or_else(|| Error::Tokenizer(format!("{content} missing after training")))?;
        added.insert(
            id.to_string(),
            json!({
                "content": content,
                "lstrip": false,
                "normalized": false,
                "rstrip": false,
                "single_word": false,
                "special": special,
            }),
        );
    }
    Ok(json!({
        "add_bos_token": false,
        "add_prefix_space": false,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": null,
        "chat_template": template,
        "clean_up_tokenization_spaces": false,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": max_len,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": false,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": null,
    }))
}

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::json(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Every tensor of `spec` under its HF name: N(0, 0.02²) for matrices, 0 for biases, 1 for
/// norms. Each tensor has its own RNG seeded from the run seed and a hash of its name, so the
/// values of one tensor do not depend on which others exist.
pub fn random_weights(spec: &DecoderSpec, seed: u64) -> Result<BTreeMap<String, Tensor>> {
    let (h, d, i) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
    let (q, kv) = (spec.num_attention_heads * d, spec.num_key_value_heads * d);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![spec.vocab_size, h]),
        ("model.norm.weight".into(), vec![h]),
    ];
    if !spec.tie_word_embeddings {
        shapes.push(("lm_head.weight".into(), vec![spec.vocab_size, h]));
    }
    for layer in 0..spec.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        let mut add = |name: &str, dims: Vec<usize>| shapes.push((format!("{p}.{name}"), dims));
        add("input_layernorm.weight", vec![h]);
        add("post_attention_layernorm.weight", vec![h]);
        add("self_attn.q_proj.weight", vec![q, h]);
        add("self_attn.k_proj.weight", vec![kv, h]);
        add("self_attn.v_proj.weight", vec![kv, h]);
        add("self_attn.o_proj.weight", vec![h, q]);
        if spec.qkv_bias {
            add("self_attn.q_proj.bias", vec![q]);
            add("self_attn.k_proj.bias", vec![kv]);
            add("self_attn.v_proj.bias", vec![kv]);
        }
        if spec.o_bias {
            add("self_attn.o_proj.bias", vec![h]);
        }
        if spec.qk_norm {
            add("self_attn.q_norm.weight", vec![d]);
            add("self_attn.k_norm.weight", vec![d]);
        }
        add("mlp.gate_proj.weight", vec![i, h]);
        add("mlp.up_proj.weight", vec![i, h]);
        add("mlp.down_proj.weight", vec![h, i]);
        if spec.mlp_bias {
            add("mlp.gate_proj.bias", vec![i]);
            add("mlp.up_proj.bias", vec![i]);
            add("mlp.down_proj.bias", vec![h]);
        }
    }
    let device = Device::Cpu;
    let mut tensors = BTreeMap::new();
    for (name, dims) in shapes {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &[fnv1a(&name)]));
            normal_samples(&mut rng, n, INIT_STD)
        };
        tensors.insert(name, Tensor::from_vec(values, dims, &device)?);
    }
    Ok(tensors)
}

/// FNV-1a, a stable hash of tensor names (std's hashers are randomly keyed).
pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `n` draws from N(0, std²) by the Box-Muller transform.
fn normal_samples(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut uniform = || ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (uniform(), uniform());
        let radius = (-2.0 * u1.ln()).sqrt() * std;
        let angle = 2.0 * std::f64::consts::PI * u2;
        out.push((radius * angle.cos()) as f32);
        out.push((radius * angle.sin()) as f32);
    }
    out.truncate(n);
    out
}
