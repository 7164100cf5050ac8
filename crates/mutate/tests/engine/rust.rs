//! Every Rust operator on small functions, and the places never mutated.

use mutate::Language::Rust;
use mutate::Operator::*;

use crate::{check, check_lines};

#[test]
fn flip_comparison() {
    check(
        Rust,
        r#"
        fn f(a: u32, b: u32) -> bool {
            a < b || a == 3
        }
        "#,
        FlipComparison,
        &[
            r#"
            fn f(a: u32, b: u32) -> bool {
                a <= b || a == 3
            }
            "#,
            r#"
            fn f(a: u32, b: u32) -> bool {
                a > b || a == 3
            }
            "#,
            r#"
            fn f(a: u32, b: u32) -> bool {
                a < b || a != 3
            }
            "#,
        ],
    );
}

#[test]
fn flip_arithmetic() {
    check(
        Rust,
        r#"
        fn f(mut x: u32, s: String) -> (u32, String) {
            x -= 1;
            (x + x * 2, s + "!")
        }
        "#,
        FlipArithmetic,
        &[
            r#"
            fn f(mut x: u32, s: String) -> (u32, String) {
                x += 1;
                (x + x * 2, s + "!")
            }
            "#,
            r#"
            fn f(mut x: u32, s: String) -> (u32, String) {
                x -= 1;
                (x - x * 2, s + "!")
            }
            "#,
            r#"
            fn f(mut x: u32, s: String) -> (u32, String) {
                x -= 1;
                (x + x / 2, s + "!")
            }
            "#,
        ],
    );
}

#[test]
fn flip_boolean() {
    check(
        Rust,
        r#"
        fn f(a: bool, b: bool, c: bool) -> bool {
            a && !b || c
        }
        "#,
        FlipBoolean,
        &[
            r#"
            fn f(a: bool, b: bool, c: bool) -> bool {
                a || !b || c
            }
            "#,
            r#"
            fn f(a: bool, b: bool, c: bool) -> bool {
                a && !b && c
            }
            "#,
        ],
    );
}

#[test]
fn change_constant() {
    // Array lengths and tuple fields are left alone: changing them breaks types, not behaviour.
    check(
        Rust,
        r#"
        fn f(t: (u8, u8)) -> (u8, bool) {
            let v = [0; 4];
            (v[0] + t.1 + 7u8, true)
        }
        "#,
        ChangeConstant,
        &[
            r#"
            fn f(t: (u8, u8)) -> (u8, bool) {
                let v = [1; 4];
                (v[0] + t.1 + 7u8, true)
            }
            "#,
            r#"
            fn f(t: (u8, u8)) -> (u8, bool) {
                let v = [0; 4];
                (v[1] + t.1 + 7u8, true)
            }
            "#,
            r#"
            fn f(t: (u8, u8)) -> (u8, bool) {
                let v = [0; 4];
                (v[0] + t.1 + 6u8, true)
            }
            "#,
            r#"
            fn f(t: (u8, u8)) -> (u8, bool) {
                let v = [0; 4];
                (v[0] + t.1 + 8u8, true)
            }
            "#,
            r#"
            fn f(t: (u8, u8)) -> (u8, bool) {
                let v = [0; 4];
                (v[0] + t.1 + 7u8, false)
            }
            "#,
        ],
    );
}

#[test]
fn invert_condition() {
    check(
        Rust,
        r#"
        fn f(x: u32, y: bool, w: Option<u8>) {
            if x > 0 {
            } else if !y {
            }
            if let Some(z) = w {}
        }
        "#,
        InvertCondition,
        &[
            r#"
            fn f(x: u32, y: bool, w: Option<u8>) {
                if !(x > 0) {
                } else if !y {
                }
                if let Some(z) = w {}
            }
            "#,
            r#"
            fn f(x: u32, y: bool, w: Option<u8>) {
                if x > 0 {
                } else if y {
                }
                if let Some(z) = w {}
            }
            "#,
        ],
    );
}

#[test]
fn remove_condition() {
    check(
        Rust,
        r#"
        fn f(x: u32) -> u32 {
            let mut y = 0;
            if x > 1 {
                y = 1;
            } else {
                y = 2;
            }
            if x == 0 {
                return 7;
            }
            y
        }
        "#,
        RemoveCondition,
        &[
            r#"
            fn f(x: u32) -> u32 {
                let mut y = 0;
                if x == 0 {
                    return 7;
                }
                y
            }
            "#,
            r#"
            fn f(x: u32) -> u32 {
                let mut y = 0;
                if x > 1 {
                    y = 1;
                }
                if x == 0 {
                    return 7;
                }
                y
            }
            "#,
            r#"
            fn f(x: u32) -> u32 {
                let mut y = 0;
                if x > 1 {
                    y = 1;
                } else {
                    y = 2;
                }
                y
            }
            "#,
        ],
    );
    // An `if` that gives a value is never removed; a trailing one without `else` may be.
    check(
        Rust,
        r#"
        fn f(x: u32) -> u32 {
            let y = if x > 1 { 1 } else { 2 };
            if x > 1 { 1 } else { 2 }
        }
        "#,
        RemoveCondition,
        &[],
    );
    check(
        Rust,
        r#"
        fn f(v: &mut Vec<u32>) {
            if v.is_empty() {
                v.push(1);
            }
        }
        "#,
        RemoveCondition,
        &[r#"
            fn f(v: &mut Vec<u32>) {
            }
            "#],
    );
}

#[test]
fn remove_loop() {
    check(
        Rust,
        r#"
        fn f(v: &[u32]) -> u32 {
            let mut t = 0;
            for x in v {
                t += x;
            }
            while t > 10 {
                t -= 10;
            }
            t
        }
        "#,
        RemoveLoop,
        &[
            r#"
            fn f(v: &[u32]) -> u32 {
                let mut t = 0;
                while t > 10 {
                    t -= 10;
                }
                t
            }
            "#,
            r#"
            fn f(v: &[u32]) -> u32 {
                let mut t = 0;
                for x in v {
                    t += x;
                }
                t
            }
            "#,
        ],
    );
}

#[test]
fn remove_assignment() {
    check(
        Rust,
        r#"
        fn f(x: u32) -> u32 {
            let mut y = x;
            y = x * 2;
            y += 2; // again
            y
        }
        "#,
        RemoveAssignment,
        &[
            r#"
            fn f(x: u32) -> u32 {
                let mut y = x;
                y += 2; // again
                y
            }
            "#,
            r#"
            fn f(x: u32) -> u32 {
                let mut y = x;
                y = x * 2;
                y
            }
            "#,
        ],
    );
}

#[test]
fn remove_return() {
    // The `return` that ends the body gives the function its type; it stays.
    check(
        Rust,
        r#"
        fn f(x: u32) -> u32 {
            if x == 0 { return 7; }
            return x;
        }
        "#,
        RemoveReturn,
        &[r#"
            fn f(x: u32) -> u32 {
                if x == 0 {  }
                return x;
            }
            "#],
    );
}

#[test]
fn swap_operands() {
    check(
        Rust,
        r#"
        fn f(a: u32, b: u32) -> u32 {
            a / (b + 1) - a * b
        }
        "#,
        SwapOperands,
        &[
            r#"
            fn f(a: u32, b: u32) -> u32 {
                (b + 1) / a - a * b
            }
            "#,
            r#"
            fn f(a: u32, b: u32) -> u32 {
                a * b - a / (b + 1)
            }
            "#,
        ],
    );
}

#[test]
fn off_by_one() {
    check(
        Rust,
        r#"
        fn f(v: &[u32], n: usize, i: usize) -> u32 {
            for k in 0..n {}
            v[i] + v[1..=n].len() as u32 + v[2..].len() as u32
        }
        "#,
        OffByOne,
        &[
            r#"
            fn f(v: &[u32], n: usize, i: usize) -> u32 {
                for k in 0..=n {}
                v[i] + v[1..=n].len() as u32 + v[2..].len() as u32
            }
            "#,
            r#"
            fn f(v: &[u32], n: usize, i: usize) -> u32 {
                for k in 0..n {}
                v[i + 1] + v[1..=n].len() as u32 + v[2..].len() as u32
            }
            "#,
            r#"
            fn f(v: &[u32], n: usize, i: usize) -> u32 {
                for k in 0..n {}
                v[i - 1] + v[1..=n].len() as u32 + v[2..].len() as u32
            }
            "#,
            r#"
            fn f(v: &[u32], n: usize, i: usize) -> u32 {
                for k in 0..n {}
                v[i] + v[1..n].len() as u32 + v[2..].len() as u32
            }
            "#,
        ],
    );
}

#[test]
fn shuffle_statements() {
    check(
        Rust,
        r#"
        fn f(v: &mut Vec<u32>) {
            v.push(1);
            v.push(2);
            let x = 3;
            v.push(x);
        }
        "#,
        ShuffleStatements,
        &[r#"
            fn f(v: &mut Vec<u32>) {
                v.push(2);
                v.push(1);
                let x = 3;
                v.push(x);
            }
            "#],
    );
}

#[test]
fn only_non_test_function_bodies_are_mutated() {
    check_lines(
        Rust,
        r#"
        use std::fmt;
        const N: usize = 3 + 1;

        /// Doc 1 + 1
        #[inline(always)]
        pub fn f(a: [u8; 4]) -> usize {
            assert!(a.len() > 1);
            // a comment with 1 + 1
            let v: Vec<[u8; 2]> = Vec::with_capacity(N);
            v.len() + 1
        }

        #[cfg(test)]
        mod tests {
            #[test]
            fn t() {
                assert_eq!(super::f([0; 4]), 1 + 1);
                let x = 2 + 2;
            }
        }

        #[tokio::test]
        async fn t2() {
            let x = 2 + 2;
        }
        "#,
        &[10],
    );
}
