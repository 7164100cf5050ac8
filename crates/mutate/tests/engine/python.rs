//! Every Python operator on small functions, and the places never mutated.

use mutate::Language::Python;
use mutate::Operator::*;

use crate::{check, check_lines};

#[test]
fn flip_comparison() {
    check(
        Python,
        r#"
        def f(a, b):
            return a < b and a is not None
        "#,
        FlipComparison,
        &[
            r#"
            def f(a, b):
                return a <= b and a is not None
            "#,
            r#"
            def f(a, b):
                return a > b and a is not None
            "#,
            r#"
            def f(a, b):
                return a < b and a is None
            "#,
        ],
    );
    check(
        Python,
        r#"
        def f(a, b):
            return a not in b != 1
        "#,
        FlipComparison,
        &[
            r#"
            def f(a, b):
                return a in b != 1
            "#,
            r#"
            def f(a, b):
                return a not in b == 1
            "#,
        ],
    );
}

#[test]
fn flip_arithmetic() {
    check(
        Python,
        r#"
        def f(a, b):
            a += b
            return a // b + "x" * 2
        "#,
        FlipArithmetic,
        &[
            r#"
            def f(a, b):
                a -= b
                return a // b + "x" * 2
            "#,
            r#"
            def f(a, b):
                a += b
                return a % b + "x" * 2
            "#,
            r#"
            def f(a, b):
                a += b
                return a / b + "x" * 2
            "#,
        ],
    );
    // Concatenation, repetition and `%` formatting of strings would only raise TypeError.
    check(
        Python,
        r#"
        def f(a):
            a += "s"
            return "%d" % a + "-" * 3 * 2
        "#,
        FlipArithmetic,
        &[],
    );
}

#[test]
fn flip_boolean() {
    check(
        Python,
        r#"
        def f(a, b, c):
            return a and not b or c
        "#,
        FlipBoolean,
        &[
            r#"
            def f(a, b, c):
                return a or not b or c
            "#,
            r#"
            def f(a, b, c):
                return a and not b and c
            "#,
        ],
    );
}

#[test]
fn change_constant() {
    check(
        Python,
        r#"
        def f(x):
            flag = True
            return x + 0, "ab", 0x1F, {"key": 1}
        "#,
        ChangeConstant,
        &[
            r#"
            def f(x):
                flag = False
                return x + 0, "ab", 0x1F, {"key": 1}
            "#,
            r#"
            def f(x):
                flag = True
                return x + 1, "ab", 0x1F, {"key": 1}
            "#,
            r#"
            def f(x):
                flag = True
                return x + 0, "", 0x1F, {"key": 1}
            "#,
            r#"
            def f(x):
                flag = True
                return x + 0, "ab", 0x1E, {"key": 1}
            "#,
            r#"
            def f(x):
                flag = True
                return x + 0, "ab", 0x20, {"key": 1}
            "#,
            r#"
            def f(x):
                flag = True
                return x + 0, "ab", 0x1F, {"key": 0}
            "#,
            r#"
            def f(x):
                flag = True
                return x + 0, "ab", 0x1F, {"key": 2}
            "#,
        ],
    );
    // Messages, f-strings and long strings stay as they are.
    check(
        Python,
        r#"
        def f(x):
            if x:
                raise ValueError("bad")
            return f"{x}!", "a rather long literal string"
        "#,
        ChangeConstant,
        &[],
    );
}

#[test]
fn invert_condition() {
    check(
        Python,
        r#"
        def f(x, y):
            if x > 0:
                return 1
            elif not y:
                return 2
            return 3 if x or y else 4
        "#,
        InvertCondition,
        &[
            r#"
            def f(x, y):
                if not x > 0:
                    return 1
                elif not y:
                    return 2
                return 3 if x or y else 4
            "#,
            r#"
            def f(x, y):
                if x > 0:
                    return 1
                elif y:
                    return 2
                return 3 if x or y else 4
            "#,
            r#"
            def f(x, y):
                if x > 0:
                    return 1
                elif not y:
                    return 2
                return 3 if not (x or y) else 4
            "#,
        ],
    );
}

#[test]
fn remove_condition() {
    check(
        Python,
        r#"
        def f(x):
            if x:
                x = 1
            elif x is None:
                x = 2
            else:
                x = 3
            return x
        "#,
        RemoveCondition,
        &[
            r#"
            def f(x):
                return x
            "#,
            r#"
            def f(x):
                if x:
                    x = 1
                else:
                    x = 3
                return x
            "#,
            r#"
            def f(x):
                if x:
                    x = 1
                elif x is None:
                    x = 2
                return x
            "#,
        ],
    );
    // A block's only statement becomes `pass`; a conditional expression keeps one side.
    check(
        Python,
        r#"
        def f(x):
            if x:
                return 1 if x > 2 else 0
        "#,
        RemoveCondition,
        &[
            r#"
            def f(x):
                pass
            "#,
            r#"
            def f(x):
                if x:
                    return 0
            "#,
            r#"
            def f(x):
                if x:
                    return 1
            "#,
        ],
    );
}

#[test]
fn remove_loop() {
    check(
        Python,
        r#"
        def f(xs):
            total = 0
            for x in xs:
                total += x
            while total > 10:  # keep it small
                total -= 10
            return total
        "#,
        RemoveLoop,
        &[
            r#"
            def f(xs):
                total = 0
                while total > 10:  # keep it small
                    total -= 10
                return total
            "#,
            r#"
            def f(xs):
                total = 0
                for x in xs:
                    total += x
                return total
            "#,
        ],
    );
}

#[test]
fn remove_assignment() {
    check(
        Python,
        r#"
        def f(x):
            y: int
            y = x
            y += 1  # one more
            return y
        "#,
        RemoveAssignment,
        &[
            r#"
            def f(x):
                y: int
                y += 1  # one more
                return y
            "#,
            r#"
            def f(x):
                y: int
                y = x
                return y
            "#,
        ],
    );
}

#[test]
fn remove_wrapper() {
    check(
        Python,
        r#"
        def f(path, xs):
            n = len(xs + [1])
            with open(path) as fh:
                data = fh.read()
            try:
                return int(data)
            except ValueError:
                return n
        "#,
        RemoveWrapper,
        &[
            r#"
            def f(path, xs):
                n = (xs + [1])
                with open(path) as fh:
                    data = fh.read()
                try:
                    return int(data)
                except ValueError:
                    return n
            "#,
            r#"
            def f(path, xs):
                n = len(xs + [1])
                data = fh.read()
                try:
                    return int(data)
                except ValueError:
                    return n
            "#,
            r#"
            def f(path, xs):
                n = len(xs + [1])
                with path as fh:
                    data = fh.read()
                try:
                    return int(data)
                except ValueError:
                    return n
            "#,
            r#"
            def f(path, xs):
                n = len(xs + [1])
                with open(path) as fh:
                    data = fh.read()
                return int(data)
            "#,
            r#"
            def f(path, xs):
                n = len(xs + [1])
                with open(path) as fh:
                    data = fh.read()
                try:
                    return data
                except ValueError:
                    return n
            "#,
        ],
    );
    // A body holding a multi-line string cannot be re-indented safely.
    check(
        Python,
        r#"
        def f(lock):
            with lock:
                text = """a
        b"""
            return text
        "#,
        RemoveWrapper,
        &[],
    );
}

#[test]
fn remove_return() {
    check(
        Python,
        r#"
        def f(x):
            if x:
                return
            return x * 2
        "#,
        RemoveReturn,
        &[
            r#"
            def f(x):
                if x:
                    pass
                return x * 2
            "#,
            r#"
            def f(x):
                if x:
                    return
            "#,
        ],
    );
}

#[test]
fn swap_operands() {
    check(
        Python,
        r#"
        def f(a, b, c):
            return a - b - c, a / b, "x" + a, a * b, a - a
        "#,
        SwapOperands,
        &[
            r#"
            def f(a, b, c):
                return b - a - c, a / b, "x" + a, a * b, a - a
            "#,
            r#"
            def f(a, b, c):
                return c - (a - b), a / b, "x" + a, a * b, a - a
            "#,
            r#"
            def f(a, b, c):
                return a - b - c, b / a, "x" + a, a * b, a - a
            "#,
            r#"
            def f(a, b, c):
                return a - b - c, a / b, a + "x", a * b, a - a
            "#,
        ],
    );
}

#[test]
fn off_by_one() {
    check(
        Python,
        r#"
        def f(xs, n, i):
            for k in range(n):
                pass
            return xs[1:-1], xs[i], xs[n - 1], xs["key"]
        "#,
        OffByOne,
        &[
            r#"
            def f(xs, n, i):
                for k in range(n + 1):
                    pass
                return xs[1:-1], xs[i], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n - 1):
                    pass
                return xs[1:-1], xs[i], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[0:-1], xs[i], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[2:-1], xs[i], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[1:-2], xs[i], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[1:0], xs[i], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[1:-1], xs[i + 1], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[1:-1], xs[i - 1], xs[n - 1], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[1:-1], xs[i], xs[n], xs["key"]
            "#,
            r#"
            def f(xs, n, i):
                for k in range(n):
                    pass
                return xs[1:-1], xs[i], xs[n - 2], xs["key"]
            "#,
        ],
    );
    // Both bounds of a two-argument range move; a compound bound is parenthesized.
    check(
        Python,
        r#"
        def f(a, b):
            return range(1, a or b)
        "#,
        OffByOne,
        &[
            r#"
            def f(a, b):
                return range(0, a or b)
            "#,
            r#"
            def f(a, b):
                return range(2, a or b)
            "#,
            r#"
            def f(a, b):
                return range(1, (a or b) + 1)
            "#,
            r#"
            def f(a, b):
                return range(1, (a or b) - 1)
            "#,
        ],
    );
}

#[test]
fn shuffle_statements() {
    check(
        Python,
        r#"
        def f(a):
            a.append(1)
            a.append(1)
            b = a.pop()
            a.sort()
            return b
        "#,
        ShuffleStatements,
        &[
            r#"
            def f(a):
                a.append(1)
                b = a.pop()
                a.append(1)
                a.sort()
                return b
            "#,
            r#"
            def f(a):
                a.append(1)
                a.append(1)
                a.sort()
                b = a.pop()
                return b
            "#,
        ],
    );
}

#[test]
fn only_function_bodies_are_mutated() {
    check_lines(
        Python,
        r#"
        """Module doc with 1 + 1."""
        import os
        __all__ = ["f"]
        LIMIT = 10 + 1

        @decorator(1 + 1)
        def f(x: int = 2) -> int:
            """Doc with 1 < 2."""
            # a comment with x + 1
            assert x > 0
            from os import path
            "another bare string"
            y: list[int] = []
            return x + 1

        class C(Base if True else object):
            limit = 3 - 1

            def method(self, n=1 + 1):
                return n < 0

        if __name__ == "__main__":
            def g():
                return 1 + 2
            f(1 + 2)
        "#,
        &[13, 14, 20],
    );
}

#[test]
fn match_statements() {
    // `case` clauses are never swapped (`case _:` first would not compile); their guards and
    // bodies mutate.
    let source = r#"
        def f(command):
            match command:
                case str() if command != "stop":
                    return 1
                case _:
                    return 0
        "#;
    check(Python, source, ShuffleStatements, &[]);
    check(
        Python,
        source,
        FlipComparison,
        &[r#"
            def f(command):
                match command:
                    case str() if command == "stop":
                        return 1
                    case _:
                        return 0
            "#],
    );
    check(
        Python,
        source,
        RemoveReturn,
        &[
            r#"
            def f(command):
                match command:
                    case str() if command != "stop":
                        pass
                    case _:
                        return 0
            "#,
            r#"
            def f(command):
                match command:
                    case str() if command != "stop":
                        return 1
                    case _:
                        pass
            "#,
        ],
    );
}
