//! Candidate mutations of Rust source (tree-sitter-rust), one generator per node kind.
//!
//! Only code inside `fn` bodies is mutated. Never touched: test code (`#[cfg(test)]` modules,
//! `#[test]` and similar functions), comments and doc comments, attributes, `use` items, macro
//! definitions, types (including array lengths and const generic arguments), signatures, and the
//! arguments of `assert!`-like and `panic!`-like macros. Rust mutants must still compile, so the
//! operators avoid edits that change a type (no `return` removal at a block's end, no `let`
//! reordering); the caller's test run rejects the rest.

use tree_sitter::{Node, Tree};

use crate::common::{
    children_with_fields, code_children, indentation, looks_like_index, shift_integer, shorten,
    whole_lines, RawEdit, Sink,
};
use crate::Operator;

const INTEGER_SUFFIXES: &[&str] = &[
    "i128", "u128", "isize", "usize", "i16", "u16", "i32", "u32", "i64", "u64", "i8", "u8",
];

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
            ("function_item", Some("body")) => true,
            ("function_item", _) | ("closure_expression", Some("parameters")) => continue,
            _ => in_body,
        };
        walk(sink, child, child_in_body);
    }
}

fn excluded(sink: &Sink, node: Node) -> bool {
    let kind = node.kind();
    kind.ends_with("_type")
        || kind.ends_with("comment")
        || is_test_item(sink.src, node)
        || matches!(
            kind,
            "attribute_item"
                | "inner_attribute_item"
                | "use_declaration"
                | "extern_crate_declaration"
                | "macro_definition"
                | "type_arguments"
                | "type_parameters"
                | "type_identifier"
                | "where_clause"
                | "trait_bounds"
        )
        || kind == "macro_invocation"
            && node.child_by_field_name("macro").is_some_and(|name| {
                let name = sink.text(name);
                let name = name.rsplit("::").next().unwrap_or(name);
                name.contains("assert")
                    || matches!(name, "panic" | "unreachable" | "unimplemented" | "todo")
            })
}

/// An item marked as test code by the attributes right above it: `#[test]`, `#[tokio::test]`,
/// `#[cfg(test)]`, `#[cfg(all(test, ...))]`, `#[bench]`, `#[rstest]`, `#[test_case(..)]`.
pub(crate) fn is_test_item(src: &str, node: Node) -> bool {
    if !node.kind().ends_with("_item") || node.kind() == "attribute_item" {
        return false;
    }
    let mut previous = node.prev_sibling();
    while let Some(sibling) = previous {
        match sibling.kind() {
            "attribute_item" => {
                let attribute = &src[sibling.start_byte()..sibling.end_byte()];
                let attribute = attribute
                    .trim_start_matches("#[")
                    .trim_end_matches(']')
                    .trim();
                let path = attribute.split('(').next().unwrap_or("").trim();
                let last = path.rsplit("::").next().unwrap_or(path);
                let words = || attribute.split(|c: char| !(c.is_alphanumeric() || c == '_'));
                let cfg_test = path == "cfg"
                    && words().any(|word| word == "test")
                    && !attribute.replace(' ', "").contains("not(test)");
                if cfg_test
                    || matches!(
                        last,
                        "test" | "bench" | "rstest" | "test_case" | "quickcheck" | "proptest"
                    )
                {
                    return true;
                }
            }
            kind if kind.ends_with("comment") => {}
            _ => return false,
        }
        previous = sibling.prev_sibling();
    }
    false
}

fn mutate(sink: &mut Sink, node: Node) {
    match node.kind() {
        "binary_expression" => binary_expression(sink, node),
        "compound_assignment_expr" => flip_compound(sink, node),
        "integer_literal" => change_integer(sink, node),
        "boolean_literal" => {
            let flipped = if sink.text(node) == "true" {
                "false"
            } else {
                "true"
            };
            sink.replace(Operator::ChangeConstant, node, flipped);
        }
        "if_expression" => {
            invert_condition(sink, node);
            remove_if(sink, node);
        }
        "expression_statement" => statement(sink, node),
        "range_expression" => flip_range(sink, node),
        "index_expression" => index_off_by_one(sink, node),
        "block" => shuffle_statements(sink, node),
        _ => {}
    }
}

fn binary_expression(sink: &mut Sink, node: Node) {
    let (Some(left), Some(operator), Some(right)) = (
        node.child_by_field_name("left"),
        node.child_by_field_name("operator"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    let string_operand = [left, right]
        .iter()
        .any(|operand| operand.kind().contains("string"));
    let (kind, flips): (Operator, &[&str]) = match sink.text(operator) {
        "<" => (Operator::FlipComparison, &["<=", ">"]),
        "<=" => (Operator::FlipComparison, &["<", ">="]),
        ">" => (Operator::FlipComparison, &[">=", "<"]),
        ">=" => (Operator::FlipComparison, &[">", "<="]),
        "==" => (Operator::FlipComparison, &["!="]),
        "!=" => (Operator::FlipComparison, &["=="]),
        "&&" => (Operator::FlipBoolean, &["||"]),
        "||" => (Operator::FlipBoolean, &["&&"]),
        "+" if string_operand => (Operator::FlipArithmetic, &[]),
        "+" => (Operator::FlipArithmetic, &["-"]),
        "-" => (Operator::FlipArithmetic, &["+"]),
        "*" => (Operator::FlipArithmetic, &["/"]),
        "/" => (Operator::FlipArithmetic, &["*"]),
        "%" => (Operator::FlipArithmetic, &["/"]),
        "<<" => (Operator::FlipArithmetic, &[">>"]),
        ">>" => (Operator::FlipArithmetic, &["<<"]),
        "&" => (Operator::FlipArithmetic, &["|"]),
        "|" => (Operator::FlipArithmetic, &["&"]),
        "^" => (Operator::FlipArithmetic, &["|"]),
        _ => return,
    };
    for flip in flips {
        sink.replace(kind, operator, *flip);
    }

    let non_commutative = matches!(sink.text(operator), "-" | "/" | "%" | "<<" | ">>");
    if non_commutative && sink.text(left) != sink.text(right) {
        let between = &sink.src[left.end_byte()..right.start_byte()];
        // Left-associative: the operand moved right needs parentheses at equal precedence.
        let own = precedence(sink, node);
        let replacement = format!(
            "{}{between}{}",
            parenthesized(sink, right, own, false),
            parenthesized(sink, left, own, true)
        );
        sink.replace(Operator::SwapOperands, node, replacement);
    }
}

/// How tightly an expression binds (higher is tighter), to decide where parentheses go.
fn precedence(sink: &Sink, node: Node) -> u8 {
    match node.kind() {
        "binary_expression" => {
            node.child_by_field_name("operator")
                .map_or(0, |operator| match sink.text(operator) {
                    "||" => 1,
                    "&&" => 2,
                    "==" | "!=" | "<" | ">" | "<=" | ">=" => 3,
                    "|" => 4,
                    "^" => 5,
                    "&" => 6,
                    "<<" | ">>" => 7,
                    "+" | "-" => 8,
                    "*" | "/" | "%" => 9,
                    _ => 0,
                })
        }
        "type_cast_expression" => 10,
        "unary_expression" | "reference_expression" => 11,
        "identifier"
        | "self"
        | "field_expression"
        | "call_expression"
        | "index_expression"
        | "integer_literal"
        | "float_literal"
        | "boolean_literal"
        | "char_literal"
        | "string_literal"
        | "parenthesized_expression"
        | "macro_invocation"
        | "scoped_identifier"
        | "try_expression"
        | "await_expression"
        | "generic_function"
        | "tuple_expression"
        | "array_expression" => 12,
        _ => 0,
    }
}

/// The operand's text, in parentheses when it binds less tightly than `than` (or as tightly,
/// when `strict`).
fn parenthesized(sink: &Sink, operand: Node, than: u8, strict: bool) -> String {
    let inner = precedence(sink, operand);
    if inner < than || (strict && inner == than) {
        format!("({})", sink.text(operand))
    } else {
        sink.text(operand).to_string()
    }
}

fn flip_compound(sink: &mut Sink, node: Node) {
    let (Some(operator), Some(right)) = (
        node.child_by_field_name("operator"),
        node.child_by_field_name("right"),
    ) else {
        return;
    };
    let flips: &[&str] = match sink.text(operator) {
        "+=" if right.kind().contains("string") => &[],
        "+=" => &["-="],
        "-=" => &["+="],
        "*=" => &["/="],
        "/=" => &["*="],
        "%=" => &["/="],
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

fn change_integer(sink: &mut Sink, node: Node) {
    // Array repeat lengths (`[0; 4]`) and tuple fields (`t.0`) are types in disguise.
    if let Some(parent) = node.parent() {
        let is_length = parent.kind() == "array_expression"
            && parent.child_by_field_name("length") == Some(node);
        let is_field = parent.kind() == "field_expression"
            && parent.child_by_field_name("field") == Some(node);
        if is_length || is_field {
            return;
        }
    }
    for delta in [-1, 1] {
        if let Some(shifted) = shift_integer(sink.text(node), delta, INTEGER_SUFFIXES) {
            sink.replace(Operator::ChangeConstant, node, shifted);
        }
    }
}

fn invert_condition(sink: &mut Sink, node: Node) {
    let Some(condition) = node.child_by_field_name("condition") else {
        return;
    };
    let replacement = match condition.kind() {
        "let_condition" | "let_chain" => return,
        "unary_expression" if sink.text(condition).starts_with('!') => {
            let Some(operand) = code_children(condition).into_iter().next() else {
                return;
            };
            sink.text(operand).to_string()
        }
        _ => format!("!{}", parenthesized(sink, condition, 11, false)),
    };
    sink.push(
        Operator::InvertCondition,
        condition.start_byte(),
        condition.end_byte(),
        replacement,
        format!("negate the condition `{}`", shorten(sink.text(condition))),
    );
}

/// The `if` that heads an `else if` chain.
fn chain_head(node: Node) -> Node {
    let mut head = node;
    while let Some(parent) = head
        .parent()
        .filter(|parent| parent.kind() == "else_clause")
    {
        match parent.parent() {
            Some(outer) if outer.kind() == "if_expression" => head = outer,
            _ => break,
        }
    }
    head
}

/// Drop a whole `if` used as a statement, or the `else` branch of one. Only `if`s whose value is
/// `()` are touched, so the mutant still type-checks.
fn remove_if(sink: &mut Sink, node: Node) {
    let header = shorten(sink.text(node).lines().next().unwrap_or(""));
    let alternative = node.child_by_field_name("alternative");
    let head = chain_head(node);
    let Some(parent) = head.parent() else {
        return;
    };
    // A block's last expression without `;` is its value; an `if` there has type `()` only when
    // it has no `else`.
    let is_tail = match parent.kind() {
        "expression_statement" => {
            !sink.text(parent).ends_with(';')
                && parent
                    .parent()
                    .is_some_and(|block| code_children(block).last() == Some(&parent))
        }
        "block" => true,
        // Any other place (`let x = if ..`, an argument) uses the value.
        _ => return,
    };
    let is_statement = parent.kind() == "expression_statement" && !is_tail;
    let is_unit_tail = is_tail && alternative.is_none();
    if head == node && (is_statement || is_unit_tail) {
        let statement = if parent.kind() == "expression_statement" {
            parent
        } else {
            node
        };
        remove(
            sink,
            Operator::RemoveCondition,
            statement,
            format!("remove the `{header}` statement"),
        );
    }
    if let (true, Some(alternative)) = (is_statement, alternative) {
        let consequence_end = node
            .child_by_field_name("consequence")
            .map_or(alternative.start_byte(), |block| block.end_byte());
        sink.push(
            Operator::RemoveCondition,
            consequence_end,
            alternative.end_byte(),
            "",
            format!("remove the `else` branch of `{header}`"),
        );
    }
}

/// Delete a statement with its lines, or just its text when it shares a line.
fn remove(sink: &mut Sink, operator: Operator, statement: Node, description: String) {
    let (start, end) = whole_lines(sink.src, statement, "//")
        .unwrap_or((statement.start_byte(), statement.end_byte()));
    sink.push(operator, start, end, "", description);
}

fn statement(sink: &mut Sink, node: Node) {
    let [expression] = code_children(node)[..] else {
        return;
    };
    let description = format!("remove `{}`", shorten(sink.text(node)));
    match expression.kind() {
        "for_expression" | "while_expression" => {
            let header = shorten(sink.text(expression).lines().next().unwrap_or(""));
            remove(
                sink,
                Operator::RemoveLoop,
                node,
                format!("remove the loop `{header}`"),
            );
        }
        "assignment_expression" | "compound_assignment_expr" => {
            remove(sink, Operator::RemoveAssignment, node, description);
        }
        // A `return` that ends a function body gives the body its type; elsewhere dropping it
        // makes control fall through.
        "return_expression" if !ends_function_body(node) => {
            remove(sink, Operator::RemoveReturn, node, description);
        }
        _ => {}
    }
}

fn ends_function_body(statement: Node) -> bool {
    let Some(block) = statement.parent() else {
        return true;
    };
    let is_last = code_children(block).last() == Some(&statement);
    let in_function = block
        .parent()
        .is_some_and(|owner| matches!(owner.kind(), "function_item" | "closure_expression"));
    is_last && in_function
}

/// `a..b` <-> `a..=b` (ranges with an end only).
fn flip_range(sink: &mut Sink, node: Node) {
    for (_, child) in children_with_fields(node) {
        let flip = match child.kind() {
            ".." => "..=",
            "..=" => "..",
            _ => continue,
        };
        let has_end = code_children(node)
            .last()
            .is_some_and(|last| last.start_byte() >= child.end_byte());
        if has_end {
            sink.replace(Operator::OffByOne, child, flip);
        }
    }
}

/// `v[i]` -> `v[i + 1]` / `v[i - 1]` for index-like names.
fn index_off_by_one(sink: &mut Sink, node: Node) {
    let children = code_children(node);
    let [_, index] = children[..] else {
        return;
    };
    if index.kind() != "identifier" || !looks_like_index(sink.text(index)) {
        return;
    }
    for sign in ["+", "-"] {
        let replacement = format!("{} {sign} 1", sink.text(index));
        sink.replace(Operator::OffByOne, index, replacement);
    }
}

/// Swap two adjacent expression statements (`let`s are left alone: moving one usually breaks
/// compilation, or changes nothing).
fn shuffle_statements(sink: &mut Sink, block: Node) {
    let statements = code_children(block);
    for pair in statements.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        let movable = |statement: Node| {
            statement.kind() == "expression_statement"
                && sink.text(statement).ends_with(';')
                && !excluded(sink, statement)
                && code_children(statement).first().is_some_and(|expression| {
                    !excluded(sink, *expression)
                        && !matches!(
                            expression.kind(),
                            "return_expression" | "break_expression" | "continue_expression"
                        )
                })
        };
        if !movable(first)
            || !movable(second)
            || sink.text(first) == sink.text(second)
            || indentation(sink.src, first.start_byte()).is_none()
            || indentation(sink.src, second.start_byte()).is_none()
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
