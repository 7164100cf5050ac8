//! The sentinel of the unit-test reward: one extra mutant of the target function that behaves
//! exactly as the original but reads differently (a no-op statement with a comment at the top
//! of its body). A test file that kills it tests the function's text (a hash of the file,
//! `inspect.getsource`, `__code__.co_code`), not its behaviour, and earns nothing, however many
//! real mutants it "kills".
//!
//! The line is added where the body begins (after a Python docstring, with the body's
//! indentation), and one blank line right after the function is removed when there is one, so
//! that the code below it keeps its line numbers (the fast path then only has the function
//! itself to swap). It must never change what the function does: no new name, no call, no
//! side effect.

use mutate::Language;

use crate::instance::{Mutant, TargetFunction};
use crate::patch::FileEdits;

/// The sentinel's mutant id.
pub const SENTINEL_ID: &str = "atomskill-sentinel";

/// The line inserted at the top of the body: a statement that does nothing but changes the
/// function's compiled code, and a comment that changes its text.
fn sentinel_line(language: Language, indent: &str) -> String {
    match language {
        // Unpacking an empty tuple into no target: bytecode, but no local, global or effect.
        Language::Python => format!(
            "{indent}() = ()  # atomskill: a no-op, the function behaves exactly as before\n"
        ),
        Language::Rust => {
            format!("{indent}let _ = (); // atomskill: a no-op, the function behaves exactly as before\n")
        }
    }
}

/// The source of `target`'s file with the sentinel line in its body, or why there is none.
pub fn sentinel_source(language: Language, source: &str, qualname: &str) -> Result<String, String> {
    let start = mutate::body_start(language, source, qualname)
        .map_err(|error| format!("the target file does not parse: {error}"))?
        .ok_or_else(|| format!("`{qualname}` has no body statement on a line of its own"))?;
    let end_line = mutate::functions(language, source)
        .map_err(|error| format!("the target file does not parse: {error}"))?
        .into_iter()
        .find(|function| function.qualname == qualname)
        .map(|function| function.end_line)
        .ok_or_else(|| format!("`{qualname}` is not in the target file"))?;
    let mut lines: Vec<String> = source.split_inclusive('\n').map(String::from).collect();
    // The blank line after the function, if any (`end_line` is 1-based: this is the next one).
    if lines
        .get(end_line)
        .is_some_and(|line| line.trim().is_empty() && line.ends_with('\n'))
        && end_line + 1 < lines.len()
    {
        lines.remove(end_line);
    }
    lines.insert(start.line - 1, sentinel_line(language, &start.indent));
    Ok(lines.concat())
}

/// The sentinel mutant of `target`, whose file's pristine text is `source`.
pub fn sentinel_mutant(
    language: Language,
    source: &str,
    target: &TargetFunction,
) -> Result<Mutant, String> {
    let mutated = sentinel_source(language, source, &target.qualname)?;
    Ok(Mutant {
        id: SENTINEL_ID.to_string(),
        description: "a no-op statement and a comment added to the function's body".into(),
        edits: FileEdits::new().write(target.file.clone(), mutated),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(language: Language, source: &str, qualname: &str, expected: &str) {
        let actual = match sentinel_source(language, source, qualname) {
            Ok(text) => text,
            Err(reason) => format!("none: {reason}"),
        };
        assert_eq!(actual, expected, "{qualname} in\n{source}");
    }

    const PY: &str = r#"import os


def plain(x):
    return x


def documented(
    x,
    y=1,
):
    """Adds.

    More text.
    """
    if x:
        return x + y
    return y
def packed(x): return x

class Box:
    def grow(self, by):
        '''Grows.'''
        return by

    def shrink(self):
        """Only a docstring."""
"#;

    #[test]
    fn python_sentinels() {
        let note = "# atomskill: a no-op, the function behaves exactly as before";
        check(
            Language::Python,
            PY,
            "plain",
            &PY.replacen(
                "    return x\n\n",
                &format!("    () = ()  {note}\n    return x\n"),
                1,
            ),
        );
        // After the docstring, the body's indentation; no blank line follows, so the rest moves.
        check(
            Language::Python,
            PY,
            "documented",
            &PY.replace(
                "    \"\"\"\n    if x:",
                &format!("    \"\"\"\n    () = ()  {note}\n    if x:"),
            ),
        );
        check(
            Language::Python,
            PY,
            "Box.grow",
            &PY.replace(
                "'''Grows.'''\n        return by\n\n",
                &format!("'''Grows.'''\n        () = ()  {note}\n        return by\n"),
            ),
        );
        check(
            Language::Python,
            PY,
            "packed",
            "none: `packed` has no body statement on a line of its own",
        );
        check(
            Language::Python,
            PY,
            "Box.shrink",
            "none: `Box.shrink` has no body statement on a line of its own",
        );
        check(
            Language::Python,
            PY,
            "missing",
            "none: `missing` has no body statement on a line of its own",
        );
    }

    #[test]
    fn rust_sentinels() {
        let source = "fn one() -> u32 { 1 }\n\nimpl S {\n    pub fn two(&self) -> u32 {\n        \
                      let x = 2;\n        x\n    }\n\n    fn three() {}\n}\n";
        let note = "// atomskill: a no-op, the function behaves exactly as before";
        check(
            Language::Rust,
            source,
            "S::two",
            &source
                .replace(
                    "{\n        let x",
                    &format!("{{\n        let _ = (); {note}\n        let x"),
                )
                .replace("    }\n\n    fn three", "    }\n    fn three"),
        );
        check(
            Language::Rust,
            source,
            "one",
            "none: `one` has no body statement on a line of its own",
        );
        check(
            Language::Rust,
            source,
            "S::three",
            "none: `S::three` has no body statement on a line of its own",
        );
    }
}
