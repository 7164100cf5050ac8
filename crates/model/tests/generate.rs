//! Generation on a tiny seeded checkpoint: batching does not change results, seeds reproduce,
//! sampled log-probs equal the training path's, and every stop condition fires.

mod common;

use candle_core::{DType, Device, Tensor};
use model::generate::{Completion, Engine, EngineConfig, FinishReason, GenerationParams, Request};
use model::logprobs::token_log_probs;
use model::sampling::SamplingParams;
use model::tokenizer::Tokenizer;
use model::{Arch, CausalLm};

fn engine(arch: Arch, max_batch: usize) -> Engine {
    let dir = common::tiny(arch);
    let model = CausalLm::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let tokenizer = Tokenizer::from_dir(&dir).unwrap();
    Engine::new(
        model,
        Some(tokenizer),
        EngineConfig {
            max_batch,
            eos_token_ids: model::model::eos_token_ids(&dir).unwrap(),
            ..EngineConfig::default()
        },
    )
}

fn prompts(engine: &Engine) -> Vec<Vec<u32>> {
    let tokenizer = engine.tokenizer().unwrap();
    [
        "fn main() {",
        "<|im_start|>user\nList the files in the sandbox directory.<|im_end|>\n<|im_start|>assistant\n",
        "import os",
        "pub struct Snapshot { root: PathBuf, owner: Option<u32> }",
    ]
    .iter()
    .map(|t| tokenizer.encode(t).unwrap())
    .collect()
}

fn params(temperature: f32, seed: u64, max_tokens: usize) -> GenerationParams {
    GenerationParams {
        sampling: SamplingParams {
            temperature,
            top_p: 1.0,
            top_k: 0,
            seed,
        },
        max_tokens,
        ignore_eos: true,
        ..GenerationParams::default()
    }
}

fn run(engine: &mut Engine, prompts: &[Vec<u32>], p: &GenerationParams) -> Vec<Completion> {
    let requests = prompts
        .iter()
        .enumerate()
        .map(|(i, prompt)| Request {
            id: i as u64,
            prompt: prompt.clone(),
            params: GenerationParams {
                sampling: SamplingParams {
                    seed: p.sampling.seed + i as u64,
                    ..p.sampling.clone()
                },
                ..p.clone()
            },
        })
        .collect();
    engine.generate(requests).unwrap()
}

fn assert_same(a: &[Completion], b: &[Completion], what: &str) {
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.token_ids, y.token_ids, "{what}: request {}", x.id);
        let worst = x
            .logprobs
            .iter()
            .zip(&y.logprobs)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{what}: logprobs differ by {worst}");
    }
}

#[test]
fn batching_does_not_change_results() {
    for arch in [Arch::Qwen2, Arch::Qwen3, Arch::Llama] {
        let mut batched = engine(arch, 8);
        let ps = prompts(&batched);
        for p in [params(0.0, 1, 12), params(1.0, 5, 12)] {
            let together = run(&mut batched, &ps, &p);
            let mut alone = Vec::new();
            for (i, prompt) in ps.iter().enumerate() {
                let mut single = engine(arch, 1);
                let mut c = run(
                    &mut single,
                    std::slice::from_ref(prompt),
                    &GenerationParams {
                        sampling: SamplingParams {
                            seed: p.sampling.seed + i as u64,
                            ..p.sampling.clone()
                        },
                        ..p.clone()
                    },
                );
                c[0].id = i as u64;
                alone.extend(c);
            }
            assert_same(
                &together,
                &alone,
                &format!("{arch:?} t={}", p.sampling.temperature),
            );
            assert!(together
                .iter()
                .all(|c| c.token_ids.len() == 12 && c.finish == FinishReason::Length));
        }
    }
}

#[test]
fn requests_joining_a_running_batch_get_the_same_tokens() {
    let mut e = engine(Arch::Qwen2, 8);
    let ps = prompts(&e);
    let p = params(0.7, 3, 10);
    let expected = run(&mut engine(Arch::Qwen2, 8), &ps, &p);
    // Submit one at a time, stepping in between, so each joins (and merges into) a running batch.
    let mut got: Vec<Completion> = ps
        .iter()
        .enumerate()
        .map(|(i, _)| Completion {
            id: i as u64,
            token_ids: vec![],
            logprobs: vec![],
            top_logprobs: vec![],
            finish: FinishReason::Length,
        })
        .collect();
    let mut finished = 0;
    for (i, prompt) in ps.iter().enumerate() {
        e.submit(Request {
            id: i as u64,
            prompt: prompt.clone(),
            params: GenerationParams {
                sampling: SamplingParams {
                    seed: p.sampling.seed + i as u64,
                    ..p.sampling.clone()
                },
                ..p.clone()
            },
        })
        .unwrap();
        for _ in 0..=i {
            for event in e.step().unwrap() {
                got[event.id as usize].token_ids.push(event.token);
                got[event.id as usize].logprobs.push(event.logprob);
                finished += usize::from(event.finish.is_some());
            }
        }
    }
    while e.has_work() {
        for event in e.step().unwrap() {
            got[event.id as usize].token_ids.push(event.token);
            got[event.id as usize].logprobs.push(event.logprob);
            finished += usize::from(event.finish.is_some());
        }
    }
    assert_eq!(finished, ps.len());
    assert_same(&got, &expected, "staggered");
}

#[test]
fn seeds_reproduce_and_differ() {
    let mut e = engine(Arch::Qwen3, 4);
    let ps = prompts(&e);
    let a = run(&mut e, &ps[..1], &params(1.0, 42, 16));
    let b = run(&mut e, &ps[..1], &params(1.0, 42, 16));
    let c = run(&mut e, &ps[..1], &params(1.0, 43, 16));
    assert_eq!(a[0].token_ids, b[0].token_ids);
    assert_ne!(a[0].token_ids, c[0].token_ids);
}

#[test]
fn sampled_logprobs_equal_training_logprobs() {
    for arch in [Arch::Qwen2, Arch::Llama] {
        let mut e = engine(arch, 4);
        let ps = prompts(&e);
        let completions = run(&mut e, &ps[..2], &params(1.0, 9, 20));
        for (prompt, completion) in ps.iter().zip(&completions) {
            let mut all = prompt.clone();
            all.extend(&completion.token_ids);
            let tokens = Tensor::from_vec(all.clone(), (1, all.len()), &Device::Cpu).unwrap();
            // The training path: the unfused model, built for gradients.
            let trainable = CausalLm::load(&common::tiny(arch), DType::F32, &Device::Cpu).unwrap();
            let lp = token_log_probs(&trainable, &tokens, None, 7).unwrap();
            let lp = lp.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            let recomputed = &lp[prompt.len() - 1..];
            let worst = recomputed
                .iter()
                .zip(&completion.logprobs)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-4,
                "{arch:?}: sampled vs training log-probs differ by {worst}"
            );
        }
    }
}

#[test]
fn stop_conditions_fire() {
    let mut e = engine(Arch::Qwen2, 4);
    let ps = prompts(&e);
    let greedy = run(&mut e, &ps[..1], &params(0.0, 0, 12)).remove(0);
    assert_eq!(greedy.token_ids.len(), 12);
    assert_eq!(greedy.finish, FinishReason::Length);

    // A stop token ends the sequence right after it is generated (and is kept).
    let stop_token = greedy.token_ids[4];
    let first = greedy
        .token_ids
        .iter()
        .position(|&t| t == stop_token)
        .unwrap();
    let mut p = params(0.0, 0, 12);
    p.stop_token_ids = vec![stop_token];
    let stopped = run(&mut e, &ps[..1], &p).remove(0);
    assert_eq!(stopped.token_ids, greedy.token_ids[..=first].to_vec());
    assert_eq!(stopped.finish, FinishReason::Token(stop_token));

    // The same token as an end-of-sequence token, unless ignore_eos.
    let mut eos_engine = Engine::new(
        e.model().clone(),
        e.tokenizer().cloned(),
        EngineConfig {
            eos_token_ids: vec![stop_token],
            ..EngineConfig::default()
        },
    );
    let mut p = params(0.0, 0, 12);
    p.ignore_eos = false;
    assert_eq!(
        run(&mut eos_engine, &ps[..1], &p)[0].token_ids.len(),
        first + 1
    );
    p.ignore_eos = true;
    assert_eq!(run(&mut eos_engine, &ps[..1], &p)[0].token_ids.len(), 12);

    // A stop string taken from the greedy text.
    let tokenizer = e.tokenizer().unwrap().clone();
    let text = tokenizer.decode(&greedy.token_ids, true).unwrap();
    let prefix = tokenizer.decode(&greedy.token_ids[..6], true).unwrap();
    let stop: String = text[prefix.len().min(text.len())..]
        .chars()
        .take(2)
        .collect();
    if !stop.trim().is_empty() {
        let mut p = params(0.0, 0, 12);
        p.stop = vec![stop.clone()];
        let stopped = run(&mut e, &ps[..1], &p).remove(0);
        assert_eq!(stopped.finish, FinishReason::StopSequence(stop.clone()));
        let out = tokenizer.decode(&stopped.token_ids, true).unwrap();
        assert!(out.contains(&stop), "{out:?} lacks {stop:?}");
        assert!(stopped.token_ids.len() <= 12);
        let cut = model::generate::truncate_at_stop(&out, std::slice::from_ref(&stop));
        assert!(!cut.contains(&stop));
    }
}

#[test]
fn cancelled_requests_stop_and_others_continue() {
    let mut e = engine(Arch::Qwen2, 4);
    let ps = prompts(&e);
    for (i, prompt) in ps.iter().take(2).enumerate() {
        e.submit(Request {
            id: i as u64,
            prompt: prompt.clone(),
            params: params(0.0, 0, 8),
        })
        .unwrap();
    }
    e.step().unwrap();
    assert!(e.cancel(0).unwrap());
    assert!(!e.cancel(0).unwrap());
    let mut ids = Vec::new();
    while e.has_work() {
        ids.extend(e.step().unwrap().into_iter().map(|ev| ev.id));
    }
    assert!(ids.iter().all(|&id| id == 1) && ids.len() == 7, "{ids:?}");
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let mut e = engine(Arch::Llama, 2);
    let vocab = e.model().spec().vocab_size as u32;
    let max = e.model().spec().max_position_embeddings;
    for (prompt, max_tokens, what) in [
        (vec![], 4, "empty prompt"),
        (vec![1, vocab], 4, "token outside the vocabulary"),
        (vec![1; max], 4, "prompt as long as the context"),
        (vec![1, 2], 0, "max_tokens 0"),
    ] {
        let r = e.submit(Request {
            id: 0,
            prompt,
            params: params(0.0, 0, max_tokens),
        });
        assert!(r.is_err(), "{what} was accepted");
    }
    assert!(!e.has_work());
}
