//! Python generators that rewrite statements and conditions: inverted or removed conditions,
//! removed statements, unwrapped `with`/`try` blocks and swapped neighbours. Statement removal
//! keeps blocks valid (a block's only statement becomes `pass`).

use tree_sitter::Node;

use super::excluded;
use super::expressions::negated;
use crate::common::{children_with_fields, code_children, indentation, shorten, whole_lines, Sink};
use crate::Operator;

/// `if c:` / `elif c:` -> `not c`.
pub(super) fn invert_condition(sink: &mut Sink, node: Node) {
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
pub(super) fn remove_if(sink: &mut Sink, node: Node) {
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
pub(super) fn conditional_expression(sink: &mut Sink, node: Node) {
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
pub(super) fn remove_statement(
    sink: &mut Sink,
    operator: Operator,
    statement: Node,
    description: String,
) {
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

pub(super) fn remove_assignment(sink: &mut Sink, statement: Node) {
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

/// A `with` or `try` statement replaced by its body, dedented to the statement's level.
pub(super) fn unwrap_block(sink: &mut Sink, statement: Node) {
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

/// Statements never moved by a shuffle: control transfers (moving them is rarely a plausible
/// bug), definitions, `case` clauses (a wildcard moved up is a compile error) and everything
/// excluded from mutation.
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
                | "case_clause"
        )
}

/// Swap two adjacent statements of a block, each on lines of its own.
pub(super) fn shuffle_statements(sink: &mut Sink, block: Node) {
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
