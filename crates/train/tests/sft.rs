//! SFT from trajectory files: bare and wrapped records, selection by outcome and reward,
//! re-rendering of text-only trajectories with the chat template (only assistant spans trained),
//! and a short run that resumes to the same weights as an uninterrupted one.

mod common;

use std::io::Write as _;
use std::path::Path;

use candle_core::Device;
use serde_json::{json, Value};
use train::sft::{self, Renderer, SftOptions};
use train::TrainConfig;

fn trajectory(id: &str, submitted: bool, segments: Value) -> Value {
    let outcome = if submitted {
        json!({"kind": "submitted", "arguments": {}})
    } else {
        json!({"kind": "step_limit", "steps": 3})
    };
    json!({
        "task_id": "t", "episode_id": id, "policy": "oracle", "seed": 0,
        "outcome": outcome,
        "messages": [
            {"role": "system", "content": "You fix code."},
            {"role": "user", "content": "Make the test pass."},
            {"role": "assistant", "content": "Looking at the file first."},
            {"role": "user", "content": "ok"},
            {"role": "assistant", "content": "Done: fixed the off-by-one."},
        ],
        "tools": [], "steps": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
        "final_context_tokens": 0, "started_unix_ms": 0,
        "wall_seconds": 0.0, "policy_seconds": 0.0, "tool_seconds": 0.0,
        "token_segments": segments,
    })
}

fn write_records(path: &Path, records: &[Value]) {
    let mut f = std::fs::File::create(path).unwrap();
    for r in records {
        let mut r = r.clone();
        r["schema_version"] = json!(1);
        writeln!(f, "{r}").unwrap();
    }
}

#[test]
fn records_are_selected_by_outcome_and_reward() {
    let dir = tempfile::tempdir().unwrap();
    let segs = json!([{"token_ids": [1, 2, 3], "loss_mask": [0, 1, 1], "logprobs": [0.0, -1.0, -1.0],
                        "first_step": 0, "last_step": 0}]);
    write_records(
        &dir.path().join("a.jsonl"),
        &[
            trajectory("bare-ok", true, segs.clone()),
            trajectory("bare-unsubmitted", false, segs.clone()),
        ],
    );
    std::fs::create_dir(dir.path().join("eval")).unwrap();
    write_records(
        &dir.path().join("eval/b.jsonl"),
        &[
            json!({"trajectory": trajectory("top", true, segs.clone()), "verdict": {"reward": 1.0, "reason": "pass"}}),
            json!({"trajectory": trajectory("low", true, segs.clone()), "verdict": {"reward": 0.0}}),
            json!({"trajectory": trajectory("top-unsubmitted", false, segs), "verdict": {"reward": 1.0}}),
        ],
    );
    let records = sft::read_records(dir.path()).unwrap();
    assert_eq!(records.len(), 5);
    let selection = sft::select(records, 1.0);
    let kept: Vec<&str> = selection
        .kept
        .iter()
        .map(|t| t.episode_id.as_str())
        .collect();
    assert_eq!(kept, vec!["bare-ok", "top"]);
    assert_eq!(
        (
            selection.n_not_submitted,
            selection.n_below_min_reward,
            selection.n_without_reward
        ),
        (2, 1, 1)
    );
    let (seqs, skipped) = sft::sequences(&selection.kept, None).unwrap();
    assert_eq!((seqs.len(), skipped), (2, 0));
    assert_eq!(seqs[0].loss_mask, vec![0, 1, 1]);
}

/// A tokenizer and template from `model init`, with a much smaller network over its vocabulary.
fn small_model(dir: &Path) {
    let options = model::init::InitOptions {
        arch: model::Arch::Qwen2,
        size: model::init::Size::Tiny,
        seed: 0,
        corpus: Some(vec![
            "def fix(x):\n    return x + 1\n# Looking at the file first. Done: fixed the off-by-one. Make the test pass. You fix code.".repeat(20),
        ]),
    };
    let summary = model::init::init_checkpoint(&options, dir).unwrap();
    common::write_checkpoint(dir, &common::tiny_config(summary.vocab_size, 16, 1), 1, 0.0);
}

#[test]
fn text_only_trajectories_train_only_assistant_turns() {
    let dir = tempfile::tempdir().unwrap();
    small_model(dir.path());
    let renderer = Renderer::from_dir(dir.path()).unwrap();
    let t: trajectory::Trajectory =
        serde_json::from_value(trajectory("text", true, json!([]))).unwrap();
    let seq = renderer.sequence(&t).unwrap();
    // The trained tokens decode to exactly the two assistant turns, each with its end-of-turn.
    let mut spans = Vec::new();
    let mut current = Vec::new();
    for (&token, &m) in seq.tokens.iter().zip(&seq.loss_mask) {
        if m == 1 {
            current.push(token);
        } else if !current.is_empty() {
            spans.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        spans.push(current);
    }
    let texts: Vec<String> = spans
        .iter()
        .map(|s| renderer.tokenizer.decode(s, false).unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "Looking at the file first.<|im_end|>",
            "Done: fixed the off-by-one.<|im_end|>"
        ]
    );
    // Everything together is the template's rendering.
    let full = renderer.tokenizer.decode(&seq.tokens, false).unwrap();
    assert!(full.starts_with("<|im_start|>system\nYou fix code.<|im_end|>\n<|im_start|>user\n"));
    // Trained on the prompt as well: every token but the first is a target, so the targets
    // decode to the whole conversation without its first token.
    let mut everything = vec![seq.clone()];
    sft::train_on_every_token(&mut everything);
    assert_eq!(everything[0].n_trained(), seq.tokens.len() - 1);
    assert!(everything[0].n_trained() > seq.n_trained() + 10);
    let targets = renderer
        .tokenizer
        .decode(&everything[0].tokens[1..], false)
        .unwrap();
    assert!(full.ends_with(&targets) && full.starts_with("<|im_start|>"));
}

#[test]
fn an_interrupted_sft_run_resumes_to_the_same_weights() {
    let root = tempfile::tempdir().unwrap();
    let model_dir = root.path().join("model");
    small_model(&model_dir);
    let renderer = Renderer::from_dir(&model_dir).unwrap();
    let t: trajectory::Trajectory =
        serde_json::from_value(trajectory("text", true, json!([]))).unwrap();
    let mut data = vec![renderer.sequence(&t).unwrap()];
    let segs = json!([{"token_ids": [5, 6, 7, 8, 9], "loss_mask": [0, 0, 1, 1, 1],
                       "logprobs": [0.0, 0.0, -1.0, -1.0, -1.0], "first_step": 0, "last_step": 0}]);
    let t2: trajectory::Trajectory = serde_json::from_value(trajectory("tok", true, segs)).unwrap();
    data.extend(sft::sequences(&[t2], None).unwrap().0);
    let options = |steps| SftOptions {
        steps,
        batch_tokens: 8,
        seed: 4,
        checkpoint_every: 2,
        config: TrainConfig {
            micro_batch_tokens: 64,
            ..TrainConfig::default()
        },
    };
    let device = Device::Cpu;
    let straight = sft::run(
        &model_dir,
        &root.path().join("a"),
        &data,
        &options(5),
        false,
        &device,
        |_| {},
    )
    .unwrap();
    let out = root.path().join("b");
    // A run of 3 steps whose last checkpoint is from step 2, as if killed after writing step
    // 2's metrics line but before its checkpoint: the step-2 checkpoint comes from a 2-step run.
    sft::run(&model_dir, &out, &data, &options(3), false, &device, |_| {}).unwrap();
    let other = root.path().join("c");
    sft::run(
        &model_dir,
        &other,
        &data,
        &options(2),
        false,
        &device,
        |_| {},
    )
    .unwrap();
    std::fs::remove_dir_all(out.join("checkpoint")).unwrap();
    std::fs::rename(other.join("checkpoint"), out.join("checkpoint")).unwrap();
    let mut seen = Vec::new();
    let resumed = sft::run(&model_dir, &out, &data, &options(5), true, &device, |m| {
        seen.push(m.step)
    })
    .unwrap();
    // Step 2 is redone; its old metrics line is replaced, not repeated.
    assert_eq!(seen, vec![2, 3, 4]);
    assert_eq!(
        common::weights_f64(&straight),
        common::weights_f64(&resumed)
    );
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4]);
    assert!(
        out.join("model/model.safetensors").is_file() && out.join("model/tokenizer.json").is_file()
    );

    // A checkpoint that lost its state is an error on resume, not a fresh run from step 0 that
    // would replace the metrics.
    std::fs::remove_file(out.join("checkpoint/trainer_state.json")).unwrap();
    let error = sft::run(&model_dir, &out, &data, &options(6), true, &device, |_| {}).unwrap_err();
    assert!(
        matches!(&error, train::Error::Checkpoint { path, .. } if path.ends_with("checkpoint")),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap(),
        lines
    );
}
