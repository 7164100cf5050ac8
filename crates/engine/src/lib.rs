//! The embedded model as an inference engine in this process: OpenAI chat-completions bodies in,
//! OpenAI responses (whole or as stream chunks) out, with no socket. A request's chat template
//! is rendered and tokenized by the caller's task; one worker thread owns the model and batches
//! all running requests together (see [`worker`]). Every bad request is an [`ApiError`] with
//! an OpenAI-style body and a 4xx status; nothing a request holds stops the engine.
//!
//! [`LocalPolicy`] is the engine as a [`policy::Policy`] (what evaluation and the trainer's
//! rollouts use); [`open_policy`] turns a `--policy` value into the policy that plays. The HTTP
//! server (`serve`) is a thin layer over [`answer`].
//!
//! Randomness: a request without a `seed` gets one derived from the server's seed and the
//! request's number; choice `i` samples with `derive_seed(seed, &[i])`.

pub mod error;
pub mod local;
pub mod open;
pub mod openai;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use model::chat::ChatTemplate;
use model::generate::{
    truncate_at_stop, Engine, EngineConfig, FinishReason, GenerationParams, Request, TokenEvent,
};
use model::sampling::SamplingParams;
use model::tokenizer::Tokenizer;
use model::{CausalLm, DType, Device};
use serde_json::{json, Map, Value as Json};
use tokio::sync::mpsc;
use trajectory::derive_seed;

pub use error::{ApiError, Error, Result};
pub use local::LocalPolicy;
pub use open::{load_local, open_policy, OpenOptions};
use openai::{parse_tool_calls, template_messages, tool_calls_json, ChatRequest};
use worker::{SequenceEvent, Worker};

/// How to load and run the model (in process or behind `atomskill serve`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model_dir: PathBuf,
    /// The name clients must use in `model` (default: the directory's name).
    pub model_name: Option<String>,
    pub dtype: DType,
    pub device: Device,
    pub max_batch: usize,
    /// Base of the seeds of requests that do not give one.
    pub seed: u64,
}

/// Everything the handlers share.
pub struct EngineState {
    worker: Worker,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    model_name: String,
    max_context: usize,
    seed: u64,
    next_request: AtomicU64,
    next_sequence: AtomicU64,
}

impl EngineState {
    /// Loads the checkpoint and starts the worker thread.
    pub fn load(options: &ServeOptions) -> Result<Arc<Self>> {
        let dir = &options.model_dir;
        let model = CausalLm::load(dir, options.dtype, &options.device)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let template = ChatTemplate::from_dir(dir)?;
        let eos_token_ids = model::model::eos_token_ids(dir)?;
        let max_context = model.spec().max_position_embeddings;
        let engine = Engine::new(
            model,
            Some(tokenizer.clone()),
            EngineConfig {
                max_batch: options.max_batch.max(1),
                eos_token_ids,
                ..EngineConfig::default()
            },
        );
        let worker = Worker::spawn(engine).map_err(|e| Error::Engine(e.to_string()))?;
        let model_name = options.model_name.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        Ok(Arc::new(Self {
            worker,
            tokenizer,
            template,
            model_name,
            max_context,
            seed: options.seed,
            next_request: AtomicU64::new(0),
            next_sequence: AtomicU64::new(0),
        }))
    }

    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Replaces the served weights (same architecture and tokenizer); requests after this
    /// returns are answered by them.
    pub async fn set_model(&self, model: CausalLm) -> Result<()> {
        if self.worker.set_model(model).await {
            Ok(())
        } else {
            Err(Error::Engine("the model worker has stopped".into()))
        }
    }
}

pub(crate) fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl EngineState {
    /// `/v1/models`: the one model served.
    pub fn models_json(&self) -> Json {
        json!({
            "object": "list",
            "data": [{
                "id": self.model_name,
                "object": "model",
                "created": unix_time(),
                "owned_by": "atomskill",
                "max_model_len": self.max_context,
            }],
        })
    }
}

/// A request after checking, ready for the worker.
struct Prepared {
    request: ChatRequest,
    id: String,
    prompt: Vec<u32>,
    sequences: Vec<Request>,
    stops: Vec<String>,
}

fn prepare(state: &EngineState, body: &[u8]) -> std::result::Result<Prepared, ApiError> {
    let request = ChatRequest::parse(body)?;
    if let Some(name) = &request.model {
        if name != &state.model_name {
            return Err(ApiError::not_found(format!(
                "The model `{name}` does not exist; this server serves `{}`.",
                state.model_name
            )));
        }
    }
    let messages = template_messages(&request.messages)?;
    let extra = request.chat_template_kwargs.clone().unwrap_or_default();
    let text = state
        .template
        .render(
            &messages,
            request.tools.as_deref(),
            request.add_generation_prompt.unwrap_or(true),
            &extra,
        )
        .map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
    let prompt = state
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let room = state.max_context.saturating_sub(prompt.len());
    let max_tokens = request
        .max_completion_tokens
        .or(request.max_tokens)
        .unwrap_or(room);
    if room == 0 || max_tokens > room {
        return Err(ApiError::bad_param(
            "max_tokens",
            format!(
                "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the messages, {} in the completion).",
                state.max_context,
                prompt.len() + max_tokens.max(1),
                prompt.len(),
                max_tokens.max(1)
            ),
        ));
    }
    let number = state.next_request.fetch_add(1, Ordering::Relaxed);
    let seed = request
        .seed
        .map(|s| s as u64)
        .unwrap_or_else(|| derive_seed(state.seed, &[number]));
    let stops = request.stop_strings();
    let top_logprobs = if request.logprobs.unwrap_or(false) {
        request.top_logprobs.unwrap_or(0)
    } else {
        0
    };
    let n = request.n.unwrap_or(1);
    let sequences = (0..n)
        .map(|choice| Request {
            id: state.next_sequence.fetch_add(1, Ordering::Relaxed),
            prompt: prompt.clone(),
            params: GenerationParams {
                sampling: SamplingParams {
                    temperature: request.temperature.unwrap_or(1.0),
                    top_p: request.top_p.unwrap_or(1.0),
                    top_k: request.top_k.filter(|&k| k > 0).map_or(0, |k| k as usize),
                    seed: derive_seed(seed, &[choice as u64]),
                },
                max_tokens,
                stop: stops.clone(),
                stop_token_ids: request.stop_token_ids.clone().unwrap_or_default(),
                ignore_eos: request.ignore_eos.unwrap_or(false),
                top_logprobs,
            },
        })
        .collect();
    Ok(Prepared {
        request,
        id: format!("chatcmpl-{number}"),
        prompt,
        sequences,
        stops,
    })
}

/// What a chat-completions request comes to: a whole response, or the events of a stream.
pub enum Answer {
    Full(Json),
    Stream(mpsc::UnboundedReceiver<StreamEvent>),
}

/// One event of a streamed answer, to be sent as a server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A `chat.completion.chunk` (or an error body, after which nothing follows but the end).
    Chunk(Json),
    /// The end of the stream (`data: [DONE]`).
    Done,
}

/// Answers a chat-completions request body as the OpenAI API would, streamed if it asks to be.
pub async fn answer(
    state: &Arc<EngineState>,
    body: &[u8],
) -> std::result::Result<Answer, ApiError> {
    let prepared = prepare(state, body)?;
    let events = state
        .worker
        .submit(prepared.sequences.clone())
        .ok_or_else(|| ApiError::internal("the model worker has stopped"))?;
    if prepared.request.stream.unwrap_or(false) {
        Ok(Answer::Stream(stream(state.clone(), prepared, events)))
    } else {
        let choices = collect(prepared.sequences.len(), &prepared, events).await?;
        Ok(Answer::Full(full_response(state, &prepared, &choices)))
    }
}

/// The tokens of one choice so far.
#[derive(Debug, Default, Clone)]
struct Choice {
    tokens: Vec<u32>,
    events: Vec<TokenEvent>,
    finish: Option<FinishReason>,
}

async fn collect(
    n: usize,
    prepared: &Prepared,
    mut events: mpsc::UnboundedReceiver<SequenceEvent>,
) -> std::result::Result<Vec<Choice>, ApiError> {
    let index: HashMap<u64, usize> = prepared
        .sequences
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    let mut choices = vec![Choice::default(); n];
    let mut finished = 0;
    while finished < n {
        match events.recv().await {
            Some(SequenceEvent::Token(event)) => {
                let Some(&i) = index.get(&event.id) else {
                    continue;
                };
                let choice = &mut choices[i];
                choice.tokens.push(event.token);
                if let Some(finish) = &event.finish {
                    choice.finish = Some(finish.clone());
                    finished += 1;
                }
                choice.events.push(event);
            }
            Some(SequenceEvent::Failed(message)) => return Err(ApiError::internal(message)),
            None => return Err(ApiError::internal("the model worker stopped")),
        }
    }
    Ok(choices)
}

fn finish_fields(finish: Option<&FinishReason>, stop_token_ids: &[u32]) -> (&'static str, Json) {
    match finish {
        Some(FinishReason::Length) | None => ("length", Json::Null),
        Some(FinishReason::StopSequence(s)) => ("stop", Json::String(s.clone())),
        Some(FinishReason::Token(t)) if stop_token_ids.contains(t) => ("stop", json!(t)),
        Some(FinishReason::Token(_)) => ("stop", Json::Null),
    }
}

fn logprob_entry(
    state: &EngineState,
    prepared: &Prepared,
    token: u32,
    logprob: f32,
) -> Map<String, Json> {
    let as_ids = prepared.request.return_tokens_as_token_ids.unwrap_or(false);
    let text = if as_ids {
        format!("token_id:{token}")
    } else {
        state.tokenizer.decode(&[token], false).unwrap_or_default()
    };
    let bytes = state.tokenizer.token_bytes(token).unwrap_or_default();
    let mut entry = Map::new();
    entry.insert("token".into(), Json::String(text));
    entry.insert("logprob".into(), json!(logprob));
    entry.insert("bytes".into(), json!(bytes));
    entry
}

fn logprobs_json(state: &EngineState, prepared: &Prepared, events: &[TokenEvent]) -> Json {
    if !prepared.request.logprobs.unwrap_or(false) {
        return Json::Null;
    }
    let content: Vec<Json> = events
        .iter()
        .map(|e| {
            let mut entry = logprob_entry(state, prepared, e.token, e.logprob);
            let top: Vec<Json> = e
                .top_logprobs
                .iter()
                .map(|&(t, lp)| Json::Object(logprob_entry(state, prepared, t, lp)))
                .collect();
            entry.insert("top_logprobs".into(), Json::Array(top));
            Json::Object(entry)
        })
        .collect();
    json!({ "content": content })
}

/// The assistant message of a finished choice, and its finish reason.
fn message_of(
    state: &EngineState,
    prepared: &Prepared,
    choice: &Choice,
    index: usize,
) -> (Json, &'static str, Json) {
    let mut text = state
        .tokenizer
        .decode(&choice.tokens, true)
        .unwrap_or_default();
    if matches!(choice.finish, Some(FinishReason::StopSequence(_))) {
        text = truncate_at_stop(&text, &prepared.stops);
    }
    let stop_ids = prepared.request.stop_token_ids.clone().unwrap_or_default();
    let (mut reason, stop_reason) = finish_fields(choice.finish.as_ref(), &stop_ids);
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let (content, calls) = if prepared.request.parses_tools() {
        parse_tool_calls(&text)
    } else {
        (Some(text), Vec::new())
    };
    message.insert("content".into(), content.map_or(Json::Null, Json::String));
    if !calls.is_empty() {
        message.insert(
            "tool_calls".into(),
            tool_calls_json(&calls, &format!("call_{}_{index}", prepared.id)),
        );
        reason = "tool_calls";
    }
    (Json::Object(message), reason, stop_reason)
}

fn full_response(state: &EngineState, prepared: &Prepared, choices: &[Choice]) -> Json {
    let return_ids = prepared.request.return_token_ids.unwrap_or(false);
    let body_choices: Vec<Json> = choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            let (message, reason, stop_reason) = message_of(state, prepared, choice, i);
            let mut c = json!({
                "index": i,
                "message": message,
                "logprobs": logprobs_json(state, prepared, &choice.events),
                "finish_reason": reason,
                "stop_reason": stop_reason,
            });
            if return_ids {
                c["token_ids"] = json!(choice.tokens);
            }
            c
        })
        .collect();
    let completion_tokens: usize = choices.iter().map(|c| c.tokens.len()).sum();
    let mut body = json!({
        "id": prepared.id,
        "object": "chat.completion",
        "created": unix_time(),
        "model": state.model_name,
        "choices": body_choices,
        "usage": {
            "prompt_tokens": prepared.prompt.len(),
            "completion_tokens": completion_tokens,
            "total_tokens": prepared.prompt.len() + completion_tokens,
        },
    });
    if return_ids {
        body["prompt_token_ids"] = json!(prepared.prompt);
    }
    body
}

/// Streams chunks. Text is sent as it becomes final: held back while it
/// ends in an incomplete character or could still be the start of a stop string. With tools,
/// a choice's content and tool calls are sent once it finishes.
fn stream(
    state: Arc<EngineState>,
    prepared: Prepared,
    mut events: mpsc::UnboundedReceiver<SequenceEvent>,
) -> mpsc::UnboundedReceiver<StreamEvent> {
    let (body_tx, body_rx) = mpsc::unbounded_channel::<StreamEvent>();
    tokio::spawn(async move {
        let n = prepared.sequences.len();
        let index: HashMap<u64, usize> = prepared
            .sequences
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let created = unix_time();
        let chunk = |choices: Json| {
            json!({
                "id": prepared.id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": state.model_name,
                "choices": choices,
            })
        };
        let mut choices = vec![Choice::default(); n];
        let mut emitted = vec![0usize; n];
        let mut finished = 0;
        let buffer_all = prepared.request.parses_tools();
        let hold = prepared
            .stops
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let return_ids = prepared.request.return_token_ids.unwrap_or(false);
        for i in 0..n {
            let first = chunk(json!([{
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            }]));
            if body_tx.send(StreamEvent::Chunk(first)).is_err() {
                return;
            }
        }
        while finished < n {
            let event = match events.recv().await {
                Some(SequenceEvent::Token(e)) => e,
                Some(SequenceEvent::Failed(message)) => {
                    let _ = body_tx.send(StreamEvent::Chunk(ApiError::internal(message).body()));
                    return;
                }
                None => {
                    let _ = body_tx.send(StreamEvent::Chunk(
                        ApiError::internal("the model worker stopped").body(),
                    ));
                    return;
                }
            };
            let Some(&i) = index.get(&event.id) else {
                continue;
            };
            let choice = &mut choices[i];
            choice.tokens.push(event.token);
            choice.finish = event.finish.clone();
            choice.events.push(event.clone());
            let logprobs = logprobs_json(&state, &prepared, std::slice::from_ref(&event));
            let mut delta = Map::new();
            let mut reason = Json::Null;
            let mut stop_reason = Json::Null;
            if choice.finish.is_some() {
                finished += 1;
                let (message, r, s) = message_of(&state, &prepared, choice, i);
                reason = json!(r);
                stop_reason = s;
                let text = message["content"].as_str().unwrap_or("");
                if buffer_all {
                    delta.insert("content".into(), message["content"].clone());
                    if let Some(calls) = message.get("tool_calls") {
                        let calls: Vec<Json> = calls
                            .as_array()
                            .into_iter()
                            .flatten()
                            .enumerate()
                            .map(|(k, c)| {
                                let mut c = c.clone();
                                c["index"] = json!(k);
                                c
                            })
                            .collect();
                        delta.insert("tool_calls".into(), Json::Array(calls));
                    }
                } else if text.len() > emitted[i] && text.is_char_boundary(emitted[i]) {
                    delta.insert("content".into(), json!(&text[emitted[i]..]));
                }
            } else if !buffer_all {
                let text = state
                    .tokenizer
                    .decode(&choice.tokens, true)
                    .unwrap_or_default();
                let mut end = text.len().saturating_sub(hold);
                while end > 0 && !text.is_char_boundary(end) {
                    end -= 1;
                }
                let final_text = text[..end].trim_end_matches('\u{FFFD}');
                if final_text.len() > emitted[i] && final_text.is_char_boundary(emitted[i]) {
                    delta.insert("content".into(), json!(&final_text[emitted[i]..]));
                    emitted[i] = final_text.len();
                }
            }
            let mut c = json!({
                "index": i,
                "delta": delta,
                "logprobs": logprobs,
                "finish_reason": reason,
            });
            if !reason.is_null() {
                c["stop_reason"] = stop_reason;
            }
            if return_ids {
                c["token_ids"] = json!([event.token]);
            }
            if body_tx.send(StreamEvent::Chunk(chunk(json!([c])))).is_err() {
                return;
            }
        }
        if prepared
            .request
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
        {
            let completion_tokens: usize = choices.iter().map(|c| c.tokens.len()).sum();
            let mut usage = chunk(json!([]));
            usage["usage"] = json!({
                "prompt_tokens": prepared.prompt.len(),
                "completion_tokens": completion_tokens,
                "total_tokens": prepared.prompt.len() + completion_tokens,
            });
            let _ = body_tx.send(StreamEvent::Chunk(usage));
        }
        let _ = body_tx.send(StreamEvent::Done);
    });
    body_rx
}
