//! Real files: a seeded sample of 200 candidates of a standard-library module re-parses as a whole
//! file and compiles with CPython; the same re-parse check on samples of this crate's Rust sources.

use std::io::Write;
use std::process::{Command, Stdio};

use mutate::{candidates, parse_check, sample, Language, Mutation};

const PYTHON: &str = "/usr/bin/python3";

/// Each mutant, applied to the whole file, must parse: the engine's own check only re-parses the
/// statement around the edit, so this confirms it is not too lenient.
fn assert_all_reparse(language: Language, file: &str, source: &str, mutations: &[Mutation]) {
    for mutation in mutations {
        let mutant = mutation.apply(source).unwrap();
        if let Err(error) = parse_check(language, file, &mutant) {
            panic!("{mutation:?} gives an unparsable file: {error}");
        }
    }
}

#[test]
fn stdlib_module_mutants_parse_and_compile() {
    let output = Command::new(PYTHON)
        .args([
            "-c",
            "import sys, textwrap; sys.stdout.write(textwrap.__file__)",
        ])
        .output()
        .expect("/usr/bin/python3 runs");
    let path = String::from_utf8(output.stdout).unwrap();
    let source = std::fs::read_to_string(&path).unwrap();
    let all = candidates(Language::Python, "textwrap.py", &source).unwrap();
    assert!(all.len() > 300, "only {} candidates in {path}", all.len());
    for operator in mutate::Operator::ALL {
        assert!(
            all.iter().any(|mutation| mutation.operator == operator),
            "no {operator} candidate in {path}"
        );
    }
    let chosen = sample(&all, 2026, 200, None);
    assert_eq!(chosen.len(), 200);
    assert_all_reparse(Language::Python, "textwrap.py", &source, &chosen);
    let mutants: Vec<String> = chosen
        .iter()
        .map(|mutation| mutation.apply(&source).unwrap())
        .collect();
    let script = r#"
import json, sys
failures = []
for index, text in enumerate(json.load(sys.stdin)):
    try:
        compile(text, "mutant.py", "exec")
    except SyntaxError as error:
        failures.append(f"{index}: {error}")
print(json.dumps(failures))
"#;
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&mutants).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let failures: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    let described: Vec<String> = failures
        .iter()
        .map(|failure| {
            let index: usize = failure.split(':').next().unwrap().parse().unwrap();
            format!("{failure}\n  {:?}", chosen[index])
        })
        .collect();
    assert!(described.is_empty(), "{}", described.join("\n"));
}

#[test]
fn own_rust_sources_mutants_parse() {
    let files = [
        ("lib.rs", include_str!("../../src/lib.rs")),
        ("common.rs", include_str!("../../src/common.rs")),
        ("python/mod.rs", include_str!("../../src/python/mod.rs")),
        (
            "python/expressions.rs",
            include_str!("../../src/python/expressions.rs"),
        ),
        (
            "python/statements.rs",
            include_str!("../../src/python/statements.rs"),
        ),
        ("rust.rs", include_str!("../../src/rust.rs")),
        ("sample.rs", include_str!("../../src/sample.rs")),
        ("functions.rs", include_str!("../../src/functions.rs")),
    ];
    let mut total = 0;
    for (file, source) in files {
        let all = candidates(Language::Rust, file, source).unwrap();
        assert_all_reparse(Language::Rust, file, source, &sample(&all, 7, 40, None));
        // Test modules are never mutated.
        assert!(all.iter().all(|mutation| mutation
            .function
            .as_deref()
            .is_some_and(|function| !function.starts_with("tests::"))));
        total += all.len();
    }
    assert!(total > 300, "only {total} candidates");
}
