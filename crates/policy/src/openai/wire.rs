//! The OpenAI chat-completions wire format: the request body built from a [`ChatRequest`] and
//! the response read into [`Completion`]s, including vLLM's token-id extensions.
//!
//! Pure functions over JSON; no I/O.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{
    ChatRequest, Completion, FinishReason, Message, Role, TokenTrace, ToolCall, Usage,
};

/// The request body. `extra` (server-specific fields such as `top_k`) is merged in last.
pub fn request_body(model: &str, request: &ChatRequest, extra: &Map<String, Value>) -> Value {
    let sampling = &request.sampling;
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert(
        "messages".into(),
        request.messages.iter().map(message).collect(),
    );
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                })
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    body.insert("n".into(), sampling.n.into());
    body.insert("temperature".into(), sampling.temperature.into());
    body.insert("top_p".into(), sampling.top_p.into());
    if let Some(max_tokens) = sampling.max_tokens {
        body.insert("max_tokens".into(), max_tokens.into());
    }
    if let Some(seed) = sampling.seed {
        body.insert("seed".into(), seed.into());
    }
    if !sampling.stop.is_empty() {
        body.insert("stop".into(), sampling.stop.clone().into());
    }
    if request.token_trace {
        body.insert("logprobs".into(), true.into());
        body.insert("top_logprobs".into(), 0.into());
        body.insert("return_tokens_as_token_ids".into(), true.into());
        body.insert("return_token_ids".into(), true.into());
    }
    for (key, value) in extra {
        body.insert(key.clone(), value.clone());
    }
    Value::Object(body)
}

fn message(message: &Message) -> Value {
    match message.role {
        Role::System => json!({"role": "system", "content": message.content}),
        Role::User => json!({"role": "user", "content": message.content}),
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id.clone().unwrap_or_default(),
            "content": message.content,
        }),
        Role::Assistant if message.tool_calls.is_empty() => {
            json!({"role": "assistant", "content": message.content})
        }
        Role::Assistant => json!({
            "role": "assistant",
            "content": if message.content.is_empty() { Value::Null } else { message.content.clone().into() },
            "tool_calls": message.tool_calls,
        }),
    }
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// vLLM with `return_token_ids`.
    #[serde(default)]
    prompt_token_ids: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<ChoiceLogprobs>,
    /// vLLM with `return_token_ids`.
    #[serde(default)]
    token_ids: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceLogprobs {
    #[serde(default)]
    content: Option<Vec<TokenLogprob>>,
}

#[derive(Deserialize)]
struct TokenLogprob {
    token: String,
    logprob: f32,
}

/// Reads a `token_id:123` token (vLLM's `return_tokens_as_token_ids`).
pub fn token_id_of(token: &str) -> Option<u32> {
    token.strip_prefix("token_id:")?.parse().ok()
}

/// The completions of a response body, in choice order. `n` is the number asked for, used to
/// split the response's completion-token count when the per-choice count is unknown.
pub fn parse_response(body: &[u8], n: u32) -> Result<Vec<Completion>, String> {
    let response: Response = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if response.choices.is_empty() {
        return Err("the response has no choices".into());
    }
    let usage = response.usage.unwrap_or(WireUsage {
        prompt_tokens: 0,
        completion_tokens: 0,
    });
    let mut choices = response.choices;
    choices.sort_by_key(|c| c.index);
    let n_choices = choices.len().max(n as usize) as u64;
    let completions = choices
        .into_iter()
        .map(|choice| {
            let logprobs = choice.logprobs.and_then(|l| l.content).unwrap_or_default();
            let ids = choice.token_ids.or_else(|| {
                logprobs
                    .iter()
                    .map(|t| token_id_of(&t.token))
                    .collect::<Option<Vec<u32>>>()
                    .filter(|ids| !ids.is_empty())
            });
            let completion_tokens = match &ids {
                Some(ids) => ids.len() as u64,
                None if n_choices == 1 => usage.completion_tokens,
                None => usage.completion_tokens.div_ceil(n_choices),
            };
            let tokens = match (&response.prompt_token_ids, ids) {
                (Some(prompt), Some(ids)) if ids.len() == logprobs.len() => Some(TokenTrace {
                    prompt_token_ids: prompt.clone(),
                    completion_token_ids: ids,
                    logprobs: logprobs.iter().map(|t| t.logprob).collect(),
                }),
                (Some(_), Some(ids)) => {
                    tracing::warn!(
                        token_ids = ids.len(),
                        logprobs = logprobs.len(),
                        "the server's token ids and log-probs differ in length; no token trace"
                    );
                    None
                }
                _ => None,
            };
            let message = Message {
                reasoning_content: choice
                    .message
                    .reasoning_content
                    .or(choice.message.reasoning),
                ..Message::assistant(
                    choice.message.content.unwrap_or_default(),
                    choice.message.tool_calls.unwrap_or_default(),
                )
            };
            Completion::new(
                message,
                FinishReason::from_wire(choice.finish_reason.as_deref()),
                Usage {
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens,
                },
                tokens,
            )
        })
        .collect();
    Ok(completions)
}

/// Whether an HTTP 400 body says the prompt is too long for the model (vLLM, OpenAI, SGLang
/// wordings).
pub fn is_context_length_message(body: &str) -> bool {
    let body = body.to_ascii_lowercase();
    body.contains("context length")
        || body.contains("context_length")
        || body.contains("maximum context")
        || body.contains("too many tokens")
        || (body.contains("prompt") && body.contains("too long"))
}
