//! The in-process policy gives exactly what the HTTP server gives for the same request and seed:
//! same text, same token ids, same log-probs; and a prompt longer than the context is a
//! context-length error, as the server's 400 is for an HTTP client.

use std::net::SocketAddr;

use model::init::{init_checkpoint, InitOptions, Size};
use model::{Arch, DType};
use policy::{ChatRequest, Message, OpenAiConfig, OpenAiPolicy, Policy, SamplingParams, ToolSpec};
use serde_json::json;

fn options(dir: std::path::PathBuf) -> serve::ServeOptions {
    serve::ServeOptions {
        model_dir: dir,
        model_name: Some("tiny".into()),
        dtype: DType::F32,
        device: model::Device::Cpu,
        max_batch: 8,
        seed: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_equals_http() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny");
    let init = InitOptions {
        arch: Arch::Qwen2,
        size: Size::Tiny,
        seed: 5,
        corpus: None,
    };
    init_checkpoint(&init, &dir).unwrap();

    let local = engine::LocalPolicy::load(&options(dir.clone())).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let http_options = options(dir);
    tokio::spawn(async move {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        serve::serve(&http_options, addr, |bound| {
            let _ = tx.send(bound);
        })
        .await
        .unwrap();
    });
    let bound = rx.await.unwrap();
    let remote = OpenAiPolicy::new(OpenAiConfig::new(
        vec![format!("http://{bound}/v1")],
        "tiny",
    ))
    .unwrap();

    let request = ChatRequest {
        messages: vec![
            Message::system("You fix code."),
            Message::user("Run the tests, please."),
        ],
        tools: vec![ToolSpec {
            name: "bash".into(),
            description: "Run a command.".into(),
            parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}}),
        }],
        sampling: SamplingParams {
            n: 2,
            temperature: 1.0,
            max_tokens: Some(24),
            seed: Some(77),
            ..SamplingParams::default()
        },
        token_trace: true,
    };
    let a = local.complete(&request).await.unwrap();
    let b = remote.complete(&request).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a, b);
    let trace = a[0].tokens.as_ref().expect("token ids and log-probs");
    assert!(!trace.prompt_token_ids.is_empty());
    assert_eq!(trace.completion_token_ids.len(), trace.logprobs.len());
    assert!(trace.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
    // Different seeds sample differently (the two choices of one request, too).
    assert_ne!(a[0].tokens, a[1].tokens);

    // Weight sync: other weights answer differently; the original ones again as before.
    let other_dir = root.path().join("other");
    init_checkpoint(
        &InitOptions {
            seed: 6,
            ..init.clone()
        },
        &other_dir,
    )
    .unwrap();
    let other = model::CausalLm::load(&other_dir, DType::F32, &model::Device::Cpu).unwrap();
    local.set_model(other, 1).await.unwrap();
    assert_eq!(local.version(), 1);
    let c = local.complete(&request).await.unwrap();
    assert_ne!(c[0].tokens, a[0].tokens);
    let original =
        model::CausalLm::load(&root.path().join("tiny"), DType::F32, &model::Device::Cpu).unwrap();
    local.set_model(original, 2).await.unwrap();
    assert_eq!(local.complete(&request).await.unwrap(), a);

    let long = ChatRequest {
        messages: vec![Message::user("word ".repeat(20_000))],
        ..request.clone()
    };
    let error = local.complete(&long).await.unwrap_err();
    assert!(error.is_context_length(), "{error}");
}
