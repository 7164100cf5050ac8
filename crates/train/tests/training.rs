//! Training end to end on CPU: a resumed run is bit-identical to an uninterrupted one, a
//! checkpoint is a loadable model directory, and a tiny model learns a toy task with GRPO from
//! its own samples.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use model::generate::{Engine, EngineConfig, GenerationParams, Request};
use model::sampling::SamplingParams;
use train::checkpoint::has_checkpoint;
use train::{
    Algorithm, Decay, Error, LossConfig, Precision, Sample, Schedule, TrainConfig, Trainer,
};
use trajectory::derive_seed;

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
        skill: if group == "a" {
            "editing".into()
        } else {
            "review".into()
        },
    };
    vec![
        sample(&[4, 5, 6], 1.0, "a"),
        sample(&[7, 8], 0.0, "a"),
        sample(&[9, 10 + s % 4, 11, 12], 0.5, "a"),
        sample(&[13, 14], 1.0, "b"),
        sample(&[15], 0.0, "b"),
    ]
}

fn resume_config() -> TrainConfig {
    TrainConfig {
        loss: LossConfig::for_algorithm(Algorithm::Grpo),
        schedule: Schedule {
            warmup_steps: 3,
            total_steps: 6,
            decay: Decay::Cosine { min_ratio: 0.1 },
        },
        micro_batch_tokens: 16,
        precision: Precision::F32,
        ..TrainConfig::default()
    }
    .with_lr(1e-2)
}

trait WithLr {
    fn with_lr(self, lr: f64) -> Self;
}

impl WithLr for TrainConfig {
    fn with_lr(mut self, lr: f64) -> Self {
        self.optimizer.lr = lr;
        self
    }
}

#[test]
fn resuming_gives_bit_identical_weights() {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    common::write_checkpoint(&model_dir, &common::tiny_config(24, 16, 2), 7, 0.0);
    let device = Device::Cpu;

    let mut straight = Trainer::new(&model_dir, resume_config(), &device).unwrap();
    for step in 0..6 {
        straight.step(&batch(step)).unwrap();
    }

    let mut first = Trainer::new(&model_dir, resume_config(), &device).unwrap();
    for step in 0..3 {
        first.step(&batch(step)).unwrap();
    }
    let ckpt = root.path().join("ckpt");
    first
        .save_checkpoint(&ckpt, &serde_json::json!({"next_batch": 3}))
        .unwrap();
    drop(first);
    let (mut resumed, client) = Trainer::resume(&ckpt, &device).unwrap();
    assert_eq!(client["next_batch"], 3);
    assert_eq!((resumed.step_count(), resumed.weight_version()), (3, 3));
    let next = client["next_batch"].as_u64().unwrap();
    for step in next..6 {
        resumed.step(&batch(step)).unwrap();
    }
    let (a, b) = (
        common::weights_f64(&straight),
        common::weights_f64(&resumed),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, values) in &a {
        let other = &b[name];
        assert!(
            values
                .iter()
                .zip(other)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} differs after resume"
        );
    }
    // The weights moved, and the checkpoint is an ordinary model directory.
    let initial = common::weights_f64(&Trainer::new(&model_dir, resume_config(), &device).unwrap());
    assert_ne!(initial, a);
    let loaded = model::CausalLm::load(&ckpt, candle_core::DType::F32, &device).unwrap();
    assert_eq!(loaded.spec().vocab_size, 24);
}

/// Reward: the share of the completion's tokens equal to `TARGET`.
const TARGET: u32 = 7;
const PROMPT: [u32; 3] = [1, 2, 3];

/// A copy of the checkpoint directory `from` at `to`, damaged by `damage`.
fn damaged_copy(from: &Path, to: &Path, damage: impl FnOnce(&Path)) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    damage(to);
    to.to_path_buf()
}

fn edit_state(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut state);
    std::fs::write(&path, state.to_string()).unwrap();
}

fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// A damaged checkpoint (state or optimiser file truncated, a step counter that is not one, a
/// state file gone, a save interrupted halfway) is a typed error on resume, never a trainer
/// that starts again from step 0.
#[test]
fn damaged_checkpoints_are_typed_errors() {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    common::write_checkpoint(&model_dir, &common::tiny_config(24, 16, 1), 7, 0.0);
    let device = Device::Cpu;
    let mut trainer = Trainer::new(&model_dir, resume_config(), &device).unwrap();
    trainer.step(&batch(0)).unwrap();
    let good = root.path().join("good");
    trainer
        .save_checkpoint(&good, &serde_json::json!({"next_batch": 1}))
        .unwrap();
    drop(trainer);
    assert!(has_checkpoint(&good).unwrap());
    assert_eq!(Trainer::resume(&good, &device).unwrap().0.step_count(), 1);

    let copy = |name: &str, damage: &dyn Fn(&Path)| {
        let dir = damaged_copy(&good, &root.path().join(name), damage);
        let error = Trainer::resume(&dir, &device).err();
        (dir, error)
    };
    let invalid_json = [
        copy("truncated-state", &|d| {
            truncate(&d.join("trainer_state.json"))
        }),
        copy("negative-step", &|d| {
            edit_state(d, |s| s["step"] = (-1).into())
        }),
        copy("text-step", &|d| edit_state(d, |s| s["step"] = "1".into())),
        copy("fractional-step", &|d| {
            edit_state(d, |s| s["step"] = 1.5.into())
        }),
        copy("no-step", &|d| {
            edit_state(d, |s| {
                s.as_object_mut().unwrap().remove("step");
            })
        }),
        copy("empty-state", &|d| {
            std::fs::write(d.join("trainer_state.json"), "").unwrap()
        }),
    ];
    for (dir, error) in invalid_json {
        assert!(
            matches!(&error, Some(Error::Json { path, .. }) if path.starts_with(&dir)),
            "{}: {error:?}",
            dir.display()
        );
    }
    let damaged = [
        copy("other-format", &|d| {
            edit_state(d, |s| s["format_version"] = 99.into())
        }),
        copy("truncated-optimizer", &|d| {
            truncate(&d.join("optimizer.safetensors"))
        }),
        copy("optimizer-missing-moments", &|d| {
            let path = d.join("optimizer.safetensors");
            let mut moments = candle_core::safetensors::load(&path, &device).unwrap();
            let name = moments.keys().next().unwrap().clone();
            moments.remove(&name);
            candle_core::safetensors::save(&moments, &path).unwrap();
        }),
    ];
    for (dir, error) in damaged {
        assert!(
            matches!(&error, Some(Error::Checkpoint { path, .. }) if path.starts_with(&dir)),
            "{}: {error:?}",
            dir.display()
        );
    }

    // The checks a resuming run makes before it decides to start over.
    let (no_state, _) = copy("no-state", &|d| {
        std::fs::remove_file(d.join("trainer_state.json")).unwrap()
    });
    let error = has_checkpoint(&no_state).unwrap_err();
    assert!(matches!(&error, Error::Checkpoint { .. }), "{error}");
    assert!(error.to_string().contains("trainer_state.json"), "{error}");
    let aside = root.path().join(".interrupted.old-123");
    damaged_copy(&good, &aside, |_| {});
    let error = has_checkpoint(&root.path().join("interrupted")).unwrap_err();
    assert!(matches!(&error, Error::Checkpoint { .. }), "{error}");
    assert!(
        error.to_string().contains(".interrupted.old-123"),
        "{error}"
    );
    assert!(!has_checkpoint(&root.path().join("never-written")).unwrap());
}

fn rollouts(
    trainer: &Trainer,
    step: u64,
    n_groups: usize,
    group_size: usize,
) -> (Vec<Sample>, f64) {
    let (version, model) = trainer.policy_model().unwrap();
    assert_eq!(version, step);
    let mut engine = Engine::new(model, None, EngineConfig::default());
    let mut requests = Vec::new();
    for i in 0..n_groups * group_size {
        requests.push(Request {
            id: i as u64,
            prompt: PROMPT.to_vec(),
            params: GenerationParams {
                sampling: SamplingParams {
                    seed: derive_seed(1234, &[step, i as u64]),
                    ..SamplingParams::default()
                },
                max_tokens: 6,
                ignore_eos: true,
                ..GenerationParams::default()
            },
        });
    }
    let completions = engine.generate(requests).unwrap();
    let mut samples = Vec::new();
    let mut total = 0.0;
    for (i, c) in completions.iter().enumerate() {
        let reward =
            c.token_ids.iter().filter(|&&t| t == TARGET).count() as f64 / c.token_ids.len() as f64;
        total += reward;
        samples.push(Sample {
            segments: vec![common::segment(&PROMPT, &c.token_ids, &c.logprobs)],
            reward,
            group: format!("g{}", i / group_size),
            skill: "toy".into(),
        });
    }
    (samples, total / completions.len() as f64)
}

#[test]
fn grpo_learns_a_toy_task_on_cpu() {
    let root = tempfile::tempdir().unwrap();
    common::write_checkpoint(root.path(), &common::tiny_config(16, 32, 2), 11, 0.0);
    let config = TrainConfig {
        loss: LossConfig::for_algorithm(Algorithm::Grpo),
        max_grad_norm: Some(1.0),
        ..TrainConfig::default()
    }
    .with_lr(3e-3);
    let mut trainer = Trainer::new(root.path(), config, &Device::Cpu).unwrap();
    let mut rewards = Vec::new();
    for step in 0..40 {
        let (samples, mean_reward) = rollouts(&trainer, step, 4, 8);
        let metrics = trainer.step(&samples).unwrap();
        // Same weights in the engine and the trainer: the importance weights stay at 1.
        assert!(
            metrics.rollout_mismatch.abs() < 1e-3,
            "{}",
            metrics.rollout_mismatch
        );
        rewards.push(mean_reward);
    }
    eprintln!("mean reward per step: {rewards:.2?}");
    let early: f64 = rewards[..5].iter().sum::<f64>() / 5.0;
    let late: f64 = rewards[rewards.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        late > early + 0.3,
        "mean reward went from {early:.3} to {late:.3}: {rewards:.2?}"
    );
}

#[test]
fn minibatch_updates_clip_against_the_policy_before_the_first_update() {
    let root = tempfile::tempdir().unwrap();
    common::write_checkpoint(root.path(), &common::tiny_config(16, 32, 2), 11, 0.0);
    let config = TrainConfig {
        loss: LossConfig::for_algorithm(Algorithm::Grpo),
        max_grad_norm: None,
        ..TrainConfig::default()
    }
    .with_lr(5e-2);
    let mut trainer = Trainer::new(root.path(), config, &Device::Cpu).unwrap();
    let (samples, _) = rollouts(&trainer, 0, 4, 8);
    // The trainer's log-probs of the rollouts are the engine's (same weights), token for token.
    let sequences: Vec<train::Sequence> = samples
        .iter()
        .map(|s| {
            let seg = &s.segments[0];
            train::Sequence {
                tokens: seg.token_ids.clone(),
                loss_mask: seg.loss_mask.clone(),
                rollout_logprobs: seg.logprobs.clone(),
                old_logprobs: None,
                advantage: 0.0,
                sample: 0,
            }
        })
        .collect();
    let ours = trainer.sequence_logprobs(&sequences).unwrap();
    for (s, lp) in sequences.iter().zip(&ours) {
        for ((&m, &a), &b) in s.loss_mask.iter().zip(lp).zip(&s.rollout_logprobs) {
            if m == 1 {
                assert!((a - b).abs() < 1e-4, "trainer {a} vs engine {b}");
            }
        }
    }
    let metrics = trainer.step_minibatches(&samples, 4).unwrap();
    assert_eq!(metrics.len(), 4);
    assert_eq!(trainer.weight_version(), 4);
    assert_eq!(metrics[0].clip_fraction, 0.0);
    assert!(
        metrics[3].clip_fraction > 0.0,
        "no token clipped after 3 updates at lr 0.05: {:?}",
        metrics.iter().map(|m| m.clip_fraction).collect::<Vec<_>>()
    );
    assert!(metrics.iter().all(|m| m.n_samples == 8 && m.updated));
}

/// Three steps in bf16 against the same steps in f32, from the same start: the loss and
/// gradient norm within 5% but not bit for bit, the variables still f32, and the update in the
/// same direction (cosine > 0.95).
fn check_bf16_tracks_f32(lora: Option<train::LoraConfig>) {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    common::write_checkpoint(&model_dir, &common::tiny_config(24, 16, 2), 7, 0.0);
    let device = Device::Cpu;
    let config = |precision| TrainConfig {
        precision,
        lora: lora.clone(),
        ..resume_config()
    };
    let initial =
        common::weights_f64(&Trainer::new(&model_dir, config(Precision::F32), &device).unwrap());
    let mut full = Trainer::new(&model_dir, config(Precision::F32), &device).unwrap();
    let mut mixed = Trainer::new(&model_dir, config(Precision::Bf16), &device).unwrap();
    let (mut full_metrics, mut mixed_metrics) = (Vec::new(), Vec::new());
    for step in 0..3 {
        full_metrics.push(full.step(&batch(step)).unwrap());
        mixed_metrics.push(mixed.step(&batch(step)).unwrap());
    }
    // The same loss and gradient norm up to bf16 rounding, but not bit for bit: bf16 is used.
    for (a, b) in full_metrics.iter().zip(&mixed_metrics) {
        let loss = (a.loss - b.loss).abs() / a.loss.abs().max(1e-3);
        let norm = (a.grad_norm - b.grad_norm).abs() / a.grad_norm;
        assert!(loss < 0.05, "loss {} vs {}", a.loss, b.loss);
        assert!(
            norm < 0.05,
            "gradient norm {} vs {}",
            a.grad_norm,
            b.grad_norm
        );
    }
    assert_ne!(full_metrics[0].loss, mixed_metrics[0].loss);
    // The master weights stay f32 and move the way the f32 run's do.
    for (_, var) in mixed.vars() {
        assert_eq!(var.dtype(), candle_core::DType::F32);
    }
    let (a, b) = (common::weights_f64(&full), common::weights_f64(&mixed));
    assert_eq!(a.len(), initial.len());
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (name, start) in &initial {
        for ((x0, xa), xb) in start.iter().zip(&a[name]).zip(&b[name]) {
            let (da, db) = (xa - x0, xb - x0);
            dot += da * db;
            na += da * da;
            nb += db * db;
        }
    }
    let cosine = dot / (na.sqrt() * nb.sqrt());
    assert!(na > 0.0 && cosine > 0.95, "update cosine {cosine}");
}

#[test]
fn bf16_mixed_precision_tracks_f32() {
    check_bf16_tracks_f32(None);
}

/// LoRA in bf16: the frozen base is cast once, the f32 adapters at every step.
#[test]
fn bf16_lora_tracks_f32_lora() {
    check_bf16_tracks_f32(Some(train::LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..train::LoraConfig::default()
    }));
}
