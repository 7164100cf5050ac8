//! Procedural bug synthesis: every candidate mutation of a Python or Rust source file, in the spirit
//! of SWE-smith's procedural operators, and a seeded, operator-balanced sample of them.
//!
//! The crate is a pure function of its inputs: it parses text the caller passes (tree-sitter), never
//! reads or writes files, never runs code, keeps no global state, and derives all randomness from
//! the seed given to [`sample`]. Whether a mutant is a real bug (some test goes from pass to fail)
//! is decided by the caller, which runs the test suite; this crate only applies cheap static
//! filters: the mutated file still parses, the text changes, and nothing outside function bodies
//! (or inside docstrings, comments, annotations, decorators, imports, asserts, test code) is touched.

mod common;
mod functions;
mod items;
mod python;
mod rust;
mod sample;
pub mod trim;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use functions::{body_start, functions, BodyStart, Function};
pub use items::{rust_items, RustItem};
pub use sample::sample;

/// Why the crate could not do what was asked. Mutants that are merely useless are not errors:
/// they are filtered out of [`candidates`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{file}: not valid {language} (tree-sitter found a syntax error at line {line}, column \
         {column}); fix the file or leave it out of bug synthesis"
    )]
    Parse {
        file: String,
        language: Language,
        line: usize,
        column: usize,
    },
    #[error("the tree-sitter grammar for {language} cannot be loaded: {message}")]
    Grammar { language: Language, message: String },
    #[error("tree-sitter returned no tree for {file} (parser cancelled or timed out)")]
    NoTree { file: String },
    #[error(
        "mutation of {file} at bytes {start}..{end} does not fit this source (expected `{expected}` \
         there); make candidates from the same text you apply them to"
    )]
    Stale {
        file: String,
        start: usize,
        end: usize,
        expected: String,
    },
    #[error(
        "mutations overlap in {file}: bytes {first_start}..{first_end} and \
         {second_start}..{second_end}; combine only non-overlapping mutations"
    )]
    Overlap {
        file: String,
        first_start: usize,
        first_end: usize,
        second_start: usize,
        second_end: usize,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A source language the engine can mutate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Python,
    Rust,
}

impl Language {
    /// The language of a file by its extension (`.py`, `.rs`), if it is one the engine knows.
    pub fn from_path(path: &str) -> Option<Language> {
        if path.ends_with(".py") {
            Some(Language::Python)
        } else if path.ends_with(".rs") {
            Some(Language::Rust)
        } else {
            None
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Language::Python => "Python",
            Language::Rust => "Rust",
        })
    }
}

/// A kind of procedural bug. The snake_case names (serde, [`Operator::name`]) are stable: yields
/// are reported per operator under these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// `<` -> `<=` / `>`, `==` -> `!=`, `in` -> `not in`, `is` -> `is not`, and back.
    FlipComparison,
    /// `+` <-> `-`, `*` <-> `/`, `//` <-> `%`, `**` -> `*`, `<<` <-> `>>`, `&` <-> `|`, also in
    /// augmented assignments (`+=` -> `-=`).
    FlipArithmetic,
    /// `and` <-> `or`, `&&` <-> `||`.
    FlipBoolean,
    /// Integer literals ±1 (`0` -> `1`), `True` <-> `False`, a short string literal emptied.
    ChangeConstant,
    /// `if c:` -> `if not c:` (also `elif` and conditional expressions; Rust `if !(c)`).
    InvertCondition,
    /// Drop a whole `if` statement, or its `elif`/`else` branch; `a if c else b` -> `a` / `b`.
    RemoveCondition,
    /// Drop a `for` or `while` loop.
    RemoveLoop,
    /// Drop an assignment statement (plain or augmented).
    RemoveAssignment,
    /// `f(x)` -> `x`; a `with` or `try` block replaced by its body.
    RemoveWrapper,
    /// Drop a `return` statement.
    RemoveReturn,
    /// `a - b` -> `b - a` for non-commutative operators.
    SwapOperands,
    /// `range(n)` -> `range(n - 1)` / `range(n + 1)`, slice bounds and indices ±1; Rust `a..b`
    /// <-> `a..=b`.
    OffByOne,
    /// Swap two adjacent statements of one block.
    ShuffleStatements,
}

impl Operator {
    /// Every operator, in the order candidates of one position are listed.
    pub const ALL: [Operator; 13] = [
        Operator::FlipComparison,
        Operator::FlipArithmetic,
        Operator::FlipBoolean,
        Operator::ChangeConstant,
        Operator::InvertCondition,
        Operator::RemoveCondition,
        Operator::RemoveLoop,
        Operator::RemoveAssignment,
        Operator::RemoveWrapper,
        Operator::RemoveReturn,
        Operator::SwapOperands,
        Operator::OffByOne,
        Operator::ShuffleStatements,
    ];

    /// The stable snake_case name, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            Operator::FlipComparison => "flip_comparison",
            Operator::FlipArithmetic => "flip_arithmetic",
            Operator::FlipBoolean => "flip_boolean",
            Operator::ChangeConstant => "change_constant",
            Operator::InvertCondition => "invert_condition",
            Operator::RemoveCondition => "remove_condition",
            Operator::RemoveLoop => "remove_loop",
            Operator::RemoveAssignment => "remove_assignment",
            Operator::RemoveWrapper => "remove_wrapper",
            Operator::RemoveReturn => "remove_return",
            Operator::SwapOperands => "swap_operands",
            Operator::OffByOne => "off_by_one",
            Operator::ShuffleStatements => "shuffle_statements",
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Operator {
    type Err = String;

    fn from_str(name: &str) -> Result<Operator, String> {
        Operator::ALL
            .into_iter()
            .find(|operator| operator.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Operator::ALL.iter().map(|op| op.name()).collect();
                format!(
                    "unknown mutation operator `{name}`; known: {}",
                    names.join(", ")
                )
            })
    }
}

/// One candidate bug: replace `original` at `start_byte..end_byte` of `file` by `replacement`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mutation {
    pub operator: Operator,
    /// The file name the caller passed to [`candidates`], unchanged.
    pub file: String,
    /// Qualified name of the innermost function around the mutation (`Class.method`,
    /// `outer.<locals>.inner`, `Type::method`).
    pub function: Option<String>,
    pub start_byte: usize,
    pub end_byte: usize,
    pub replacement: String,
    pub original: String,
    /// 1-based line of `start_byte`.
    pub line: usize,
    /// What changes, for people and prompts, e.g. "`<` -> `<=`".
    pub description: String,
}

impl Mutation {
    /// The source with this mutation applied. Fails if `source` does not hold `original` at the
    /// mutation's span (the candidate was made from another version of the file).
    pub fn apply(&self, source: &str) -> Result<String> {
        apply_all(source, std::slice::from_ref(self))
    }

    /// A short stable identifier (12 hex digits) of the file, span and replacement, for naming
    /// instances and deduplicating across runs.
    pub fn id(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.file.as_bytes(),
            &self.start_byte.to_le_bytes(),
            &self.end_byte.to_le_bytes(),
            self.replacement.as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.finalize()[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Whether the two mutations touch overlapping bytes (and so cannot be combined).
    pub fn overlaps(&self, other: &Mutation) -> bool {
        self.start_byte < other.end_byte && other.start_byte < self.end_byte
    }
}

/// Applies several mutations of one file at once (a combined bug). They must all have been made
/// from `source` and must not overlap; their order does not matter. The result is not re-parsed:
/// check it with [`parse_check`] if needed.
pub fn apply_all(source: &str, mutations: &[Mutation]) -> Result<String> {
    let mut sorted: Vec<&Mutation> = mutations.iter().collect();
    sorted.sort_by_key(|mutation| (mutation.start_byte, mutation.end_byte));
    for mutation in &sorted {
        if source.get(mutation.start_byte..mutation.end_byte) != Some(mutation.original.as_str()) {
            return Err(Error::Stale {
                file: mutation.file.clone(),
                start: mutation.start_byte,
                end: mutation.end_byte,
                expected: mutation.original.clone(),
            });
        }
    }
    for pair in sorted.windows(2) {
        if pair[0].overlaps(pair[1]) {
            return Err(Error::Overlap {
                file: pair[1].file.clone(),
                first_start: pair[0].start_byte,
                first_end: pair[0].end_byte,
                second_start: pair[1].start_byte,
                second_end: pair[1].end_byte,
            });
        }
    }
    let mut out = String::with_capacity(source.len());
    let mut copied_to = 0;
    for mutation in sorted {
        out.push_str(&source[copied_to..mutation.start_byte]);
        out.push_str(&mutation.replacement);
        copied_to = mutation.end_byte;
    }
    out.push_str(&source[copied_to..]);
    Ok(out)
}

/// Which candidates [`candidates_with`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Enabled operators; the default is all of them.
    pub operators: BTreeSet<Operator>,
    /// Only mutations whose innermost enclosing function has this qualified name.
    pub function: Option<String>,
    /// Only mutations starting on these 1-based lines (inclusive).
    pub lines: Option<(usize, usize)>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            operators: Operator::ALL.into_iter().collect(),
            function: None,
            lines: None,
        }
    }
}

/// Every candidate mutation of `source`, in a deterministic order (by position, then operator,
/// then replacement). `file` is only recorded in each [`Mutation`] and in errors.
pub fn candidates(language: Language, file: &str, source: &str) -> Result<Vec<Mutation>> {
    candidates_with(language, file, source, &Options::default())
}

/// [`candidates`] restricted by `options`.
pub fn candidates_with(
    language: Language,
    file: &str,
    source: &str,
    options: &Options,
) -> Result<Vec<Mutation>> {
    let mut parser = common::parser(language)?;
    let tree = common::parse(&mut parser, language, file, source)?;
    let mut raw = match language {
        Language::Python => python::candidates(&tree, source),
        Language::Rust => rust::candidates(&tree, source),
    };
    raw.retain(|edit| {
        options.operators.contains(&edit.operator)
            && source.get(edit.start..edit.end) != Some(edit.replacement.as_str())
    });
    raw.sort_by(|a, b| {
        (a.start, a.end, a.operator, &a.replacement).cmp(&(
            b.start,
            b.end,
            b.operator,
            &b.replacement,
        ))
    });
    raw.dedup_by(|later, earlier| {
        (later.start, later.end, &later.replacement)
            == (earlier.start, earlier.end, &earlier.replacement)
    });

    let functions = functions::from_tree(language, &tree, source);
    let lines = common::LineIndex::new(source);
    let mut checker = common::Checker::new(parser, language, &tree, source, file);
    let mut out = Vec::new();
    for edit in raw {
        let line = lines.line_of(edit.start) + 1;
        let function = functions::innermost(&functions, edit.start).map(|f| f.qualname.clone());
        if options.function.is_some() && function != options.function {
            continue;
        }
        if let Some((first, last)) = options.lines {
            if line < first || line > last {
                continue;
            }
        }
        if !checker.still_parses(edit.start, edit.end, &edit.replacement)? {
            continue;
        }
        out.push(Mutation {
            operator: edit.operator,
            file: file.to_string(),
            function,
            original: source[edit.start..edit.end].to_string(),
            start_byte: edit.start,
            end_byte: edit.end,
            replacement: edit.replacement,
            line,
            description: edit.description,
        });
    }
    Ok(out)
}

/// Checks that `source` parses without syntax errors (for example a combined mutant made with
/// [`apply_all`]); the error names the first error's position.
pub fn parse_check(language: Language, file: &str, source: &str) -> Result<()> {
    let mut parser = common::parser(language)?;
    common::parse(&mut parser, language, file, source).map(|_| ())
}
