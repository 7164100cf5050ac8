//! What a policy is asked and what it answers: a request (messages, tools, sampling parameters)
//! and one sampled completion with its tool calls read. The messages themselves are
//! [`trajectory`]'s, re-exported here.

use serde::{Deserialize, Serialize};

pub use trajectory::{
    estimate_message_tokens, estimate_tokens, FinishReason, FunctionCall, Message, Role,
    TokenTrace, ToolCall, ToolSpec, Usage,
};

use crate::toolcall::{self, FormatError, ParsedCall};

/// How to sample. Every field has the OpenAI meaning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// Completions per request.
    pub n: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub max_tokens: Option<u32>,
    /// Below 2^63 (servers take a signed 64-bit seed).
    pub seed: Option<u64>,
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            n: 1,
            temperature: 1.0,
            top_p: 1.0,
            max_tokens: None,
            seed: None,
            stop: Vec::new(),
        }
    }
}

/// One request to a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub sampling: SamplingParams,
    /// Ask for the exact prompt and completion token ids and the sampled log-probs (vLLM's
    /// `logprobs`, `return_token_ids`, `return_tokens_as_token_ids`). Only for servers that
    /// accept those fields.
    pub token_trace: bool,
}

/// One sampled answer of the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The assistant message, to append to the conversation as it is.
    pub message: Message,
    /// The tool calls found in the message, or why they could not be read.
    pub calls: Result<Vec<ParsedCall>, FormatError>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub tokens: Option<TokenTrace>,
}

impl Completion {
    /// Parses the tool calls of `message`: its structured calls if it has any (their argument
    /// text is repaired where needed), else `<tool_call>` blocks in its text.
    pub fn new(
        message: Message,
        finish_reason: FinishReason,
        usage: Usage,
        tokens: Option<TokenTrace>,
    ) -> Completion {
        let calls = if message.tool_calls.is_empty() {
            toolcall::parse_text(&message.content)
        } else {
            toolcall::parse_structured(&message.tool_calls)
        };
        Completion {
            message,
            calls,
            finish_reason,
            usage,
            tokens,
        }
    }
}
