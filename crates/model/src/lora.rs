//! LoRA: low-rank adapters on the decoder's linear layers, `y = x Wᵀ + b + s · (x Aᵀ) Bᵀ` with
//! `s = alpha / rank`, `A` (rank × in) and `B` (out × rank). This module holds what is true of
//! adapters independently of training: which layers take one ([`LoraSpec`]), their names and
//! shapes, their seeded initialisation (PEFT's: Kaiming-uniform `A`, zero `B`), merging them into
//! the base weights, and PEFT's file format (`adapter_model.safetensors` names,
//! `adapter_config.json`).
//!
//! Adapter tensors are named like the layer they adapt: `model.layers.0.self_attn.q_proj` gets
//! `model.layers.0.self_attn.q_proj.lora_A.weight` and `...lora_B.weight`; PEFT's names are these
//! with [`PEFT_PREFIX`] in front. This module never draws from candle's RNG.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::json;

use crate::decoder::DecoderSpec;
use crate::{Error, Result};
use trajectory::derive_seed;

/// The linear layers an adapter may target, by their HF module name.
pub const TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// What PEFT puts in front of the model's own tensor names in `adapter_model.safetensors`
/// (`PeftModel.base_model` is the tuner, whose `.model` is the transformers model).
pub const PEFT_PREFIX: &str = "base_model.model.";

/// Which layers get an adapter, and its rank and scale.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Module names from [`TARGETS`].
    pub targets: Vec<String>,
}

impl LoraSpec {
    /// `alpha / rank`, PEFT's `scaling` (without rsLoRA).
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn targets(&self, module: &str) -> bool {
        self.targets.iter().any(|t| t == module)
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::Config("lora.rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Config(format!(
                "lora.alpha must be a positive number, got {}",
                self.alpha
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::Config(format!(
                "lora.targets is empty; name some of {}",
                TARGETS.join(", ")
            )));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !TARGETS.contains(&t.as_str()) {
                return Err(Error::Config(format!(
                    "lora.targets: unknown module `{t}` (known: {})",
                    TARGETS.join(", ")
                )));
            }
            if self.targets[..i].contains(t) {
                return Err(Error::Config(format!("lora.targets names `{t}` twice")));
            }
        }
        Ok(())
    }
}

/// One adapted layer: its module path (`model.layers.3.mlp.up_proj`) and dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptedLayer {
    pub module: String,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl AdaptedLayer {
    pub fn a_name(&self) -> String {
        format!("{}.lora_A.weight", self.module)
    }

    pub fn b_name(&self) -> String {
        format!("{}.lora_B.weight", self.module)
    }

    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.module)
    }
}

/// The layers `lora` adapts in a decoder of shape `spec`, layer by layer, in [`TARGETS`] order.
pub fn adapted_layers(spec: &DecoderSpec, lora: &LoraSpec) -> Vec<AdaptedLayer> {
    let (h, i) = (spec.hidden_size, spec.intermediate_size);
    let q = spec.num_attention_heads * spec.head_dim;
    let kv = spec.num_key_value_heads * spec.head_dim;
    let dims = |name: &str| -> (&'static str, usize, usize) {
        match name {
            "q_proj" => ("self_attn", h, q),
            "k_proj" => ("self_attn", h, kv),
            "v_proj" => ("self_attn", h, kv),
            "o_proj" => ("self_attn", q, h),
            "gate_proj" => ("mlp", h, i),
            "up_proj" => ("mlp", h, i),
            _ => ("mlp", i, h),
        }
    };
    let mut out = Vec::new();
    for layer in 0..spec.num_hidden_layers {
        for name in TARGETS.iter().filter(|t| lora.targets(t)) {
            let (block, in_dim, out_dim) = dims(name);
            out.push(AdaptedLayer {
                module: format!("model.layers.{layer}.{block}.{name}"),
                in_dim,
                out_dim,
            });
        }
    }
    out
}

/// Fresh adapters as PEFT initialises them: `A` Kaiming-uniform with `a = √5` (uniform in
/// `±1/√in`), `B` zero, so the adapted model starts equal to the base. Each `A` has its own
/// ChaCha8 RNG seeded from `seed` and a hash of its name, so adding a target leaves the others
/// unchanged.
pub fn init_adapters(
    spec: &DecoderSpec,
    lora: &LoraSpec,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    for layer in adapted_layers(spec, lora) {
        let name = layer.a_name();
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &[crate::init::fnv1a(&name)]));
        let bound = 1.0 / (layer.in_dim as f64).sqrt();
        let values: Vec<f64> = (0..lora.rank * layer.in_dim)
            .map(|_| {
                // 53 random bits to a uniform in [0, 1), then to [-bound, bound).
                let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                (2.0 * u - 1.0) * bound
            })
            .collect();
        let a = Tensor::from_vec(values, (lora.rank, layer.in_dim), device)?.to_dtype(dtype)?;
        let b = Tensor::zeros((layer.out_dim, lora.rank), dtype, device)?;
        out.insert(name, a);
        out.insert(layer.b_name(), b);
    }
    Ok(out)
}

/// `base` with every adapted weight replaced by `W + s · B A` (a copy; `base` is unchanged).
/// Tensors of `adapters` are looked up by the names of [`adapted_layers`]; a missing one is an
/// error.
pub fn merge(
    base: &HashMap<String, Tensor>,
    adapters: &HashMap<String, Tensor>,
    spec: &DecoderSpec,
    lora: &LoraSpec,
) -> Result<HashMap<String, Tensor>> {
    let mut merged = base.clone();
    let get = |map: &HashMap<String, Tensor>, name: &str| {
        map.get(name)
            .cloned()
            .ok_or_else(|| Error::Input(format!("LoRA merge: no tensor {name}")))
    };
    for layer in adapted_layers(spec, lora) {
        let weight = get(base, &layer.weight_name())?;
        let a = get(adapters, &layer.a_name())?.to_dtype(weight.dtype())?;
        let b = get(adapters, &layer.b_name())?.to_dtype(weight.dtype())?;
        let delta = b.matmul(&a)?.affine(lora.scale(), 0.0)?;
        merged.insert(layer.weight_name(), (weight + delta)?.detach());
    }
    Ok(merged)
}

/// PEFT's `adapter_config.json` for adapters of `lora` on the model at `base_model` (PEFT's
/// defaults for everything this crate does not implement: no dropout, no bias, no rsLoRA/DoRA).
pub fn peft_config(lora: &LoraSpec, base_model: &str) -> serde_json::Value {
    let targets: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| lora.targets(t))
        .collect();
    json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": lora.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": "CAUSAL_LM",
        "use_dora": false,
        "use_rslora": false,
    })
}

/// The [`LoraSpec`] of a PEFT `adapter_config.json` this crate can run: LoRA, no rsLoRA, DoRA,
/// per-module ranks or bias, target modules from [`TARGETS`] given as a list.
pub fn spec_of_peft_config(config: &serde_json::Value) -> Result<LoraSpec> {
    let bad = |what: String| Error::Config(format!("adapter_config.json: {what}"));
    if config.get("peft_type").and_then(|v| v.as_str()) != Some("LORA") {
        return Err(bad(format!(
            "peft_type {} is not \"LORA\"",
            config.get("peft_type").unwrap_or(&serde_json::Value::Null)
        )));
    }
    for flag in ["use_rslora", "use_dora"] {
        if config.get(flag).and_then(|v| v.as_bool()) == Some(true) {
            return Err(bad(format!("{flag} = true is not supported")));
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if config
            .get(pattern)
            .and_then(|v| v.as_object())
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad(format!("a non-empty {pattern} is not supported")));
        }
    }
    let rank = config
        .get("r")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("no integer `r`".into()))? as usize;
    let alpha = config
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| bad("no number `lora_alpha`".into()))?;
    let targets = config
        .get("target_modules")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("`target_modules` is not a list".into()))?
        .iter()
        .map(|t| {
            t.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("target module {t} is not a string")))
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = LoraSpec {
        rank,
        alpha,
        targets,
    };
    spec.validate()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DecoderSpec {
        DecoderSpec {
            vocab_size: 16,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 4,
            max_position_embeddings: 32,
            rms_norm_eps: 1e-6,
            rope_theta: 100.0,
            rope_scaling: None,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            qk_norm: false,
            tie_word_embeddings: true,
        }
    }

    fn lora(targets: &[&str]) -> LoraSpec {
        LoraSpec {
            rank: 3,
            alpha: 6.0,
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn adapters_have_peft_shapes_bounds_and_zero_b() {
        let l = lora(&["k_proj", "down_proj"]);
        let layers = adapted_layers(&spec(), &l);
        let modules: Vec<(&str, usize, usize)> = layers
            .iter()
            .map(|l| (l.module.as_str(), l.in_dim, l.out_dim))
            .collect();
        assert_eq!(
            modules,
            [
                ("model.layers.0.self_attn.k_proj", 8, 4),
                ("model.layers.0.mlp.down_proj", 12, 8),
                ("model.layers.1.self_attn.k_proj", 8, 4),
                ("model.layers.1.mlp.down_proj", 12, 8),
            ]
        );
        let tensors = init_adapters(&spec(), &l, 7, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(tensors.len(), 8);
        let a = &tensors["model.layers.1.mlp.down_proj.lora_A.weight"];
        assert_eq!(a.dims(), [3, 12]);
        let values = a.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let bound = 1.0 / 12f64.sqrt();
        assert!(values.iter().all(|v| v.abs() < bound));
        // Spread over the interval: the extremes come within 20% of the bound.
        let max = values.iter().fold(0f64, |m, v| m.max(v.abs()));
        assert!(max > 0.8 * bound, "{max} vs {bound}");
        let b = &tensors["model.layers.1.mlp.down_proj.lora_B.weight"];
        assert_eq!(b.dims(), [8, 3]);
        assert_eq!(
            b.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0
        );
        // Seeded: the same seed gives the same numbers, another seed others.
        let again = init_adapters(&spec(), &l, 7, DType::F64, &Device::Cpu).unwrap();
        let other = init_adapters(&spec(), &l, 8, DType::F64, &Device::Cpu).unwrap();
        let flat = |t: &BTreeMap<String, Tensor>| {
            t["model.layers.0.self_attn.k_proj.lora_A.weight"]
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        assert_eq!(flat(&tensors), flat(&again));
        assert_ne!(flat(&tensors), flat(&other));
    }

    #[test]
    fn merge_adds_scaled_b_times_a() {
        let l = LoraSpec {
            rank: 1,
            alpha: 2.0,
            targets: vec!["o_proj".into()],
        };
        let mut s = spec();
        s.num_hidden_layers = 1;
        let device = Device::Cpu;
        let w = Tensor::zeros((8, 8), DType::F64, &device).unwrap();
        let base = HashMap::from([
            ("model.layers.0.self_attn.o_proj.weight".to_string(), w),
            (
                "model.norm.weight".to_string(),
                Tensor::ones(8, DType::F64, &device).unwrap(),
            ),
        ]);
        let a: Vec<f64> = (0..8).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..8).map(|i| 10.0 * i as f64).collect();
        let adapters = HashMap::from([
            (
                "model.layers.0.self_attn.o_proj.lora_A.weight".to_string(),
                Tensor::from_vec(a, (1, 8), &device).unwrap(),
            ),
            (
                "model.layers.0.self_attn.o_proj.lora_B.weight".to_string(),
                Tensor::from_vec(b, (8, 1), &device).unwrap(),
            ),
        ]);
        let merged = merge(&base, &adapters, &s, &l).unwrap();
        let m = merged["model.layers.0.self_attn.o_proj.weight"]
            .to_vec2::<f64>()
            .unwrap();
        // scale 2: entry (r, c) = 2 · 10r · c.
        assert_eq!(m[3][5], 2.0 * 30.0 * 5.0);
        assert_eq!(m[7][1], 2.0 * 70.0);
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn spec_validation_and_peft_config_round_trip() {
        let check = |l: LoraSpec, expected: Option<&str>| {
            let got = l.validate().err().map(|e| e.to_string());
            match expected {
                None => assert_eq!(got, None),
                Some(part) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(part)),
                    "{got:?} should mention {part}"
                ),
            }
        };
        check(lora(&["q_proj"]), None);
        check(
            LoraSpec {
                rank: 0,
                ..lora(&["q_proj"])
            },
            Some("rank must be at least 1"),
        );
        check(
            LoraSpec {
                alpha: 0.0,
                ..lora(&["q_proj"])
            },
            Some("alpha must be"),
        );
        check(lora(&[]), Some("targets is empty"));
        check(lora(&["q_proj", "qkv"]), Some("unknown module `qkv`"));
        check(lora(&["v_proj", "v_proj"]), Some("twice"));

        let l = lora(&["up_proj", "q_proj"]);
        let config = peft_config(&l, "/models/base");
        assert_eq!(config["target_modules"], json!(["q_proj", "up_proj"]));
        assert_eq!(config["r"], json!(3));
        let back = spec_of_peft_config(&config).unwrap();
        assert_eq!(back.rank, 3);
        assert_eq!(back.alpha, 6.0);
        assert_eq!(back.targets, ["q_proj", "up_proj"]);
        let mut rs = config.clone();
        rs["use_rslora"] = json!(true);
        assert!(spec_of_peft_config(&rs).is_err());
    }
}
