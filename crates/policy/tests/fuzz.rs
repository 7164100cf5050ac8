//! Property tests of what reads model output: lenient JSON and tool-call parsing. Arbitrary text
//! (quotes, brackets, tags, code fences, control characters, any Unicode) must give a value or a
//! typed error, never a panic; valid JSON and well-formed calls must come back exactly as written.
//!
//! Case counts are modest so the suite stays fast; `PROPTEST_CASES` raises them for a longer run.

use policy::json_repair::parse_lenient;
use policy::{parse_structured, parse_text, FunctionCall, ParsedCall, Repair, ToolCall};
use proptest::prelude::*;
use serde_json::{json, Value};

/// proptest's defaults (256 cases unless `PROPTEST_CASES` says otherwise); a failure's minimal
/// input is printed, not saved into the source tree.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made of the fragments that matter to the parsers, mixed with arbitrary characters.
fn tricky_text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        any::<char>().prop_map(String::from),
        "[a-z0-9 _]{1,6}",
        prop::sample::select(vec![
            "\"",
            "'",
            "\\",
            "\\u",
            "\\'",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\n",
            "\r",
            "\t",
            "\u{0}",
            "\u{1b}",
            "é",
            "\u{1F600}",
            "True",
            "False",
            "None",
            "null",
            "1e999",
            "-",
            "```",
            "```json\n",
            "<tool_call>",
            "</tool_call>",
            "\"name\"",
            "\"arguments\"",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
}

/// Any JSON value, strings included, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        tricky_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_text(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(tricky_text(), json_value(), 0..5)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

fn tool_name() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_.-]{0,15}"
}

/// Prose around calls: anything without an opening tag.
fn prose() -> impl Strategy<Value = String> {
    tricky_text().prop_map(|text| text.replace("<tool_call>", "<tool call>"))
}

proptest! {
    #![proptest_config(config())]

    /// Whatever the text, the result is a value or the strict parser's message; and text that is
    /// already valid JSON is read exactly as a strict parser reads it, with no repair recorded.
    #[test]
    fn lenient_json_agrees_with_strict_json(text in prop_oneof![tricky_text(), any::<String>()]) {
        let lenient = parse_lenient(&text);
        if let Ok(value) = serde_json::from_str::<Value>(text.trim()) {
            prop_assert_eq!(lenient, Ok((value, vec![])));
        } else if let Err(message) = lenient {
            prop_assert!(!message.is_empty());
        }
    }

    #[test]
    fn valid_json_round_trips(value in json_value()) {
        let compact = value.to_string();
        prop_assert_eq!(parse_lenient(&compact), Ok((value.clone(), vec![])));
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        prop_assert_eq!(parse_lenient(&pretty), Ok((value.clone(), vec![])));
        let fenced = format!("```json\n{pretty}\n```");
        prop_assert_eq!(parse_lenient(&fenced), Ok((value, vec![Repair::CodeFence])));
    }

    /// A container cut off before its last closing brackets is read back whole: the repair only
    /// closes what was left open.
    #[test]
    fn missing_closers_are_restored(
        value in prop_oneof![
            prop::collection::vec(json_value(), 0..5).prop_map(Value::Array),
            json_object(),
        ],
        cut in 1usize..8,
    ) {
        let text = value.to_string();
        let closers = text.len() - text.trim_end_matches(['}', ']']).len();
        let cut = cut.min(closers);
        let truncated = &text[..text.len() - cut];
        let (repaired, repairs) = parse_lenient(truncated).map_err(TestCaseError::fail)?;
        prop_assert_eq!(repaired, value);
        prop_assert!(repairs.contains(&Repair::MissingCloser), "{:?}", repairs);
    }

    /// Arbitrary text gives calls with a name and object arguments, or a format error; text
    /// without an opening tag has no calls.
    #[test]
    fn text_calls_are_calls_or_format_errors(text in tricky_text()) {
        let result = parse_text(&text);
        if !text.contains("<tool_call>") {
            prop_assert_eq!(result, Ok(vec![]));
        } else if let Ok(calls) = result {
            for call in calls {
                prop_assert!(!call.name.is_empty() && call.name.trim() == call.name);
                prop_assert!(call.arguments.is_object());
                prop_assert!(call.id.is_none());
            }
        }
    }

    /// Calls written the way the chat template asks, between arbitrary prose, parse back to the
    /// same calls with no repair, whatever their arguments hold (tags and fences included).
    #[test]
    fn rendered_text_calls_parse_back(
        calls in prop::collection::vec((tool_name(), json_object()), 0..4),
        prose in prop::collection::vec(prose(), 5),
        pretty in any::<bool>(),
    ) {
        let mut text = prose[0].clone();
        for (index, (name, arguments)) in calls.iter().enumerate() {
            let call = json!({"name": name, "arguments": arguments});
            let body = if pretty {
                serde_json::to_string_pretty(&call).unwrap()
            } else {
                call.to_string()
            };
            text.push_str(&format!("<tool_call>\n{body}\n</tool_call>"));
            text.push_str(&prose[index + 1]);
        }
        let expected: Vec<ParsedCall> = calls
            .into_iter()
            .map(|(name, arguments)| ParsedCall { id: None, name, arguments, repairs: vec![] })
            .collect();
        prop_assert_eq!(parse_text(&text), Ok(expected));
    }

    /// A call cut off anywhere (a reply that ran out of tokens) is a repaired call or a format
    /// error.
    #[test]
    fn truncated_text_calls_are_calls_or_format_errors(
        name in tool_name(),
        arguments in json_object(),
        cut in any::<prop::sample::Index>(),
    ) {
        let text = format!(
            "<tool_call>\n{}\n</tool_call>",
            json!({"name": name, "arguments": arguments})
        );
        let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let truncated = &text[..boundaries[cut.index(boundaries.len())]];
        if let Ok(calls) = parse_text(truncated) {
            prop_assert!(calls.len() <= 1);
            for call in calls {
                // Cut inside the name, the call names a prefix of it; either way the call is
                // marked as repaired, never passed off as what the model meant to write.
                prop_assert!(name.starts_with(&call.name), "{} / {}", call.name, name);
                prop_assert!(call.arguments.is_object());
                prop_assert!(!call.repairs.is_empty());
            }
        }
    }

    /// Structured calls with arguments as JSON text come back as they were sent.
    #[test]
    fn structured_calls_round_trip(
        calls in prop::collection::vec((tool_name(), json_object()), 0..4),
    ) {
        let tool_calls: Vec<ToolCall> = calls
            .iter()
            .enumerate()
            .map(|(index, (name, arguments))| ToolCall {
                id: format!("call_{index}"),
                kind: "function".into(),
                function: FunctionCall { name: name.clone(), arguments: arguments.to_string() },
            })
            .collect();
        let expected: Vec<ParsedCall> = calls
            .into_iter()
            .enumerate()
            .map(|(index, (name, arguments))| ParsedCall {
                id: Some(format!("call_{index}")),
                name,
                arguments,
                repairs: vec![],
            })
            .collect();
        prop_assert_eq!(parse_structured(&tool_calls), Ok(expected));
    }

    /// Structured calls with arbitrary names and argument text: calls or format errors.
    #[test]
    fn structured_calls_of_any_text_are_calls_or_format_errors(
        calls in prop::collection::vec((tricky_text(), tricky_text()), 0..4),
    ) {
        let tool_calls: Vec<ToolCall> = calls
            .iter()
            .map(|(name, arguments)| ToolCall {
                id: "id".into(),
                kind: "function".into(),
                function: FunctionCall { name: name.clone(), arguments: arguments.clone() },
            })
            .collect();
        match parse_structured(&tool_calls) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.len(), calls.len());
                for call in parsed {
                    prop_assert!(!call.name.is_empty());
                    prop_assert!(call.arguments.is_object());
                }
            }
            Err(error) => prop_assert!(error.call_index < calls.len()),
        }
    }
}
