//! Issue texts written from a bug's failing behaviour, the way a user would report it: what they
//! called, what they got, what they expected, the error they saw.
//!
//! An issue never names the changed file or line, never quotes a test or the diff, never gives
//! the fix. Wording and structure vary with a seeded choice among several openings, layouts and
//! phrasings; [`leaks`] checks the result and the writer falls back to a blander text rather than
//! ship a leak.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// A seeded choice among `items` (non-empty).
pub(crate) fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

/// What the issue writer knows about the bug.
#[derive(Clone, Debug)]
pub struct IssueFacts {
    pub project: String,
    /// The top-level import name, e.g. `toolz`.
    pub package: String,
    /// How a user reaches the function, e.g. `toolz.groupby` or `Foo.bar` (never a module path).
    pub public_name: String,
    /// Failure message of the first failing test (first line used).
    pub message: Option<String>,
    pub n_failing: usize,
    /// Strings that must not appear: the file path, its dotted module path, the line.
    pub forbidden: Vec<String>,
}

/// Turns a failure message into (got, expected, error line) where the message allows.
fn read_message(message: &str) -> (Option<String>, Option<String>, Option<String>) {
    let first = message.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("AssertionError: ").unwrap_or(first);
    if let Some(rest) = first.strip_prefix("assert ") {
        for op in [" == ", " != "] {
            if let Some((left, right)) = rest.split_once(op) {
                if op == " == " && left.len() < 160 && right.len() < 160 && !left.contains('(') {
                    return (
                        Some(left.trim().to_string()),
                        Some(right.trim().to_string()),
                        None,
                    );
                }
            }
        }
        return (None, None, None);
    }
    if first.starts_with("assertion `left == right` failed") {
        let mut got = None;
        let mut expected = None;
        for line in message.lines() {
            if let Some(v) = line.trim().strip_prefix("left: ") {
                got = Some(v.to_string());
            }
            if let Some(v) = line.trim().strip_prefix("right: ") {
                expected = Some(v.to_string());
            }
        }
        return (got, expected, None);
    }
    let is_error = first.split(':').next().is_some_and(|name| {
        name.ends_with("Error") || name.ends_with("Exception") || name.ends_with("Warning")
    });
    if is_error && first.len() < 240 {
        return (None, None, Some(first.to_string()));
    }
    (None, None, None)
}

fn scrub(text: &str, forbidden: &[String]) -> String {
    let mut out = text.to_string();
    for f in forbidden.iter().filter(|f| f.len() > 2) {
        out = out.replace(f.as_str(), "…");
    }
    out
}

/// Whether `text` names any forbidden string (case-sensitive for paths, which is how they'd be
/// quoted).
pub fn leaks(text: &str, forbidden: &[String]) -> Option<String> {
    forbidden
        .iter()
        .filter(|f| f.len() > 2)
        .find(|f| text.contains(f.as_str()))
        .cloned()
}

const OPENINGS: &[&str] = &[
    "I think I found a bug in {call}.",
    "{call} seems to be returning the wrong thing.",
    "Something is off with {call} in {project}.",
    "After upgrading {project}, {call} started misbehaving for me.",
    "Hi! I ran into a problem with {call}.",
    "Unexpected behaviour from {call}",
    "Possible regression in {call}",
    "I'm using {project} and {call} doesn't do what the docs say.",
];

const GOT_EXPECTED: &[&str] = &[
    "I got `{got}` but expected `{expected}`.",
    "It returns `{got}`; I would expect `{expected}`.",
    "The result is `{got}` instead of `{expected}`.",
    "Expected: `{expected}`\nActual: `{got}`",
    "I expected `{expected}`, but what came back was `{got}`.",
];

const ERRORS: &[&str] = &[
    "It fails with:\n\n```\n{error}\n```",
    "I get this error:\n\n    {error}",
    "Instead of working, it raises `{error}`.",
    "Error I see:\n```\n{error}\n```",
];

const VAGUE: &[&str] = &[
    "The output is not what the documentation describes for some inputs.",
    "For some inputs the result is wrong; it used to work.",
    "It gives incorrect results in cases that look ordinary to me.",
    "The behaviour looks broken for common inputs.",
];

const CLOSINGS: &[&str] = &[
    "",
    "\n\nCould someone take a look?",
    "\n\nThanks!",
    "\n\nHappy to provide more details if needed.",
    "\n\nThis breaks my code that depends on it.",
    "\n\nIs this intended?",
];

fn fill(template: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in pairs {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

/// Writes an issue for `facts`, seeded.
pub fn write_issue(facts: &IssueFacts, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let call = format!("`{}()`", facts.public_name);
    let (got, expected, error) = facts
        .message
        .as_deref()
        .map(read_message)
        .unwrap_or((None, None, None));
    let (got, expected, error) = (
        got.map(|g| scrub(&g, &facts.forbidden)),
        expected.map(|e| scrub(&e, &facts.forbidden)),
        error.map(|e| scrub(&e, &facts.forbidden)),
    );
    let opening = fill(
        pick(&mut rng, OPENINGS),
        &[("call", &call), ("project", &facts.project)],
    );
    let symptom = match (&got, &expected, &error) {
        (Some(got), Some(expected), _) => fill(
            pick(&mut rng, GOT_EXPECTED),
            &[("got", got), ("expected", expected)],
        ),
        (_, _, Some(error)) => fill(pick(&mut rng, ERRORS), &[("error", error)]),
        _ => pick(&mut rng, VAGUE).to_string(),
    };
    let scope = if facts.n_failing > 3 && rng.next_u32() % 2 == 0 {
        format!(
            " It seems to affect several different inputs, not just one ({} cases in my checks).",
            facts.n_failing
        )
    } else {
        String::new()
    };
    let closing = pick(&mut rng, CLOSINGS);
    let text = match rng.next_u32() % 3 {
        0 => format!("{opening}\n\n{symptom}{scope}{closing}"),
        1 => format!(
            "### Description\n{opening}\n\n### What happens\n{symptom}{scope}\n\n### Environment\n{} {} from PyPI sources{closing}",
            facts.project, "(pinned version)"
        ),
        _ => format!("**{}: problem with {call}**\n\n{symptom}\n\n{opening}{scope}{closing}", facts.package),
    };
    match leaks(&text, &facts.forbidden) {
        None => text,
        Some(_) => scrub(
            &format!("{call} gives wrong results.\n\n{symptom}"),
            &facts.forbidden,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(message: Option<&str>) -> IssueFacts {
        IssueFacts {
            project: "toolz".into(),
            package: "toolz".into(),
            public_name: "toolz.groupby".into(),
            message: message.map(String::from),
            n_failing: 5,
            forbidden: vec![
                "toolz/itertoolz.py".into(),
                "toolz.itertoolz".into(),
                "line 88".into(),
            ],
        }
    }

    #[test]
    fn messages_become_symptoms() {
        for (message, needles) in [
            (
                Some("assert {1: [1]} == {1: [1, 3]}\n +  where x = f()"),
                vec!["`{1: [1]}`", "`{1: [1, 3]}`"],
            ),
            (
                Some("AssertionError: assert 'a-b' == 'a_b'"),
                vec!["`'a-b'`", "`'a_b'`"],
            ),
            (
                Some("TypeError: 'int' object is not iterable"),
                vec!["TypeError: 'int' object is not iterable"],
            ),
            (
                Some("assertion `left == right` failed\nleft: 2\nright: 3"),
                vec!["`2`", "`3`"],
            ),
        ] {
            for seed in 0..8 {
                let text = write_issue(&facts(message), seed);
                for needle in &needles {
                    assert!(
                        text.contains(needle),
                        "seed {seed}: {needle} not in\n{text}"
                    );
                }
                assert!(text.contains("groupby"), "{text}");
                assert!(!text.contains("where x = f()"), "quotes the test: {text}");
            }
        }
    }

    #[test]
    fn issues_vary_and_never_leak() {
        let mut texts = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let mut f = facts(Some("ValueError: bad value in toolz/itertoolz.py line 88"));
            f.n_failing = (seed % 7) as usize;
            let text = write_issue(&f, seed);
            assert_eq!(leaks(&text, &f.forbidden), None, "{text}");
            texts.insert(text);
        }
        assert!(texts.len() >= 20, "only {} distinct texts", texts.len());
        let first_lines: std::collections::BTreeSet<String> = texts
            .iter()
            .map(|t| t.lines().next().unwrap().to_string())
            .collect();
        assert!(first_lines.len() >= 6, "{first_lines:?}");
    }
}
