//! Trimming a Python test file to the tests that matter: the gold answer of a unit-test
//! generation instance is the project's own test file, which can be thousands of lines long
//! (more-itertools' `tests/test_more.py` is about 6,000), more than an agent's context holds, when
//! only the few tests that kill the kept mutants are needed.
//!
//! Top-level test functions and test methods of top-level classes whose name is not in `keep` are
//! removed, with their decorators; everything else stays (imports, helpers, fixtures, constants,
//! classes and their other methods), so the tests that remain see what they saw before. A name is
//! matched bare (`test_x`, not `Class::test_x`): a method kept in one class is kept in every
//! class, since a class may inherit it from another. The caller validates the result (it must
//! still pass on the original code and kill every mutant) and falls back to the whole file if
//! not.

use std::collections::BTreeSet;

use tree_sitter::Node;

use crate::common::{self, code_children};
use crate::{Language, Result};

/// `source` with the test functions and methods named outside `keep` removed; `None` if nothing
/// would be removed. A top-level class that loses every test method it defines goes as a whole
/// when it is not in `classes` (the classes that hold a kept test, perhaps an inherited one) and
/// its name appears nowhere else in the file.
pub fn keep_python_tests(
    source: &str,
    keep: &BTreeSet<String>,
    classes: &BTreeSet<String>,
) -> Result<Option<String>> {
    let mut parser = common::parser(Language::Python)?;
    let tree = common::parse(&mut parser, Language::Python, "<test file>", source)?;
    // Byte ranges to cut, and where a class body emptied by the cuts needs a `pass`.
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    let mut passes: Vec<(usize, String)> = Vec::new();
    for item in code_children(tree.root_node()) {
        let (outer, definition) = unwrap_decorated(item);
        match definition.kind() {
            "function_definition" if is_unwanted(definition, source, keep) => {
                cuts.push(line_span(source, outer));
            }
            "class_definition" => {
                let Some(body) = definition.child_by_field_name("body") else {
                    continue;
                };
                let members: Vec<Node> = code_children(body);
                let removed: Vec<Node> = members
                    .iter()
                    .copied()
                    .filter(|member| {
                        let (_, inner) = unwrap_decorated(*member);
                        inner.kind() == "function_definition" && is_unwanted(inner, source, keep)
                    })
                    .collect();
                if removed.is_empty() {
                    continue;
                }
                let defines_kept_test = members.iter().any(|member| {
                    let (_, inner) = unwrap_decorated(*member);
                    inner.kind() == "function_definition"
                        && name_of(inner, source).is_some_and(|n| keep.contains(n))
                });
                let name = name_of(definition, source).unwrap_or_default();
                let (start, end) = line_span(source, outer);
                if !defines_kept_test
                    && !classes.contains(name)
                    && !mentioned_outside(source, name, start, end)
                {
                    cuts.push((start, end));
                    continue;
                }
                if removed.len() == members.len() {
                    let indent = " ".repeat(members[0].start_position().column);
                    passes.push((line_span(source, members[0]).0, format!("{indent}pass\n")));
                }
                cuts.extend(removed.iter().map(|member| line_span(source, *member)));
            }
            _ => {}
        }
    }
    if cuts.is_empty() {
        return Ok(None);
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            continue;
        }
        out.push_str(&source[at..start]);
        if let Some((_, pass)) = passes.iter().find(|(position, _)| *position == start) {
            out.push_str(pass);
        }
        at = end;
    }
    out.push_str(&source[at..]);
    Ok(Some(collapse_blank_lines(&out)))
}

/// The definition inside a `decorated_definition`, with the node that spans its decorators.
fn unwrap_decorated(node: Node) -> (Node, Node) {
    if node.kind() == "decorated_definition" {
        if let Some(definition) = node.child_by_field_name("definition") {
            return (node, definition);
        }
    }
    (node, node)
}

fn name_of<'s>(definition: Node, source: &'s str) -> Option<&'s str> {
    let name = definition.child_by_field_name("name")?;
    Some(&source[name.start_byte()..name.end_byte()])
}

/// A function named `test*` (pytest's and unittest's default) that is not kept.
fn is_unwanted(definition: Node, source: &str, keep: &BTreeSet<String>) -> bool {
    name_of(definition, source).is_some_and(|name| name.starts_with("test") && !keep.contains(name))
}

/// Whether `name` occurs as a whole identifier in `source` outside `start..end`.
fn mentioned_outside(source: &str, name: &str, start: usize, end: usize) -> bool {
    let is_ident = |c: char| c == '_' || c.is_alphanumeric();
    source.match_indices(name).any(|(at, _)| {
        let before = source[..at].chars().next_back().is_some_and(is_ident);
        let after = source[at + name.len()..]
            .chars()
            .next()
            .is_some_and(is_ident);
        !before && !after && !(start..end).contains(&at)
    })
}

/// From the start of `node`'s first line to the end of its last (its newline included).
fn line_span(source: &str, node: Node) -> (usize, usize) {
    let start = source[..node.start_byte()]
        .rfind('\n')
        .map_or(0, |newline| newline + 1);
    let end = source[node.end_byte()..]
        .find('\n')
        .map_or(source.len(), |newline| node.end_byte() + newline + 1);
    (start, end)
}

/// Runs of more than two blank lines (left where definitions were cut) become two, and the
/// file ends in one newline.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 2 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
    }
    let end = out.trim_end().len();
    out.truncate(end);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    const FILE: &str = r#"import pytest

from pkg import f


def helper(x):
    return f(x)


@pytest.fixture
def value():
    return 3


def test_one(value):
    assert helper(value) == 4


@pytest.mark.parametrize("x", [1, 2])
def test_two(x):
    assert f(x) > x


class TestThings:
    limit = 2

    def setup_method(self):
        self.x = 1

    def test_small(self):
        assert f(self.x) == 2

    @pytest.mark.slow
    def test_big(self):
        assert f(10) == 11


class TestOthers:
    def test_other(self):
        assert True
"#;

    #[test]
    fn unkept_tests_go_and_everything_else_stays() {
        let out = keep_python_tests(FILE, &keep(&["test_two", "test_small"]), &keep(&[]))
            .unwrap()
            .unwrap();
        let expected = r#"import pytest

from pkg import f


def helper(x):
    return f(x)


@pytest.fixture
def value():
    return 3


@pytest.mark.parametrize("x", [1, 2])
def test_two(x):
    assert f(x) > x


class TestThings:
    limit = 2

    def setup_method(self):
        self.x = 1

    def test_small(self):
        assert f(self.x) == 2
"#;
        assert_eq!(out, expected);
        crate::parse_check(Language::Python, "t.py", &out).unwrap();
    }

    #[test]
    fn an_emptied_class_that_another_names_stays() {
        let file = "class TestBase:\n    def test_a(self):\n        pass\n\n\nclass TestChild(TestBase):\n    def test_b(self):\n        pass\n";
        let out = keep_python_tests(file, &keep(&["test_b"]), &keep(&["TestChild"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            "class TestBase:\n    pass\n\n\nclass TestChild(TestBase):\n    def test_b(self):\n        pass\n"
        );
        // Named only as part of a longer name, it goes.
        let file = "X = 'TestBaseline'\n\n\nclass TestBase:\n    def test_a(self):\n        pass\n";
        let out = keep_python_tests(file, &keep(&[]), &keep(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(out, "X = 'TestBaseline'\n");
    }

    #[test]
    fn nothing_to_cut_is_none_and_an_empty_keep_empties_every_test_class() {
        let all = keep(&[
            "test_one",
            "test_two",
            "test_small",
            "test_big",
            "test_other",
        ]);
        assert_eq!(keep_python_tests(FILE, &all, &keep(&[])).unwrap(), None);
        // Both classes hold kept (inherited) tests: they stay, emptied of their own.
        let classes = keep(&["TestThings", "TestOthers"]);
        let out = keep_python_tests(FILE, &keep(&[]), &classes)
            .unwrap()
            .unwrap();
        assert!(!out.contains("def test_"), "{out}");
        assert!(out.contains("def helper") && out.contains("def setup_method"));
        assert!(out.ends_with("class TestOthers:\n    pass\n"), "{out}");
        crate::parse_check(Language::Python, "t.py", &out).unwrap();
    }
}
