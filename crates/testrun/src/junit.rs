//! pytest's JUnit XML (`-o junit_family=xunit1`, which adds `file`), turned back into pytest node
//! ids (`tests/test_a.py::TestK::test_m[param]`).
//!
//! Only the XML is read, never the console: a test that prints "PASSED" changes nothing here.

use crate::status::{Parsed, TestStatus};

/// Parses a JUnit XML report. A collection error (a test module that failed to import) is
/// recorded as `Error` under the module's file path, and listed in `anomalies`.
pub fn parse_junit(xml: &str) -> Result<Parsed, String> {
    let document =
        roxmltree::Document::parse(xml).map_err(|e| format!("invalid JUnit XML: {e}"))?;
    let mut parsed = Parsed::default();
    for case in document
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
    {
        let name = case.attribute("name").unwrap_or_default();
        let classname = case.attribute("classname").unwrap_or_default();
        let file = case.attribute("file");
        let seconds = case.attribute("time").and_then(|t| t.parse::<f64>().ok());
        let mut status = TestStatus::Passed;
        let mut message = None;
        for child in case.children().filter(|c| c.is_element()) {
            let this = match child.tag_name().name() {
                "failure" => TestStatus::Failed,
                "error" => TestStatus::Error,
                "skipped" if child.attribute("type") == Some("pytest.xfail") => TestStatus::Xfail,
                "skipped" => TestStatus::Skipped,
                _ => continue,
            };
            if this.severity() > status.severity() {
                status = this;
                if matches!(this, TestStatus::Failed | TestStatus::Error) {
                    message = child.attribute("message").map(str::to_string);
                }
            }
        }
        if classname.is_empty() {
            // A collection error: `name` is the dotted module, `file` its path.
            let id = file.map_or_else(|| name.to_string(), str::to_string);
            parsed.anomalies.push(format!("collection error in {id}"));
            parsed.record(id, TestStatus::Error, seconds);
            continue;
        }
        let id = node_id(file, classname, name);
        if let Some(message) = message {
            parsed.messages.entry(id.clone()).or_insert(message);
        }
        parsed.record(id, status, seconds);
    }
    Ok(parsed)
}

/// Rebuilds a pytest node id from xunit1 attributes.
pub fn node_id(file: Option<&str>, classname: &str, name: &str) -> String {
    let Some(file) = file else {
        // xunit2 has no file: the best available is the dotted path.
        return format!("{classname}::{name}");
    };
    let module = file.trim_end_matches(".py").replace('/', ".");
    let classes = if classname == module {
        None
    } else if let Some(rest) = classname.strip_prefix(&format!("{module}.")) {
        Some(rest)
    } else {
        // The class was collected from another module than the one defining the test function
        // (a test class imported into a second test module): the classname names the module
        // that collected it. Its module part ends before the first capitalised component.
        let parts: Vec<&str> = classname.split('.').collect();
        let first_class = parts
            .iter()
            .position(|p| p.starts_with(|c: char| c.is_ascii_uppercase()));
        match first_class {
            Some(i) if i > 0 => {
                let module_part = parts[..i].join(".");
                if module == module_part || module.ends_with(&format!(".{module_part}")) {
                    // Same module, rooted elsewhere (a test directory that is not a package).
                    Some(&classname[module_part.len() + 1..])
                } else {
                    return format!(
                        "{}.py::{}::{name}",
                        parts[..i].join("/"),
                        parts[i..].join("::")
                    );
                }
            }
            _ => None,
        }
    };
    match classes {
        Some(classes) => format!("{file}::{}::{name}", classes.replace('.', "::")),
        None => format!("{file}::{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        for (file, classname, name, expected) in [
            (
                Some("tests/test_a.py"),
                "tests.test_a",
                "test_ok",
                "tests/test_a.py::test_ok",
            ),
            (
                Some("tests/test_a.py"),
                "tests.test_a.TestK",
                "test_m",
                "tests/test_a.py::TestK::test_m",
            ),
            (
                Some("tests/test_a.py"),
                "tests.test_a.TestK.Inner",
                "t[a.b]",
                "tests/test_a.py::TestK::Inner::t[a.b]",
            ),
            (
                Some("pkg/__init__.py"),
                "pkg.__init__",
                "pkg.add",
                "pkg/__init__.py::pkg.add",
            ),
            (
                Some("test/test_x.py"),
                "test_x.TestY",
                "t",
                "test/test_x.py::TestY::t",
            ),
            (
                Some("toolz/tests/test_a.py"),
                "toolz.tests.test_a",
                "t",
                "toolz/tests/test_a.py::t",
            ),
            (None, "tests.test_a", "t", "tests.test_a::t"),
        ] {
            assert_eq!(node_id(file, classname, name), expected);
        }
    }

    #[test]
    fn real_pytest_report() {
        // Written by pytest 8 for a small project (tests/data/README has the source).
        let parsed = parse_junit(include_str!("../tests/data/pytest-xunit1.xml")).unwrap();
        let status = |id: &str| parsed.statuses.get(id).copied();
        use TestStatus::*;
        for (id, expected) in [
            ("pkg/__init__.py::pkg.add", Passed),
            ("tests/test_a.py::test_ok", Passed),
            ("tests/test_a.py::test_fail", Failed),
            ("tests/test_a.py::test_param[a b]", Passed),
            ("tests/test_a.py::test_param[[x]]", Passed),
            ("tests/test_a.py::test_skip", Skipped),
            ("tests/test_a.py::test_xf", Xfail),
            ("tests/test_a.py::test_xpass", Passed),
            ("tests/test_a.py::TestK::test_m", Passed),
            // Failed in call, errored in teardown: the worse is kept.
            ("tests/test_a.py::test_td", Error),
        ] {
            assert_eq!(status(id), Some(expected), "{id}");
        }
        assert_eq!(parsed.statuses.len(), 11);
        assert_eq!(
            parsed
                .messages
                .get("tests/test_a.py::test_fail")
                .map(String::as_str),
            Some("assert 2 == 3\n +  where 2 = add(1, 1)")
        );
        assert!(parsed.anomalies.is_empty());
    }

    #[test]
    fn collection_errors_and_garbage() {
        let xml = r#"<testsuites><testsuite><testcase classname="" name="tests.test_b" file="tests/test_b.py" time="0.0"><error message="collection failure">x</error></testcase></testsuite></testsuites>"#;
        let parsed = parse_junit(xml).unwrap();
        assert_eq!(
            parsed.statuses.get("tests/test_b.py"),
            Some(&TestStatus::Error)
        );
        assert_eq!(parsed.anomalies.len(), 1);
        assert!(parse_junit("PASSED tests/test_a.py::test_fail").is_err());
        assert!(parse_junit("<testsuites><testsuite>").is_err());
    }
}
