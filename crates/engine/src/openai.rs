//! The OpenAI chat-completions wire format: request parsing and checking, tool-call extraction
//! from generated text, and response/chunk bodies. Unknown request fields are ignored, as
//! OpenAI clients send many; known fields with bad values are a 400 naming the field.

use model::chat::PyJson;
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use crate::error::ApiError;

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The fields of a chat-completions request this server reads (vLLM extensions included).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Json>,
    #[serde(default)]
    pub tools: Option<Vec<Json>>,
    #[serde(default)]
    pub tool_choice: Option<Json>,
    #[serde(default)]
    pub n: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stop_token_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// vLLM: write log-prob tokens as `token_id:N`.
    #[serde(default)]
    pub return_tokens_as_token_ids: Option<bool>,
    /// vLLM: add `prompt_token_ids` to the response and `token_ids` to each choice.
    #[serde(default)]
    pub return_token_ids: Option<bool>,
    /// vLLM: extra chat-template variables (for example `enable_thinking`).
    #[serde(default)]
    pub chat_template_kwargs: Option<Map<String, Json>>,
    #[serde(default)]
    pub add_generation_prompt: Option<bool>,
}

/// Most choices per request.
pub const MAX_N: usize = 64;
/// Most alternatives per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

impl ChatRequest {
    /// Parses a request body; any defect is a 400.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Json = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let request: ChatRequest = serde_json::from_value(value)
            .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<(), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::bad_param(
                "messages",
                "messages must not be empty",
            ));
        }
        for (i, message) in self.messages.iter().enumerate() {
            let role = message.get("role").and_then(Json::as_str);
            match role {
                Some("system" | "user" | "assistant" | "tool" | "developer") => {}
                Some(other) => {
                    return Err(ApiError::bad_param(
                        "messages",
                        format!("messages[{i}] has unknown role `{other}`"),
                    ))
                }
                None => {
                    return Err(ApiError::bad_param(
                        "messages",
                        format!("messages[{i}] needs a string `role`"),
                    ))
                }
            }
        }
        if let Some(n) = self.n {
            if n == 0 || n > MAX_N {
                return Err(ApiError::bad_param(
                    "n",
                    format!("n must be in 1..={MAX_N}"),
                ));
            }
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && (0.0..=2.0).contains(&t)) {
                return Err(ApiError::bad_param(
                    "temperature",
                    "temperature must be in [0, 2]",
                ));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::bad_param("top_p", "top_p must be in (0, 1]"));
            }
        }
        if let Some(k) = self.top_logprobs {
            if k > MAX_TOP_LOGPROBS {
                return Err(ApiError::bad_param(
                    "top_logprobs",
                    format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
                ));
            }
        }
        if self.max_tokens == Some(0) || self.max_completion_tokens == Some(0) {
            return Err(ApiError::bad_param(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        for (name, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::bad_param(
                    name,
                    format!("{name} is not supported"),
                ));
            }
        }
        if let Some(tools) = &self.tools {
            for (i, tool) in tools.iter().enumerate() {
                if !tool.is_object() {
                    return Err(ApiError::bad_param(
                        "tools",
                        format!("tools[{i}] must be an object"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn stop_strings(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// Whether generated tool calls should be parsed.
    pub fn parses_tools(&self) -> bool {
        let none = matches!(&self.tool_choice, Some(Json::String(s)) if s == "none");
        self.tools.as_ref().is_some_and(|t| !t.is_empty()) && !none
    }
}

/// Messages as chat templates expect them: text parts joined into one string, and tool-call
/// arguments given as JSON strings parsed into objects (as vLLM does before rendering).
pub fn template_messages(messages: &[Json]) -> Result<Vec<Json>, ApiError> {
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let mut message = message.clone();
            let Some(object) = message.as_object_mut() else {
                return Err(ApiError::bad_param(
                    "messages",
                    format!("messages[{i}] must be an object"),
                ));
            };
            if let Some(Json::Array(parts)) = object.get("content") {
                let mut text = String::new();
                for part in parts {
                    match (
                        part.get("type").and_then(Json::as_str),
                        part.get("text").and_then(Json::as_str),
                    ) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::bad_param(
                                "messages",
                                format!("messages[{i}]: only text content parts are supported"),
                            ))
                        }
                    }
                }
                object.insert("content".into(), Json::String(text));
            }
            if let Some(Json::Array(calls)) = object.get_mut("tool_calls") {
                for call in calls {
                    if let Some(function) = call.get_mut("function").and_then(Json::as_object_mut) {
                        if let Some(Json::String(arguments)) = function.get("arguments") {
                            if let Ok(parsed) = serde_json::from_str::<Json>(arguments) {
                                function.insert("arguments".into(), parsed);
                            }
                        }
                    }
                }
            }
            Ok(message)
        })
        .collect()
}

/// A tool call found in generated text.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// Splits generated text into content and `<tool_call>{json}</tool_call>` blocks (Hermes/Qwen
/// format). If any block is not valid JSON with a `name`, the text is all content.
pub fn parse_tool_calls(text: &str) -> (Option<String>, Vec<ToolCall>) {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let Some(first) = text.find(OPEN) else {
        return (Some(text.to_string()), Vec::new());
    };
    let mut calls = Vec::new();
    let mut rest = &text[first..];
    while let Some(start) = rest.find(OPEN) {
        let body_start = start + OPEN.len();
        let (body, next) = match rest[body_start..].find(CLOSE) {
            Some(end) => (
                &rest[body_start..body_start + end],
                &rest[body_start + end + CLOSE.len()..],
            ),
            None => (&rest[body_start..], ""),
        };
        let parsed: Option<ToolCall> =
            serde_json::from_str::<Json>(body.trim())
                .ok()
                .and_then(|v| {
                    let name = v.get("name")?.as_str()?.to_string();
                    let arguments = match v.get("arguments") {
                        Some(Json::String(s)) => s.clone(),
                        Some(other) => PyJson::dumps(other),
                        None => "{}".to_string(),
                    };
                    Some(ToolCall { name, arguments })
                });
        match parsed {
            Some(call) => calls.push(call),
            None => return (Some(text.to_string()), Vec::new()),
        }
        rest = next;
    }
    let content = text[..first].trim();
    let content = (!content.is_empty()).then(|| content.to_string());
    (content, calls)
}

/// The `tool_calls` array of a message.
pub fn tool_calls_json(calls: &[ToolCall], id_prefix: &str) -> Json {
    Json::Array(
        calls
            .iter()
            .enumerate()
            .map(|(k, call)| {
                json!({
                    "id": format!("{id_prefix}_{k}"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_tools(text: &str, content: Option<&str>, calls: &[(&str, &str)]) {
        let (c, parsed) = parse_tool_calls(text);
        assert_eq!(c.as_deref(), content, "{text}");
        let parsed: Vec<(String, String)> =
            parsed.into_iter().map(|c| (c.name, c.arguments)).collect();
        let expected: Vec<(String, String)> = calls
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect();
        assert_eq!(parsed, expected, "{text}");
    }

    #[test]
    fn tool_calls_are_parsed() {
        check_tools("hello", Some("hello"), &[]);
        check_tools(
            "Let me look.\n<tool_call>\n{\"name\": \"bash\", \"arguments\": {\"cmd\": \"ls -la\"}}\n</tool_call>",
            Some("Let me look."),
            &[("bash", "{\"cmd\": \"ls -la\"}")],
        );
        check_tools(
            "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>",
            None,
            &[("a", "{}"), ("b", "{\"x\": 1}")],
        );
        // Unclosed at the end of generation: still a call.
        check_tools(
            "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"é\": 1.5}}",
            None,
            &[("a", "{\"é\": 1.5}")],
        );
        // Not JSON: everything stays content.
        check_tools(
            "x <tool_call>oops</tool_call>",
            Some("x <tool_call>oops</tool_call>"),
            &[],
        );
    }

    fn check_rejected(body: &str, needle: &str) {
        let err = ChatRequest::parse(body.as_bytes()).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains(needle), "{body}: {}", err.message);
    }

    #[test]
    fn bad_requests_are_400_with_a_reason() {
        check_rejected("not json", "not valid JSON");
        check_rejected("[1]", "JSON object");
        check_rejected("{}", "messages");
        check_rejected(r#"{"messages": []}"#, "must not be empty");
        check_rejected(
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
            "unknown role",
        );
        check_rejected(r#"{"messages": [{"content": "x"}]}"#, "role");
        check_rejected(
            r#"{"messages": [{"role": "user", "content": "x"}], "n": 0}"#,
            "n must",
        );
        check_rejected(
            r#"{"messages": [{"role": "user", "content": "x"}], "temperature": 5}"#,
            "temperature",
        );
        check_rejected(
            r#"{"messages": [{"role": "user", "content": "x"}], "top_p": 0}"#,
            "top_p",
        );
        check_rejected(
            r#"{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}"#,
            "invalid request",
        );
        check_rejected(
            r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}"#,
            "top_logprobs",
        );
        check_rejected(
            r#"{"messages": [{"role": "user", "content": "x"}], "presence_penalty": 1}"#,
            "not supported",
        );
        assert!(ChatRequest::parse(br#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "unknown_field": 3}"#).is_ok());
    }
}
