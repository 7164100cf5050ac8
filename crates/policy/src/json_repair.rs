//! Lenient JSON for tool-call arguments: strict parsing first, then one repair pass over the
//! slips models commonly make, with a record of every repair applied.
//!
//! The repair pass is a single scan that tracks strings and open brackets. It never invents
//! content beyond closing what was left open, so a repaired call means what the model wrote.
//! It must never be used on anything but model output.

use serde_json::Value;

pub use trajectory::Repair;

/// Parses `text` as JSON, repairing common slips if strict parsing fails. On failure, returns
/// the strict parser's message, which describes the model's text rather than the repair.
pub fn parse_lenient(text: &str) -> Result<(Value, Vec<Repair>), String> {
    let mut repairs = Vec::new();
    let mut text = text.trim();
    if let Some(inner) = strip_code_fence(text) {
        text = inner;
        repairs.push(Repair::CodeFence);
    }
    let strict_error = match serde_json::from_str::<Value>(text) {
        Ok(value) => return Ok((value, repairs)),
        Err(e) => e.to_string(),
    };
    let repaired = repair(text, &mut repairs);
    match serde_json::from_str::<Value>(&repaired) {
        Ok(value) => {
            repairs.sort();
            repairs.dedup();
            Ok((value, repairs))
        }
        Err(_) => Err(strict_error),
    }
}

fn strip_code_fence(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?;
    let body_start = rest.find('\n')? + 1;
    let body = &rest[body_start..];
    Some(body.trim_end().strip_suffix("```").unwrap_or(body).trim())
}

/// Whether the `"` just read ends the string: the next non-blank character is one that may
/// follow a string in JSON, or there is none.
fn quote_closes(rest: &[char]) -> bool {
    match rest.iter().find(|c| !c.is_whitespace()) {
        None => true,
        Some(c) => matches!(c, ',' | '}' | ']' | ':'),
    }
}

fn repair(text: &str, repairs: &mut Vec<Repair>) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    let mut closers: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if let Some(q) = quote {
            match c {
                '\\' => match chars.get(i) {
                    Some('\'') => {
                        out.push('\'');
                        i += 1;
                        if q == '"' {
                            repairs.push(Repair::InvalidEscape);
                        }
                    }
                    Some(&n) if "\"\\/bfnrtu".contains(n) => {
                        out.push('\\');
                        out.push(n);
                        i += 1;
                    }
                    _ => {
                        out.push_str("\\\\");
                        repairs.push(Repair::InvalidEscape);
                    }
                },
                c if c == q => {
                    if q == '"' && !quote_closes(&chars[i..]) {
                        out.push_str("\\\"");
                        repairs.push(Repair::UnescapedQuote);
                    } else {
                        out.push('"');
                        quote = None;
                    }
                }
                '"' => out.push_str("\\\""),
                '\n' => {
                    out.push_str("\\n");
                    repairs.push(Repair::ControlCharInString);
                }
                '\r' => {
                    out.push_str("\\r");
                    repairs.push(Repair::ControlCharInString);
                }
                '\t' => {
                    out.push_str("\\t");
                    repairs.push(Repair::ControlCharInString);
                }
                c if (c as u32) < 0x20 => {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                    repairs.push(Repair::ControlCharInString);
                }
                c => out.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                quote = Some('"');
                out.push('"');
            }
            '\'' => {
                quote = Some('\'');
                out.push('"');
                repairs.push(Repair::SingleQuotes);
            }
            '{' => {
                closers.push('}');
                out.push(c);
            }
            '[' => {
                closers.push(']');
                out.push(c);
            }
            '}' | ']' => {
                if strip_trailing_comma(&mut out) {
                    repairs.push(Repair::TrailingComma);
                }
                if closers.last() == Some(&c) {
                    closers.pop();
                }
                out.push(c);
                if closers.is_empty() {
                    if chars[i..].iter().any(|c| !c.is_whitespace()) {
                        repairs.push(Repair::TrailingText);
                    }
                    return out;
                }
            }
            c if c.is_ascii_alphabetic() => {
                let start = i - 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                match word.as_str() {
                    "True" => out.push_str("true"),
                    "False" => out.push_str("false"),
                    "None" => out.push_str("null"),
                    _ => {
                        out.push_str(&word);
                        continue;
                    }
                }
                repairs.push(Repair::PythonLiteral);
            }
            c => out.push(c),
        }
    }
    if quote.is_some() {
        out.push('"');
        repairs.push(Repair::UnclosedString);
    }
    if strip_trailing_comma(&mut out) {
        repairs.push(Repair::TrailingComma);
    }
    if !closers.is_empty() {
        repairs.push(Repair::MissingCloser);
    }
    while let Some(closer) = closers.pop() {
        out.push(closer);
    }
    out
}

/// Removes a `,` (and the blanks after it) at the end of `out`; true if there was one.
fn strip_trailing_comma(out: &mut String) -> bool {
    let trimmed = out.trim_end();
    if trimmed.ends_with(',') {
        let keep = trimmed.len() - 1;
        out.truncate(keep);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `expected` is the value and the repairs, or `None` if the text must be refused.
    fn check(input: &str, expected: Option<(Value, &[Repair])>) {
        let got = parse_lenient(input);
        match expected {
            Some((value, repairs)) => {
                let (got_value, got_repairs) =
                    got.unwrap_or_else(|e| panic!("{input:?} was refused: {e}"));
                assert_eq!(got_value, value, "value of {input:?}");
                assert_eq!(got_repairs, repairs, "repairs of {input:?}");
            }
            None => assert!(got.is_err(), "{input:?} should be refused, got {got:?}"),
        }
    }

    use Repair::*;

    #[test]
    fn repairs() {
        check(r#"{"a": 1}"#, Some((json!({"a": 1}), &[])));
        check(r#"  {"a": [1, 2]}  "#, Some((json!({"a": [1, 2]}), &[])));
        check(r#"{"a": 1,}"#, Some((json!({"a": 1}), &[TrailingComma])));
        check(
            r#"{"a": [1, 2, ], }"#,
            Some((json!({"a": [1, 2]}), &[TrailingComma])),
        );
        check("{'a': 'b'}", Some((json!({"a": "b"}), &[SingleQuotes])));
        check(
            r#"{'cmd': 'echo "hi"'}"#,
            Some((json!({"cmd": "echo \"hi\""}), &[SingleQuotes])),
        );
        check(
            r"{'cmd': 'it\'s'}",
            Some((json!({"cmd": "it's"}), &[SingleQuotes])),
        );
        check(
            "{\"cmd\": \"cat <<EOF\nx\tEOF\"}",
            Some((json!({"cmd": "cat <<EOF\nx\tEOF"}), &[ControlCharInString])),
        );
        check(
            r#"{"cmd": "grep "foo" file.py"}"#,
            Some((json!({"cmd": "grep \"foo\" file.py"}), &[UnescapedQuote])),
        );
        check(
            r#"{"re": "\d+\.py", "ok": "\n"}"#,
            Some((json!({"re": "\\d+\\.py", "ok": "\n"}), &[InvalidEscape])),
        );
        check(
            r#"{"a": True, "b": False, "c": None, "d": true}"#,
            Some((
                json!({"a": true, "b": false, "c": null, "d": true}),
                &[PythonLiteral],
            )),
        );
        check(
            r#"{"name": "bash", "arguments": {"command": "ls"}"#,
            Some((
                json!({"name": "bash", "arguments": {"command": "ls"}}),
                &[MissingCloser],
            )),
        );
        check(
            r#"{"a": "unfinished"#,
            Some((json!({"a": "unfinished"}), &[UnclosedString, MissingCloser])),
        );
        check(
            r#"{"a": [1, 2"#,
            Some((json!({"a": [1, 2]}), &[MissingCloser])),
        );
        check(
            r#"{"a": 1}} and some words"#,
            Some((json!({"a": 1}), &[TrailingText])),
        );
        check(
            "```json\n{\"a\": 1}\n```",
            Some((json!({"a": 1}), &[CodeFence])),
        );
        check(
            "```\n{'a': 1,}\n```",
            Some((json!({"a": 1}), &[CodeFence, TrailingComma, SingleQuotes])),
        );
        check(
            "{'a': 'x\ny', 'b': [True,],}",
            Some((
                json!({"a": "x\ny", "b": [true]}),
                &[
                    TrailingComma,
                    SingleQuotes,
                    ControlCharInString,
                    PythonLiteral,
                ],
            )),
        );
        // Refused: nothing JSON-like, or slips the pass does not guess at.
        check("", None);
        check("hello world", None);
        check(r#"{"a" 1}"#, None);
        check(r#"{"a": undefined}"#, None);
        check(r#"{a: 1}"#, None);
    }
}
