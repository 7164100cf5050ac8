//! LoRA training: the adapted model starts equal to the base, its adapter gradients agree with
//! central finite differences in f64, training moves only the adapters, the merged weights the
//! generation engine gets compute what the adapted model computes, checkpoints hold a PEFT
//! adapter next to merged weights, and resuming is bit-identical.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use model::CausalLm;
use train::{
    Algorithm, LoraConfig, LossConfig, Objective, Precision, Sample, Sequence, TrainConfig, Trainer,
};

const ALL_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

fn lora(rank: usize, alpha: f64, targets: &[&str]) -> LoraConfig {
    LoraConfig {
        rank,
        alpha,
        targets: targets.iter().map(|t| t.to_string()).collect(),
        seed: 11,
    }
}

fn config(precision: Precision, lora: LoraConfig) -> TrainConfig {
    let mut config = TrainConfig {
        loss: LossConfig::for_algorithm(Algorithm::Grpo),
        micro_batch_tokens: 16,
        logprob_chunk: 3,
        precision,
        lora: Some(lora),
        ..TrainConfig::default()
    };
    config.optimizer.lr = 2e-2;
    config
}

/// Two groups of samples that vary with the step.
fn batch(step: u64) -> Vec<Sample> {
    let s = step as u32;
    let sample = |completion: &[u32], reward: f64, group: &str| Sample {
        segments: vec![common::segment(
            &[1, 2, 3 + s % 3],
            completion,
            &vec![-2.5; completion.len()],
        )],
        reward,
        group: group.into(),
        skill: "editing".into(),
    };
    vec![
        sample(&[4, 5, 6], 1.0, "a"),
        sample(&[7, 8], 0.0, "a"),
        sample(&[9, 10 + s % 4, 11, 12], 0.5, "a"),
        sample(&[13, 14], 1.0, "b"),
        sample(&[15], 0.0, "b"),
    ]
}

fn tokens() -> Tensor {
    Tensor::new(
        &[[3u32, 7, 1, 9, 4, 2, 5, 11], [8, 13, 17, 2, 2, 9, 0, 1]],
        &Device::Cpu,
    )
    .unwrap()
}

fn logits(model: &CausalLm) -> Vec<f64> {
    model
        .forward(&tokens(), None, None)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    flat(t).into_iter().map(f64::to_bits).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn tiny_model(dir: &Path) {
    common::write_checkpoint(dir, &common::tiny_config(24, 8, 2), 3, 1.0);
}

#[test]
fn adapted_model_starts_equal_to_the_base_and_trains_only_adapters() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let device = Device::Cpu;
    let base = CausalLm::load(dir.path(), DType::F32, &device).unwrap();
    let mut trainer = Trainer::new(
        dir.path(),
        config(Precision::F32, lora(2, 4.0, &ALL_TARGETS)),
        &device,
    )
    .unwrap();
    // B = 0: the adapted model is the base model exactly.
    let base_logits = logits(&base);
    assert_eq!(logits(trainer.model()), base_logits);

    // Only adapters are trainable: rank x (in + out) per adapted layer. Each layer of the tiny
    // model (hidden 8, 2 heads of 4, 1 kv head, intermediate 12): q 8→8, k 8→4, v 8→4, o 8→8,
    // gate 8→12, up 8→12, down 12→8.
    let vars = trainer.vars();
    assert!(vars
        .iter()
        .all(|(n, _)| n.contains(".lora_A.") || n.contains(".lora_B.")));
    let n_params: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let per_layer = 2 * (16 + 12 + 12 + 16 + 20 + 20 + 20);
    assert_eq!((vars.len(), n_params), (28, 2 * per_layer));
    let initial: BTreeMap<String, Vec<u64>> = vars
        .iter()
        .map(|(n, v)| (n.clone(), bits(v.as_tensor())))
        .collect();
    let base_before: HashMap<String, Vec<u64>> = trainer
        .base_weights()
        .unwrap()
        .iter()
        .map(|(n, t)| (n.clone(), bits(t)))
        .collect();

    for step in 0..3 {
        let m = trainer.step(&batch(step)).unwrap();
        assert!(m.updated && m.grad_norm > 0.0, "step {step}: {m:?}");
    }

    // The base is bit-identical to the start (and to the checkpoint on disk); every adapter moved.
    for (name, t) in trainer.base_weights().unwrap() {
        assert_eq!(bits(t), base_before[name], "base weight {name} changed");
    }
    assert_eq!(logits(&base), base_logits);
    let on_disk = model::weights::load(dir.path(), DType::F32, &device).unwrap();
    for (name, t) in &on_disk {
        assert_eq!(bits(t), base_before[name], "{name} differs from the file");
    }
    for (name, var) in trainer.vars() {
        assert_ne!(bits(var.as_tensor()), initial[&name], "{name} did not move");
    }

    // The merged model (what the generation engine gets) computes what the adapted model does,
    // and both moved away from the base.
    let (version, merged) = trainer.policy_model().unwrap();
    assert_eq!(version, 3);
    let (adapted, merged) = (logits(trainer.model()), logits(&merged));
    let gap = max_abs_diff(&adapted, &merged);
    assert!(gap < 1e-5, "merged vs adapted logits differ by {gap}");
    let moved = max_abs_diff(&adapted, &base_logits);
    assert!(moved > 1e-3, "training moved the logits by only {moved}");
}

fn set_values(var: &Var, values: Vec<f64>) {
    var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap())
        .unwrap();
}

/// Three sequences with prompts, trained tokens and an untrained observation.
fn sequences() -> Vec<Sequence> {
    let seq = |tokens: Vec<u32>, mask: Vec<u8>, advantage: f64, sample: usize| Sequence {
        rollout_logprobs: vec![0.0; tokens.len()],
        tokens,
        loss_mask: mask,
        old_logprobs: None,
        advantage,
        sample,
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

/// Gradients w.r.t. every A and B entry checked (three entries per tensor) against central
/// differences of the loss through the whole model, for SFT and for the policy gradient with a
/// KL term to the base (the reference the LoRA trainer builds over the shared base tensors).
#[test]
fn adapter_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    tiny_model(dir.path());
    let loss = LossConfig {
        kl_beta: 0.3,
        tis_cap: None,
        ..LossConfig::for_algorithm(Algorithm::Grpo)
    };
    let mut config = config(Precision::F64, lora(2, 3.0, &ALL_TARGETS));
    config.loss = loss;
    config.micro_batch_tokens = 24;
    config.max_grad_norm = None;
    let trainer = Trainer::new(dir.path(), config, &Device::Cpu).unwrap();
    // A non-zero B (a ramp per tensor), else the gradient w.r.t. A is 0 and the KL term too.
    for (i, (name, var)) in trainer.vars().iter().enumerate() {
        if name.ends_with("lora_B.weight") {
            let n = var.elem_count();
            let ramp = (0..n)
                .map(|k| (((k * 37 + i * 11) % 17) as f64 / 17.0 - 0.5) * 0.6)
                .collect();
            set_values(var, ramp);
        }
    }
    // π_old fixed at the current policy shifted by ±0.1 per token (ratios of 1.1 and 0.9, inside
    // the clip range): left to default, π_old would follow the perturbed weights and the
    // differences would see no policy term.
    let mut seqs = sequences();
    let old = trainer.sequence_logprobs(&seqs).unwrap();
    for (s, lp) in seqs.iter_mut().zip(old) {
        let shifted = lp
            .iter()
            .enumerate()
            .map(|(i, v)| v + if i % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        s.old_logprobs = Some(shifted);
    }
    for objective in [Objective::Sft, Objective::PolicyGradient] {
        let g = trainer.gradients(&seqs, objective).unwrap();
        assert!(g.metrics.n_micro_batches >= 2);
        if objective == Objective::PolicyGradient {
            assert!(g.metrics.kl > 0.0, "the policy equals the reference");
        }
        let loss_at = |t: &Trainer| t.gradients(&seqs, objective).unwrap().metrics.loss;
        let h = 1e-5;
        let mut n_checked = 0;
        for ((name, var), grad) in trainer.vars().iter().zip(&g.grads) {
            let grad = flat(
                grad.as_ref()
                    .unwrap_or_else(|| panic!("no gradient for {name}")),
            );
            assert!(
                grad.iter().any(|x| x.abs() > 1e-9),
                "zero gradient for {name}"
            );
            let n = grad.len();
            for index in [0, n / 3, n - 1] {
                let original = flat(var.as_tensor());
                let mut plus = original.clone();
                plus[index] += h;
                set_values(var, plus);
                let up = loss_at(&trainer);
                let mut minus = original.clone();
                minus[index] -= h;
                set_values(var, minus);
                let down = loss_at(&trainer);
                set_values(var, original);
                let numeric = (up - down) / (2.0 * h);
                let error =
                    (numeric - grad[index]).abs() / (1e-6 + numeric.abs().max(grad[index].abs()));
                assert!(
                    error < 1e-4 || (numeric - grad[index]).abs() < 1e-8,
                    "{objective:?} {name}[{index}]: analytic {} vs numeric {numeric}",
                    grad[index]
                );
                n_checked += 1;
            }
        }
        assert_eq!(n_checked, 28 * 3);
    }
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `W + alpha/r · B A` by hand, from the adapter file's PEFT tensors.
fn merged_by_hand(w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Vec<f64> {
    let (out_dim, in_dim) = w.dims2().unwrap();
    let rank = a.dims2().unwrap().0;
    let (w, a, b) = (flat(w), flat(a), flat(b));
    let mut merged = w.clone();
    for o in 0..out_dim {
        for i in 0..in_dim {
            let delta: f64 = (0..rank).map(|k| b[o * rank + k] * a[k * in_dim + i]).sum();
            merged[o * in_dim + i] += scale * delta;
        }
    }
    merged
}

#[test]
fn checkpoints_hold_a_peft_adapter_and_merged_weights_and_resume_exactly() {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    common::write_checkpoint(&model_dir, &common::tiny_config(24, 16, 2), 7, 0.0);
    let device = Device::Cpu;
    let targets = ["q_proj", "v_proj", "down_proj"];
    let mut config = config(Precision::F32, lora(4, 8.0, &targets));
    config.micro_batch_tokens = 12;

    let mut straight = Trainer::new(&model_dir, config.clone(), &device).unwrap();
    for step in 0..5 {
        straight.step(&batch(step)).unwrap();
    }
    let mut first = Trainer::new(&model_dir, config.clone(), &device).unwrap();
    for step in 0..3 {
        first.step(&batch(step)).unwrap();
    }
    let ckpt = root.path().join("ckpt");
    first
        .save_checkpoint(&ckpt, &serde_json::json!({"next_batch": 3}))
        .unwrap();

    // The PEFT adapter: names, shapes, config.
    let adapter =
        candle_core::safetensors::load(ckpt.join("adapter/adapter_model.safetensors"), &device)
            .unwrap();
    let mut expected = BTreeMap::new();
    for layer in 0..2 {
        for (module, in_dim, out_dim) in [
            ("self_attn.q_proj", 16, 16),
            ("self_attn.v_proj", 16, 8),
            ("mlp.down_proj", 24, 16),
        ] {
            let p = format!("base_model.model.model.layers.{layer}.{module}");
            expected.insert(format!("{p}.lora_A.weight"), vec![4, in_dim]);
            expected.insert(format!("{p}.lora_B.weight"), vec![out_dim, 4]);
        }
    }
    let got: BTreeMap<String, Vec<usize>> = adapter
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect();
    assert_eq!(got, expected);
    assert!(adapter.values().all(|t| t.dtype() == DType::F32));
    let peft = read_json(&ckpt.join("adapter/adapter_config.json"));
    assert_eq!(peft["peft_type"], "LORA");
    assert_eq!(peft["r"], 4);
    assert_eq!(peft["lora_alpha"], 8.0);
    assert_eq!(peft["lora_dropout"], 0.0);
    assert_eq!(peft["task_type"], "CAUSAL_LM");
    assert_eq!(peft["target_modules"], serde_json::json!(targets));
    assert_eq!(peft["base_model_name_or_path"], model_dir.to_str().unwrap());
    // The adapter round-trips: the file holds the trainer's adapters bit for bit.
    let held = first.adapter_tensors().unwrap().unwrap();
    assert_eq!(held.len(), adapter.len());
    for (name, t) in &held {
        assert_eq!(bits(t), bits(&adapter[name]), "{name}");
    }
    // The directory is a plain model whose weights are base + alpha/r · B A (computed by hand
    // here), and no adapter file sits next to them.
    assert!(!ckpt.join("adapter_config.json").exists());
    let saved = model::weights::load(&ckpt, DType::F32, &device).unwrap();
    let base = model::weights::load(&model_dir, DType::F32, &device).unwrap();
    let p = "model.layers.1.mlp.down_proj";
    let by_hand = merged_by_hand(
        &base[&format!("{p}.weight")],
        &adapter[&format!("base_model.model.{p}.lora_A.weight")],
        &adapter[&format!("base_model.model.{p}.lora_B.weight")],
        2.0,
    );
    let gap = max_abs_diff(&flat(&saved[&format!("{p}.weight")]), &by_hand);
    assert!(gap < 1e-6, "merged weight differs from W + s·BA by {gap}");
    assert_ne!(
        flat(&saved[&format!("{p}.weight")]),
        flat(&base[&format!("{p}.weight")])
    );
    let unadapted = "model.layers.1.self_attn.k_proj.weight";
    assert_eq!(bits(&saved[unadapted]), bits(&base[unadapted]));
    let loaded = CausalLm::load(&ckpt, DType::F32, &device).unwrap();
    assert_eq!(logits(&loaded), logits(&first.policy_model().unwrap().1));
    // The optimiser state holds the adapters' moments only.
    let moments =
        candle_core::safetensors::load(ckpt.join("optimizer.safetensors"), &device).unwrap();
    assert_eq!(moments.len(), 2 * expected.len());
    assert!(moments.keys().all(|k| k.contains(".lora_")));
    drop(first);

    // Resuming continues exactly.
    let (mut resumed, client) = Trainer::resume(&ckpt, &device).unwrap();
    assert_eq!(client["next_batch"], 3);
    for step in 3..5 {
        resumed.step(&batch(step)).unwrap();
    }
    let (a, b) = (
        straight.adapter_tensors().unwrap().unwrap(),
        resumed.adapter_tensors().unwrap().unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(bits(t), bits(&b[name]), "{name} differs after resume");
    }
    assert_eq!(
        common::weights_f64(&straight),
        common::weights_f64(&resumed)
    );

    // A resumed run with other LoRA settings is refused with the reason.
    let mut state = read_json(&ckpt.join("trainer_state.json"));
    state["config"]["lora"]["rank"] = 2.into();
    std::fs::write(ckpt.join("trainer_state.json"), state.to_string()).unwrap();
    let err = Trainer::resume(&ckpt, &device).unwrap_err().to_string();
    assert!(err.contains("the adapter has rank 4"), "{err}");
}

#[test]
fn lora_config_is_validated() {
    let check = |value: serde_json::Value, expected: &str| {
        let err = match serde_json::from_value::<TrainConfig>(value.clone()) {
            Err(e) => e.to_string(),
            Ok(c) => c
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        };
        assert!(
            err.contains(expected),
            "{value}: `{err}` lacks `{expected}`"
        );
    };
    check(
        serde_json::json!({"lora": {"rank": 0}}),
        "lora.rank must be at least 1",
    );
    check(
        serde_json::json!({"lora": {"alpha": -1.0}}),
        "lora.alpha must be a positive",
    );
    check(
        serde_json::json!({"lora": {"targets": ["q_proj", "qkv_proj"]}}),
        "unknown module `qkv_proj`",
    );
    check(
        serde_json::json!({"lora": {"targets": []}}),
        "lora.targets is empty",
    );
    check(
        serde_json::json!({"lora": {"targets": ["o_proj", "o_proj"]}}),
        "twice",
    );
    // Dropout is not implemented, so it is not accepted either.
    check(
        serde_json::json!({"lora": {"dropout": 0.1}}),
        "unknown field `dropout`",
    );

    let ok: TrainConfig = serde_json::from_value(serde_json::json!({"lora": {"rank": 4}})).unwrap();
    ok.validate().unwrap();
    let lora = ok.lora.unwrap();
    assert_eq!((lora.rank, lora.alpha, lora.targets.len()), (4, 16.0, 7));
    let full: TrainConfig = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(full.lora, None);
}
