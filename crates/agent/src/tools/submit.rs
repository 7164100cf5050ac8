//! The `submit` tool: its arguments are defined by the task (a JSON schema), and checked
//! against that schema before the episode ends, so the model gets a chance to fix a malformed
//! answer.
//!
//! The check covers the schema features tool schemas use (object, required, properties, type,
//! enum, items, additionalProperties: false); it is not a full JSON Schema validator.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What `submit` takes, as the task defines it. The agent crate knows no skill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitSpec {
    /// Shown to the model as the tool's description (and in the system prompt).
    pub description: String,
    /// JSON schema of the arguments (an object schema).
    pub parameters: Value,
}

impl SubmitSpec {
    /// A submit without arguments: the workspace is the answer.
    pub fn no_arguments(description: impl Into<String>) -> SubmitSpec {
        SubmitSpec {
            description: description.into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        }
    }

    /// Why `arguments` do not fit the schema, or `None` if they do.
    pub fn check(&self, arguments: &Value) -> Option<String> {
        check_value(&self.parameters, arguments, "arguments")
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    }
}

fn check_value(schema: &Value, value: &Value, at: &str) -> Option<String> {
    let kinds: Vec<&str> = match &schema["type"] {
        Value::String(kind) => vec![kind.as_str()],
        Value::Array(kinds) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !kinds.is_empty() && !kinds.iter().any(|k| type_matches(k, value)) {
        return Some(format!(
            "{at} must be of type {}, not {}",
            kinds.join(" or "),
            describe(value)
        ));
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Some(format!(
                "{at} must be one of {}, not {value}",
                list.join(", ")
            ));
        }
    }
    if let Value::Object(object) = value {
        for name in schema["required"].as_array().into_iter().flatten() {
            let Some(name) = name.as_str() else { continue };
            if !object.contains_key(name) {
                return Some(format!("{at} lack the required field `{name}`"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(field_schema) => {
                    if let Some(problem) = check_value(field_schema, field, &format!("`{name}`")) {
                        return Some(problem);
                    }
                }
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    // Sorted: serde_json's map order depends on a workspace-wide feature.
                    let mut known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    known.sort_unstable();
                    return Some(format!(
                        "{at} have an unknown field `{name}` (known: {})",
                        known.join(", ")
                    ));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            if let Some(problem) = check_value(item_schema, item, &format!("{at}[{i}]")) {
                return Some(problem);
            }
        }
    }
    None
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(arguments: Value, expected: Option<&str>) {
        let spec = SubmitSpec {
            description: "submit".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "files": {"type": "array", "items": {"type": "string"}},
                    "judgment": {"type": "string", "enum": ["YES", "NO"]},
                    "count": {"type": "integer"},
                },
                "required": ["files"],
                "additionalProperties": false,
            }),
        };
        assert_eq!(spec.check(&arguments).as_deref(), expected, "{arguments}");
    }

    #[test]
    fn schema_checks() {
        check(json!({"files": []}), None);
        check(
            json!({"files": ["a.py"], "judgment": "NO", "count": 3}),
            None,
        );
        check(json!({}), Some("arguments lack the required field `files`"));
        check(
            json!([]),
            Some("arguments must be of type object, not an array"),
        );
        check(
            json!({"files": "a.py"}),
            Some("`files` must be of type array, not a string"),
        );
        check(
            json!({"files": [1]}),
            Some("`files`[0] must be of type string, not a number"),
        );
        check(
            json!({"files": [], "judgment": "yes"}),
            Some(r#"`judgment` must be one of "YES", "NO", not "yes""#),
        );
        check(
            json!({"files": [], "count": 1.5}),
            Some("`count` must be of type integer, not a number"),
        );
        check(
            json!({"files": [], "extra": 1}),
            Some("arguments have an unknown field `extra` (known: count, files, judgment)"),
        );
        assert_eq!(SubmitSpec::no_arguments("done").check(&json!({})), None);
    }
}
