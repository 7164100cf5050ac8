//! Candidate mutations of Python source (tree-sitter-python), one generator per node kind.
//!
//! Only code inside function bodies is mutated. Never touched: docstrings and other bare string
//! statements, comments, type annotations, parameters and defaults, decorators, imports, `global`,
//! `__all__`, `assert` statements and the `if __name__ == "__main__":` block. The generators only
//! propose text; re-parsing and deduplication happen in `lib.rs`.

use tree_sitter::{Node, Tree};

use crate::common::{
    children_with_fields, code_children, indentation, looks_like_index, shift_integer, shorten,
    whole_lines, RawEdit, Sink,
};
use crate::Operator;

pub(crate) fn candidates(tree: &Tree, src: &str) -> Vec<RawEdit> {
    let mut sink = Sink::new(src);
    walk(&mut sink, tree.root_node(), false);
    sink.edits
}

fn walk(sink: &mut Sink, node: Node, in_body: bool) {
    if excluded(sink, node) {
        return;
    }
    if in_body {
        mutate(sink, node);
    }
    for (field, child) in children_with_fields(node) {
        let child_in_body = match (node.kind(), field) {
            ("function_definition", Some("body")) => true,
            // Signatures, lambda parameters and class bases are interface, not behaviour.
            ("function_definition", _) | ("lambda", Some("parameters")) => continue,
            ("class_definition", Some("superclasses")) => continue,
            _ => in_body,
        };
        walk(sink, child, child_in_body);
    }
}

/// Subtrees never mutated, wherever they are.
fn excluded(sink: &Sink, node: Node) -> bool {
    match node.kind() {
        "comment"
        | "decorator"
        | "type"
        | "assert_statement"
        | "import_statement"
        | "import_from_statement"
        | "future_import_statement"
        | "global_statement"
        | "nonlocal_statement"
        | "type_alias_statement" => true,
        "expression_statement" => is_bare_string(node),
        "assignment" => node
            .child_by_field_name("left")
            .is_some_and(|left| sink.text(left) == "__all__"),
        "if_statement" => node
            .child_by_field_name("condition")
            .is_some_and(|condition| is_main_guard(sink.text(condition))),
        _ => false,
    }
}

/// A statement that is only a string: a docstring, or a string used as a comment.
fn is_bare_string(statement: Node) -> bool {
    let children = code_children(statement);
    children.len() == 1 && matches!(children[0].kind(), "string" | "concatenated_string")
}

fn is_main_guard(condition: &str) -> bool {
    let normalized: String = condition.split_whitespace().collect::<Vec<_>>().join(" ");
    [
        "__name__ == \"__main__\"",
        "__name__ == '__main__'",
        "\"__main__\" == __name__",
        "'__main__' == __name__",
    ]
    .contains(&normalized.as_str())
}

fn mutate(sink: &mut Sink, node: Node) {
    match node.kind() {
        "comparison_operator" => flip_comparison(sink, node),
        "binary_operator" => {
            flip_arithmetic(sink, node);
            swap_operands(sink, node);
        }
        "augmented_assignment" => flip_augmented(sink, node),
        "boolean_operator" => flip_boolean(sink, node),
        "integer" => change_integer(sink, node),
        "true" => sink.replace(Operator::ChangeConstant, node, "False"),
        "false" => sink.replace(Operator::ChangeConstant, node, "True"),
        "string" => empty_string(sink, node),
        "if_statement" => {
            invert_condition(sink, node);
            remove_if(sink, node);
        }
        "elif_clause" => invert_condition(sink, node),
        "conditional_expression" => conditional_expression(sink, node),
        "for_statement" | "while_statement" => {
            let header = sink.text(node).lines().next().unwrap_or("");
            let description = format!("remove the loop `{}`", shorten(header));
            remove_statement(sink, Operator::RemoveLoop, node, description);
        }
        "expression_statement" => remove_assignment(sink, node),
        "call" => {
            unwrap_call(sink, node);
            range_off_by_one(sink, node);
        }
        "with_statement" | "try_statement" => unwrap_block(sink, node),
        "return_statement" => {
            let description = format!("remove `{}`", shorten(sink.text(node)));
            remove_statement(sink, Operator::RemoveReturn, node, description);
        }
        "subscript" => subscript_off_by_one(sink, node),
        "block" => shuffle_statements(sink, node),
        _ => {}
    }
}

fn flip_comparison(sink: &mut Sink, node: Node) {
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

fn is_string(node: Node) -> bool {
    matches!(node.kind(), "string" | "concatenated_string")
}

/// A string literal, or arithmetic that builds one (`"-" * n`, `"%d" % x`, `"a" + b`).
fn is_text(sink: &Sink, node: Node) -> bool {
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

fn flip_arithmetic(sink: &mut Sink, node: Node) {
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

fn flip_augmented(sink: &mut Sink, node: Node) {
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

fn flip_boolean(sink: &mut Sink, node: Node) {
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
fn is_atom(node: Node) -> bool {
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

fn swap_operands(sink: &mut Sink, node: Node) {
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

fn change_integer(sink: &mut Sink, node: Node) {
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
fn empty_string(sink: &mut Sink, node: Node) {
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

fn negated(sink: &Sink, condition: Node) -> String {
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

/// `if c:` / `elif c:` -> `not c`.
fn invert_condition(sink: &mut Sink, node: Node) {
    let Some(condition) = node.child_by_field_name("condition") else {
        return;
    };
    let replacement = negated(sink, condition);
    sink.push(
        Operator::InvertCondition,
        condition.start_byte(),
        condition.end_byte(),
        replacement,
        format!("negate the condition `{}`", shorten(sink.text(condition))),
    );
}

/// Drop the whole `if` statement, and separately each `elif`/`else` branch.
fn remove_if(sink: &mut Sink, node: Node) {
    let header = sink.text(node).lines().next().unwrap_or("");
    let description = format!("remove the `{}` statement", shorten(header));
    remove_statement(sink, Operator::RemoveCondition, node, description);

    let mut previous_end = node
        .child_by_field_name("consequence")
        .map(|block| block.end_byte());
    for (field, child) in children_with_fields(node) {
        if field != Some("alternative") {
            continue;
        }
        if let Some(start) = previous_end {
            let branch = sink.text(child).lines().next().unwrap_or("");
            sink.push(
                Operator::RemoveCondition,
                start,
                child.end_byte(),
                "",
                format!("remove the `{}` branch", shorten(branch)),
            );
        }
        previous_end = Some(child.end_byte());
    }
}

/// `a if c else b`: negate `c`, or keep only `a` or only `b`.
fn conditional_expression(sink: &mut Sink, node: Node) {
    let parts = code_children(node);
    let [consequence, condition, alternative] = parts[..] else {
        return;
    };
    let replacement = negated(sink, condition);
    sink.push(
        Operator::InvertCondition,
        condition.start_byte(),
        condition.end_byte(),
        replacement,
        format!("negate the condition `{}`", shorten(sink.text(condition))),
    );
    for kept in [consequence, alternative] {
        sink.replace(Operator::RemoveCondition, node, sink.text(kept));
    }
}

/// Delete a statement with its lines; a block's only statement becomes `pass`.
fn remove_statement(sink: &mut Sink, operator: Operator, statement: Node, description: String) {
    let Some(parent) = statement.parent() else {
        return;
    };
    if code_children(parent).len() == 1 {
        sink.push(
            operator,
            statement.start_byte(),
            statement.end_byte(),
            "pass",
            description,
        );
    } else if let Some((start, end)) = whole_lines(sink.src, statement, "#") {
        sink.push(operator, start, end, "", description);
    }
}

fn remove_assignment(sink: &mut Sink, statement: Node) {
    let children = code_children(statement);
    let [expression] = children[..] else {
        return;
    };
    let is_assignment = match expression.kind() {
        "augmented_assignment" => true,
        // A bare annotation (`x: int`) assigns nothing.
        "assignment" => expression.child_by_field_name("right").is_some(),
        _ => false,
    };
    if is_assignment {
        let description = format!("remove `{}`", shorten(sink.text(statement)));
        remove_statement(sink, Operator::RemoveAssignment, statement, description);
    }
}

/// `f(x)` -> `x` when `f` is a plain name called with one positional argument.
fn unwrap_call(sink: &mut Sink, call: Node) {
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

/// A `with` or `try` statement replaced by its body, dedented to the statement's level.
fn unwrap_block(sink: &mut Sink, statement: Node) {
    let Some(body) = statement.child_by_field_name("body") else {
        return;
    };
    let Some(replacement) = dedented_body(sink, statement, body) else {
        return;
    };
    let header = sink.text(statement).lines().next().unwrap_or("");
    let description = if statement.kind() == "try_statement" {
        "remove the `try` wrapper and its handlers, keeping its body".to_string()
    } else {
        format!("remove the `{}` wrapper, keeping its body", shorten(header))
    };
    sink.push(
        Operator::RemoveWrapper,
        statement.start_byte(),
        statement.end_byte(),
        replacement,
        description,
    );
}

fn dedented_body(sink: &Sink, statement: Node, body: Node) -> Option<String> {
    if has_multiline_string(body) {
        return None;
    }
    let body_text = sink.text(body);
    if body.start_position().row == statement.start_position().row {
        return (!body_text.contains('\n')).then(|| body_text.to_string());
    }
    let outer = indentation(sink.src, statement.start_byte())?;
    let inner = indentation(sink.src, body.start_byte())?;
    let mut lines = Vec::new();
    for (index, line) in body_text.split('\n').enumerate() {
        if index == 0 {
            lines.push(line.to_string());
        } else if line.trim().is_empty() {
            lines.push(String::new());
        } else {
            lines.push(format!("{outer}{}", line.strip_prefix(inner)?));
        }
    }
    Some(lines.join("\n"))
}

fn has_multiline_string(node: Node) -> bool {
    if node.kind() == "string" && node.start_position().row != node.end_position().row {
        return true;
    }
    let mut cursor = node.walk();
    let children: Vec<Node> = node.children(&mut cursor).collect();
    children.into_iter().any(has_multiline_string)
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
fn range_off_by_one(sink: &mut Sink, call: Node) {
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
fn subscript_off_by_one(sink: &mut Sink, node: Node) {
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

/// Statements never moved by a shuffle: control transfers (moving them is rarely a plausible
/// bug), definitions, and everything excluded from mutation.
fn shuffle_movable(sink: &Sink, statement: Node) -> bool {
    !excluded(sink, statement)
        && !matches!(
            statement.kind(),
            "return_statement"
                | "raise_statement"
                | "break_statement"
                | "continue_statement"
                | "pass_statement"
                | "function_definition"
                | "class_definition"
                | "decorated_definition"
        )
}

/// Swap two adjacent statements of a block, each on lines of its own.
fn shuffle_statements(sink: &mut Sink, block: Node) {
    let statements = code_children(block);
    for pair in statements.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        if !shuffle_movable(sink, first)
            || !shuffle_movable(sink, second)
            || sink.text(first) == sink.text(second)
            || indentation(sink.src, first.start_byte()).is_none()
            || indentation(sink.src, second.start_byte()).is_none()
            || sink.src[first.end_byte()..second.start_byte()].contains(';')
        {
            continue;
        }
        let between = &sink.src[first.end_byte()..second.start_byte()];
        sink.push(
            Operator::ShuffleStatements,
            first.start_byte(),
            second.end_byte(),
            format!("{}{between}{}", sink.text(second), sink.text(first)),
            format!(
                "swap `{}` and `{}`",
                shorten(sink.text(first)),
                shorten(sink.text(second))
            ),
        );
    }
}
