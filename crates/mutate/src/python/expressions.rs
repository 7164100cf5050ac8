//! Python generators that rewrite one expression: operator flips, constants, operand swaps,
//! unwrapped calls and off-by-one moves, with the precedence rules that keep their meaning.

use tree_sitter::Node;

use crate::common::{children_with_fields, code_children, looks_like_index, shift_integer, Sink};
use crate::Operator;

pub(super) fn flip_comparison(sink: &mut Sink, node: Node) {
    let mut cursor = node.walk();
    let operators: Vec<Node> = node
        .children_by_field_name("operators", &mut cursor)
        .collect();
    for operator in operators {
        let flips: &[&str] = match sink.text(operator) {
            "<" => &["<=", ">"],
            "<=" => &["<", ">="],
            ">" => &[">=", "<"],
            ">=" => &[">", "<="],
            "==" => &["!="],
            "!=" => &["=="],
            "in" => &["not in"],
            "is" => &["is not"],
            // Aliased two-word operators keep whatever spacing the source had; compare words.
            text if text.split_whitespace().eq(["not", "in"]) => &["in"],
            text if text.split_whitespace().eq(["is", "not"]) => &["is"],
            _ => &[],
        };
        for flip in flips {
            sink.replace(Operator::FlipComparison, operator, *flip);
        }
    }
}

pub(super) fn is_string(node: Node) -> bool {
    matches!(node.kind(), "string" | "concatenated_string")
}

/// A string literal, or arithmetic that builds one (`"-" * n`, `"%d" % x`, `"a" + b`).
pub(super) fn is_text(sink: &Sink, node: Node) -> bool {
    if is_string(node) {
        return true;
    }
    let (Some(left), Some(operator), Some(right)) = (
        node.child_by_field_name("left"),
        node.child_by_field_name("operator"),
        node.child_by_field_name("right"),
    ) else {
        return node.kind() == "parenthesized_expression"
            && code_children(node)
                .first()
                .is_some_and(|inner| is_text(sink, *inner));
    };
    node.kind() == "binary_operator"
        && matches!(sink.text(operator), "+" | "*" | "%")
        && (is_text(sink, left) || is_text(sink, right))
}

pub(super) fn flip_arithmetic(sink: &mut Sink, node: Node) {
    let (Some(left), Some(operator), Some(right)) = (
        node.child_by_field_name("left"),
        node.child_by_field_name("operator"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    // String concatenation, repetition and %-formatting would only raise a TypeError.
    let text_operand = is_text(sink, left) || is_text(sink, right);
    let flips: &[&str] = match sink.text(operator) {
        "+" | "*" if text_operand => &[],
        "%" if is_text(sink, left) => &[],
        "+" => &["-"],
        "-" => &["+"],
        "*" => &["/"],
        "/" => &["*"],
        "//" => &["/", "%"],
        "%" => &["//"],
        "**" => &["*"],
        "<<" => &[">>"],
        ">>" => &["<<"],
        "&" => &["|"],
        "|" => &["&"],
        "^" => &["|"],
        _ => &[],
    };
    for flip in flips {
        sink.replace(Operator::FlipArithmetic, operator, *flip);
    }
}

pub(super) fn flip_augmented(sink: &mut Sink, node: Node) {
    let (Some(operator), Some(right)) = (
        node.child_by_field_name("operator"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    let flips: &[&str] = match sink.text(operator) {
        "+=" | "*=" if is_text(sink, right) => &[],
        "+=" => &["-="],
        "-=" => &["+="],
        "*=" => &["/="],
        "/=" => &["*="],
        "//=" => &["%="],
        "%=" => &["//="],
        "**=" => &["*="],
        "<<=" => &[">>="],
        ">>=" => &["<<="],
        "&=" => &["|="],
        "|=" => &["&="],
        "^=" => &["|="],
        _ => &[],
    };
    for flip in flips {
        sink.replace(Operator::FlipArithmetic, operator, *flip);
    }
}

pub(super) fn flip_boolean(sink: &mut Sink, node: Node) {
    let Some(operator) = node.child_by_field_name("operator") else {
        return;
    };
    let flip = match sink.text(operator) {
        "and" => "or",
        "or" => "and",
        _ => return,
    };
    sink.replace(Operator::FlipBoolean, operator, flip);
}

/// Expressions that bind tighter than any binary operator, so they never need parentheses.
pub(super) fn is_atom(node: Node) -> bool {
    matches!(
        node.kind(),
        "identifier"
            | "attribute"
            | "call"
            | "subscript"
            | "integer"
            | "float"
            | "string"
            | "concatenated_string"
            | "true"
            | "false"
            | "none"
            | "parenthesized_expression"
            | "list"
            | "tuple"
            | "dictionary"
            | "set"
            | "list_comprehension"
            | "dictionary_comprehension"
            | "set_comprehension"
            | "generator_expression"
    )
}

fn parenthesized(sink: &Sink, node: Node) -> String {
    if is_atom(node) {
        sink.text(node).to_string()
    } else {
        format!("({})", sink.text(node))
    }
}

/// How tightly an expression binds (higher is tighter), to decide where parentheses go.
fn precedence(sink: &Sink, node: Node) -> u8 {
    match node.kind() {
        "binary_operator" => node
            .child_by_field_name("operator")
            .map_or(0, |operator| match sink.text(operator) {
                "|" => 5,
                "^" => 6,
                "&" => 7,
                "<<" | ">>" => 8,
                "+" | "-" => 9,
                "*" | "/" | "//" | "%" | "@" => 10,
                "**" => 12,
                _ => 0,
            }),
        "unary_operator" => 11,
        "await" => 13,
        "comparison_operator" => 4,
        "not_operator" => 3,
        _ if is_atom(node) => 14,
        _ => 0,
    }
}

pub(super) fn swap_operands(sink: &mut Sink, node: Node) {
    let (Some(left), Some(operator), Some(right)) = (
        node.child_by_field_name("left"),
        node.child_by_field_name("operator"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    let concatenation = [left, right]
        .iter()
        .any(|operand| is_text(sink, *operand) || operand.kind() == "list");
    let swappable = match sink.text(operator) {
        "-" | "/" | "//" | "%" | "**" | "<<" | ">>" | "@" => true,
        "+" => concatenation,
        _ => false,
    };
    if !swappable || sink.text(left) == sink.text(right) {
        return;
    }
    // Operators associate to the left (`**` to the right, so be strict for it as well): the
    // operand moved to the right needs parentheses at equal precedence, the one moved left only
    // below it.
    let own = precedence(sink, node);
    let power = sink.text(operator) == "**";
    let wrap = |operand: Node, strict: bool| {
        let inner = precedence(sink, operand);
        if inner < own || (strict && inner == own) {
            format!("({})", sink.text(operand))
        } else {
            sink.text(operand).to_string()
        }
    };
    let between = &sink.src[left.end_byte()..right.start_byte()];
    let replacement = format!("{}{between}{}", wrap(right, power), wrap(left, true));
    sink.replace(Operator::SwapOperands, node, replacement);
}

/// Integer literals that an off-by-one mutation already moves by one (range bounds, slice bounds,
/// numeric indices); changing them as constants would repeat those candidates.
fn is_off_by_one_site(sink: &Sink, node: Node) -> bool {
    let Some(parent) = node.parent() else {
        return false;
    };
    match parent.kind() {
        "slice" => true,
        "subscript" => parent.child_by_field_name("subscript") == Some(node),
        "argument_list" => parent
            .parent()
            .is_some_and(|call| is_range_call(sink, call)),
        "unary_operator" => is_off_by_one_site(sink, parent),
        "binary_operator" => is_numeric_offset(sink, parent) && is_off_by_one_site(sink, parent),
        _ => false,
    }
}

fn is_range_call(sink: &Sink, call: Node) -> bool {
    call.kind() == "call"
        && call
            .child_by_field_name("function")
            .is_some_and(|function| sink.text(function) == "range")
}

pub(super) fn change_integer(sink: &mut Sink, node: Node) {
    if is_off_by_one_site(sink, node) {
        return;
    }
    for delta in [-1, 1] {
        if let Some(shifted) = shift_integer(sink.text(node), delta, &["j", "J"]) {
            sink.replace(Operator::ChangeConstant, node, shifted);
        }
    }
}

/// A short plain string literal becomes empty. Long strings are usually messages, and only tests
/// that match messages would notice; f-strings, docstrings, dictionary keys and subscripts are
/// left alone.
pub(super) fn empty_string(sink: &mut Sink, node: Node) {
    let children = code_children(node);
    let (Some(start), Some(end)) = (children.first(), children.last()) else {
        return;
    };
    if start.kind() != "string_start" || end.kind() != "string_end" {
        return;
    }
    let content = &sink.src[start.end_byte()..end.start_byte()];
    let prefix = sink.text(*start).to_ascii_lowercase();
    if content.is_empty()
        || content.chars().count() > 16
        || content.contains('\n')
        || prefix.contains('f')
        || children.iter().any(|child| child.kind() == "interpolation")
    {
        return;
    }
    let Some(parent) = node.parent() else {
        return;
    };
    let keyed = match parent.kind() {
        "concatenated_string" | "subscript" => true,
        "pair" => parent.child_by_field_name("key") == Some(node),
        _ => false,
    };
    if keyed || has_ancestor(node, "raise_statement") {
        return;
    }
    let replacement = format!("{}{}", sink.text(*start), sink.text(*end));
    sink.replace(Operator::ChangeConstant, node, replacement);
}

fn has_ancestor(node: Node, kind: &str) -> bool {
    let mut ancestor = node.parent();
    while let Some(parent) = ancestor {
        if parent.kind() == kind {
            return true;
        }
        ancestor = parent.parent();
    }
    false
}

pub(super) fn negated(sink: &Sink, condition: Node) -> String {
    if condition.kind() == "not_operator" {
        if let Some(argument) = condition.child_by_field_name("argument") {
            return sink.text(argument).to_string();
        }
    }
    if is_atom(condition) || condition.kind() == "comparison_operator" {
        format!("not {}", sink.text(condition))
    } else {
        format!("not ({})", sink.text(condition))
    }
}

/// `f(x)` -> `x` when `f` is a plain name called with one positional argument.
pub(super) fn unwrap_call(sink: &mut Sink, call: Node) {
    let (Some(function), Some(arguments)) = (
        call.child_by_field_name("function"),
        call.child_by_field_name("arguments"),
    ) else {
        return;
    };
    if function.kind() != "identifier"
        || matches!(sink.text(function), "print" | "super" | "range")
        || arguments.kind() != "argument_list"
    {
        return;
    }
    let [argument] = code_children(arguments)[..] else {
        return;
    };
    if matches!(
        argument.kind(),
        "keyword_argument" | "list_splat" | "dictionary_splat" | "parenthesized_list_splat"
    ) {
        return;
    }
    let replacement = parenthesized(sink, argument);
    sink.replace(Operator::RemoveWrapper, call, replacement);
}

/// The expression moved by `delta`: `n` -> `n - 1`, `n - 1` -> `n`, `3` -> `4`, `-1` -> `-2`.
fn shifted(sink: &Sink, node: Node, delta: i64) -> Option<String> {
    let text = sink.text(node);
    let literal = match node.kind() {
        "integer" => text.parse::<i64>().ok(),
        "unary_operator" => match (
            node.child_by_field_name("operator").map(|op| sink.text(op)),
            node.child_by_field_name("argument"),
        ) {
            (Some("-"), Some(argument)) if argument.kind() == "integer" => {
                sink.text(argument).parse::<i64>().ok().map(|value| -value)
            }
            _ => None,
        },
        _ => None,
    };
    if let Some(value) = literal {
        return Some((value + delta).to_string());
    }
    if node.kind() == "binary_operator" {
        let (Some(left), Some(operator), Some(right)) = (
            node.child_by_field_name("left"),
            node.child_by_field_name("operator"),
            node.child_by_field_name("right"),
        ) else {
            return None;
        };
        let sign = match sink.text(operator) {
            "+" => 1,
            "-" => -1,
            _ => 0,
        };
        if let (true, Ok(value)) = (sign != 0, sink.text(right).parse::<i64>()) {
            let offset = sign * value + delta;
            let base = &sink.src[node.start_byte()..left.end_byte()];
            return Some(match offset {
                0 => base.to_string(),
                offset if offset > 0 => format!("{base} + {offset}"),
                offset => format!("{base} - {}", -offset),
            });
        }
    }
    // Appending `± 1` needs no parentheses after an atom or an arithmetic expression that binds
    // at least as tightly as `+` (`a * b - 1`, `a - b - 1`).
    let tight = is_atom(node)
        || node.kind() == "unary_operator"
        || node.kind() == "binary_operator"
            && node.child_by_field_name("operator").is_some_and(|op| {
                matches!(
                    sink.text(op),
                    "+" | "-" | "*" | "/" | "//" | "%" | "@" | "**"
                )
            });
    let base = if tight {
        text.to_string()
    } else {
        format!("({text})")
    };
    Some(if delta > 0 {
        format!("{base} + {delta}")
    } else {
        format!("{base} - {}", -delta)
    })
}

fn off_by_one(sink: &mut Sink, node: Node) {
    for delta in [-1, 1] {
        if let Some(replacement) = shifted(sink, node, delta) {
            sink.replace(Operator::OffByOne, node, replacement);
        }
    }
}

/// `range(n)` -> `range(n ± 1)`; `range(a, b)` moves `a` and `b`.
pub(super) fn range_off_by_one(sink: &mut Sink, call: Node) {
    let (Some(function), Some(arguments)) = (
        call.child_by_field_name("function"),
        call.child_by_field_name("arguments"),
    ) else {
        return;
    };
    if sink.text(function) != "range" || arguments.kind() != "argument_list" {
        return;
    }
    let arguments = code_children(arguments);
    if arguments.is_empty()
        || arguments.len() > 3
        || arguments.iter().any(|argument| {
            argument.kind().contains("splat") || argument.kind() == "keyword_argument"
        })
    {
        return;
    }
    let bounds = if arguments.len() == 1 {
        &arguments[..1]
    } else {
        &arguments[..2]
    };
    for bound in bounds {
        off_by_one(sink, *bound);
    }
}

/// Slice bounds ±1 (`x[a:b]` -> `x[a:b - 1]`), and an index ±1 when it is a number or has an
/// index-like name.
pub(super) fn subscript_off_by_one(sink: &mut Sink, node: Node) {
    let mut cursor = node.walk();
    let subscripts: Vec<Node> = node
        .children_by_field_name("subscript", &mut cursor)
        .collect();
    let [subscript] = subscripts[..] else {
        return;
    };
    if subscript.kind() == "slice" {
        // Bounds are the expressions before the second colon (start, stop), not the step.
        let mut colons = 0;
        for (_, child) in children_with_fields(subscript) {
            if child.kind() == ":" {
                colons += 1;
            } else if child.is_named() && colons < 2 && !child.kind().contains("comment") {
                off_by_one(sink, child);
            }
        }
        return;
    }
    let index_like = match subscript.kind() {
        "integer" | "unary_operator" | "binary_operator" => is_numeric_index(sink, subscript),
        "identifier" => looks_like_index(sink.text(subscript)),
        _ => false,
    };
    if index_like {
        off_by_one(sink, subscript);
    }
}

/// Numeric-looking subscripts: a literal, a negated literal, or `x ± literal`.
fn is_numeric_index(sink: &Sink, node: Node) -> bool {
    match node.kind() {
        "integer" => true,
        "unary_operator" => node
            .child_by_field_name("argument")
            .is_some_and(|argument| argument.kind() == "integer"),
        "binary_operator" => is_numeric_offset(sink, node),
        _ => false,
    }
}

/// `x + 1`, `x - 2`: an addition or subtraction of an integer literal.
fn is_numeric_offset(sink: &Sink, node: Node) -> bool {
    node.child_by_field_name("operator")
        .is_some_and(|op| matches!(sink.text(op), "+" | "-"))
        && node
            .child_by_field_name("right")
            .is_some_and(|right| right.kind() == "integer")
}
