//! Helpers shared by the language modules: parsing, the re-parse filter, byte/line arithmetic on
//! the source text, and the raw edit the generators emit.
//!
//! Nothing here knows a grammar's node kinds; that belongs to `python.rs` and `rust.rs`.

use tree_sitter::{Node, Parser, Tree};

use crate::{Error, Language, Operator, Result};

/// A candidate as a generator emits it, before filtering and attribution to a function.
#[derive(Debug, Clone)]
pub(crate) struct RawEdit {
    pub operator: Operator,
    pub start: usize,
    pub end: usize,
    pub replacement: String,
    pub description: String,
}

/// Collects the raw edits of one file.
pub(crate) struct Sink<'s> {
    pub src: &'s str,
    pub edits: Vec<RawEdit>,
}

impl<'s> Sink<'s> {
    pub fn new(src: &'s str) -> Sink<'s> {
        Sink {
            src,
            edits: Vec::new(),
        }
    }

    pub fn text(&self, node: Node) -> &'s str {
        &self.src[node.start_byte()..node.end_byte()]
    }

    /// Replace `start..end` by `replacement`.
    pub fn push(
        &mut self,
        operator: Operator,
        start: usize,
        end: usize,
        replacement: impl Into<String>,
        description: impl Into<String>,
    ) {
        self.edits.push(RawEdit {
            operator,
            start,
            end,
            replacement: replacement.into(),
            description: description.into(),
        });
    }

    /// Replace a node's text, described as "`old` -> `new`".
    pub fn replace(&mut self, operator: Operator, node: Node, replacement: impl Into<String>) {
        let replacement = replacement.into();
        let description = change(self.text(node), &replacement);
        self.push(
            operator,
            node.start_byte(),
            node.end_byte(),
            replacement,
            description,
        );
    }
}

/// "`old` -> `new`", each side shortened to its first line.
pub(crate) fn change(old: &str, new: &str) -> String {
    format!("`{}` -> `{}`", shorten(old), shorten(new))
}

/// The first line of `text`, cut to 60 characters, with "..." where something was left out.
pub(crate) fn shorten(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or("").trim_end();
    let mut out: String = first_line.chars().take(60).collect();
    if out.len() < text.trim_end().len() {
        out.push_str("...");
    }
    out
}

pub(crate) fn parser(language: Language) -> Result<Parser> {
    let grammar: tree_sitter::Language = match language {
        Language::Python => tree_sitter_python::LANGUAGE.into(),
        Language::Rust => tree_sitter_rust::LANGUAGE.into(),
    };
    let mut parser = Parser::new();
    parser
        .set_language(&grammar)
        .map_err(|error| Error::Grammar {
            language,
            message: error.to_string(),
        })?;
    Ok(parser)
}

/// Parses `source`; a tree with an ERROR or MISSING node is an error naming the first one.
pub(crate) fn parse(
    parser: &mut Parser,
    language: Language,
    file: &str,
    source: &str,
) -> Result<Tree> {
    let tree = parser.parse(source, None).ok_or_else(|| Error::NoTree {
        file: file.to_string(),
    })?;
    if tree.root_node().has_error() {
        let position = first_error(tree.root_node())
            .map(|node| node.start_position())
            .unwrap_or_default();
        return Err(Error::Parse {
            file: file.to_string(),
            language,
            line: position.row + 1,
            column: position.column + 1,
        });
    }
    Ok(tree)
}

fn first_error(node: Node) -> Option<Node> {
    if node.is_error() || node.is_missing() {
        return Some(node);
    }
    let mut cursor = node.walk();
    let children: Vec<Node> = node.children(&mut cursor).collect();
    children
        .into_iter()
        .filter(|child| child.has_error())
        .find_map(first_error)
}

/// Byte offset -> line.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(at, _)| at + 1));
        LineIndex { starts }
    }

    /// 0-based line of a byte offset.
    pub fn line_of(&self, byte: usize) -> usize {
        self.starts.partition_point(|&start| start <= byte) - 1
    }
}

/// The static filter: does the source still parse after an edit? Only the innermost statement
/// that holds the whole edit is re-parsed, alone in a minimal context (`if 1:` above an indented
/// Python statement, `fn _() { }` around a Rust one): the edits never reach outside that
/// statement, and a file-wide re-parse per candidate costs too much on large files.
pub(crate) struct Checker<'a> {
    parser: Parser,
    language: Language,
    tree: &'a Tree,
    src: &'a str,
    file: &'a str,
}

impl<'a> Checker<'a> {
    pub fn new(
        parser: Parser,
        language: Language,
        tree: &'a Tree,
        src: &'a str,
        file: &'a str,
    ) -> Checker<'a> {
        Checker {
            parser,
            language,
            tree,
            src,
            file,
        }
    }

    /// The span of the innermost statement that starts its line and holds `start..end`; an edit
    /// may run past the statement's end by the rest of its last line (a removed line's newline).
    fn unit(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        let src = self.src;
        let statement_parents: &[&str] = match self.language {
            Language::Python => &["block", "module"],
            Language::Rust => &["block", "source_file", "declaration_list"],
        };
        let mut node = self
            .tree
            .root_node()
            .descendant_for_byte_range(start, start);
        while let Some(candidate) = node {
            // A `match` block holds `case` clauses, which cannot stand alone.
            let is_statement = candidate.kind() != "case_clause"
                && candidate
                    .parent()
                    .is_some_and(|parent| statement_parents.contains(&parent.kind()));
            if is_statement
                && candidate.start_byte() <= start
                && end <= (line_end(src, candidate.end_byte()) + 1).min(src.len())
                && indentation(src, candidate.start_byte()).is_some()
            {
                let from = line_start(src, candidate.start_byte());
                return Some((from, candidate.end_byte().max(end)));
            }
            node = candidate.parent();
        }
        None
    }

    pub fn still_parses(&mut self, start: usize, end: usize, replacement: &str) -> Result<bool> {
        let src = self.src;
        let unit = self.unit(start, end);
        let (from, to) = unit.unwrap_or((0, src.len()));
        let mut snippet = String::with_capacity(to - from + replacement.len() + 16);
        let (prefix, suffix) = match (unit, self.language) {
            (None, _) => ("", ""),
            (Some(_), Language::Python) if src[from..].starts_with([' ', '\t']) => ("if 1:\n", ""),
            (Some(_), Language::Python) => ("", ""),
            (Some(_), Language::Rust) => ("fn _f() {\n", "\n}"),
        };
        snippet.push_str(prefix);
        snippet.push_str(&src[from..start]);
        snippet.push_str(replacement);
        snippet.push_str(&src[end..to]);
        snippet.push_str(suffix);
        let reparsed = self
            .parser
            .parse(&snippet, None)
            .ok_or_else(|| Error::NoTree {
                file: self.file.to_string(),
            })?;
        let ok = !reparsed.root_node().has_error();
        Ok(ok)
    }
}

/// Start of the line holding `byte`.
pub(crate) fn line_start(src: &str, byte: usize) -> usize {
    src[..byte].rfind('\n').map_or(0, |at| at + 1)
}

/// End of the line holding `byte` (the offset of its `\n`, or the end of the source).
pub(crate) fn line_end(src: &str, byte: usize) -> usize {
    src[byte..].find('\n').map_or(src.len(), |at| byte + at)
}

/// The whitespace before `byte` on its line, if only whitespace is there.
pub(crate) fn indentation(src: &str, byte: usize) -> Option<&str> {
    let before = &src[line_start(src, byte)..byte];
    before.trim_start().is_empty().then_some(before)
}

/// The full lines a node occupies, newline included, when nothing but whitespace precedes it on
/// its first line and nothing but whitespace or a comment (`comment` prefix) follows it on its
/// last. Deleting this span removes the node cleanly.
pub(crate) fn whole_lines(src: &str, node: Node, comment: &str) -> Option<(usize, usize)> {
    indentation(src, node.start_byte())?;
    let end = line_end(src, node.end_byte());
    let after = src[node.end_byte()..end].trim_start();
    if !(after.is_empty() || after.starts_with(comment)) {
        return None;
    }
    Some((line_start(src, node.start_byte()), (end + 1).min(src.len())))
}

/// Named children that are not comments.
pub(crate) fn code_children(node: Node) -> Vec<Node> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor)
        .filter(|child| !child.kind().contains("comment"))
        .collect()
}

/// All children with the field name each has in `node`.
pub(crate) fn children_with_fields<'t>(node: Node<'t>) -> Vec<(Option<&'t str>, Node<'t>)> {
    (0..node.child_count())
        .filter_map(|index| {
            node.child(index)
                .map(|child| (node.field_name_for_child(index), child))
        })
        .collect()
}

/// Replacement text for an integer literal moved by `delta`, keeping its radix prefix and suffix
/// (`0x1F`, `10u8`). `None` for literals it does not understand (underscores, floats, overflow) or
/// when the result would be negative.
pub(crate) fn shift_integer(text: &str, delta: i64, suffixes: &[&str]) -> Option<String> {
    let (body, suffix) = suffixes
        .iter()
        .find_map(|suffix| {
            text.strip_suffix(suffix)
                .filter(|body| !body.is_empty())
                .map(|body| (body, *suffix))
        })
        .unwrap_or((text, ""));
    if body.contains('_') {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (prefix, digits, radix) = if let Some(digits) = lower.strip_prefix("0x") {
        (&body[..2], digits, 16)
    } else if let Some(digits) = lower.strip_prefix("0o") {
        (&body[..2], digits, 8)
    } else if let Some(digits) = lower.strip_prefix("0b") {
        (&body[..2], digits, 2)
    } else {
        ("", lower.as_str(), 10)
    };
    let value = i128::from_str_radix(digits, radix).ok()?;
    let shifted = value.checked_add(i128::from(delta))?;
    if shifted < 0 || shifted > i128::from(u64::MAX) {
        return None;
    }
    let digits = match radix {
        16 if body[2..].chars().any(|c| c.is_ascii_uppercase()) => format!("{shifted:X}"),
        16 => format!("{shifted:x}"),
        8 => format!("{shifted:o}"),
        2 => format!("{shifted:b}"),
        _ => shifted.to_string(),
    };
    Some(format!("{prefix}{digits}{suffix}"))
}

/// Names that usually hold an index or a length, for index off-by-one mutations.
pub(crate) fn looks_like_index(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "i", "j", "k", "n", "m", "idx", "index", "pos", "start", "end", "stop", "offset", "count",
        "size", "length", "lo", "hi", "mid", "begin", "first", "last", "left", "right", "width",
    ];
    NAMES.contains(&name)
        || [
            "_idx", "_index", "_pos", "_len", "_start", "_end", "_offset",
        ]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_integer_keeps_radix_and_suffix() {
        let check = |text: &str, delta: i64, expected: Option<&str>| {
            assert_eq!(
                shift_integer(text, delta, &["u8", "usize", "i32"]).as_deref(),
                expected,
                "{text} {delta:+}"
            );
        };
        check("0", 1, Some("1"));
        check("0", -1, None);
        check("10", -1, Some("9"));
        check("0xFF", 1, Some("0x100"));
        check("0xff", -1, Some("0xfe"));
        check("0o7", 1, Some("0o10"));
        check("0b1", 1, Some("0b10"));
        check("7u8", 1, Some("8u8"));
        check("1usize", -1, Some("0usize"));
        check("1_000", 1, None);
        check("1.5", 1, None);
    }

    #[test]
    fn line_index_maps_bytes_to_lines() {
        let lines = LineIndex::new("ab\ncd\n\ne");
        let check = |byte: usize, line: usize| assert_eq!(lines.line_of(byte), line, "byte {byte}");
        check(0, 0);
        check(2, 0);
        check(3, 1);
        check(6, 2);
        check(7, 3);
    }

    #[test]
    fn shorten_marks_cuts() {
        assert_eq!(shorten("a < b"), "a < b");
        assert_eq!(shorten("if x:\n    y"), "if x:...");
        assert_eq!(shorten(&"x".repeat(70)), format!("{}...", "x".repeat(60)));
    }
}
