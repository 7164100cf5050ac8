//! Chat templates: the Jinja template of a checkpoint rendered with minijinja so that the output
//! is byte-identical to transformers' `apply_chat_template` (jinja2 with `trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string methods, and a `tojson` that is Python's
//! `json.dumps(ensure_ascii=False)`; minijinja's own `tojson` HTML-escapes and must not be used).

use std::path::Path;

use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde_json::{Map, Value as Json};

use crate::model::read_json;
use crate::{Error, Result};

const DEFAULT: &str = "default";
const TOOL_USE: &str = "tool_use";

/// A checkpoint's chat template(s) and the special tokens they may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    has_tool_use: bool,
    special_tokens: Map<String, Json>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("has_tool_use", &self.has_tool_use)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// One template used for every conversation.
    pub fn new(source: &str) -> Result<Self> {
        Self::from_named(vec![(DEFAULT.to_string(), source.to_string())], Map::new())
    }

    fn from_named(
        templates: Vec<(String, String)>,
        special_tokens: Map<String, Json>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(false)
                .build()
                .map_err(|e| Error::Template(e.to_string()))?,
        );
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_filter);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        let mut has_default = false;
        let mut has_tool_use = false;
        for (name, source) in templates {
            has_default |= name == DEFAULT;
            has_tool_use |= name == TOOL_USE;
            env.add_template_owned(name.clone(), source)
                .map_err(|e| Error::Template(format!("template `{name}`: {e:#}")))?;
        }
        if !has_default {
            return Err(Error::Template("no `default` chat template".into()));
        }
        Ok(Self {
            env,
            has_tool_use,
            special_tokens,
        })
    }

    /// The chat template of the checkpoint in `dir`: `chat_template.jinja` if present (newer
    /// transformers save it there), else `chat_template` of `tokenizer_config.json` (a string or
    /// a list of `{name, template}`).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            Json::Object(Map::new())
        };
        let special_tokens = special_tokens_of(&config);
        let jinja_path = dir.join("chat_template.jinja");
        let templates = if jinja_path.is_file() {
            let source =
                std::fs::read_to_string(&jinja_path).map_err(|e| Error::io(&jinja_path, e))?;
            vec![(DEFAULT.to_string(), source)]
        } else {
            match config.get("chat_template") {
                Some(Json::String(source)) => vec![(DEFAULT.to_string(), source.clone())],
                Some(Json::Array(list)) => list
                    .iter()
                    .map(|entry| {
                        let name = entry.get("name").and_then(Json::as_str);
                        let source = entry.get("template").and_then(Json::as_str);
                        match (name, source) {
                            (Some(n), Some(s)) => Ok((n.to_string(), s.to_string())),
                            _ => Err(Error::Template(format!(
                                "{}: chat_template entries need `name` and `template`",
                                config_path.display()
                            ))),
                        }
                    })
                    .collect::<Result<Vec<_>>>()?,
                _ => {
                    return Err(Error::Template(format!(
                        "{}: no chat template (neither chat_template.jinja nor a `chat_template` entry)",
                        dir.display()
                    )))
                }
            }
        };
        Self::from_named(templates, special_tokens)
    }

    /// Renders a conversation. `messages` and `tools` are OpenAI/transformers-style JSON values;
    /// `extra` adds template variables (for example `enable_thinking`).
    pub fn render(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
        extra: &Map<String, Json>,
    ) -> Result<String> {
        let name = if tools.is_some() && self.has_tool_use {
            TOOL_USE
        } else {
            DEFAULT
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|e| Error::Template(e.to_string()))?;
        let mut context = self.special_tokens.clone();
        context.insert("messages".into(), Json::Array(messages.to_vec()));
        context.insert(
            "tools".into(),
            tools.map_or(Json::Null, |t| Json::Array(t.to_vec())),
        );
        context.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );
        for (key, value) in extra {
            context.insert(key.clone(), value.clone());
        }
        template
            .render(Value::from(minijinja::value::Serde(&context)))
            .map_err(|e| Error::Template(format!("{e:#}")))
    }
}

/// `bos_token`, `eos_token`, `pad_token`, `unk_token` as strings (entries may be strings or
/// `{"content": ...}` objects).
fn special_tokens_of(config: &Json) -> Map<String, Json> {
    let mut out = Map::new();
    for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        let value = match config.get(key) {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Object(o)) => o.get("content").and_then(Json::as_str).map(String::from),
            _ => None,
        };
        if let Some(v) = value {
            out.insert(key.into(), Json::String(v));
        }
    }
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson_filter(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson separators must be two strings",
            ))
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let style = PyJson {
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    style.write(&json, 0, &mut out);
    Ok(Value::from(out))
}

/// Python's `json.dumps` output format with `ensure_ascii=False`.
pub struct PyJson {
    pub indent: Option<usize>,
    pub item_sep: String,
    pub key_sep: String,
    pub sort_keys: bool,
}

impl Default for PyJson {
    fn default() -> Self {
        Self {
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            sort_keys: false,
        }
    }
}

impl PyJson {
    /// `json.dumps(value, ensure_ascii=False)`.
    pub fn dumps(value: &Json) -> String {
        let mut out = String::new();
        PyJson::default().write(value, 0, &mut out);
        out
    }

    fn newline(&self, level: usize, out: &mut String) {
        if let Some(width) = self.indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', width * level));
        }
    }

    pub fn write(&self, value: &Json, level: usize, out: &mut String) {
        match value {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => out.push_str(&i.to_string()),
                (None, Some(u), _) => out.push_str(&u.to_string()),
                (None, None, Some(f)) => out.push_str(&py_float_repr(f)),
                _ => out.push_str(&n.to_string()),
            },
            Json::String(s) => write_py_string(s, out),
            Json::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    self.write(item, level + 1, out);
                }
                self.newline(level, out);
                out.push(']');
            }
            Json::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &Json)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(&self.item_sep);
                    }
                    self.newline(level + 1, out);
                    write_py_string(key, out);
                    out.push_str(&self.key_sep);
                    self.write(item, level + 1, out);
                }
                self.newline(level, out);
                out.push('}');
            }
        }
    }
}

/// A JSON string literal as Python writes it with `ensure_ascii=False`.
fn write_py_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, positional for exponents in [-4, 16),
/// scientific (`1e+16`, `1e-05`) otherwise; `NaN`/`Infinity` as `json.dumps` writes them.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let body = if (-4..16).contains(&exponent) {
        if exponent >= 0 {
            let int_len = exponent + 1;
            if n <= int_len {
                format!("{digits}{}.0", "0".repeat((int_len - n) as usize))
            } else {
                let (int_part, frac) = digits.split_at(int_len as usize);
                format!("{int_part}.{frac}")
            }
        } else {
            format!("0.{}{digits}", "0".repeat((-exponent - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{rest}e{exp_sign}{:02}", exponent.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_float(f: f64, expected: &str) {
        assert_eq!(py_float_repr(f), expected, "repr({f:e})");
    }

    #[test]
    fn floats_match_python_repr() {
        check_float(0.1, "0.1");
        check_float(1.0, "1.0");
        check_float(-2.5, "-2.5");
        check_float(100.0, "100.0");
        check_float(0.0, "0.0");
        check_float(-0.0, "-0.0");
        check_float(1e15, "1000000000000000.0");
        check_float(1e16, "1e+16");
        check_float(1.5e16, "1.5e+16");
        check_float(0.0001, "0.0001");
        check_float(0.00001, "1e-05");
        check_float(1.25e-7, "1.25e-07");
        check_float(123456789.123, "123456789.123");
        check_float(1e300, "1e+300");
        check_float(f64::NAN, "NaN");
        check_float(f64::NEG_INFINITY, "-Infinity");
    }

    fn check_json(input: &str, expected: &str) {
        let value: Json = serde_json::from_str(input).unwrap();
        assert_eq!(PyJson::dumps(&value), expected);
    }

    #[test]
    fn json_matches_python_dumps() {
        check_json(
            r#"{"b": 1, "a": [1, 2.0, null]}"#,
            r#"{"b": 1, "a": [1, 2.0, null]}"#,
        );
        check_json(r#""<a href='x'>&</a>""#, r#""<a href='x'>&</a>""#);
        check_json(
            r#""é\u2028\n\t\u0001\u007f""#,
            "\"é\u{2028}\\n\\t\\u0001\u{7f}\"",
        );
        check_json(
            r#"{"q": "say \"hi\" \\ bye"}"#,
            r#"{"q": "say \"hi\" \\ bye"}"#,
        );
        check_json("[]", "[]");
        check_json("{}", "{}");
    }

    fn check_render(template: &str, context_json: &str, expected: &str) {
        let context: Map<String, Json> = serde_json::from_str(context_json).unwrap();
        let chat = ChatTemplate::new(template).unwrap();
        let messages: Vec<Json> = context
            .get("messages")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let rendered = chat.render(&messages, None, false, &context).unwrap();
        assert_eq!(rendered, expected);
    }

    #[test]
    fn jinja_features_the_templates_use() {
        check_render(
            "{{ x | tojson }}",
            r#"{"x": {"k": "<&>"}}"#,
            r#"{"k": "<&>"}"#,
        );
        check_render(
            "{{ x | tojson(indent=2) }}",
            r#"{"x": {"k": [1]}}"#,
            "{\n  \"k\": [\n    1\n  ]\n}",
        );
        check_render("{{ 'a<b>c'.split('<')[1].rstrip('>c') }}", "{}", "b");
        check_render(
            "{%- for m in messages[::-1] %}{{ m }}{% endfor %}",
            r#"{"messages": [1, 2, 3]}"#,
            "321",
        );
        check_render(
            "{% set ns = namespace(n=0) %}{% for i in [1,2] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
            "{}",
            "3",
        );
        check_render("  {% if true %}\nx\n  {% endif %}\n", "{}", "x\n");
        check_render(
            "{% if 'x'.startswith('x') and 'ab'.endswith('b') %}yes{% endif %}",
            "{}",
            "yes",
        );
    }

    #[test]
    fn raise_exception_is_an_error() {
        let chat = ChatTemplate::new("{{ raise_exception('bad role') }}").unwrap();
        let err = chat.render(&[], None, false, &Map::new()).unwrap_err();
        assert!(err.to_string().contains("bad role"), "{err}");
    }
}
