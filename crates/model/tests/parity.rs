//! Logits of our model against transformers' on the committed fixtures made by
//! `scripts/parity/make_fixtures.py`: a left-padded batch, full forward and incremental decoding
//! through the KV cache, in f32, within 1e-4.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use model::{Arch, CausalLm};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Expected {
    ids: Tensor,
    mask: Vec<Vec<u32>>,
    logits: Tensor,
}

fn expected(dir: &Path) -> Expected {
    let tensors = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu)
        .expect("expected.safetensors");
    let ids = tensors["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = tensors["attention_mask"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap();
    Expected {
        ids,
        mask,
        logits: tensors["logits"].clone(),
    }
}

/// Largest |Δ| over the real (unmasked) positions of `[batch, seq, vocab]` logits.
fn max_diff_real(ours: &Tensor, reference: &Tensor, mask: &[Vec<u32>]) -> f32 {
    let ours = ours.to_dtype(DType::F32).unwrap().to_vec3::<f32>().unwrap();
    let reference = reference.to_vec3::<f32>().unwrap();
    let mut worst = 0f32;
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m == 1 {
                for (x, y) in ours[b][t].iter().zip(&reference[b][t]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

fn check_full_forward(name: &str, arch: Arch) {
    let dir = fixture(name);
    let model = CausalLm::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.arch(), arch);
    let e = expected(&dir);
    let mask = Tensor::new(e.mask.clone(), &Device::Cpu).unwrap();
    let logits = model.forward(&e.ids, Some(&mask), None).unwrap();
    assert_eq!(logits.dims(), e.logits.dims());
    let diff = max_diff_real(&logits, &e.logits, &e.mask);
    eprintln!("{name}: max |Δlogit| {diff:.2e}");
    assert!(diff < TOLERANCE, "{name}: max |Δlogit| {diff}");
    // The inference copy with stacked projections computes the same logits.
    let fused = model.fused_for_inference().unwrap();
    let logits = fused.forward(&e.ids, Some(&mask), None).unwrap();
    let diff = max_diff_real(&logits, &e.logits, &e.mask);
    assert!(diff < TOLERANCE, "{name} (fused): max |Δlogit| {diff}");
    // The reference logits are far from uniform, so the tolerance is meaningful.
    let spread = e.logits.max_all().unwrap().to_scalar::<f32>().unwrap()
        - e.logits.min_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(spread > 1.0, "{name}: reference logits span only {spread}");
}

/// Prefill the first `prefix` columns, then feed the rest one column at a time through the
/// cache; every real position's logits must match the reference.
fn check_incremental(name: &str, prefix: usize) {
    let dir = fixture(name);
    let model = CausalLm::load(&dir, DType::F32, &Device::Cpu)
        .unwrap()
        .fused_for_inference()
        .unwrap();
    let e = expected(&dir);
    let (batch, seq) = e.ids.dims2().unwrap();
    let mask = Tensor::new(e.mask.clone(), &Device::Cpu).unwrap();
    let mut cache = model.new_cache(batch);
    let mut parts = vec![model
        .forward(
            &e.ids.narrow(1, 0, prefix).unwrap(),
            Some(&mask.narrow(1, 0, prefix).unwrap()),
            Some(&mut cache),
        )
        .unwrap()];
    for t in prefix..seq {
        parts.push(
            model
                .forward(
                    &e.ids.narrow(1, t, 1).unwrap(),
                    Some(&mask.narrow(1, t, 1).unwrap()),
                    Some(&mut cache),
                )
                .unwrap(),
        );
    }
    let logits = Tensor::cat(&parts, 1).unwrap();
    let diff = max_diff_real(&logits, &e.logits, &e.mask);
    assert!(
        diff < TOLERANCE,
        "{name} (prefix {prefix}): max |Δlogit| {diff}"
    );
}

#[test]
fn qwen2_f32_single_file_matches_transformers() {
    check_full_forward("qwen2", Arch::Qwen2);
    check_incremental("qwen2", 6);
}

#[test]
fn qwen3_bf16_tied_matches_transformers() {
    check_full_forward("qwen3", Arch::Qwen3);
    check_incremental("qwen3", 1);
}

#[test]
fn llama_f16_sharded_llama3_rope_matches_transformers() {
    let dir = fixture("llama");
    assert!(
        dir.join("model.safetensors.index.json").is_file(),
        "fixture is sharded"
    );
    check_full_forward("llama", Arch::Llama);
    check_incremental("llama", 9);
}

/// The comparison can fail: a wrong rope_theta moves the logits well beyond the tolerance.
#[test]
fn a_wrong_config_is_detected() {
    let dir = fixture("qwen2");
    let mut config = model::model::read_config(&dir).unwrap();
    config["rope_theta"] = serde_json::json!(500.0);
    if config.get("rope_parameters").is_some() {
        config["rope_parameters"]["rope_theta"] = serde_json::json!(500.0);
    }
    let tensors = model::weights::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = CausalLm::new(&config, vb).unwrap();
    let e = expected(&dir);
    let mask = Tensor::new(e.mask.clone(), &Device::Cpu).unwrap();
    let logits = model.forward(&e.ids, Some(&mask), None).unwrap();
    let diff = max_diff_real(&logits, &e.logits, &e.mask);
    assert!(
        diff > 100.0 * TOLERANCE,
        "a wrong rope_theta went unnoticed: {diff}"
    );
}

/// Half-precision weights run end to end (norms and softmax in f32) and stay close to f32.
#[test]
fn bf16_and_f16_forward_stay_close_to_f32() {
    let dir = fixture("qwen3");
    let e = expected(&dir);
    let mask = Tensor::new(e.mask.clone(), &Device::Cpu).unwrap();
    // Bounds of a few units of each format's rounding error on logits of magnitude ~7.
    for (dtype, bound) in [(DType::BF16, 0.5), (DType::F16, 0.06)] {
        let model = CausalLm::load(&dir, dtype, &Device::Cpu).unwrap();
        let logits = model.forward(&e.ids, Some(&mask), None).unwrap();
        assert_eq!(logits.dtype(), dtype);
        let diff = max_diff_real(&logits, &e.logits, &e.mask);
        eprintln!("{dtype:?}: max |Δlogit| against f32 transformers {diff:.3}");
        assert!(diff < bound, "{dtype:?}: max |Δlogit| {diff}");
        assert!(diff > TOLERANCE, "{dtype:?} computed in f32?");
    }
}
