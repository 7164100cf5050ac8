//! The items of a Rust file that carry tests: `#[cfg(test)]` modules (with the span of their
//! body, so their tests can be moved) and every documented item (its doc comment holds the doc
//! tests rustdoc names after the item's path).

use serde::{Deserialize, Serialize};
use tree_sitter::Node;

use crate::common::code_children;
use crate::rust::is_test_item;
use crate::{common, Language, Result};

/// One item of a Rust file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RustItem {
    /// The tree-sitter kind without `_item` (`function`, `struct`, `mod`, `trait`, `impl`, ...).
    pub kind: String,
    /// The item's name (for `impl` blocks the implemented type, generics dropped).
    pub name: String,
    /// Inline modules, types and traits the item sits in, with its own name: `inner::Type::f`.
    pub path: String,
    /// Marked as test code (`#[cfg(test)]`, `#[test]`, ...).
    pub test: bool,
    /// The item with its attributes and doc comments.
    pub start_byte: usize,
    pub end_byte: usize,
    /// Between the braces of a module, trait or impl body (exclusive of both).
    pub body: Option<(usize, usize)>,
    /// The `///` doc comment, as rustdoc reads it.
    pub docs: Option<String>,
}

/// Every item of `source` at any depth, in source order.
pub fn rust_items(source: &str) -> Result<Vec<RustItem>> {
    let mut parser = common::parser(Language::Rust)?;
    let tree = common::parse(&mut parser, Language::Rust, "<source>", source)?;
    let mut out = Vec::new();
    walk(tree.root_node(), source, "", &mut out);
    Ok(out)
}

fn walk(node: Node, src: &str, scope: &str, out: &mut Vec<RustItem>) {
    for child in code_children(node) {
        let kind = child.kind();
        let Some(short) = kind.strip_suffix("_item") else {
            continue;
        };
        if matches!(short, "attribute" | "inner_attribute") {
            continue;
        }
        let field = if short == "impl" { "type" } else { "name" };
        let name = child
            .child_by_field_name(field)
            .map(|n| {
                src[n.start_byte()..n.end_byte()]
                    .split('<')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        let path = format!("{scope}{name}");
        let body_node = child.child_by_field_name("body");
        let body = body_node
            .filter(|b| src[b.start_byte()..b.end_byte()].starts_with('{'))
            .map(|b| (b.start_byte() + 1, b.end_byte().saturating_sub(1)));
        out.push(RustItem {
            kind: short.to_string(),
            name: name.clone(),
            path: path.clone(),
            test: is_test_item(src, child),
            start_byte: leading_start(src, child),
            end_byte: child.end_byte(),
            body,
            docs: crate::functions::rust_docs(src, child),
        });
        if let Some(body) = body_node {
            if matches!(short, "mod" | "impl" | "trait" | "function") {
                walk(body, src, &format!("{path}::"), out);
            }
        }
    }
}

/// The first byte of the attributes and outer comments right above `item` (inner `//!` docs
/// belong to the enclosing module).
fn leading_start(src: &str, item: Node) -> usize {
    let mut start = item.start_byte();
    let mut previous = item.prev_sibling();
    while let Some(node) = previous {
        let text = &src[node.start_byte()..node.end_byte()];
        let inner = text.starts_with("//!") || text.starts_with("/*!");
        if node.kind() == "attribute_item" || node.kind().ends_with("comment") && !inner {
            start = node.start_byte();
            previous = node.prev_sibling();
        } else {
            break;
        }
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = r#"//! Crate docs.

/// Adds one.
///
/// ```
/// assert_eq!(demo::add_one(1), 2);
/// ```
pub fn add_one(x: u32) -> u32 {
    x + 1
}

pub struct Meter(u32);

impl Meter {
    /// Doubles.
    pub fn double(&self) -> u32 {
        self.0 * 2
    }
}

mod inner {
    pub fn f() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one() {
        assert_eq!(add_one(0), 1);
    }
}
"#;

    #[test]
    fn items_with_paths_docs_and_test_modules() {
        let items = rust_items(SOURCE).unwrap();
        let find = |path: &str| items.iter().find(|i| i.path == path).unwrap();
        let add = find("add_one");
        assert_eq!(add.kind, "function");
        assert!(add
            .docs
            .as_deref()
            .unwrap()
            .contains("assert_eq!(demo::add_one(1), 2);"));
        assert!(SOURCE[add.start_byte..].starts_with("/// Adds one."));
        assert_eq!(find("Meter::double").docs.as_deref(), Some("Doubles."));
        assert_eq!(find("inner::f").kind, "function");
        let tests = find("tests");
        assert!(tests.test && tests.kind == "mod");
        assert!(SOURCE[tests.start_byte..].starts_with("#[cfg(test)]"));
        let (a, b) = tests.body.unwrap();
        assert!(SOURCE[a..b].trim().starts_with("use super::*;"));
        assert!(SOURCE[a..b].trim_end().ends_with('}'));
        assert!(find("tests::one").test);
        assert!(!find("add_one").test);
    }
}
