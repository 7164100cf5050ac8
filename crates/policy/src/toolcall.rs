//! Reading tool calls out of a completion: structured calls (OpenAI `tool_calls`, arguments as
//! JSON text) and calls written in plain text as `<tool_call>{json}</tool_call>` blocks
//! (Hermes/Qwen style), several per message.
//!
//! A call that cannot be read even after [`crate::json_repair`] is a [`FormatError`]: data for
//! the agent loop to show the model, never a crate error. Whether the named tool exists is not
//! decided here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::ToolCall;
use crate::json_repair::{parse_lenient, Repair};

pub const OPEN_TAG: &str = "<tool_call>";
pub const CLOSE_TAG: &str = "</tool_call>";

/// A tool call whose arguments were read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedCall {
    /// The server's call id for structured calls; `None` for calls written as text.
    pub id: Option<String>,
    pub name: String,
    /// Always a JSON object.
    pub arguments: Value,
    /// Slips repaired to read this call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<Repair>,
}

/// Why the tool calls of a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatError {
    /// Which call of the message (0-based), where the problem is in one call.
    pub call_index: usize,
    pub kind: FormatErrorKind,
    /// The start of the offending text, for the model and the logs.
    pub excerpt: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FormatErrorKind {
    /// Not JSON, even after repairs; `message` is the parser's.
    InvalidJson { message: String },
    /// JSON, but not an object (or list of objects) with a `name`.
    NotACall,
    /// `name` is missing, empty or not a string.
    MissingName,
    /// `arguments` is neither an object nor a string holding one.
    ArgumentsNotObject,
}

const EXCERPT_CHARS: usize = 200;

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.call_index + 1;
        match &self.kind {
            FormatErrorKind::InvalidJson { message } => {
                write!(f, "tool call {n} is not valid JSON ({message})")?
            }
            FormatErrorKind::NotACall => write!(
                f,
                "tool call {n} is not an object of the form {{\"name\": ..., \"arguments\": {{...}}}}"
            )?,
            FormatErrorKind::MissingName => {
                write!(f, "tool call {n} has no \"name\" string naming the tool")?
            }
            FormatErrorKind::ArgumentsNotObject => {
                write!(f, "the \"arguments\" of tool call {n} are not a JSON object")?
            }
        }
        write!(f, ": `{}`", self.excerpt)
    }
}

/// Tool calls written as `<tool_call>` blocks in `text`; no block at all gives an empty list.
/// A block whose closing tag is missing runs to the next opening tag or the end of the text.
pub fn parse_text(text: &str) -> Result<Vec<ParsedCall>, FormatError> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN_TAG) {
        let after = &rest[start + OPEN_TAG.len()..];
        let (body, unclosed, consumed) = block(after);
        let index = calls.len();
        let (value, mut repairs) = parse_lenient(body).map_err(|message| FormatError {
            call_index: index,
            kind: FormatErrorKind::InvalidJson { message },
            excerpt: excerpt(body),
        })?;
        if unclosed {
            repairs.push(Repair::UnclosedTag);
        }
        // Some models put a list of calls in one block.
        let objects = match value {
            Value::Array(items) if !items.is_empty() => items,
            other => vec![other],
        };
        for object in objects {
            calls.push(call_from_object(
                object,
                calls.len(),
                body,
                repairs.clone(),
            )?);
        }
        rest = &after[consumed..];
    }
    Ok(calls)
}

/// The body of the block whose opening tag `after` follows, whether its closing tag is missing,
/// and how much of `after` the block takes. A tag inside the call's JSON strings (a command that
/// greps for the tags, a file that holds them) does not end the block: the first closing tag
/// before which the body is valid JSON does. Failing that, the first closing tag before the next
/// opening tag ends it, and without one the block runs to the next opening tag or the end.
fn block(after: &str) -> (&str, bool, usize) {
    for (end, _) in after.match_indices(CLOSE_TAG) {
        let body = &after[..end];
        if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() {
            return (body, false, end + CLOSE_TAG.len());
        }
    }
    let next_open = after.find(OPEN_TAG).unwrap_or(after.len());
    match after[..next_open].find(CLOSE_TAG) {
        Some(end) => (&after[..end], false, end + CLOSE_TAG.len()),
        None => (&after[..next_open], true, next_open),
    }
}

fn call_from_object(
    value: Value,
    index: usize,
    body: &str,
    mut repairs: Vec<Repair>,
) -> Result<ParsedCall, FormatError> {
    let fail = |kind| FormatError {
        call_index: index,
        kind,
        excerpt: excerpt(body),
    };
    let Value::Object(mut object) = value else {
        return Err(fail(FormatErrorKind::NotACall));
    };
    let name = match object.remove("name") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.trim().to_string(),
        _ => return Err(fail(FormatErrorKind::MissingName)),
    };
    let raw = match object.remove("arguments") {
        Some(arguments) => arguments,
        None => match object
            .remove("parameters")
            .or_else(|| object.remove("args"))
        {
            Some(arguments) => {
                repairs.push(Repair::ArgumentsKey);
                arguments
            }
            None => Value::Object(Default::default()),
        },
    };
    let arguments = arguments_object(raw, &mut repairs)
        .ok_or_else(|| fail(FormatErrorKind::ArgumentsNotObject))?;
    repairs.sort();
    repairs.dedup();
    Ok(ParsedCall {
        id: None,
        name,
        arguments,
        repairs,
    })
}

/// The arguments as an object: as given, or parsed from a string that holds one.
fn arguments_object(raw: Value, repairs: &mut Vec<Repair>) -> Option<Value> {
    match raw {
        Value::Object(_) => Some(raw),
        Value::Null => Some(Value::Object(Default::default())),
        Value::String(text) if text.trim().is_empty() => Some(Value::Object(Default::default())),
        Value::String(text) => {
            let (inner, inner_repairs) = parse_lenient(&text).ok()?;
            if !inner.is_object() {
                return None;
            }
            repairs.push(Repair::ArgumentsAsString);
            repairs.extend(inner_repairs);
            Some(inner)
        }
        _ => None,
    }
}

/// Reads structured tool calls, repairing their argument text where needed.
pub fn parse_structured(tool_calls: &[ToolCall]) -> Result<Vec<ParsedCall>, FormatError> {
    tool_calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let fail = |kind| FormatError {
                call_index: index,
                kind,
                excerpt: excerpt(&call.function.arguments),
            };
            let name = call.function.name.trim();
            if name.is_empty() {
                return Err(fail(FormatErrorKind::MissingName));
            }
            let text = call.function.arguments.trim();
            let (value, mut repairs) = if text.is_empty() {
                (Value::Object(Default::default()), Vec::new())
            } else {
                parse_lenient(text)
                    .map_err(|message| fail(FormatErrorKind::InvalidJson { message }))?
            };
            let arguments = arguments_object(value, &mut repairs)
                .ok_or_else(|| fail(FormatErrorKind::ArgumentsNotObject))?;
            repairs.sort();
            repairs.dedup();
            Ok(ParsedCall {
                id: Some(call.id.clone()),
                name: name.to_string(),
                arguments,
                repairs,
            })
        })
        .collect()
}
