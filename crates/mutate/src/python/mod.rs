//! Candidate mutations of Python source (tree-sitter-python), one generator per node kind.
//!
//! Only code inside function bodies is mutated. Never touched: docstrings and other bare string
//! statements, comments, type annotations, parameters and defaults, decorators, imports, `global`,
//! `__all__`, `assert` statements and the `if __name__ == "__main__":` block. This module walks
//! the tree and decides where mutation is allowed; `expressions.rs` and `statements.rs` hold the
//! generators. They only propose text: re-parsing and deduplication happen in `lib.rs`.

mod expressions;
mod statements;

use tree_sitter::{Node, Tree};

use crate::common::{children_with_fields, code_children, shorten, RawEdit, Sink};
use crate::Operator;
use expressions::{
    change_integer, empty_string, flip_arithmetic, flip_augmented, flip_boolean, flip_comparison,
    range_off_by_one, subscript_off_by_one, swap_operands, unwrap_call,
};
use statements::{
    conditional_expression, invert_condition, remove_assignment, remove_if, remove_statement,
    shuffle_statements, unwrap_block,
};

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
pub(super) fn excluded(sink: &Sink, node: Node) -> bool {
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
