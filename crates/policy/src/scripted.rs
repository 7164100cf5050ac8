//! Policies without a model: [`ScriptedPolicy`] replays given assistant turns (tests, the
//! oracle that solves an instance from its gold answer, benchmarks) and [`NullPolicy`] submits
//! at once.
//!
//! Both are stateless: the turn to play is the number of assistant messages already in the
//! conversation, so one policy value can serve any number of concurrent episodes and a replay
//! never depends on timing. Their token counts are estimates ([`crate::estimate_tokens`]).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::chat::{
    estimate_message_tokens, ChatRequest, Completion, FinishReason, Message, Role, ToolCall,
    ToolSpec, Usage,
};
use crate::error::{Error, Result};
use crate::Policy;

/// One assistant turn of a script.
#[derive(Clone, Debug, PartialEq)]
pub enum ScriptedTurn {
    /// Structured tool calls: (tool name, arguments).
    Calls(Vec<(String, Value)>),
    /// Plain text, read for `<tool_call>` blocks like a model's text.
    Text(String),
    /// A text that stopped at `max_tokens`.
    Truncated(String),
    /// The policy fails with this message instead of answering.
    Fail(String),
}

impl ScriptedTurn {
    /// One structured call.
    pub fn call(name: impl Into<String>, arguments: Value) -> ScriptedTurn {
        ScriptedTurn::Calls(vec![(name.into(), arguments)])
    }

    pub fn text(text: impl Into<String>) -> ScriptedTurn {
        ScriptedTurn::Text(text.into())
    }
}

/// Replays a script of assistant turns.
#[derive(Clone, Debug)]
pub struct ScriptedPolicy {
    turns: Vec<ScriptedTurn>,
    /// Start again from the first turn when the script runs out (instead of failing).
    cycle: bool,
    latency: Duration,
    name: String,
}

impl ScriptedPolicy {
    pub fn new(turns: Vec<ScriptedTurn>) -> ScriptedPolicy {
        ScriptedPolicy {
            turns,
            cycle: false,
            latency: Duration::ZERO,
            name: "scripted".into(),
        }
    }

    /// Plays the script over and over.
    pub fn cycling(mut self) -> ScriptedPolicy {
        self.cycle = true;
        self
    }

    /// Waits this long before each answer, like a model server would.
    pub fn with_latency(mut self, latency: Duration) -> ScriptedPolicy {
        self.latency = latency;
        self
    }

    /// The name trajectories record (e.g. `oracle`).
    pub fn named(mut self, name: impl Into<String>) -> ScriptedPolicy {
        self.name = name.into();
        self
    }

    fn turn(&self, request: &ChatRequest) -> Result<&ScriptedTurn> {
        let played = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let len = self.turns.len();
        let index = if self.cycle && len > 0 {
            played % len
        } else {
            played
        };
        self.turns
            .get(index)
            .ok_or(Error::ScriptExhausted { turn: played, len })
    }
}

/// A completion for `message`, with estimated token counts, repeated `n` times.
fn answer(request: &ChatRequest, message: Message, finish_reason: FinishReason) -> Vec<Completion> {
    let usage = Usage {
        prompt_tokens: estimate_message_tokens(&request.messages),
        completion_tokens: estimate_message_tokens(std::slice::from_ref(&message)),
    };
    let completion = Completion::new(message, finish_reason, usage, None);
    vec![completion; request.sampling.n.max(1) as usize]
}

#[async_trait::async_trait]
impl Policy for ScriptedPolicy {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Vec<Completion>> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let turn = self.turn(request)?;
        let played = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let (message, finish) = match turn {
            ScriptedTurn::Calls(calls) => {
                let tool_calls = calls
                    .iter()
                    .enumerate()
                    .map(|(i, (name, arguments))| {
                        ToolCall::new(
                            format!("call_{played}_{i}"),
                            name.clone(),
                            arguments.to_string(),
                        )
                    })
                    .collect();
                (
                    Message::assistant(String::new(), tool_calls),
                    FinishReason::ToolCalls,
                )
            }
            ScriptedTurn::Text(text) => (
                Message::assistant(text.clone(), Vec::new()),
                FinishReason::Stop,
            ),
            ScriptedTurn::Truncated(text) => (
                Message::assistant(text.clone(), Vec::new()),
                FinishReason::Length,
            ),
            ScriptedTurn::Fail(message) => {
                return Err(Error::Scripted {
                    message: message.clone(),
                })
            }
        };
        Ok(answer(request, message, finish))
    }
}

/// Calls `submit` at once with the emptiest arguments its schema allows, or with given ones.
#[derive(Clone, Debug, Default)]
pub struct NullPolicy {
    arguments: Option<Value>,
}

/// The tool a null policy calls.
pub const SUBMIT_TOOL: &str = "submit";

impl NullPolicy {
    pub fn new() -> NullPolicy {
        NullPolicy::default()
    }

    /// Submits exactly these arguments.
    pub fn with_arguments(arguments: Value) -> NullPolicy {
        NullPolicy {
            arguments: Some(arguments),
        }
    }
}

/// For each required property: `""`, `[]`, `{}`, `0`, `false` or `null` by its type, or the
/// first value of its `enum`.
pub fn empty_arguments(schema: &Value) -> Value {
    let mut arguments = Map::new();
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        let property = &schema["properties"][name];
        let value = if let Some(first) = property["enum"].as_array().and_then(|v| v.first()) {
            first.clone()
        } else {
            let kind = match &property["type"] {
                Value::Array(kinds) => kinds.first().and_then(Value::as_str).unwrap_or("null"),
                other => other.as_str().unwrap_or("null"),
            };
            match kind {
                "string" => Value::String(String::new()),
                "array" => Value::Array(Vec::new()),
                "object" => Value::Object(Map::new()),
                "integer" | "number" => Value::from(0),
                "boolean" => Value::Bool(false),
                _ => Value::Null,
            }
        };
        arguments.insert(name.to_string(), value);
    }
    Value::Object(arguments)
}

#[async_trait::async_trait]
impl Policy for NullPolicy {
    fn describe(&self) -> String {
        "null".into()
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Vec<Completion>> {
        let submit: &ToolSpec = request
            .tools
            .iter()
            .find(|t| t.name == SUBMIT_TOOL)
            .ok_or_else(|| Error::Config {
                message: format!("the null policy needs a `{SUBMIT_TOOL}` tool in the request"),
            })?;
        let arguments = self
            .arguments
            .clone()
            .unwrap_or_else(|| empty_arguments(&submit.parameters));
        let message = Message::assistant(
            String::new(),
            vec![ToolCall::new(
                "call_null",
                SUBMIT_TOOL,
                arguments.to_string(),
            )],
        );
        Ok(answer(request, message, FinishReason::ToolCalls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(assistant_turns: usize) -> ChatRequest {
        let mut messages = vec![Message::user("go")];
        for i in 0..assistant_turns {
            messages.push(Message::assistant(format!("turn {i}"), Vec::new()));
            messages.push(Message::tool(format!("call_{i}"), "ok"));
        }
        ChatRequest {
            messages,
            ..ChatRequest::default()
        }
    }

    #[tokio::test]
    async fn the_turn_played_is_the_number_of_assistant_messages() {
        let policy = ScriptedPolicy::new(vec![
            ScriptedTurn::call("bash", json!({"command": "ls"})),
            ScriptedTurn::text("<tool_call>{\"name\": \"submit\"}</tool_call>"),
        ]);
        let first = policy.complete(&request(0)).await.unwrap().remove(0);
        assert_eq!(first.message.tool_calls[0].id, "call_0_0");
        assert_eq!(first.calls.unwrap()[0].arguments, json!({"command": "ls"}));
        let second = policy.complete(&request(1)).await.unwrap().remove(0);
        assert_eq!(second.calls.unwrap()[0].name, "submit");
        assert_eq!(second.finish_reason, FinishReason::Stop);
        assert!(matches!(
            policy.complete(&request(2)).await,
            Err(Error::ScriptExhausted { turn: 2, len: 2 })
        ));
        let cycling = policy.clone().cycling();
        let third = cycling.complete(&request(2)).await.unwrap().remove(0);
        assert_eq!(third.calls.unwrap()[0].name, "bash");
        let mut many = request(0);
        many.sampling.n = 3;
        assert_eq!(policy.complete(&many).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn null_submits_the_emptiest_arguments() {
        let schema = json!({
            "type": "object",
            "properties": {
                "files": {"type": "array"}, "review": {"type": "string"},
                "judgment": {"type": "string", "enum": ["NO", "YES"]},
                "score": {"type": ["integer", "null"]}, "optional": {"type": "string"},
            },
            "required": ["files", "review", "judgment", "score"],
        });
        assert_eq!(
            empty_arguments(&schema),
            json!({"files": [], "review": "", "judgment": "NO", "score": 0})
        );
        let mut request = request(0);
        request.tools.push(ToolSpec {
            name: SUBMIT_TOOL.into(),
            description: "submit".into(),
            parameters: schema,
        });
        let completion = NullPolicy::new()
            .complete(&request)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(completion.calls.unwrap()[0].arguments["judgment"], "NO");
        let fixed = NullPolicy::with_arguments(json!({"files": ["x"]}));
        let completion = fixed.complete(&request).await.unwrap().remove(0);
        assert_eq!(
            completion.calls.unwrap()[0].arguments,
            json!({"files": ["x"]})
        );
        request.tools.clear();
        assert!(matches!(
            NullPolicy::new().complete(&request).await,
            Err(Error::Config { .. })
        ));
    }
}
