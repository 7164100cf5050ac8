//! The public API around candidates: options, combined bugs, errors, names.

use std::collections::BTreeSet;

use mutate::{
    apply_all, candidates, candidates_with, parse_check, Error, Language, Operator, Options,
};

use crate::dedent;

fn source() -> String {
    dedent(
        r#"
        def f(a, b):
            return a < b

        def g(a, b):
            x = a + b
            return x - 1
        "#,
    )
}

#[test]
fn options_restrict_operators_functions_and_lines() {
    let source = source();
    let only = |options: Options| -> Vec<(usize, Operator)> {
        candidates_with(Language::Python, "m.py", &source, &options)
            .unwrap()
            .iter()
            .map(|mutation| (mutation.line, mutation.operator))
            .collect()
    };
    let in_g = only(Options {
        operators: BTreeSet::from([Operator::FlipArithmetic, Operator::FlipComparison]),
        function: Some("g".to_string()),
        ..Options::default()
    });
    assert_eq!(
        in_g,
        [(5, Operator::FlipArithmetic), (6, Operator::FlipArithmetic)]
    );
    let on_line_2 = only(Options {
        lines: Some((2, 2)),
        ..Options::default()
    });
    assert!(!on_line_2.is_empty());
    assert!(on_line_2.iter().all(|(line, _)| *line == 2));
}

#[test]
fn mutations_combine_when_they_do_not_overlap() {
    let source = source();
    let all = candidates(Language::Python, "m.py", &source).unwrap();
    let pick = |line: usize, operator: Operator| {
        all.iter()
            .find(|mutation| mutation.line == line && mutation.operator == operator)
            .unwrap()
            .clone()
    };
    let first = pick(2, Operator::FlipComparison);
    let second = pick(6, Operator::FlipArithmetic);
    let combined = apply_all(&source, &[second.clone(), first.clone()]).unwrap();
    assert_eq!(
        combined,
        dedent(
            r#"
            def f(a, b):
                return a <= b

            def g(a, b):
                x = a + b
                return x + 1
            "#
        )
    );
    parse_check(Language::Python, "m.py", &combined).unwrap();

    let overlapping = pick(6, Operator::RemoveReturn);
    assert!(second.overlaps(&overlapping));
    assert!(matches!(
        apply_all(&source, &[second.clone(), overlapping]),
        Err(Error::Overlap { .. })
    ));
    // A mutation applied to another text is refused, not silently misapplied.
    assert!(matches!(
        first.apply("def f(a, b):\n    return b\n"),
        Err(Error::Stale { .. })
    ));
    assert_ne!(first.id(), second.id());
    assert_eq!(first.id().len(), 12);
}

#[test]
fn unparsable_source_is_an_error_naming_the_position() {
    let error = candidates(Language::Python, "bad.py", "def f(:\n    return 1\n").unwrap_err();
    assert!(matches!(error, Error::Parse { line: 1, .. }), "{error}");
    assert!(
        error.to_string().starts_with("bad.py: not valid Python"),
        "{error}"
    );
    let error = candidates(Language::Rust, "bad.rs", "fn f() {\n    let x = ;\n}\n").unwrap_err();
    assert!(matches!(error, Error::Parse { line: 2, .. }), "{error}");
    assert!(mutate::functions(Language::Rust, "fn (").is_err());
}

#[test]
fn operator_names_are_stable() {
    let names: Vec<String> = Operator::ALL
        .iter()
        .map(|operator| serde_json::to_string(operator).unwrap())
        .collect();
    assert_eq!(
        names.join(" "),
        "\"flip_comparison\" \"flip_arithmetic\" \"flip_boolean\" \"change_constant\" \
         \"invert_condition\" \"remove_condition\" \"remove_loop\" \"remove_assignment\" \
         \"remove_wrapper\" \"remove_return\" \"swap_operands\" \"off_by_one\" \
         \"shuffle_statements\""
    );
    for operator in Operator::ALL {
        assert_eq!(operator.name().parse::<Operator>(), Ok(operator));
    }
    assert!("flip"
        .parse::<Operator>()
        .unwrap_err()
        .contains("known: flip_comparison"));
    assert_eq!(Language::from_path("a/b.py"), Some(Language::Python));
    assert_eq!(Language::from_path("lib.rs"), Some(Language::Rust));
    assert_eq!(Language::from_path("README.md"), None);
}

#[test]
fn candidates_are_deterministic() {
    let source = source();
    let first = candidates(Language::Python, "m.py", &source).unwrap();
    assert_eq!(
        first,
        candidates(Language::Python, "m.py", &source).unwrap()
    );
    let mut sorted = first.clone();
    sorted.sort_by(|a, b| {
        (a.start_byte, a.end_byte, a.operator, &a.replacement).cmp(&(
            b.start_byte,
            b.end_byte,
            b.operator,
            &b.replacement,
        ))
    });
    assert_eq!(first, sorted);
}
