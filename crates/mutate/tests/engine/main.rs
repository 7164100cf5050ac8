//! The mutation engine's tests, data-driven: each case is a source, an operator and the mutated
//! sources expected, written out by hand.

mod api;
mod functions;
mod python;
mod real_files;
mod rust;
mod sample;

use std::collections::BTreeSet;

use mutate::{candidates, candidates_with, Language, Operator, Options};

/// Strips the leading newline and the common indentation of an indented raw string, so test
/// sources can be written in line with the code.
pub fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last().is_some_and(|line| line.trim().is_empty()) {
        lines.pop();
    }
    let margin = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = lines
        .iter()
        .map(|line| line.get(margin..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// The candidates of `operator` in `source`, applied one at a time, must be exactly `expected`
/// (in candidate order).
pub fn check(language: Language, source: &str, operator: Operator, expected: &[&str]) {
    let source = dedent(source);
    let options = Options {
        operators: BTreeSet::from([operator]),
        ..Options::default()
    };
    let actual: Vec<String> = candidates_with(language, "test", &source, &options)
        .unwrap()
        .iter()
        .map(|mutation| mutation.apply(&source).unwrap())
        .collect();
    let expected: Vec<String> = expected.iter().map(|text| dedent(text)).collect();
    if actual != expected {
        let shown: Vec<String> = actual
            .iter()
            .map(|mutant| format!("----\n{mutant}"))
            .collect();
        panic!(
            "{operator} on\n{source}\ngave {} mutants (expected {}):\n{}",
            actual.len(),
            expected.len(),
            shown.join("")
        );
    }
}

/// The 1-based lines where candidates of any operator start must be exactly `expected`: the
/// filters keep everything else untouched.
pub fn check_lines(language: Language, source: &str, expected: &[usize]) {
    let source = dedent(source);
    let mutations = candidates(language, "test", &source).unwrap();
    let lines: BTreeSet<usize> = mutations.iter().map(|mutation| mutation.line).collect();
    let expected: BTreeSet<usize> = expected.iter().copied().collect();
    let shown: Vec<String> = mutations
        .iter()
        .map(|mutation| {
            format!(
                "{}: {} {}",
                mutation.line, mutation.operator, mutation.description
            )
        })
        .collect();
    assert_eq!(
        lines,
        expected,
        "mutated lines of\n{source}\n{}",
        shown.join("\n")
    );
}
