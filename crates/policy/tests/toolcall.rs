//! Tool-call parsing from text and from structured calls: one line per case.

use policy::{parse_structured, parse_text, FormatErrorKind, ParsedCall, Repair, ToolCall};
use serde_json::{json, Value};

/// A call as (name, arguments, repairs).
type Want<'a> = (&'a str, Value, &'a [Repair]);

fn calls(parsed: &[ParsedCall]) -> Vec<(String, Value, Vec<Repair>)> {
    parsed
        .iter()
        .map(|c| (c.name.clone(), c.arguments.clone(), c.repairs.clone()))
        .collect()
}

fn want(expected: &[Want]) -> Vec<(String, Value, Vec<Repair>)> {
    expected
        .iter()
        .map(|(n, a, r)| (n.to_string(), a.clone(), r.to_vec()))
        .collect()
}

/// Text that must parse into exactly `expected`.
fn check(text: &str, expected: &[Want]) {
    match parse_text(text) {
        Ok(parsed) => assert_eq!(calls(&parsed), want(expected), "{text:?}"),
        Err(e) => panic!("{text:?} was refused: {e}"),
    }
}

/// Text that must be refused with `kind` at call `index`, with `needle` in the message.
fn check_err(text: &str, index: usize, kind: fn(&FormatErrorKind) -> bool, needle: &str) {
    match parse_text(text) {
        Ok(parsed) => panic!("{text:?} should be refused, got {parsed:?}"),
        Err(e) => {
            assert_eq!(e.call_index, index, "{text:?}: {e}");
            assert!(kind(&e.kind), "{text:?}: wrong kind {:?}", e.kind);
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
        }
    }
}

use Repair::*;

#[test]
fn text_calls() {
    check("I will look around first.", &[]);
    check("", &[]);
    check(
        r#"<tool_call>{"name": "bash", "arguments": {"command": "ls"}}</tool_call>"#,
        &[("bash", json!({"command": "ls"}), &[])],
    );
    check(
        "Let me check.\n<tool_call>\n{\"name\": \"bash\", \"arguments\": {\"command\": \"ls -la\"}}\n</tool_call>\nDone.",
        &[("bash", json!({"command": "ls -la"}), &[])],
    );
    check(
        concat!(
            r#"<tool_call>{"name": "bash", "arguments": {"command": "a"}}</tool_call>"#,
            "\n",
            r#"<tool_call>{"name": "str_replace_editor", "arguments": {"command": "view", "path": "x.py"}}</tool_call>"#,
        ),
        &[
            ("bash", json!({"command": "a"}), &[]),
            (
                "str_replace_editor",
                json!({"command": "view", "path": "x.py"}),
                &[],
            ),
        ],
    );
    check(
        r#"<tool_call>{"name": "submit"}</tool_call>"#,
        &[("submit", json!({}), &[])],
    );
    check(
        r#"<tool_call>{"name": "submit", "arguments": null}</tool_call>"#,
        &[("submit", json!({}), &[])],
    );
    check(
        r#"<tool_call>{"name": " bash ", "arguments": {"command": "x"}}</tool_call>"#,
        &[("bash", json!({"command": "x"}), &[])],
    );
    // Repairs.
    check(
        r#"<tool_call>{"name": "bash", "arguments": {"command": "ls",},}</tool_call>"#,
        &[("bash", json!({"command": "ls"}), &[TrailingComma])],
    );
    check(
        "<tool_call>{'name': 'bash', 'arguments': {'command': 'ls'}}</tool_call>",
        &[("bash", json!({"command": "ls"}), &[SingleQuotes])],
    );
    check(
        "<tool_call>{\"name\": \"bash\", \"arguments\": {\"command\": \"cat > a.py <<'EOF'\nprint(1)\nEOF\"}}</tool_call>",
        &[(
            "bash",
            json!({"command": "cat > a.py <<'EOF'\nprint(1)\nEOF"}),
            &[ControlCharInString],
        )],
    );
    check(
        r#"<tool_call>{"name": "bash", "arguments": {"command": "ls"}</tool_call>"#,
        &[("bash", json!({"command": "ls"}), &[MissingCloser])],
    );
    check(
        r#"<tool_call>{"name": "bash", "arguments": "{\"command\": \"ls\"}"}</tool_call>"#,
        &[("bash", json!({"command": "ls"}), &[ArgumentsAsString])],
    );
    check(
        r#"<tool_call>{"name": "bash", "arguments": "{'command': 'ls',}"}</tool_call>"#,
        &[(
            "bash",
            json!({"command": "ls"}),
            &[TrailingComma, SingleQuotes, ArgumentsAsString],
        )],
    );
    check(
        r#"<tool_call>{"name": "bash", "parameters": {"command": "ls"}}</tool_call>"#,
        &[("bash", json!({"command": "ls"}), &[ArgumentsKey])],
    );
    check(
        r#"<tool_call>{"name": "bash", "arguments": {"command": "ls"}}"#,
        &[("bash", json!({"command": "ls"}), &[UnclosedTag])],
    );
    check(
        concat!(
            r#"<tool_call>{"name": "a", "arguments": {}}"#,
            "\n",
            r#"<tool_call>{"name": "b", "arguments": {}}</tool_call>"#,
        ),
        &[("a", json!({}), &[UnclosedTag]), ("b", json!({}), &[])],
    );
    check(
        "<tool_call>\n```json\n{\"name\": \"bash\", \"arguments\": {\"command\": \"ls\"}}\n```\n</tool_call>",
        &[("bash", json!({"command": "ls"}), &[CodeFence])],
    );
    check(
        r#"<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]</tool_call>"#,
        &[("a", json!({}), &[]), ("b", json!({"x": 1}), &[])],
    );
    check(
        r#"<tool_call>{"name": "bash", "arguments": {"command": "grep "def" a.py"}}</tool_call>"#,
        &[(
            "bash",
            json!({"command": "grep \"def\" a.py"}),
            &[UnescapedQuote],
        )],
    );
    check(
        r#"<tool_call>{"name": "submit", "arguments": {"ok": True}}</tool_call>"#,
        &[("submit", json!({"ok": true}), &[PythonLiteral])],
    );
    // A stray closing tag is ignored.
    check("</tool_call> nothing here", &[]);
    // Tags inside the call's strings (an agent working on this very parser) do not end it.
    check(
        r#"<tool_call>{"name": "bash", "arguments": {"command": "grep -c '</tool_call>' a <tool_call>"}}</tool_call> then <tool_call>{"name": "submit"}</tool_call>"#,
        &[
            (
                "bash",
                json!({"command": "grep -c '</tool_call>' a <tool_call>"}),
                &[],
            ),
            ("submit", json!({}), &[]),
        ],
    );
}

#[test]
fn text_format_errors() {
    let invalid = |k: &FormatErrorKind| matches!(k, FormatErrorKind::InvalidJson { .. });
    let not_call = |k: &FormatErrorKind| matches!(k, FormatErrorKind::NotACall);
    let no_name = |k: &FormatErrorKind| matches!(k, FormatErrorKind::MissingName);
    let bad_args = |k: &FormatErrorKind| matches!(k, FormatErrorKind::ArgumentsNotObject);
    check_err(
        "<tool_call>bash ls</tool_call>",
        0,
        invalid,
        "not valid JSON",
    );
    check_err("<tool_call></tool_call>", 0, invalid, "not valid JSON");
    check_err(
        r#"<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name" "b"}</tool_call>"#,
        1,
        invalid,
        "tool call 2",
    );
    check_err("<tool_call>42</tool_call>", 0, not_call, "not an object");
    check_err("<tool_call>\"bash\"</tool_call>", 0, not_call, "\"bash\"");
    check_err(
        r#"<tool_call>{"arguments": {"command": "ls"}}</tool_call>"#,
        0,
        no_name,
        "no \"name\"",
    );
    check_err(
        r#"<tool_call>{"name": 3, "arguments": {}}</tool_call>"#,
        0,
        no_name,
        "no \"name\"",
    );
    check_err(
        r#"<tool_call>{"name": "bash", "arguments": [1]}</tool_call>"#,
        0,
        bad_args,
        "not a JSON object",
    );
    check_err(
        r#"<tool_call>{"name": "bash", "arguments": "ls -la"}</tool_call>"#,
        0,
        bad_args,
        "not a JSON object",
    );
    // The excerpt is bounded.
    let long = format!("<tool_call>{{{}</tool_call>", "x".repeat(5000));
    let error = parse_text(&long).unwrap_err();
    assert!(
        error.excerpt.chars().count() <= 201,
        "{}",
        error.excerpt.len()
    );
}

#[test]
fn structured_calls() {
    let check = |arguments: &str, expected: Result<(Value, &[Repair]), ()>| {
        let parsed = parse_structured(&[ToolCall::new("c1", "bash", arguments)]);
        match (parsed, expected) {
            (Ok(calls), Ok((value, repairs))) => {
                assert_eq!(calls[0].id.as_deref(), Some("c1"));
                assert_eq!(calls[0].arguments, value, "{arguments:?}");
                assert_eq!(calls[0].repairs, repairs, "{arguments:?}");
            }
            (Err(_), Err(())) => {}
            (got, _) => panic!("{arguments:?}: unexpected {got:?}"),
        }
    };
    check(r#"{"command": "ls"}"#, Ok((json!({"command": "ls"}), &[])));
    check("", Ok((json!({}), &[])));
    check(
        "{\"command\": \"a\nb\"}",
        Ok((json!({"command": "a\nb"}), &[ControlCharInString])),
    );
    check(
        r#"{"command": "ls""#,
        Ok((json!({"command": "ls"}), &[MissingCloser])),
    );
    check(
        r#""{\"command\": \"ls\"}""#,
        Ok((json!({"command": "ls"}), &[ArgumentsAsString])),
    );
    check("ls -la", Err(()));
    check("[1, 2]", Err(()));
    let unnamed = parse_structured(&[ToolCall::new("c1", "", "{}")]);
    assert!(matches!(
        unnamed.unwrap_err().kind,
        FormatErrorKind::MissingName
    ));
}
