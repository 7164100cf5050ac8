//! The chat vocabulary every layer shares: messages in the OpenAI chat format, tool calls and
//! tool definitions, why a completion stopped, token counts and exact token traces.
//!
//! These types are what trajectories store, so their serde shape is the OpenAI one (a message's
//! tool calls carry `{id, type, function: {name, arguments}}` with the arguments as JSON text,
//! exactly as the model produced them). Nothing here talks to a server.

use serde::{Deserialize, Deserializer, Serialize};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// The text; empty (never absent) when an assistant message holds only tool calls.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// Tool calls the server returned in structured form (assistant messages only). Calls the
    /// model wrote as `<tool_call>` text stay in `content` and are not repeated here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Reasoning text a server split off the answer (vLLM's `reasoning_content`); recorded,
    /// never sent back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            reasoning_content: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>, tool_calls: Vec<ToolCall>) -> Message {
        Message {
            tool_calls,
            ..Message::new(Role::Assistant, content)
        }
    }

    /// The answer to tool call `call_id`.
    pub fn tool(call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            tool_call_id: Some(call_id.into()),
            ..Message::new(Role::Tool, content)
        }
    }
}

/// A tool call as it appears in an assistant message (OpenAI shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as JSON text, as the model wrote them (possibly malformed).
    #[serde(default)]
    pub arguments: String,
}

impl ToolCall {
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A tool the model may call: a name, a description and a JSON schema of its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}

/// Why a completion stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    /// The completion hit `max_tokens` (or the context) and was cut off.
    Length,
    ToolCalls,
    ContentFilter,
    /// The server gave none, or one not listed here.
    Other(String),
}

impl FinishReason {
    pub fn from_wire(reason: Option<&str>) -> FinishReason {
        match reason {
            Some("stop") => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            Some("tool_calls") | Some("function_call") => FinishReason::ToolCalls,
            Some("content_filter") => FinishReason::ContentFilter,
            other => FinishReason::Other(other.unwrap_or("").to_string()),
        }
    }
}

/// Token counts of one completion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}

/// The exact tokens of one completion, for token-in/token-out training.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenTrace {
    /// The whole prompt as the server tokenized it (chat template applied).
    pub prompt_token_ids: Vec<u32>,
    /// The sampled tokens, stop token included when the server returns it.
    pub completion_token_ids: Vec<u32>,
    /// Log-probability of each sampled token under the sampling policy; same length as
    /// `completion_token_ids`.
    pub logprobs: Vec<f32>,
}

/// A rough token count for text whose exact count is unknown: one token per four bytes,
/// rounded up. Used for budgets when a policy reports no usage, never for training.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// [`estimate_tokens`] over the content and tool calls of messages, plus a few tokens of
/// framing per message.
pub fn estimate_message_tokens(messages: &[Message]) -> u64 {
    messages
        .iter()
        .map(|m| {
            4 + estimate_tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| {
                        estimate_tokens(&c.function.name) + estimate_tokens(&c.function.arguments)
                    })
                    .sum::<u64>()
        })
        .sum()
}
