//! `functions` on real-looking code: methods, nested and async functions, Rust impl blocks.

use expect_test::{expect, Expect};
use mutate::{functions, Language};

use crate::dedent;

fn check(language: Language, source: &str, expected: Expect) {
    let source = dedent(source);
    let listed: Vec<String> = functions(language, &source)
        .unwrap()
        .iter()
        .map(|function| {
            assert_eq!(
                &source[function.start_byte..function.start_byte + function.signature.len()],
                function.signature,
                "the signature is the start of the definition"
            );
            format!(
                "{} ({}) lines {}-{} {:?} doc={:?}",
                function.qualname,
                function.name,
                function.start_line,
                function.end_line,
                function.signature,
                function.docstring
            )
        })
        .collect();
    expected.assert_eq(&listed.join("\n"));
}

#[test]
fn python_functions() {
    check(
        Language::Python,
        r#"
        import asyncio

        def top(a, b=1):  # the entry point
            """Add.

                Indented detail.
            More text.
            """
            def inner(x):
                return x
            return inner(a) + b

        class Greeter(Base):
            '''A greeter.'''

            @property
            def name(self) -> str:
                r"""Raw doc."""
                return self._name

            async def greet(
                self, *, loud: bool = False
            ) -> None:
                class Local:
                    def method(self): pass
                return 1

        if True:
            def conditional(): ...

        square = lambda x: x * x
        "#,
        expect![[r#"
            top (top) lines 3-11 "def top(a, b=1):" doc=Some("Add.\n\n    Indented detail.\nMore text.")
            top.<locals>.inner (inner) lines 9-10 "def inner(x):" doc=None
            Greeter.name (name) lines 17-19 "def name(self) -> str:" doc=Some("Raw doc.")
            Greeter.greet (greet) lines 21-26 "async def greet(\n        self, *, loud: bool = False\n    ) -> None:" doc=None
            Greeter.greet.<locals>.Local.method (method) lines 25-25 "def method(self):" doc=None
            conditional (conditional) lines 29-29 "def conditional():" doc=None"#]],
    );
}

#[test]
fn rust_functions() {
    check(
        Language::Rust,
        r#"
        /// Adds.
        ///   Twice.
        #[inline]
        pub fn add(a: u32) -> u32 { a + a }

        impl<T: Clone> Wrapper<T> {
            /** Gets it. */
            pub(crate) fn get(&self) -> &T where T: Clone { &self.0 }
        }

        impl fmt::Display for S {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fn helper() {}
                Ok(())
            }
        }

        trait Tr {
            fn provided(&self) -> u8 { 1 }
            fn required(&self);
        }

        mod inner {
            pub async unsafe fn g() {}
        }

        #[cfg(test)]
        mod tests {
            #[test]
            fn t() {}
        }
        "#,
        expect![[r#"
            add (add) lines 4-4 "pub fn add(a: u32) -> u32" doc=Some("Adds.\n  Twice.")
            Wrapper::get (get) lines 8-8 "pub(crate) fn get(&self) -> &T where T: Clone" doc=Some("Gets it.")
            S::fmt (fmt) lines 12-15 "fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result" doc=None
            S::fmt::helper (helper) lines 13-13 "fn helper()" doc=None
            Tr::provided (provided) lines 19-19 "fn provided(&self) -> u8" doc=None
            inner::g (g) lines 24-24 "pub async unsafe fn g()" doc=None"#]],
    );
}

#[test]
fn mutations_name_their_innermost_function() {
    let source = dedent(
        r#"
        class C:
            def m(self, x):
                def helper():
                    return x + 1
                return helper() - 1
        "#,
    );
    let named: Vec<(usize, Option<String>)> = mutate::candidates(Language::Python, "c.py", &source)
        .unwrap()
        .into_iter()
        .filter(|mutation| mutation.operator == mutate::Operator::FlipArithmetic)
        .map(|mutation| (mutation.line, mutation.function))
        .collect();
    assert_eq!(
        named,
        [
            (4, Some("C.m.<locals>.helper".to_string())),
            (5, Some("C.m".to_string()))
        ]
    );
}
