//! The functions of a source file, with qualified names, spans, signatures and docstrings: the
//! targets of unit-test generation and the unit mutants are grouped by.
//!
//! Python qualified names follow `__qualname__` (`Class.method`, `outer.<locals>.inner`); Rust ones
//! are paths inside the file (`Type::method`, `module::function`, `outer::inner`). Rust test code
//! (`#[cfg(test)]` modules, `#[test]` functions) is not listed: it is never a mutation target.

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Tree};

use crate::common::{children_with_fields, code_children};
use crate::rust::is_test_item;
use crate::{common, Language, Result};

/// A function or method definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub name: String,
    pub qualname: String,
    /// From `def`/`async def` (Python, decorators excluded) or the visibility/`fn` keyword (Rust,
    /// attributes and doc comments excluded) to the end of the body.
    pub start_byte: usize,
    pub end_byte: usize,
    /// 1-based, inclusive.
    pub start_line: usize,
    pub end_line: usize,
    /// The docstring with indentation cleaned as `inspect.cleandoc` does (Python), or the doc
    /// comment lines without their markers and first space (Rust, as rustdoc reads them).
    pub docstring: Option<String>,
    /// The definition up to its body: `def f(a, b=1) -> int:`, `pub fn f(&self) -> u32`.
    pub signature: String,
}

/// Every function of `source`, in source order (an enclosing function before the ones nested in
/// it).
pub fn functions(language: Language, source: &str) -> Result<Vec<Function>> {
    let mut parser = common::parser(language)?;
    let tree = common::parse(&mut parser, language, "<source>", source)?;
    Ok(from_tree(language, &tree, source))
}

pub(crate) fn from_tree(language: Language, tree: &Tree, src: &str) -> Vec<Function> {
    let mut out = Vec::new();
    match language {
        Language::Python => python(tree.root_node(), src, "", &mut out),
        Language::Rust => rust(tree.root_node(), src, "", &mut out),
    }
    out
}

/// The innermost function whose span holds `byte`.
pub(crate) fn innermost(functions: &[Function], byte: usize) -> Option<&Function> {
    functions
        .iter()
        .filter(|function| function.start_byte <= byte && byte < function.end_byte)
        .min_by_key(|function| function.end_byte - function.start_byte)
}

fn text<'s>(src: &'s str, node: Node) -> &'s str {
    &src[node.start_byte()..node.end_byte()]
}

fn function(src: &str, node: Node, name: &str, qualname: String, signature_end: usize) -> Function {
    Function {
        name: name.to_string(),
        qualname,
        start_byte: node.start_byte(),
        end_byte: node.end_byte(),
        start_line: node.start_position().row + 1,
        end_line: node.end_position().row + 1,
        docstring: None,
        signature: src[node.start_byte()..signature_end].trim_end().to_string(),
    }
}

/// `scope` is the qualified-name prefix for definitions directly inside `node`.
fn python(node: Node, src: &str, scope: &str, out: &mut Vec<Function>) {
    for child in code_children(node) {
        match child.kind() {
            "function_definition" => {
                let (Some(name), Some(body)) = (
                    child.child_by_field_name("name"),
                    child.child_by_field_name("body"),
                ) else {
                    continue;
                };
                let name = text(src, name);
                let qualname = format!("{scope}{name}");
                // The signature ends at the `:` before the body (a comment may follow it).
                let colon = children_with_fields(child)
                    .into_iter()
                    .filter(|(_, part)| part.kind() == ":" && part.end_byte() <= body.start_byte())
                    .map(|(_, part)| part.end_byte())
                    .next_back()
                    .unwrap_or(body.start_byte());
                let mut function = function(src, child, name, qualname.clone(), colon);
                function.docstring = python_docstring(src, body);
                out.push(function);
                python(body, src, &format!("{qualname}.<locals>."), out);
            }
            "class_definition" => {
                let (Some(name), Some(body)) = (
                    child.child_by_field_name("name"),
                    child.child_by_field_name("body"),
                ) else {
                    continue;
                };
                python(body, src, &format!("{scope}{}.", text(src, name)), out);
            }
            // Definitions nested in statements (`if`, `try`, decorators, ...) keep the scope.
            _ => python(child, src, scope, out),
        }
    }
}

fn python_docstring(src: &str, body: Node) -> Option<String> {
    let first = *code_children(body).first()?;
    if first.kind() != "expression_statement" {
        return None;
    }
    let [string] = code_children(first)[..] else {
        return None;
    };
    if string.kind() != "string" {
        return None;
    }
    let raw = text(src, string);
    let unprefixed = raw.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let quote = ["\"\"\"", "'''", "\"", "'"]
        .into_iter()
        .find(|quote| unprefixed.starts_with(quote) && unprefixed.len() >= 2 * quote.len())?;
    let content = &unprefixed[quote.len()..unprefixed.len() - quote.len()];
    Some(cleandoc(content))
}

/// `inspect.cleandoc`: strip the first line's leading blanks, remove the common indentation of
/// the other lines, and drop blank lines at both ends.
fn cleandoc(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let margin = lines
        .iter()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut cleaned: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            if index == 0 {
                line.trim_start().to_string()
            } else {
                line.get(margin..).unwrap_or("").trim_end().to_string()
            }
        })
        .collect();
    while cleaned.last().is_some_and(|line| line.trim().is_empty()) {
        cleaned.pop();
    }
    while cleaned.first().is_some_and(|line| line.trim().is_empty()) {
        cleaned.remove(0);
    }
    cleaned.join("\n")
}

fn rust(node: Node, src: &str, scope: &str, out: &mut Vec<Function>) {
    for child in code_children(node) {
        if is_test_item(src, child) {
            continue;
        }
        match child.kind() {
            "function_item" => {
                let (Some(name), Some(body)) = (
                    child.child_by_field_name("name"),
                    child.child_by_field_name("body"),
                ) else {
                    continue;
                };
                let name = text(src, name);
                let qualname = format!("{scope}{name}");
                let mut function = function(src, child, name, qualname.clone(), body.start_byte());
                function.docstring = rust_docs(src, child);
                out.push(function);
                rust(body, src, &format!("{qualname}::"), out);
            }
            "impl_item" | "trait_item" | "mod_item" => {
                let field = if child.kind() == "impl_item" {
                    "type"
                } else {
                    "name"
                };
                let (Some(name), Some(body)) = (
                    child.child_by_field_name(field),
                    child.child_by_field_name("body"),
                ) else {
                    continue;
                };
                // `impl<T> Foo<T>` and `impl Trait for Foo<T>` both name their methods `Foo::`.
                let name = text(src, name).split('<').next().unwrap_or("").trim();
                rust(body, src, &format!("{scope}{name}::"), out);
            }
            _ => rust(child, src, scope, out),
        }
    }
}

/// The `///` and `/** */` comments right above an item (attributes may sit in between).
pub(crate) fn rust_docs(src: &str, item: Node) -> Option<String> {
    let mut lines = Vec::new();
    let mut previous = item.prev_sibling();
    while let Some(node) = previous {
        let comment = text(src, node).trim_end();
        match node.kind() {
            "attribute_item" => {}
            "line_comment" if comment.starts_with("///") && !comment.starts_with("////") => {
                let line = &comment[3..];
                lines.push(line.strip_prefix(' ').unwrap_or(line).to_string());
            }
            "block_comment" if comment.starts_with("/**") && !comment.starts_with("/***") => {
                let inner = comment.trim_start_matches("/**").trim_end_matches("*/");
                for line in inner.lines().rev() {
                    let line = line.trim();
                    let line = line.strip_prefix('*').unwrap_or(line);
                    lines.push(line.strip_prefix(' ').unwrap_or(line).to_string());
                }
            }
            _ => break,
        }
        previous = node.prev_sibling();
    }
    lines.reverse();
    while lines.last().is_some_and(|line| line.trim().is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|line| line.trim().is_empty()) {
        lines.remove(0);
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Where a new first statement of a function's body goes: before `line` (1-based), indented
/// with `indent`. In Python that is after the docstring, so the docstring stays one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyStart {
    pub line: usize,
    pub indent: String,
}

/// The start of the body of the function `qualname` (as [`functions`] names it), or `None` when
/// there is no such function or its body has no statement on a line of its own (a one-line
/// function, an empty Rust block).
pub fn body_start(language: Language, source: &str, qualname: &str) -> Result<Option<BodyStart>> {
    let mut parser = common::parser(language)?;
    let tree = common::parse(&mut parser, language, "<source>", source)?;
    let Some(function) = from_tree(language, &tree, source)
        .into_iter()
        .find(|function| function.qualname == qualname)
    else {
        return Ok(None);
    };
    let kind = match language {
        Language::Python => "function_definition",
        Language::Rust => "function_item",
    };
    let mut node = tree
        .root_node()
        .descendant_for_byte_range(function.start_byte, function.start_byte);
    while let Some(current) = node.filter(|n| n.kind() != kind) {
        node = current.parent();
    }
    let Some(body) = node.and_then(|n| n.child_by_field_name("body")) else {
        return Ok(None);
    };
    let statements = code_children(body);
    let first = match language {
        Language::Python if python_docstring(source, body).is_some() => statements.get(1),
        _ => statements.first(),
    };
    let Some(first) = first else {
        return Ok(None);
    };
    // The statement must begin its line, below the line where the body opens.
    let row = first.start_position().row;
    let line_start = source[..first.start_byte()]
        .rfind('\n')
        .map_or(0, |newline| newline + 1);
    let indent = &source[line_start..first.start_byte()];
    if row == body.start_position().row && language == Language::Rust
        || row == function.start_line - 1
        || !indent.chars().all(|c| c == ' ' || c == '\t')
    {
        return Ok(None);
    }
    Ok(Some(BodyStart {
        line: row + 1,
        indent: indent.to_string(),
    }))
}
