//! The forward pass is differentiable end to end: in f64, every weight of each architecture gets
//! a gradient from a log-prob loss over a left-padded batch (no op cuts the graph), and sampled
//! entries of each gradient agree with central finite differences.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use model::logprobs::token_log_probs;
use model::CausalLm;
use serde_json::json;

fn config(model_type: &str) -> serde_json::Value {
    let mut c = json!({
        "model_type": model_type,
        "vocab_size": 24,
        "hidden_size": 8,
        "intermediate_size": 12,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
        "rope_theta": 100.0,
        "tie_word_embeddings": model_type == "qwen3",
    });
    if model_type == "qwen3" {
        c["head_dim"] = json!(6);
    }
    if model_type == "llama" {
        c["attention_bias"] = json!(true);
        c["mlp_bias"] = json!(true);
    }
    c
}

/// Weights with spread (std 0.5, norms and biases away from 1 and 0) so every path matters.
fn variables(config: &serde_json::Value) -> candle_nn::VarMap {
    let spec = CausalLm::spec_of(config).unwrap();
    let tensors = model::init::random_weights(&spec, 11).unwrap();
    let mut out = std::collections::HashMap::new();
    for (i, (name, t)) in tensors.into_iter().enumerate() {
        // Deterministic spread added to the seeded weights.
        let base = t.to_dtype(DType::F64).unwrap();
        let n = base.elem_count();
        let ramp: Vec<f64> = (0..n)
            .map(|k| ((k * 7919 + i * 104729) % 1000) as f64 / 1000.0 - 0.5)
            .collect();
        let ramp = Tensor::from_vec(ramp, base.dims(), &Device::Cpu).unwrap();
        let value = if name.ends_with("norm.weight") || name.ends_with(".bias") {
            (base + (ramp * 0.6).unwrap()).unwrap()
        } else {
            ((base * 10.0).unwrap() + (ramp * 0.4).unwrap()).unwrap()
        };
        out.insert(name, value);
    }
    model::weights::into_var_map(out).unwrap()
}

struct Problem {
    tokens: Tensor,
    mask: Tensor,
    weights: Tensor,
}

fn problem() -> Problem {
    let tokens: Vec<u32> = vec![0, 0, 3, 7, 1, 9, 4, 2, 5, 11, 23, 6, 0, 8, 13, 17];
    let mask: Vec<f64> = vec![
        0., 0., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1.,
    ];
    // Loss weights over the 7 targets per row; targets predicted from pad positions weigh 0.
    let weights: Vec<f64> = vec![
        0., 0., -1.3, 0.4, 1.1, -0.2, 0.9, 1.0, -0.5, 0.3, 0.8, -1.2, 0.6, 0.2,
    ];
    Problem {
        tokens: Tensor::from_vec(tokens, (2, 8), &Device::Cpu).unwrap(),
        mask: Tensor::from_vec(mask, (2, 8), &Device::Cpu).unwrap(),
        weights: Tensor::from_vec(weights, (2, 7), &Device::Cpu).unwrap(),
    }
}

fn loss(model: &CausalLm, p: &Problem) -> Tensor {
    let lp = token_log_probs(model, &p.tokens, Some(&p.mask), 3).unwrap();
    (lp * &p.weights).unwrap().sum_all().unwrap()
}

fn set_entry(var: &Var, index: usize, value: f64) {
    let mut values = var
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    values[index] = value;
    let t = Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap();
    var.set(&t).unwrap();
}

fn check(model_type: &str) {
    let config = config(model_type);
    let var_map = variables(&config);
    let model = CausalLm::new(
        &config,
        VarBuilder::from_varmap(&var_map, DType::F64, &Device::Cpu),
    )
    .unwrap();
    let p = problem();
    let grads = loss(&model, &p).backward().unwrap();
    let vars: Vec<(String, Var)> = {
        let data = var_map.data().lock().unwrap();
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let h = 1e-5;
    let mut worst = 0f64;
    for (name, var) in &vars {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{model_type}: no gradient for {name}: the graph is cut"));
        let g = grad.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert!(
            g.iter().any(|x| x.abs() > 1e-9),
            "{model_type}: zero gradient for {name}"
        );
        let n = g.len();
        for index in [0, n / 2, n - 1] {
            let original = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()[index];
            set_entry(var, index, original + h);
            let plus = loss(&model, &p).to_scalar::<f64>().unwrap();
            set_entry(var, index, original - h);
            let minus = loss(&model, &p).to_scalar::<f64>().unwrap();
            set_entry(var, index, original);
            let numeric = (plus - minus) / (2.0 * h);
            let error = (numeric - g[index]).abs() / (1e-6 + numeric.abs().max(g[index].abs()));
            assert!(
                error < 1e-4 || (numeric - g[index]).abs() < 1e-8,
                "{model_type}: {name}[{index}]: analytic {} vs numeric {numeric}",
                g[index]
            );
            worst = worst.max(error);
        }
    }
    assert!(
        vars.len() >= 20,
        "{model_type}: only {} variables",
        vars.len()
    );
    eprintln!(
        "{model_type}: {} variables, worst relative error {worst:.2e}",
        vars.len()
    );
}

#[test]
fn qwen2_gradients_match_finite_differences() {
    check("qwen2");
}

#[test]
fn qwen3_gradients_match_finite_differences() {
    check("qwen3");
}

#[test]
fn llama_gradients_match_finite_differences() {
    check("llama");
}
