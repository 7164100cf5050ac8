//! `model::init`: complete, loadable, deterministic checkpoints.

use candle_core::{DType, Device, Tensor};
use model::chat::ChatTemplate;
use model::init::{init_checkpoint, InitOptions, Size};
use model::tokenizer::Tokenizer;
use model::{Arch, CausalLm};
use serde_json::json;

const FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

fn init(arch: Arch, seed: u64, dir: &std::path::Path) -> model::init::InitSummary {
    init_checkpoint(
        &InitOptions {
            arch,
            size: Size::Tiny,
            seed,
            corpus: None,
        },
        dir,
    )
    .unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        root.path().join("a"),
        root.path().join("b"),
        root.path().join("c"),
    );
    init(Arch::Qwen2, 1, &a);
    init(Arch::Qwen2, 1, &b);
    init(Arch::Qwen2, 2, &c);
    for file in FILES {
        let read = |d: &std::path::Path| std::fs::read(d.join(file)).unwrap();
        assert!(
            read(&a) == read(&b),
            "{file} differs between two runs with the same seed"
        );
        let same_as_other_seed = read(&a) == read(&c);
        assert_eq!(same_as_other_seed, file != "model.safetensors", "{file}");
    }
}

fn check_arch(arch: Arch, expected_model_type: &str) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("m");
    let summary = init(arch, 3, &dir);
    let config = model::model::read_config(&dir).unwrap();
    assert_eq!(config["model_type"], json!(expected_model_type));
    assert!(
        (2_000_000..8_000_000).contains(&summary.n_params),
        "tiny has {} parameters",
        summary.n_params
    );
    let model = CausalLm::load(&dir, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(model.arch(), arch);
    assert_eq!(model.spec(), &summary.spec);

    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tokenizer.vocab_size(), summary.vocab_size);
    assert_eq!(summary.spec.vocab_size, summary.vocab_size);
    assert!(summary.vocab_size > 3000, "vocab {}", summary.vocab_size);
    let code = "pub fn create_episode(&self, snapshot: &Snapshot) -> Result<Episode, Error> {\n";
    let ids = tokenizer.encode(code).unwrap();
    assert!(
        ids.len() * 3 < code.len(),
        "BPE did not merge: {} ids",
        ids.len()
    );
    let source = "fn main() {\n    println!(\"héllo, wörld {}\", 42);\n}\n\tdef f(x): return x ** 2  # 数学\n";
    let ids = tokenizer.encode(source).unwrap();
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), source);
    for (token, special) in model::tokenizer::ADDED_TOKENS {
        let id = tokenizer.token_to_id(token).unwrap();
        assert_eq!(tokenizer.encode(token).unwrap(), vec![id], "{token}");
        let kept = tokenizer.decode(&[id], true).unwrap();
        assert_eq!(kept.is_empty(), special, "{token} special={special}");
    }
    let eos = model::model::eos_token_ids(&dir).unwrap();
    assert_eq!(
        eos,
        vec![
            tokenizer.token_to_id("<|im_end|>").unwrap(),
            tokenizer.token_to_id("<|endoftext|>").unwrap()
        ]
    );

    let template = ChatTemplate::from_dir(&dir).unwrap();
    let tools = [
        json!({"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}),
    ];
    let text = template
        .render(
            &[json!({"role": "user", "content": "hi"})],
            Some(&tools),
            true,
            &Default::default(),
        )
        .unwrap();
    assert!(
        text.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"bash\""),
        "{text}"
    );
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");

    let prompt = tokenizer.encode(&text).unwrap();
    let tokens = Tensor::from_vec(prompt.clone(), (1, prompt.len()), &Device::Cpu).unwrap();
    let logits = model.forward(&tokens, None, None).unwrap();
    assert_eq!(logits.dims(), &[1, prompt.len(), summary.vocab_size]);
    let values = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}

#[test]
fn qwen2_checkpoint_is_complete() {
    check_arch(Arch::Qwen2, "qwen2");
}

#[test]
fn qwen3_checkpoint_is_complete() {
    check_arch(Arch::Qwen3, "qwen3");
}

#[test]
fn llama_checkpoint_is_complete() {
    check_arch(Arch::Llama, "llama");
}

#[test]
fn a_custom_corpus_is_used_and_an_empty_one_rejected() {
    let root = tempfile::tempdir().unwrap();
    let options = |corpus: Vec<String>| InitOptions {
        arch: Arch::Qwen3,
        size: Size::Tiny,
        seed: 0,
        corpus: Some(corpus),
    };
    let err = init_checkpoint(&options(vec!["  ".into()]), &root.path().join("e")).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let summary = init_checkpoint(
        &options(vec!["abc abd abe ".repeat(50)]),
        &root.path().join("c"),
    )
    .unwrap();
    // A tiny corpus allows few merges: 256 bytes + a handful of merges + 9 added tokens.
    assert!(summary.vocab_size < 300, "vocab {}", summary.vocab_size);
}
