//! Property tests of the test-report parsers: arbitrary text never panics them, and a report
//! generated from known outcomes (pytest's xunit1 JUnit XML, `cargo test` console output) parses
//! back to exactly those outcomes, ids and failure messages.
//!
//! proptest's default case count (256) unless `PROPTEST_CASES` says otherwise.

use std::collections::BTreeMap;

use proptest::prelude::*;
use testrun::cargo::parse_cargo_test;
use testrun::junit::parse_junit;
use testrun::TestStatus;

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn status() -> impl Strategy<Value = TestStatus> {
    prop::sample::select(vec![
        TestStatus::Passed,
        TestStatus::Failed,
        TestStatus::Error,
        TestStatus::Skipped,
        TestStatus::Xfail,
    ])
}

/// Lines built from the fragments the parsers look for, and arbitrary characters.
fn report_like_text(fragments: Vec<&'static str>) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        any::<char>().prop_map(String::from),
        "[a-z_:./ ]{1,10}",
        prop::sample::select(fragments).prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// XML attribute text with what must be escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A pytest test: module path parts, an optional class, the function and its parameter.
#[derive(Clone, Debug)]
struct PyTest {
    module: Vec<String>,
    class: Option<String>,
    function: String,
    param: Option<String>,
    status: TestStatus,
    message: String,
    seconds: f64,
}

impl PyTest {
    fn node_id(&self) -> String {
        let mut id = format!("{}.py", self.module.join("/"));
        if let Some(class) = &self.class {
            id.push_str(&format!("::{class}"));
        }
        id.push_str(&format!("::{}", self.name()));
        id
    }

    fn name(&self) -> String {
        match &self.param {
            Some(param) => format!("{}[{param}]", self.function),
            None => self.function.clone(),
        }
    }

    /// The `<testcase>` pytest writes with `-o junit_family=xunit1`.
    fn xml(&self) -> String {
        let mut classname = self.module.join(".");
        if let Some(class) = &self.class {
            classname.push_str(&format!(".{class}"));
        }
        let message = escape(&self.message);
        let child = match self.status {
            TestStatus::Passed => String::new(),
            TestStatus::Failed => format!("<failure message=\"{message}\">trace</failure>"),
            TestStatus::Error => format!("<error message=\"{message}\">trace</error>"),
            TestStatus::Skipped => format!("<skipped type=\"pytest.skip\" message=\"{message}\"/>"),
            TestStatus::Xfail => format!("<skipped type=\"pytest.xfail\" message=\"{message}\"/>"),
        };
        format!(
            "<testcase classname=\"{}\" file=\"{}.py\" line=\"3\" name=\"{}\" time=\"{}\">{child}</testcase>",
            escape(&classname),
            escape(&self.module.join("/")),
            escape(&self.name()),
            self.seconds,
        )
    }
}

fn py_test() -> impl Strategy<Value = PyTest> {
    (
        prop::collection::vec("[a-z_][a-z0-9_]{0,6}", 1..3),
        prop::option::of("[A-Z][A-Za-z0-9_]{0,6}"),
        "test_[a-z0-9_]{0,8}",
        prop::option::of("[^\\]\\[\u{0}-\u{1f}\u{7f}\u{fffe}\u{ffff}]{0,8}"),
        status(),
        "[^\u{0}-\u{1f}\u{7f}\u{fffe}\u{ffff}]{0,20}",
        0.0f64..100.0,
    )
        .prop_map(
            |(mut module, class, function, param, status, message, seconds)| {
                // pytest collects test modules named test_*.py.
                if let Some(last) = module.last_mut() {
                    *last = format!("test_{last}");
                }
                PyTest {
                    module,
                    class,
                    function,
                    param,
                    status,
                    message,
                    seconds,
                }
            },
        )
}

/// A `cargo test` target: how its header names it, the id prefix it gets, and its tests.
#[derive(Clone, Debug)]
struct CargoTarget {
    header: String,
    prefix: String,
    /// Doc-tests: libtest names them `src/lib.rs - item (line N)`; the id drops the line.
    doc: bool,
    tests: BTreeMap<String, (TestStatus, Vec<String>)>,
}

impl CargoTarget {
    fn printed(&self, name: &str) -> String {
        if self.doc {
            format!("src/lib.rs - {name} (line 7)")
        } else {
            name.to_string()
        }
    }

    fn id(&self, name: &str) -> String {
        if self.doc {
            format!("{}::src/lib.rs - {name}", self.prefix)
        } else {
            format!("{}::{name}", self.prefix)
        }
    }

    /// The console output libtest writes for this target.
    fn output(&self) -> String {
        let mut out = format!("{}\n\nrunning {} tests\n", self.header, self.tests.len());
        let count = |status| self.tests.values().filter(|(s, _)| *s == status).count();
        for (name, (status, _)) in &self.tests {
            let result = match status {
                TestStatus::Passed => "ok",
                TestStatus::Failed => "FAILED",
                _ => "ignored",
            };
            out.push_str(&format!("test {} ... {result}\n", self.printed(name)));
        }
        let failed: Vec<(&String, &Vec<String>)> = self
            .tests
            .iter()
            .filter(|(_, (s, _))| *s == TestStatus::Failed)
            .map(|(name, (_, message))| (name, message))
            .collect();
        if !failed.is_empty() {
            out.push_str("\nfailures:\n\n");
            for (name, message) in &failed {
                let name = self.printed(name);
                out.push_str(&format!(
                    "---- {name} stdout ----\n\nthread '{name}' (77) panicked at src/lib.rs:1:5:\n{}\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\n",
                    message.join("\n")
                ));
            }
            out.push_str("\nfailures:\n");
            for (name, _) in &failed {
                out.push_str(&format!("    {}\n", self.printed(name)));
            }
        }
        out.push_str(&format!(
            "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; 0 filtered out; finished in 0.01s\n\n",
            if failed.is_empty() { "ok" } else { "FAILED" },
            count(TestStatus::Passed),
            count(TestStatus::Failed),
            count(TestStatus::Skipped),
        ));
        out
    }
}

fn cargo_target() -> impl Strategy<Value = CargoTarget> {
    let kind = prop_oneof![
        Just((
            "     Running unittests src/lib.rs (target/debug/deps/ct-0a1b)".to_string(),
            "lib".to_string()
        )),
        Just(("   Doc-tests ct".to_string(), "doc".to_string())),
        "[a-z_]{1,8}".prop_map(|stem| (
            format!("     Running tests/{stem}.rs (target/debug/deps/{stem}-0a1b)"),
            format!("tests/{stem}.rs"),
        )),
        "[a-z_]{1,8}".prop_map(|stem| (
            format!("     Running unittests src/bin/{stem}.rs (target/debug/deps/{stem}-0a1b)"),
            format!("bin:src/bin/{stem}.rs"),
        )),
    ];
    let status = prop::sample::select(vec![
        TestStatus::Passed,
        TestStatus::Failed,
        TestStatus::Skipped,
    ]);
    // Panic message lines, none of which libtest's own lines could be mistaken for.
    let line =
        "[a-z`][a-z0-9 =`:]{0,20}[a-z0-9`]".prop_filter("not a libtest line", |line: &String| {
            !line.starts_with("note: ")
                && !line.starts_with("test result: ")
                && !line.contains("panicked at ")
        });
    let message = prop::collection::vec(line, 1..4);
    (
        kind,
        prop::collection::btree_map(
            "[a-z_][a-z0-9_]{0,6}(::[a-z_][a-z0-9_]{0,6}){0,2}",
            (status, message),
            0..6,
        ),
    )
        .prop_map(|((header, prefix), tests)| CargoTarget {
            header,
            doc: prefix == "doc",
            prefix,
            tests,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn junit_of_any_text_is_a_report_or_an_error(
        text in report_like_text(vec![
            "<testsuites>", "<testsuite name=\"pytest\">", "</testsuite>", "<testcase ",
            "</testcase>", "/>", ">", "classname=\"a.b\" ", "classname=\"\" ", "file=\"a/b.py\" ",
            "name=\"t[x]\" ", "time=\"nan\" ", "time=\"1e999\" ", "<failure message=\"m\">",
            "<error/>", "<skipped type=\"pytest.xfail\"/>", "&amp;", "&#0;", "<![CDATA[",
            "<?xml version=\"1.0\"?>", "<!DOCTYPE x [<!ENTITY e \"v\">]>", "&e;",
        ]),
    ) {
        match parse_junit(&text) {
            Ok(parsed) => {
                for (id, status) in &parsed.statuses {
                    if parsed.messages.contains_key(id) {
                        prop_assert!(matches!(status, TestStatus::Failed | TestStatus::Error));
                    }
                }
            }
            Err(message) => prop_assert!(message.starts_with("invalid JUnit XML")),
        }
    }

    /// A report written from known outcomes parses back to them: pytest node ids rebuilt from
    /// xunit1's attributes, statuses, failure messages and durations.
    #[test]
    fn generated_junit_reports_parse_back(tests in prop::collection::vec(py_test(), 0..8)) {
        let mut unique = BTreeMap::new();
        for test in tests {
            unique.entry(test.node_id()).or_insert(test);
        }
        let cases: String = unique.values().map(PyTest::xml).collect();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><testsuites><testsuite name=\"pytest\" tests=\"{}\">{cases}</testsuite></testsuites>",
            unique.len()
        );
        let parsed = parse_junit(&xml).map_err(TestCaseError::fail)?;
        let statuses: BTreeMap<String, TestStatus> =
            unique.iter().map(|(id, t)| (id.clone(), t.status)).collect();
        prop_assert_eq!(&parsed.statuses, &statuses, "{}", xml);
        let messages: BTreeMap<String, String> = unique
            .iter()
            .filter(|(_, t)| matches!(t.status, TestStatus::Failed | TestStatus::Error))
            .map(|(id, t)| (id.clone(), t.message.clone()))
            .collect();
        prop_assert_eq!(&parsed.messages, &messages);
        for (id, test) in &unique {
            prop_assert_eq!(parsed.durations.get(id), Some(&test.seconds));
        }
        prop_assert!(parsed.anomalies.is_empty(), "{:?}", parsed.anomalies);
    }

    #[test]
    fn cargo_output_of_any_text_never_panics(
        text in report_like_text(vec![
            "\n", "running 1 test\n", "running 3 tests\n", "test a ... ok\n", "test b ... FAILED\n",
            "test c ... ignored, slow\n", "failures:\n", "---- a stdout ----\n", "---- ",
            " stdout ----", "panicked at ", "note: ", "stack backtrace:\n",
            "test result: ok. 1 passed; 0 failed; 0 ignored\n", "test result: FAILED. x passed; ",
            "     Running unittests src/lib.rs (x)\n", "     Running tests/it.rs (y)\n",
            "   Doc-tests c\n", " (line 3)", "process didn't exit successfully", "(signal: 11",
        ]),
    ) {
        let parsed = parse_cargo_test(&text);
        // Every id names its target and the test, and every message belongs to a test id form.
        for id in parsed.statuses.keys().chain(parsed.messages.keys()) {
            prop_assert!(id.contains("::"), "{}", id);
        }
    }

    /// Output written from known outcomes parses back to them, with no anomaly.
    #[test]
    fn generated_cargo_output_parses_back(targets in prop::collection::vec(cargo_target(), 0..4)) {
        let mut unique: BTreeMap<String, CargoTarget> = BTreeMap::new();
        for target in targets {
            unique.entry(target.prefix.clone()).or_insert(target);
        }
        let output: String = std::iter::once("   Compiling ct v0.1.0\n".to_string())
            .chain(unique.values().map(CargoTarget::output))
            .collect();
        let parsed = parse_cargo_test(&output);
        let mut statuses = BTreeMap::new();
        let mut messages = BTreeMap::new();
        for target in unique.values() {
            for (name, (status, message)) in &target.tests {
                let id = target.id(name);
                statuses.insert(id.clone(), *status);
                if *status == TestStatus::Failed {
                    messages.insert(id, message.join("\n"));
                }
            }
        }
        prop_assert_eq!(&parsed.statuses, &statuses, "{}", output);
        prop_assert_eq!(&parsed.messages, &messages, "{}", output);
        prop_assert!(parsed.anomalies.is_empty(), "{:?}\n{}", parsed.anomalies, output);
    }
}
