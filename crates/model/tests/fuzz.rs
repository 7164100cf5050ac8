//! Property tests of chat-template rendering with the Qwen2.5 and Qwen3 templates this crate
//! ships: message contents of any kind (template syntax such as `{{` and `{%`, special tokens,
//! control characters, any Unicode) render as data, verbatim; malformed conversations render or
//! give a template error, never a panic; and the Python-style `tojson` output is JSON that reads
//! back as the value it was written from.
//!
//! proptest's default case count (256) unless `PROPTEST_CASES` says otherwise.

use model::chat::{ChatTemplate, PyJson};
use model::init::{QWEN2_5_TEMPLATE, QWEN3_TEMPLATE};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn templates() -> [(&'static str, ChatTemplate); 2] {
    [
        ("qwen2_5", ChatTemplate::new(QWEN2_5_TEMPLATE).unwrap()),
        ("qwen3", ChatTemplate::new(QWEN3_TEMPLATE).unwrap()),
    ]
}

fn content() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        any::<char>().prop_map(String::from),
        "[a-z ]{1,8}",
        prop::sample::select(vec![
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            "{{ messages }}",
            "{% raw %}",
            "\n",
            "\r\n",
            "\t",
            "\u{0}",
            "\u{1b}",
            "\u{7f}",
            "é",
            "\u{1F600}",
            "\u{202e}",
            "<|im_end|>",
            "<|im_start|>",
            "<think>",
            "<tool_call>",
            "<tool_response>",
            "\\",
            "\"",
            "'",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(fragment, 0..12).prop_map(|parts| parts.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        content().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((content(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((content(), json_value()), 0..4)
        .prop_map(|entries| Value::Object(entries.into_iter().collect()))
}

/// One turn after the optional system message.
#[derive(Clone, Debug)]
enum Turn {
    User(String),
    Assistant(String),
    AssistantCall(String, String, Value),
    Tool(String),
}

impl Turn {
    fn message(&self) -> Value {
        match self {
            Turn::User(content) => json!({"role": "user", "content": content}),
            Turn::Assistant(content) => json!({"role": "assistant", "content": content}),
            Turn::AssistantCall(content, name, arguments) => json!({
                "role": "assistant",
                "content": content,
                "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
            }),
            Turn::Tool(content) => json!({"role": "tool", "content": content}),
        }
    }
}

fn turn() -> impl Strategy<Value = Turn> {
    // Qwen3 reads reasoning out of an assistant message up to `</think>`: kept out, so every
    // assistant content is rendered as written.
    fn assistant() -> impl Strategy<Value = String> {
        content().prop_map(|c| c.replace("</think>", "</thinking>"))
    }
    prop_oneof![
        content().prop_map(Turn::User),
        assistant().prop_map(Turn::Assistant),
        (assistant(), "[a-z_][a-z0-9_]{0,10}", json_object())
            .prop_map(|(c, name, arguments)| Turn::AssistantCall(c, name, arguments)),
        content().prop_map(Turn::Tool),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Every content appears in the rendering as written (an assistant's without the leading
    /// newlines Qwen3 strips), and so does every tool call and tool description.
    #[test]
    fn contents_render_verbatim(
        system in prop::option::of(content()),
        turns in prop::collection::vec(turn(), 1..6),
        tools in prop::option::of(prop::collection::vec(json_object(), 1..3)),
        add_generation_prompt in any::<bool>(),
    ) {
        let mut messages: Vec<Value> = system
            .iter()
            .map(|c| json!({"role": "system", "content": c}))
            .collect();
        messages.extend(turns.iter().map(Turn::message));
        for (name, template) in templates() {
            let rendered = template
                .render(&messages, tools.as_deref(), add_generation_prompt, &Map::new())
                .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
            if let Some(system) = &system {
                prop_assert!(rendered.contains(system.as_str()), "{}: system", name);
            }
            for turn in &turns {
                let (expected, call) = match turn {
                    Turn::User(c) | Turn::Tool(c) => (c.as_str(), None),
                    Turn::Assistant(c) => (c.trim_start_matches('\n'), None),
                    Turn::AssistantCall(c, n, a) => (c.trim_start_matches('\n'), Some((n, a))),
                };
                prop_assert!(rendered.contains(expected), "{}: {:?} in {:?}", name, expected, rendered);
                if let Some((call_name, arguments)) = call {
                    let written = format!(
                        "<tool_call>\n{{\"name\": \"{call_name}\", \"arguments\": {}}}\n</tool_call>",
                        PyJson::dumps(arguments)
                    );
                    prop_assert!(rendered.contains(&written), "{}: {}", name, written);
                }
            }
            for tool in tools.iter().flatten() {
                prop_assert!(rendered.contains(&PyJson::dumps(tool)), "{}: tool", name);
            }
            prop_assert_eq!(
                rendered.ends_with("<|im_start|>assistant\n"),
                add_generation_prompt,
                "{}", name
            );
        }
    }

    /// Conversations in any shape (missing roles, contents that are not strings, unknown keys,
    /// no messages at all) render or give a template error.
    #[test]
    fn malformed_conversations_never_panic(
        messages in prop::collection::vec(
            prop_oneof![
                json_value(),
                (json_value(), json_value()).prop_map(|(role, content)| json!({"role": role, "content": content})),
                (prop::sample::select(vec!["system", "user", "assistant", "tool"]), json_value())
                    .prop_map(|(role, content)| json!({"role": role, "content": content})),
                (json_value(), json_value()).prop_map(|(content, calls)| json!({"role": "assistant", "content": content, "tool_calls": calls})),
            ],
            0..5,
        ),
        tools in prop::option::of(prop::collection::vec(json_value(), 0..3)),
        extra in json_object(),
    ) {
        let extra = extra.as_object().cloned().unwrap_or_default();
        for (name, template) in templates() {
            if let Err(error) = template.render(&messages, tools.as_deref(), true, &extra) {
                prop_assert!(!error.to_string().is_empty(), "{}", name);
            }
        }
    }

    /// `tojson` as Python's `json.dumps` writes it, compact or indented, sorted or not, is JSON
    /// that reads back as the value.
    #[test]
    fn python_style_json_reads_back(
        value in json_value(),
        indent in prop::option::of(0usize..4),
        sort_keys in any::<bool>(),
    ) {
        prop_assert_eq!(serde_json::from_str::<Value>(&PyJson::dumps(&value)).ok(), Some(value.clone()));
        let style = PyJson {
            indent,
            item_sep: if indent.is_some() { ",".into() } else { ", ".into() },
            key_sep: ": ".into(),
            sort_keys,
        };
        let mut out = String::new();
        style.write(&value, 0, &mut out);
        prop_assert_eq!(serde_json::from_str::<Value>(&out).ok(), Some(value));
    }
}
